#!/usr/bin/env bash
# Soak (issue 11): mixed load through lanyard for DURATION (default 30m) with
# 5-second credentials from the real RFC 8693 STS peer. Not part of the test
# command. Counts 401s, expired credentials served, errors, RSS and fds; the
# figures of the last full run are in docs/performance.md ("Soak").
#
#   bash scripts/soak.sh                 # 30 minutes
#   DURATION=2m bash scripts/soak.sh     # smoke run
#
# Knobs: DURATION, SAMPLE (s, 10), CLIENTS (threads per load kind, 1),
# TTL (credential lifetime s, 5), LANYARD_BIN (default: a release build),
# SOAK_DIR (scratch, kept; default a new mktemp dir). Exit 0 only when
# nothing expired was served and there were no 401s, errors or leaks.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
scripts/install-peers.sh >&2
if [ -z "${LANYARD_BIN:-}" ]; then
  cargo build -q --release --locked -p lanyard >&2
  export LANYARD_BIN="$ROOT/target/release/lanyard"
fi
exec "$ROOT/target/peers/venv/bin/python" "$ROOT/scripts/soak.py"
