#!/usr/bin/env bash
# Builds the workspace (all targets, `cargo check`) with exactly the Rust
# named by `rust-version`, so the claim is proven by that compiler and not
# only by check-msrv.py's reading of the lockfile. The toolchain comes from
# rustup (minimal profile, installed once); its build goes to target/msrv.
# Where rustup cannot fetch it, this says why and that the claim went
# unchecked by that compiler, and does not fail the run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
msrv="$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
[ -n "$msrv" ] || { echo "msrv-build: no rust-version in Cargo.toml" >&2; exit 1; }
if ! command -v rustup >/dev/null 2>&1; then
  echo "msrv-build: SKIPPED: rustup is not installed, so Rust $msrv cannot be fetched; rust-version was checked only by check-msrv.py"
  exit 0
fi
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  echo "msrv-build: installing Rust $msrv (minimal profile)"
  if ! err="$(rustup toolchain install "$msrv" --profile minimal 2>&1)"; then
    echo "msrv-build: SKIPPED: rustup could not install Rust $msrv: $(printf '%s' "$err" | tail -n 1); rust-version was checked only by check-msrv.py"
    exit 0
  fi
fi
echo "msrv-build: cargo +$msrv check --locked --workspace --all-targets"
CARGO_TARGET_DIR="$ROOT/target/msrv" cargo "+$msrv" check --locked --workspace --all-targets --quiet
echo "msrv-build: ok (Rust $msrv builds every target)"
