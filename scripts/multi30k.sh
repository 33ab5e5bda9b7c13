#!/usr/bin/env bash
# The Multi30k En->De recipe (README "Multi30k"): a shared 8k unigram vocabulary; the `small`
# model with dropout 0.3; 9000 steps of 64 sentences (about 20 epochs), Adam with the GNMT schedule;
# an exponential moving average of the weights (ema_decay 0.999) validated, kept and saved;
# then, chosen on the validation set only: the best checkpoint or the average of the last four
# (beam 5), and the search settings (`gnmt tune`). test2016 is translated once with the defaults
# and once with the tuned settings, and scored with `gnmt eval`. Writes OUT/results.md.
#
#   scripts/multi30k.sh [DATA_DIR] [--preset small|gnmt4] [--device cpu|cuda] [--steps N] [--out DIR]
#                       [--batch-size N] [--threads N] [--resume] [--set KEY=VALUE ...]
# --set overrides a training setting (e.g. --set model.dropout=0.2, --set ema_decay=0.9995).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=../shared/data/multi30k PRESET=small DEVICE=cpu STEPS=9000 OUT="" BATCH=64 RESUME=""
T=() SETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --preset) PRESET="$2"; shift 2 ;;
        --device) DEVICE="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --batch-size) BATCH="$2"; shift 2 ;;
        --threads) T=(--threads "$2"); shift 2 ;;
        --resume) RESUME="--resume"; shift ;;
        --set) SETS+=(--set "$2"); shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        -*) echo "multi30k.sh: unknown option $1" >&2; exit 2 ;;
        *) DATA="$1"; shift ;;
    esac
done
OUT="${OUT:-runs/multi30k-$PRESET}"
for f in train.en train.de valid.en valid.de test2016.en test2016.de; do
    [ -f "$DATA/$f" ] || { echo "multi30k.sh: $DATA/$f is missing (give the Multi30k directory)" >&2; exit 1; }
done
[ "$STEPS" -ge 24 ] || { echo "multi30k.sh: --steps must be at least 24" >&2; exit 2; }
G=$(scripts/release-bin.sh)  # or $GNMT_BIN
mkdir -p "$OUT"
start=$(date +%s)
[ -f "$OUT/tokenizer.json" ] || $G vocab --src "$DATA/train.en" --tgt "$DATA/train.de" --size 8000 -o "$OUT/tokenizer.json"
# Validation each twelfth of the run; checkpoints each 24th, so that the last four span the
# last sixth (the end of the learning-rate decay).
$G train --train-src "$DATA/train.en" --train-tgt "$DATA/train.de" --valid-src "$DATA/valid.en" --valid-tgt "$DATA/valid.de" \
    --vocab "$OUT/tokenizer.json" --preset "$PRESET" --device "$DEVICE" --batch-size "$BATCH" --max-steps "$STEPS" \
    --save-every $(( STEPS / 24 )) --valid-every $(( STEPS / 12 )) --set keep_last=8 --set valid_bleu_sentences=1014 \
    --set "schedule={kind=\"gnmt\", warmup=200, decay_steps=4}" --set model.dropout=0.3 --set ema_decay=0.999 \
    "${SETS[@]}" "${T[@]}" $RESUME --out "$OUT/run" $( [ -n "$RESUME" ] || echo --force )
train_end=$(date +%s)
$G average --last 4 --run "$OUT/run" --out "$OUT/averaged"
$G plot "$OUT/run" -o "$OUT/plots" >/dev/null

# The model: best/ (by greedy validation BLEU during training) or the average of the last four
# checkpoints, whichever translates the validation set better with beam 5.
declare -A score
for m in best averaged; do
    case $m in best) dir="$OUT/run/best" ;; *) dir="$OUT/averaged" ;; esac
    $G -q translate --model "$dir" --device "$DEVICE" "${T[@]}" --beam 5 -i "$DATA/valid.en" -o "$OUT/valid.$m.de"
    score[$m]=$($G eval "$DATA/valid.de" -i "$OUT/valid.$m.de" -b)
done
MODEL="$OUT/run/best" CHOSEN=best
awk -v a="${score[averaged]}" -v b="${score[best]}" 'BEGIN { exit !(a > b) }' && { MODEL="$OUT/averaged"; CHOSEN=averaged; }
rm -f "$MODEL/search.json"
$G -q translate --model "$MODEL" --device "$DEVICE" "${T[@]}" -i "$DATA/test2016.en" -o "$OUT/test2016.default.de"
$G tune --model "$MODEL" --src "$DATA/valid.en" --ref "$DATA/valid.de" --beams 5,8 --alphas 0.6,0.8,1.0,1.2 \
    --betas 0,0.1,0.2 --max-len-as 1.2,1.5 --max-len-bs 10 "${T[@]}" | tee "$OUT/tune.txt"
$G -q translate --model "$MODEL" --device "$DEVICE" "${T[@]}" -i "$DATA/test2016.en" -o "$OUT/test2016.tuned.de"
end=$(date +%s)
{
    echo "# Multi30k En->De, preset $PRESET, $STEPS steps of $BATCH sentences, device $DEVICE ${SETS[*]}"
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); training $(( (train_end - start) / 60 )) min, all $(( (end - start) / 60 )) min."
    echo "Training throughput: $(tail -n 50 "$OUT/run/metrics.jsonl" | grep -o '"tokens_per_s":[0-9.]*' | cut -d: -f2 | awk '{s+=$1; n++} END {printf "%.0f", s/n}') tokens/s (source + target, non-pad)."
    echo "Validation BLEU (greedy) during training: $(grep -o '"valid_bleu":[0-9.]*' "$OUT/run/metrics.jsonl" | cut -d: -f2 | awk '{printf "%s%.1f", (NR > 1 ? ", " : ""), $1}')."
    echo "Validation BLEU, beam 5: best ${score[best]}, averaged ${score[averaged]}: $CHOSEN kept."
    echo
    echo '| test2016 | BLEU (cased, 13a) | BLEU (lowercased) | chrF2 |'
    echo '| --- | --- | --- | --- |'
    for m in default tuned; do
        c=$($G eval "$DATA/test2016.de" -i "$OUT/test2016.$m.de" -b)
        l=$($G eval "$DATA/test2016.de" -i "$OUT/test2016.$m.de" -b -lc)
        f=$($G eval "$DATA/test2016.de" -i "$OUT/test2016.$m.de" -b -m chrf)
        echo "| $CHOSEN, $m search | $c | $l | $f |"
    done
    echo
    echo '```'
    $G eval "$DATA/test2016.de" -i "$OUT/test2016.tuned.de" -m bleu chrf -f text
    $G eval "$DATA/test2016.de" -i "$OUT/test2016.tuned.de" -lc -f text
    echo '```'
} > "$OUT/results.md"
cat "$OUT/results.md"
