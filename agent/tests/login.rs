//! `lanyard login` on a laptop, tried as a new user would: the real binary
//! signs in to a real OIDC provider (oidc-provider: device flow, PKCE,
//! refresh tokens, revocation), the user step is done on the provider's own
//! pages by a scripted browser, and then `lanyard run -- curl` reaches a
//! routed upstream with credentials exchanged for the developer's ID token
//! at the RFC 8693 STS peer. A CI-only route refuses and says why.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::laptop::*;
use common::*;

#[test]
fn login_then_run_curl_reaches_the_routed_upstream_as_the_developer_and_a_ci_only_route_says_why() {
    let idp = Idp::start(300);
    let (sts_proc, sts) = sts_for(&idp, 30);
    let up = Upstream::start(false);
    let laptop = Laptop::new(&idp, &sts, &up, "");

    // 1. lanyard login, device flow, the user step on the IdP's own pages.
    let (login_out, login_err) = laptop.device_login("alice");
    assert!(
        login_out.contains("logged in as alice@acme.test (sub alice) at ")
            && login_out.contains("(mode 0600)"),
        "{login_out}"
    );
    // Polling honoured the IdP's interval: it never had to say slow_down.
    assert!(
        !idp.proc.log_text().contains("slow_down"),
        "{}",
        idp.proc.log_text()
    );
    let file = laptop.token_file();
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().expect("dir")), 0o700);
    let rt = laptop.refresh_token();

    // 2. doctor says who and why a route does or does not apply.
    let deploy = format!("https://localhost:{}/v1/deploy/prod", up.port);
    let (code, doc_out, doc_err) = laptop.lanyard(
        &[
            "doctor",
            "--config",
            laptop.cfg(),
            "--url",
            &deploy,
            "--method",
            "POST",
        ],
        &[],
    );
    assert_eq!(code, 0, "stdout:\n{doc_out}\nstderr:\n{doc_err}");
    for want in [
        "identity: developer login (no CI platform detected: none of GITHUB_ACTIONS",
        "who: alice@acme.test (sub alice), issuer http://127.0.0.1:",
        "ID token: verified by lanyard (signature by the IdP's JWKS, iss, aud = lanyard-cli, exp, nonce); expires ",
        &format!("verdict: 403, x-lanyard-rule: route https://localhost:{}/v1/deploy/ is for CI identities only; this session uses a developer login (lanyard login as alice@acme.test (sub alice))", up.port),
        "(every method; CI identities only) — does not apply to this session",
        "gateway: RFC 8693 token exchange",
        "ok: lifetime 30s",
        "result: ok",
    ] {
        assert!(doc_out.contains(want), "doctor lacks {want:?}:\n{doc_out}");
    }

    // 3. lanyard run -- curl: the developer's identity reaches the upstream.
    let charges = format!("https://localhost:{}/v1/charges", up.port);
    let script = format!(
        "curl -fsS {charges} && echo && curl -sS -o /dev/null -w 'deploy=%{{http_code}}\\n' -D - -X POST {deploy} && env"
    );
    let (code, run_out, run_err) = laptop.lanyard(
        &["run", "--config", laptop.cfg(), "--", "sh", "-c", &script],
        &[],
    );
    assert_eq!(code, 0, "stdout:\n{run_out}\nstderr:\n{run_err}");
    assert!(run_out.contains(r#""path": "/v1/charges""#), "{run_out}");
    assert!(run_out.contains("deploy=403"), "{run_out}");
    assert!(
        run_out.contains(&format!("x-lanyard-rule: route https://localhost:{}/v1/deploy/ is for CI identities only; this session uses a developer login (lanyard login as alice@acme.test (sub alice))", up.port)),
        "{run_out}"
    );
    let recs = up.records();
    assert_eq!(
        recs.len(),
        1,
        "only the allowed call reaches the upstream: {recs:?}"
    );
    let auth = header_values(&recs[0], "authorization");
    assert_eq!(auth.len(), 1, "{auth:?}");
    let bearer = auth[0].strip_prefix("Bearer ").expect("bearer");
    // The STS issued it for the developer (its log names the email).
    assert!(
        sts_proc.log_text().contains(
            "token-exchange ok (developer): client=lanyard-public sub=alice email=alice@acme.test"
        ),
        "{}",
        sts_proc.log_text()
    );

    // 4. Nothing secret in any output or in the child's environment.
    for (what, secret) in [("refresh token", rt.as_str()), ("exchanged token", bearer)] {
        assert_absent(
            &[
                &login_out, &login_err, &doc_out, &doc_err, &run_out, &run_err,
            ],
            secret,
            what,
        );
    }
    assert!(
        !run_out.contains("eyJ"),
        "a JWT reached the child or its output:\n{run_out}"
    );

    // 5. A token file others can read is refused, and run does not start.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, out, err) = laptop.lanyard(&["run", "--config", laptop.cfg(), "--", "true"], &[]);
    assert_eq!(code, 125, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("is readable or writable by group or others (mode 0644)"),
        "{err}"
    );
    assert_absent(&[&out, &err], &rt, "refresh token");
}

#[test]
fn pkce_login_in_a_browser_then_logout_revokes_at_the_idp() {
    let idp = Idp::start(300);
    let (_sts_proc, sts) = sts_for(&idp, 30);
    let up = Upstream::start(false);
    let laptop = Laptop::new(&idp, &sts, &up, "");
    let browser_cmd = sts_dir().join("browser.mjs");
    let (code, out, err) = laptop.lanyard(
        &["login", "--config", laptop.cfg(), "--flow", "pkce"],
        &[
            ("LANYARD_BROWSER", browser_cmd.to_str().expect("utf8")),
            ("BROWSER_LOGIN", "bob"),
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("logged in as bob@acme.test (sub bob)"),
        "{out}"
    );
    assert!(err.contains("code_challenge_method=S256"), "{err}");
    assert!(
        err.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "a loopback redirect on an ephemeral port: {err}"
    );
    assert_eq!(idp.stats()["code"], 1);
    let rt = laptop.refresh_token();
    assert_absent(&[&out, &err], &rt, "refresh token");

    // The login works for run.
    let (code, o, e) = laptop.lanyard(
        &[
            "run",
            "--config",
            laptop.cfg(),
            "--",
            "curl",
            "-fsS",
            &format!("https://localhost:{}/v1/whoami", up.port),
        ],
        &[],
    );
    assert_eq!(code, 0, "stdout:\n{o}\nstderr:\n{e}");
    // run refreshed once (a fresh ID token) and rotated the stored token.
    let rotated = laptop.refresh_token();
    assert_ne!(
        rotated, rt,
        "the IdP rotates refresh tokens; the file must follow"
    );

    // logout: revoked at the IdP, file gone; idempotent.
    let file = laptop.token_file();
    let (code, out, err) = laptop.lanyard(&["logout", "--config", laptop.cfg()], &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("refresh token revoked at the IdP"), "{out}");
    assert!(!file.exists());
    assert_eq!(idp.stats()["revoked"], 1);
    let (status, body) = idp.refresh(&rotated);
    assert_eq!(status, 400, "a revoked refresh token must not work: {body}");
    assert!(body.contains("invalid_grant"), "{body}");
    assert_absent(&[&out, &err], &rotated, "refresh token");
    let (code, out, _) = laptop.lanyard(&["logout", "--config", laptop.cfg()], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("not logged in"), "{out}");
    // And run now says what to do.
    let (code, _, err) = laptop.lanyard(&["run", "--config", laptop.cfg(), "--", "true"], &[]);
    assert_eq!(code, 125);
    assert!(err.contains("run `lanyard login`"), "{err}");
}

#[test]
fn the_id_token_is_refreshed_during_a_long_command() {
    // 4-second ID tokens and 2-second credentials: a 10-second command
    // outlives several of each.
    let idp = Idp::start(4);
    let (sts_proc, sts) = sts_for(&idp, 2);
    let up = Upstream::start(false);
    let laptop = Laptop::new(&idp, &sts, &up, "");
    laptop.device_login("alice");
    let before = idp.stats()["refresh"].as_u64().unwrap_or(0);
    let rt = laptop.refresh_token();
    let url = format!("https://localhost:{}/v1/tick", up.port);
    let script = format!(
        "ok=0; for i in 1 2 3 4 5 6 7 8 9 10; do curl -fsS -o /dev/null {url} && ok=$((ok+1)); sleep 1; done; echo ok=$ok"
    );
    let (code, out, err) = laptop.lanyard(
        &["run", "--config", laptop.cfg(), "--", "sh", "-c", &script],
        &[],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("ok=10"), "every call succeeded:\n{out}\n{err}");
    let refreshes = idp.stats()["refresh"].as_u64().unwrap_or(0) - before;
    assert!(
        refreshes >= 2,
        "the ID token was refreshed during the command ({refreshes} refreshes)\n{err}"
    );
    let values: std::collections::HashSet<String> = up
        .records()
        .iter()
        .flat_map(|r| header_values(r, "authorization"))
        .collect();
    assert!(
        values.len() >= 3,
        "credentials rotated: {} values",
        values.len()
    );
    let exchanges = sts_proc
        .log_text()
        .matches("token-exchange ok (developer)")
        .count();
    assert!(
        exchanges >= 3,
        "re-exchanged with fresh ID tokens: {exchanges}"
    );
    let now_rt = laptop.refresh_token();
    assert_ne!(now_rt, rt, "rotated refresh tokens are stored");
    assert_absent(&[&out, &err], &now_rt, "refresh token");
    assert_absent(&[&out, &err], &rt, "refresh token");
}

#[test]
fn start_status_stop_on_a_laptop_name_the_developer_and_keep_ci_only_routes_closed() {
    let idp = Idp::start(300);
    let (_sts_proc, sts) = sts_for(&idp, 30);
    let up = Upstream::start(false);
    let laptop = Laptop::new(&idp, &sts, &up, "");
    laptop.device_login("carol");
    let state = laptop.home.path().join("state");
    let state_s = state.to_str().expect("utf8");
    let with_state = [("LANYARD_STATE_DIR", state_s)];
    let (code, exports, err) = laptop.lanyard(
        &["start", "--config", laptop.cfg(), "--watch-pid", "0"],
        &with_state,
    );
    assert_eq!(code, 0, "stdout:\n{exports}\nstderr:\n{err}");
    let (code, status, err) = laptop.lanyard(&["status"], &with_state);
    assert_eq!(code, 0, "{status}\n{err}");
    assert!(
        status
            .contains("identity: a developer login (lanyard login as carol@acme.test (sub carol))"),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "https://localhost:{}/v1/deploy/ → gateway (CI identities only)",
            up.port
        )),
        "{status}"
    );
    // The exported environment, as a job's later steps would use it.
    let script = format!(
        "{exports}\ncurl -fsS https://localhost:{p}/v1/a && curl -sS -o /dev/null -w 'deploy=%{{http_code}}' -X POST https://localhost:{p}/v1/deploy/x",
        p = up.port
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("deploy=403") && text.contains("/v1/a"),
        "{text}"
    );
    let (code, stop_out, stop_err) = laptop.lanyard(&["stop"], &with_state);
    assert_eq!(code, 0, "{stop_out}\n{stop_err}");
    assert!(!state.exists(), "stop removes the state folder");
    assert_absent(
        &[&exports, &status, &stop_out, &stop_err, &text],
        &laptop.refresh_token(),
        "refresh token",
    );
}

#[test]
fn a_forged_callback_with_another_state_is_ignored_and_the_real_sign_in_wins() {
    let idp = Idp::start(300);
    let (_sts_proc, sts) = sts_for(&idp, 30);
    let up = Upstream::start(false);
    let laptop = Laptop::new(&idp, &sts, &up, "");
    // A "browser" that first lets an attacker's page hit the loopback
    // callback with its own code and state, then signs in for real.
    let dir = laptop.home.path();
    let forged = dir.join("forged.status");
    let script = dir.join("browser.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nport=$(printf '%s' \"$1\" | sed -n 's/.*redirect_uri=http%3A%2F%2F127.0.0.1%3A\\([0-9]*\\).*/\\1/p')\ncurl -s -o /dev/null -w '%{{http_code}}' \"http://127.0.0.1:$port/callback?code=attacker-code&state=forged\" > {forged}\nexec node {browser} \"$1\"\n",
            forged = forged.display(),
            browser = sts_dir().join("browser.mjs").display(),
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (code, out, err) = laptop.lanyard(
        &["login", "--config", laptop.cfg(), "--flow", "pkce"],
        &[
            ("LANYARD_BROWSER", script.to_str().expect("utf8")),
            ("BROWSER_LOGIN", "dave"),
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        std::fs::read_to_string(&forged).expect("forged status"),
        "400",
        "the forged callback is refused"
    );
    assert!(
        out.contains("logged in as dave@acme.test (sub dave)"),
        "{out}"
    );
    assert!(!err.contains("attacker-code"), "{err}");
}
