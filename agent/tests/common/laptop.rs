//! A developer's laptop for the login tests: the IdP peer
//! (`peers/sts/idp.mjs`), the token service that trusts it, and a home
//! folder with the login config.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::*;

pub fn sts_dir() -> PathBuf {
    root().join("agent/tests/peers/sts")
}

/// The developer IdP peer (`peers/sts/idp.mjs`).
pub struct Idp {
    pub proc: Proc,
    pub issuer: String,
    pub token_endpoint: String,
}

impl Idp {
    pub fn start(id_token_ttl: u64) -> Idp {
        let (proc, v) = spawn_peer(
            "idp",
            Command::new("node")
                .arg(sts_dir().join("idp.mjs"))
                .env("ID_TOKEN_TTL", id_token_ttl.to_string()),
        );
        Idp {
            issuer: v["issuer"].as_str().expect("issuer").to_owned(),
            token_endpoint: v["token_endpoint"].as_str().expect("token").to_owned(),
            proc,
        }
    }

    pub fn stats(&self) -> Value {
        let (code, out) = curl("GET", &format!("{}/test/stats", self.issuer), &[], None);
        assert_eq!(code, 200, "{out}");
        json_of(&out)
    }

    /// Use a refresh token directly, as an attacker holding it would.
    pub fn refresh(&self, refresh_token: &str) -> (u16, String) {
        curl(
            "POST",
            &self.token_endpoint,
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(&format!(
                "grant_type=refresh_token&client_id=lanyard-cli&refresh_token={refresh_token}"
            )),
        )
    }
}

/// The STS peer, also trusting the developer IdP.
pub fn sts_for(idp: &Idp, ttl: u64) -> (Proc, String) {
    let (proc, v) = spawn_peer(
        "sts",
        Command::new("node")
            .arg(sts_dir().join("server.mjs"))
            // No CI issuer in these tests; the STS only fetches its JWKS
            // for CI tokens.
            .env("SUBJECT_ISSUER", "http://127.0.0.1:9")
            .env("DEVELOPER_ISSUER", &idp.issuer)
            .env("TOKEN_TTL", ttl.to_string()),
    );
    (proc, v["issuer"].as_str().expect("issuer").to_owned())
}

pub fn spawn_peer(name: &str, cmd: &mut Command) -> (Proc, Value) {
    assert!(
        sts_dir().join("node_modules/oidc-provider").exists(),
        "test peer missing: run scripts/install-peers.sh"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join(format!("{name}.log"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut child = cmd.spawn().expect("spawn peer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let v: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{name} ready line {line:?}: {e}"));
    (Proc::adopt(name, child, log, dir), v)
}

pub struct Laptop {
    pub home: tempfile::TempDir,
    pub config: PathBuf,
}

impl Laptop {
    /// A developer's machine: its own HOME/XDG_CONFIG_HOME and a config
    /// with a route for everyone and a CI-only route on the same host.
    pub fn new(idp: &Idp, sts: &str, up: &Upstream, extra: &str) -> Laptop {
        let home = tempfile::tempdir().expect("home");
        let text = format!(
            r#"
[login]
issuer = "{iss}"
client_id = "lanyard-cli"
scopes = ["email"]

[[credential]]
name = "gateway"
exchange = "token-exchange"
token_url = "{sts}/token"
client_id = "lanyard-public"
subject_token_type = "id_token"

[[route]]
url = "https://localhost:{port}/v1/"
credential = "gateway"

[[route]]
url = "https://localhost:{port}/v1/deploy/"
credential = "gateway"
identities = ["ci"]

[upstream]
extra_ca = "{ca}"
{extra}
"#,
            iss = idp.issuer,
            port = up.port,
            ca = up.ca.as_ref().expect("https upstream").display(),
        );
        let config = write_config(home.path(), &text);
        Laptop { home, config }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        let h = self.home.path().display().to_string();
        vec![
            ("HOME", h.clone()),
            ("XDG_CONFIG_HOME", format!("{h}/.config")),
            ("LANYARD_LOG", "trace".into()),
        ]
    }

    pub fn cfg(&self) -> &str {
        self.config.to_str().expect("utf8")
    }

    pub fn lanyard(&self, args: &[&str], extra_env: &[(&str, &str)]) -> (i32, String, String) {
        let env = self.env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra_env);
        lanyard_in(Some(self.home.path()), args, &all)
    }

    pub fn token_file(&self) -> PathBuf {
        let dir = self.home.path().join(".config/lanyard");
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
            .expect("a login-*.json file")
    }

    pub fn refresh_token(&self) -> String {
        let v = json_of(&std::fs::read_to_string(self.token_file()).expect("read"));
        v["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned()
    }

    /// `lanyard login` (device flow): read the URL and code it prints,
    /// complete the user step on the provider's pages as `account`.
    pub fn device_login(&self, account: &str) -> (String, String) {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lanyard"));
        c.args(["login", "--config", self.cfg()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in self.env() {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("lanyard login");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap_or_default();
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        let (mut url, mut code) = (None, None);
        while url.is_none() || code.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("lanyard login printed no url and code");
            if let Some(u) = line.trim().strip_prefix("url:") {
                url = Some(u.trim().to_owned());
            }
            if let Some(c) = line.trim().strip_prefix("code:") {
                code = Some(c.trim().to_owned());
            }
        }
        let (url, code) = (url.expect("url"), code.expect("code"));
        browser(&url, Some(&code), account);
        let out = child.wait_with_output().expect("wait");
        let stderr = reader.join().expect("reader");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "lanyard login failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        (stdout, stderr)
    }
}

/// The scripted browser (`peers/sts/browser.mjs`) on the provider's pages.
pub fn browser(url: &str, code: Option<&str>, account: &str) {
    let mut c = Command::new("node");
    c.arg(sts_dir().join("browser.mjs")).arg(url);
    if let Some(code) = code {
        c.arg(code);
    }
    let out = c.env("BROWSER_LOGIN", account).output().expect("browser");
    assert!(
        out.status.success(),
        "browser step failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
}
