//! The Port API peer (`peers/port.py`) and a job that uses it as GitHub
//! would, with `lanyard run`/`doctor` on the real binary.

use std::process::Command;

use serde_json::Value;

use super::*;

pub const CLIENT_ID: &str = "p0rtClientIdAcme42";
pub const CLIENT_SECRET: &str = "port-client-secret-canary-7d31c9";

pub struct PortPeer {
    pub proc: Proc,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl PortPeer {
    /// `args` are extra peer flags (`--ttl`, `--stale-expires`, `--garbage`, …).
    pub fn start(args: &[&str]) -> PortPeer {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cmd = Command::new(python());
        cmd.arg(root().join("agent/tests/peers/port.py"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
            .args(args);
        let (proc, v) = spawn_ready("port", cmd);
        PortPeer {
            proc,
            url: v["url"].as_str().expect("url").to_owned(),
            dir,
        }
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .map(json_of)
            .collect()
    }

    /// Every request, in order (the secret only as whether it matched).
    pub fn requests(&self) -> Vec<Value> {
        self.lines("requests.jsonl")
    }

    pub fn token_requests(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["path"] == "/v1/auth/access_token")
            .collect()
    }

    /// The distinct access tokens it issued.
    pub fn issued(&self) -> Vec<String> {
        self.lines("issued.jsonl")
            .iter()
            .map(|v| v["access_token"].as_str().expect("token").to_owned())
            .collect()
    }

    /// Entities upserted, each with the token it came with.
    pub fn entities(&self) -> Vec<Value> {
        self.lines("entities.jsonl")
    }
}

/// A job run as GitHub with lanyard's config `text` (`{PORT}` is the
/// peer's URL, `{AUDIT}` the audit file).
pub struct PortJob {
    pub dir: tempfile::TempDir,
    pub issuer: Issuer,
    pub config: String,
    pub audit: String,
}

impl PortJob {
    pub fn new(issuer: Issuer, port: &PortPeer, text: &str) -> PortJob {
        let dir = tempfile::tempdir().expect("tmp");
        let audit = dir.path().join("audit.jsonl").display().to_string();
        let text = text.replace("{PORT}", &port.url).replace("{AUDIT}", &audit);
        let config = write_config(dir.path(), &text).display().to_string();
        PortJob {
            dir,
            issuer,
            config,
            audit,
        }
    }

    pub fn lanyard(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
        let home = self.dir.path().display().to_string();
        let state = self.dir.path().join("state").display().to_string();
        let gha = self.issuer.gha_url();
        let mut env: Vec<(&str, &str)> = vec![
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &self.issuer.bearer),
            ("LANYARD_STATE_DIR", &state),
            ("HOME", &home),
        ];
        env.extend_from_slice(extra);
        lanyard_in(Some(self.dir.path()), args, &env)
    }

    pub fn doctor(&self, extra: &[(&str, &str)]) -> (i32, String, String) {
        self.lanyard(&["doctor", "--config", &self.config], extra)
    }

    pub fn run(&self, script: &str, extra: &[(&str, &str)]) -> (i32, String, String) {
        self.lanyard(
            &["run", "--config", &self.config, "--", "sh", "-c", script],
            extra,
        )
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }
}
