#!/usr/bin/env bash
# Installs sacreBLEU 2.6.0 from PyPI into a temporary venv and rewrites data/sacrebleu/catalogue.json
# (its test sets: names, URLs, MD5 sums, files per language pair) from sacreBLEU's own definitions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="$(mktemp -d)/sacrebleu"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q sacrebleu==2.6.0
"$VENV/bin/python" scripts/sacrebleu-catalogue.py > data/sacrebleu/catalogue.json.tmp
mv data/sacrebleu/catalogue.json.tmp data/sacrebleu/catalogue.json
rm -rf "$(dirname "$VENV")"
