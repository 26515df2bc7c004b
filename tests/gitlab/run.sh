#!/usr/bin/env bash
# Tests for the GitLab integration (templates/lanyard.yml, .gitlab/lanyard.gitlab-ci.yml,
# .gitlab-ci.yml): structure checks, then jobs run the way GitLab Runner runs them, against
# the real lanyard binary ($LANYARD_BIN, else target/debug/lanyard; never built here), the
# CI-shaped issuer and a JWT-checking HTTPS upstream, all on ephemeral loopback ports.
# Prints PASS/FAIL lines and "gitlab: N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_yaml_python
run_helper gitlab-check "$PY" tests/gitlab/gitlab_ci.py check

if find_lanyard; then
  ensure_peers
  start_issuer
  start_upstream
  # The job runner needs PyYAML; the issuer and upstream run in the peers venv.
  run_helper gitlab-jobs "$PY" tests/gitlab/gitlab_ci.py jobs --tmp "$T"
fi

summary gitlab
