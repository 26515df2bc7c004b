#!/usr/bin/env bash
# The one test command (README; .ci/run calls exactly this). Installs what
# the tests need, idempotently, then runs lint and every test.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

scripts/ensure-tools.sh
scripts/install-peers.sh

# The README's claims that a script can check: every file the docs point
# to exists, and no locked crate needs a newer Rust than rust-version.
python3 scripts/check-links.py
python3 scripts/check-msrv.py
scripts/msrv-build.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Licences, duplicates, wildcards, sources; advisories when the database
# can be fetched (deny.sh says when it cannot).
scripts/deny.sh
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$LOG" || status=1

# The integrations run against the binary cargo test just built.
export LANYARD_BIN="$ROOT/target/debug/lanyard"
for suite in tests/action/run.sh tests/gitlab/run.sh tests/install/run.sh tests/snippets/run.sh; do
  echo "== $suite"
  bash "$suite" 2>&1 | tee -a "$LOG" || status=1
done
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$LOG"
# And the suites' own closing lines (action: node's "# pass/# fail").
grep -E '^(gitlab|install tests|snippets): [0-9]+ passed|^# (pass|fail) [0-9]+' "$LOG" || true
echo "test.sh: $([ "$status" -eq 0 ] && echo ok || echo FAILED)"
exit "$status"
