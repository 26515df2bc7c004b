#!/usr/bin/env bash
# Debian packages the tests and the demo need, installed only when missing
# (fresh machines, CI). Idempotent. Used by test.sh and demo.sh.
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=()
# nginx + fcgiwrap: the HTTPS git server (git http-backend) of the data-plane tests.
# dash + shellcheck: install.sh is POSIX sh, tested under dash and linted.
# tinyproxy: the corporate forward proxy of agent/tests/corporate_proxy.rs.
# `ensure-tools.sh demo`: only what scripts/demo.sh uses (curl, python3).
PAIRS="curl:curl node:nodejs npm:npm python3:python3 git:git nginx:nginx-light fcgiwrap:fcgiwrap setpriv:util-linux dash:dash shellcheck:shellcheck tinyproxy:tinyproxy"
[ "${1:-}" = demo ] && PAIRS="curl:curl python3:python3"
for pair in $PAIRS; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
# Debian's python3 ships without venv; install-peers.sh needs it.
command -v python3 >/dev/null 2>&1 && ! python3 -m venv --help >/dev/null 2>&1 && missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "ensure-tools: installing ${missing[*]} from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
