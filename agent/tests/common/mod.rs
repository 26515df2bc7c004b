//! Test harness: real peers (the CI-shaped issuer, the oidc-provider STS,
//! OpenBao) started on ephemeral loopback ports, stopped by PID on drop.
//! Peers are installed by `scripts/install-peers.sh`; a missing one fails
//! the test with that instruction, never skips it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

pub mod aws;
pub mod azure;
mod bao;
mod git;
pub mod google;
mod hostile;
pub mod job;
pub mod keycloak;
pub mod laptop;
pub mod netns;
pub mod port;
pub mod tinyproxy;
pub mod tyk;

// Each test binary uses some of these peers.
#[allow(unused_imports)]
pub use bao::{Bao, BAO_AUDIENCE};
#[allow(unused_imports)]
pub use git::GitServer;
#[allow(unused_imports)]
pub(crate) use hostile::start_mode_peer;
#[allow(unused_imports)]
pub use hostile::Hostile;

/// Why: the peers answer in well under a second; a bound that is reached
/// means a peer is broken, and the test says so instead of hanging.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

pub(crate) fn peers() -> PathBuf {
    root().join("target/peers")
}

pub(crate) fn need(path: &Path) -> PathBuf {
    assert!(
        path.exists(),
        "test peer missing: {} — run scripts/install-peers.sh (the README's test command does)",
        path.display()
    );
    path.to_owned()
}

pub fn python() -> PathBuf {
    need(&peers().join("venv/bin/python"))
}

pub fn bao_bin() -> PathBuf {
    need(&peers().join("bin/bao"))
}

/// A running peer; killed and reaped on drop. Its stderr goes to a log
/// file, printed when a test fails.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Take ownership of a peer started elsewhere (stopped on drop).
    pub fn adopt(name: &str, child: Child, log: PathBuf, dir: tempfile::TempDir) -> Proc {
        Proc {
            name: name.into(),
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running (not exited).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Spawn, then read the one JSON ready line from stdout.
pub(crate) fn spawn_ready(name: &str, mut cmd: Command) -> (Proc, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join(format!("{name}.log"));
    cmd.stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .stdin(Stdio::null());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let proc = Proc {
        name: name.into(),
        child,
        log,
        _dir: dir,
    };
    let line = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(l) if !l.trim().is_empty() => l,
        _ => panic!(
            "{name} did not print its ready line within {READY_TIMEOUT:?}; log:\n{}",
            proc.log_text()
        ),
    };
    let v: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{name} ready line {line:?}: {e}"));
    (proc, v)
}

/// Real curl, for test set-up and checks. Returns (status, body).
pub fn curl(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    curl_ca(None, method, url, headers, body)
}

/// [`curl`] trusting `ca` for https.
pub fn curl_ca(
    ca: Option<&Path>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut c = Command::new("curl");
    if let Some(ca) = ca {
        c.arg("--cacert").arg(ca);
    }
    c.args([
        "-sS",
        "--max-time",
        "20",
        "-X",
        method,
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        url,
    ]);
    for (k, v) in headers {
        c.args(["-H", &format!("{k}: {v}")]);
    }
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

pub fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

pub struct Issuer {
    pub proc: Proc,
    pub url: String,
    pub bearer: String,
}

impl Issuer {
    pub fn start() -> Issuer {
        let bearer = "gha-bearer-canary-7f3a9c".to_owned();
        let mut cmd = Command::new(python());
        cmd.arg(root().join("agent/tests/peers/issuer.py"))
            .args(["--gha-bearer", &bearer]);
        let (proc, v) = spawn_ready("issuer", cmd);
        Issuer {
            proc,
            url: v["issuer"].as_str().expect("issuer").to_owned(),
            bearer,
        }
    }

    pub fn mint(&self, platform: &str, aud: &str, ttl: i64, claims: Value) -> String {
        let body =
            json!({"platform": platform, "aud": aud, "ttl": ttl, "claims": claims}).to_string();
        let (code, out) = curl(
            "POST",
            &format!("{}/mint", self.url),
            &[("content-type", "application/json")],
            Some(&body),
        );
        assert_eq!(code, 200, "mint: {out}");
        json_of(&out)["token"].as_str().expect("token").to_owned()
    }

    pub fn gha_config(&self, cfg: Value) {
        let (code, out) = curl(
            "POST",
            &format!("{}/gha/config", self.url),
            &[("content-type", "application/json")],
            Some(&cfg.to_string()),
        );
        assert_eq!(code, 200, "gha/config: {out}");
    }

    pub fn gha_requests(&self) -> u64 {
        let (_, out) = curl("GET", &format!("{}/stats", self.url), &[], None);
        json_of(&out)["gha_requests"].as_u64().expect("stats")
    }

    pub fn gha_url(&self) -> String {
        format!("{}/gha/token?api-version=2.0", self.url)
    }
}

pub struct Sts {
    pub proc: Proc,
    pub issuer: String,
    pub token_endpoint: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
}

impl Sts {
    pub fn start(subject_issuer: &str, ttl_secs: u64) -> Sts {
        let mut cmd = Command::new("node");
        cmd.arg(
            need(&root().join("agent/tests/peers/sts/node_modules"))
                .parent()
                .expect("sts")
                .join("server.mjs"),
        )
        .env("SUBJECT_ISSUER", subject_issuer)
        .env("TOKEN_TTL", ttl_secs.to_string());
        let (proc, v) = spawn_ready("sts", cmd);
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("sts ready line lacks {k}"))
                .to_owned()
        };
        Sts {
            issuer: s("issuer"),
            token_endpoint: s("token_endpoint"),
            revocation_endpoint: s("revocation_endpoint"),
            introspection_endpoint: s("introspection_endpoint"),
            proc,
        }
    }

    /// RFC 7662 with the `lanyard` client: is this token active?
    pub fn active(&self, token: &str) -> bool {
        let (code, out) = curl(
            "POST",
            &self.introspection_endpoint,
            &[
                ("authorization", "Basic bGFueWFyZDpsYW55YXJkLXNlY3JldA=="),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Some(&format!("token={token}")),
        );
        assert_eq!(code, 200, "introspection: {out}");
        json_of(&out)["active"].as_bool().expect("active")
    }
}

/// A temp dir with a config file in it.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("lanyard.toml");
    std::fs::write(&p, text).expect("write config");
    p
}

/// Run the real binary with exactly this environment (plus PATH).
pub fn lanyard(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    lanyard_in(None, args, env)
}

/// [`lanyard`] in a working directory: where `run` and `start` keep the
/// audit file when neither `[audit] file` nor `$RUNNER_TEMP` names one.
pub fn lanyard_in(
    cwd: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lanyard"));
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run lanyard");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    (out.status.code().unwrap_or(-1), so, se)
}

/// Fail with the whole output when `needle` (a secret) appears anywhere.
pub fn assert_absent(haystacks: &[&str], needle: &str, what: &str) {
    assert!(needle.len() >= 8, "canary too short to mean anything");
    for h in haystacks {
        assert!(!h.contains(needle), "{what} leaked into output:\n{h}");
    }
}

/// The recording upstream (`peers/upstream.py`): HTTPS with its own test
/// CA, or plain HTTP.
pub struct Upstream {
    pub proc: Proc,
    pub port: u16,
    /// The test CA's PEM (None for plain).
    pub ca: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Upstream {
    pub fn start(plain: bool) -> Upstream {
        Self::start_on(plain, 0)
    }

    /// On a given port (0: any), with a test CA of its own.
    pub fn start_on(plain: bool, port: u16) -> Upstream {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(python());
        cmd.arg(root().join("agent/tests/peers/upstream.py"))
            .arg("--dir")
            .arg(dir.path())
            .arg("--port")
            .arg(port.to_string());
        if plain {
            cmd.arg("--plain");
        }
        let (proc, v) = spawn_ready("upstream", cmd);
        Upstream {
            proc,
            port: v["port"].as_u64().expect("port") as u16,
            ca: v["ca"].as_str().map(PathBuf::from),
            dir,
        }
    }

    /// Everything it received, in order.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("records.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(json_of)
            .collect()
    }

    /// The leaf certificate and key it serves (SAN 127.0.0.1 and localhost),
    /// for other test servers that should chain to the same test CA.
    pub fn leaf(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("leaf.pem"),
            self.dir.path().join("leaf.key"),
        )
    }

    pub fn raw_records(&self) -> String {
        std::fs::read_to_string(self.records_path()).unwrap_or_default()
    }

    /// The file each received request is appended to, as it arrives.
    pub fn records_path(&self) -> PathBuf {
        self.dir.path().join("records.jsonl")
    }
}

/// All values of one header (case-insensitive) in a recorded request.
pub fn header_values(rec: &Value, name: &str) -> Vec<String> {
    rec["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A free loopback port for servers that cannot bind port 0 and say so
/// (nginx). The tiny race is checked: the server's own start fails loudly.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Wait until something accepts on the port (a real endpoint, bounded).
pub fn wait_port(port: u16, who: &Proc) {
    let end = std::time::Instant::now() + READY_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < end,
            "{} never listened on {port}; log:\n{}",
            who.name,
            who.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Are the tests running as root (so `setpriv` can run a client as another user)?
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A non-loopback IPv4 address of this machine, for a client that must not
/// come from loopback.
pub fn non_loopback_ip() -> Option<String> {
    std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find(|a| {
                    a.parse::<std::net::Ipv4Addr>()
                        .is_ok_and(|ip| !ip.is_loopback())
                })
                .map(str::to_owned)
        })
}
