#!/usr/bin/env bash
# The main job, end to end: set-up, a shared vocabulary, a `small` GNMT model trained for a few
# minutes on Multi30k En->De, beam-5 translation of test2016, and the BLEU line with its signature.
#
#   scripts/demo.sh [DATA_DIR]      DATA_DIR holds train.{en,de}, valid.{en,de}, test2016.{en,de}
#   DEMO_STEPS=600 DEMO_OUT=demo    steps to train, output directory
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA="${1:-../shared/data/multi30k}"
STEPS="${DEMO_STEPS:-600}"
OUT="${DEMO_OUT:-demo}"
if [ ! -f "$DATA/train.en" ]; then
    echo "demo.sh: no Multi30k in $DATA; downloading it from github.com/multi30k/dataset" >&2
    DATA="$OUT/multi30k"; mkdir -p "$DATA"
    base=https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw
    for f in train valid test_2016_flickr; do for l in en de; do
        curl -fsSL "$base/$f.$l.gz" | gunzip > "$DATA/${f/test_2016_flickr/test2016}.$l"
    done; done
fi
echo "demo.sh: using Multi30k from $DATA" >&2
scripts/setup.sh
cargo build --release -p gnmt-cli
export OMP_WAIT_POLICY=PASSIVE
G=target/release/gnmt
mkdir -p "$OUT"
[ -f "$OUT/tokenizer.json" ] || $G vocab --src "$DATA/train.en" --tgt "$DATA/train.de" --size 8000 -o "$OUT/tokenizer.json"
$G train --train-src "$DATA/train.en" --train-tgt "$DATA/train.de" --valid-src "$DATA/valid.en" --valid-tgt "$DATA/valid.de" \
    --vocab "$OUT/tokenizer.json" --preset small --batch-size 64 --max-steps "$STEPS" --save-every 200 --valid-every 200 \
    --set "schedule={kind=\"gnmt\", warmup=100, decay_steps=4}" --set valid_bleu_sentences=200 \
    --out "$OUT/run" --force
$G translate --model "$OUT/run/final" --beam 5 -i "$DATA/test2016.en" -o "$OUT/test2016.hyp.de" --ref "$DATA/test2016.de"
$G eval "$DATA/test2016.de" -i "$OUT/test2016.hyp.de" -m bleu chrf -f text
echo "demo.sh: model directory $OUT/run/final (try: $G translate --model $OUT/run/final)" >&2
