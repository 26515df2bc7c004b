//! The job lifecycle as a new user meets it: `eval "$(lanyard start
//! --export sh)"`, calls through the proxy, `lanyard stop`. Real OpenBao,
//! the CI-shaped issuer standing in for GitHub, and the recording HTTPS
//! upstream, all on ephemeral loopback ports.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// How long `start` may take before the test calls it hung. A deadline for
/// a failure message, not a synchronisation: success returns at EOF.
const START_DEADLINE: Duration = Duration::from_secs(60);

struct Job {
    dir: tempfile::TempDir,
    issuer: Issuer,
    bao: Bao,
    up: Upstream,
    config: String,
    state: String,
    kv: &'static str,
}

impl Job {
    fn new() -> Job {
        let issuer = Issuer::start();
        let bao = Bao::start();
        let kv = "sk_test_lifecycle_canary_5d1f";
        bao.setup_jwt(&issuer.url, "60s", "300s", kv);
        let up = Upstream::start(false);
        let dir = tempfile::tempdir().expect("tmp");
        let text = format!(
            "[identity]\nsource = \"auto\"\naudience = \"{BAO_AUDIENCE}\"\n\n\
             [[credential]]\nname = \"vault\"\nexchange = \"vault\"\naddress = \"{addr}\"\nrole = \"ci\"\n\n\
             [[credential]]\nname = \"stripe\"\nfrom = \"vault\"\nsecret = \"secret/data/ci/stripe#api_key\"\n\n\
             [[route]]\nname = \"stripe\"\nurl = \"https://localhost:{port}/v1/\"\ncredential = \"stripe\"\n\n\
             [upstream]\nextra_ca = \"{ca}\"\n",
            addr = bao.addr,
            port = up.port,
            ca = up.ca.as_ref().expect("ca").display(),
        );
        let config = write_config(dir.path(), &text).display().to_string();
        // A folder lanyard creates itself, so `stop` must remove it too.
        let state = dir.path().join("state").display().to_string();
        Job {
            dir,
            issuer,
            bao,
            up,
            config,
            state,
            kv,
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GITHUB_ACTIONS".into(), "true".into()),
            ("ACTIONS_ID_TOKEN_REQUEST_URL".into(), self.issuer.gha_url()),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(),
                self.issuer.bearer.clone(),
            ),
            ("LANYARD_STATE_DIR".into(), self.state.clone()),
            // GitHub sets it; the audit file is kept there.
            ("RUNNER_TEMP".into(), self.dir.path().display().to_string()),
            ("HOME".into(), self.dir.path().display().to_string()),
        ]
    }

    fn lanyard(&self, args: &[&str]) -> (i32, String, String) {
        let env = self.env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        lanyard(args, &pairs)
    }

    /// OpenBao's own view: how many tokens exist besides root.
    fn live_tokens(&self) -> usize {
        let (code, list) = self.bao.api("LIST", "auth/token/accessors", None, "root");
        assert_eq!(code, 200, "{list}");
        json_of(&list)["data"]["keys"]
            .as_array()
            .map_or(0, |a| a.len())
            .saturating_sub(1)
    }
}

/// `lanyard start` with stdout and stderr as pipes, read to EOF on another
/// thread. EOF comes only when every holder of the pipes has closed them,
/// so a daemon that kept them would make this fail at the deadline.
fn start_with_pipes(job: &Job, watch: u32) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lanyard"));
    c.args([
        "start",
        "--config",
        &job.config,
        "--export",
        "sh",
        "--watch-pid",
        &watch.to_string(),
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in job.env() {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn lanyard start");
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut a, mut b) = (String::new(), String::new());
        let err_reader = std::thread::spawn(move || {
            let _ = se.read_to_string(&mut b);
            b
        });
        let _ = so.read_to_string(&mut a);
        let b = err_reader.join().unwrap_or_default();
        let _ = tx.send((a, b));
    });
    let got = rx.recv_timeout(START_DEADLINE);
    let status = child.wait().expect("wait start");
    let (out, err) = got.unwrap_or_else(|_| {
        panic!("lanyard start's stdout/stderr stayed open past {START_DEADLINE:?}: something still holds the caller's pipes")
    });
    (status.code().unwrap_or(-1), out, err)
}

/// `export NAME='value'` lines → a map (values are single-quoted by lanyard).
fn parse_exports(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.to_string(), v.replace("'\\''", "'"))
        })
        .collect()
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn start_eval_curl_stop_leaves_nothing_and_openbao_reports_the_tokens_revoked() {
    let job = Job::new();
    let (code, out, err) = start_with_pipes(&job, std::process::id());
    assert_eq!(code, 0, "start failed\nstdout:\n{out}\nstderr:\n{err}");
    let exports = parse_exports(&out);
    for k in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "https_proxy",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "LANYARD_PROXY",
        "LANYARD_CA_FILE",
        "LANYARD_URL_STRIPE",
    ] {
        assert!(exports.contains_key(k), "start did not export {k}:\n{out}");
    }
    let ca = exports["LANYARD_CA_FILE"].clone();
    assert!(
        Path::new(&ca).exists(),
        "CA bundle {ca} missing while running"
    );
    let pid: i32 = std::fs::read_to_string(Path::new(&job.state).join("pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no pid file in {}: {:?}",
                job.state,
                std::fs::read_dir(&job.state).map(|d| d
                    .filter_map(|e| e.ok().map(|e| e.file_name()))
                    .collect::<Vec<_>>())
            )
        });
    assert!(pid_alive(pid), "daemon {pid} is not running after start");
    assert_eq!(
        job.live_tokens(),
        1,
        "the daemon should hold one Vault token"
    );

    // A job's script: curl with only the exported environment.
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "--fail-with-body",
        &format!("https://localhost:{}/v1/charges", job.up.port),
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in &exports {
        curl.env(k, v);
    }
    let c = curl.output().expect("curl");
    let c_out = String::from_utf8_lossy(&c.stdout).into_owned();
    let c_err = String::from_utf8_lossy(&c.stderr).into_owned();
    assert!(c.status.success(), "curl failed: {c_out}\n{c_err}");
    let recs = job.up.records();
    assert_eq!(recs.len(), 1, "upstream records: {recs:?}");
    assert_eq!(
        header_values(&recs[0], "authorization"),
        vec![format!("Bearer {}", job.kv)],
        "the upstream must see exactly one credential header"
    );

    let (code, status_out, status_err) = job.lanyard(&["status"]);
    assert_eq!(code, 0, "status: {status_out}\n{status_err}");
    assert!(status_out.contains("stripe"), "status: {status_out}");

    let (code, stop_out, stop_err) = job.lanyard(&["stop"]);
    assert_eq!(code, 0, "stop: {stop_out}\n{stop_err}");
    assert!(
        stop_out.contains("stripe") && stop_out.contains("200"),
        "stop's summary should show the call:\n{stop_out}"
    );
    assert!(!pid_alive(pid), "daemon {pid} still running after stop");
    assert!(!Path::new(&ca).exists(), "CA bundle {ca} left after stop");
    assert!(
        !Path::new(&job.state).exists(),
        "state dir {} left after stop",
        job.state
    );
    // The token service's own word: nothing but root is left.
    assert_eq!(job.live_tokens(), 0, "OpenBao still holds a lanyard token");
    // The record of what the job did is kept, outside the state folder.
    let audit = job.dir.path().join("lanyard-audit.jsonl");
    assert!(
        stop_out.contains(&format!("audit record kept in {}", audit.display())),
        "{stop_out}"
    );
    let kept = std::fs::read_to_string(&audit).expect("the audit file is kept after stop");
    assert!(kept.contains("/v1/charges"), "{kept}");
    assert_absent(&[&kept], job.kv, "the KV secret");

    // Idempotent: a second stop exits 0 and says what it found.
    let (code, again, again_err) = job.lanyard(&["stop"]);
    assert_eq!(code, 0, "second stop: {again}\n{again_err}");
    assert!(!again.trim().is_empty() || !again_err.trim().is_empty());
    let (code, _, _) = job.lanyard(&["status"]);
    assert_eq!(code, 1, "status must say not running after stop");

    let all = [
        &out[..],
        &err,
        &c_err,
        &status_out,
        &status_err,
        &stop_out,
        &stop_err,
        &again,
    ];
    assert_absent(&all, job.kv, "the KV secret");
    assert_absent(&all, &job.issuer.bearer, "GitHub's request bearer");
    let secret = exports["LANYARD_PROXY"]
        .split_once("lanyard:")
        .and_then(|(_, r)| r.split_once('@'))
        .map(|(s, _)| s.to_string())
        .expect("proxy secret in LANYARD_PROXY");
    assert_absent(&all[1..], &secret, "the proxy secret");
}

#[test]
fn the_daemon_exits_and_revokes_when_the_watched_process_dies() {
    let job = Job::new();
    // The "job shell": a process the test kills half-way.
    let mut shell = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn stand-in shell");
    let (code, out, err) = start_with_pipes(&job, shell.id());
    assert_eq!(code, 0, "start failed\nstdout:\n{out}\nstderr:\n{err}");
    let pid: i32 = std::fs::read_to_string(Path::new(&job.state).join("pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("pid file");
    assert_eq!(job.live_tokens(), 1);
    shell.kill().expect("kill shell");
    shell.wait().expect("reap shell");
    // Poll a real condition: the daemon's exit (bounded, for the message).
    let gone = (0..600).any(|_| {
        if pid_alive(pid) {
            std::thread::sleep(Duration::from_millis(50));
            false
        } else {
            true
        }
    });
    assert!(gone, "daemon {pid} outlived the watched process by 30 s");
    assert_eq!(
        job.live_tokens(),
        0,
        "the daemon exited without revoking its Vault token"
    );
    // A stop after that finds the remains and exits 0.
    let (code, so, se) = job.lanyard(&["stop"]);
    assert_eq!(code, 0, "stop after the daemon left: {so}\n{se}");
    assert!(
        !Path::new(&job.state).exists(),
        "state dir left: {}",
        job.state
    );
}
