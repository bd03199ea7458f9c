#!/usr/bin/env bash
# cargo-fuzz over every decoder of memory another process writes (fuzz/fuzz_targets):
# the message-format parsers (frame), the ring's record decoder and position checks
# (ring), segment header validation (header), a broadcast's shared words (broadcast),
# a slot's sequence, owner and copies (slot), a mailbox's role table, control block and
# lanes (mailbox), and RPC's call envelopes against the server's at-most-once table
# (rpc). Each target first replays its committed seeds (fuzz/seeds/<target>: real
# records, headers and segments, and every crash found so far; `cargo run --example
# seeds` in fuzz/ writes those of slot, mailbox and rpc), then fuzzes for FUZZ_SECONDS
# (default 20: seven targets and the build stay within 5 minutes on 2 cores). The
# mailbox and rpc targets use real segments in /dev/shm (fuzz-mailbox-<pid>, unlinked
# at once; fuzz-rpc-<pid>*, removed at exit). With a nightly toolchain it runs under
# AddressSanitizer; with stable only (a fresh CI machine) coverage-guided without a
# sanitizer (`-s none`), overflow checks and assertions still on.
# Usage: ci/fuzz.sh [target...]     Longer: FUZZ_SECONDS=600 ci/fuzz.sh ring
# FUZZ_TOOLCHAIN=stable forces the stable, sanitizer-free build (what CI gets).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
# Installed but not usable (~/.cargo/bin not on PATH, a broken install): fail here,
# not with every target "ok".
cargo fuzz --version >/dev/null 2>&1 || { echo "fuzz: cargo-fuzz is not usable (cargo fuzz --version failed)"; exit 1; }
if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  run=(cargo +nightly fuzz run); build=(cargo +nightly fuzz build)
else
  run=(cargo fuzz run -s none); build=(cargo fuzz build -s none)
fi
seconds=${FUZZ_SECONDS:-20}
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(frame ring header broadcast slot mailbox rpc)
cd fuzz
"${build[@]}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  # The writable corpus first (libFuzzer adds to the first directory), then the seeds.
  set +e
  "${run[@]}" "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | grep -E '^(stat::number_of_executed_units|stat::peak_rss|#[0-9]+ +DONE)|panicked|ERROR|SUMMARY|Test unit written'
  status=${PIPESTATUS[0]}
  set -e
  # cargo fuzz exits non-zero on a crash, leaving an artifact: report that first.
  # (Any one kind of artifact: `ls` of three globs fails unless all three match.)
  if compgen -G "artifacts/$t/crash-*" >/dev/null || compgen -G "artifacts/$t/oom-*" >/dev/null \
     || compgen -G "artifacts/$t/timeout-*" >/dev/null; then
    echo "fuzz $t: FOUND A FAILURE (fuzz/artifacts/$t); reproduce: cd fuzz && ${run[*]} $t artifacts/$t/<file>"
    exit 1
  fi
  # Non-zero without an artifact: the run itself failed (not built, no such target).
  [ "$status" -eq 0 ] || { echo "fuzz $t: cargo fuzz run failed (exit $status) without a crash artifact"; exit 1; }
  echo "fuzz $t: ok (${seconds} s)"
done
