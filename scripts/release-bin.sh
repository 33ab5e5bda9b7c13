#!/usr/bin/env bash
# Prints the path of the gnmt binary for the scripts: $GNMT_BIN when set (say, a copy that later
# builds leave alone), else a release build of this checkout (set up and built first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${GNMT_BIN:-}" ]; then
    echo "$GNMT_BIN"
else
    scripts/setup.sh >/dev/null
    cargo build --release -q -p gnmt-cli >&2
    echo "$PWD/target/release/gnmt"
fi
