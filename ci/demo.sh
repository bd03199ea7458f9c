#!/usr/bin/env bash
# The main job: set up (venv, numpy, peers, release build) and run the dataset demo.
# matplotlib and tqdm are for the demo and the benches only (latency CDFs and the
# stream's throughput against message size in benches/results/, progress bars); the
# library and the tests do not need them.
# Usage: ci/demo.sh [demo args, e.g. --reps 100, --plot DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh pyzmq faster-fifo iceoryx2 matplotlib tqdm
# The Rust floors that the RPC part (h) prints beside its figures.
cargo build --release -q -p shmplane-benches --bin rpc
exec .venv/bin/python examples/dataset_transfer/main.py --plot benches/results "$@"
