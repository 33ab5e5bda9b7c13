#!/usr/bin/env bash
# gnmt-rs's CPU translation paths side by side on one model: speed (tokens/s, alternating rounds
# in one run) and test BLEU of each. Prints the CPU and its flags first: a speed-up on one CPU
# is not one on another.
#
#   scripts/bench-cpu.sh MODEL_DIR SRC REF [N] [THREADS] [ROUNDS]
#
#   MODEL_DIR  a model directory (e.g. runs/multi30k/run/best)
#   SRC REF    source text and its reference (e.g. ../shared/data/multi30k/test2016.{en,de})
#   N          sentences timed (default 500); BLEU is over the whole file
#   GNMT_BIN   a gnmt binary to use instead of building one
#
# Paths: libtorch alone (--no-fused-kernels), gnmt-kernels in float32 on AVX2 and on AVX-512
# (GNMT_MAX_ISA caps the build, one process each), bf16 on gnmt-kernels (AVX512-BF16) and bf16
# on libtorch (the model cast; what --bf16 does without AVX512-BF16), int8 on gnmt-kernels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 3 ] || { sed -n '2,15p' "$0"; exit 2; }
MODEL="$1" SRC="$2" REF="$3" N="${4:-500}" THREADS="${5:-2}" ROUNDS="${6:-2}"
G=$(scripts/release-bin.sh)  # or $GNMT_BIN
export OMP_WAIT_POLICY=PASSIVE
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
head -n "$N" "$SRC" > "$TMP/in.txt"
field() { jq -r --arg k "$1" '.[$k] * 10 | round / 10'; }

# name | environment | flags
PATHS=(
    "libtorch float32|GNMT_MAX_ISA=avx512|--no-fused-kernels"
    "gnmt-kernels float32, AVX2|GNMT_MAX_ISA=avx2|"
    "gnmt-kernels float32, AVX-512|GNMT_MAX_ISA=avx512|"
    "gnmt-kernels bf16 (AVX512-BF16)|GNMT_MAX_ISA=avx512|--bf16"
    "libtorch bf16 (model cast)|GNMT_MAX_ISA=avx2|--bf16"
    "gnmt-kernels int8 (AVX512-VNNI)|GNMT_MAX_ISA=avx512|--int8"
)
DOCTOR=$($G doctor)
echo "CPU: $(sed -n 's/^cpu: //p' <<< "$DOCTOR"), $(nproc) cores, $THREADS threads"
grep -E '^cpu (features|kernels)' <<< "$DOCTOR"
echo "model $MODEL, $N sentences of $SRC timed, beam 5, batch 64; BLEU over all of $SRC"
echo
declare -A speed
for round in $(seq "$ROUNDS"); do
    for p in "${PATHS[@]}"; do
        IFS='|' read -r name env flags <<< "$p"
        # shellcheck disable=SC2086
        r=$(env $env $G bench translate --model "$MODEL" -i "$TMP/in.txt" --beam 5 --batch-size 64 \
            --threads "$THREADS" $flags 2>/dev/null | field tokens_per_s)
        speed[$name]="${speed[$name]:-}${speed[$name]:+, }$r"
    done
done
base=""
echo "| path | tokens/s (rounds) | mean vs libtorch float32 | BLEU (cased, 13a) |"
echo "| --- | --- | --- | --- |"
for p in "${PATHS[@]}"; do
    IFS='|' read -r name env flags <<< "$p"
    mean=$(echo "${speed[$name]}" | tr ',' '\n' | awk '{ s += $1; n++ } END { printf "%.1f", s / n }')
    [ -n "$base" ] || base="$mean"
    # shellcheck disable=SC2086
    env $env $G translate --model "$MODEL" -i "$SRC" -o "$TMP/out.txt" --beam 5 --threads "$THREADS" \
        $(case "$flags" in --bf16) echo --precision bf16 ;; --int8) echo --precision int8 ;; esac) 2>/dev/null
    bleu=$($G eval "$REF" -i "$TMP/out.txt" -b)
    echo "| $name | ${speed[$name]} | $(awk -v a="$mean" -v b="$base" 'BEGIN { printf "%.2fx", a / b }') | $bleu |"
done
