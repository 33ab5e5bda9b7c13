#!/usr/bin/env bash
# The data pipeline's costs: vocabulary training and `gnmt prepare` throughput on Tatoeba En-De
# (163k pairs), peak memory of `gnmt prepare` on ~5M pairs (Tatoeba 30 times), and the share of
# a `small` training step spent building batches from the memory-mapped corpus.
#
#   scripts/bench-data.sh [REPEAT]      REPEAT copies of Tatoeba for the memory test (default 30)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPEAT="${1:-30}"
scripts/setup.sh >/dev/null
cargo build --release -q -p gnmt-cli
export OMP_WAIT_POLICY=PASSIVE
G=target/release/gnmt
T=../shared/data/tatoeba-en-de
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
timed() {  # command...: prints "seconds max_rss_mb"
    /usr/bin/time -f "%e %M" -o "$TMP/t" "$@" >/dev/null 2>"$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
    awk '{ printf "%.1f %.0f\n", $1, $2 / 1024 }' "$TMP/t"
}
rate() { awk -v n="$1" -v s="$2" -v u="$3" 'BEGIN { printf "%.0f %s", n / s, u }'; }  # count seconds unit
pairs=$(zcat "$T/train.en.gz" | wc -l)
echo "$(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| step | input | seconds | peak RSS MB | throughput |"
echo "| --- | --- | --- | --- | --- |"
read -r s m < <(timed $G vocab --src "$T/train.en.gz" --tgt "$T/train.de.gz" --size 8000 -o "$TMP/tok.json")
echo "| gnmt vocab (unigram, 8000) | Tatoeba, $((2 * pairs)) lines | $s | $m | $(rate "$((2 * $pairs))" "$s" lines/s) |"
read -r s m < <(timed $G vocab --kind wordpiece --src "$T/train.en.gz" --tgt "$T/train.de.gz" --size 8000 -o "$TMP/wp.json")
echo "| gnmt vocab (wordpiece, 8000) | Tatoeba, $((2 * pairs)) lines | $s | $m | $(rate "$((2 * $pairs))" "$s" lines/s) |"
read -r s m < <(timed $G prepare --vocab "$TMP/tok.json" --src "$T/train.en.gz" --tgt "$T/train.de.gz" -o "$TMP/prep")
echo "| gnmt prepare | Tatoeba, $pairs pairs | $s | $m | $(rate "$pairs" "$s" pairs/s) |"
for i in $(seq "$REPEAT"); do zcat "$T/train.en.gz"; done > "$TMP/big.en"
for i in $(seq "$REPEAT"); do zcat "$T/train.de.gz"; done > "$TMP/big.de"
big=$((pairs * REPEAT))
read -r s m < <(timed $G prepare --vocab "$TMP/tok.json" --src "$TMP/big.en" --tgt "$TMP/big.de" -o "$TMP/bigprep")
echo "| gnmt prepare | Tatoeba x$REPEAT, $big pairs | $s | $m | $(rate "$big" "$s" pairs/s) |"
rm -f "$TMP/big.en" "$TMP/big.de"
read -r s m < <(timed $G train --prepared "$TMP/bigprep" --vocab "$TMP/tok.json" --preset small --batch-size 64 \
    --max-steps 30 --threads "$(nproc)" --set log_every=10 --out "$TMP/run")
frac=$(grep -o '"data_fraction":[0-9.e-]*' "$TMP/run/metrics.jsonl" | tail -n 2 | cut -d: -f2 | awk '{s+=$1; n++} END {printf "%.3f%%", 100*s/n}')
echo "| 30 training steps of small, batch 64, on the prepared $big pairs | memory-mapped | $s | $m | batching: $frac of step time |"
