#!/usr/bin/env bash
# Mailbox (many producers, one consumer) next to its peers (one run): the cost of the
# empty check (mb.pending() vs queue.SimpleQueue.empty() and others) and N->1 throughput
# of 64-byte messages with latency percentiles.
# Usage: ci/bench-mailbox.sh [benches/python/mailbox_bench.py options: --quick,
#        --producers 1,2,4,8, --messages M, --budget-s S, --rounds R,
#        --policy adaptive|spin|block, --only NAME[,NAME], --workloads empty,mpsc,
#        --json PATH, --plot [DIR], ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh pyzmq faster-fifo matplotlib tqdm  # the last two: --plot, progress bars
exec .venv/bin/python benches/python/mailbox_bench.py "$@"
