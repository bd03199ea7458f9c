#!/usr/bin/env bash
# Only shm/src/sync.rs may name std/loom atomics, fences or UnsafeCell (the loom shim);
# clippy cannot check this because it resolves the shim's re-exports to std's types.
# pybindings may use UnsafeCell for process-local state guarded by the GIL (never
# shared memory, never in a loom model): see PyByteSlot in pybindings/src/slot.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$( (grep -rnE 'std::sync::atomic|core::sync::atomic|loom::sync|std::cell::UnsafeCell' \
  --include='*.rs' shm/src channels/src; grep -rnE 'std::sync::atomic|core::sync::atomic|loom::sync' \
  --include='*.rs' pybindings/src) | grep -v '^shm/src/sync.rs:' || true)
if [ -n "$bad" ]; then
  echo "atomics named outside shm/src/sync.rs:"; echo "$bad"; exit 1
fi
echo "lint-sync: ok"
