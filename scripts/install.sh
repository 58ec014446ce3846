#!/usr/bin/env bash
# Install geomrob into the active Python environment.
#   bash scripts/install.sh          # the library and its CLI
#   bash scripts/install.sh test     # ... plus pytest and hypothesis
# PyTorch first: the pinned CPU build (torch==2.13.0) is installed only when no torch is importable,
# so a user who already has a torch (a CUDA build, say) keeps it, and the package's `torch>=2.1`
# requirement is then satisfied and cannot pull another torch or CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PIP=("$PY" -m pip install --disable-pip-version-check -q)
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "${PIP[@]}" "torch==2.13.0"
fi
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
"${PIP[@]}" -e ".${extra}"
# pyenv only sees new console scripts after a rehash; harmless elsewhere.
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
"$PY" -c "import torch, geomrob; print(f'geomrob {geomrob.__version__} with torch {torch.__version__}')"
