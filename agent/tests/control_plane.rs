//! The control plane against real peers: OpenBao (JWT login, renew, KV,
//! revoke), the oidc-provider STS (RFC 8693, RFC 7523, RFC 7009/7662), and
//! the CI-shaped issuer (GitHub's token endpoint over HTTP, GitLab-shaped
//! tokens). Each test starts its own peers on ephemeral ports.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use common::*;
use lanyard::config::Config;
use lanyard::env::MapEnv;
use lanyard::exchange::Revoked;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn env(pairs: &[(&str, &str)]) -> MapEnv {
    MapEnv(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    )
}

fn config(text: &str) -> Config {
    // A config must attach something; the identity-source tests below
    // only read `[identity]`, so they get a passthrough credential.
    let text = if text.contains("[[credential]]") {
        text.to_owned()
    } else {
        format!("{text}\n[[credential]]\nname = \"id\"\nexchange = \"passthrough\"\n")
    };
    Config::parse(Path::new("test.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

fn github_env(iss: &Issuer) -> MapEnv {
    env(&[
        ("GITHUB_ACTIONS", "true"),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", &iss.gha_url()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &iss.bearer),
    ])
}

fn vault_config(bao: &Bao) -> String {
    format!(
        r#"
[identity]
source = "auto"
audience = "{BAO_AUDIENCE}"

[[credential]]
name = "vault"
exchange = "vault"
address = "{}"
mount = "jwt"
role = "ci"

[[credential]]
name = "stripe"
from = "vault"
secret = "secret/data/ci/stripe#api_key"
"#,
        bao.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_login_renew_kv_read_and_revoke_against_openbao() {
    let iss = Issuer::start();
    let bao = Bao::start();
    let kv = "sk_test_kv_canary_5e1d0c";
    bao.setup_jwt(&iss.url, "30s", "120s", kv);
    let cfg = config(&vault_config(&bao));
    let ctl = lanyard::app::start(&cfg, &github_env(&iss), CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ctl.job.repository.as_deref(), Some("acme/app"));

    // Login: a working token with the role's TTL.
    let v = ctl.store.get("vault").expect("vault token");
    let life = v
        .expires_at
        .expect("lease")
        .saturating_duration_since(v.issued_at);
    // lease_duration 30 is whole seconds: counted as 29 s, since OpenBao
    // may end the token up to 1 s before `sent + 30 s`.
    assert!(
        life > Duration::from_secs(25) && life <= Duration::from_secs(29),
        "{life:?}"
    );
    assert!(v.renewable);
    let (code, out) = bao.api("GET", "auth/token/lookup-self", None, v.value.expose());
    assert_eq!(code, 200, "{out}");
    assert_eq!(json_of(&out)["data"]["meta"]["role"], "ci");

    // KV read with that token became a credential of its own.
    assert_eq!(ctl.store.get("stripe").expect("kv").value.expose(), kv);

    // Renewal: renew-self keeps the same token and resets its lease.
    let renewed = ctl
        .store
        .refresh("vault", v.generation)
        .await
        .expect("renew");
    assert_eq!(
        renewed.value.expose(),
        v.value.expose(),
        "renew-self keeps the token"
    );
    assert!(renewed.generation > v.generation);
    assert!(renewed.issued_at > v.issued_at);

    // Revocation at teardown; OpenBao itself then rejects the token.
    let reports = ctl.store.shutdown().await;
    let vault_report = reports
        .iter()
        .find(|r| r.name == "vault")
        .expect("vault report");
    assert_eq!(vault_report.outcome, Ok(Revoked::Done("vault revoke-self")));
    let (code, out) = bao.api("GET", "auth/token/lookup-self", None, v.value.expose());
    assert_eq!(code, 403, "revoked token still works: {out}");
    assert!(out.contains("permission denied"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_refuses_a_token_from_the_wrong_repository_with_its_own_words() {
    let iss = Issuer::start();
    let bao = Bao::start();
    bao.setup_jwt(&iss.url, "30s", "120s", "unused-value-123");
    iss.gha_config(json!({"claims": {"repository": "evil/app"}}));
    let cfg = config(&vault_config(&bao));
    let err = lanyard::app::start(&cfg, &github_env(&iss), CancellationToken::new())
        .await
        .expect_err("must be refused")
        .to_string();
    assert!(err.contains("credential \"vault\""), "{err}");
    assert!(err.contains("refused (400)"), "{err}");
    assert!(
        err.contains("claim \"repository\" does not match any associated bound claim values"),
        "{err}"
    );
    assert!(!err.contains("eyJ"), "a token leaked into the error: {err}");
}

fn sts_config(sts: &Sts, extra: &str) -> String {
    format!(
        r#"
[identity]
source = "env"
variable = "CI_JOB_JWT"

[[credential]]
name = "gw"
exchange = "token-exchange"
{extra}
audience = "https://api.test"
scope = "deploy"
"#
    ) + &format!("# sts {}\n", sts.issuer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8693_exchange_then_rfc7009_revocation_confirmed_by_introspection() {
    let iss = Issuer::start();
    let sts = Sts::start(&iss.url, 30);
    let subject = iss.mint(
        "gitlab",
        "https://sts.test",
        300,
        json!({"project_path": "acme/app"}),
    );
    // Discovery via `issuer` finds both the token and the revocation endpoint.
    let cfg = config(&sts_config(
        &sts,
        &format!(
            "issuer = \"{}\"\nclient_id = \"lanyard\"\nclient_secret_env = \"STS_SECRET\"",
            sts.issuer
        ),
    ));
    let e = env(&[("CI_JOB_JWT", &subject), ("STS_SECRET", "lanyard-secret")]);
    let ctl = lanyard::app::start(&cfg, &e, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tok = ctl.store.get("gw").expect("token");
    let life = tok
        .expires_at
        .expect("exp")
        .saturating_duration_since(tok.issued_at);
    // expires_in 30, in whole seconds: the STS sets exp = floor(now) + 30,
    // which may be up to 1 s before `sent + 30 s`, so lanyard counts 29 s.
    assert_eq!(life, Duration::from_secs(29));
    assert!(sts.active(tok.value.expose()), "fresh token is active");
    let reports = ctl.store.shutdown().await;
    assert_eq!(reports[0].outcome, Ok(Revoked::Done("RFC 7009 revocation")));
    assert!(
        !sts.active(tok.value.expose()),
        "revoked token is still active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_service_refusals_are_shown_with_status_and_reason() {
    let iss = Issuer::start();
    let sts = Sts::start(&iss.url, 30);
    let cfg = config(&sts_config(
        &sts,
        &format!(
            "token_url = \"{}\"\nclient_id = \"lanyard-public\"",
            sts.token_endpoint
        ),
    ));
    let cases = [
        (iss.mint("github", "https://sts.test", 300, json!({"repository": "evil/app"})), "invalid_grant: subject token repository \"evil/app\" is not allowed"),
        (iss.mint("github", "https://other.test", 300, json!({})), "invalid_grant: subject token audience \"https://other.test\" is not \"https://sts.test\""),
    ];
    for (subject, want) in cases {
        let err = lanyard::app::start(
            &cfg,
            &env(&[("CI_JOB_JWT", &subject)]),
            CancellationToken::new(),
        )
        .await
        .expect_err("refused")
        .to_string();
        assert!(err.contains("refused (400)") && err.contains(want), "{err}");
        assert_absent(&[&err], &subject, "subject token");
    }
    // An expired identity token is caught before it is sent, and says so.
    let expired = iss.mint("github", "https://sts.test", -60, json!({}));
    let err = lanyard::app::start(
        &cfg,
        &env(&[("CI_JOB_JWT", &expired)]),
        CancellationToken::new(),
    )
    .await
    .expect_err("expired")
    .to_string();
    assert!(
        err.contains("expired at") && err.contains("cannot be re-minted"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7523_client_assertion_with_the_job_token() {
    let iss = Issuer::start();
    let sts = Sts::start(&iss.url, 30);
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("token");
    let assertion = iss.mint(
        "plain",
        &sts.token_endpoint,
        300,
        json!({"iss": "lanyard-federated", "sub": "lanyard-federated"}),
    );
    std::fs::write(&token_file, &assertion).expect("write");
    let cfg = config(&format!(
        "[identity]\nsource = \"file\"\npath = \"{}\"\n[[credential]]\nname = \"azure\"\nexchange = \"jwt-bearer\"\ntoken_url = \"{}\"\nclient_id = \"lanyard-federated\"\nscope = \"api\"\n",
        token_file.display(),
        sts.token_endpoint
    ));
    let ctl = lanyard::app::start(&cfg, &env(&[]), CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tok = ctl.store.get("azure").expect("token");
    assert!(sts.active(tok.value.expose()));
    assert_ne!(tok.value.expose(), assertion);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_against_the_real_sts_never_serves_an_expired_token() {
    let iss = Issuer::start();
    let sts = Sts::start(&iss.url, 2);
    let cfg = config(&format!(
        "[identity]\nsource = \"github\"\naudience = \"https://sts.test\"\n[rotation]\nfraction = 0.5\njitter = 0.05\nretry_min = \"100ms\"\n[[credential]]\nname = \"gw\"\nexchange = \"token-exchange\"\ntoken_url = \"{}\"\nrevocation_url = \"{}\"\nclient_id = \"lanyard-post\"\nclient_secret_env = \"S\"\nclient_auth = \"post\"\n",
        sts.token_endpoint, sts.revocation_endpoint
    ));
    let mut e = github_env(&iss);
    e.0.insert("S".into(), "lanyard-secret".into());
    let ctl = std::sync::Arc::new(
        lanyard::app::start(&cfg, &e, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let mints_at_start = iss.gha_requests();

    // A reader samples the store while rotations happen; each value it is
    // handed is checked with the server's own introspection.
    let reader = {
        let ctl = ctl.clone();
        let sts_introspect = sts.introspection_endpoint.clone();
        tokio::spawn(async move {
            let mut seen = Vec::<String>::new();
            let mut checks = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let st = ctl.store.state("gw").expect("state");
                let c = ctl
                    .store
                    .get("gw")
                    .unwrap_or_else(|e| panic!("store refused a read during rotation: {e}"));
                let v = c.value.expose().to_owned();
                assert!(
                    c.expires_at.is_none_or(|t| t > Instant::now()),
                    "the store handed out an expired value (generation {})",
                    c.generation
                );
                let (code, out) = tokio::task::spawn_blocking({
                    let v = v.clone();
                    let u = sts_introspect.clone();
                    move || {
                        curl(
                            "POST",
                            &u,
                            &[("authorization", "Basic bGFueWFyZDpsYW55YXJkLXNlY3JldA==")],
                            Some(&format!("token={v}")),
                        )
                    }
                })
                .await
                .expect("join");
                assert_eq!(code, 200);
                // Why: on a loaded machine the curl that asks can start
                // after the token's own expiry; only a token that the
                // server calls inactive while it should still live is a
                // bug (regression: flaked under CI load, 2026-12-03).
                let expired_by_now = c.expires_at.is_some_and(|t| Instant::now() >= t);
                assert!(
                    json_of(&out)["active"] == true || expired_by_now,
                    "served a token the server calls inactive before its expiry (generation {})",
                    c.generation
                );
                checks += 1;
                if !seen.contains(&v) {
                    seen.push(v);
                }
                if st.rotations >= 3 && seen.len() >= 4 {
                    return (seen.len(), checks);
                }
            }
        })
    };
    let (distinct, checks) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("three rotations within 30 s")
        .expect("reader");
    assert!(
        distinct >= 4 && checks >= 4,
        "distinct {distinct}, checks {checks}"
    );
    assert!(
        iss.gha_requests() >= mints_at_start + 3,
        "GitHub token re-minted for each exchange"
    );
    let reports = ctl.store.shutdown().await;
    assert!(reports.iter().all(|r| r.outcome.is_ok()), "{reports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_re_mints_the_github_token_for_its_own_audience() {
    let iss = Issuer::start();
    let cfg = config("[identity]\nsource = \"github\"\naudience = \"https://sts.test\"\n[[credential]]\nname = \"tyk\"\nexchange = \"passthrough\"\naudience = \"https://tyk.test\"\n");
    let ctl = lanyard::app::start(&cfg, &github_env(&iss), CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let c = ctl.store.get("tyk").expect("token");
    let claims = lanyard::identity::UnverifiedClaims::decode(c.value.expose()).expect("jwt");
    assert_eq!(claims.audiences(), ["https://tyk.test"]);
    assert!(c.expires_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_source_over_http_and_a_wrong_bearer() {
    let iss = Issuer::start();
    let http = lanyard::http::HttpClient::new(
        None,
        &std::sync::Arc::new(lanyard::outbound::UpstreamProxy::none()),
    )
    .expect("client");
    let cfg = config("[identity]\nsource = \"github\"\naudience = \"https://a.test\"\n");
    let src = lanyard::identity::IdentitySource::from_config(&cfg.identity, &github_env(&iss))
        .expect("source");
    let t = src.token(&http, None).await.expect("token");
    assert_eq!(t.claims.audiences(), ["https://a.test"]);
    assert_eq!(t.claims.str("repository"), Some("acme/app"));
    let t2 = src
        .token(&http, Some("https://b.test"))
        .await
        .expect("token");
    assert_eq!(t2.claims.audiences(), ["https://b.test"]);
    assert_eq!(iss.gha_requests(), 2);

    let bad = env(&[
        ("GITHUB_ACTIONS", "true"),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", &iss.gha_url()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "wrong-bearer-canary-991"),
    ]);
    let src = lanyard::identity::IdentitySource::from_config(&cfg.identity, &bad).expect("source");
    let e = src.token(&http, None).await.expect_err("401").to_string();
    assert!(
        e.contains("HTTP 401") && e.contains("id-token: write"),
        "{e}"
    );
    assert_absent(&[&e], "wrong-bearer-canary-991", "request bearer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_is_re_read_on_every_use() {
    let iss = Issuer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("token");
    let cfg = config(&format!(
        "[identity]\nsource = \"file\"\npath = \"{}\"\n",
        p.display()
    ));
    let src =
        lanyard::identity::IdentitySource::from_config(&cfg.identity, &env(&[])).expect("source");
    let http = lanyard::http::HttpClient::new(
        None,
        &std::sync::Arc::new(lanyard::outbound::UpstreamProxy::none()),
    )
    .expect("client");
    let a = iss.mint("plain", "x", 300, json!({"sub": "first"}));
    std::fs::write(&p, format!("{a}\n")).expect("write");
    assert_eq!(
        src.token(&http, None).await.expect("a").claims.str("sub"),
        Some("first")
    );
    let b = iss.mint("plain", "x", 300, json!({"sub": "second"}));
    std::fs::write(&p, &b).expect("write");
    assert_eq!(
        src.token(&http, None).await.expect("b").claims.str("sub"),
        Some("second")
    );
    std::fs::write(&p, "not a jwt").expect("write");
    let e = src
        .token(&http, None)
        .await
        .expect_err("garbage")
        .to_string();
    assert!(e.contains("not a JWT"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkite_source_runs_the_agent_with_the_documented_arguments() {
    use std::os::unix::fs::PermissionsExt;
    let iss = Issuer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let token = iss.mint(
        "plain",
        "https://sts.test",
        300,
        json!({"pipeline_slug": "deploy", "build_number": "12"}),
    );
    // Stands in for `buildkite-agent`: prints the token only for exactly the
    // documented invocation, fails loudly otherwise.
    let agent = dir.path().join("buildkite-agent");
    std::fs::write(
        &agent,
        format!("#!/bin/sh\nif [ \"$*\" = \"oidc request-token --audience https://sts.test\" ]; then echo '{token}'; else echo \"unexpected args: $*\" >&2; exit 3; fi\n"),
    )
    .expect("write");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let http = lanyard::http::HttpClient::new(
        None,
        &std::sync::Arc::new(lanyard::outbound::UpstreamProxy::none()),
    )
    .expect("client");
    let cfg = config(&format!("[identity]\nsource = \"auto\"\naudience = \"https://sts.test\"\nbuildkite_agent = \"{}\"\n", agent.display()));
    let src = lanyard::identity::IdentitySource::from_config(
        &cfg.identity,
        &env(&[("BUILDKITE", "true")]),
    )
    .expect("source");
    assert_eq!(src.platform, lanyard::identity::Platform::Buildkite);
    let t = src.token(&http, None).await.expect("token");
    assert_eq!(t.claims.str("pipeline_slug"), Some("deploy"));
    // Another audience is passed through, and the agent's failure is reported.
    let e = src
        .token(&http, Some("https://other.test"))
        .await
        .expect_err("exit 3")
        .to_string();
    assert!(
        e.contains("oidc request-token` failed")
            && e.contains("unexpected args: oidc request-token --audience https://other.test"),
        "{e}"
    );
}
