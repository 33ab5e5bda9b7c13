#!/usr/bin/env bash
# Run on a GPU machine (torch 2.11.0+cu130 installed, no network) with the `gnmt` binary built on
# the CPU machine (and `gnmt-torch` beside it: `gnmt` hands every subcommand but eval to it): `gnmt doctor --smoke` against the machine's own libtorch (CUDA available, the
# GPU computes what the CPU computes), then training and translation throughput of `gnmt4` in
# float32, bf16 and fp16.
# Everything goes under $OUT.
set -euo pipefail
OUT="${OUT:-gpu-check-out}"; mkdir -p "$OUT"
BIN="${GNMT_BIN:-target/release/gnmt}"
TORCH_LIB="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$BIN" doctor --smoke --device cuda --preset gnmt4 | tee "$OUT/doctor.txt"
grep -q "cuda available: yes" "$OUT/doctor.txt" || { echo "gpu-check: CUDA not available" >&2; exit 1; }
{
    "$BIN" bench train --device cuda --preset gnmt4 --vocab-size 32000 --batch-size 128 --len 24 --steps 20
    "$BIN" bench train --device cuda --preset gnmt4 --vocab-size 32000 --batch-size 128 --len 24 --steps 20 --bf16
    "$BIN" bench train --device cuda --preset gnmt4 --vocab-size 32000 --batch-size 128 --len 24 --steps 20 --fp16
    "$BIN" bench translate --device cuda --preset gnmt4 --vocab-size 32000 --batch-size 128 --beam 5 --len 24 --sentences 512
    "$BIN" bench translate --device cuda --preset gnmt4 --vocab-size 32000 --batch-size 128 --beam 5 --len 24 --sentences 512 --bf16
    "$BIN" bench translate --device cuda --preset gnmt4 --vocab-size 32000 --batch-size 128 --beam 5 --len 24 --sentences 512 --fp16
} | tee "$OUT/bench.jsonl"
# NCCL: a one-rank data-parallel run under torchrun on cuda:0 (the machine has one GPU; NCCL
# refuses two ranks on one device) -- the group forms, the gradients all-reduce, rank 0 writes.
grep -q "NCCL process group" "$OUT/doctor.txt" || echo "gpu-check: this binary has no NCCL" >&2
DATA="${GNMT_DATA:-tests/fixtures/m30k}"
python3 -m torch.distributed.run --no-python --standalone --nproc-per-node 1 "$BIN" train \
    --train-src "$DATA/train.en" --train-tgt "$DATA/train.de" --preset tiny --set vocab_size=400 \
    --set log_every=1 --batch-size 16 --max-steps 5 --device cuda --out "$OUT/nccl-run" \
    2>&1 | tee "$OUT/nccl.txt"
grep -q "Nccl" "$OUT/nccl.txt" && test -f "$OUT/nccl-run/final/model.safetensors" \
    && echo "gpu-check: NCCL data-parallel run ok" | tee -a "$OUT/nccl.txt"
