#!/usr/bin/env bash
# The default recipe on any parallel corpus. DIR holds train, valid and test as SPLIT.LANG (plain
# or .gz). A shared 8k unigram vocabulary; the `small` model with its output layer tied to the
# embedding, in bf16 mixed precision where bf16 runs faster than float32 on the CPU (AMX-BF16, or
# AMD's AVX512-BF16; `gnmt doctor`); Adam with the GNMT schedule; an
# exponential moving average of the weights (ema_decay 0.999) is what is validated (greedy BLEU
# each twelfth of the run, the best kept) and saved (a checkpoint each 24th). The number of steps
# fits the corpus (EPOCHS passes at most) and the time budget (MINUTES of training, the speed
# measured by model 1's first sixth). Then, chosen on validation only: the best
# checkpoint or the average of the last four (beam 5), and the search settings (`gnmt tune`);
# the test set is translated with the default and with the tuned search; the last line is the
# test BLEU. On a CPU, `gnmt check-precision` then makes the fastest precision within 0.2 BLEU
# of fp32 on validation the model's default. Writes OUT/results.md.
# --models N trains N models (seeds 1..N, one vocabulary; MINUTES and --steps are shared among
# them, and under MINUTES each model after the first is sized by the speed the ones before it
# had) that translate as one ensemble, tuned as one (on a smaller grid).
#
#   scripts/train-recipe.sh DIR [--src L --tgt L] [--test SPLIT] [--minutes 90] [--epochs 30]
#                           [--steps N] [--speed N] [--models N] [--threads N] [--device cpu|cuda]
#                           [--preset small] [--batch-size 64] [--out DIR] [--resume]
#                           [--set KEY=VALUE ...] [--set-model K KEY=VALUE ...]
# --steps N trains N steps in all (no time measurement); --speed N takes N steps a minute as this
# machine's speed instead of measuring it (models after the first are still sized by the speed
# of those before them); --set overrides a training setting
# (e.g. --set model.dropout=0.3, as scripts/multi30k.sh does) and --set-model K KEY=VALUE for model
# K of an ensemble alone (members that differ, e.g. in model.word_dropout); --resume continues a
# stopped run.
# The languages default to the last two dash-separated parts of DIR's name (tatoeba-en-de: en, de).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR="" SRC="" TGT="" TEST=test MINUTES=90 EPOCHS=30 DEVICE=cpu PRESET=small OUT="" BATCH=64 STEPS=""
RESUME="" MODELS=1 SPEED="" T=() SETS=() MODEL_SETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --src) SRC="$2"; shift 2 ;;
        --tgt) TGT="$2"; shift 2 ;;
        --test) TEST="$2"; shift 2 ;;
        --minutes) MINUTES="$2"; shift 2 ;;
        --epochs) EPOCHS="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --speed) SPEED="$2"; shift 2 ;;
        --models) MODELS="$2"; shift 2 ;;
        --threads) T=(--threads "$2"); shift 2 ;;
        --device) DEVICE="$2"; shift 2 ;;
        --preset) PRESET="$2"; shift 2 ;;
        --batch-size) BATCH="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --resume) RESUME=1; shift ;;
        --set) SETS+=(--set "$2"); shift 2 ;;
        --set-model) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] && [ -n "${3:-}" ] \
                         || { echo "train-recipe.sh: --set-model takes a model number and KEY=VALUE" >&2; exit 2; }
                     MODEL_SETS+=("$2 $3"); shift 3 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        -*) echo "train-recipe.sh: unknown option $1" >&2; exit 2 ;;
        *) DIR="$1"; shift ;;
    esac
done
die() { echo "train-recipe.sh: $*" >&2; exit 1; }
[ -n "$DIR" ] && [ -d "$DIR" ] || die "give the corpus directory (train/valid/test.{SRC,TGT}); --help says more"
[[ "$MODELS" =~ ^[1-9][0-9]*$ ]] || die "--models must be a positive number, not '$MODELS'"
for ms in "${MODEL_SETS[@]}"; do
    [ "${ms%% *}" -le "$MODELS" ] || die "--set-model ${ms%% *}: there are only $MODELS model(s)"
done
[ -z "$SPEED" ] || [[ "$SPEED" =~ ^[0-9]*[1-9][0-9]*([.][0-9]+)?$ ]] \
    || die "--speed must be steps a minute (a positive number), not '$SPEED'"
name=$(basename "$(cd "$DIR" && pwd)")
if [ -z "$SRC" ] || [ -z "$TGT" ]; then
    IFS=- read -r -a parts <<< "$name"
    [ "${#parts[@]}" -ge 3 ] || die "cannot tell the languages from '$name': give --src and --tgt"
    SRC="${SRC:-${parts[-2]}}" TGT="${TGT:-${parts[-1]}}"
fi
file() {  # split lang: the file, plain or gzipped
    for f in "$DIR/$1.$2" "$DIR/$1.$2.gz"; do [ -f "$f" ] && { echo "$f"; return; }; done
    die "$DIR/$1.$2 (or .gz) is missing"
}
lines() { case "$1" in *.gz) zcat "$1" | wc -l ;; *) wc -l < "$1" ;; esac; }
TRAIN_S=$(file train "$SRC") TRAIN_T=$(file train "$TGT") VALID_S=$(file valid "$SRC") VALID_T=$(file valid "$TGT")
TEST_S=$(file "$TEST" "$SRC") TEST_T=$(file "$TEST" "$TGT")
OUT="${OUT:-runs/recipe-$name}"
G=$(scripts/release-bin.sh)  # or $GNMT_BIN
# The output layer tied to the shared embedding where the preset allows it (+1.0 BLEU on
# Multi30k's validation); on a CPU where bf16 runs faster than float32, bf16 mixed precision (1.5-2x
# the steps a minute on AMD's Zen 4 and 5, the same BLEU on Multi30k; 0.63x on an Intel Xeon
# without AMX, which trains float32). Each --set given comes after these, so it overrides them.
DEFAULTS=()
size_of() { $G model-info --preset "$PRESET" | sed -n "s/^ *\"$1\": \([0-9]*\),*$/\1/p"; }
[ "$(size_of embedding_size)" = "$(size_of hidden_size)" ] && DEFAULTS+=(--set model.tied_output=true)
[ "$DEVICE" = cpu ] && $G doctor | grep -x 'cpu bf16 faster than fp32: yes' >/dev/null && DEFAULTS+=(--set 'precision="bf16"')
SETS=("${DEFAULTS[@]}" "${SETS[@]}")
mkdir -p "$OUT"
pairs=$(lines "$TRAIN_S"); valid_n=$(lines "$VALID_S")
echo "train-recipe.sh: $name, $SRC->$TGT, $pairs training pairs, $valid_n validation lines" >&2
[ -f "$OUT/tokenizer.json" ] || $G vocab --src "$TRAIN_S" --tgt "$TRAIN_T" --size 8000 -o "$OUT/tokenizer.json"

train_args=(--train-src "$TRAIN_S" --train-tgt "$TRAIN_T" --vocab "$OUT/tokenizer.json" --preset "$PRESET"
            --device "$DEVICE" --batch-size "$BATCH" "${T[@]}")
# A resumed run keeps the steps it was started with (the schedule depends on them).
[ -z "$STEPS" ] && [ -n "$RESUME" ] && [ -f "$OUT/steps" ] && STEPS=$(cat "$OUT/steps")
by_epochs=$(( EPOCHS * pairs / BATCH ))
start=$(date +%s)  # the budget counts from here
# MADE SECONDS_LEFT STEPS SECONDS: the steps a model gets when STEPS took SECONDS here and MADE are
# made: its share of the seconds left, less a tenth for validation and checkpoints, at most the
# epoch limit, in multiples of 24 (validation each twelfth, checkpoints each 24th), and at least
# 1.5x those made (so that the schedule's decay, at two thirds, starts after them).
fit_steps() {
    awk -v a="$1" -v left="$2" -v d="$3" -v t="$4" -v n="$MODELS" -v cap="$by_epochs" \
        'BEGIN { s = a + left * 0.9 * d / (t > 1 ? t : 1) / n; if (s < 1.5 * a) s = 1.5 * a + 23
                 if (s > cap) s = cap; print int(s / 24) * 24 }'
}
sized() {  # HOW STEPS: says how many steps each model got, and how that was decided
    echo "train-recipe.sh: $1: $2 steps ($(( $2 * BATCH / pairs )) epochs) for each of $MODELS model(s)$( [ "$MODELS" -gt 1 ] && echo ", to be measured again after each" )" >&2
}
BUDGETED="" MEASURE="" MEASURED=""
if [ -z "$STEPS" ]; then
    BUDGETED=1
    if [ -n "$SPEED" ]; then
        STEPS=$(fit_steps 0 $(( MINUTES * 60 )) "$SPEED" 60)
        [ "$STEPS" -ge 120 ] || die "only $STEPS steps fit in $MINUTES minutes at $SPEED a minute: give more --minutes"
        sized "$SPEED steps a minute" "$STEPS"
        echo $(( STEPS * MODELS )) > "$OUT/steps"
    else
        MEASURE=1  # model 1 measures the speed (below)
    fi
else
    echo "$STEPS" > "$OUT/steps"
    STEPS=$(( STEPS / MODELS ))  # each model's
    [ "$STEPS" -ge 12 ] || die "--steps must be at least 12 for each model"
fi

# Validation each twelfth of the run; checkpoints each 24th, so that the last four span the last
# sixth (the end of the learning-rate decay). Model k > 1 trains in run<k> with seed k.
numbered() { [ "$2" -eq 1 ] && echo "$1" || echo "$1$2"; }  # DIR K: model K's DIR
run_dir() { numbered "$OUT/run" "$1"; }
train_model() {  # K STEPS [ARG...]: train model K for STEPS steps
    local k=$1 steps=$2 own=() ms
    shift 2
    [ "$k" -gt 1 ] && own=(--set "seed=$k")
    for ms in "${MODEL_SETS[@]}"; do [ "${ms%% *}" = "$k" ] && own+=(--set "${ms#* }"); done
    $G train "${train_args[@]}" --valid-src "$VALID_S" --valid-tgt "$VALID_T" --max-steps "$steps" \
        --save-every $(( steps / 24 > 0 ? steps / 24 : 1 )) --valid-every $(( steps / 12 > 0 ? steps / 12 : 1 )) \
        --set keep_last=8 --set "valid_bleu_sentences=$(( valid_n < 1000 ? valid_n : 1000 ))" --set ema_decay=0.999 \
        --set "schedule={kind=\"gnmt\", warmup=200, decay_steps=4}" "${SETS[@]}" "${own[@]}" --out "$(run_dir "$k")" "$@"
}
last_step() {  # RUN: the step of its last checkpoint (0 without one)
    local s
    s=$({ ls "$1/checkpoints" 2>/dev/null || true; } | sed -n 's/^step-0*\([0-9]\)/\1/p' | sort -n | tail -n 1)
    echo "${s:-0}"
}
# Under a time budget without --speed, model 1 measures this machine's speed itself: it trains
# for a sixth of its share of the minutes with the epoch limit as its length (the GNMT schedule's
# learning rate is constant there whatever the length: warm-up, then flat until two thirds), is
# sized by the steps it made, and goes on to them (`--set max_steps`). Nothing is thrown away, and
# the speed measured is that of real training, not of a short run on a machine that may be
# quieter or busier for a minute. The steps stay at least 1.5x those made, so that the decay
# still starts after them.
measure_with_model_1() {
    local run leg before after t0 t1 n
    run=$(run_dir 1)
    leg=$(awk -v m="$MINUTES" -v n="$MODELS" 'BEGIN { l = m / n / 6; printf "%.2f", (l < 0.25 ? 0.25 : l) }')
    echo "train-recipe.sh: model 1 measures this machine's speed for $leg of the $MINUTES minutes" >&2
    before=0  # (--force deletes what an earlier start left)
    [ -n "$RESUME" ] && before=$(last_step "$run")
    t0=$(date +%s.%N)
    train_model 1 "$by_epochs" --stop-after-minutes "$leg" $( [ -n "$RESUME" ] && echo --resume || echo --force )
    t1=$(date +%s.%N)
    after=$(last_step "$run")
    # (At most one validation fell in the measurement.)
    n=$(fit_steps "$after" $(( MINUTES * 60 - $(date +%s) + start )) $(( after - before )) \
                  "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    [ "$n" -ge 120 ] || n=120
    [ "$after" -ge "$by_epochs" ] && n=$after  # (the epoch limit came first)
    MEASURED="$(( after - before )) steps in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 60 }') minutes"
    sized "$MEASURED" "$n"
    echo "$n" > "$OUT/steps.1"
    echo $(( n * MODELS )) > "$OUT/steps"
    STEPS=$n
}
# Under a time budget, models 2..N are sized again from the speed the runs before them had
# (validation and checkpoints included), so that a slow or quick spell of the machine neither
# overruns the budget nor leaves it unused. Each model's steps are kept in OUT/steps.K, which
# --resume reads.
steps_of() {  # K: model K's steps
    local k=$1 done=0 j elapsed
    if [ -n "$RESUME" ] && [ -f "$OUT/steps.$k" ]; then cat "$OUT/steps.$k"; return; fi
    if [ -z "$BUDGETED" ] || [ "$k" -eq 1 ]; then echo "$STEPS"; return; fi
    for j in $(seq 1 $(( k - 1 ))); do done=$(( done + $(cat "$OUT/steps.$j") )); done
    elapsed=$(( $(date +%s) - start ))
    awk -v d="$done" -v e="$elapsed" -v left=$(( MINUTES * 60 - $(date +%s) + start )) -v n=$(( MODELS - k + 1 )) \
        -v cap="$by_epochs" 'BEGIN { s = left * 0.97 * d / (e > 1 ? e : 1) / n; if (s > cap) s = cap
                                    s = int(s / 24) * 24; print (s < 24 ? 24 : s) }'
}
for k in $(seq 1 "$MODELS"); do
    [ -n "$MEASURE" ] && [ "$k" -eq 1 ] && measure_with_model_1
    steps=$(steps_of "$k")
    echo "$steps" > "$OUT/steps.$k"
    [ "$k" -eq 1 ] || echo "train-recipe.sh: model $k: $steps steps" >&2
    if [ -n "$MEASURE" ] && [ "$k" -eq 1 ] || [ -n "$RESUME" ]; then
        # (--set: a resumed run may have been stopped before its re-sizing)
        [ "$(last_step "$(run_dir "$k")")" -ge "$steps" ] || train_model "$k" "$steps" --resume --set "max_steps=$steps"
    else
        train_model "$k" "$steps" --force
    fi
done
train_min=$(awk -v s=$(( $(date +%s) - start )) 'BEGIN { printf "%.1f", s / 60 }')

# For each model, best/ (by greedy validation BLEU during training) or the average of its last
# four checkpoints: whichever translates validation better (beam 5, the first 1000 lines).
# (awk, not head: head would close the pipe early and, under pipefail, fail the script.)
zcat -f "$VALID_S" | awk 'NR <= 1000' > "$OUT/valid.src"; zcat -f "$VALID_T" | awk 'NR <= 1000' > "$OUT/valid.ref"
MODEL=() CHOSEN=() VALID_SCORES=()
for k in $(seq 1 "$MODELS"); do
    run=$(run_dir "$k") avg=$(numbered "$OUT/averaged" "$k")
    $G average --last 4 --run "$run" --out "$avg"
    declare -A score
    for m in best averaged; do
        case $m in best) dir="$run/best" ;; *) dir="$avg" ;; esac
        rm -f "$dir/search.json" "$dir/precision.json"  # (from an earlier tune or check of this run's model)
        $G -q translate --model "$dir" --device "$DEVICE" "${T[@]}" --beam 5 -i "$OUT/valid.src" -o "$OUT/valid.$m$k.hyp"
        score[$m]=$($G eval "$OUT/valid.ref" -i "$OUT/valid.$m$k.hyp" -b)
    done
    if awk -v a="${score[averaged]}" -v b="${score[best]}" 'BEGIN { exit !(a > b) }'; then
        MODEL+=("$avg") CHOSEN+=(averaged)
    else
        MODEL+=("$run/best") CHOSEN+=(best)
    fi
    VALID_SCORES+=("model $k: best ${score[best]}, averaged ${score[averaged]}, ${CHOSEN[-1]} kept")
done
zcat -f "$TEST_T" > "$OUT/test.ref"
$G -q translate --model "${MODEL[@]}" --device "$DEVICE" "${T[@]}" -i "$TEST_S" -o "$OUT/test.default.hyp"
if [ "$MODELS" -gt 1 ]; then
    # The ensemble on validation (beam 5, as each model was scored), and the default search.
    $G -q translate --model "${MODEL[@]}" --device "$DEVICE" "${T[@]}" --beam 5 -i "$OUT/valid.src" -o "$OUT/valid.ensemble.hyp"
    VALID_SCORES+=("the ensemble of the $MODELS: $($G eval "$OUT/valid.ref" -i "$OUT/valid.ensemble.hyp" -b)")
fi
# The search settings, tuned on validation for the model or the ensemble as it translates
# (an ensemble of N translates N times slower: a smaller grid around the defaults).
if [ "$MODELS" -eq 1 ]; then
    grid=(--beams 5,8 --alphas 0.6,0.8,1.0,1.2 --betas 0,0.1,0.2 --max-len-as 1.2,1.5)
else
    grid=(--beams 5 --alphas 0.6,1.0,1.4 --betas 0,0.2 --max-len-as 1.5)
fi
$G tune --model "${MODEL[@]}" --device "$DEVICE" --src "$OUT/valid.src" --ref "$OUT/valid.ref" "${grid[@]}" --max-len-bs 10 "${T[@]}" \
    | tee "$OUT/tune.txt"
$G -q translate --model "${MODEL[@]}" --device "$DEVICE" "${T[@]}" -i "$TEST_S" -o "$OUT/test.hyp"
if [ "$MODELS" -eq 1 ]; then
    # The fastest precision this CPU has within 0.2 BLEU of fp32 on validation becomes the
    # model's default for translate and serve (precision.json; the test BLEU above is float32's).
    if [ "$DEVICE" = cpu ]; then
        $G check-precision --model "${MODEL[0]}" --src "$OUT/valid.src" --ref "$OUT/valid.ref" "${T[@]}" > "$OUT/precision.txt"
    fi
fi
bleu() { $G eval "$OUT/test.ref" -i "$1" -b "${@:2}"; }
{
    echo "# $name $SRC->$TGT: the default recipe (scripts/train-recipe.sh) ${SETS[*]}$( [ "${#MODEL_SETS[@]}" -gt 0 ] && printf '; model %s only' "${MODEL_SETS[@]}")"
    echo
    echo "Machine: $(nproc) cores, $($G doctor | sed -n 's/^cpu: //p'); $pairs training pairs;"
    echo "Steps of $BATCH sentences: $(for k in $(seq 1 "$MODELS"); do cat "$OUT/steps.$k"; done | paste -sd/ -), training $train_min min$( [ -n "$MEASURED" ] && echo " (the speed measured by model 1: $MEASURED)")."
    for k in $(seq 1 "$MODELS"); do
        echo "Validation BLEU (greedy) during training, model $k: $(grep -o '"valid_bleu":[0-9.]*' "$(run_dir "$k")/metrics.jsonl" | cut -d: -f2 | awk '{printf "%s%.1f", (NR > 1 ? ", " : ""), $1}')."
    done
    echo "Validation BLEU (beam 5): $(IFS=';'; echo "${VALID_SCORES[*]}" | sed 's/;/; /g')."
    grep -E '^(best|written)' "$OUT/tune.txt" 2>/dev/null || true
    tail -n 1 "$OUT/precision.txt" 2>/dev/null || true
    echo
    echo "| $TEST, ${CHOSEN[*]} model(s) | BLEU (cased, 13a) | BLEU (lowercased) | chrF2 |"
    echo '| --- | --- | --- | --- |'
    for m in default tuned; do
        case $m in default) hyp="$OUT/test.default.hyp" ;; *) hyp="$OUT/test.hyp" ;; esac
        echo "| $m search | $(bleu "$hyp") | $(bleu "$hyp" -lc) | $(bleu "$hyp" -m chrf) |"
    done
    echo
    echo '```'
    $G eval "$OUT/test.ref" -i "$OUT/test.hyp" -m bleu chrf -f text
    echo '```'
} > "$OUT/results.md"
cat "$OUT/results.md"
echo "TEST BLEU $(bleu "$OUT/test.hyp") ($name $SRC->$TGT, ${CHOSEN[*]} model(s), $train_min min of training; default search $(bleu "$OUT/test.default.hyp"))"
