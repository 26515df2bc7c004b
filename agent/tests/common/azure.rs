//! The Entra ID / Key Vault peer (`peers/entra.py`) and a job that uses it
//! as GitHub would, with `lanyard run`/`doctor` on the real binary.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::*;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
pub const GITHUB_SUB: &str = "repo:acme/app:ref:refs/heads/main";

pub fn azure_venv() -> PathBuf {
    need(&peers().join("azure-venv/bin/python"))
}

pub struct Entra {
    pub proc: Proc,
    pub url: String,
    /// The TLS Key Vault listener's port, with `--vault-port`.
    pub vault_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl Entra {
    /// `args` are extra peer flags (`--subject`, `--secret NAME=VALUE`, TLS).
    pub fn start(issuer: &str, args: &[&str]) -> Entra {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cmd = Command::new(python());
        cmd.arg(root().join("agent/tests/peers/entra.py"))
            .arg("--dir")
            .arg(dir.path())
            .args([
                "--issuer",
                issuer,
                "--tenant",
                TENANT,
                "--client-id",
                CLIENT_ID,
            ])
            .args(args);
        let (proc, v) = spawn_ready("entra", cmd);
        Entra {
            proc,
            url: v["url"].as_str().expect("url").to_owned(),
            vault_port: v["vault_port"].as_u64().map(|p| p as u16),
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

    /// Token requests (form fields, the assertion as its claims) and Key
    /// Vault reads, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.lines("requests.jsonl")
    }

    pub fn token_requests(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.get("grant_type").is_some())
            .collect()
    }

    /// The access tokens it issued for one resource.
    pub fn issued_for(&self, resource: &str) -> Vec<String> {
        self.lines("issued.jsonl")
            .iter()
            .filter(|v| v["resource"] == resource)
            .map(|v| v["access_token"].as_str().expect("token").to_owned())
            .collect()
    }

    /// The access tokens it issued.
    pub fn issued(&self) -> Vec<String> {
        self.lines("issued.jsonl")
            .iter()
            .map(|v| v["access_token"].as_str().expect("token").to_owned())
            .collect()
    }
}

/// A job run as GitHub with lanyard's config `text` (`{ENTRA}` is the
/// peer's URL, `{AUDIT}` the audit file).
pub struct AzureJob {
    pub dir: tempfile::TempDir,
    pub issuer: Issuer,
    pub config: String,
    pub audit: String,
}

impl AzureJob {
    pub fn new(issuer: Issuer, entra: &Entra, text: &str) -> AzureJob {
        let dir = tempfile::tempdir().expect("tmp");
        let audit = dir.path().join("audit.jsonl").display().to_string();
        let text = text
            .replace("{ENTRA}", &entra.url)
            .replace("{AUDIT}", &audit);
        let config = write_config(dir.path(), &text).display().to_string();
        AzureJob {
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

    pub fn doctor(&self) -> (i32, String, String) {
        self.lanyard(&["doctor", "--config", &self.config], &[])
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

    /// `lanyard start` (the daemon; `Drop` stops it if the test did not).
    pub fn start(&self) -> (i32, String, String) {
        self.lanyard(
            &["start", "--config", &self.config, "--watch-pid", "0"],
            &[],
        )
    }

    pub fn status_json(&self) -> Value {
        let (code, out, err) = self.lanyard(&["status", "--json"], &[]);
        assert_eq!(code, 0, "{out}\n{err}");
        json_of(out.trim())
    }
}

/// A daemon a test started is stopped even when the test fails first
/// (`stop` is idempotent).
impl Drop for AzureJob {
    fn drop(&mut self) {
        if self.dir.path().join("state/pid").exists() {
            let _ = self.lanyard(&["stop"], &[]);
        }
    }
}
