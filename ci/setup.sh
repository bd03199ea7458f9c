#!/usr/bin/env bash
# Create .venv, install the Python tools and build + install shmplane into it (release).
# Usage: ci/setup.sh [extra pip packages...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "maturin>=1.7,<2" numpy pytest pytest-timeout mypy "$@"
.venv/bin/maturin develop --release -q   # pyproject.toml (the root) names pybindings/
