#!/bin/sh
# Runs the GitHub Action's tests (tests/action/*.test.js) with Node's own test
# runner, from the repository root, and exits with its status.
#
# The files are listed explicitly: Node 20 also accepts the folder
# (`node --test tests/action/`), but Node 21+ reads arguments as globs and
# treats a bare folder as one test file.
#
# Needs: node >= 20, tar, sha256sum, target/debug/lanyard (or LANYARD_BIN),
# and the test issuer's venv (scripts/install-peers.sh).
set -eu
cd "$(dirname "$0")/../.."
set -- tests/action/*.test.js
exec node --test "$@"
