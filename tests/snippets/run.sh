#!/usr/bin/env bash
# Runs the CI examples in examples/ whole, the way their platform would: every shell line of
# the job (jobs.py extracts them: Bitbucket script + after-script, CircleCI's run steps with
# $BASH_ENV, Buildkite's command, Jenkins' sh blocks and post, the Kubernetes container's
# bash -c), in an empty environment with only the platform's documented variables and no
# lanyard on PATH. Their install lines fetch install.sh and SHA256SUMS from a local release
# tree made by .github/workflows/package-release.sh from the binary under test (served by
# tests/install/serve.py); the test rewrites only the host of two URLs: GitHub's releases
# (-> that tree) and https://api.example.com (-> a JWT-checking HTTPS upstream, reached
# through lanyard's proxy: `curl -f` fails without the credential). install.sh's documented
# LANYARD_INSTALL_DIR keeps it out of /usr/local/bin. Also: the install lines refuse a
# tampered install.sh, and every install URL names agent/Cargo.toml's version.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../gitlab/lib.sh"
cd "$ROOT" || exit 1
ensure_yaml_python
find_lanyard || { summary snippets; exit 1; }
ensure_peers
start_issuer
start_upstream
ISS=$("$PEER_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["issuer"])' "$ISSUER_READY")
UP_URL=$("$PEER_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["url"])' "$UPSTREAM_READY")
UP_CA=$("$PEER_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["ca_file"])' "$UPSTREAM_READY")
mint() { curl -fsS -X POST -H 'content-type: application/json' -d '{"platform":"plain","aud":"https://sts.test","ttl":600}' "$ISS/mint" | "$PEER_PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' agent/Cargo.toml | head -n 1)
case $(uname -m) in x86_64) TARGET=x86_64-unknown-linux-musl ;; aarch64) TARGET=aarch64-unknown-linux-musl ;; *) echo "FAIL: no release target for $(uname -m)"; exit 1 ;; esac
# The release tree: good/ as release.yml publishes it, bad/ with install.sh changed afterwards.
REL_DIR="$T/rel/good/releases/download/v$VERSION"
mkdir -p "$REL_DIR"
if ! { SOURCE_DATE_EPOCH=1 sh .github/workflows/package-release.sh archive "$TARGET" "$LANYARD_BIN" "$REL_DIR" &&
  sh .github/workflows/package-release.sh sums "$REL_DIR" "$TARGET"; } >"$T/package.log" 2>&1; then
  fail "package-release.sh: $(tail -n 3 "$T/package.log")"; summary snippets; exit 1
fi
mkdir -p "$T/rel/bad/releases/download"
cp -R "$REL_DIR" "$T/rel/bad/releases/download/"
sed -i '2i echo "a tampered install.sh ran"' "$T/rel/bad/releases/download/v$VERSION/install.sh"
start_peer release python3 tests/install/serve.py --dir "$T/rel" --log "$T/release.log"
REL_URL=http://127.0.0.1:$("$PEER_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["port"])' "$READY")
: >>"$T/release.log"
mkdir -p "$T/tools"
[ -e /usr/local/bin/lanyard ] && LOCAL_BEFORE=1 || LOCAL_BEFORE=0

# check NAME FILE PLATFORM IDENTITY_TOML [VAR=value...]: run the example whole, as a job.
check() {
  local name=$1 file=$2 platform=$3 identity=$4 variant=good; shift 4
  [ "${1:-}" = --tampered ] && { variant=bad; shift; }
  local d="$T/$name" kind script rc status=0 seen
  mkdir -p "$d/work" "$d/bin"
  : >"$d/bash_env"
  printf '[identity]\n%s\n[[credential]]\nname = "gw"\nexchange = "passthrough"\n[[route]]\nurl = "%s/"\ncredential = "gw"\n[upstream]\nextra_ca = "%s"\n' \
    "$identity" "$UP_URL" "$UP_CA" >"$d/work/lanyard.toml"
  if ! "$PY" tests/snippets/jobs.py "$file" "$platform" "$d" "$REL_URL/$variant/releases" "$UP_URL" 2>"$d/plan.err"; then
    fail "$name: $(cat "$d/plan.err")"; return
  fi
  seen=$(wc -l <"$T/release.log")
  while read -r kind script shell; do
    [ "$kind" = step ] && [ "$status" -ne 0 ] && continue
    # shellcheck disable=SC2086 # $shell is a command with its options
    # exec: like a CI agent, the process that runs a step outlives it (lanyard
    # start watches the parent of the step's shell); a subshell that lingered
    # as that parent would end the daemon with step 1, depending on timing.
    (cd "$d/work" && exec env -i PATH="$d/bin:$T/tools:/usr/bin:/bin" HOME="$d" LANYARD_STATE_DIR="$d/state" \
      LANYARD_INSTALL_DIR="$d/bin" BASH_ENV="$d/bash_env" "$@" $shell "$d/$script" >>"$d/out" 2>&1)
    rc=$?
    if [ "$kind" = step ] && [ $rc -ne 0 ]; then status=$rc; fi
    if [ "$kind" = always ] && [ $rc -ne 0 ] && [ "$variant" = good ]; then status=$rc; fi
  done <"$d/plan"
  local got; got=$(tail -n +"$((seen + 1))" "$T/release.log")
  if [ "$variant" = bad ]; then
    if [ $status -ne 0 ] && ! grep -q 'a tampered install.sh ran' "$d/out" && [ ! -e "$d/bin/lanyard" ] \
      && grep -q 'install.sh: FAILED' "$d/out"; then pass "$name"; else fail "$name: the tampered install.sh was not refused (status $status): $(tail -n 5 "$d/out" | tr '\n' ' ')"; fi
    return
  fi
  if [ $status -ne 0 ]; then fail "$name: job exited $status: $(tail -n 6 "$d/out" | tr '\n' ' ')"; return; fi
  local want="GET /good/releases/download/v$VERSION/install.sh 200
GET /good/releases/download/v$VERSION/SHA256SUMS 200
GET /good/releases/download/v$VERSION/SHA256SUMS 200
GET /good/releases/download/v$VERSION/lanyard-$TARGET.tar.gz 200"
  [ "$(sort <<<"$got")" = "$(sort <<<"$want")" ] || { fail "$name: fetched [$(tr '\n' ' ' <<<"$got")], expected release v$VERSION's install.sh, SHA256SUMS and archive"; return; }
  grep -q 'install.sh: OK' "$d/out" || { fail "$name: install.sh was not checked against SHA256SUMS"; return; }
  local bin; bin=$(sed -n 's/^installed: \(.*\)$/\1/p' "$d/out" | head -n 1)
  case $bin in "$d"/*) ;; *) fail "$name: installed at [$bin], outside the job's folder"; return ;; esac
  cmp -s "$bin" "$LANYARD_BIN" || { fail "$name: $bin is not the released binary"; return; }
  [ -e "$d/state" ] && { fail "$name: state dir still there after stop"; return; }
  pass "$name"
}

check bitbucket examples/bitbucket-pipelines.yml bitbucket 'source = "auto"' BITBUCKET_BUILD_NUMBER=1 BITBUCKET_STEP_OIDC_TOKEN="$(mint)"
check circleci examples/circleci-config.yml circleci 'source = "auto"' CIRCLECI=true CIRCLE_OIDC_TOKEN_V2="$(mint)"
TOK=$(mint)
cat > "$T/tools/buildkite-agent" <<SH
#!/bin/bash
[ "\$1 \$2 \$3" = "oidc request-token --audience" ] && [ -n "\$4" ] && [ \$# -eq 4 ] || { echo "unexpected: \$*" >&2; exit 2; }
echo '$TOK'
SH
chmod +x "$T/tools/buildkite-agent"
check buildkite examples/buildkite-pipeline.yml buildkite $'source = "auto"\naudience = "https://sts.test"' BUILDKITE=true
check jenkins examples/Jenkinsfile jenkins $'source = "env"\nvariable = "LANYARD_ID_TOKEN"' LANYARD_ID_TOKEN="$(mint)" WORKSPACE="$T/jenkins/work"
mint > "$T/k8s-token"
check kubernetes examples/kubernetes-runner.yaml kubernetes "$(printf 'source = "file"\npath = "%s"' "$T/k8s-token")"
check bitbucket-tampered-install-sh examples/bitbucket-pipelines.yml bitbucket 'source = "auto"' --tampered BITBUCKET_BUILD_NUMBER=1 BITBUCKET_STEP_OIDC_TOKEN="$(mint)"

# Nothing was installed outside the jobs' folders.
if [ "$LOCAL_BEFORE" = 0 ] && [ -e /usr/local/bin/lanyard ]; then fail "a snippet installed into /usr/local/bin"; else pass "nothing installed into /usr/local/bin"; fi
# One URL and one checksum: every install.sh fetch names the release of agent/Cargo.toml's version.
bad=$(grep -rnoE 'https://[^ "]*install\.sh|raw\.githubusercontent\.com[^ "]*' README.md examples/ templates/ .gitlab/ install.sh \
  | grep -vE "https://github\.com/lanyard-ci/lanyard/releases/download/v($VERSION|\\\$lanyard_version)/install\.sh|\\\$u/install\.sh|\\\$lanyard_url/install\.sh" || true)
if [ -z "$bad" ]; then pass "every install.sh URL is release v$VERSION's (or the component's version)"; else fail "install.sh fetched elsewhere: $bad"; fi
bad=$(grep -rnoE 'u=https://github\.com/lanyard-ci/lanyard/releases/download/v[^ "]*' README.md examples/ install.sh | grep -v "/v$VERSION\$" || true)
if [ -z "$bad" ]; then pass "every install line names v$VERSION (agent/Cargo.toml)"; else fail "install lines name another version: $bad"; fi

summary snippets
