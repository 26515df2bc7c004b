#!/usr/bin/env bash
# The README's first command: on a fresh machine, build lanyard, install and
# start the local peers (a CI-shaped OIDC issuer standing in for GitHub's
# token endpoint, OpenBao, and a recording HTTPS upstream standing in for
# api.stripe.com), configure OpenBao's JWT auth as a platform team would,
# then, as a GitHub job would, with examples/github-openbao.toml (the Vault
# address and the route's host pointed at the local peers):
#   1. `lanyard doctor` explains the setup;
#   2. `lanyard run -- curl https://localhost:PORT/v1/charges` makes a call
#      through the proxy, which attaches the KV secret; the upstream's record
#      shows exactly one Authorization header, and the audit line and the
#      summary show the call.
# Every process it starts is stopped by PID on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n== demo: %s\n' "$*"; }
step "1/4 tools the demo uses (curl, python3; from Debian when missing)"
scripts/ensure-tools.sh demo
step "2/4 local peers (the issuer's Python venv, the OpenBao binary; once, under target/peers)"
scripts/install-peers.sh demo
step "3/4 building lanyard (cargo build; a first build takes a few minutes, then seconds)"
cargo build --locked -p lanyard
step "4/4 starting the issuer, OpenBao and the HTTPS upstream on loopback"
LANYARD="$ROOT/target/debug/lanyard"
PY="$ROOT/target/peers/venv/bin/python"

# Issuer: prints one JSON ready line.
"$PY" agent/tests/peers/issuer.py --gha-bearer demo-bearer >"$WORK/issuer.out" 2>"$WORK/issuer.log" &
PIDS+=($!)
for _ in $(seq 1 200); do [ -s "$WORK/issuer.out" ] && break; sleep 0.05; done
ISSUER="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["issuer"])' "$WORK/issuer.out")"

# OpenBao dev server on a free port pair (it binds PORT and PORT+1).
PORT="$("$PY" - <<'P'
import socket
for _ in range(50):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 1)); t.close(); s.close(); print(p); break
    except OSError:
        s.close()
P
)"
BAO_ADDR="http://127.0.0.1:$PORT"
HOME="$WORK" target/peers/bin/bao server -dev -dev-no-store-token -dev-root-token-id=root \
  -dev-listen-address="127.0.0.1:$PORT" >"$WORK/bao.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do curl -sf "$BAO_ADDR/v1/sys/health" >/dev/null && break; sleep 0.05; done

bao() { curl -sf -H "X-Vault-Token: root" -X "$1" "$BAO_ADDR/v1/$2" ${3:+--data "$3"} >/dev/null; }
bao POST sys/auth/jwt '{"type":"jwt"}'
bao POST auth/jwt/config "{\"oidc_discovery_url\":\"$ISSUER\",\"bound_issuer\":\"$ISSUER\"}"
bao PUT sys/policies/acl/ci-read '{"policy":"path \"secret/data/ci/*\" { capabilities = [\"read\"] }"}'
bao POST auth/jwt/role/ci '{"role_type":"jwt","user_claim":"sub","bound_audiences":["https://bao.test"],"bound_claims":{"repository":"acme/app"},"token_policies":["ci-read"],"token_ttl":"60s","token_max_ttl":"300s"}'
bao POST secret/data/ci/stripe '{"data":{"api_key":"sk_test_demo_never_printed"}}'

# The HTTPS upstream: prints one JSON ready line {"port", "ca"}.
mkdir -p "$WORK/upstream"
"$PY" agent/tests/peers/upstream.py --dir "$WORK/upstream" >"$WORK/upstream.out" 2>"$WORK/upstream.log" &
PIDS+=($!)
for _ in $(seq 1 200); do [ -s "$WORK/upstream.out" ] && break; sleep 0.05; done
UP_PORT="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$WORK/upstream.out")"
UP_CA="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca"])' "$WORK/upstream.out")"

sed -e "s#https://vault.example.com#$BAO_ADDR#" \
    -e "s#https://api.stripe.com/v1/#https://localhost:$UP_PORT/v1/#" \
    -e "s#^file = \"lanyard-audit.jsonl\"#file = \"$WORK/audit.jsonl\"#" \
    examples/github-openbao.toml >"$WORK/lanyard.toml"
printf '\n[upstream]\nextra_ca = "%s"\n' "$UP_CA" >>"$WORK/lanyard.toml"
echo
echo "== lanyard doctor --config examples/github-openbao.toml (address: $BAO_ADDR), as a GitHub job"
env -i PATH="$PATH" GITHUB_ACTIONS=true \
  ACTIONS_ID_TOKEN_REQUEST_URL="$ISSUER/gha/token?api-version=2.0" \
  ACTIONS_ID_TOKEN_REQUEST_TOKEN=demo-bearer \
  "$LANYARD" doctor --config "$WORK/lanyard.toml" --url "https://localhost:$UP_PORT/v1/charges"

echo
echo "== lanyard run --config examples/github-openbao.toml -- curl https://localhost:$UP_PORT/v1/charges"
env -i PATH="$PATH" HOME="$WORK" GITHUB_ACTIONS=true \
  ACTIONS_ID_TOKEN_REQUEST_URL="$ISSUER/gha/token?api-version=2.0" \
  ACTIONS_ID_TOKEN_REQUEST_TOKEN=demo-bearer \
  "$LANYARD" run --config "$WORK/lanyard.toml" -- \
  curl -sS --fail-with-body "https://localhost:$UP_PORT/v1/charges?limit=1"
echo

echo
echo "== what the upstream received (header names and how many Authorization values; never the value)"
"$PY" - "$WORK/upstream/records.jsonl" <<'P'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
for r in recs:
    auth = [v for k, v in r["headers"] if k.lower() == "authorization"]
    print(f'{r["method"]} {r["path"]}: {len(auth)} Authorization header(s), '
          f'scheme {auth[0].split()[0] if auth else "-"}, value is the KV secret: '
          f'{auth == ["Bearer sk_test_demo_never_printed"]}')
ok = len(recs) == 1 and [v for k, v in recs[0]["headers"] if k.lower() == "authorization"] == ["Bearer sk_test_demo_never_printed"]
sys.exit(0 if ok else 1)
P
echo
echo "== the audit file"
cat "$WORK/audit.jsonl"
if grep -q sk_test_demo_never_printed "$WORK/audit.jsonl"; then
  echo "demo: the secret is in the audit file" >&2; exit 1
fi
echo
echo "result: ok"
