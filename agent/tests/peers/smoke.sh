#!/usr/bin/env bash
# Smoke test for the test peers: installs them, starts issuer.py, the STS and OpenBao on ephemeral
# loopback ports, and drives each with curl. Prints PASS/FAIL per check; exits non-zero on any failure.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PEERS="$ROOT/target/peers"
PY="$PEERS/venv/bin/python"
BAO_BIN="$PEERS/bin/bao"
GHA_BEARER="gha-$RANDOM$RANDOM"
TE=urn:ietf:params:oauth:grant-type:token-exchange
JWT_TYPE=urn:ietf:params:oauth:token-type:jwt
ASSERTION_TYPE=urn:ietf:params:oauth:client-assertion-type:jwt-bearer

for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "smoke: '$tool' is required" >&2; exit 2; }
done
"$ROOT/scripts/install-peers.sh" || { echo "smoke: install-peers.sh failed" >&2; exit 1; }

mkdir -p "$PEERS"
WORK="$(mktemp -d "$PEERS/smoke.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0 failed=0
check() { # check NAME CONDITION-COMMAND...
  local name="$1"; shift
  if "$@"; then echo "PASS $name"; passed=$((passed + 1))
  else echo "FAIL $name${BODY:+ (last response $CODE: ${BODY:0:300})}"; failed=$((failed + 1)); fi
}
# req ARGS... : curl; sets CODE and BODY
req() { CODE="$(curl -sS -o "$WORK/body" -w '%{http_code}' "$@")"; BODY="$(cat "$WORK/body")"; }
is() { [ "$CODE" = "$1" ]; }
has() { [[ "$BODY" == *"$1"* ]]; }
field() { jq -r "($1) | if . == null then empty else . end" <<<"$BODY" 2>/dev/null; }
bao_err() { [[ "$(field '.errors | join(" ")')" == *"$1"* ]]; }  # OpenBao's {"errors":[...]}

# wait_ready NAME PID OUTFILE : bounded poll for the one-line JSON ready line
wait_ready() {
  local i
  for i in $(seq 1 200); do
    if [ -s "$3" ] && jq -e . "$3" >/dev/null 2>&1; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "smoke: $1 died; its log:" >&2; cat "$WORK/$1.err" >&2; return 1; }
    sleep 0.05
  done
  echo "smoke: $1 not ready after 10 s" >&2; return 1
}

fail_fast() { echo "FAIL $1"; exit 1; }

# --- issuer -------------------------------------------------------------------------------------
"$PY" "$HERE/issuer.py" --gha-bearer "$GHA_BEARER" >"$WORK/issuer.out" 2>"$WORK/issuer.err" &
PIDS+=($!); ISSUER_PID=$!
wait_ready issuer "$ISSUER_PID" "$WORK/issuer.out" || fail_fast "issuer starts"
ISS="$(jq -r .issuer "$WORK/issuer.out")"
check "issuer ready line is one JSON line with port+issuer" \
  test "$(wc -l <"$WORK/issuer.out")" = 1 -a "$ISS" = "http://127.0.0.1:$(jq -r .port "$WORK/issuer.out")"

# --- STS ----------------------------------------------------------------------------------------
SUBJECT_ISSUER="$ISS" TOKEN_TTL=30 node "$HERE/sts/server.mjs" >"$WORK/sts.out" 2>"$WORK/sts.err" &
PIDS+=($!); STS_PID=$!
wait_ready sts "$STS_PID" "$WORK/sts.out" || fail_fast "sts starts"
STS="$(jq -r .issuer "$WORK/sts.out")"
TOKEN_EP="$(jq -r .token_endpoint "$WORK/sts.out")"
REVOKE_EP="$(jq -r .revocation_endpoint "$WORK/sts.out")"
INTRO_EP="$(jq -r .introspection_endpoint "$WORK/sts.out")"
check "sts ready line is one JSON line with port, issuer and endpoints" \
  test "$(wc -l <"$WORK/sts.out")" = 1 -a "$(jq -r '[.port, .issuer, .token_endpoint, .revocation_endpoint, .introspection_endpoint] | map(tostring) | join(" ")' "$WORK/sts.out")" \
  = "${STS##*:} $STS $STS/token $STS/token/revocation $STS/token/introspection"

# --- OpenBao: it binds PORT and PORT+1, so find a pair that is free ----------------------------
BAO_PORT="$("$PY" - <<'EOF'
import socket
for _ in range(50):
    with socket.socket() as a:
        a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
        try:
            with socket.socket() as b:
                b.bind(("127.0.0.1", p + 1))
        except OSError:
            continue
    print(p); break
EOF
)"
BAO="http://127.0.0.1:$BAO_PORT"
"$BAO_BIN" server -dev -dev-no-store-token -dev-root-token-id=root \
  -dev-listen-address="127.0.0.1:$BAO_PORT" >"$WORK/bao.out" 2>"$WORK/bao.err" &
PIDS+=($!); BAO_PID=$!
for i in $(seq 1 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$BAO/v1/sys/health")" = 200 ] && break
  kill -0 "$BAO_PID" 2>/dev/null || { cat "$WORK/bao.out" "$WORK/bao.err" >&2; fail_fast "bao starts"; }
  sleep 0.05
done
req "$BAO/v1/sys/health"; check "bao healthy on $BAO" is 200

# --- issuer: GitHub's token request endpoint ----------------------------------------------------
GHA_URL="$ISS/gha/token?api-version=2.0"
req -H "Authorization: Bearer nope" "$GHA_URL&audience=https://bao.test"
check "gha/token with a bad bearer -> 401" is 401
gha_token() { # gha_token AUDIENCE -> prints the jwt
  curl -sS -H "Authorization: bearer $GHA_BEARER" "$GHA_URL&audience=$1" | jq -r .value
}
claims() { "$PY" -c 'import sys, jwt; print(__import__("json").dumps(jwt.decode(sys.argv[1], options={"verify_signature": False})))' "$1"; }
T="$(gha_token https://bao.test)"
C="$(claims "$T")"
check "gha/token returns github claims with aud=https://bao.test" \
  test "$(jq -r '[.aud, .repository, .sub, .run_id, .iss] | join(" ")' <<<"$C")" \
  = "https://bao.test acme/app repo:acme/app:ref:refs/heads/main 4242 $ISS"
check "gha/token default aud is the owner URL" \
  test "$(claims "$(curl -sS -H "Authorization: Bearer $GHA_BEARER" "$GHA_URL" | jq -r .value)" | jq -r .aud)" = https://github.com/acme
req "$ISS/jwks.json"
check "jwks.json has one RS256 key with a kid" test "$(field '.keys[0] | [.kty, .alg, (.kid|length>0)] | join(" ")')" = "RSA RS256 true"

# --- OpenBao JWT auth ---------------------------------------------------------------------------
root=(-H "X-Vault-Token: root")
req "${root[@]}" -X PUT "$BAO/v1/sys/policies/acl/ci-read" \
  -d '{"policy": "path \"secret/data/ci/*\" { capabilities = [\"read\"] }"}'
check "bao: write policy ci-read" is 204
req "${root[@]}" -X POST "$BAO/v1/sys/auth/jwt" -d '{"type":"jwt"}'
check "bao: enable jwt auth" is 204
req "${root[@]}" -X POST "$BAO/v1/auth/jwt/config" -d "{\"oidc_discovery_url\":\"$ISS\",\"bound_issuer\":\"$ISS\"}"
check "bao: jwt config with oidc_discovery_url (issuer's discovery accepted)" is 204
req "${root[@]}" -X POST "$BAO/v1/auth/jwt/role/ci" -d '{"role_type":"jwt","user_claim":"sub",
  "bound_audiences":["https://bao.test"],"bound_claims":{"repository":"acme/app"},
  "token_policies":["ci-read"],"token_ttl":"30s","token_max_ttl":"120s"}'
check "bao: role ci" is 204
req "${root[@]}" -X POST "$BAO/v1/secret/data/ci/stripe" -d '{"data":{"api_key":"sk_test_canary"}}'
check "bao: write secret/data/ci/stripe" is 200

req -X POST "$BAO/v1/auth/jwt/login" -d "{\"role\":\"ci\",\"jwt\":\"$T\"}"
BT="$(field .auth.client_token)"
check "bao: login with a github token -> client_token, 30s lease, renewable" \
  test -n "$BT" -a "$(field .auth.lease_duration)" = 30 -a "$(field .auth.renewable)" = true
req -H "X-Vault-Token: $BT" -X POST "$BAO/v1/auth/token/renew-self" -d '{}'
check "bao: renew-self" test "$CODE" = 200 -a "$(field .auth.lease_duration)" = 30
req -H "X-Vault-Token: $BT" "$BAO/v1/secret/data/ci/stripe"
check "bao: read KV secret" test "$(field .data.data.api_key)" = sk_test_canary
req -H "X-Vault-Token: $BT" "$BAO/v1/secret/data/other"
check "bao: policy denies other paths -> 403" is 403
req -H "X-Vault-Token: $BT" -X POST "$BAO/v1/auth/token/revoke-self"
check "bao: revoke-self -> 204" is 204
req -H "X-Vault-Token: $BT" "$BAO/v1/secret/data/ci/stripe"
check "bao: revoked token -> 403 permission denied" eval 'is 403 && has "permission denied"'

req -X POST "$ISS/gha/config" -d '{"claims":{"repository":"evil/app"}}'
WRONG="$(gha_token https://bao.test)"
req -X POST "$ISS/gha/config" -d '{"ttl":5}'
check "gha/config sets the wrong-repo claim and then a 5 s TTL" \
  test "$(claims "$WRONG" | jq -r .repository)" = evil/app \
  -a "$(claims "$(gha_token https://bao.test)" | jq -r '"\(.exp - .iat) \(.repository)"')" = "5 acme/app"
curl -sS -o /dev/null -X POST "$ISS/gha/config" -d '{}'
req -X POST "$BAO/v1/auth/jwt/login" -d "{\"role\":\"ci\",\"jwt\":\"$WRONG\"}"
check "bao: wrong repository -> 400 with the claim message" \
  eval 'is 400 && bao_err "claim \"repository\" does not match any associated bound claim values"'
req -X POST "$BAO/v1/auth/jwt/login" -d "{\"role\":\"ci\",\"jwt\":\"$(gha_token https://elsewhere.test)\"}"
check "bao: wrong audience -> 400" eval 'is 400 && bao_err "aud"'
req -X POST "$ISS/mint" -d '{"platform":"github","aud":"https://bao.test","ttl":-120}'
req -X POST "$BAO/v1/auth/jwt/login" -d "{\"role\":\"ci\",\"jwt\":\"$(field .token)\"}"
check "bao: expired token -> 400" eval 'is 400 && bao_err "expired"'
req "$ISS/stats"
check "issuer /stats counts gha requests and mints" test "$(field '"\(.gha_requests) \(.mints)"')" = "6 1"

# --- STS: RFC 8693 token exchange ---------------------------------------------------------------
req "$STS/.well-known/openid-configuration"
check "sts discovery advertises token-exchange, revocation, introspection" \
  test "$(field '[(.grant_types_supported | index("'$TE'") != null), .revocation_endpoint == "'$REVOKE_EP'", .introspection_endpoint == "'$INTRO_EP'"] | all')" = true
mint() { # mint PLATFORM AUD TTL [CLAIMS-JSON]
  curl -sS -X POST "$ISS/mint" -d "{\"platform\":\"$1\",\"aud\":\"$2\",\"ttl\":$3,\"claims\":${4:-{\}}}" | jq -r .token
}
exchange() { # exchange SUBJECT_TOKEN [curl args...]
  local st="$1"; shift
  req "$@" -X POST "$TOKEN_EP" -d "grant_type=$TE" -d "subject_token=$st" -d "subject_token_type=$JWT_TYPE" -d scope=read
}
SUBJ="$(gha_token https://sts.test)"
exchange "$SUBJ" -u lanyard:lanyard-secret
AT="$(field .access_token)"
check "sts: exchange (lanyard, basic) -> opaque access_token, RFC 8693 response" \
  test -n "$AT" -a "$(tr -cd . <<<"$AT" | wc -c)" = 0 \
  -a "$(field '[.issued_token_type, .token_type, .expires_in, .scope] | map(tostring) | join(" ")')" \
  = "urn:ietf:params:oauth:token-type:access_token Bearer 30 read"
req -u lanyard:lanyard-secret -X POST "$INTRO_EP" -d "token=$AT"
check "sts: introspect -> active" test "$(field .active)" = true -a "$(field .client_id)" = lanyard
req -u lanyard:lanyard-secret -X POST "$REVOKE_EP" -d "token=$AT"
check "sts: revoke -> 200" is 200
req -u lanyard:lanyard-secret -X POST "$INTRO_EP" -d "token=$AT"
check "sts: introspect after revoke -> inactive" test "$(field .active)" = false

exchange "$(mint gitlab https://sts.test 300)" -d client_id=lanyard-post -d client_secret=lanyard-secret
check "sts: exchange of a gitlab token (lanyard-post, client_secret_post)" test -n "$(field .access_token)"
exchange "$SUBJ" -d client_id=lanyard-public
PT="$(field .access_token)"
req -u lanyard:lanyard-secret -X POST "$INTRO_EP" -d "token=$PT"
check "sts: exchange (lanyard-public, no client auth) -> active token" test -n "$PT" -a "$(field .active)" = true
req -X POST "$REVOKE_EP" -d client_id=lanyard-public -d "token=$PT"
check "sts: public client revokes its own token -> 200" is 200
req -u lanyard:lanyard-secret -X POST "$INTRO_EP" -d "token=$PT"
check "sts: public client's revoked token is inactive" test "$(field .active)" = false

exchange "$(mint github https://sts.test 300 '{"repository":"evil/app"}')" -u lanyard:lanyard-secret
check "sts: wrong repository -> 400 invalid_grant, specific description" \
  test "$CODE" = 400 -a "$(field .error)" = invalid_grant -a "$(field .error_description)" = 'subject token repository "evil/app" is not allowed'
exchange "$(mint github https://sts.test -60)" -u lanyard:lanyard-secret
check "sts: expired subject token -> 400 'subject token expired'" \
  test "$CODE" = 400 -a "$(field .error_description)" = 'subject token expired'
exchange "$(mint github https://other.test 300)" -u lanyard:lanyard-secret
check "sts: wrong audience -> 400 naming the audience" \
  test "$CODE" = 400 -a "$(field .error_description)" = 'subject token audience "https://other.test" is not "https://sts.test"'
req -u lanyard:lanyard-secret -X POST "$TOKEN_EP" -d "grant_type=$TE" -d "subject_token=$SUBJ" \
  -d subject_token_type=urn:ietf:params:oauth:token-type:saml2
check "sts: unsupported subject_token_type -> 400" eval 'is 400 && has "unsupported subject_token_type"'
exchange "$SUBJ" -u lanyard:wrong-secret
check "sts: wrong client secret -> 401 invalid_client" test "$CODE" = 401 -a "$(field .error)" = invalid_client

# --- STS: RFC 7523 client assertion (federated credential) --------------------------------------
federated() { # federated AUD -> response of a client_credentials grant with a fresh assertion
  local a; a="$(mint plain "$1" 60 '{"iss":"lanyard-federated","sub":"lanyard-federated"}')"
  req -X POST "$TOKEN_EP" -d grant_type=client_credentials -d client_id=lanyard-federated \
    -d "client_assertion_type=$ASSERTION_TYPE" -d "client_assertion=$a" -d scope=read
}
federated "$TOKEN_EP"
FT="$(field .access_token)"
check "sts: client_credentials with private_key_jwt assertion (aud = token endpoint) -> opaque token" \
  test -n "$FT" -a "$(tr -cd . <<<"$FT" | wc -c)" = 0 -a "$(field .expires_in)" = 30
federated "$STS"
check "sts: assertion with aud = issuer is accepted too" test -n "$(field .access_token)"
federated "https://sts.test"
check "sts: assertion with a foreign aud -> 401 invalid_client, detail in the body" \
  eval 'is 401 && [[ "$(field .error_description)" == *"audience (aud) must equal"* ]]'
req -u lanyard:lanyard-secret -X POST "$INTRO_EP" -d "token=$FT"
check "sts: federated token introspects active" test "$(field .active)" = true -a "$(field .client_id)" = lanyard-federated
check "sts: logs carry the real refusal reasons" grep -q 'subject token repository "evil/app" is not allowed' "$WORK/sts.err"

# --- clean shutdown on SIGTERM ------------------------------------------------------------------
for name in issuer sts bao; do
  pidvar="${name^^}_PID"; pid="${!pidvar}"
  kill -TERM "$pid"; wait "$pid"; rc=$?
  check "$name exits cleanly on SIGTERM (rc=$rc)" test "$rc" = 0
done
PIDS=()

echo "smoke: $passed passed, $failed failed"
[ "$failed" = 0 ]
