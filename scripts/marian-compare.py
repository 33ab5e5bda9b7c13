#!/usr/bin/env python3
"""Marian (pymarian, from PyPI) on the same CPU as gnmt-rs: trains a Marian s2s LSTM of gnmt's
`small` shape (4+4 layers of 256, bi-unidirectional encoder, skip connections, a shared 8k
SentencePiece vocabulary) for a few hundred updates on the training corpus, then times the
translation of the first N test sentences with the same beam and batch as gnmt's benchmark.
Prints one JSON line per timed round. Run by scripts/bench-marian.sh in a venv of its own."""
import argparse, json, os, time

import pymarian

ap = argparse.ArgumentParser()
ap.add_argument("--train-src", required=True)
ap.add_argument("--train-tgt", required=True)
ap.add_argument("--test-src", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--updates", type=int, default=300)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--sentences", type=int, default=500)
ap.add_argument("--beam", type=int, default=5)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--rounds", type=int, default=2)
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
model = os.path.join(a.out, "model.npz")
vocab = os.path.join(a.out, "vocab.spm")
shape = ("--type s2s --enc-type bi-unidirectional --enc-depth 4 --dec-depth 4 --enc-cell lstm "
         "--dec-cell lstm --dim-emb 256 --dim-rnn 256 --skip")
if not os.path.exists(model):
    pymarian.Trainer(
        f"{shape} --model {model} --train-sets {a.train_src} {a.train_tgt} --vocabs {vocab} {vocab} "
        f"--dim-vocabs 8000 8000 --after {a.updates}u --mini-batch {a.batch} --cpu-threads {a.threads} "
        f"--disp-freq 50u --save-freq {a.updates}u --max-length 100 --seed 1 --quiet-translation"
    ).train()
src = open(a.test_src, encoding="utf-8").read().split("\n")[: a.sentences]
translator = pymarian.Translator(
    f"--models {model} --vocabs {vocab} {vocab} --beam-size {a.beam} --mini-batch {a.batch} "
    f"--maxi-batch 100 --maxi-batch-sort src --cpu-threads {a.threads} --quiet"
)
for r in range(a.rounds):
    t = time.perf_counter()
    out = translator.translate(src)
    secs = time.perf_counter() - t
    # Words (whitespace tokens) read and written: Marian's pieces differ from gnmt's.
    words = sum(len(s.split()) for s in src) + sum(len(o.split()) for o in out)
    print(json.dumps({"system": "marian", "round": r + 1, "sentences": len(src), "seconds": round(secs, 3),
                      "sentences_per_s": round(len(src) / secs, 1), "words_per_s": round(words / secs, 1),
                      "threads": a.threads, "beam": a.beam, "batch": a.batch}), flush=True)
