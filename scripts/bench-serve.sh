#!/usr/bin/env bash
# gnmt serve under load: sentences/s and p50/p99 latency with 1, 4, 16 and 64 concurrent clients
# sending one sentence per request (1 client = one request at a time), against `gnmt translate`
# of the same sentences as a file, and against searching each sentence alone (batch 1).
#
#   scripts/bench-serve.sh [--model DIR] [--input FILE] [--threads N] [--sentences N]
#                          [--precision fp32|bf16|int8]
#   MODEL defaults to runs/multi30k/averaged, else demo/run/final; every path runs at PRECISION
#   (fp32 unless given: `gnmt serve` alone would take the model's checked default).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL="" INPUT=../shared/data/multi30k/test2016.en THREADS=2 N=400 PRECISION=fp32
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL="$2"; shift 2 ;;
        --input) INPUT="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --sentences) N="$2"; shift 2 ;;
        --precision) PRECISION="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "bench-serve.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for m in "$MODEL" runs/multi30k/averaged demo/run/final; do
    [ -n "$m" ] && [ -f "$m/model.safetensors" ] && { MODEL=$m; break; }
done
[ -f "$MODEL/model.safetensors" ] || { echo "bench-serve.sh: no model: run scripts/demo.sh or give --model" >&2; exit 1; }
case "$PRECISION" in
    fp32) BENCH_P=() ;;
    bf16) BENCH_P=(--bf16) ;;
    int8) BENCH_P=(--int8) ;;
    *) echo "bench-serve.sh: --precision $PRECISION is not fp32, bf16 or int8" >&2; exit 2 ;;
esac
G=$(scripts/release-bin.sh)
export OMP_WAIT_POLICY=PASSIVE
TMP=$(mktemp -d)
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
head -n "$N" "$INPUT" > "$TMP/in.txt"
echo "model $MODEL ($PRECISION), $N sentences of $INPUT, $THREADS threads, $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# The file path: the same sentences through `gnmt translate` (model load excluded: bench translate).
file_rate=$("$G" bench translate --model "$MODEL" -i "$TMP/in.txt" --beam 5 --batch-size 64 --threads "$THREADS" "${BENCH_P[@]}" 2>/dev/null | jq '.sentences_per_s')
"$G" bench translate --model "$MODEL" -i "$TMP/in.txt" --beam 5 --batch-size 1 --workers 1 --threads "$THREADS" \
    "${BENCH_P[@]}" --per-sentence 2>/dev/null > "$TMP/alone.json"
alone_rate=$(jq '.sentences_per_s' "$TMP/alone.json")
alone_p99=$(jq '.latency_ms.p99' "$TMP/alone.json")

"$G" serve --model "$MODEL" --port 0 --threads "$THREADS" --precision "$PRECISION" 2> "$TMP/serve.log" &
SERVER=$!
for _ in $(seq 600); do
    ADDR=$(grep -o 'listening on http://[0-9.:]*' "$TMP/serve.log" | sed 's|.*http://||' || true)
    [ -n "$ADDR" ] && curl -sf "http://$ADDR/health" >/dev/null 2>&1 && break
    sleep 0.1
done
[ -n "${ADDR:-}" ] || { cat "$TMP/serve.log" >&2; exit 1; }
"$G" bench serve --addr "$ADDR" -i "$TMP/in.txt" --clients 1,4,16,64 > "$TMP/serve.json"
kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=""

one=$(jq '.rounds[0].sentences_per_s' "$TMP/serve.json")
echo
echo "| clients | sentences/s | vs one at a time | vs gnmt translate (file) | p50 ms | p99 ms |"
echo "| --- | --- | --- | --- | --- | --- |"
jq -r --argjson one "$one" --argjson file "$file_rate" '.rounds[] |
    "| \(.clients) | \(.sentences_per_s * 10 | round / 10) | \(.sentences_per_s / $one * 100 | round / 100)x | \(.sentences_per_s / $file * 100 | round)% | \(.p50_ms * 10 | round / 10) | \(.p99_ms * 10 | round / 10) |"' "$TMP/serve.json"
echo
awk -v f="$file_rate" -v a="$alone_rate" -v q="$alone_p99" -v s="$(jq '.rounds[0].p99_ms' "$TMP/serve.json")" \
    'BEGIN { printf "gnmt translate (file, batch 64): %.1f sentences/s; each sentence alone (batch 1): %.1f sentences/s = %.1f ms mean, p99 %.1f ms (1 client p99 %.2fx that)\n", f, a, 1000 / a, q, s / q }'
