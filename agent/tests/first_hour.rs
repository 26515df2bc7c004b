//! What a pipeline author meets in the first hour with a running session:
//! `--max-lifetime` under `run`, how `status` speaks of an expired
//! credential, and routes that were configured but never used.

mod common;

use std::time::{Duration, Instant};

use common::job::Job;
use common::*;

/// `run --max-lifetime` ends CMD when the lifetime passes, as the daemon
/// does for `start`: CMD's group gets SIGTERM, lanyard says why, tears down
/// and exits 124, so a job cannot keep using routes past its lifetime.
#[test]
fn run_ends_the_command_when_the_maximum_lifetime_passes() {
    let job = Job::new("");
    let marker = job.dir.path().join("got-term");
    let m = marker.display().to_string();
    let config = job.config.display().to_string();
    let home = job.dir.path().display().to_string();
    // The command would run for a minute; it records the SIGTERM it gets.
    let script = "trap 'touch \"$M\"; exit 143' TERM; \
                  curl -sS -o /dev/null -w '%{http_code}\\n' https://127.0.0.1:$UP/v1/a; \
                  sleep 60 & wait";
    let up = job.up.port.to_string();
    let began = Instant::now();
    let (code, out, err) = lanyard(
        &[
            "run",
            "--config",
            &config,
            "--max-lifetime",
            "3s",
            "--",
            "sh",
            "-c",
            script,
        ],
        &[
            ("LANYARD_TEST_TOKEN", &job.token),
            ("UP", &up),
            ("M", &m),
            ("HOME", &home),
        ],
    );
    let took = began.elapsed();
    assert_eq!(
        code, 124,
        "exit 124 when the lifetime ended CMD\n{out}\n{err}"
    );
    assert!(
        out.contains("200"),
        "the call before the end worked: {out}\n{err}"
    );
    assert!(
        took < Duration::from_secs(30),
        "CMD ran on past its lifetime: {took:?}"
    );
    assert!(marker.exists(), "CMD was told (SIGTERM)\n{err}");
    assert!(
        err.contains("maximum lifetime (3s) passed"),
        "stderr says why CMD was ended:\n{err}"
    );
    job.assert_no_leak(&[&out, &err]);
}

/// A credential that has expired is shown as expired, with how long ago,
/// in text and in `--json` (before: "expires in 0s", and 0 in the JSON).
#[test]
fn status_says_how_long_ago_a_credential_expired() {
    let job = Job::new("");
    // A token of the job's that ends in 3 s and cannot be re-minted.
    let token = job
        .issuer
        .mint("github", "https://api.test", 3, serde_json::json!({}));
    let state = job.dir.path().join("state").display().to_string();
    let config = job.config.display().to_string();
    let home = job.dir.path().display().to_string();
    let env: Vec<(&str, &str)> = vec![
        ("LANYARD_TEST_TOKEN", &token),
        ("LANYARD_STATE_DIR", &state),
        ("HOME", &home),
    ];
    let (code, _, err) = lanyard(&["start", "--config", &config, "--watch-pid", "0"], &env);
    assert_eq!(code, 0, "start: {err}");
    // Poll the real condition: status reports the credential expired.
    let end = Instant::now() + Duration::from_secs(30);
    let json = loop {
        let (code, out, err) = lanyard(&["status", "--json"], &env);
        assert_eq!(code, 0, "status: {err}");
        let v = json_of(out.trim());
        if v["credentials"][0]["expired_s_ago"]
            .as_u64()
            .is_some_and(|s| s >= 1)
        {
            break v;
        }
        assert!(
            Instant::now() < end,
            "status --json never said the credential expired: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let c = &json["credentials"][0];
    assert!(
        c["expires_in_s"].is_null(),
        "no 'expires in' once expired: {c}"
    );
    let (_, text, _) = lanyard(&["status"], &env);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("gh "))
        .unwrap_or_else(|| panic!("no credential line: {text}"));
    assert!(
        line.contains("EXPIRED ") && line.contains(" ago") && !line.contains("expires in"),
        "the text says how long ago it expired: {line}"
    );
    let (code, out, err) = lanyard(&["stop"], &env);
    assert_eq!(code, 0, "stop: {out}{err}");
    job.assert_no_leak(&[&text, &out, &err, &json.to_string()]);
}

/// A route nobody used is named at teardown (`run` and `stop`), with the
/// likely cause: a client that ignores the proxy variables went around
/// lanyard, or the route is not needed.
#[test]
fn teardown_names_the_routes_that_were_never_used() {
    let job = Job::new(
        "[[route]]\nname = \"spare\"\nurl = \"https://127.0.0.1:{UP}/v2/\"\ncredential = \"gh\"\n",
    );
    let (code, out, err) = job.run("curl -sS -o /dev/null https://127.0.0.1:$UP/v1/a");
    assert_eq!(code, 0, "{out}\n{err}");
    let unused = |text: &str| -> String {
        text.lines()
            .skip_while(|l| !l.contains("configured but never used"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let u = unused(&err);
    assert!(
        u.contains("spare") && u.contains("/v2/"),
        "run names the unused route:\n{err}"
    );
    assert!(!u.contains("/v1/"), "the used route is not listed:\n{err}");
    assert!(
        u.contains("ignores") && u.contains("HTTPS_PROXY"),
        "and says why it may be:\n{err}"
    );

    // The same from `stop`, and in the GitHub step summary.
    let state = job.dir.path().join("state").display().to_string();
    let config = job.config.display().to_string();
    let home = job.dir.path().display().to_string();
    let step = job.dir.path().join("step.md");
    let s = step.display().to_string();
    let env: Vec<(&str, &str)> = vec![
        ("LANYARD_TEST_TOKEN", &job.token),
        ("LANYARD_STATE_DIR", &state),
        ("HOME", &home),
        ("GITHUB_STEP_SUMMARY", &s),
    ];
    let (code, _, err) = lanyard(&["start", "--config", &config, "--watch-pid", "0"], &env);
    assert_eq!(code, 0, "start: {err}");
    let (code, out, err) = lanyard(&["stop"], &env);
    assert_eq!(code, 0, "stop: {out}{err}");
    let u = unused(&out);
    assert!(
        u.contains("spare") && u.contains("api"),
        "stop names both unused routes:\n{out}"
    );
    let md = std::fs::read_to_string(&step).unwrap_or_default();
    assert!(
        md.contains("never used") && md.contains("spare"),
        "step summary: {md}"
    );
    job.assert_no_leak(&[&out, &err, &md]);
}

/// `doctor` says which clients go around the proxy without a word.
#[test]
fn doctor_names_the_clients_that_ignore_the_proxy_variables() {
    let job = Job::new("");
    let config = job.config.display().to_string();
    let (code, out, err) = lanyard(
        &["doctor", "--config", &config, "--no-exchange"],
        &[("LANYARD_TEST_TOKEN", &job.token)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        "NODE_USE_ENV_PROXY",
        "http.Transport",
        "https.proxyHost",
        "trust_env",
    ] {
        assert!(out.contains(want), "doctor should mention {want}:\n{out}");
    }
}

/// `doctor` masks the personal claims of the token (who triggered the
/// job) unless `--show-personal` asks for them.
#[test]
fn doctor_masks_personal_claims_unless_asked() {
    let job = Job::new("");
    let token = job.issuer.mint(
        "gitlab",
        "https://api.test",
        600,
        serde_json::json!({"user_email": "alice.personal@example.com",
            "user_login": "alice-login-x", "user_id": "4815162342", "actor": "alice-actor-x"}),
    );
    let config = job.config.display().to_string();
    let (code, out, err) = lanyard(
        &["doctor", "--config", &config, "--all-claims"],
        &[("LANYARD_TEST_TOKEN", &token)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    for personal in [
        "alice.personal@example.com",
        "alice-login-x",
        "4815162342",
        "alice-actor-x",
    ] {
        assert!(!out.contains(personal), "{personal} shown:\n{out}");
    }
    assert!(
        out.contains("user_email: (personal, masked; --show-personal shows it)"),
        "the claim is named, its value masked:\n{out}"
    );
    let (code, out, err) = lanyard(
        &[
            "doctor",
            "--config",
            &config,
            "--all-claims",
            "--show-personal",
        ],
        &[("LANYARD_TEST_TOKEN", &token)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("user_email: alice.personal@example.com"),
        "{out}"
    );
}

/// A routed host that the job's `NO_PROXY` covers would be a silent
/// bypass (lanyard keeps the job's entries in the exported `NO_PROXY`, so
/// a client dials that host directly, with no credential): `run`, `start`
/// and `doctor` each print one warning line naming the route and the entry.
#[test]
fn a_routed_host_in_the_jobs_no_proxy_is_named() {
    let job = Job::new(
        "[[route]]\nurl = \"https://api.example.test/v1/\"\ncredential = \"gh\"\n\n\
         [[route]]\nurl = \"https://*.corp.test/\"\ncredential = \"gh\"\n",
    );
    let no_proxy = "localhost,.example.test,build.corp.test,other.test";
    let want = [
        "warning: route https://api.example.test/v1/ is covered by NO_PROXY entry \".example.test\"",
        "warning: route https://*.corp.test/ is covered by NO_PROXY entry \"build.corp.test\"",
    ];
    let check = |what: &str, text: &str| {
        for w in want {
            let n = text.lines().filter(|l| l.contains(w)).count();
            assert_eq!(n, 1, "{what}: one line with {w:?}:\n{text}");
        }
        for quiet in ["entry \"localhost\"", "entry \"other.test\""] {
            assert!(
                !text.contains(quiet),
                "{what}: {quiet} covers no route:\n{text}"
            );
        }
    };
    let (code, out, err) = job.run_env("true", &[("NO_PROXY", no_proxy)]);
    assert_eq!(code, 0, "{out}\n{err}");
    check("run", &err);

    let state = job.dir.path().join("state").display().to_string();
    let config = job.config.display().to_string();
    let home = job.dir.path().display().to_string();
    let env: Vec<(&str, &str)> = vec![
        ("LANYARD_TEST_TOKEN", &job.token),
        ("LANYARD_STATE_DIR", &state),
        ("HOME", &home),
        ("NO_PROXY", no_proxy),
    ];
    let (code, _, err) = lanyard(&["start", "--config", &config, "--watch-pid", "0"], &env);
    let (stop_code, stop_out, stop_err) = lanyard(&["stop"], &env);
    assert_eq!(code, 0, "start: {err}");
    assert_eq!(stop_code, 0, "stop: {stop_out}{stop_err}");
    check("start", &err);

    let (code, out, err) = lanyard(&["doctor", "--config", &config, "--no-exchange"], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    check("doctor", &out);

    // Without NO_PROXY, no warning.
    let (code, out, err) = job.run("true");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("NO_PROXY entry"), "{err}");
}

/// `doctor` prints the claims that decide trust (iss, sub, aud, the
/// times, and the platform's trust claims such as `repository`, `ref`,
/// `environment`, `job_workflow_ref`, `project_path`, `ref_protected`),
/// says how many others it hid, and shows them with `--all-claims`;
/// personal claims stay masked there unless `--show-personal`.
#[test]
fn doctor_prints_only_the_trust_claims_unless_all_claims() {
    let job = Job::new("");
    let token = job.issuer.mint(
        "github",
        "https://api.test",
        600,
        serde_json::json!({"repository": "acme/app", "ref": "refs/heads/main",
            "environment": "prod", "job_workflow_ref": "acme/app/.github/workflows/d.yml@refs/heads/main",
            "project_path": "group/app", "ref_protected": "true",
            "run_number": "run-number-noise-17", "head_ref": "head-ref-noise-x",
            "actor": "alice-actor-x"}),
    );
    let config = job.config.display().to_string();
    let doctor = |extra: &[&str]| {
        let mut args = vec!["doctor", "--config", &config];
        args.extend_from_slice(extra);
        let (code, out, err) = lanyard(&args, &[("LANYARD_TEST_TOKEN", &token)]);
        assert_eq!(code, 0, "{out}\n{err}");
        out
    };
    let trust = [
        "iss: ",
        "sub: ",
        "aud: https://api.test",
        "exp: ",
        "iat: ",
        "repository: acme/app",
        "ref: refs/heads/main",
        "environment: prod",
        "job_workflow_ref: acme/app/.github/workflows/d.yml@refs/heads/main",
        "project_path: group/app",
        "ref_protected: true",
    ];
    let out = doctor(&[]);
    for want in trust {
        assert!(
            out.contains(&format!("    {want}")),
            "missing {want:?}:\n{out}"
        );
    }
    for noise in [
        "run-number-noise-17",
        "head-ref-noise-x",
        "actor:",
        "alice-actor-x",
    ] {
        assert!(
            !out.contains(noise),
            "{noise} shown without --all-claims:\n{out}"
        );
    }
    assert!(
        out.contains(" other claims hidden (--all-claims shows them)"),
        "says what it hid:\n{out}"
    );
    let out = doctor(&["--all-claims"]);
    for want in trust.iter().copied().chain([
        "run_number: run-number-noise-17",
        "head_ref: head-ref-noise-x",
    ]) {
        assert!(out.contains(want), "--all-claims: missing {want:?}:\n{out}");
    }
    assert!(
        out.contains("actor: (personal, masked; --show-personal shows it)")
            && !out.contains("alice-actor-x"),
        "--all-claims still masks personal claims:\n{out}"
    );
    assert!(!out.contains("other claims hidden"), "{out}");
    let out = doctor(&["--all-claims", "--show-personal"]);
    assert!(out.contains("actor: alice-actor-x"), "{out}");
}
