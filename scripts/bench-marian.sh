#!/usr/bin/env bash
# gnmt-rs against Marian 1.12 (pymarian from PyPI, installed into a venv of its own under
# ~/.cache/gnmt, never a dependency of the project) on this CPU: Marian trains a same-shape s2s
# LSTM (scripts/marian-compare.py) for a few hundred updates on Multi30k, then both translate the
# first SENTENCES test2016 sentences with beam 5 and batches of 64, alternating, at 1 and 2 threads.
# Words/s counts whitespace words read and written (the two systems' subwords differ; an
# undertrained Marian model writes other lengths than a trained one).
#
#   scripts/bench-marian.sh --model DIR [--data DIR] [--sentences 500] [--updates 300] [--out DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL="" DATA=../shared/data/multi30k N=500 UPDATES=300 OUT=runs/marian
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL="$2"; shift 2 ;;
        --data) DATA="$2"; shift 2 ;;
        --sentences) N="$2"; shift 2 ;;
        --updates) UPDATES="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "bench-marian.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$MODEL" ] || { echo "bench-marian.sh: --model DIR (a trained gnmt model) is required" >&2; exit 2; }
VENV="${GNMT_CACHE:-$HOME/.cache/gnmt}/marian-1.12.42"
[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pymarian' 2>/dev/null \
    || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q pymarian==1.12.42; }
G=$(scripts/release-bin.sh)  # or $GNMT_BIN
export OMP_WAIT_POLICY=PASSIVE
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
head -n "$N" "$DATA/test2016.en" > "$TMP/in.txt"
words() { wc -w < "$1"; }
field() { grep -o "\"$1\": *[0-9.]*" | head -n 1 | sed 's/.*: *//'; }
marian() {  # threads: one timed round (the model is trained once, the first time)
    "$VENV/bin/python" scripts/marian-compare.py --train-src "$DATA/train.en" --train-tgt "$DATA/train.de" \
        --test-src "$TMP/in.txt" --out "$OUT" --updates "$UPDATES" --threads "$1" --sentences "$N" \
        --rounds 1 2>"$TMP/marian.log" | tail -n 1
}
gnmt() {  # threads: sentences/s and words/s of one translation of the same sentences (the default path)
    $G translate --model "$MODEL" -i "$TMP/in.txt" -o "$TMP/out.txt" --beam 5 --batch-size 64 \
        --threads "$1" 2>"$TMP/gnmt.log"
    local rate
    rate=$(sed -n 's/.*translated [0-9]* sentences in [0-9.]*s: \([0-9.]*\) sentences\/s.*/\1/p' "$TMP/gnmt.log" | tail -n 1)
    awk -v r="$rate" -v n="$N" -v w="$(( $(words "$TMP/in.txt") + $(words "$TMP/out.txt") ))" \
        'BEGIN { printf "%.1f %.1f\n", r, w * r / n }'
}
marian 1 >/dev/null  # trains the model (timed rounds follow)
echo "gnmt-rs ($MODEL) against Marian 1.12.42 (pymarian; $UPDATES updates), $N test2016 sentences, beam 5, batch 64"
echo "$(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); gnmt-rs path: $($G doctor | sed -n 's/^cpu kernels: //p')"
echo
echo "| threads (round) | gnmt-rs sentences/s | Marian sentences/s | ratio | gnmt-rs words/s | Marian words/s | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for threads in 1 2; do
    for round in 1 2; do
        m=$(marian "$threads")
        read -r gs gw < <(gnmt "$threads")
        ms=$(echo "$m" | field sentences_per_s); mw=$(echo "$m" | field words_per_s)
        echo "| $threads ($round) | $gs | $ms | $(awk -v a="$gs" -v b="$ms" 'BEGIN { printf "%.2fx", a / b }') | $gw | $mw | $(awk -v a="$gw" -v b="$mw" 'BEGIN { printf "%.2fx", a / b }') |"
    done
done
