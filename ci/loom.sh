#!/usr/bin/env bash
# loom models (loom-tests/tests/): the SPSC ring and its holds, the eventcount wait
# protocol, the seqlock, role leases, role claim and close, the close protocol against
# a waiting peer, chunked messages, mailbox and broadcast, with bounded preemptions.
# A separate target dir: --cfg shmplane_loom rebuilds everything.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg shmplane_loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
  CARGO_TARGET_DIR=target/loom cargo test -p loom-tests --release
