#!/usr/bin/env bash
# Checks the CI snippets in examples/: structure, then the lines between
# "# lanyard:begin start|stop" and "# lanyard:end" run in bash with only the
# platform's documented variables, against the real lanyard binary and the test issuer.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../gitlab/lib.sh"
cd "$ROOT"
ensure_yaml_python
find_lanyard || { summary snippets; exit 1; }
ensure_peers
start_issuer
ISS=$("$PEER_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["issuer"])' "$ISSUER_READY")
mint() { curl -fsS -X POST -H 'content-type: application/json' -d '{"platform":"plain","aud":"https://sts.test","ttl":600}' "$ISS/mint" | "$PEER_PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
PORT=$("$PEER_PY" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mkdir -p "$T/bin"; ln -s "$LANYARD_BIN" "$T/bin/lanyard"

# extract FILE KIND: the shell lines of one marked block, indentation and YAML "- " removed.
extract() {
  awk -v k="$2" '$0 ~ "lanyard:begin "k"$" {on=1; next} /lanyard:end/ {on=0} on' "$1" \
    | sed -E 's/^[[:space:]]*//; s/^- //'
}

check() {
  local name=$1 file=$2 identity=$3; shift 3
  local d="$T/$name" why=""
  mkdir -p "$d/work"
  case "$file" in
    *.yml|*.yaml) "$PY" -c 'import sys,yaml; list(yaml.safe_load_all(open(sys.argv[1])))' "$file" 2>"$d/yaml.err" || why="YAML does not parse: $(head -c 300 "$d/yaml.err")" ;;
    *) grep -q 'pipeline {' "$file" && grep -q 'always {' "$file" || why="no declarative pipeline with post/always" ;;
  esac
  [ -z "$why" ] && ! grep -q 'lanyard start --export sh' "$file" && why="no lanyard start --export sh"
  [ -z "$why" ] && ! grep -q 'lanyard stop' "$file" && why="no lanyard stop"
  [ -z "$why" ] && [ -z "$(extract "$file" start)" ] && why="no lanyard:begin start block"
  if [ -n "$why" ]; then fail "$name: $why"; return; fi
  printf '[identity]\n%s\n[[credential]]\nname = "gw"\nexchange = "passthrough"\n[[route]]\nurl = "https://127.0.0.1:%s/"\ncredential = "gw"\n' "$identity" "$PORT" > "$d/work/lanyard.toml"
  { echo 'set -e'; extract "$file" start; echo 'lanyard status --json > "$OUT/status.json"'; extract "$file" stop; } > "$d/job.sh"
  (cd "$d/work" && env -i PATH="$T/bin:/usr/bin:/bin" HOME="$d" OUT="$d" LANYARD_STATE_DIR="$d/state" "$@" bash "$d/job.sh" >"$d/out" 2>&1)
  local rc=$?
  if [ $rc -ne 0 ]; then fail "$name: job exited $rc: $(tail -n 5 "$d/out" | tr '\n' ' ')"; return; fi
  "$PEER_PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); c=s["credentials"][0]; assert c["name"]=="gw" and c["expires_in_s"]>0 and c["last_error"] is None, s' "$d/status.json" 2>"$d/st.err" \
    || { fail "$name: status: $(tail -n 2 "$d/st.err")"; return; }
  [ -e "$d/state" ] && { fail "$name: state dir still there after stop"; return; }
  pass "$name"
}

check bitbucket examples/bitbucket-pipelines.yml 'source = "auto"' BITBUCKET_BUILD_NUMBER=1 BITBUCKET_STEP_OIDC_TOKEN="$(mint)"
check circleci examples/circleci-config.yml 'source = "auto"' CIRCLECI=true CIRCLE_OIDC_TOKEN_V2="$(mint)" BASH_ENV=/dev/null
TOK=$(mint)
cat > "$T/bin/buildkite-agent" <<SH
#!/bin/bash
[ "\$1 \$2 \$3" = "oidc request-token --audience" ] && [ -n "\$4" ] && [ \$# -eq 4 ] || { echo "unexpected: \$*" >&2; exit 2; }
echo '$TOK'
SH
chmod +x "$T/bin/buildkite-agent"
check buildkite examples/buildkite-pipeline.yml $'source = "auto"\naudience = "https://sts.test"' BUILDKITE=true
check jenkins examples/Jenkinsfile $'source = "env"\nvariable = "LANYARD_ID_TOKEN"' LANYARD_ID_TOKEN="$(mint)"
mint > "$T/k8s-token"
check kubernetes examples/kubernetes-runner.yaml "$(printf 'source = "file"\npath = "%s"' "$T/k8s-token")"

summary snippets
