//! `lanyard doctor`, the real binary, against real peers: what a new user
//! sees, and that no secret ever appears in its output or logs.

mod common;

use common::*;
use serde_json::json;

/// An example config with only its address pointed at the local peer.
fn example(name: &str, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(root().join("examples").join(name)).expect("example");
    assert!(text.contains(from), "{name} no longer contains {from}");
    text.replace(from, to)
}

#[test]
fn doctor_on_the_github_openbao_example_shows_claims_lifetimes_and_no_secret() {
    let iss = Issuer::start();
    let bao = Bao::start();
    let kv = "sk_live_doctor_canary_4b7e11";
    bao.setup_jwt(&iss.url, "45s", "120s", kv);
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        &example(
            "github-openbao.toml",
            "https://vault.example.com",
            &bao.addr,
        ),
    );
    let gha = iss.gha_url();
    let (code, out, err) = lanyard(
        &[
            "doctor",
            "--config",
            cfg.to_str().expect("utf8"),
            "--url",
            "https://api.stripe.com/v1/charges",
        ],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &iss.bearer),
            ("LANYARD_LOG", "trace"),
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    println!("{out}");
    for want in [
        "platform: github (because GITHUB_ACTIONS=true)",
        "claims (UNVERIFIED",
        "aud: https://bao.test",
        "sub: repo:acme/app:ref:refs/heads/main",
        "repository: acme/app",
        "vault: vault JWT login at",
        "ok: lifetime 45s, renewable, fingerprint sha256:",
        "stripe: KV v2 field secret/data/ci/stripe#api_key read with \"vault\"",
        "verdict: forwarded with credential stripe in header authorization (route https://api.stripe.com/v1/)",
        "vault: revoked (vault revoke-self)",
        "result: ok",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert_absent(&[&out, &err], kv, "the KV secret");
    assert_absent(&[&out, &err], &iss.bearer, "GitHub's request bearer");
    assert!(
        !out.contains("eyJ") && !err.contains("eyJ"),
        "a JWT leaked:\n{out}\n{err}"
    );
    // Nothing token-shaped (JWT, Vault/OpenBao token) in any output.
    assert_eq!(
        lanyard::secret::redact(&out, &[]),
        out,
        "token-shaped text in stdout"
    );
    assert_eq!(
        lanyard::secret::redact(&err, &[]),
        err,
        "token-shaped text in stderr"
    );
    // Every token doctor obtained was revoked: OpenBao lists no leases left
    // for the role (the accessor list only holds the root token).
    let (code, list) = bao.api("LIST", "auth/token/accessors", None, "root");
    assert_eq!(code, 200, "{list}");
    assert_eq!(
        json_of(&list)["data"]["keys"].as_array().map(|a| a.len()),
        Some(1),
        "tokens left after doctor: {list}"
    );
}

#[test]
fn doctor_explains_a_refusal_with_the_likely_cause_and_never_the_token() {
    let iss = Issuer::start();
    let sts = Sts::start(&iss.url, 30);
    // The canary is a real, validly signed token for the wrong repository.
    let canary = iss.mint(
        "github",
        "https://sts.test",
        300,
        json!({"repository": "evil/app"}),
    );
    let secret = "client-secret-canary-d41d8c";
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[identity]\nsource = \"env\"\nvariable = \"JOB_JWT\"\n[[credential]]\nname = \"api\"\nexchange = \"token-exchange\"\ntoken_url = \"{}\"\nclient_id = \"lanyard\"\nclient_secret_env = \"STS_SECRET\"\naudience = \"https://api.test\"\n",
            sts.token_endpoint
        ),
    );
    let path = cfg.to_str().expect("utf8");
    let (code, out, err) = lanyard(
        &["doctor", "--config", path],
        &[
            ("JOB_JWT", &canary),
            ("STS_SECRET", "lanyard-secret"),
            ("LANYARD_LOG", "trace"),
        ],
    );
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(
            "refused (400): invalid_grant: subject token repository \"evil/app\" is not allowed"
        ),
        "{out}"
    );
    assert!(
        out.contains("likely cause: the token's repository claim is \"evil/app\""),
        "{out}"
    );
    assert!(out.contains("repository: evil/app"), "claims shown: {out}");
    assert_absent(&[&out, &err], &canary, "the identity token");
    let signature = canary.rsplit('.').next().expect("sig");
    assert_absent(&[&out, &err], signature, "the identity token's signature");

    // A wrong client secret: the service's reason, and not the secret.
    let good = iss.mint("github", "https://sts.test", 300, json!({}));
    let (code, out, err) = lanyard(
        &["doctor", "--config", path],
        &[
            ("JOB_JWT", &good),
            ("STS_SECRET", secret),
            ("LANYARD_LOG", "trace"),
        ],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("invalid_client"), "{out}");
    assert!(
        out.contains("likely cause: the token service did not accept the client"),
        "{out}"
    );
    assert_absent(&[&out, &err], secret, "the client secret");
    assert_absent(&[&out, &err], &good, "the identity token");
}

#[test]
fn doctor_reports_every_config_problem_at_once_and_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "[identity]\nsource = \"jenkins\"\n\n[[credential]]\nname = \"x\"\nexchange = \"vault\"\naddress = \"http://vault.example.com\"\n\n[proxy]\negress = \"maybe\"\n");
    let (code, out, err) = lanyard(&["doctor", "--config", cfg.to_str().expect("utf8")], &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("has 4 problems"), "{err}");
    for want in [
        "lanyard.toml:2:10: identity.source",
        "credential[0].address",
        "credential[0].role: exchange = \"vault\" needs `role`",
        "lanyard.toml:10:10: proxy.egress",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn doctor_without_a_platform_says_what_to_set() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "[[credential]]\nname = \"x\"\nexchange = \"passthrough\"\n",
    );
    let (code, out, _) = lanyard(&["doctor", "--config", cfg.to_str().expect("utf8")], &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("no CI platform detected") && out.contains("source = \"file\""),
        "{out}"
    );
    let (code, out, _) = lanyard(
        &[
            "doctor",
            "--config",
            cfg.to_str().expect("utf8"),
            "--no-exchange",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
}
