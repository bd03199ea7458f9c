#!/usr/bin/env bash
# The ring, wait-protocol and seqlock tests over heap memory (shm/tests/ring_heap.rs,
# shm/tests/slot_heap.rs) under valgrind memcheck, with the small workload
# (SHMPLANE_TEST_SMALL=1). Miri and the sanitizers need toolchain parts these machines
# cannot download.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)"; exit 1; }
for t in ring_heap slot_heap; do
  # Build (errors go to stderr as usual) and take the test binary's path from cargo's JSON.
  bin=$(cargo test -p shmplane-shm --test "$t" --no-run --message-format=json \
    | grep -o "\"executable\":\"[^\"]*$t[^\"]*\"" | tail -1 | cut -d'"' -f4)
  [ -n "$bin" ] && [ -x "$bin" ] || { echo "$t test binary not found"; exit 1; }
  SHMPLANE_TEST_SMALL=1 valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
    --errors-for-leak-kinds=definite --show-possibly-lost=no -q "$bin" --test-threads=1
  echo "valgrind memcheck $t: ok"
done
