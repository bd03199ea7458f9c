#!/usr/bin/env bash
# Every test: lints, Rust unit/integration/doc tests, loom models, valgrind memcheck,
# cargo-fuzz of the shared-memory decoders, the sdist and wheel, the Python suite (real
# processes; every example under examples/, the demo's --quick run included:
# test_examples.py) against the installed wheel, stub check, mypy and the docs (strict).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n=== %s ===\n' "$*"; }
step setup;            ci/setup.sh
step lint-sync;        ci/lint-sync.sh
step clippy;           cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo test";     cargo test --workspace --quiet 2>&1 | grep -vE '^$'
# The notifier's fallback when membarrier is unavailable (full fence), with real threads.
step "ring tests without membarrier"
SHMPLANE_NO_MEMBARRIER=1 cargo test -p shmplane-shm --test ring_heap --quiet 2>&1 | grep -vE '^$'
step loom;             ci/loom.sh
step valgrind;         ci/valgrind.sh
step "fuzz (30 s per decoder)"; ci/fuzz.sh
# The Python suite runs once, against the wheel (built from the sdist) installed in a
# fresh venv; the steps after it use .venv's editable build from ci/setup.sh.
step "sdist, wheel, pytest against the installed wheel"
ci/wheel.sh pybindings/tests -q -o timeout=120
step stubtest;         .venv/bin/python -m mypy.stubtest shmplane._shmplane --ignore-missing-stub
step mypy;             .venv/bin/python -m mypy pybindings/python/shmplane
step docs;             ci/docs.sh
echo; echo "all tests passed"
