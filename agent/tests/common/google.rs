//! The Google STS / IAM Credentials / Cloud Storage peer
//! (`peers/google.py`) and a job that uses it as GitHub would, with
//! `lanyard run`/`doctor` on the real binary.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::*;

pub const PROVIDER: &str =
    "projects/123456789012/locations/global/workloadIdentityPools/ci-pool/providers/github";
pub const SERVICE_ACCOUNT: &str = "deployer@acme-ci.iam.gserviceaccount.com";
pub const GITHUB_SUB: &str = "repo:acme/app:ref:refs/heads/main";

pub fn google_venv() -> PathBuf {
    need(&peers().join("google-venv/bin/python"))
}

pub struct Google {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    /// The TLS storage listener's port, with `--storage-port`.
    pub storage_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl Google {
    /// `args` are extra peer flags (`--service-account`, `--subject`, `--deny`, …).
    pub fn start(issuer: &str, args: &[&str]) -> Google {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cmd = Command::new(python());
        cmd.arg(root().join("agent/tests/peers/google.py"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--issuer", issuer, "--provider", PROVIDER])
            .args(args);
        let (proc, v) = spawn_ready("google", cmd);
        Google {
            proc,
            url: v["url"].as_str().expect("url").to_owned(),
            port: v["port"].as_u64().expect("port") as u16,
            storage_port: v["storage_port"].as_u64().map(|p| p as u16),
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

    /// Requests at one endpoint (`sts`, `iam`, `storage`, `other`), in order.
    pub fn requests(&self, endpoint: &str) -> Vec<Value> {
        self.lines("requests.jsonl")
            .into_iter()
            .filter(|r| r["endpoint"] == endpoint)
            .collect()
    }

    /// Where it writes its request and issue logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Every token it issued (federated and service account).
    pub fn issued(&self) -> Vec<String> {
        self.lines("issued.jsonl")
            .iter()
            .map(|v| v["token"].as_str().expect("token").to_owned())
            .collect()
    }
}

/// fake-gcs-server (built from the Go module proxy by
/// scripts/install-peers.sh), plain HTTP on 127.0.0.1:`port`, in memory,
/// loaded with `objects` (`(bucket, name, value)`), answering for the
/// public host `storage.googleapis.com`. It accepts any bearer, so tests
/// put `peers/google.py`'s token-checking front before it.
pub struct FakeGcs {
    pub proc: Proc,
    pub url: String,
}

impl FakeGcs {
    pub fn start(port: u16, objects: &[(&str, &str, &str)]) -> FakeGcs {
        let bin = need(&peers().join("bin/fake-gcs-server"));
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        for (bucket, name, value) in objects {
            std::fs::create_dir_all(data.join(bucket)).expect("bucket dir");
            std::fs::write(data.join(bucket).join(name), value).expect("object");
        }
        let log = dir.path().join("fake-gcs.log");
        let child = Command::new(bin)
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port"])
            .arg(port.to_string())
            .args(["-backend", "memory", "-data"])
            .arg(&data)
            .args([
                "-public-host",
                "storage.googleapis.com",
                "-external-url",
                "https://storage.googleapis.com",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("fake-gcs.out")).expect("log"))
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start fake-gcs-server");
        let mut proc = Proc::adopt("fake-gcs-server", child, log, dir);
        wait_port(port, &proc);
        assert!(proc.alive(), "fake-gcs-server exited: {}", proc.log_text());
        FakeGcs {
            proc,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// A job run as GitHub with lanyard's config `text` (`{GOOGLE}` is the
/// peer's URL, `{AUDIT}` the audit file).
pub struct GcpJob {
    pub dir: tempfile::TempDir,
    pub issuer: Issuer,
    pub config: String,
    pub audit: String,
}

impl GcpJob {
    pub fn new(issuer: Issuer, google: &Google, text: &str) -> GcpJob {
        let dir = tempfile::tempdir().expect("tmp");
        let audit = dir.path().join("audit.jsonl").display().to_string();
        let text = text
            .replace("{GOOGLE}", &google.url)
            .replace("{AUDIT}", &audit);
        let config = write_config(dir.path(), &text).display().to_string();
        GcpJob {
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

    pub fn run(&self, argv: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
        let mut args = vec!["run", "--config", &self.config, "--"];
        args.extend_from_slice(argv);
        self.lanyard(&args, extra)
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(json_of)
            .filter(|l| l.get("decision").is_some())
            .collect()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }
}
