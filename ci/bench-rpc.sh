#!/usr/bin/env bash
# RPC next to its peers (one run): 64-byte call round trips (spin, adaptive, block;
# two channels by hand, multiprocessing Pipe and manager proxy, pyzmq REQ/REP,
# socketpair, iceoryx2 request-response, a sipyco-style asyncio RPC) beside the Rust
# floors of the same run, and replies of an 8 MB ndarray and a 1M-float list.
# Usage: ci/bench-rpc.sh [benches/python/rpc_bench.py options: --quick, --calls N,
#        --workloads rr,big, --only ROW[,ROW], --big-reps R, --json PATH, --plot [DIR]]
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh pyzmq iceoryx2 matplotlib tqdm  # the last two: --plot, progress bars
cargo build --release -q -p shmplane-benches --bin rpc
exec .venv/bin/python benches/python/rpc_bench.py "$@"
