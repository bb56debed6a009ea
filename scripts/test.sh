#!/usr/bin/env bash
# Runs every check and every test, as CI does:
#   1. starts PostgreSQL, an S3-compatible server (moto) and SoftHSM2 on
#      127.0.0.1, installing them first when missing (scripts/services.sh);
#   2. rustfmt, clippy with warnings denied, cargo deny (licenses, bans, sources);
#   3. every test of the workspace (cargo nextest).
# Each step runs even when an earlier one failed; the exit code is non-zero
# when any failed, and the failed steps are named at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=()
step() {
  local name=$1; shift
  echo "==> $name" >&2
  "$@" || failed+=("$name")
}

./scripts/services.sh || { echo "error: the test services did not start; see the messages above" >&2; exit 1; }
# shellcheck disable=SC1091
source "${CITADEL_SERVICES_DIR:-/tmp/citadel-services}/env"
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
command -v cargo-deny >/dev/null || cargo install cargo-deny --locked

step "rustfmt" cargo fmt --all --check
step "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# The RustSec advisory database is fetched from GitHub, which this network
# does not reach; licenses, bans and sources need nothing from outside.
step "cargo deny" cargo deny --locked check licenses bans sources
step "tests" cargo nextest run --workspace --locked --no-fail-fast

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all checks and tests passed" >&2
