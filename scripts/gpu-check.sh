#!/usr/bin/env bash
# The checks to run on a GPU machine (torch 2.11.0+cu130 importable by python3, no network), with
# the `gnmt` binary built on a CPU machine and `gnmt-torch` beside it (`gnmt` hands every
# subcommand but eval to it). Two parts, so a short lease can run them as two calls:
#
#   check  `gnmt doctor --smoke` on the GPU (CUDA seen, the GPU computes what the CPU computes);
#          a one-rank NCCL data-parallel run under torchrun; with GNMT_M30K, a Multi30k En->De
#          model trained on the GPU for GNMT_TRAIN_MINUTES in bf16 (the CPU recipe's 4+4 x 384
#          tied model and batch), its test2016 BLEU from a GPU search, the same model's first 200
#          test translations on the CPU beside the GPU's, `gnmt tune --device cuda` on a small
#          grid, and `gnmt serve --device cuda` answering concurrent HTTP requests
#   bench  training and translation throughput of `gnmt4` (vocabulary 32k, 24-piece sentences) in
#          float32, bf16 and fp16, each beside the same model and search in PyTorch eager on
#          the same GPU (scripts/pytorch-compare.py --device cuda; training in autocast)
#   cpu    the machine's own CPU, no GPU: gnmt-rs's float32, bf16 and int8 translation beside
#          PyTorch eager's float32, bf16 and dynamic int8 at 1 and 2 threads (and int8 on the
#          VNNI build, GNMT_MAX_ISA=avx512, where int8 runs on AMX tiles; where the CPU has
#          AVX-VNNI, one thread of int8 on that build and of float32 on AVX2, GNMT_MAX_ISA=avx2,
#          and with a model the differing lines of int8's translations there and by default, into
#          the log), and training
#          `small` in float32 and bf16 beside PyTorch's float32 and bf16 autocast at 1 thread
#          (one round each; a GPU machine's host may have the AMX this project's CPUs lack). It
#          translates GNMT_CPU_MODEL (default: the model `check` trained) on test2016, else the
#          `small` preset's random weights on synthetic sentences
#
#   scripts/gpu-check.sh [check|bench|cpu|all]      (default: all)
#
#   GNMT_BIN            the gnmt binary [target/release/gnmt]
#   GNMT_M30K           a Multi30k directory (train/valid/test2016 .en/.de); without it, no model
#   GNMT_TRAIN_MINUTES  training time of that model [3], after GNMT_MEASURE_MINUTES [0.33] that
#                       measure the speed
#   GNMT_CHECK_DEVICE   the device [cuda]; cpu runs the same steps (Gloo for NCCL), which is how
#                       tests/pipeline.rs keeps this script working between GPU sessions
#   GNMT_CHECK_PRESET   the Multi30k model [the recipe's: `small` at 4+4 x 384]; the test gives
#                       `tiny` (a debug build trains `small` at a few steps a minute)
#   GNMT_CPU_MODEL, GNMT_CPU_SENTENCES, GNMT_CPU_PRESET
#                       `cpu`'s model directory [the one `check` trained], sentences [250], and
#                       the preset it times without a model and trains [small]
#
# Writes at most eight files under $OUT (a borrowed machine returns no more): log.txt (all the
# output), doctor.txt, bench.jsonl, m30k.md (the model's numbers), m30k-test.hyp and
# bench-cpu.jsonl.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PART="${1:-all}"
case "$PART" in check|bench|cpu|all) ;; *) echo "gpu-check.sh: check, bench, cpu or all, not '$PART'" >&2; exit 2 ;; esac
OUT="$(mkdir -p "${OUT:-gpu-check-out}" && cd "${OUT:-gpu-check-out}" && pwd)"
BIN="$(realpath "${GNMT_BIN:-target/release/gnmt}")"
WORK="$(mktemp -d)"
TORCH_LIB="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec > >(tee -a "$OUT/log.txt") 2>&1
start=$(date +%s)
FAILED=()
DEV="${GNMT_CHECK_DEVICE:-cuda}"

# NAME SECONDS [--into FILE] CMD...: CMD under a time limit (its output also appended to FILE);
# says how it ended and goes on. (No pipe after it: FAILED would be set in a subshell.)
step() {
    local name=$1 limit=$2 into=/dev/null rc
    shift 2
    [ "$1" = --into ] && { into=$2; shift 2; }
    echo "== $name"
    timeout "$limit" "$@" 2>&1 | tee -a "$into"
    rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc at $(( $(date +%s) - start )) s"
    [ "$rc" = 0 ] || FAILED+=("$name")
    return "$rc"
}

check_doctor() {
    step doctor 180 --into "$OUT/doctor.txt" "$BIN" doctor --smoke --device "$DEV" --preset gnmt4
    [ "$DEV" = cpu ] || grep -q "cuda available: yes" "$OUT/doctor.txt" \
        || { echo "gpu-check: CUDA not available" >&2; exit 1; }
    grep -q "NCCL process group" "$OUT/doctor.txt" || echo "gpu-check: this binary has no NCCL" >&2
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
}

# A one-rank data-parallel run under torchrun on cuda:0 (the machine has one GPU; NCCL refuses
# two ranks on one device): the group forms, the gradients all-reduce, rank 0 writes.
check_nccl() {
    local d=tests/fixtures/m30k
    step nccl 180 --into "$WORK/nccl.txt" python3 -m torch.distributed.run --no-python --standalone \
        --nproc-per-node 1 "$BIN" train --train-src "$d/train.en" --train-tgt "$d/train.de" --preset tiny \
        --set vocab_size=400 --set log_every=1 --batch-size 16 --max-steps 5 --device "$DEV" --out "$WORK/nccl-run"
    local backend=Nccl
    [ "$DEV" = cpu ] && backend=Gloo
    if grep -q "rank 0 of 1, .*$backend" "$WORK/nccl.txt" && [ -f "$WORK/nccl-run/final/model.safetensors" ]; then
        echo "gpu-check: $backend data-parallel run ok"
    else
        echo "gpu-check: the data-parallel run did not say $backend or wrote no final model"; FAILED+=(nccl-result)
    fi
}

# Multi30k on the GPU: the speed measured for 20 seconds sizes the run to the minutes given (the
# GNMT schedule decays over its last steps), as scripts/train-recipe.sh does on a CPU.
check_m30k() {
    local m="${GNMT_M30K:-}" run="$WORK/m30k" minutes="${GNMT_TRAIN_MINUTES:-3}" t0 t1 steps total
    local measure="${GNMT_MEASURE_MINUTES:-0.33}" model=(--preset small --set model.hidden_size=384
        --set model.embedding_size=384 --set model.attention_units=384 --set model.tied_output=true)
    [ -n "${GNMT_CHECK_PRESET:-}" ] && model=(--preset "$GNMT_CHECK_PRESET")
    [ -n "$m" ] || { echo "gpu-check: no GNMT_M30K, no Multi30k model"; return; }
    step vocab 120 "$BIN" vocab --src "$m/train.en" --tgt "$m/train.de" --size 8000 -o "$WORK/tokenizer.json" || return
    local train=("$BIN" train --train-src "$m/train.en" --train-tgt "$m/train.de" --vocab "$WORK/tokenizer.json"
                 --valid-src "$m/valid.en" --valid-tgt "$m/valid.de" --device "$DEV" --batch-size 64
                 --set model.dropout=0.4 --set 'precision="bf16"'
                 --set ema_decay=0.999 --set keep_last=4 --set "schedule={kind=\"gnmt\", warmup=200, decay_steps=4}"
                 "${model[@]}" --out "$run")
    t0=$(date +%s.%N)
    step m30k-measure 300 "${train[@]}" --max-steps 100000 --save-every 100000 --valid-every 100000 \
        --stop-after-minutes "$measure" --force || return
    t1=$(date +%s.%N)
    steps=$(ls "$run/checkpoints" | sed -n 's/^step-0*\([0-9]\)/\1/p' | sort -n | tail -n 1)
    total=$(awk -v s="$steps" -v a="$t0" -v b="$t1" -v m="$minutes" \
        'BEGIN { n = int(s * m * 60 / (b - a) / 24) * 24; print (n < s + 24 ? s + 24 : n) }')
    echo "gpu-check: $steps steps in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s: $total steps in $minutes minutes"
    step m30k-train "$(awk -v m="$minutes" 'BEGIN { print int(m * 60) + 900 }')" "${train[@]}" --resume --set "max_steps=$total" \
        --set "save_every=$(( total / 8 ))" --set "valid_every=$(( total / 6 ))" --set valid_bleu_sentences=1000 || return
    local model="$run/best" hyp="$OUT/m30k-test.hyp"
    step m30k-translate 120 "$BIN" translate --model "$model" --device "$DEV" -i "$m/test2016.en" -o "$hyp" || return
    head -n 200 "$m/test2016.en" > "$WORK/test200.en"
    step m30k-translate-cpu 180 "$BIN" translate --model "$model" --precision fp32 -i "$WORK/test200.en" \
        -o "$WORK/test200.cpu.hyp"
    step m30k-tune 180 --into "$WORK/tune.txt" "$BIN" tune --model "$model" --device "$DEV" --src "$m/valid.en" --ref "$m/valid.de" \
        --beams 5 --alphas 0.6,1.0 --betas 0,0.2 --dry-run
    {
        echo "# Multi30k En->De trained on $DEV ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null))"
        echo
        echo "Steps: $total of 64 sentences (the speed: $steps steps in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s)."
        echo "Validation BLEU (greedy) during training: $(grep -o '"valid_bleu":[0-9.]*' "$run/metrics.jsonl" \
            | cut -d: -f2 | awk '{ printf "%s%.1f", (NR > 1 ? ", " : ""), $1 }')"
        echo "test2016, search on $DEV (beam 5), best checkpoint: $("$BIN" eval "$m/test2016.de" -i "$hyp" -b)"
        echo "First 200 test2016 lines: $DEV and CPU (fp32) translations differ on" \
             "$(head -n 200 "$hyp" | paste -d'\t' - "$WORK/test200.cpu.hyp" | awk -F'\t' '$1 != $2' | wc -l) lines"
        echo
        grep -E '^(defaults|best)' "$WORK/tune.txt" || true
    } > "$OUT/m30k.md"
    cat "$OUT/m30k.md"
    check_serve "$model"
}

# MODEL: `gnmt serve --device cuda`, 16 concurrent requests of 4 test sentences each (fewer for a
# test set under 64 lines); each answer must be 200 with 4 translations. How many differ from
# `gnmt translate`'s of the same lines is counted, not failed: batched with other requests, a
# GPU's matrix products may pick other algorithms and round differently.
check_serve() {
    "$BIN" serve --model "$1" --device "$DEV" --port 0 --beam 5 2> "$WORK/serve.log" &
    local pid=$! addr=""
    for _ in $(seq 1 120); do
        addr=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$WORK/serve.log" | head -n 1)
        [ -n "$addr" ] && break
        sleep 0.5
    done
    [ -n "$addr" ] || { echo "gpu-check: gnmt serve never said where it listens"; FAILED+=(serve); }
    step serve 120 python3 - "$addr" "$GNMT_M30K/test2016.en" "$OUT/m30k-test.hyp" <<'PY'
import json, sys, threading, urllib.request
addr, src, hyp = sys.argv[1], open(sys.argv[2]).read().splitlines(), open(sys.argv[3]).read().splitlines()
results, bad, differ = {}, [], 0
n = min(16, len(src) // 4)
def ask(i):
    body = json.dumps({"text": src[4 * i:4 * i + 4]}).encode()
    req = urllib.request.Request(f"http://{addr}/v1/translate", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        results[i] = (r.status, json.loads(r.read()))
threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
for i in range(n):
    status, answer = results.get(i, (0, {}))
    got = [t if isinstance(t, str) else t.get("translation") for t in answer.get("translations", [])]
    if status != 200 or len(got) != 4:
        bad.append((i, status, got))
    differ += sum(a != b for a, b in zip(got, hyp[4 * i:4 * i + 4]))
print(f"gpu-check: serve answered {len(results)} of {n} requests, {len(bad)} wrongly; "
      f"{differ} of {4 * n} translations differ from gnmt translate's")
for b in bad[:3]: print(b)
sys.exit(1 if bad or len(results) < n or n == 0 else 0)
PY
    kill -TERM "$pid"; wait "$pid"; echo "serve exit: $?"; tail -n 5 "$WORK/serve.log"
}

bench() {
    local shape=(--preset gnmt4 --vocab-size 32000 --batch-size 128) p flag out="$WORK/bench.out"
    local py=(python3 scripts/pytorch-compare.py --gnmt "$BIN" --device "$DEV" "${shape[@]}")
    for p in fp32 bf16 fp16; do
        flag=(); [ "$p" = fp32 ] || flag=(--"$p")
        step "train-gnmt-$p" 150 --into "$out" "$BIN" bench train --device "$DEV" "${shape[@]}" --len 24 \
            --steps 20 "${flag[@]}"
        step "train-pytorch-$p" 150 --into "$out" "${py[@]}" train --len 24 --steps 20 --precision "$p"
    done
    for p in fp32 bf16 fp16; do
        flag=(); [ "$p" = fp32 ] || flag=(--"$p")
        step "translate-gnmt-$p" 150 --into "$out" "$BIN" bench translate --device "$DEV" "${shape[@]}" \
            --beam 5 --len 24 --sentences 512 "${flag[@]}"
        step "translate-pytorch-$p" 150 --into "$out" "${py[@]}" translate --beam 5 --len 24 \
            --sentences 512 --grouped --precision "$p"
    done
    step translate-pytorch-plain-fp32 150 --into "$out" "${py[@]}" translate --beam 5 --len 24 --sentences 512
    grep '^{' "$out" > "$OUT/bench.jsonl"
}

# The host CPU's paths (see the header). Each JSON line is tagged with what ran ("run").
cpu_bench() {
    local model="${GNMT_CPU_MODEL:-$WORK/m30k/best}" n="${GNMT_CPU_SENTENCES:-250}" t p flag
    local preset="${GNMT_CPU_PRESET:-small}" src compare=(python3 scripts/pytorch-compare.py --gnmt "$BIN")
    local py=("${compare[@]}")
    export OMP_WAIT_POLICY=PASSIVE
    if [ -f "$model/model.safetensors" ] && [ -n "${GNMT_M30K:-}" ]; then
        head -n "$n" "$GNMT_M30K/test2016.en" > "$WORK/cpu-in.txt"
        "$BIN" tokenize --ids --vocab "$model/tokenizer.json" < "$WORK/cpu-in.txt" > "$WORK/cpu-in.ids" || return
        src=(--model "$model" -i "$WORK/cpu-in.txt") py+=(translate --model "$model" --ids "$WORK/cpu-in.ids")
    else
        src=(--preset "$preset" --sentences "$n") py+=(translate --preset "$preset" --sentences "$n")
    fi
    grep -m1 '^model name' /proc/cpuinfo
    grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx512[a-z_0-9]*|amx[a-z_0-9]*' | tr '\n' ' '; echo
    # RUN CMD...: CMD as a step, its JSON line tagged {"run": RUN, ...} into bench-cpu.jsonl.
    one() {
        local run=$1; shift
        : > "$WORK/one.out"
        step "cpu-$run" 150 --into "$WORK/one.out" "$@"
        sed -n "s/^{/{\"run\":\"$run\",/p" "$WORK/one.out" >> "$OUT/bench-cpu.jsonl"
    }
    # Where int8 runs on AMX-INT8 tiles, the VNNI build too (GNMT_MAX_ISA=avx512 turns the tiles
    # off). (No `doctor | grep -q`: under pipefail, doctor's quiet exit on the closed pipe fails it.)
    local amx="" avxvnni=""
    case "$("$BIN" doctor)" in *"+ amx-int8 tiles"*) amx=1 ;; esac
    case " $(grep -m1 '^flags' /proc/cpuinfo) " in *" avx_vnni "*) avxvnni=1 ;; esac
    for t in 1 2; do
        for p in fp32 bf16 int8; do
            flag=(); [ "$p" = fp32 ] || flag=(--"$p")
            one "gnmt-translate-$p-t$t" "$BIN" bench translate "${src[@]}" --beam 5 --batch-size 64 --threads "$t" "${flag[@]}"
            one "pytorch-translate-$p-t$t" "${py[@]}" --beam 5 --batch-size 64 --threads "$t" --precision "$p"
        done
        [ -z "$amx" ] || one "gnmt-translate-int8-vnni-t$t" env GNMT_MAX_ISA=avx512 "$BIN" bench translate "${src[@]}" \
            --beam 5 --batch-size 64 --threads "$t" --int8
    done
    if [ -n "$avxvnni" ]; then
        # int8's AVX-VNNI build (GNMT_MAX_ISA=avx2 keeps it) against AVX2's float32, and, with a
        # model, its translations against the default int8 build's (the same bits are claimed).
        one gnmt-translate-int8-avxvnni-t1 env GNMT_MAX_ISA=avx2 "$BIN" bench translate "${src[@]}" \
            --beam 5 --batch-size 64 --threads 1 --int8
        one gnmt-translate-fp32-avx2-t1 env GNMT_MAX_ISA=avx2 "$BIN" bench translate "${src[@]}" \
            --beam 5 --batch-size 64 --threads 1
        if [ -f "$WORK/cpu-in.txt" ] && [ -f "$model/model.safetensors" ]; then
            step cpu-avxvnni-int8 300 env GNMT_MAX_ISA=avx2 "$BIN" translate --model "$model" --precision int8 \
                -i "$WORK/cpu-in.txt" -o "$WORK/avxvnni.hyp"
            step cpu-default-int8 300 "$BIN" translate --model "$model" --precision int8 \
                -i "$WORK/cpu-in.txt" -o "$WORK/int8.hyp"
            echo "int8 translations differing between AVX-VNNI and the default build:" \
                "$(paste -d'\t' "$WORK/avxvnni.hyp" "$WORK/int8.hyp" | awk -F'\t' '$1 != $2' | wc -l) lines"
        fi
    fi
    for p in fp32 bf16; do
        flag=(); [ "$p" = fp32 ] || flag=(--"$p")
        # (one share of each batch: gnmt-rs's setting for one thread, README, Train)
        one "gnmt-train-$p-t1" "$BIN" bench train --preset "$preset" --batch-size 64 --threads 1 --shares 1 --steps 5 "${flag[@]}"
        one "pytorch-train-$p-t1" "${compare[@]}" train --preset "$preset" --batch-size 64 --threads 1 \
            --steps 5 --precision "$p"
    done
}

check_doctor
if [ "$PART" = check ] || [ "$PART" = all ]; then
    check_nccl
    check_m30k
fi
if [ "$PART" = bench ] || [ "$PART" = all ]; then bench; fi
if [ "$PART" = cpu ] || [ "$PART" = all ]; then cpu_bench; fi
echo "gpu-check: done in $(( $(date +%s) - start )) s; failed: ${FAILED[*]:-none}"
[ "${#FAILED[@]}" = 0 ]
