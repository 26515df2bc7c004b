//! Hostile neighbours: a process of the job, running as the same user as
//! lanyard, tries to read lanyard's environment and memory through /proc
//! and to attach to it with ptrace. Real OpenBao with a KV secret, the
//! GitHub-shaped issuer, the recording HTTPS upstream.
//!
//! Why not as root: root (CAP_SYS_PTRACE) reads any process's memory, so
//! as root the test runs lanyard and the "job" as an unprivileged user
//! with `setpriv`; as any other user it runs them as that user.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// The unprivileged user the test runs as when it is root (`nobody`).
const NOBODY: u32 = 65534;
/// Proxy workers in the memory test: each may keep one pooled upstream
/// connection whose write buffer holds the last request head.
const WORKERS: usize = 2;

/// What the job runs: reads /proc/<pid>/environ, maps and mem of lanyard,
/// counting the canaries it finds, then tries PTRACE_ATTACH. Prints one
/// verdict line per attempt and never the bytes it read.
const PROBE: &str = r#"
import ctypes, errno, os, sys
pid = int(sys.argv[1])
canaries = [l.strip().encode() for l in open(sys.argv[2]) if l.strip()]
def count(data):
    return "copies per canary (KV secret, identity bearer): " + str([data.count(c) for c in canaries])
try:
    with open(f"/proc/{pid}/environ", "rb") as f:
        data = f.read()
    print(f"environ: read {len(data)} bytes, {count(data)}")
except OSError as e:
    print(f"environ: denied ({errno.errorcode.get(e.errno, e.errno)})")
try:
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read().splitlines()
    print(f"maps: read {len(maps)} lines")
except OSError as e:
    maps = []
    print(f"maps: denied ({errno.errorcode.get(e.errno, e.errno)})")
try:
    found, total = [0] * len(canaries), 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            lo, hi = (int(x, 16) for x in addr.split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:
                continue
            total += len(data)
            found = [a + data.count(c) for a, c in zip(found, canaries)]
    print(f"mem: read {total} bytes, copies per canary (KV secret, identity bearer): {found}")
except OSError as e:
    print(f"mem: denied ({errno.errorcode.get(e.errno, e.errno)})")
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
    os.waitpid(pid, 0)
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
    print("ptrace: attached")
else:
    print(f"ptrace: denied ({errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())})")
"#;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args` as the unprivileged user when we are root, else as us.
fn unprivileged(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
            program,
        ]);
        c
    } else {
        Command::new(program)
    }
}

/// Say what the kernel already forbids regardless of lanyard.
fn yama_note() {
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(s) if s.trim() != "0" => eprintln!(
            "note: kernel.yama.ptrace_scope = {}: the kernel forbids attaching to a non-descendant regardless of lanyard, so the ptrace check here proves less than the environ/mem checks",
            s.trim()
        ),
        Ok(_) => eprintln!("note: kernel.yama.ptrace_scope = 0: only dumpable and uid decide ptrace"),
        Err(_) => eprintln!("note: no Yama LSM: only dumpable and uid decide ptrace"),
    }
}

/// A job whose files the unprivileged user can read: the config, the
/// upstream's test CA, the probe and the canary list.
struct Job {
    dir: tempfile::TempDir,
    issuer: Issuer,
    _bao: Bao,
    up: Upstream,
    config: PathBuf,
    state: PathBuf,
    kv: &'static str,
}

impl Job {
    fn new() -> Job {
        let issuer = Issuer::start();
        let bao = Bao::start();
        let kv = "sk_test_neighbour_canary_8c2e";
        bao.setup_jwt(&issuer.url, "60s", "300s", kv);
        let up = Upstream::start(false);
        let dir = tempfile::tempdir().expect("tmp");
        let ca = dir.path().join("upstream-ca.pem");
        std::fs::copy(up.ca.as_ref().expect("ca"), &ca).expect("copy ca");
        let text = format!(
            "[identity]\nsource = \"auto\"\naudience = \"{BAO_AUDIENCE}\"\n\n\
             [[credential]]\nname = \"vault\"\nexchange = \"vault\"\naddress = \"{addr}\"\nrole = \"ci\"\n\n\
             [[credential]]\nname = \"stripe\"\nfrom = \"vault\"\nsecret = \"secret/data/ci/stripe#api_key\"\n\n\
             [[route]]\nname = \"stripe\"\nurl = \"https://localhost:{port}/v1/\"\ncredential = \"stripe\"\n\n\
             [upstream]\nextra_ca = \"{ca}\"\n",
            addr = bao.addr,
            port = up.port,
            ca = ca.display(),
        );
        let config = write_config(dir.path(), &text);
        std::fs::write(dir.path().join("probe.py"), PROBE).expect("probe");
        std::fs::write(
            dir.path().join("canaries"),
            format!("{kv}\n{}\n", issuer.bearer),
        )
        .expect("canaries");
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
            for f in std::fs::read_dir(dir.path()).expect("dir") {
                let f = f.expect("entry").path();
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
                    .expect("chmod");
            }
        }
        let state = dir.path().join("state");
        Job {
            dir,
            issuer,
            _bao: bao,
            up,
            config,
            state,
            kv,
        }
    }

    /// The job's environment on a GitHub runner.
    fn env(&self, c: &mut Command) {
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GITHUB_ACTIONS", "true")
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", self.issuer.gha_url())
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &self.issuer.bearer)
            .env("LANYARD_STATE_DIR", &self.state)
            .env("RUNNER_TEMP", self.dir.path())
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path());
    }

    fn probe_args(&self) -> [String; 2] {
        [
            self.dir.path().join("probe.py").display().to_string(),
            self.dir.path().join("canaries").display().to_string(),
        ]
    }

    fn curl(&self) -> String {
        format!(
            "curl -sS --fail-with-body -o /dev/null https://localhost:{}/v1/charges",
            self.up.port
        )
    }

    /// The promise: each way in is closed, and nothing the probe read
    /// (had it read anything) reached its output.
    fn assert_closed(&self, what: &str, out: &str) {
        for (check, verdict) in [
            ("environ", "environ: denied"),
            ("mem", "mem: denied"),
            ("ptrace", "ptrace: denied"),
        ] {
            assert!(
                out.contains(verdict),
                "the job could use {check} of {what}:\n{out}"
            );
        }
        assert_absent(&[out], self.kv, "the KV secret");
        assert_absent(&[out], &self.issuer.bearer, "the identity bearer");
    }
}

fn output(mut c: Command) -> (i32, String, String) {
    let out = c.stdin(Stdio::null()).output().expect("spawn");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_job_cannot_read_or_attach_to_the_run_sidecar() {
    yama_note();
    let job = Job::new();
    let [probe, canaries] = job.probe_args();
    // The job's shell is a child of `lanyard run`: $PPID is lanyard.
    let script = format!(
        "{curl} && echo call: ok\n/usr/bin/python3 {probe} \"$PPID\" {canaries}\n\
         /usr/bin/python3 -c {own}",
        curl = job.curl(),
        own = "'import os; open(\"/proc/%d/environ\" % os.getppid(), \"rb\").read(); print(\"job shell: readable\")'"
    );
    let mut c = unprivileged(env!("CARGO_BIN_EXE_lanyard"));
    c.args(["run", "--config"])
        .arg(&job.config)
        .args(["--", "sh", "-c", &script]);
    job.env(&mut c);
    let (code, out, err) = output(c);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("call: ok"),
        "the routed call failed:\n{out}\n{err}"
    );
    eprintln!("probe of `lanyard run`:\n{out}");
    job.assert_closed("`lanyard run`", &out);
    // The flag is lanyard's own: the job's shell (exec'd by lanyard) is
    // dumpable again, so the job's own tools work on it as usual.
    assert!(out.contains("job shell: readable"), "{out}\n{err}");
    assert_absent(&[&err], job.kv, "the KV secret");
}

#[test]
fn the_job_cannot_read_or_attach_to_the_daemon() {
    yama_note();
    let job = Job::new();
    let mut c = unprivileged(env!("CARGO_BIN_EXE_lanyard"));
    c.args(["start", "--export", "sh", "--watch-pid", "0", "--config"])
        .arg(&job.config);
    job.env(&mut c);
    let (code, out, err) = output(c);
    assert_eq!(code, 0, "start failed\nstdout:\n{out}\nstderr:\n{err}");
    let exports: HashMap<String, String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect();
    let pid = std::fs::read_to_string(Path::new(&job.state).join("pid"))
        .expect("pid file")
        .trim()
        .to_owned();
    let [probe, canaries] = job.probe_args();
    let script = format!(
        "{curl} && echo call: ok\n/usr/bin/python3 {probe} {pid} {canaries}",
        curl = job.curl()
    );
    let mut c = unprivileged("sh");
    c.args(["-c", &script]);
    job.env(&mut c);
    c.env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        .envs(&exports);
    let (code, probe_out, probe_err) = output(c);
    let mut stop = unprivileged(env!("CARGO_BIN_EXE_lanyard"));
    stop.arg("stop");
    job.env(&mut stop);
    let (stop_code, stop_out, stop_err) = output(stop);
    assert_eq!(code, 0, "stdout:\n{probe_out}\nstderr:\n{probe_err}");
    assert!(probe_out.contains("call: ok"), "{probe_out}\n{probe_err}");
    eprintln!("probe of the daemon (pid {pid}):\n{probe_out}");
    job.assert_closed("the daemon", &probe_out);
    assert_eq!(stop_code, 0, "stop: {stop_out}\n{stop_err}");
}

/// Copies of the KV secret in lanyard's memory, counted by the same probe
/// run as root (CAP_SYS_PTRACE reads a non-dumpable process): right after
/// the exchange, and after 20 routed calls. One copy is the credential
/// itself; any other is a buffer that held it (a token answer, the JSON
/// parsed from it, a rendered header) and was dropped without being wiped.
/// The only copies allowed beyond the credential are the request heads in
/// the write buffer of each pooled upstream connection (hyper's, one per
/// proxy worker), which lanyard does not own.
#[test]
fn few_copies_of_the_kv_secret_stay_in_memory() {
    if !is_root() {
        eprintln!("SKIPPED few_copies_of_the_kv_secret_stay_in_memory: needs root to read a non-dumpable process's memory");
        return;
    }
    let job = Job::new();
    let [probe, canaries] = job.probe_args();
    let script = format!(
        "/usr/bin/python3 {probe} \"$PPID\" {canaries}\n\
         for i in $(seq 20); do {curl} || exit 1; done; echo calls: ok\n\
         /usr/bin/python3 {probe} \"$PPID\" {canaries}",
        curl = job.curl()
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_lanyard"));
    c.args(["run", "--config"])
        .arg(&job.config)
        .args(["--", "sh", "-c", &script]);
    job.env(&mut c);
    c.env("LANYARD_WORKER_THREADS", WORKERS.to_string());
    let (code, out, err) = output(c);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("calls: ok"), "{out}\n{err}");
    eprintln!("root's probes of `lanyard run`, before and after 20 calls:\n{out}");
    let kv: Vec<usize> = out
        .lines()
        .filter(|l| l.starts_with("mem: read"))
        .map(|l| {
            l.rsplit_once('[')
                .and_then(|(_, r)| r.split(',').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no count in {l:?}"))
        })
        .collect();
    assert_eq!(kv.len(), 2, "root could not read lanyard's memory:\n{out}");
    assert_eq!(
        kv[0], 1,
        "after the exchange, only the credential itself may hold the KV secret:\n{out}"
    );
    assert!(
        (1..=1 + WORKERS).contains(&kv[1]),
        "after 20 calls: {} copies of the KV secret (the credential, plus at most one request head per pooled upstream connection, {WORKERS}):\n{out}",
        kv[1]
    );
}
