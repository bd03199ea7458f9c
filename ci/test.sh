#!/usr/bin/env bash
# Every test: lints, Rust unit/integration/doc tests, loom models, valgrind memcheck,
# cargo-fuzz of the shared-memory decoders, the sdist and wheel, the Python suite (real
# processes; every example under examples/, the demo's --quick run included:
# test_examples.py) against the installed wheel, stub check, mypy and the docs (strict).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n=== %s ===\n' "$*"; }
# Run checker ci/NAME.sh with bash, so that a lost exec bit cannot skip it; a missing
# checker fails CI instead of passing without it.
check() {
  local script=ci/$1.sh
  shift
  [ -f "$script" ] || { echo "ci/test.sh: $script is missing: CI cannot pass without it" >&2; exit 1; }
  bash "$script" "$@"
}
step setup;            check setup
step lint-sync;        check lint-sync
step clippy;           cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo test";     cargo test --workspace --quiet 2>&1 | grep -vE '^$'
# The notifier's fallback when membarrier is unavailable (full fence), with real threads.
step "ring tests without membarrier"
SHMPLANE_NO_MEMBARRIER=1 cargo test -p shmplane-shm --test ring_heap --quiet 2>&1 | grep -vE '^$'
step loom;             check loom
step valgrind;         check valgrind
step "fuzz (20 s per target)"; check fuzz
# The Python suite runs once, against the wheel (built from the sdist) installed in a
# fresh venv; the steps after it use .venv's editable build from ci/setup.sh.
step "sdist, wheel, pytest against the installed wheel"
check wheel pybindings/tests -q -o timeout=120
# The pictures of the demo and the benches need matplotlib, which the library and the
# suite above do not: drawn here once with it installed into .venv.
step "bench pictures (with matplotlib)"
check setup matplotlib
.venv/bin/python -m pytest pybindings/tests/test_bench_plots.py -q -o timeout=120
step stubtest;         .venv/bin/python -m mypy.stubtest shmplane._shmplane --ignore-missing-stub
step mypy;             .venv/bin/python -m mypy pybindings/python/shmplane
step docs;             check docs
echo; echo "all tests passed"
