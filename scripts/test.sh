#!/usr/bin/env bash
# The one test command (README; .ci/run calls exactly this). Installs what
# the tests need, idempotently, then runs lint and every test.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

scripts/ensure-tools.sh
scripts/install-peers.sh

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
cargo test --workspace --locked 2>&1 | tee "$LOG"
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$LOG"
