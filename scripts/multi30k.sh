#!/usr/bin/env bash
# The Multi30k En->De recipe (README "Multi30k"): the default recipe (scripts/train-recipe.sh) on
# Multi30k's files, with 9000 steps of 64 sentences (about 20 epochs of its 29,000 pairs),
# dropout 0.3 and the output layer tied to the shared embedding; test2016 is the test set.
# Writes runs/multi30k/results.md; the last line is the test2016 BLEU.
#
#   scripts/multi30k.sh [DATA_DIR] [any option of scripts/train-recipe.sh]
# e.g. --threads 2, --steps 3000, --set model.dropout=0.2, --out DIR, --resume.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=../shared/data/multi30k
case "${1:-}" in
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    ""|-*) ;;
    *) DATA="$1"; shift ;;
esac
for f in train.en train.de valid.en valid.de test2016.en test2016.de; do
    [ -f "$DATA/$f" ] || { echo "multi30k.sh: $DATA/$f is missing (give the Multi30k directory)" >&2; exit 1; }
done
exec scripts/train-recipe.sh "$DATA" --src en --tgt de --test test2016 --steps 9000 --out runs/multi30k \
    --set model.dropout=0.3 --set model.tied_output=true "$@"
