#!/usr/bin/env bash
# Every test: lints, Rust unit/integration/doc tests, loom models, valgrind memcheck,
# cargo-fuzz of the shared-memory decoders, the Python suite (real processes; every
# example under examples/, the demo's --quick run included: test_examples.py), stub
# check and mypy.
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
step pytest;           .venv/bin/python -m pytest pybindings/tests -q -p no:cacheprovider -o timeout=120
step stubtest;         .venv/bin/python -m mypy.stubtest shmplane._shmplane --ignore-missing-stub
step mypy;             .venv/bin/python -m mypy pybindings/python/shmplane
echo; echo "all tests passed"
