#!/usr/bin/env bash
# The Rust ring tests over heap regions under valgrind memcheck (Miri and the
# sanitizers need toolchain parts these machines cannot download).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo test -p shmplane-shm --test ring_heap --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*ring_heap[^"]*"' | tail -1 | cut -d'"' -f4)
[ -n "$bin" ] || { echo "ring_heap test binary not found"; exit 1; }
SHMPLANE_TEST_SMALL=1 valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
  --errors-for-leak-kinds=definite --show-possibly-lost=no -q "$bin" --test-threads=1
echo "valgrind memcheck: ok"
