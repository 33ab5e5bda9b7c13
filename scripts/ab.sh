#!/usr/bin/env bash
# Speed of two gnmt-rs builds side by side: one `gnmt bench` command run on each, alternating,
# a line per round with each side's tokens/s and NEW / BASE, then the median ratio. This is for
# a change's gain; scripts/bench.sh compares gnmt-rs with PyTorch.
#
#   scripts/ab.sh [--rounds N] BASE NEW [-- BENCH ARGS...]
#
# BASE and NEW are each one of:
#   - a git revision, built once into target/ab/REV from a temporary worktree (in a target
#     directory of its own, target/ab/build: the first build takes minutes);
#   - `work`, the working tree as it is, built into target/ab/work;
#   - a directory holding `gnmt` and `gnmt-torch`.
# The launcher `gnmt` runs the `gnmt-torch` installed beside it, so a copy of `gnmt` alone
# measures whatever `gnmt-torch` sits next to the copy.
#
# BENCH ARGS default to `translate --model MODEL -i test2016.en --threads 1 --beam 5
# --batch-size 64`, where MODEL is runs/multi30k/averaged or demo/run/final. Add `--int8` or
# `--bf16` for those paths.
#
# Noise: on a shared 2-core VM, a few percent in one run says little. Two identical binaries
# measured 1.01-1.03x over four rounds on a Zen 4 (session 27). Run `scripts/ab.sh A A` first to
# see this machine's spread.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=4
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2
            [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ab.sh: --rounds takes a positive number" >&2; exit 2; } ;;
        -h|--help) sed -n '/^set -euo/q; 2,$p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
[ $# -ge 2 ] || { echo "ab.sh: give BASE and NEW (a git revision, work, or a directory); --help" >&2; exit 2; }
BASE_SPEC=$1 NEW_SPEC=$2
shift 2
if [ $# -gt 0 ]; then
    [ "$1" = "--" ] || { echo "ab.sh: unknown argument $1 (bench arguments go after --)" >&2; exit 2; }
    shift
fi
BENCH=("$@")
if [ ${#BENCH[@]} -eq 0 ]; then
    MODEL=""
    for m in runs/multi30k/averaged demo/run/final; do
        [ -f "$m/model.safetensors" ] && { MODEL=$m; break; }
    done
    [ -n "$MODEL" ] || { echo "ab.sh: no model: run scripts/demo.sh, or give bench arguments after --" >&2; exit 1; }
    BENCH=(translate --model "$MODEL" -i ../shared/data/multi30k/test2016.en --threads 1 --beam 5 --batch-size 64)
fi
command -v jq >/dev/null || { echo "ab.sh: needs jq (scripts/setup.sh installs it)" >&2; exit 1; }
scripts/setup.sh >/dev/null

# Prints the directory holding the build named by $1, building it first where needed.
resolve() {
    local spec=$1 out
    if [ "$spec" = work ]; then
        out=target/ab/work
        cargo build --release -q -p gnmt-cli >&2
    elif [ -d "$spec" ]; then
        [ -x "$spec/gnmt" ] && [ -x "$spec/gnmt-torch" ] \
            || { echo "ab.sh: $spec holds no gnmt and gnmt-torch" >&2; return 1; }
        echo "$spec"
        return
    else
        local rev
        rev=$(git rev-parse --short --verify "$spec^{commit}" 2>/dev/null) \
            || { echo "ab.sh: $spec is neither a directory nor a git revision" >&2; return 1; }
        out=target/ab/$rev
        if [ -x "$out/gnmt-torch" ]; then
            echo "$out"
            return
        fi
        local tree
        tree=$(mktemp -d)
        git worktree add -q --detach "$tree" "$rev" >&2
        # A target directory of its own (the first build there takes minutes: libtorch's
        # bindings): sharing the checkout's, cargo later took its own binary for fresh and
        # left the revision's in target/release, so `work` measured the wrong build.
        (cd "$tree" && LIBTORCH="$ROOT/.libtorch" CARGO_TARGET_DIR="$ROOT/target/ab/build" \
            cargo build --release -q -p gnmt-cli) >&2 || { git worktree remove --force "$tree"; return 1; }
        git worktree remove --force "$tree"
        mkdir -p "$out"
        cp target/ab/build/release/gnmt target/ab/build/release/gnmt-torch "$out/"
        echo "$out"
        return
    fi
    mkdir -p "$out"
    cp target/release/gnmt target/release/gnmt-torch "$out/"
    echo "$out"
}

BASE=$(resolve "$BASE_SPEC")
NEW=$(resolve "$NEW_SPEC")
export OMP_WAIT_POLICY=PASSIVE
echo "base $BASE_SPEC ($BASE), new $NEW_SPEC ($NEW): gnmt bench ${BENCH[*]}"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') (family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), model $(grep -m1 '^model[[:space:]]' /proc/cpuinfo | cut -d: -f2 | tr -d ' '))"
rate() {
    "$1/gnmt" bench "${BENCH[@]}" 2>/dev/null | jq -e '.tokens_per_s' \
        || { echo "ab.sh: gnmt bench failed on $1 (run it by hand to see why)" >&2; return 1; }
}
ratios=()
for r in $(seq "$ROUNDS"); do
    b=$(rate "$BASE")
    n=$(rate "$NEW")
    ratio=$(jq -n "$n / $b")
    ratios+=("$ratio")
    printf 'round %d: base %.0f, new %.0f tokens/s, new / base %.3fx\n' "$r" "$b" "$n" "$ratio"
done
printf '%s\n' "${ratios[@]}" | sort -g | jq -s '
    (length) as $n | if $n % 2 == 1 then .[($n - 1) / 2] else (.[$n / 2 - 1] + .[$n / 2]) / 2 end' \
    | xargs printf 'median new / base over %d rounds: %.3fx\n' "$ROUNDS"
