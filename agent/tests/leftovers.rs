//! Nothing left behind: after every way a session can end (`stop`, `run`
//! returning, SIGTERM to the daemon or to `run`, the job's shell killed with
//! SIGKILL), a sweep finds no file, socket, folder or process that lanyard
//! made, except the audit record, which is kept at its documented default
//! path and named at teardown.
//!
//! Everything a session could write goes under one temp folder (state dir,
//! `TMPDIR` for `run`'s private folder, the working directory, `HOME`), so
//! the file sweep is "every path under it, before and after"; the process
//! sweep is "every process whose command line names that folder".

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// How long a process may take to end after its signal: a deadline for the
/// failure message, not a synchronisation.
const GONE_DEADLINE: Duration = Duration::from_secs(30);
/// The documented default audit file name (in the working directory, or in
/// `$RUNNER_TEMP` on GitHub).
const AUDIT: &str = "lanyard-audit.jsonl";

struct Sandbox {
    dir: tempfile::TempDir,
    _issuer: Issuer,
    up: Upstream,
    token: String,
    config: PathBuf,
    /// Every path under `dir` before the session.
    before: BTreeSet<PathBuf>,
}

impl Sandbox {
    fn new() -> Sandbox {
        let issuer = Issuer::start();
        let up = Upstream::start(false);
        let token = issuer.mint("github", "https://api.test", 600, json!({}));
        let dir = tempfile::tempdir().expect("tmp");
        let ca = dir.path().join("upstream-ca.pem");
        std::fs::copy(up.ca.as_ref().expect("ca"), &ca).expect("ca");
        let text = format!(
            "[identity]\nsource = \"env\"\nvariable = \"LANYARD_TEST_TOKEN\"\n\n\
             [[credential]]\nname = \"gh\"\nexchange = \"passthrough\"\n\n\
             [[route]]\nname = \"api\"\nurl = \"https://127.0.0.1:{port}/v1/\"\ncredential = \"gh\"\n\n\
             [upstream]\nextra_ca = \"{ca}\"\n",
            port = up.port,
            ca = ca.display(),
        );
        let config = write_config(dir.path(), &text);
        for d in ["work", "tmp"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let before = tree(dir.path());
        Sandbox {
            dir,
            _issuer: issuer,
            up,
            token,
            config,
            before,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    /// The default audit file: in the working directory.
    fn audit(&self) -> PathBuf {
        self.path("work").join(AUDIT)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lanyard"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LANYARD_TEST_TOKEN", &self.token)
            .env("LANYARD_STATE_DIR", self.state())
            .env("TMPDIR", self.path("tmp"))
            .env("HOME", self.dir.path())
            .env("UP", self.up.port.to_string())
            .current_dir(self.path("work"))
            .stdin(Stdio::null());
        c
    }

    fn lanyard(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().expect("lanyard");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `lanyard start --export sh`; the exported variables and the daemon's pid.
    fn start(&self, watch: u32) -> (HashMap<String, String>, i32) {
        let config = self.config.display().to_string();
        let (code, out, err) = self.lanyard(&[
            "start",
            "--config",
            &config,
            "--export",
            "sh",
            "--watch-pid",
            &watch.to_string(),
        ]);
        assert_eq!(code, 0, "start failed\nstdout:\n{out}\nstderr:\n{err}");
        let exports = out
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        let pid = std::fs::read_to_string(self.state().join("pid"))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        (exports, pid)
    }

    /// One routed call with only the exported environment.
    fn call(&self, exports: &HashMap<String, String>) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--fail-with-body",
                "-o",
                "/dev/null",
                &format!("https://127.0.0.1:{}/v1/call", self.up.port),
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(exports)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "routed call failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `lanyard run -- sh -c SCRIPT`, not waited for.
    fn spawn_run(&self, script: &str) -> Child {
        let config = self.config.display().to_string();
        self.command(&["run", "--config", &config, "--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lanyard run")
    }

    /// A script line that runs in the background until killed, and whose
    /// command line names the sandbox (so the process sweep sees it).
    fn straggler(&self) -> String {
        format!(
            "sh -c 'sleep 1000; : {}' >/dev/null 2>&1 &",
            self.dir.path().display()
        )
    }

    /// The sweep: wait (bounded) for every process naming the sandbox to
    /// end, then compare the tree with the one before the session. The
    /// audit file must be the only new path, and hold the job line and the
    /// routed call.
    fn assert_nothing_left_but_the_audit(&self, how: &str) {
        let marker = self.dir.path().display().to_string();
        let end = Instant::now() + GONE_DEADLINE;
        loop {
            let left = processes_naming(&marker);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < end,
                "after {how}, processes outlived the job: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let after = tree(self.dir.path());
        let new: Vec<&PathBuf> = after.difference(&self.before).collect();
        assert_eq!(
            new,
            vec![&self.audit()],
            "after {how}, the only new path must be the audit file"
        );
        let audit = std::fs::read_to_string(self.audit()).expect("audit");
        let lines: Vec<serde_json::Value> = audit.lines().map(json_of).collect();
        assert!(
            lines
                .iter()
                .any(|l| l["path"].as_str() == Some("/v1/call") && l["status"] == 200),
            "after {how}, the audit file lacks the routed call:\n{audit}"
        );
        assert_absent(&[&audit], &self.token, "the job's credential");
    }
}

/// Every path under `root` (files, folders, sockets), recursively.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// Live processes (not zombies) whose command line contains `marker`.
fn processes_naming(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if cmd.contains(marker) && !zombie {
            out.push((pid, cmd));
        }
    }
    out
}

fn wait_bounded(mut child: Child, what: &str) -> (i32, String, String) {
    let end = Instant::now() + GONE_DEADLINE;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(Instant::now() < end, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out).expect("stdout");
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err).expect("stderr");
    }
    (status.code().unwrap_or(-1), out, err)
}

fn wait_pid_gone(pid: i32, what: &str) {
    let end = Instant::now() + GONE_DEADLINE;
    while Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(Instant::now() < end, "{what} (pid {pid}) is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: i32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

#[test]
fn stop_leaves_only_the_audit_file_and_names_it() {
    let sb = Sandbox::new();
    let (exports, _) = sb.start(0);
    sb.call(&exports);
    let (code, out, err) = sb.lanyard(&["stop"]);
    assert_eq!(code, 0, "stop: {out}\n{err}");
    assert!(
        out.contains(&format!("audit record kept in {}", sb.audit().display())),
        "stop must name the audit file:\n{out}"
    );
    sb.assert_nothing_left_but_the_audit("stop");
}

#[test]
fn on_github_the_audit_file_is_kept_in_runner_temp() {
    let sb = Sandbox::new();
    let runner_temp = sb.path("runner-temp");
    std::fs::create_dir(&runner_temp).expect("mkdir");
    let config = sb.config.display().to_string();
    let out = sb
        .command(&["run", "--config", &config, "--", "true"])
        .env("RUNNER_TEMP", &runner_temp)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let audit = runner_temp.join(AUDIT);
    assert!(
        err.contains(&format!("audit record kept in {}", audit.display())),
        "{err}"
    );
    let text = std::fs::read_to_string(&audit).expect("audit in RUNNER_TEMP");
    assert!(text.lines().count() >= 1, "no job line:\n{text}");
    assert!(!sb.audit().exists(), "the working directory got one too");
}

#[test]
fn run_leaves_only_the_audit_file_and_ends_what_the_command_left_running() {
    let sb = Sandbox::new();
    let script = format!(
        "curl -sS --fail-with-body -o /dev/null https://127.0.0.1:$UP/v1/call || exit 1\n{}\necho ok",
        sb.straggler()
    );
    let run = sb.spawn_run(&script);
    let (code, out, err) = wait_bounded(run, "lanyard run");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains(&format!("audit record kept in {}", sb.audit().display())),
        "run must name the audit file:\n{err}"
    );
    sb.assert_nothing_left_but_the_audit("run");
}

#[test]
fn sigterm_to_the_daemon_leaves_only_the_audit_file() {
    let sb = Sandbox::new();
    let (exports, pid) = sb.start(0);
    sb.call(&exports);
    kill(pid, "TERM");
    wait_pid_gone(pid, "the daemon after SIGTERM");
    sb.assert_nothing_left_but_the_audit("SIGTERM to the daemon");
}

#[test]
fn sigterm_to_run_leaves_only_the_audit_file() {
    let sb = Sandbox::new();
    let ready = sb.path("work/ready");
    let script = format!(
        "curl -sS --fail-with-body -o /dev/null https://127.0.0.1:$UP/v1/call || exit 1\n{}\n: > {}\nsleep 1000",
        sb.straggler(),
        ready.display()
    );
    let mut run = sb.spawn_run(&script);
    let end = Instant::now() + GONE_DEADLINE;
    while !ready.exists() {
        assert!(
            run.try_wait().expect("try_wait").is_none(),
            "run ended early"
        );
        assert!(Instant::now() < end, "the command never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&ready).expect("rm ready");
    kill(run.id() as i32, "TERM");
    let (code, out, err) = wait_bounded(run, "lanyard run after SIGTERM");
    assert_eq!(code, 128 + 15, "{out}\n{err}");
    assert!(err.contains("audit record kept in"), "{err}");
    sb.assert_nothing_left_but_the_audit("SIGTERM to run");
}

#[test]
fn a_sigkilled_job_shell_leaves_only_the_audit_file_under_start() {
    let sb = Sandbox::new();
    let mut shell = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("stand-in job shell");
    let (exports, pid) = sb.start(shell.id());
    sb.call(&exports);
    shell.kill().expect("SIGKILL the shell");
    shell.wait().expect("reap");
    wait_pid_gone(pid, "the daemon after its job shell was killed");
    sb.assert_nothing_left_but_the_audit("the job shell's SIGKILL (start)");
}

#[test]
fn a_sigkilled_job_shell_leaves_only_the_audit_file_under_run() {
    let sb = Sandbox::new();
    let script = format!(
        "curl -sS --fail-with-body -o /dev/null https://127.0.0.1:$UP/v1/call || exit 1\n{}\nkill -KILL $$",
        sb.straggler()
    );
    let run = sb.spawn_run(&script);
    let (code, out, err) = wait_bounded(run, "lanyard run");
    assert_eq!(code, 128 + 9, "{out}\n{err}");
    sb.assert_nothing_left_but_the_audit("the job shell's SIGKILL (run)");
}

#[test]
fn stop_after_a_sigkilled_daemon_cleans_up_and_still_names_the_audit_file() {
    let sb = Sandbox::new();
    let (exports, pid) = sb.start(0);
    sb.call(&exports);
    // Past the 50 ms batch window, so the call's line is on disk: a
    // SIGKILLed daemon loses only its unflushed batch (README, Audit).
    let end = Instant::now() + GONE_DEADLINE;
    while !std::fs::read_to_string(sb.audit())
        .unwrap_or_default()
        .contains("/v1/call")
    {
        assert!(
            Instant::now() < end,
            "the call never reached the audit file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(pid, "KILL");
    wait_pid_gone(pid, "the daemon after SIGKILL");
    let (code, out, err) = sb.lanyard(&["stop"]);
    assert_eq!(code, 0, "stop: {out}\n{err}");
    assert!(
        out.contains("api"),
        "stop should summarise the audit file:\n{out}"
    );
    assert!(
        out.contains(&format!("audit record kept in {}", sb.audit().display())),
        "{out}"
    );
    sb.assert_nothing_left_but_the_audit("SIGKILL to the daemon, then stop");
}
