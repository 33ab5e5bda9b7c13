#!/usr/bin/env bash
# Installs sacreBLEU 2.6.0 from PyPI into a temporary venv and regenerates tests/fixtures/testsets
# (a prepared sacreBLEU cache and sacreBLEU's output for -t/-l/--echo/--list command lines on it,
# and for the ja-mecab, ko-mecab and spm/flores tokenizers; run scripts/spm-fixtures.sh first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="$(mktemp -d)/sacrebleu"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "sacrebleu[ja,ko]==2.6.0" sentencepiece==0.2.1
"$VENV/bin/python" scripts/testset-fixtures.py "$VENV/bin/sacrebleu"
rm -rf "$(dirname "$VENV")"
