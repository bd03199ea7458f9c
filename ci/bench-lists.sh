#!/usr/bin/env bash
# Lists of 1 M floats and ints between two processes: shmplane beside pickle-5 over a
# Pipe, mp.Queue, msgpack over a Pipe and faster-fifo, one run; p50, max, ratios.
# Usage: ci/bench-lists.sh [--n 1000000] [--rounds 15] [--plot [DIR]]
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh msgpack faster-fifo matplotlib tqdm  # the last two: --plot, progress bars
exec .venv/bin/python benches/python/lists_bench.py "$@"
