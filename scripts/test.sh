#!/usr/bin/env bash
# Runs every test. Installs cargo-nextest if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
cargo nextest run --workspace --no-fail-fast
