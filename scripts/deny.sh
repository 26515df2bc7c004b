#!/usr/bin/env bash
# cargo deny: licences, bans (duplicates, wildcards) and sources always, and
# advisories when the RustSec database can be fetched. Installs the pinned
# cargo-deny under target/tools once (idempotent). Called by test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

VERSION=0.20.2
TOOLS="$ROOT/target/tools"
DENY="$TOOLS/bin/cargo-deny"
if ! [ -x "$DENY" ] || [ "$("$DENY" --version 2>/dev/null)" != "cargo-deny $VERSION" ]; then
  echo "deny: installing cargo-deny $VERSION under target/tools (once)"
  cargo install --quiet --locked cargo-deny --version "$VERSION" --root "$TOOLS"
fi

"$DENY" check licenses bans sources

# Why the split: the advisory database is a git repository on github.com,
# which machines with registry-only access cannot reach; a failed fetch
# must say so, not pass as "no advisories".
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
if "$DENY" fetch db >"$LOG" 2>&1; then
  "$DENY" --offline check advisories
else
  why="$(grep -m1 -E 'fatal:|error:' "$LOG" | sed -E 's/^.*(fatal|error): //' || true)"
  echo "deny: advisories SKIPPED: the RustSec advisory database (https://github.com/RustSec/advisory-db) could not be fetched: ${why:-see cargo deny fetch db}"
fi
