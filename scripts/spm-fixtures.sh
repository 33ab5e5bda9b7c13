#!/usr/bin/env bash
# Installs Google's sentencepiece from PyPI into a temporary venv and regenerates tests/fixtures/spm
# (small models and the pieces sentencepiece gives), then the spm/flores cases of tests/fixtures/testsets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="$(mktemp -d)/spm"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q sentencepiece==0.2.1
"$VENV/bin/python" scripts/spm-fixtures.py
rm -rf "$(dirname "$VENV")"
