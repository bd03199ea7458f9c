#!/usr/bin/env bash
# The documentation: the Rust API (cargo doc of shm and channels, warnings are errors),
# the site (mkdocs + mkdocstrings, strict: a broken link or anchor, a page missing from
# the nav or a docstring that does not match its signature fails) into site/ with the
# Rust API in site/rust/, and a check that the Python API reference lists every public
# name. Installs the site's tools (docs/requirements.txt, pinned) into .venv.
# Usage: ci/docs.sh (after ci/setup.sh, which creates .venv and builds the extension);
# then open site/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if [ ! -x "$py" ]; then
  echo "docs: no .venv: run ci/setup.sh first" >&2
  exit 1
fi
"$py" -m pip install -q -r docs/requirements.txt
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p shmplane -p shmplane-shm --quiet
# The reference is read from the sources and the stubs (griffe, no import); the
# banner about MkDocs 2.0 that Material prints is not about this build.
NO_MKDOCS_2_WARNING=1 "$py" -m mkdocs build --strict --quiet
rm -rf site/rust
cp -r target/doc site/rust
# The check imports the package: this tree's sources and the extension built here.
PYTHONPATH=pybindings/python "$py" ci/check_api_docs.py site/objects.inv
echo "docs: site/index.html (Rust API: site/rust/shmplane/index.html)"
