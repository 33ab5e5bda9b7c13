#!/usr/bin/env bash
# The residual-connection study: the 8+8-layer `small8` model trained on Multi30k En->De for the
# same number of steps (a) with residual connections from layer 3 (GNMT), (b) from layer 2, (c)
# without any, and (d) the 4+4-layer `small` model without them as the shallow reference. Same
# data, vocabulary, seed, batches and schedule; only the wiring differs. Writes the plots (loss,
# validation BLEU and loss, per-layer gradient norms) and a table to OUT (docs/residual-study).
#
#   scripts/residual-study.sh [DATA_DIR] [--steps N] [--out DIR] [--threads N] [--parallel K]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=../shared/data/multi30k STEPS=500 OUT=docs/residual-study RUNS=runs/residual-study THREADS=1 PAR=2
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --parallel) PAR="$2"; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        -*) echo "residual-study.sh: unknown option $1" >&2; exit 2 ;;
        *) DATA="$1"; shift ;;
    esac
done
for f in train.en train.de valid.en valid.de; do
    [ -f "$DATA/$f" ] || { echo "residual-study.sh: $DATA/$f is missing" >&2; exit 1; }
done
scripts/setup.sh >/dev/null
cargo build --release -q -p gnmt-cli
G=target/release/gnmt
mkdir -p "$RUNS" "$OUT"
[ -f "$RUNS/tokenizer.json" ] || $G vocab --src "$DATA/train.en" --tgt "$DATA/train.de" --size 8000 -o "$RUNS/tokenizer.json"
EVERY=$(( STEPS / 5 ))
run() {  # name preset overrides...
    local name=$1 preset=$2; shift 2
    local sets=()
    for s in "$@"; do sets+=(--set "$s"); done
    $G train --train-src "$DATA/train.en" --train-tgt "$DATA/train.de" --valid-src "$DATA/valid.en" \
        --valid-tgt "$DATA/valid.de" --vocab "$RUNS/tokenizer.json" --preset "$preset" --batch-size 64 \
        --max-steps "$STEPS" --valid-every "$EVERY" --save-every "$STEPS" --threads "$THREADS" --seed 1 \
        --set "schedule={kind=\"constant\"}" --set lr=0.001 --set valid_bleu_sentences=500 --set keep_last=1 \
        "${sets[@]}" --out "$RUNS/$name" --force > "$RUNS/$name.log" 2>&1
    echo "residual-study.sh: $name done" >&2
}
jobs_running() { jobs -rp | wc -l; }
for spec in "res3 small8 model.residual=true model.residual_start=3" \
            "res2 small8 model.residual=true model.residual_start=2" \
            "none small8 model.residual=false" \
            "shallow small model.residual=false"; do
    # shellcheck disable=SC2086
    run $spec &
    while [ "$(jobs_running)" -ge "$PAR" ]; do sleep 5; done
done
wait
# gnmt plot also writes summary.md: a row per run (training loss over the last 50 steps, the last
# validation loss, the best validation BLEU, the mean gradient norm of each stack's bottom and top).
$G plot "$RUNS/res3" "$RUNS/res2" "$RUNS/none" "$RUNS/shallow" \
    --labels "8+8 residual from 3 (GNMT),8+8 residual from 2,8+8 no residual,4+4 no residual" -o "$OUT" >/dev/null
mv "$OUT/summary.md" "$OUT/results.md"
cat "$OUT/results.md"
