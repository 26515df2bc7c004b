//! The data-plane job used by the end-to-end tests: an issuer, a routed
//! HTTPS upstream, a second (unrouted) HTTPS host, and a config whose
//! credential is the job's own token (the canary).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::*;

/// One job: an issuer, a routed HTTPS upstream, a second (unrouted) HTTPS
/// host, and a config whose credential is the job's own token.
pub struct Job {
    pub dir: tempfile::TempDir,
    pub issuer: Issuer,
    pub up: Upstream,
    pub other: Upstream,
    /// The credential value: the canary.
    pub token: String,
    pub config: PathBuf,
    pub audit: PathBuf,
}

impl Job {
    /// `extra` is appended to the config (more routes, [proxy] keys);
    /// `{UP}` in it is the routed upstream's port.
    pub fn new(extra: &str) -> Job {
        Self::with_identity(
            "[identity]\nsource = \"env\"\nvariable = \"LANYARD_TEST_TOKEN\"\n",
            extra,
        )
    }

    pub fn with_identity(identity: &str, extra: &str) -> Job {
        let issuer = Issuer::start();
        let up = Upstream::start(false);
        let other = Upstream::start(false);
        let token = issuer.mint("github", "https://api.test", 600, json!({}));
        let dir = tempfile::tempdir().expect("tmp");
        // One bundle with both test CAs, as the upstream extra CA.
        let mut ca = std::fs::read_to_string(up.ca.as_ref().expect("ca")).expect("ca");
        ca.push_str(&std::fs::read_to_string(other.ca.as_ref().expect("ca")).expect("ca"));
        let ca_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_path, ca).expect("ca");
        let audit = dir.path().join("audit.jsonl");
        let extra = extra.replace("{UP}", &up.port.to_string());
        let text = format!(
            "{identity}\n[[credential]]\nname = \"gh\"\nexchange = \"passthrough\"\n\n\
             [[route]]\nname = \"api\"\nurl = \"https://127.0.0.1:{port}/v1/\"\ncredential = \"gh\"\n\n\
             {extra}\n\
             [upstream]\nextra_ca = \"{ca}\"\n\n[audit]\nfile = \"{audit}\"\n",
            port = up.port,
            ca = ca_path.display(),
            audit = audit.display(),
        );
        let config = write_config(dir.path(), &text);
        Job {
            dir,
            issuer,
            up,
            other,
            token,
            config,
            audit,
        }
    }

    /// `lanyard run -- sh -c SCRIPT` with only PATH, HOME and the token.
    /// `$UP` and `$OTHER` hold the two upstream ports.
    pub fn run(&self, script: &str) -> (i32, String, String) {
        self.run_env(script, &[])
    }

    pub fn run_env(&self, script: &str, env: &[(&str, &str)]) -> (i32, String, String) {
        let up = self.up.port.to_string();
        let other = self.other.port.to_string();
        let home = self.dir.path().display().to_string();
        let mut all: Vec<(&str, &str)> = vec![
            ("LANYARD_TEST_TOKEN", &self.token),
            ("UP", &up),
            ("OTHER", &other),
            ("HOME", &home),
        ];
        all.extend_from_slice(env);
        let config = self.config.display().to_string();
        lanyard(
            &["run", "--config", &config, "--", "sh", "-c", script],
            &all,
        )
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(json_of)
            .collect()
    }

    /// The promise checked after every test.
    pub fn assert_no_leak(&self, outputs: &[&str]) {
        let audit = std::fs::read_to_string(&self.audit).unwrap_or_default();
        let other = self.other.raw_records();
        let mut all: Vec<&str> = outputs.to_vec();
        all.push(&audit);
        all.push(&other);
        assert_absent(&all, &self.token, "the job's credential");
    }

    /// Requests the routed upstream received on a path.
    pub fn received(&self, path_prefix: &str) -> Vec<Value> {
        self.up
            .records()
            .into_iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(path_prefix))
            })
            .collect()
    }
}

/// The `Authorization` value the job's routes attach (`Bearer <token>`).
pub fn bearer(job: &Job) -> String {
    format!("Bearer {}", job.token)
}
