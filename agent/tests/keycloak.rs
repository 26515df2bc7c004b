//! The generic OIDC path against a real federation server: Keycloak 26.5
//! trusts the test's CI issuer (`issuer.py`) as an identity provider, and
//! `lanyard run` gets Keycloak-minted access tokens with the CI token as
//! an RFC 7523 client assertion (federated client authentication).
//! Keycloak itself is the judge of every token the upstream receives
//! (introspection with a confidential client).

mod common;

use common::keycloak::*;
use common::*;
use serde_json::json;

/// A job run as GitHub would run it: `[identity] source = "github"` with
/// the realm as the audience, a plain loopback upstream routed at `/v1/`.
struct KcJob {
    dir: tempfile::TempDir,
    issuer: Issuer,
    up: Upstream,
    config: String,
    audit: String,
}

impl KcJob {
    /// `credential` is the `[[credential]]` table, named `kc`.
    fn new(issuer: Issuer, audience: &str, credential: &str) -> KcJob {
        let up = Upstream::start(true);
        let dir = tempfile::tempdir().expect("tmp");
        let audit = dir.path().join("audit.jsonl").display().to_string();
        let text = format!(
            "[identity]\nsource = \"github\"\naudience = \"{audience}\"\n\n{credential}\n\
             [[route]]\nname = \"api\"\nurl = \"http://127.0.0.1:{port}/v1/\"\ncredential = \"kc\"\n\n\
             [audit]\nfile = \"{audit}\"\n",
            port = up.port,
        );
        let config = write_config(dir.path(), &text).display().to_string();
        KcJob {
            dir,
            issuer,
            up,
            config,
            audit,
        }
    }

    fn run(&self, script: &str, extra: &[(&str, &str)]) -> (i32, String, String) {
        let home = self.dir.path().display().to_string();
        let state = self.dir.path().join("state").display().to_string();
        let gha = self.issuer.gha_url();
        let up = self.up.port.to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &self.issuer.bearer),
            ("LANYARD_STATE_DIR", &state),
            ("HOME", &home),
            ("UP", &up),
        ];
        env.extend_from_slice(extra);
        lanyard_in(
            Some(self.dir.path()),
            &["run", "--config", &self.config, "--", "sh", "-c", script],
            &env,
        )
    }

    /// Runs [`CALL_AND_ENV`] and holds the child after its call until the
    /// test has asked Keycloak about the token the upstream received (lanyard
    /// revokes it at teardown). Returns the run's output, the token and
    /// Keycloak's verdict while the job ran.
    fn run_held(
        &self,
        kc: &Keycloak,
        realm: &Realm,
        extra: &[(&str, &str)],
    ) -> (i32, String, String, String, serde_json::Value) {
        let go = self.dir.path().join("go");
        let go_s = go.display().to_string();
        let mut env = extra.to_vec();
        env.push(("GO", &go_s));
        // Bounded: the child gives up after 60 s if the test never answers.
        let script = format!(
            "{CALL_AND_ENV}; i=0; while [ ! -e \"$GO\" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
        );
        std::thread::scope(|s| {
            let run = s.spawn(|| self.run(&script, &env));
            let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while self.up.records().is_empty() && !run.is_finished() {
                assert!(
                    std::time::Instant::now() < end,
                    "the upstream was never called"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let token = self.received_tokens().first().cloned();
            let verdict = token.as_ref().map(|t| kc.introspect(realm, t));
            std::fs::write(&go, "").expect("go");
            let (code, out, err) = run.join().expect("run");
            let token =
                token.unwrap_or_else(|| panic!("no call reached the upstream:\n{out}\n{err}"));
            (code, out, err, token, verdict.expect("verdict"))
        })
    }

    fn doctor(&self) -> (i32, String, String) {
        let home = self.dir.path().display().to_string();
        let gha = self.issuer.gha_url();
        lanyard_in(
            Some(self.dir.path()),
            &["doctor", "--config", &self.config],
            &[
                ("GITHUB_ACTIONS", "true"),
                ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &self.issuer.bearer),
                ("HOME", &home),
            ],
        )
    }

    fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }

    /// The bearer tokens the upstream received.
    fn received_tokens(&self) -> Vec<String> {
        self.up
            .records()
            .iter()
            .flat_map(|r| header_values(r, "authorization"))
            .map(|h| {
                h.strip_prefix("Bearer ")
                    .unwrap_or_else(|| panic!("not a Bearer header: {h}"))
                    .to_owned()
            })
            .collect()
    }
}

fn federated(realm: &Realm) -> String {
    format!(
        "[[credential]]\nname = \"kc\"\nexchange = \"jwt-bearer\"\nissuer = \"{}\"\n",
        realm.issuer
    )
}

/// Script: call the routed upstream, then show the child's environment.
const CALL_AND_ENV: &str = "curl -sS --fail-with-body http://127.0.0.1:$UP/v1/hello && echo && env";

#[test]
fn federated_client_assertion_gets_a_keycloak_token_that_keycloak_vouches_for() {
    let kc = keycloak();
    let issuer = Issuer::start();
    let realm = kc.realm(&issuer.url, GITHUB_SUB);
    let job = KcJob::new(issuer, &realm.issuer, &federated(&realm));
    let (code, out, err, token, v) = job.run_held(kc, &realm, &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(job.up.records().len(), 1, "{:?}", job.up.records());
    let token = &token;
    // Keycloak's own verdict while the job ran: its signature, its realm,
    // minted for the federated client whose trust matched the CI token.
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["iss"], realm.issuer.as_str(), "{v}");
    assert_eq!(v["azp"], FEDERATED_CLIENT, "{v}");
    assert_eq!(v["client_id"], FEDERATED_CLIENT, "{v}");
    assert_eq!(
        v["preferred_username"],
        format!("service-account-{FEDERATED_CLIENT}"),
        "{v}"
    );
    // Revoked at teardown: the revocation authenticates with a fresh CI
    // token as the client assertion, as the token request did.
    assert!(!err.contains("revocation FAILED"), "{err}");
    assert_eq!(kc.introspect(&realm, token)["active"], false, "not revoked");
    // The child never held it, nor the GitHub request token.
    let audit = job.audit_text();
    assert_absent(&[&out, &err, &audit], token, "the Keycloak access token");
    assert_absent(
        &[&out, &err, &audit],
        &job.issuer.bearer,
        "the GitHub request token",
    );
    assert!(!out.contains("eyJ"), "a JWT reached the child:\n{out}");
}

#[test]
fn keycloak_refusal_of_an_untrusted_subject_or_issuer_is_shown_in_its_words() {
    let kc = keycloak();
    // The federated client trusts another branch's subject.
    let issuer = Issuer::start();
    let realm = kc.realm(&issuer.url, "repo:acme/app:environment:prod");
    let job = KcJob::new(issuer, &realm.issuer, &federated(&realm));
    let (code, out, err) = job.run("echo CHILD-RAN", &[]);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        !out.contains("CHILD-RAN"),
        "the child ran without its credential:\n{out}"
    );
    assert!(
        err.contains("invalid_client")
            && err.contains("Invalid client or Invalid client credentials"),
        "Keycloak's words are missing:\n{err}"
    );
    assert!(
        err.contains(&realm.token_endpoint()) || err.contains(&realm.issuer),
        "{err}"
    );
    assert!(!err.contains("eyJ"), "a token in the error:\n{err}");
    assert_absent(
        &[&out, &err],
        &job.issuer.bearer,
        "the GitHub request token",
    );
    assert!(job.up.records().is_empty());
    // doctor names the trust that did not match: what was sent, and where
    // Keycloak keeps the other side.
    let (code, out, err) = job.doctor();
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    for want in [
        "invalid_client: Invalid client or Invalid client credentials".to_owned(),
        format!(
            "likely cause: the token service did not accept the job's token as the client's proof: it must trust issuer {:?} with subject {GITHUB_SUB:?} for this client, and expect audience [{:?}]",
            job.issuer.url, realm.issuer
        ),
        "jwt.credential.sub = that subject".to_owned(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("eyJ"), "a token in doctor's output:\n{out}");

    // A client_id in the form that is not the token's `sub` (RFC 7523 §3):
    // Keycloak finds the client from the assertion, so the config omits it.
    let issuer = Issuer::start();
    let realm = kc.realm(&issuer.url, GITHUB_SUB);
    let cred = format!("{}client_id = \"{FEDERATED_CLIENT}\"\n", federated(&realm));
    let job = KcJob::new(issuer, &realm.issuer, &cred);
    let (code, out, err) = job.run("echo CHILD-RAN", &[]);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("CHILD-RAN"), "{out}");
    assert!(
        err.contains("refused (400): invalid_client: client_id parameter does not match sub claim"),
        "{err}"
    );
    assert!(!err.contains("eyJ"), "a token in the error:\n{err}");

    // The realm trusts another issuer: the job's own tokens match no provider.
    let trusted = Issuer::start();
    let realm = kc.realm(&trusted.url, GITHUB_SUB);
    let job = KcJob::new(Issuer::start(), &realm.issuer, &federated(&realm));
    let (code, out, err) = job.run("echo CHILD-RAN", &[]);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("CHILD-RAN"), "{out}");
    assert!(
        err.contains("Invalid client or Invalid client credentials"),
        "{err}"
    );
    assert!(!err.contains("eyJ"), "a token in the error:\n{err}");
    assert!(job.up.records().is_empty());
}

#[test]
fn hostile_forged_and_expired_ci_tokens_fail_closed() {
    let kc = keycloak();
    let issuer = Issuer::start();
    let realm = kc.realm(&issuer.url, GITHUB_SUB);
    // Forged: the right iss, sub and aud, signed by another key.
    let forger = Issuer::start();
    let forged = forger.mint("github", &realm.issuer, 300, json!({"iss": issuer.url}));
    let job = KcJob::new(issuer, &realm.issuer, &federated(&realm));
    let cfg = std::fs::read_to_string(&job.config)
        .expect("config")
        .replace(
            "source = \"github\"",
            "source = \"env\"\nvariable = \"CI_TOKEN\"",
        );
    std::fs::write(&job.config, cfg).expect("config");
    let (code, out, err) = job.run("echo CHILD-RAN", &[("CI_TOKEN", &forged)]);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("CHILD-RAN"), "{out}");
    assert!(
        err.contains("invalid_client")
            && err.contains("Invalid client or Invalid client credentials"),
        "{err}"
    );
    assert_absent(&[&out, &err], &forged, "the forged token");
    assert!(job.up.records().is_empty());
    assert!(
        kc.log_text().contains("type=\"CLIENT_LOGIN_ERROR\""),
        "Keycloak did not log the refused login"
    );

    // Garbage where the CI token should be: refused before anything is sent.
    let (code, out, err) = job.run("echo CHILD-RAN", &[("CI_TOKEN", "garbage-not-a-jwt-5c2e")]);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("CHILD-RAN"), "{out}");
    assert!(
        err.contains("CI_TOKEN"),
        "the error does not name the variable:\n{err}"
    );
    assert!(job.up.records().is_empty());

    // Expired (GitHub hands out an already-expired token every time).
    let issuer = Issuer::start();
    let realm = kc.realm(&issuer.url, GITHUB_SUB);
    issuer.gha_config(json!({"ttl": -120}));
    let job = KcJob::new(issuer, &realm.issuer, &federated(&realm));
    let (code, out, err) = job.run("echo CHILD-RAN", &[]);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("CHILD-RAN"), "{out}");
    assert!(err.contains("expired"), "{err}");
    assert!(!err.contains("eyJ"), "a token in the error:\n{err}");
    assert!(job.up.records().is_empty());
}

/// `lanyard run` with `exchange`'s table for the confidential client; the
/// client secret comes from `KC_SECRET`, which the child never sees.
/// `session_bound`: Keycloak keeps a user session for the token, so its
/// introspection answers and revocation ends it. The external-to-internal
/// exchange's session is transient: introspection answers inactive for it
/// even while it is valid, so its signature is checked against the JWKS.
fn run_confidential(
    kc: &Keycloak,
    realm: &Realm,
    job: &KcJob,
    username: &str,
    session_bound: bool,
) {
    let (code, out, err, token, v) = job.run_held(kc, realm, &[("KC_SECRET", CLIENT_SECRET)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(job.up.records().len(), 1, "{:?}", job.up.records());
    let v = if session_bound {
        assert_eq!(v["active"], true, "{v}");
        // Revoked at teardown (RFC 7009 with the client's own credentials).
        assert_eq!(kc.introspect(realm, &token)["active"], false, "not revoked");
        v
    } else {
        verify_jwt(realm, &token)
    };
    assert_eq!(v["iss"], realm.issuer.as_str(), "{v}");
    assert_eq!(v["azp"], CLIENT, "{v}");
    // The user Keycloak maps the CI identity to (imported or linked).
    assert_eq!(v["preferred_username"], username, "{v}");
    let audit = job.audit_text();
    assert_absent(&[&out, &err, &audit], &token, "the Keycloak access token");
    assert_absent(&[&out, &err, &audit], CLIENT_SECRET, "the client secret");
    assert!(!out.contains("eyJ"), "a JWT reached the child:\n{out}");
}

#[test]
fn rfc8693_external_to_internal_exchange_of_the_ci_token() {
    let kc = keycloak();
    let issuer = Issuer::start();
    let realm = kc.realm(&issuer.url, GITHUB_SUB);
    let cred = format!(
        "[[credential]]\nname = \"kc\"\nexchange = \"token-exchange\"\nissuer = \"{}\"\n\
         client_id = \"{CLIENT}\"\nclient_secret_env = \"KC_SECRET\"\n\
         subject_token_type = \"access_token\"\nsubject_issuer = \"{IDP}\"\n",
        realm.issuer
    );
    let job = KcJob::new(issuer, &realm.issuer, &cred);
    // Imported on first exchange, named after the CI token's `sub`.
    run_confidential(kc, &realm, &job, GITHUB_SUB, false);
    // Keycloak validated the CI token at the issuer, not just by its shape.
    let (_, stats) = curl("GET", &format!("{}/stats", job.issuer.url), &[], None);
    assert!(
        json_of(&stats)["introspections"].as_u64() >= Some(1),
        "{stats}"
    );
}

#[test]
fn rfc7523_jwt_authorization_grant_with_the_ci_token() {
    let kc = keycloak();
    let issuer = Issuer::start();
    let realm = kc.realm(&issuer.url, GITHUB_SUB);
    let cred = format!(
        "[[credential]]\nname = \"kc\"\nexchange = \"jwt-authorization-grant\"\nissuer = \"{}\"\n\
         client_id = \"{CLIENT}\"\nclient_secret_env = \"KC_SECRET\"\n",
        realm.issuer
    );
    let job = KcJob::new(issuer, &realm.issuer, &cred);
    // No user is linked to the CI identity yet: Keycloak's words, fail closed.
    let (code, out, err) = job.run("echo CHILD-RAN", &[("KC_SECRET", CLIENT_SECRET)]);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("CHILD-RAN"), "{out}");
    assert!(
        err.contains("refused (400): invalid_grant: User not found"),
        "{err}"
    );
    assert!(!err.contains("eyJ"), "a token in the error:\n{err}");
    assert_absent(&[&out, &err], CLIENT_SECRET, "the client secret");
    assert!(job.up.records().is_empty());
    // Linked: the grant maps the CI token to that user.
    let user = kc.link_user(&realm, GITHUB_SUB);
    run_confidential(kc, &realm, &job, &user, true);
}
