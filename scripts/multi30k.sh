#!/usr/bin/env bash
# Multi30k En->De results: a shared vocabulary, training with validation BLEU and best-checkpoint
# keeping, averaging of the last checkpoints, beam-5 translation of test2016, and scores with
# `gnmt eval` (cased and lowercased BLEU with signatures, chrF). Writes RUN_DIR/results.md.
#
#   scripts/multi30k.sh [DATA_DIR] [--preset small|gnmt4] [--device cpu|cuda] [--steps N] [--out DIR]
#                       [--batch-size N] [--threads N] [--resume] [--set KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=../shared/data/multi30k PRESET=small DEVICE=cpu STEPS=4000 OUT="" BATCH=64 THREADS="" RESUME=""
SETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --preset) PRESET="$2"; shift 2 ;;
        --device) DEVICE="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --batch-size) BATCH="$2"; shift 2 ;;
        --threads) THREADS="--threads $2"; shift 2 ;;
        --resume) RESUME="--resume"; shift ;;
        --set) SETS+=(--set "$2"); shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        -*) echo "multi30k.sh: unknown option $1" >&2; exit 2 ;;
        *) DATA="$1"; shift ;;
    esac
done
OUT="${OUT:-runs/multi30k-$PRESET}"
for f in train.en train.de valid.en valid.de test2016.en test2016.de; do
    [ -f "$DATA/$f" ] || { echo "multi30k.sh: $DATA/$f is missing (give the Multi30k directory)" >&2; exit 1; }
done
G=$(scripts/release-bin.sh)  # or $GNMT_BIN
mkdir -p "$OUT"
start=$(date +%s)
[ -f "$OUT/tokenizer.json" ] || $G vocab --src "$DATA/train.en" --tgt "$DATA/train.de" --size 8000 -o "$OUT/tokenizer.json"
EVERY=$(( STEPS / 6 ))
$G train --train-src "$DATA/train.en" --train-tgt "$DATA/train.de" --valid-src "$DATA/valid.en" --valid-tgt "$DATA/valid.de" \
    --vocab "$OUT/tokenizer.json" --preset "$PRESET" --device "$DEVICE" --batch-size "$BATCH" --max-steps "$STEPS" \
    --save-every "$EVERY" --valid-every "$EVERY" --set keep_last=4 --set valid_bleu_sentences=1014 \
    --set "schedule={kind=\"gnmt\", warmup=200, decay_steps=4}" "${SETS[@]}" $THREADS $RESUME --out "$OUT/run" \
    $( [ -n "$RESUME" ] || echo --force )
train_end=$(date +%s)
$G average --last 4 --run "$OUT/run" --out "$OUT/averaged"
$G plot "$OUT/run" -o "$OUT/plots" >/dev/null
for m in best final averaged; do
    case $m in averaged) dir="$OUT/averaged" ;; *) dir="$OUT/run/$m" ;; esac
    $G translate --model "$dir" --device "$DEVICE" --beam 5 -i "$DATA/test2016.en" -o "$OUT/test2016.$m.de"
done
end=$(date +%s)
{
    echo "# Multi30k En->De test2016, preset $PRESET, $STEPS steps of $BATCH sentences, device $DEVICE ${SETS[*]}"
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); training $(( (train_end - start) / 60 )) min, all $(( (end - start) / 60 )) min."
    echo "Training throughput: $(tail -n 50 "$OUT/run/metrics.jsonl" | grep -o '"tokens_per_s":[0-9.]*' | cut -d: -f2 | awk '{s+=$1; n++} END {printf "%.0f", s/n}') tokens/s (source + target, non-pad)."
    echo
    echo '| model | BLEU (cased, 13a) | BLEU (lowercased) | chrF2 |'
    echo '| --- | --- | --- | --- |'
    for m in best final averaged; do
        c=$($G eval "$DATA/test2016.de" -i "$OUT/test2016.$m.de" -b)
        l=$($G eval "$DATA/test2016.de" -i "$OUT/test2016.$m.de" -b -lc)
        f=$($G eval "$DATA/test2016.de" -i "$OUT/test2016.$m.de" -b -m chrf)
        echo "| $m | $c | $l | $f |"
    done
    echo
    echo '```'
    $G eval "$DATA/test2016.de" -i "$OUT/test2016.averaged.de" -m bleu chrf -f text
    $G eval "$DATA/test2016.de" -i "$OUT/test2016.averaged.de" -lc -f text
    echo '```'
} > "$OUT/results.md"
cat "$OUT/results.md"
