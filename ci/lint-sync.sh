#!/usr/bin/env bash
# Two rules the compilers cannot see: atomics stay in shm, and packaging metadata has
# one source (at the end).
#
# Atomics stay in shm: only shm/src/sync.rs may name std/loom atomics, fences or
# UnsafeCell (the loom shim), and shm/src/process.rs the process-local flags of fork
# detection and membarrier, and shm/src/region/guard.rs the SIGBUS guard's registry (a
# signal handler's process-local state, never shared memory); no crate outside shm names `Ordering` at all (channels and
# the binding use methods of shm's types). clippy cannot check this because it resolves
# the shim's re-exports to std's types.
# pybindings may use UnsafeCell for process-local state guarded by the GIL (never
# shared memory, never in a loom model): see PyByteSlot in pybindings/src/slot.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
atomics='std::sync::atomic|core::sync::atomic|loom::sync'
bad=$( (grep -rnE "$atomics|std::cell::UnsafeCell" --include='*.rs' shm/src channels/src \
          | grep -vE '^shm/src/(sync|process|region/guard)\.rs:';
        grep -rnE "$atomics" --include='*.rs' pybindings/src;
        grep -rnwE 'Ordering' --include='*.rs' channels/src pybindings/src \
          | grep -vE 'cmp::Ordering') || true)
if [ -n "$bad" ]; then
  echo "atomics or orderings named outside shm/src/sync.rs:"; echo "$bad"; exit 1
fi
echo "lint-sync: ok"

# Packaging metadata has one source each: the root pyproject.toml is the only one (it
# names pybindings/), the version comes from Cargo (dynamic), and the facts that both
# Cargo and Python state (the license, the oldest Python of the abi3 build) agree.
python3 - <<'PY'
import pathlib, re, sys, tomllib
root = pathlib.Path(".")
extra = [str(p) for p in root.rglob("pyproject.toml")
         if p != root / "pyproject.toml" and not set(p.parts) & {"target", ".venv", "site", "node_modules"}]
py = tomllib.loads((root / "pyproject.toml").read_text())
cargo = tomllib.loads((root / "Cargo.toml").read_text())
project, maturin = py["project"], py["tool"]["maturin"]
errors = []
if extra:
    errors.append(f"a second pyproject.toml: {extra} (the root's is the package's)")
if "version" in project or "version" not in project.get("dynamic", []):
    errors.append("pyproject.toml: the version must be dynamic (Cargo's [workspace.package] version)")
if project.get("license") != cargo["workspace"]["package"]["license"]:
    errors.append(f"license: pyproject.toml {project.get('license')!r} != Cargo.toml {cargo['workspace']['package']['license']!r}")
oldest = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
abi3 = {m for f in maturin.get("features", []) + cargo["workspace"]["dependencies"]["pyo3"]["features"]
        for m in re.findall(r"abi3-py3(\d+)", f)}
if not oldest or abi3 != {oldest.group(1)}:
    errors.append(f"requires-python {project['requires-python']!r} does not match the abi3 features (3.{sorted(abi3)})")
for e in errors:
    print(f"lint-sync: {e}")
sys.exit(1 if errors else 0)
PY
echo "lint-sync: packaging metadata ok"
