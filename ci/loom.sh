#!/usr/bin/env bash
# loom models of the SPSC ring and the eventcount wait protocol (loom-tests/), with
# bounded preemptions. A separate target dir: --cfg shmplane_loom rebuilds everything.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg shmplane_loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
  CARGO_TARGET_DIR=target/loom cargo test -p loom-tests --release
