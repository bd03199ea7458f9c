#!/usr/bin/env bash
# The installable package: build the sdist (maturin sdist) and, from the unpacked sdist
# (so a missing file fails here, not on a user's machine), the wheel (maturin build
# --release); install the wheel into a fresh virtual environment outside the tree with
# numpy, pytest and pytest-timeout only; check that shmplane imports from there; then
# run the Python suite against it.
# Usage: ci/wheel.sh [pytest args...]    (default: pybindings/tests; after ci/setup.sh,
# which provides maturin)
# Wheel and sdist are left in target/wheels/.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd -P)
maturin=$repo/.venv/bin/maturin
out=$repo/target/wheels
work=$(mktemp -d "${TMPDIR:-/tmp}/shmplane-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
rm -f "$out"/shmplane-*.whl "$out"/shmplane-*.tar.gz

"$maturin" sdist -o "$out" > "$work/sdist.log" 2>&1 || { cat "$work/sdist.log" >&2; exit 1; }
sdist=$(ls "$out"/shmplane-*.tar.gz)
# What building needs: the metadata, the licenses, the readme, the stubs, both crates
# the extension depends on, and the lock file.
listing=$(tar tzf "$sdist" | sed 's|^[^/]*/||')
for f in pyproject.toml Cargo.toml Cargo.lock LICENSE-MIT LICENSE-APACHE pybindings/README.md \
         pybindings/Cargo.toml pybindings/src/lib.rs pybindings/python/shmplane/__init__.py \
         pybindings/python/shmplane/_shmplane.pyi pybindings/python/shmplane/py.typed \
         shm/Cargo.toml shm/src/lib.rs channels/Cargo.toml channels/src/lib.rs; do
  grep -qxF "$f" <<<"$listing" || { echo "wheel: $f is missing from $(basename "$sdist")" >&2; exit 1; }
done
if grep -q '\.so$' <<<"$listing"; then
  echo "wheel: the sdist carries a built extension:" >&2; grep '\.so$' <<<"$listing" >&2; exit 1
fi

tar xzf "$sdist" -C "$work"
# The unpacked sdist builds into this tree's target/, so dependencies compiled for
# ci/setup.sh are reused (only the three workspace crates build again).
(cd "$work"/shmplane-* && CARGO_TARGET_DIR=$repo/target "$maturin" build --release -q -o "$out")
wheel=$(ls "$out"/shmplane-*.whl)
python3 - "$wheel" <<'PY'
import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = [r"shmplane/_shmplane\.abi3\.so", r"shmplane/_shmplane\.pyi", r"shmplane/py\.typed",
        r"shmplane-[^/]*\.dist-info/licenses/LICENSE-MIT", r"shmplane-[^/]*\.dist-info/licenses/LICENSE-APACHE"]
missing = [n for n in need if not any(re.fullmatch(n, f) for f in names)]
if missing:
    sys.exit(f"wheel: {sys.argv[1]} lacks {missing}")
PY

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$work/venv/bin/python" -m pip install -q numpy pytest pytest-timeout "$wheel"
# Imported from outside the tree, it must be the installed wheel, console script too.
(cd "$work" && "$work/venv/bin/python" -c '
import os, sys, shmplane
where = os.path.realpath(shmplane.__file__)
print(f"wheel: shmplane {shmplane.__version__} from {where}")
sys.exit(where.startswith(sys.argv[1] + os.sep))' "$repo") \
  || { echo "wheel: shmplane was imported from the source tree" >&2; exit 1; }
"$work/venv/bin/shmplane" ls > /dev/null

# The suite, against the installed wheel (conftest.py refuses a shmplane from the tree).
[ $# -gt 0 ] || set -- pybindings/tests
SHMPLANE_TEST_INSTALLED=1 "$work/venv/bin/python" -m pytest -p no:cacheprovider "$@"
