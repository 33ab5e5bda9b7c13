#!/usr/bin/env bash
# WMT16 English-German as NVIDIA's GNMT v2 recipe uses it: training data (Europarl v7, Common
# Crawl, News Commentary v11), newstest2015 + newstest2016 for validation, newstest2014 for test;
# then a shared 32k vocabulary and a prepared (binarized) training corpus for `gnmt train`.
#
#   scripts/get-wmt16-en-de.sh [--out DIR]                 download (needs internet) and prepare
#   scripts/get-wmt16-en-de.sh --raw DIR [--out DIR]       use archives already downloaded into DIR
#   scripts/get-wmt16-en-de.sh --text DIR [--out DIR]      DIR holds plain train/valid[/test].{en,de}:
#                                                          only vocabulary + prepare
#   --vocab-size N (default 32000)  --max-len N (default 50, as NVIDIA trains)
#
# Then: gnmt train --config data/configs/gnmt4-wmt16.toml
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=data/wmt16_de_en RAW="" TEXT="" VOCAB=32000 MAXLEN=50
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --raw) RAW="$2"; shift 2 ;;
        --text) TEXT="$2"; shift 2 ;;
        --vocab-size) VOCAB="$2"; shift 2 ;;
        --max-len) MAXLEN="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "get-wmt16-en-de.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -n "${GNMT:-}" ]; then G="$GNMT"; else
    scripts/setup.sh >/dev/null
    cargo build --release -q -p gnmt-cli
    G=target/release/gnmt
fi
mkdir -p "$OUT"

sgm_to_text() {  # the <seg> lines of an SGML test set, markup removed
    grep '<seg' "$1" | sed -e 's/<seg[^>]*>[[:space:]]*//' -e 's/[[:space:]]*<\/seg>.*$//'
}

if [ -n "$TEXT" ]; then
    for f in train.en train.de valid.en valid.de; do
        [ -f "$TEXT/$f" ] || { echo "get-wmt16-en-de.sh: $TEXT/$f is missing" >&2; exit 1; }
    done
    for f in train valid test; do for l in en de; do
        [ -f "$TEXT/$f.$l" ] && cp "$TEXT/$f.$l" "$OUT/$f.$l"
    done; done
else
    RAW="${RAW:-$OUT/raw}"
    mkdir -p "$RAW"
    urls=(
        http://www.statmt.org/europarl/v7/de-en.tgz
        http://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz
        http://data.statmt.org/wmt16/translation-task/training-parallel-nc-v11.tgz
        http://data.statmt.org/wmt16/translation-task/dev.tgz
        http://data.statmt.org/wmt16/translation-task/test.tgz
    )
    for u in "${urls[@]}"; do
        f="$RAW/$(basename "$u")"
        if [ ! -f "$f" ]; then
            echo "get-wmt16-en-de.sh: downloading $u" >&2
            curl -fL --retry 3 -o "$f.part" "$u" || { echo "get-wmt16-en-de.sh: cannot download $u; put it in $RAW and use --raw $RAW" >&2; exit 1; }
            mv "$f.part" "$f"
        fi
        tar -xzf "$f" -C "$RAW"
    done
    find_one() { find "$RAW" -name "$1" | head -n 1; }
    for l in en de; do
        cat "$(find_one "europarl-v7.de-en.$l")" "$(find_one "commoncrawl.de-en.$l")" \
            "$(find_one "news-commentary-v11.de-en.$l")" > "$OUT/train.$l"
        sgm_to_text "$(find_one "newstest2015-ende-$( [ $l = en ] && echo src || echo ref ).$l.sgm")" > "$OUT/valid.$l"
        sgm_to_text "$(find_one "newstest2016-ende-$( [ $l = en ] && echo src || echo ref ).$l.sgm")" >> "$OUT/valid.$l"
        sgm_to_text "$(find_one "newstest2014-deen-$( [ $l = en ] && echo src || echo ref ).$l.sgm")" > "$OUT/test.$l"
    done
fi
echo "get-wmt16-en-de.sh: $(wc -l < "$OUT/train.en") training pairs, $(wc -l < "$OUT/valid.en") validation" >&2
[ -f "$OUT/tokenizer.json" ] || "$G" vocab --src "$OUT/train.en" --tgt "$OUT/train.de" --size "$VOCAB" -o "$OUT/tokenizer.json"
"$G" prepare --vocab "$OUT/tokenizer.json" --src "$OUT/train.en" --tgt "$OUT/train.de" --max-len "$MAXLEN" -o "$OUT/train.prepared"
echo "get-wmt16-en-de.sh: ready in $OUT (train.prepared/, tokenizer.json, valid.*, test.*)" >&2
