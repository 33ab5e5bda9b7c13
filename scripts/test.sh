#!/usr/bin/env bash
# The test command: set-up (idempotent), then the whole workspace's tests, clippy and rustfmt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cargo build --workspace --bins
cargo test --workspace
cargo clippy --workspace --all-targets -- -D warnings
cargo fmt --all --check
echo "scripts/test.sh: all passed"
