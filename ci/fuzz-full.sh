#!/usr/bin/env bash
# The full fuzz run (issue 13's target: 1,000,000 executions of every target, no
# crash, panic, hang or out-of-bounds access): each target of fuzz/fuzz_targets to
# FUZZ_RUNS executions (default 1,000,000), with its committed seeds, under
# AddressSanitizer when a nightly toolchain is installed (stable: `-s none`, as
# ci/fuzz.sh). Two lanes run at once (one per core of a 2-core machine): `rpc`, by far
# the slowest (each input builds real segments: ~300 executions/s), alone in one; the
# other six one after the other in the second. About 55 minutes on 2 cores.
# Logs: $FUZZ_LOGS (default fuzz/logs/), one per target, and summary.txt with each
# target's exit status, time and executed units. Exits non-zero if any target failed
# or left an artifact (fuzz/artifacts/<target>/).
# Usage: bash ci/fuzz-full.sh
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
runs=${FUZZ_RUNS:-1000000}
logs=${FUZZ_LOGS:-logs}
if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  run=(cargo +nightly fuzz run); build=(cargo +nightly fuzz build)
else
  run=(cargo fuzz run -s none); build=(cargo fuzz build -s none)
fi
"${build[@]}" || exit 1
mkdir -p "$logs"
: > "$logs/summary.txt"
one() {
  local t=$1 start rc
  shift
  mkdir -p "corpus/$t"
  start=$(date +%s)
  "${run[@]}" "$t" "corpus/$t" "seeds/$t" -- -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$@" > "$logs/$t.log" 2>&1
  rc=$?
  echo "$t exit=$rc $(( $(date +%s) - start )) s $(grep -aE 'stat::number_of_executed_units' "$logs/$t.log")" >> "$logs/summary.txt"
}
( one rpc -max_len=192 ) &
( for t in frame ring header broadcast slot mailbox; do one "$t"; done ) &
wait
cat "$logs/summary.txt"
failed=0
for t in frame ring header broadcast slot mailbox rpc; do
  grep -q "^$t exit=0 .*units: *$runs\$" "$logs/summary.txt" || { echo "fuzz-full: $t did not finish $runs executions cleanly (see $logs/$t.log)"; failed=1; }
  if compgen -G "artifacts/$t/*" >/dev/null; then echo "fuzz-full: $t left artifacts in fuzz/artifacts/$t"; failed=1; fi
done
[ $failed -eq 0 ] && echo "fuzz-full: every target ran $runs executions, no findings"
exit $failed
