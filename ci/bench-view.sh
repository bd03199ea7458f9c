#!/usr/bin/env bash
# Zero-copy receive (recv(copy=False)) next to its peers, one run: the view alone, send
# + view, send + recv by copy, multiprocessing.shared_memory + Pipe + view, iceoryx2's
# slice sample view, np.copyto; 1, 8 and 64 MB; p50/p99/p99.9 and ratios to np.copyto.
# Usage: ci/bench-view.sh [--sizes 1,8,64] [--rounds N] [--hogs N] [--plot [DIR]]
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh iceoryx2 matplotlib tqdm  # the last two: --plot, progress bars
exec .venv/bin/python benches/python/view_bench.py "$@"
