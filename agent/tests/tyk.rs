//! Tyk (against the strict peer agent/tests/peers/tyk.py; the real gateway
//! could not be built here: agent/tests/peers/README.md says why): the
//! management API with the gateway secret from OpenBao KV, a JWT-protected
//! API with the passthrough CI token, and doctor's kid warning and
//! explanations of Tyk's refusals.

mod common;

use common::tyk::{issuer_key, jwt_api, Tyk};
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
fn a_passthrough_jwt_reaches_the_allowed_path_and_doctor_explains_the_403_and_names_the_sub() {
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

    // Doctor: with a central jwt_source the session is the sub, whatever
    // the kid (Tyk v5.14.0), and the 403 explained.
    let (code, out, err) = s.doctor(&format!("{}/ci/deploy/secrets", s.tyk.url));
    assert_eq!(code, 1, "a refused probe is a failed check:\n{out}\n{err}");
    assert!(out.contains("→ Tyk API \"ci-api\""), "{out}");
    assert!(!out.contains("warning:"), "{out}");
    assert!(out.contains("session identity: claim \"sub\" = \"repo:acme/app:ref:refs/heads/main\" (the API has a central key source, so the kid only picks the JWKS key)"), "{out}");
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

/// The session each job's request became (the peer's X-Tyk-Session).
fn session_of(s: &Setup, token: &str) -> (u16, String) {
    let (code, out, err) = lanyard(
        &[
            "run",
            "--config",
            &s.cfg(),
            "--",
            "sh",
            "-c",
            r#"curl -sS -D - -o /dev/null "$LANYARD_URL_TYK_API/deploy/status""#,
        ],
        &[("LANYARD_TEST_TOKEN", token)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let status = out
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let sid = out
        .lines()
        .find_map(|l| l.strip_prefix("x-tyk-session: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    (status, sid)
}

fn md5_hex(s: &str) -> String {
    let o = std::process::Command::new(python())
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.md5(sys.argv[1].encode()).hexdigest())",
            s,
        ])
        .output()
        .expect("python");
    String::from_utf8(o.stdout).expect("utf8").trim().to_owned()
}

#[test]
fn with_a_jwt_source_each_identity_claim_is_its_own_session_whatever_the_kid() {
    let s = setup(json!({"jwt_identity_base_field": "run_id"}));
    let other = s
        .iss
        .mint("github", BAO_AUDIENCE, 600, json!({"run_id": "4343"}));
    let (c1, a) = session_of(&s, &s.token);
    let (c2, b) = session_of(&s, &other);
    assert_eq!((c1, c2), (200, 200));
    assert_eq!(a, md5_hex("4242"), "keyed by run_id");
    assert_eq!(b, md5_hex("4343"));
    let (code, out, err) = s.doctor(&format!("{}/ci/deploy/status", s.tyk.url));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "session identity: claim \"run_id\" = \"4242\" (the API has a central key source"
        ),
        "{out}"
    );
    assert!(!out.contains("warning:"), "{out}");
}

#[test]
fn without_a_jwt_source_the_kid_names_one_tyk_key_every_job_shares_and_doctor_warns() {
    let s = setup(json!({"jwt_source": ""}));
    let (kid, pem) = issuer_key(&s.iss.url);
    // No Tyk key named after the kid yet: Tyk cannot verify the token.
    let (code, _) = session_of(&s, &s.token);
    assert_eq!(code, 403);
    s.tyk.create_jwt_key(SECRET, &kid, &pem, "ci-api");
    let other = s.iss.mint(
        "github",
        BAO_AUDIENCE,
        600,
        json!({"sub": "repo:acme/other:ref:refs/heads/main", "run_id": "4343"}),
    );
    let (c1, a) = session_of(&s, &s.token);
    let (c2, b) = session_of(&s, &other);
    assert_eq!((c1, c2), (200, 200));
    assert_eq!(a, md5_hex(&kid), "keyed by the kid");
    assert_eq!(a, b, "two different jobs share one Tyk session");
    let (code, out, err) = s.doctor(&format!("{}/ci/deploy/status", s.tyk.url));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("warning: the API has no central key source (jwt_source), so Tyk v5.14.0 takes the token's kid {kid:?} as the session identity")),
        "{out}"
    );
    assert_absent(&[&out, &err], &s.token, "the CI token");
}

#[test]
fn without_a_jwt_source_and_with_skip_kid_the_sub_names_the_tyk_key() {
    let s = setup(json!({"jwt_source": "", "jwt_skip_kid": true}));
    let (_, pem) = issuer_key(&s.iss.url);
    let sub = "repo:acme/app:ref:refs/heads/main";
    s.tyk.create_jwt_key(SECRET, sub, &pem, "ci-api");
    let (code, sid) = session_of(&s, &s.token);
    assert_eq!((code, sid), (200, md5_hex(sub)));
    let (code, out, err) = s.doctor(&format!("{}/ci/deploy/status", s.tyk.url));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("warning:"), "{out}");
    assert!(out.contains(&format!("session identity: claim \"sub\" = {sub:?} (the kid is skipped: jwt_skip_kid; with no jwt_source")), "{out}");
}

#[test]
fn with_a_jwt_source_skip_kid_changes_nothing_and_doctor_does_not_warn() {
    let s = setup(json!({"jwt_skip_kid": true, "jwt_identity_base_field": "sub"}));
    let (code, out, err) = s.doctor(&format!("{}/ci/deploy/status", s.tyk.url));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("warning:"), "{out}");
    assert!(out.contains("session identity: claim \"sub\" = \"repo:acme/app:ref:refs/heads/main\" (the API has a central key source"), "{out}");
}

#[test]
fn an_sts_minted_jwt_reaches_the_api_whose_jwt_source_is_the_sts_and_the_ci_token_never_does() {
    let iss = Issuer::start();
    let sts = Sts::start(&iss.url, 120);
    // Tyk trusts only the STS's JWKS: the CI token itself is refused there.
    let jwks = format!("{}/jwt/jwks.json", sts.issuer);
    let tyk = Tyk::start(
        SECRET,
        &[jwt_api(
            "ci-api",
            "/ci/",
            &jwks,
            json!({"jwt_identity_base_field": "repository"}),
        )],
        policies(),
    );
    let token = iss.mint("github", "https://sts.test", 600, json!({}));
    let dir = tempfile::tempdir().expect("tmp");
    let api = tyk.api_file("ci-api").display().to_string();
    write_config(
        dir.path(),
        &format!(
            r#"[identity]
source = "env"
variable = "LANYARD_TEST_TOKEN"

[[credential]]
name = "gw"
exchange = "token-exchange"
token_url = "{token_url}"
client_id = "lanyard-post"
client_secret_env = "STS_SECRET"
client_auth = "post"
requested_token_type = "urn:ietf:params:oauth:token-type:jwt"
audience = "https://gateway.test"

[[route]]
name = "tyk_api"
url = "{tyk}/ci/"
credential = "gw"
read_only = true
tyk_api = "{api}"
"#,
            token_url = sts.token_endpoint,
            tyk = tyk.url,
        ),
    );
    let cfg = dir.path().join("lanyard.toml").display().to_string();
    let env = [
        ("LANYARD_TEST_TOKEN", token.as_str()),
        ("STS_SECRET", "lanyard-secret"),
    ];
    // The CI token sent straight to Tyk is refused: its key is not in the STS's JWKS.
    let (code, out) = curl(
        "GET",
        &format!("{}/ci/deploy/status", tyk.url),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(
        (code, out.as_str()),
        (403, r#"{"error": "Key not authorized"}"#)
    );
    let (code, out, err) = lanyard(
        &[
            "run",
            "--config",
            &cfg,
            "--",
            "sh",
            "-c",
            r#"env | grep -c eyJ || true
curl -sS -D - "$LANYARD_URL_TYK_API/deploy/status""#,
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.starts_with("0\n"),
        "a secret is in the child's environment: {out}"
    );
    assert!(out.contains("HTTP/1.1 200"), "{out}\n{err}");
    assert!(
        out.contains(&format!("x-tyk-session: {}", md5_hex("acme/app"))),
        "the session is the STS JWT's repository claim: {out}"
    );
    assert_absent(&[&out, &err], &token, "the CI token");
    // Doctor: who the STS JWT becomes in Tyk (the exchange is real), and a probe.
    let (code, out, err) = lanyard(
        &[
            "doctor",
            "--config",
            &cfg,
            "--url",
            &format!("{}/ci/deploy/status", tyk.url),
            "--probe",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("session identity: claim \"repository\" = \"acme/app\" (the API has a central key source"),
        "{out}"
    );
    assert!(out.contains("answer: 200"), "{out}");
    assert_absent(&[&out, &err], &token, "the CI token");
}
