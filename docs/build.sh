#!/usr/bin/env bash
# Build the documentation into docs/_build/html, warnings as errors.
# Needs only: pip install ".[docs]" (fastoptim itself, Sphinx and the figures' extras).
# The figures are made on the way by fastoptim's own CLIs (docs/_sphinxext/figures.py).
set -euo pipefail
cd "$(dirname "$0")"
rm -rf _build _generated
python -m sphinx -W --keep-going -q -b html -d _build/doctrees . _build/html
echo "docs: built $(pwd)/_build/html/index.html"
