#!/bin/sh
# Run by the test jobs' scripts (GitLab fixtures and the snippets' ./deploy.sh): prints, as
# key=value lines, what the job's shell sees of lanyard's exports. It never prints a secret:
# the proxy URL carries one, so only its shape and port are printed.
same() {
  first=$1
  shift
  for v in "$@"; do
    [ "$v" = "$first" ] || { echo no; return; }
  done
  echo yes
}
yn() { if "$@"; then echo yes; else echo no; fi; }
port=${LANYARD_PROXY##*:}
port=${port%%/*}
echo "state=${LANYARD_STATE_DIR:-}"
echo "ca=${LANYARD_CA_FILE:-}"
echo "proxy_port=$port"
case ${LANYARD_PROXY:-} in
  http://lanyard:?*@127.0.0.1:[0-9]*) echo "proxy_shape=ok" ;;
  *) echo "proxy_shape=bad" ;;
esac
echo "ca_vars_agree=$(same "${LANYARD_CA_FILE:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}" "${CURL_CA_BUNDLE:-}" "${NODE_EXTRA_CA_CERTS:-}" "${GIT_SSL_CAINFO:-}")"
echo "proxy_vars_agree=$(same "${LANYARD_PROXY:-}" "${HTTPS_PROXY:-}" "${HTTP_PROXY:-}" "${https_proxy:-}" "${http_proxy:-}")"
echo "no_proxy_set=$(yn [ -n "${NO_PROXY:-}" ])"
echo "node_use_env_proxy=${NODE_USE_ENV_PROXY:-}"
echo "url_gateway_set=$(yn [ -n "${LANYARD_URL_GATEWAY:-}" ])"
echo "ca_exists=$(yn [ -s "${LANYARD_CA_FILE:-/nonexistent}" ])"
echo "state_mode=$(stat -c %a "${LANYARD_STATE_DIR:-/nonexistent}" 2>/dev/null)"
for v in LANYARD_ID_TOKEN BITBUCKET_STEP_OIDC_TOKEN CIRCLE_OIDC_TOKEN_V2; do
  eval "val=\${$v:-}"
  [ -n "$val" ] && echo "identity_var_$v=present"
done
exit 0
