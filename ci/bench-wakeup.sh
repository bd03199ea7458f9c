#!/usr/bin/env bash
# Idle-wait CPU cost and wake-up latency of shmplane next to its peers (one run).
# Usage: ci/bench-wakeup.sh [benches/python/wakeup.py options: --quick, --seconds N,
#        --period-ms MS, --hogs N, --only NAME[,NAME], --workloads w5,w5hogs,rr,async,
#        --json PATH, --plot [DIR], ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh posix_ipc pyzmq iceoryx2 uvloop matplotlib tqdm  # the last two: --plot, progress bars
exec .venv/bin/python benches/python/wakeup.py "$@"
