#!/usr/bin/env bash
# Atomics stay in shm: only shm/src/sync.rs may name std/loom atomics, fences or
# UnsafeCell (the loom shim), and shm/src/process.rs the process-local flags of fork
# detection and membarrier; no crate outside shm names `Ordering` at all (channels and
# the binding use methods of shm's types). clippy cannot check this because it resolves
# the shim's re-exports to std's types.
# pybindings may use UnsafeCell for process-local state guarded by the GIL (never
# shared memory, never in a loom model): see PyByteSlot in pybindings/src/slot.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
atomics='std::sync::atomic|core::sync::atomic|loom::sync'
bad=$( (grep -rnE "$atomics|std::cell::UnsafeCell" --include='*.rs' shm/src channels/src \
          | grep -vE '^shm/src/(sync|process)\.rs:';
        grep -rnE "$atomics" --include='*.rs' pybindings/src;
        grep -rnwE 'Ordering' --include='*.rs' channels/src pybindings/src \
          | grep -vE 'cmp::Ordering') || true)
if [ -n "$bad" ]; then
  echo "atomics or orderings named outside shm/src/sync.rs:"; echo "$bad"; exit 1
fi
echo "lint-sync: ok"
