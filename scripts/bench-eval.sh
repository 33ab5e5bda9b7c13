#!/usr/bin/env bash
# gnmt eval against sacreBLEU 2.6.0 on the same files: wall time and peak memory for BLEU, chrF,
# TER and a paired bootstrap test, side by side. Installs sacreBLEU into a venv under
# ~/.cache/gnmt (PyPI) the first time.
#
#   scripts/bench-eval.sh [LINES]     LINES of Tatoeba En-De train as reference (default 100000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${1:-100000}"
SB_VENV="${GNMT_CACHE:-$HOME/.cache/gnmt}/sacrebleu-2.6.0"
[ -x "$SB_VENV/bin/sacrebleu" ] || { python3 -m venv "$SB_VENV" && "$SB_VENV/bin/pip" install -q sacrebleu==2.6.0; }
scripts/setup.sh >/dev/null
cargo build --release -q -p gnmt-cli -p gnmt-eval
export OMP_WAIT_POLICY=PASSIVE
G=target/release/gnmt
GE=target/release/gnmt-eval
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
# (head closes the pipe early: zcat's SIGPIPE is expected)
(zcat ../shared/data/tatoeba-en-de/train.de.gz | head -n "$N" > "$TMP/ref") || [ -s "$TMP/ref" ]
# Two "systems": the reference with words dropped and swapped, deterministically.
awk '{ n = split($0, w, " "); s = ""; for (i = 1; i <= n; i++) if ((i + NR) % 5 != 0) s = s (s ? " " : "") w[i]; print s }' "$TMP/ref" > "$TMP/a"
awk '{ n = split($0, w, " "); s = ""; for (i = n; i >= 1; i--) if ((i + NR) % 7 != 0) s = s (s ? " " : "") w[i]; print s }' "$TMP/ref" > "$TMP/b"
measure() {  # label command...: prints "seconds max_rss_mb"
    /usr/bin/time -f "%e %M" -o "$TMP/t" "$@" > "$TMP/out" 2>/dev/null
    awk '{ printf "%.2f %.0f\n", $1, $2 / 1024 }' "$TMP/t"
}
echo "$N segments (Tatoeba De), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| metric | sacreBLEU 2.6.0 s (MB) | gnmt eval s (MB) | gnmt-eval s (MB) | speed-up (gnmt eval) | memory (gnmt eval) | same output |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for m in "bleu" "chrf" "ter" "bleu chrf"; do
    args=("$TMP/ref" -i "$TMP/a" -m ${m%% -*} -f text)
    case "$m" in *-pbs*) args=("$TMP/ref" -i "$TMP/a" "$TMP/b" -m bleu chrf ter -pbs -f text) ;; esac
    read -r st sm < <(measure "$SB_VENV/bin/sacrebleu" "${args[@]}"); cp "$TMP/out" "$TMP/sb.out"
    read -r gt gm < <(measure "$G" eval "${args[@]}"); cp "$TMP/out" "$TMP/g.out"
    read -r et em < <(measure "$GE" "${args[@]}"); cmp -s "$TMP/out" "$TMP/g.out" || { echo "gnmt-eval and gnmt eval differ" >&2; exit 1; }
    same=$(diff -q <(sed 's/version:[^|]*$//; s/v:[^|]*$//; s/version:[0-9.]*//; s/version:gnmt-bleu-[0-9.]*//' "$TMP/sb.out") \
                   <(sed 's/version:[^|]*$//; s/v:[^|]*$//; s/version:[0-9.]*//; s/version:gnmt-bleu-[0-9.]*//' "$TMP/g.out") >/dev/null && echo yes || echo NO)
    echo "| $m | $st ($sm) | $gt ($gm) | $et ($em) | $(awk -v a="$st" -v b="$gt" 'BEGIN { printf "%.1fx", a / b }') | $(awk -v a="$sm" -v b="$gm" 'BEGIN { printf "1/%.0f", a / b }') | $same |"
done
