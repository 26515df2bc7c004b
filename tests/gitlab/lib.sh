# Shared by tests/gitlab/run.sh and tests/snippets/run.sh (sourced, not run).
# Sets ROOT, T (a temp dir removed at exit), PY (a python3 with PyYAML), PEER_PY (the
# peers venv: pyjwt, cryptography), LANYARD_BIN; starts the CI-shaped issuer and the
# JWT-checking HTTPS upstream on ephemeral ports and stops them by PID at exit.
# LANYARD_TEST_KEEP=1 keeps the temp dir (job scripts and logs) for a look afterwards.
# Results: helpers print "PASS: ..." / "FAIL: ..." lines; `tally` counts them.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
T="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-citest.XXXXXX")"
PASSED=0
FAILED=0
PEER_PIDS=()

cleanup() {
  local pid
  for pid in "${PEER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PEER_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${LANYARD_TEST_KEEP:-}" = 1 ]; then
    echo "kept the test directory: $T"
  else
    rm -rf "$T"
  fi
}
trap cleanup EXIT

pass() { echo "PASS: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }

# tally LOG RC: count the PASS/FAIL lines a helper wrote; a helper that died
# without saying FAIL still counts as one failure.
tally() {
  local log=$1 rc=$2 p f
  p=$(grep -c '^PASS: ' "$log" || true)
  f=$(grep -c '^FAIL: ' "$log" || true)
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    fail "$(basename "$log" .log) exited with status $rc without reporting a failure"
  fi
}

# run_helper NAME CMD...: run a Python helper, stream its output, count its results.
run_helper() {
  local name=$1 rc
  shift
  "$@" 2>&1 | tee "$T/$name.log"
  rc=${PIPESTATUS[0]}
  tally "$T/$name.log" "$rc"
}

# A python3 that imports yaml: the system one if it can, else a venv under target/peers.
ensure_yaml_python() {
  if python3 -c 'import yaml' 2>/dev/null; then
    PY=python3
    return
  fi
  local venv="$ROOT/target/peers/venv-yaml"
  if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
    echo "PyYAML: creating $venv"
    python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q --disable-pip-version-check pyyaml \
      || { echo "FAIL: cannot create $venv with PyYAML"; exit 1; }
  fi
  PY="$venv/bin/python"
}

ensure_peers() {
  PEER_PY="$ROOT/target/peers/venv/bin/python"
  if ! "$PEER_PY" -c 'import jwt, cryptography' 2>/dev/null; then
    "$ROOT/scripts/install-peers.sh" >&2 || { echo "FAIL: scripts/install-peers.sh"; exit 1; }
  fi
}

# The binary under test: $LANYARD_BIN, else target/debug/lanyard. Never built here.
find_lanyard() {
  LANYARD_BIN="${LANYARD_BIN:-$ROOT/target/debug/lanyard}"
  case "$LANYARD_BIN" in /*) ;; *) LANYARD_BIN="$ROOT/$LANYARD_BIN" ;; esac
  if [ ! -x "$LANYARD_BIN" ]; then
    echo "FAIL: no lanyard binary at $LANYARD_BIN (build it with cargo build, or set LANYARD_BIN)"
    FAILED=$((FAILED + 1))
    return 1
  fi
  echo "lanyard under test: $LANYARD_BIN ($("$LANYARD_BIN" --version 2>&1))"
  export LANYARD_BIN
}

# start_peer NAME CMD...: start a server that prints one JSON ready line on stdout;
# sets READY to that line. Its stderr goes to $T/NAME.err.
start_peer() {
  local name=$1 fifo fd line
  shift
  fifo="$T/$name.ready"
  mkfifo "$fifo"
  "$@" >"$fifo" 2>"$T/$name.err" &
  PEER_PIDS+=("$!")
  exec {fd}<"$fifo"
  if ! IFS= read -r -t 60 -u "$fd" line; then
    echo "FAIL: $name printed no ready line; its stderr:"
    sed 's/^/  /' "$T/$name.err"
    exit 1
  fi
  READY="$line"
}

start_issuer() {
  start_peer issuer "$PEER_PY" "$ROOT/agent/tests/peers/issuer.py"
  ISSUER_READY="$READY"
  export ISSUER_READY
}

start_upstream() {
  start_peer upstream "$PEER_PY" "$ROOT/tests/gitlab/upstream.py" \
    --issuer "$("$PEER_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["issuer"])' "$ISSUER_READY")" \
    --ca-out "$T/upstream-ca.pem"
  UPSTREAM_READY="$READY"
  export UPSTREAM_READY
}

summary() {
  local label=$1
  echo "$label: $PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}
