#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted input (libFuzzer via
# cargo-fuzz), SECONDS per target (default 60). Seeds come from
# citadel_fuzz::seeds; crashes land in fuzz/artifacts/<target>/.
# The machine has only a stable toolchain; RUSTC_BOOTSTRAP lets cargo-fuzz use
# the sanitizer flags it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo run -q -p citadel-fuzz --example write_seeds -- fuzz/corpus
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v citadel-fuzz-targets)
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  echo "==> fuzzing $t for ${SECONDS_PER_TARGET}s" >&2
  (cd fuzz && cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=1024 -max_len=1048576)
done
