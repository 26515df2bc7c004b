//! A job's environment around Google Cloud: variables left by an earlier
//! step (a credentials file from `google-github-actions/auth`, a gcloud
//! access token) would take precedence over lanyard's metadata server, so
//! `lanyard run` removes them from its command and says so, and `lanyard
//! start` warns (and `--export sh` unsets them). Real binary, real
//! google-auth, `peers/google.py`.

mod common;

use common::google::{google_venv, GcpJob, Google, GITHUB_SUB, PROVIDER, SERVICE_ACCOUNT};
use common::*;

const KEY_CANARY: &str = "stale-key-file-canary-5c2e81";
const TOKEN_CANARY: &str = "ya29.stale-gcloud-token-canary-a91f";
const OAUTH_CANARY: &str = "ya29.stale-terraform-token-canary-3be0";

fn config(port: u16) -> String {
    format!(
        "[identity]\nsource = \"auto\"\n\n\
         [[credential]]\nname = \"gcs\"\nexchange = \"gcp-workload-identity\"\nprovider = \"{PROVIDER}\"\n\
         token_url = \"{{GOOGLE}}/v1/token\"\niamcredentials_url = \"{{GOOGLE}}\"\n\
         service_account = \"{SERVICE_ACCOUNT}\"\n\n\
         [[route]]\nurl = \"http://127.0.0.1:{port}/storage/\"\ncredential = \"gcs\"\n\n\
         [audit]\nfile = \"{{AUDIT}}\"\n"
    )
}

fn job() -> (Google, GcpJob) {
    let issuer = Issuer::start();
    let google = Google::start(
        &issuer.url,
        &[
            "--service-account",
            SERVICE_ACCOUNT,
            "--subject",
            GITHUB_SUB,
            "--object",
            "ci-bucket/greeting=hello",
        ],
    );
    let job = GcpJob::new(issuer, &google, &config(google.port));
    (google, job)
}

/// A service account key file as `google-github-actions/auth` leaves one.
fn stale_key(dir: &std::path::Path) -> String {
    let path = dir.join("gha-creds-0123456789abcdef.json");
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "stale-project",
        "private_key_id": KEY_CANARY,
        "private_key": format!("-----BEGIN PRIVATE KEY-----\n{KEY_CANARY}\n-----END PRIVATE KEY-----\n"),
        "client_email": "stale@stale-project.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    std::fs::write(&path, key.to_string()).expect("key file");
    path.display().to_string()
}

const CLIENT: &str = r#"
import os, google.auth
creds, project = google.auth.default()
print("type", type(creds).__module__ + "." + type(creds).__name__)
print("project", project)
"#;

#[test]
fn run_removes_stale_google_credentials_from_the_child_and_says_so_without_values() {
    let (_google, job) = job();
    let key = stale_key(job.dir.path());
    let client = job.dir.path().join("client.py");
    std::fs::write(&client, CLIENT).expect("client");
    let env_file = job.dir.path().join("child.env");
    let script = format!(
        "env > {} && {} {}",
        env_file.display(),
        google_venv().display(),
        client.display()
    );
    let (code, out, err) = job.run(
        &["sh", "-c", &script],
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", &key),
            ("CLOUDSDK_AUTH_ACCESS_TOKEN", TOKEN_CANARY),
            ("GOOGLE_OAUTH_ACCESS_TOKEN", OAUTH_CANARY),
            ("UNRELATED_VARIABLE", "kept"),
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // google-auth found the metadata server, not the stale key file.
    assert!(
        out.contains("type google.auth.compute_engine.credentials.Credentials"),
        "{out}\n{err}"
    );
    assert!(out.contains("project acme-ci"), "{out}");
    let env = std::fs::read_to_string(&env_file).expect("child env");
    for name in [
        "GOOGLE_APPLICATION_CREDENTIALS=",
        "CLOUDSDK_AUTH_ACCESS_TOKEN=",
        "GOOGLE_OAUTH_ACCESS_TOKEN=",
    ] {
        assert!(!env.contains(name), "{name} reached the child:\n{env}");
    }
    assert!(env.contains("UNRELATED_VARIABLE=kept"), "{env}");
    // One line names what was removed and why; no value is shown.
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("GOOGLE_APPLICATION_CREDENTIALS"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    let line = said[0];
    for name in ["CLOUDSDK_AUTH_ACCESS_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN"] {
        assert!(line.contains(name), "{line}");
    }
    assert!(line.contains("removed"), "{line}");
    assert!(line.contains("metadata server"), "{line}");
    assert!(!line.contains("UNRELATED_VARIABLE"), "{line}");
    assert_absent(&[&err, &out], &key, "the key file's path");
    // At teardown, the token is said to be left to expire, and why.
    assert!(
        err.lines().any(|l| l.starts_with("lanyard: credential gcs (")
            && l.contains("not revocable, expires on its own")
            && l.contains("Google does not revoke service account or workload identity federation access tokens")),
        "{err}"
    );
    for v in [KEY_CANARY, TOKEN_CANARY, OAUTH_CANARY] {
        assert_absent(&[&err, &out, &env, &job.audit_text()], v, "a stale value");
    }
}

#[test]
fn start_warns_about_stale_google_credentials_and_the_sh_export_unsets_them() {
    let (_google, job) = job();
    let key = stale_key(job.dir.path());
    let (code, out, err) = job.lanyard(
        &[
            "start",
            "--config",
            &job.config,
            "--export",
            "sh",
            "--watch-pid",
            "0",
        ],
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", &key),
            ("CLOUDSDK_AUTH_ACCESS_TOKEN", TOKEN_CANARY),
        ],
    );
    let (stop_code, stop_out, stop_err) = job.lanyard(&["stop"], &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(stop_code, 0, "stdout:\n{stop_out}\nstderr:\n{stop_err}");
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("GOOGLE_APPLICATION_CREDENTIALS"))
        .collect();
    assert_eq!(warned.len(), 1, "{err}");
    assert!(warned[0].contains("warning"), "{err}");
    assert!(warned[0].contains("CLOUDSDK_AUTH_ACCESS_TOKEN"), "{err}");
    assert!(warned[0].contains("metadata server"), "{err}");
    // `eval "$(lanyard start --export sh)"` drops them from the shell.
    assert!(
        out.lines()
            .any(|l| l == "unset GOOGLE_APPLICATION_CREDENTIALS"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "unset CLOUDSDK_AUTH_ACCESS_TOKEN"),
        "{out}"
    );
    assert!(out.contains("export GCE_METADATA_HOST="), "{out}");
    assert_absent(&[&err, &out], &key, "the key file's path");
    assert_absent(&[&err, &out], TOKEN_CANARY, "a stale token");

    // Without them set, start says nothing about them.
    let (code, out, err) = job.lanyard(
        &[
            "start",
            "--config",
            &job.config,
            "--export",
            "sh",
            "--watch-pid",
            "0",
        ],
        &[],
    );
    let (stop_code, _, stop_err) = job.lanyard(&["stop"], &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(stop_code, 0, "{stop_err}");
    assert!(!err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
    assert!(!out.contains("unset "), "{out}");
}
