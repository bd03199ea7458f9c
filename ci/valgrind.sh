#!/usr/bin/env bash
# valgrind memcheck over the tests that run in one process (threads only: valgrind and
# a fork of a multi-threaded process are slow together), with the small workload
# (SHMPLANE_TEST_SMALL=1):
# - shm: its unit tests; ring_heap (the ring and the wait protocol over heap memory
#   and over a real /dev/shm mapping), slot_heap, broadcast_lap;
# - shmplane: its unit tests (the message format's decoders); corrupt_ring (segments
#   scribbled over), peek, views, mailbox (but its forking test), broadcast (but one
#   slow lossy test), and the in-process tests of processes.rs that create, open and
#   validate segment headers.
# Not here: truncation.rs (its SIGBUS guard and valgrind's signal handling do not mix:
# valgrind itself crashes) and the multi-process tests. About 2 minutes on 2 cores.
# Miri and the sanitizers need toolchain parts these machines cannot download.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)"; exit 1; }

# Build target $2 (--lib, or a test's name) of package $1; print its test binary's path.
binary() {
  local sel=(--lib)
  [ "$2" = --lib ] || sel=(--test "$2")
  cargo test -p "$1" "${sel[@]}" --no-run --message-format=json | python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]]
print(exe[-1] if exe else "")'
}

# run PACKAGE TARGET [TEST-HARNESS ARGUMENTS...]: every filter and every --skip must
# match a test (a renamed test would otherwise drop out, or back in, silently).
run() {
  local pkg=$1 target=$2 bin names a
  shift 2
  bin=$(binary "$pkg" "$target")
  [ -n "$bin" ] && [ -x "$bin" ] || { echo "$pkg $target: test binary not found"; exit 1; }
  names=$("$bin" --list | sed -n 's/: test$//p')
  for a in "$@"; do
    case $a in
      --skip) ;;
      *) grep -qF -- "$a" <<<"$names" || { echo "$pkg $target: no test matches '$a' (renamed?)"; exit 1; } ;;
    esac
  done
  SHMPLANE_TEST_SMALL=1 valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
    --errors-for-leak-kinds=definite --show-possibly-lost=no -q "$bin" --test-threads=1 "$@"
  echo "valgrind memcheck $pkg $target: ok"
}

run shmplane-shm --lib
run shmplane-shm ring_heap
run shmplane-shm slot_heap
run shmplane-shm broadcast_lap
run shmplane --lib
run shmplane corrupt_ring
run shmplane peek
run shmplane views
run shmplane mailbox --skip consumer_copy_outliving_its_creator_is_alive
run shmplane broadcast --skip lossy_chunked_messages_arrive_whole_or_as_a_lag
run shmplane processes garbage_file_is_corrupt wrong_kind_and_bad_header_fields truncated_segment_is_corrupt \
  open_missing_is_not_found second_endpoint_same_process_is_role_taken message_larger_than_ring_streams_through
