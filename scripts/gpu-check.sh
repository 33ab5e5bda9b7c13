#!/usr/bin/env bash
# Run on a GPU machine (torch 2.11.0+cu130 installed, no network) with the `gnmt` binary built on
# the CPU machine: `gnmt doctor --smoke` against the machine's own libtorch (CUDA available, the
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
