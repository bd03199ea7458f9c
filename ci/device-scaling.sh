#!/usr/bin/env bash
# Scaling of the mailbox and the broadcast with more cores, for a session lent a device
# machine (16 cores; no Rust toolchain there). Build here first:
#   cargo build --release -p shmplane-benches
# then carry target/release/{mailbox,broadcast} (they link only libc and libgcc_s) and run
#   bash ci/device-scaling.sh              (on the device, from the repository root)
# Writes the figures to $OUT (or ./scaling-out) and prints them. About 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-scaling-out}"; mkdir -p "$out"
bin=target/release
nproc | tee "$out/cpus.txt"
# Mailbox: N producers -> 1 consumer, 64-byte messages (total msg/s).
MAILBOX_SKIP_EMPTY=1 timeout 300 "$bin/mailbox" 1,2,4,8,15 1000000 adaptive 3 2>&1 | tee "$out/mailbox.txt"
# Broadcast: 1 publisher -> N subscribers, 64-byte messages (msg/s per subscriber), and
# 8 MB to N subscribers against one copy; lossless, then lossy.
timeout 300 "$bin/broadcast" 1,2,4,8,15 1000000 adaptive 3 2>&1 | tee "$out/broadcast.txt"
timeout 200 "$bin/broadcast" 1,4,15 1000000 adaptive 1 1 2>&1 | tee "$out/broadcast-lossy.txt"
