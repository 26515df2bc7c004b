//! Tyk (against the strict peer agent/tests/peers/tyk.py; the real gateway
//! could not be built here: agent/tests/peers/README.md says why): the
//! management API with the gateway secret from OpenBao KV, a JWT-protected
//! API with the passthrough CI token, and doctor's kid warning and
//! explanations of Tyk's refusals.

mod common;

use common::tyk::{jwt_api, Tyk};
use common::*;
use serde_json::json;

const SECRET: &str = "tyk-gateway-secret-canary-3c9d51";

fn policies() -> serde_json::Value {
    json!({"ci": {"id": "ci", "quota_max": -1, "access_rights": {
        "ci-api": {"api_id": "ci-api", "versions": ["Default"],
                   "allowed_urls": [{"url": "^/deploy/status$", "methods": ["GET"]}]},
        "skip-api": {"api_id": "skip-api", "versions": ["Default"]}}}})
}

fn config(bao: &Bao, tyk: &Tyk, api_file: &str) -> String {
    format!(
        r#"[identity]
source = "env"
variable = "LANYARD_TEST_TOKEN"

[[credential]]
name = "vault"
exchange = "vault"
address = "{bao}"
role = "ci"

[[credential]]
name = "tyk-secret"
from = "vault"
secret = "secret/data/ci/stripe#api_key"

[[credential]]
name = "ci-jwt"
exchange = "passthrough"

[[route]]
name = "tyk_admin"
url = "{tyk}/tyk/"
credential = "tyk-secret"
header = "x-tyk-authorization"
format = "{{token}}"

[[route]]
name = "tyk_api"
url = "{tyk}/ci/"
credential = "ci-jwt"
read_only = true
tyk_api = "{api_file}"
"#,
        bao = bao.addr,
        tyk = tyk.url,
    )
}

struct Setup {
    iss: Issuer,
    _bao: Bao,
    tyk: Tyk,
    dir: tempfile::TempDir,
    token: String,
}

fn setup(extra: serde_json::Value) -> Setup {
    let iss = Issuer::start();
    let bao = Bao::start();
    bao.setup_jwt(&iss.url, "60s", "120s", SECRET);
    let jwks = format!("{}/jwks.json", iss.url);
    let tyk = Tyk::start(
        SECRET,
        &[jwt_api("ci-api", "/ci/", &jwks, extra)],
        policies(),
    );
    let token = iss.mint("github", BAO_AUDIENCE, 600, json!({}));
    let dir = tempfile::tempdir().expect("tmp");
    let api = tyk.api_file("ci-api").display().to_string();
    write_config(dir.path(), &config(&bao, &tyk, &api));
    Setup {
        iss,
        _bao: bao,
        tyk,
        dir,
        token,
    }
}

impl Setup {
    fn cfg(&self) -> String {
        self.dir.path().join("lanyard.toml").display().to_string()
    }
    fn run(&self, script: &str) -> (i32, String, String) {
        lanyard(
            &["run", "--config", &self.cfg(), "--", "sh", "-c", script],
            &[("LANYARD_TEST_TOKEN", &self.token)],
        )
    }
    fn doctor(&self, url: &str) -> (i32, String, String) {
        lanyard(
            &["doctor", "--config", &self.cfg(), "--url", url, "--probe"],
            &[("LANYARD_TEST_TOKEN", &self.token)],
        )
    }
}

#[test]
fn the_management_api_gets_the_gateway_secret_from_openbao_and_the_job_never_sees_it() {
    let s = setup(json!({}));
    // Without lanyard, Tyk refuses the management API.
    let (code, out) = curl("GET", &format!("{}/tyk/apis", s.tyk.url), &[], None);
    assert_eq!(code, 403, "{out}");
    let (code, out, err) = s.run(
        r#"set -e
env | grep -c tyk-gateway-secret || true
curl -sS -w ' %{http_code}\n' "$LANYARD_URL_TYK_ADMIN/apis"
curl -sS -w ' %{http_code}\n' -X POST -H 'content-type: application/json' \
  -d '{"access_rights": {"ci-api": {"api_id": "ci-api"}}, "quota_max": 10}' "$LANYARD_URL_TYK_ADMIN/keys""#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "0",
        "the secret is in the child's environment: {out}"
    );
    assert!(
        lines[1].contains("\"api_id\": \"ci-api\"") && lines[1].ends_with(" 200"),
        "{out}"
    );
    assert!(
        lines[2].contains("\"action\": \"added\"") && lines[2].ends_with(" 200"),
        "{out}"
    );
    assert_absent(&[&out, &err], SECRET, "the Tyk gateway secret");
}

#[test]
fn a_passthrough_jwt_reaches_the_allowed_path_and_doctor_explains_the_403_and_warns_about_kid() {
    let s = setup(json!({}));
    let (code, out, err) = s.run(
        r#"curl -sS -w ' %{http_code}\n' "$LANYARD_URL_TYK_API/deploy/status"
curl -sS -w ' %{http_code}\n' "$LANYARD_URL_TYK_API/deploy/secrets""#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with(" 200"), "{out}");
    assert!(
        lines[1].contains("Access to this resource has been disallowed")
            && lines[1].ends_with(" 403"),
        "{out}"
    );
    assert_absent(&[&out, &err], &s.token, "the CI token");

    // Doctor: the kid warning (the API does not skip it), and the 403 explained.
    let (code, out, err) = s.doctor(&format!("{}/ci/deploy/secrets", s.tyk.url));
    assert_eq!(code, 1, "a refused probe is a failed check:\n{out}\n{err}");
    assert!(out.contains("→ Tyk API \"ci-api\""), "{out}");
    assert!(out.contains("warning: Tyk takes the token's kid"), "{out}");
    assert!(
        out.contains("answer: 403 {\"error\": \"Access to this resource has been disallowed\"}"),
        "{out}"
    );
    assert!(
        out.contains("likely cause: the policy grants this API but not this path"),
        "{out}"
    );
    assert_absent(&[&out, &err], &s.token, "the CI token");
    let (code, out, _) = s.doctor(&format!("{}/ci/deploy/status", s.tyk.url));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("answer: 200"), "{out}");
    drop(s.iss);
}

#[test]
fn doctor_does_not_warn_when_the_api_skips_the_kid_and_names_an_identity_claim() {
    let s = setup(json!({"jwt_skip_kid": true, "jwt_identity_base_field": "sub"}));
    let (code, out, err) = s.doctor(&format!("{}/ci/deploy/status", s.tyk.url));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("warning: Tyk takes the token's kid"), "{out}");
    assert!(out.contains("session identity: claim \"sub\" = \"repo:acme/app:ref:refs/heads/main\" (the kid is skipped: jwt_skip_kid)"), "{out}");
}
