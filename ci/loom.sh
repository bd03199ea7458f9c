#!/usr/bin/env bash
# loom models of the ring and the wait protocol, with bounded preemptions.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg shmplane_loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
  CARGO_TARGET_DIR=target/loom cargo test -p loom-tests --release --quiet
