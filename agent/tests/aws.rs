//! `exchange = "aws-web-identity"` end to end: the real binary, the test
//! issuer as GitHub's token endpoint, and STS played by moto (real STS
//! behaviour) or by `peers/aws_sts.py` (an STS that misbehaves on purpose).
//! The keys must never show: not in output, status, audit or errors.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::aws::{assert_keys_absent, moto_with_secrets, AwsJob as Job, AwsSts, Moto};
use common::*;

const ROLE: &str = common::aws::ROLE;

#[test]
fn a_role_session_from_moto_is_served_for_its_duration_and_its_keys_never_show() {
    let moto = Moto::start();
    let job = Job::new(&moto.url, "");
    let (code, out, err) = job.start();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");

    let roles = moto.assumed_roles();
    assert_eq!(roles.len(), 1, "{roles:?}");
    assert_eq!(roles[0]["role_arn"], ROLE);
    // The default session name, from the GitHub claims.
    assert_eq!(roles[0]["session_name"], "lanyard-acme.app-4242");
    assert!(
        roles[0]["access_key_id"]
            .as_str()
            .is_some_and(|k| k.starts_with("ASIA")),
        "{roles:?}"
    );

    let st = job.status_json();
    let c = &st["credentials"][0];
    let left = c["expires_in_s"].as_u64().expect("expires_in_s");
    // DurationSeconds = 900, less the 1 s of whole-second rounding and the
    // time since the exchange.
    assert!((880..=899).contains(&left), "{st}");
    let at = c["expires_on_its_own_at"].as_str().expect("no-revoke note");
    assert!(at.ends_with('Z') && at.len() == 20, "{at}");
    // The role session, as STS named it.
    let a = &c["aws"];
    assert_eq!(
        a["assumed_role_arn"],
        "arn:aws:sts::123456789012:assumed-role/ci-deploy/lanyard-acme.app-4242",
        "{st}"
    );
    assert_eq!(a["session_name"], "lanyard-acme.app-4242", "{st}");
    assert_eq!(a["region"], "us-east-1", "{st}");
    assert_eq!(a["container_endpoint"], false, "{st}");
    assert_eq!(a["routes"], serde_json::json!([]), "{st}");
    assert_eq!(a["expires_at"].as_str().map(|e| e.len()), Some(20), "{st}");
    assert!(st.get("aws_container_endpoint").is_none(), "{st}");
    let (code, text, err) = job.lanyard(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains(&format!("(not revocable: expires on its own at {at})"))
            && text.contains("    assumed role arn:aws:sts::123456789012:assumed-role/ci-deploy/lanyard-acme.app-4242 (session lanyard-acme.app-4242), region us-east-1\n")
            && text.contains("    container-credentials endpoint: off\n"),
        "{text}"
    );

    let (code, stop, stop_err) = job.lanyard(&["stop"]);
    assert_eq!(code, 0, "{stop}\n{stop_err}");
    assert!(
        stop.contains("not revocable, expires on its own at ")
            && stop.contains("STS cannot revoke a role session's keys"),
        "{stop}"
    );
    let audit = job.audit_text();
    let status = st.to_string();
    assert_keys_absent(
        &[&out, &err, &status, &text, &stop, &stop_err, &audit],
        &roles,
    );
    assert!(
        !Path::new(&job.state).exists(),
        "the state folder outlived stop"
    );
}

#[test]
fn keys_are_re_exchanged_before_expiration_with_a_fresh_token_for_the_sts_audience() {
    // Expiration 4 s after each answer, whatever DurationSeconds says: the
    // store must go by Expiration and re-exchange before it.
    let sts = AwsSts::start("ok", &["--ttl", "4"]);
    let job = Job::new(&sts.url, "session_name = \"ci@acme\"\n");
    let (code, out, err) = job.start();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let first = job.status_json();
    assert!(
        first["credentials"][0]["expires_in_s"]
            .as_u64()
            .is_some_and(|s| s <= 4),
        "the lifetime must come from Expiration: {first}"
    );
    let end = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let st = job.status_json();
        if st["credentials"][0]["rotations"].as_u64().unwrap_or(0) >= 2 {
            break st;
        }
        assert!(Instant::now() < end, "no re-exchange within 30 s: {st}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(last["credentials"][0]["last_error"].is_null(), "{last}");
    let (code, stop, stop_err) = job.lanyard(&["stop"]);
    assert_eq!(code, 0, "{stop}\n{stop_err}");

    let reqs = sts.requests();
    assert!(reqs.len() >= 3, "{reqs:?}");
    for r in &reqs {
        assert_eq!(r["Action"], "AssumeRoleWithWebIdentity");
        assert_eq!(r["Version"], "2011-06-15");
        assert_eq!(r["RoleArn"], ROLE);
        assert_eq!(r["RoleSessionName"], "ci@acme");
        assert_eq!(r["DurationSeconds"], "900");
        assert_eq!(r["token_claims"]["aud"], "sts.amazonaws.com", "{r}");
        assert_eq!(
            r["token_claims"]["sub"],
            "repo:acme/app:ref:refs/heads/main"
        );
    }
    // A fresh GitHub token for each exchange (two tokens at start: the
    // session's identity, then the exchange's own).
    assert!(
        job.issuer.gha_requests() as usize >= reqs.len(),
        "{} GitHub tokens for {} exchanges",
        job.issuer.gha_requests(),
        reqs.len()
    );
    let (audit, status) = (job.audit_text(), last.to_string());
    assert_keys_absent(
        &[&out, &err, &status, &stop, &stop_err, &audit],
        &sts.issued(),
    );
}

/// Starts against a hostile STS and expects the start to fail closed.
fn start_fails(mode: &str, args: &[&str]) -> (AwsSts, String) {
    let sts = AwsSts::start(mode, args);
    let job = Job::new(&sts.url, "");
    let t0 = Instant::now();
    let (code, out, err) = job.start();
    assert_ne!(
        code, 0,
        "{mode}: started against a broken STS:\n{out}\n{err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(45),
        "{mode}: took {:?}",
        t0.elapsed()
    );
    for keys in sts.issued() {
        assert_keys_absent(&[&out, &err], &[keys]);
    }
    assert!(!Path::new(&job.state).join("lanyard.pid").exists());
    (sts, format!("{out}{err}"))
}

#[test]
fn sts_5xx_is_retried_to_a_bound_then_fails_closed() {
    let (sts, msg) = start_fails("5xx", &[]);
    assert_eq!(sts.requests().len(), 3, "three attempts, no more");
    assert!(
        msg.contains("failed 3 times; the last attempt:")
            && msg.contains("refused (503): ServiceUnavailable: Service is unavailable"),
        "{msg}"
    );
    let job = Job::new(&sts.url, "");
    let (code, out, _) = job.lanyard(&["doctor", "--config", &job.config]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("likely cause: STS at ")
            && out.contains("gave no usable answer in 3 attempts"),
        "{out}"
    );
    // Two 503s, then an answer: the start succeeds on the third attempt.
    let sts = AwsSts::start("5xx", &["--count", "2"]);
    let job = Job::new(&sts.url, "");
    let (code, out, err) = job.start();
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(sts.requests().len(), 3);
    let _ = job.lanyard(&["stop"]);
}

#[test]
fn garbage_truncated_and_cut_sts_answers_fail_closed_with_clear_errors() {
    let (sts, msg) = start_fails("garbage", &[]);
    assert_eq!(
        sts.requests().len(),
        1,
        "a 200 that is not XML is not retried"
    );
    assert!(
        msg.contains("answered HTTP 200 with a body that is not"),
        "{msg}"
    );

    let (sts, msg) = start_fails("truncated", &[]);
    assert_eq!(sts.requests().len(), 1);
    assert!(
        msg.contains("answered HTTP 200 with XML that ends early (truncated)"),
        "{msg}"
    );
    assert_keys_absent(&[&msg], &sts.issued());

    let (sts, msg) = start_fails("cut", &[]);
    assert_eq!(
        sts.requests().len(),
        3,
        "a cut connection is retried, to a bound"
    );
    assert!(msg.contains("failed 3 times"), "{msg}");
    assert_keys_absent(&[&msg], &sts.issued());
}

#[test]
fn a_slow_sts_attempt_is_abandoned_and_retried() {
    // The first answer would take 60 s; the attempt is given up at 10 s and
    // the second attempt is answered at once.
    let sts = AwsSts::start("slow", &["--count", "1", "--delay", "60"]);
    let job = Job::new(&sts.url, "");
    let t0 = Instant::now();
    let (code, out, err) = job.start();
    let took = t0.elapsed();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(25),
        "took {took:?}"
    );
    assert_eq!(sts.requests().len(), 2);
    let _ = job.lanyard(&["stop"]);
}

#[test]
fn sts_refusals_show_the_aws_code_and_doctor_names_the_trust_policy_condition() {
    for (mode, want) in [
        (
            "error:AccessDenied:403",
            "the role's trust policy did not accept this token",
        ),
        (
            "error:InvalidIdentityToken:400",
            "STS could not verify the token: the account needs an IAM OIDC identity provider",
        ),
        (
            "error:IDPRejectedClaim:403",
            "the role's trust policy did not accept this token",
        ),
        (
            "error:ExpiredTokenException:400",
            "the CI token had expired",
        ),
    ] {
        let sts = AwsSts::start(mode, &[]);
        let job = Job::new(&sts.url, "");
        let (code, out, err) = job.lanyard(&["doctor", "--config", &job.config]);
        assert_eq!(code, 1, "{mode}:\n{out}\n{err}");
        let code_name = mode.split(':').nth(1).expect("code");
        assert!(
            out.contains(&format!(
                "refused ({}): {code_name}: Rejected token [redacted] for {ROLE}",
                mode.rsplit(':').next().expect("status")
            )),
            "{mode}:\n{out}"
        );
        assert!(
            out.contains(&format!("likely cause: {}", want)),
            "{mode}:\n{out}"
        );
        if code_name == "AccessDenied" {
            let iss = job.issuer.url.trim_start_matches("http://").to_owned();
            for want in [
                format!("\"{iss}:aud\" = \"sts.amazonaws.com\""),
                format!("\"{iss}:sub\" matching \"repo:acme/app:ref:refs/heads/main\""),
                "GitHub: sub is \"repo:acme/app:ref:refs/heads/<branch>\"".to_owned(),
                "\"repo:acme/app:environment:<name>\"".to_owned(),
            ] {
                assert!(out.contains(&want), "missing {want:?} in:\n{out}");
            }
        }
        assert_eq!(sts.requests().len(), 1, "{mode}: a refusal is not retried");
        assert!(
            !out.contains("eyJ") && !err.contains("eyJ"),
            "{mode}: the token leaked:\n{out}\n{err}"
        );
    }
}

#[test]
fn doctor_describes_the_role_session_and_says_it_expires_on_its_own() {
    let moto = Moto::start();
    let job = Job::new(&moto.url, "");
    let (code, out, err) = job.lanyard(&["doctor", "--config", &job.config]);
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        format!("aws: AWS STS AssumeRoleWithWebIdentity at {}/ (role {ROLE}, session named from the CI claims, duration 15m, region us-east-1, audience \"sts.amazonaws.com\")", moto.url),
        "ok: lifetime 15m, fingerprint sha256:".to_owned(),
        "aws: not revoked, expires on its own at ".to_owned(),
        "    assumed role arn:aws:sts::123456789012:assumed-role/ci-deploy/lanyard-acme.app-4242 (session lanyard-acme.app-4242), region us-east-1".to_owned(),
        "    keys expire at ".to_owned(),
        "    container-credentials endpoint: off".to_owned(),
        "    routes using it: none".to_owned(),
        "result: ok".to_owned(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    assert_keys_absent(&[&out, &err], &moto.assumed_roles());
}

/// A job whose route attaches a Secrets Manager value read with the aws
/// credential for `role`; returns (code, stdout, stderr, upstream, audit).
fn run_with_secret(
    moto: &Moto,
    role: &str,
    secret: &str,
) -> (i32, String, String, Upstream, String) {
    let up = Upstream::start(false);
    let (issuer, dir, config) = secret_job(moto, role, secret, &up);
    let audit = dir.path().join("audit.jsonl");
    let script = format!("curl -fsS https://127.0.0.1:{}/v1/charges", up.port);
    let (code, out, err) = as_github(
        &issuer,
        &dir,
        &["run", "--config", &config, "--", "sh", "-c", &script],
    );
    let audit = std::fs::read_to_string(&audit).unwrap_or_default();
    (code, out, err, up, audit)
}

/// `lanyard doctor` on the same config.
fn doctor_with_secret(moto: &Moto, role: &str, secret: &str) -> (i32, String, String) {
    let up = Upstream::start(false);
    let (issuer, dir, config) = secret_job(moto, role, secret, &up);
    as_github(&issuer, &dir, &["doctor", "--config", &config])
}

/// lanyard in a GitHub job whose token endpoint is `issuer`.
fn as_github(issuer: &Issuer, home: &tempfile::TempDir, args: &[&str]) -> (i32, String, String) {
    let gha = issuer.gha_url();
    let home = home.path().display().to_string();
    lanyard(
        args,
        &[
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &issuer.bearer),
            ("HOME", &home),
        ],
    )
}

/// An issuer and a config: the aws credential for `role`, the secret read
/// with it, a route attaching the secret to `up`.
fn secret_job(
    moto: &Moto,
    role: &str,
    secret: &str,
    up: &Upstream,
) -> (Issuer, tempfile::TempDir, String) {
    let issuer = Issuer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let audit = dir.path().join("audit.jsonl");
    let text = format!(
        "[identity]\nsource = \"auto\"\n\n\
         [[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{role}\"\n\
         region = \"us-east-1\"\nsts_endpoint = \"{m}\"\nduration = \"15m\"\n\n\
         [[credential]]\nname = \"db\"\nfrom = \"aws\"\nsecret = \"{secret}\"\nsecrets_endpoint = \"{m}\"\n\n\
         [[route]]\nurl = \"https://127.0.0.1:{port}/v1/\"\ncredential = \"db\"\n\n\
         [upstream]\nextra_ca = \"{ca}\"\n\n[audit]\nfile = \"{audit}\"\n",
        m = moto.url,
        port = up.port,
        ca = up.ca.as_ref().expect("ca").display(),
        audit = audit.display(),
    );
    let config = write_config(dir.path(), &text).display().to_string();
    (issuer, dir, config)
}

#[test]
fn a_secrets_manager_field_is_read_with_signed_calls_and_attached_by_a_route() {
    let password = "db-password-canary-4b1e9f";
    let moto = moto_with_secrets(password);
    let (code, out, err, up, audit) = run_with_secret(&moto, ROLE, "ci/db#password");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let recs = up.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(
        header_values(&recs[0], "authorization"),
        [format!("Bearer {password}")]
    );
    assert_absent(&[&out, &err, &audit], password, "the secret");
    assert_keys_absent(&[&out, &err, &audit], &moto.assumed_roles());
}

#[test]
fn a_role_without_the_permission_gets_aws_own_refusal_and_the_job_does_not_start() {
    let password = "db-password-canary-4b1e9f";
    let moto = moto_with_secrets(password);
    let role = "arn:aws:iam::123456789012:role/ci-nosecrets";
    let (code, out, err, up, audit) = run_with_secret(&moto, role, "ci/db#password");
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("refused (403): AccessDenied: User: arn:aws:sts::123456789012:assumed-role/ci-nosecrets/lanyard-acme.app-4242 is not authorized to perform: secretsmanager:GetSecretValue"),
        "{err}"
    );
    assert!(up.records().is_empty(), "the job ran");
    assert_absent(&[&out, &err, &audit], password, "the secret");
    assert_keys_absent(&[&out, &err, &audit], &moto.assumed_roles());

    // doctor says which permission is missing (one unsigned call again for
    // its STS exchange).
    moto.auth_after(1);
    let (code, dout, derr) = doctor_with_secret(&moto, role, "ci/db#password");
    assert_eq!(code, 1, "{dout}\n{derr}");
    assert!(
        dout.contains("likely cause: the role's permissions policy does not allow secretsmanager:GetSecretValue on \"ci/db\""),
        "{dout}"
    );
    assert!(
        !dout.contains("trust policy"),
        "an STS hint for a Secrets Manager refusal:\n{dout}"
    );
    assert_absent(&[&dout, &derr], password, "the secret");
    assert_keys_absent(&[&dout, &derr], &moto.assumed_roles());
}

#[test]
fn moto_refuses_a_bad_signature_so_the_checks_are_on() {
    // Keys moto never issued: refused before any policy is looked at.
    let moto = moto_with_secrets("db-password-canary-4b1e9f");
    // No unsigned request left: the checks apply to the very next one.
    moto.auth_after(0);
    moto.assert_checks_on();
}
