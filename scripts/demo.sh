#!/usr/bin/env bash
# The main job, end to end: set-up, a shared vocabulary, a `small` GNMT model trained on Multi30k
# En->De for about ten minutes of a 2-core CPU, beam-5 translation of test2016, the BLEU and chrF
# lines with their signatures, a few translations beside their references, and the command to
# translate your own sentences.
#
#   scripts/demo.sh [DATA_DIR]      DATA_DIR holds train.{en,de}, valid.{en,de}, test2016.{en,de}
#   DEMO_STEPS=1500 DEMO_OUT=demo DEMO_THREADS=(all cores)    overrides
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA="${1:-../shared/data/multi30k}"
STEPS="${DEMO_STEPS:-1500}"
OUT="${DEMO_OUT:-demo}"
THREADS="${DEMO_THREADS:-$(nproc)}"
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
start=$(date +%s)
mkdir -p "$OUT"
[ -f "$OUT/tokenizer.json" ] || $G vocab --src "$DATA/train.en" --tgt "$DATA/train.de" --size 8000 -o "$OUT/tokenizer.json"
# The GNMT schedule fitted to the short run: warm up for 200 steps, halve the learning rate four
# times over the last third; validation BLEU on 200 sentences every 500 steps keeps the best.
$G train --train-src "$DATA/train.en" --train-tgt "$DATA/train.de" --valid-src "$DATA/valid.en" --valid-tgt "$DATA/valid.de" \
    --vocab "$OUT/tokenizer.json" --preset small --batch-size 64 --max-steps "$STEPS" --save-every 500 --valid-every 500 \
    --set "schedule={kind=\"gnmt\", warmup=200, decay_steps=4}" --set valid_bleu_sentences=200 \
    --threads "$THREADS" --out "$OUT/run" --force
$G translate --model "$OUT/run/final" --beam 5 --threads "$THREADS" -i "$DATA/test2016.en" -o "$OUT/test2016.hyp.de"
$G eval "$DATA/test2016.de" -i "$OUT/test2016.hyp.de" -m bleu chrf -f text
echo
echo "A few test sentences (source / reference / gnmt-rs):"
paste -d '\n' <(head -n 5 "$DATA/test2016.en") <(head -n 5 "$DATA/test2016.de") <(head -n 5 "$OUT/test2016.hyp.de") \
    | awk '{ tag = (NR % 3 == 1) ? "en  " : (NR % 3 == 2) ? "ref " : "gnmt"; print "  " tag "  " $0; if (NR % 3 == 0) print "" }'
echo "demo.sh: $(( ($(date +%s) - start) / 60 )) minutes after the build, on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo "Translate your own sentences:"
echo "  echo 'A dog runs across the grass.' | $G translate --model $OUT/run/final"
