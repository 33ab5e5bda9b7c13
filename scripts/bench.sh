#!/usr/bin/env bash
# Speed of gnmt-rs against the same model and beam search in PyTorch eager
# (scripts/pytorch-compare.py), measured side by side, alternating, with the same thread count.
# Also checks that both beam searches give the same translations of real sentences.
#
#   scripts/bench.sh [--model DIR] [--input FILE] [--threads N] [--sentences N] [--rounds N] [--only translate|train]
#   MODEL defaults to runs/multi30k/averaged, else demo/run/final. --only translate prints the
#   translation table of every precision alone (a few minutes), --only train the training one (on a preset: no model needed).
#   --rounds (default 2): alternating rounds per table; the precision tables end with each ratio's median.
#   --max-isa avx2: both sides as on an AVX2-only CPU (gnmt's GNMT_MAX_ISA, and PyTorch's ATen,
#   MKL, oneDNN and fbgemm capped by their own variables), to measure that CPU class on a newer one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL="" INPUT=../shared/data/multi30k/test2016.en THREADS=2 N=500 ONLY="" ROUNDS=2 MAX_ISA=""
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL="$2"; shift 2 ;;
        --input) INPUT="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --sentences) N="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2
            [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --rounds takes a positive number" >&2; exit 2; } ;;
        --only) ONLY="$2"; shift 2
            case "$ONLY" in translate|train) ;; *) echo "bench.sh: --only takes translate or train" >&2; exit 2 ;; esac ;;
        --max-isa) MAX_ISA="$2"; shift 2
            [ "$MAX_ISA" = avx2 ] || { echo "bench.sh: --max-isa takes avx2" >&2; exit 2; } ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for m in "$MODEL" runs/multi30k/averaged demo/run/final; do
    [ -n "$m" ] && [ -f "$m/model.safetensors" ] && { MODEL=$m; break; }
done
# (Training runs on a preset's random weights: --only train needs no model.)
[ -f "$MODEL/model.safetensors" ] || [ "$ONLY" = train ] || { echo "bench.sh: no model: run scripts/demo.sh or give --model" >&2; exit 1; }
scripts/setup.sh >/dev/null
cargo build --release -q -p gnmt-cli
export OMP_WAIT_POLICY=PASSIVE
if [ "$MAX_ISA" = avx2 ]; then
    export GNMT_MAX_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2
fi
G=target/release/gnmt
PY="$(readlink -f .libtorch)/../../../../bin/python"
[ -x "$PY" ] || PY="${GNMT_VENV:-$HOME/.cache/gnmt/torch-2.11.0}/bin/python"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
head -n "$N" "$INPUT" > "$TMP/in.txt"
[ "$ONLY" = train ] || $G tokenize --ids --vocab "$MODEL/tokenizer.json" < "$TMP/in.txt" > "$TMP/in.ids"
# The allocator setting gnmt applies to itself (main.rs, keep_freed_memory), for PyTorch.
MALLOC=glibc.malloc.trim_threshold=2147483647:glibc.malloc.mmap_threshold=33554432:glibc.malloc.mmap_max=0:glibc.malloc.arena_max=1
field() { jq -r --arg k "$1" '.[$k] * 10 | round / 10'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
best() { printf '%s\n' "$@" | sort -g | tail -n 1; }
# The median of ratios printed as 1.23x (the mean of the middle two for an even count).
median() { printf '%s\n' "$@" | tr -d x | sort -g | awk '{ v[NR] = $1 } END { printf "%.2fx", (v[int((NR + 1) / 2)] + v[int(NR / 2) + 1]) / 2 }'; }
DOCTOR=$($G doctor)  # (the CPU's name, flags and kernels, for the headers)
echo "model $MODEL, $N sentences of $INPUT, $THREADS threads, $(nproc) cores: $(sed -n 's/^cpu: //p' <<< "$DOCTOR")"
[ -z "$MAX_ISA" ] || echo "capped at $MAX_ISA: gnmt-rs (GNMT_MAX_ISA) and PyTorch (ATen, MKL, oneDNN, fbgemm)"
part() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
if part all; then
echo
echo "| benchmark | gnmt-rs | PyTorch eager | ratio | PyTorch eager, gnmt-rs's search | ratio | PyTorch eager, gnmt-rs's malloc setting | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for round in $(seq "$ROUNDS"); do
    r=$($G bench train --preset small --batch-size 64 --threads "$THREADS" --steps 10 | field tokens_per_s)
    p=$("$PY" scripts/pytorch-compare.py train --gnmt "$G" --preset small --batch-size 64 --threads "$THREADS" --steps 10 2>/dev/null | field tokens_per_s)
    echo "| train small, batch 64, tokens/s (round $round) | $r | $p | $(ratio "$r" "$p") | | | | |"
    r=$($G bench translate --model "$MODEL" -i "$TMP/in.txt" --beam 5 --batch-size 64 --threads "$THREADS" 2>/dev/null | field tokens_per_s)
    p=$("$PY" scripts/pytorch-compare.py translate --model "$MODEL" --ids "$TMP/in.ids" --beam 5 --batch-size 64 \
        --threads "$THREADS" --output "$TMP/py.ids" 2>/dev/null | field tokens_per_s)
    q=$("$PY" scripts/pytorch-compare.py translate --model "$MODEL" --ids "$TMP/in.ids" --beam 5 --batch-size 64 \
        --threads "$THREADS" --grouped 2>/dev/null | field tokens_per_s)
    # PyTorch with the allocator setting gnmt applies to itself (see docs/results.md, Speed).
    m=$(GLIBC_TUNABLES=$MALLOC "$PY" scripts/pytorch-compare.py translate --model "$MODEL" --ids "$TMP/in.ids" --beam 5 --batch-size 64 \
        --threads "$THREADS" 2>/dev/null | field tokens_per_s)
    echo "| translate beam 5, batch 64, tokens/s (round $round) | $r | $p | $(ratio "$r" "$p") | $q | $(ratio "$r" "$q") | $m | $(ratio "$r" "$m") |"
done
fi
# Every precision each side has on this CPU: gnmt-rs's float32, bf16 and int8 paths (see `gnmt
# doctor` for the kernels they run on) against PyTorch eager in float32, in bf16 (the model cast)
# and dynamically quantized to int8 (quantize_dynamic on LSTM and Linear).
echo
echo "CPU flags: $(sed -n 's/^cpu features: //p' <<< "$DOCTOR"); gnmt-rs kernels: $(sed -n 's/^cpu kernels: //p' <<< "$DOCTOR"); bf16 faster than fp32: $(sed -n 's/^cpu bf16 faster than fp32: //p' <<< "$DOCTOR")"
if part translate; then
echo
echo "| benchmark (round) | gnmt-rs fp32 | PyTorch fp32 | gnmt-rs bf16 | PyTorch bf16 | gnmt-rs int8 | PyTorch int8 | best gnmt-rs / best PyTorch | best gnmt-rs / PyTorch fp32 |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
vs_best=() vs_fp32=()
for round in $(seq "$ROUNDS"); do
    g32=$($G bench translate --model "$MODEL" -i "$TMP/in.txt" --beam 5 --batch-size 64 --threads "$THREADS" 2>/dev/null | field tokens_per_s)
    p32=$("$PY" scripts/pytorch-compare.py translate --model "$MODEL" --ids "$TMP/in.ids" --beam 5 --batch-size 64 --threads "$THREADS" \
        --output "$TMP/py.ids" 2>/dev/null | field tokens_per_s)
    g16=$($G bench translate --model "$MODEL" -i "$TMP/in.txt" --beam 5 --batch-size 64 --threads "$THREADS" --bf16 2>/dev/null | field tokens_per_s)
    p16=$("$PY" scripts/pytorch-compare.py translate --model "$MODEL" --ids "$TMP/in.ids" --beam 5 --batch-size 64 --threads "$THREADS" --precision bf16 2>/dev/null | field tokens_per_s)
    g8=$($G bench translate --model "$MODEL" -i "$TMP/in.txt" --beam 5 --batch-size 64 --threads "$THREADS" --int8 2>/dev/null | field tokens_per_s)
    p8=$("$PY" scripts/pytorch-compare.py translate --model "$MODEL" --ids "$TMP/in.ids" --beam 5 --batch-size 64 --threads "$THREADS" --precision int8 2>/dev/null | field tokens_per_s)
    gb=$(best "$g32" "$g16" "$g8"); pb=$(best "$p32" "$p16" "$p8")
    vs_best+=("$(ratio "$gb" "$pb")") vs_fp32+=("$(ratio "$gb" "$p32")")
    echo "| translate beam 5, batch 64, tokens/s ($round) | $g32 | $p32 | $g16 | $p16 | $g8 | $p8 | ${vs_best[-1]} | ${vs_fp32[-1]} |"
done
echo "| median of $ROUNDS rounds | | | | | | | $(median "${vs_best[@]}") | $(median "${vs_fp32[@]}") |"
fi
if part train; then
# Training: gnmt-rs's float32 and bf16 mixed precision against PyTorch eager in float32 and
# under CPU autocast to bf16, each also with gnmt-rs's allocator setting (the best of all four
# is PyTorch's best).
echo
# The matrix products' work of a step (gnmt bench train's gflop_per_step) over its tokens: the
# same model and batch for both, so tokens/s times this is each one's GFLOP/s.
per_token=$($G bench train --preset small --batch-size 64 --threads "$THREADS" --steps 1 --warmup 0 2>/dev/null \
    | jq -r '.gflop_per_step / (.tokens_per_s * .ms_per_step / 1000)')
echo "| train small, batch 64, tokens/s (round) | gnmt-rs fp32 | gnmt-rs bf16 | PyTorch fp32 | PyTorch fp32, gnmt's malloc | PyTorch bf16 | PyTorch bf16, gnmt's malloc | best gnmt-rs / best PyTorch | best gnmt-rs / PyTorch fp32 | GFLOP/s, best gnmt-rs / best PyTorch |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
# gnmt-rs trains each batch as min(threads, 2) shares: its setting for the thread count (two
# shares on one thread run one after the other, 5-13% slower than one; README, Train).
SHARES=$(( THREADS < 2 ? 1 : 2 ))
train_py() { "$PY" scripts/pytorch-compare.py train --gnmt "$G" --preset small --batch-size 64 --threads "$THREADS" --steps 10 "$@" 2>/dev/null | field tokens_per_s; }
vs_best=() vs_fp32=()
for round in $(seq "$ROUNDS"); do
    g32=$($G bench train --preset small --batch-size 64 --threads "$THREADS" --shares "$SHARES" --steps 10 2>/dev/null | field tokens_per_s)
    p32=$(train_py)
    g16=$($G bench train --preset small --batch-size 64 --threads "$THREADS" --shares "$SHARES" --steps 10 --bf16 2>/dev/null | field tokens_per_s)
    m32=$(GLIBC_TUNABLES=$MALLOC train_py)
    p16=$(train_py --precision bf16)
    m16=$(GLIBC_TUNABLES=$MALLOC train_py --precision bf16)
    gb=$(best "$g32" "$g16"); pb=$(best "$p32" "$m32" "$p16" "$m16")
    gf=$(awk -v g="$gb" -v p="$pb" -v k="$per_token" 'BEGIN { printf "%.0f / %.0f", g * k, p * k }')
    vs_best+=("$(ratio "$gb" "$pb")") vs_fp32+=("$(ratio "$gb" "$p32")")
    echo "| $round | $g32 | $g16 | $p32 | $m32 | $p16 | $m16 | ${vs_best[-1]} | ${vs_fp32[-1]} | $gf |"
done
echo "| median of $ROUNDS rounds | | | | | | | $(median "${vs_best[@]}") | $(median "${vs_fp32[@]}") | |"
fi
# Same search, same translations? (PyTorch's float32 translations come from either table.)
[ -f "$TMP/py.ids" ] || exit 0
$G translate --model "$MODEL" --precision fp32 --beam 5 --batch-size 64 --threads "$THREADS" -i "$TMP/in.txt" -o "$TMP/rs.txt" 2>/dev/null
$G detokenize --ids --vocab "$MODEL/tokenizer.json" < "$TMP/py.ids" > "$TMP/py.txt"
same=$(paste -d '\n' "$TMP/rs.txt" "$TMP/py.txt" | paste - - | awk -F'\t' '$1==$2' | wc -l)
echo
echo "identical beam-5 translations, gnmt-rs vs PyTorch: $same of $N"
