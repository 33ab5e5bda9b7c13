#!/usr/bin/env bash
# The Multi30k En->De recipe (docs/results.md, "Multi30k"): the default recipe
# (scripts/train-recipe.sh) on Multi30k's files, test2016 as the test set, the output layer tied to
# the shared embedding. On a CPU where bf16 beats float32 (AMX-BF16, or AMD's AVX512-BF16; `gnmt
# doctor`): three 4+4 x 384 models in bf16 mixed precision, dropout 0.4, as many steps of 64
# sentences as 90 minutes of training allow (each model after the first sized by the speed of those
# before it), translated as one ensemble whose search `gnmt tune` checks on validation (session 18,
# 2-core AMD EPYC: 6,600, 7,200 and 8,040 steps, 88 minutes, validation 41.1, test2016 40.0).
# Elsewhere: two `small` models (4+4 x 256) in float32, dropout 0.3, the first with word dropout
# 0.1, as many steps as 90 minutes allow, translated as one ensemble (session 32, 2-core Intel Xeon
# without AMX: 9,912 and 9,288 steps, 88.5 minutes, validation 40.9, test2016 40.1; one 4+4 x 384
# model in those 90 minutes, the recipe of sessions 29-31: validation 40.4, test2016 39.7). With
# --small: one `small` model in float32, 9000 steps (about 20 epochs), dropout 0.3 (validation
# 39.2-39.6, test2016 38.9-39.1), the recipe before session 29. Writes runs/multi30k/results.md;
# the last line is the test2016 BLEU.
#
#   scripts/multi30k.sh [DATA_DIR] [--small] [any option of scripts/train-recipe.sh]
# e.g. --threads 2, --steps 3000, --set model.dropout=0.2, --out DIR, --resume.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=../shared/data/multi30k
case "${1:-}" in
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    ""|-*) ;;
    *) DATA="$1"; shift ;;
esac
for f in train.en train.de valid.en valid.de test2016.en test2016.de; do
    [ -f "$DATA/$f" ] || { echo "multi30k.sh: $DATA/$f is missing (give the Multi30k directory)" >&2; exit 1; }
done
KIND=""
[ "${1:-}" = --small ] && { KIND=small; shift; }
# The binary's own CPU check, the one train-recipe.sh asks for its precision default.
if [ -z "$KIND" ]; then
    KIND=fp32
    "$(scripts/release-bin.sh)" doctor | grep -x 'cpu bf16 faster than fp32: yes' >/dev/null && KIND=bf16
fi
wide=(--set model.hidden_size=384 --set model.embedding_size=384 --set model.attention_units=384)
case "$KIND" in
    small) recipe=(--steps 9000 --set model.dropout=0.3 --set 'precision="fp32"') ;;
    fp32) recipe=(--minutes 90 --epochs 40 --models 2 --set model.dropout=0.3
                  --set-model 1 model.word_dropout=0.1 --set 'precision="fp32"') ;;
    bf16) recipe=(--minutes 90 --epochs 40 --models 3 --set model.dropout=0.4
                  --set 'precision="bf16"' "${wide[@]}") ;;
esac
# (train-recipe.sh ties the output layer to the embedding itself: the preset allows it.)
exec scripts/train-recipe.sh "$DATA" --src en --tgt de --test test2016 --out runs/multi30k \
    "${recipe[@]}" "$@"
