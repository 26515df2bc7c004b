#!/usr/bin/env bash
# The README's first command: on a fresh machine, build lanyard, install and
# start the local peers (a CI-shaped OIDC issuer standing in for GitHub's
# token endpoint, and OpenBao), configure OpenBao's JWT auth as a platform
# team would, then run `lanyard doctor` on examples/github-openbao.toml
# (address pointed at the local OpenBao) as a GitHub job would. Every
# process it starts is stopped by PID on exit.
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

scripts/ensure-tools.sh
scripts/install-peers.sh
cargo build --locked -q -p lanyard
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

sed "s#https://vault.example.com#$BAO_ADDR#" examples/github-openbao.toml >"$WORK/lanyard.toml"
echo
echo "== lanyard doctor --config examples/github-openbao.toml (address: $BAO_ADDR), as a GitHub job"
env -i PATH="$PATH" GITHUB_ACTIONS=true \
  ACTIONS_ID_TOKEN_REQUEST_URL="$ISSUER/gha/token?api-version=2.0" \
  ACTIONS_ID_TOKEN_REQUEST_TOKEN=demo-bearer \
  "$LANYARD" doctor --config "$WORK/lanyard.toml" --url https://api.stripe.com/v1/charges
