#!/usr/bin/env bash
# The one test command (README; .ci/run calls exactly this). Installs what
# the tests need, idempotently, then runs lint and every test.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

apt_install() {
  # Debian packages, only when a tool is missing (fresh machines, CI).
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing ${missing[*]} from Debian"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
apt_install curl:curl node:nodejs npm:npm python3:python3 git:git

scripts/install-peers.sh

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
cargo test --workspace --locked 2>&1 | tee "$LOG"
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$LOG"
