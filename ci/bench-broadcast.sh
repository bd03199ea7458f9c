#!/usr/bin/env bash
# Broadcast (one publisher, many subscribers) next to its peers (one run): 64-byte
# fan-out throughput and latency percentiles per subscriber count, and an 8 MB ndarray
# to N subscribers against one np.copyto.
# Usage: ci/bench-broadcast.sh [benches/python/broadcast_bench.py options: --quick,
#        --subscribers 1,2,4,8, --messages M, --budget-s S, --rounds R,
#        --array-mb MB, --array-reps N, --workloads fanout,array,
#        --only NAME[,NAME], --skip NAME[,NAME], --no-latency, --json PATH,
#        --plot [DIR]]
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh pyzmq faster-fifo iceoryx2 matplotlib tqdm  # the last two: --plot, progress bars
exec .venv/bin/python benches/python/broadcast_bench.py "$@"
