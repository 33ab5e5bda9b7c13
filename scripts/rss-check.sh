#!/usr/bin/env bash
# Streaming translation keeps memory bounded: peak RSS of `gnmt translate` on a large file
# against a 10k-line file, same model (a freshly initialised `tiny` model, greedy, so the check
# measures the pipeline rather than the model). Prints both and their ratio (the aim: <= 1.2).
#
#   scripts/rss-check.sh [BIG_LINES]     default 1000000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIG="${1:-1000000}"
scripts/setup.sh >/dev/null
cargo build --release -q -p gnmt-cli
export OMP_WAIT_POLICY=PASSIVE
G=target/release/gnmt
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
D=../shared/data/multi30k
$G vocab --src "$D/train.en" --tgt "$D/train.de" --size 2000 -o "$TMP/tok.json" 2>/dev/null
$G train --train-src "$D/train.en" --train-tgt "$D/train.de" --vocab "$TMP/tok.json" --preset tiny \
    --max-steps 1 --out "$TMP/run" 2>/dev/null
# The Multi30k sentences repeated up to N lines.
# The first N lines of the training file repeated over and over.
yes_lines() { awk -v n="$1" '{ l[NR] = $0 } END { for (i = 0; i < n; i++) print l[i % NR + 1] }' "$D/train.en"; }
yes_lines 10000 > "$TMP/small.en"
yes_lines "$BIG" > "$TMP/big.en"
rss() { /usr/bin/time -f "%M" -o "$TMP/t" $G translate --greedy --max-len-a 0 --max-len-b 3 --threads 2 \
    --model "$TMP/run/final" -i "$1" -o "$TMP/out" 2>/dev/null; echo $(( $(cat "$TMP/t") / 1024 )); }
s=$(rss "$TMP/small.en"); b=$(rss "$TMP/big.en")
[ "$(wc -l < "$TMP/out")" -eq "$BIG" ] || { echo "rss-check: output has $(wc -l < "$TMP/out") lines, not $BIG" >&2; exit 1; }
echo "peak RSS: 10000 lines ${s} MB, $BIG lines ${b} MB, ratio $(awk -v a="$b" -v b="$s" 'BEGIN { printf "%.2f", a / b }')"
