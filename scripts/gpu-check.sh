#!/usr/bin/env bash
# Run on a GPU machine (torch 2.11.0+cu130 installed, no network) with the `gnmt` binary built on
# the CPU machine: `gnmt doctor` against the machine's own libtorch. Output goes under $OUT.
set -euo pipefail
OUT="${OUT:-gpu-check-out}"; mkdir -p "$OUT"
BIN="${GNMT_BIN:-target/release/gnmt}"
TORCH_LIB="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$BIN" doctor | tee "$OUT/doctor.txt"
grep -q "cuda available: yes" "$OUT/doctor.txt" || { echo "gpu-check: CUDA not available" >&2; exit 1; }
