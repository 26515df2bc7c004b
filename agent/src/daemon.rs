//! `lanyard start` / `stop` / `status`: one session per job, detached.
//!
//! `start` spawns `lanyard __daemon` in a new session with stdin from
//! /dev/null and stdout/stderr to a log file in the state directory, so it
//! never holds the caller's pipes (a known way to hang CI jobs). The daemon
//! reports readiness (or the control plane's error) over a one-shot Unix
//! socket, then serves `status` and `stop` on `control.sock`. It exits on
//! its own when the watched process dies or the maximum lifetime passes,
//! revoking everything first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};

use crate::audit::Summary;
use crate::config::Config;
use crate::env::Env;
use crate::session::{self, Session, SessionOptions};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Why: a first exchange against a slow token service still finishes well
/// inside this; past it, `start` reports the daemon as stuck.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Why: revocation calls each have a 30 s timeout; stop waits for them.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);
/// Why: after the daemon exited, its ready message (if it sent one) is
/// already queued on the socket; this only bounds a scheduling delay.
const READY_AFTER_EXIT: Duration = Duration::from_millis(500);
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

const PID_FILE: &str = "pid";
const CONTROL: &str = "control.sock";
const READY: &str = "ready.sock";
const LOG: &str = "lanyard.log";
const ENV_FILE: &str = "lanyard.env";
const CREATED: &str = ".created-by-lanyard";
/// Where the daemon keeps the audit record (one line: the path), so that a
/// `stop` after a crash can still summarise it.
const AUDIT_PATH: &str = "audit-path";
/// Everything lanyard writes in the state folder; all of it is removed at
/// teardown. The audit file is not here: it is kept, outside the folder.
const OWNED: &[&str] = &[
    PID_FILE,
    CONTROL,
    READY,
    LOG,
    ENV_FILE,
    "ca-bundle.pem",
    AUDIT_PATH,
    CREATED,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Export {
    Sh,
    Dotenv,
    Github,
}

/// The state directory, in the contract's order of preference.
pub fn state_dir(env: &dyn Env) -> PathBuf {
    if let Some(d) = env.non_empty("LANYARD_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(t) = env.non_empty("RUNNER_TEMP") {
        return Path::new(&t).join("lanyard");
    }
    if let (Some(b), Some(j)) = (env.non_empty("CI_BUILDS_DIR"), env.non_empty("CI_JOB_ID")) {
        return Path::new(&b).join(format!(".lanyard-{j}"));
    }
    if let Some(x) = env.non_empty("XDG_RUNTIME_DIR") {
        return Path::new(&x).join("lanyard");
    }
    let tmp = env.non_empty("TMPDIR").unwrap_or_else(|| "/tmp".into());
    Path::new(&tmp).join(format!("lanyard-{}", nix::unistd::getuid().as_raw()))
}

/// Create (0700) or check an existing state directory: a real directory,
/// ours, private. Returns whether we created it.
fn ensure_dir(dir: &Path) -> Result<bool, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            if !m.file_type().is_dir() {
                return Err(format!(
                    "state directory {} exists and is not a directory (a symlink?)",
                    dir.display()
                ));
            }
            if m.uid() != nix::unistd::getuid().as_raw() {
                return Err(format!(
                    "state directory {} belongs to uid {}, not to this user",
                    dir.display(),
                    m.uid()
                ));
            }
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| format!("chmod 700 {}: {e}", dir.display()))?;
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            Ok(true)
        }
        Err(e) => Err(format!("state directory {}: {e}", dir.display())),
    }
}

/// Remove what lanyard wrote; the folder itself only if lanyard made it.
fn clean(dir: &Path) {
    let created = dir.join(CREATED).exists();
    for f in OWNED {
        let _ = std::fs::remove_file(dir.join(f));
    }
    if created {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Is `pid` running? An exited process that its parent has not reaped yet
/// (a zombie) is not.
/// Why: the daemon's parent is whatever adopted it; a slow reaper (PID 1
/// here reaps every ~2 s) made every `lanyard stop` wait for it.
fn alive(pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which may hold spaces or ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_none_or(|state| state != 'Z' && state != 'X'),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // No /proc (not Linux): the signal check decides.
        Err(_) => true,
    }
}

fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The parent of `pid` (Linux /proc), for "the process that started the
/// job's shell".
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...; comm may contain spaces and parens.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    pid: u32,
    #[serde(default)]
    env: Vec<(String, String)>,
    #[serde(default)]
    secret: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct StopReply {
    revoked: String,
    table: String,
    markdown: String,
    /// The audit file, kept.
    #[serde(default)]
    audit: String,
}

pub struct StartOptions {
    pub config: PathBuf,
    pub audience: Option<String>,
    pub export: Export,
    pub env_file: Option<PathBuf>,
    pub max_lifetime: Option<Duration>,
    pub watch_pid: Option<i32>,
}

fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// `lanyard start`.
pub async fn start(env: &dyn Env, opts: StartOptions) -> i32 {
    let dir = state_dir(env);
    let created = match ensure_dir(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lanyard start: {e}");
            return EXIT_FAILED;
        }
    };
    if let Some(pid) = read_pid(&dir) {
        if alive(pid) && UnixStream::connect(dir.join(CONTROL)).await.is_ok() {
            eprintln!(
                "lanyard start: already running (pid {pid}) with state in {}; run `lanyard stop` first",
                dir.display()
            );
            return EXIT_FAILED;
        }
        clean(&dir);
        let _ = ensure_dir(&dir);
    }
    if created {
        let _ = std::fs::write(dir.join(CREATED), b"");
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("lanyard start: cannot find my own binary: {e}");
            return EXIT_FAILED;
        }
    };
    let ready_path = dir.join(READY);
    let _ = std::fs::remove_file(&ready_path);
    let ready = match UnixListener::bind(&ready_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "lanyard start: cannot listen on {}: {e}",
                ready_path.display()
            );
            return EXIT_FAILED;
        }
    };
    let log = match open_private(&dir.join(LOG), true) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "lanyard start: cannot open the log {}: {e}",
                dir.join(LOG).display()
            );
            return EXIT_FAILED;
        }
    };
    let log2 = match log.try_clone() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("lanyard start: {e}");
            return EXIT_FAILED;
        }
    };
    let watch = match opts.watch_pid {
        Some(p) => p,
        None => parent_of(nix::unistd::getppid().as_raw()).unwrap_or(0),
    };
    let max_lifetime = opts.max_lifetime.unwrap_or_else(|| {
        env.non_empty("CI_JOB_TIMEOUT")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(session::DEFAULT_MAX_LIFETIME)
    });
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("__daemon")
        .arg("--state-dir")
        .arg(&dir)
        .arg("--config")
        .arg(&opts.config)
        .arg("--max-lifetime")
        .arg(humantime::format_duration(max_lifetime).to_string())
        .arg("--watch-pid")
        .arg(watch.to_string());
    if let Some(a) = &opts.audience {
        cmd.arg("--audience").arg(a);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lanyard start: cannot start the daemon: {e}");
            return EXIT_FAILED;
        }
    };
    let reply = tokio::select! {
        r = read_ready(&ready) => r,
        st = child.wait() => {
            // Why: a daemon that fails writes its error to the ready socket
            // and exits at once, so its exit can be seen before the message
            // is read (regression: the Action's "issuer refuses" test on a
            // fresh clone). A message already sent is read, not lost.
            match tokio::time::timeout(READY_AFTER_EXIT, read_ready(&ready)).await {
                Ok(Ok(r)) => Ok(r),
                _ => Err(format!(
                    "the daemon exited before it was ready ({}); its log: {}",
                    st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    log_tail(&dir)
                )),
            }
        }
        _ = tokio::time::sleep(READY_TIMEOUT) => Err(format!(
            "the daemon was not ready after {}s; its log: {}",
            READY_TIMEOUT.as_secs(),
            log_tail(&dir)
        )),
    };
    let _ = std::fs::remove_file(&ready_path);
    let ready = match reply {
        Ok(r) if r.ok => r,
        Ok(r) => {
            eprintln!(
                "lanyard start: {}",
                r.error.unwrap_or_else(|| "failed".into())
            );
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            clean(&dir);
            return EXIT_FAILED;
        }
        Err(e) => {
            eprintln!("lanyard start: {e}");
            let _ = child.start_kill();
            clean(&dir);
            return EXIT_FAILED;
        }
    };
    let mut vars = ready.env;
    vars.push(("LANYARD_STATE_DIR".into(), dir.display().to_string()));
    match export(
        env,
        &dir,
        opts.export,
        opts.env_file.as_deref(),
        &vars,
        &ready.secret,
    ) {
        Ok(()) => {
            eprintln!(
                "lanyard: ready (pid {}); state in {}",
                ready.pid,
                dir.display()
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("lanyard start: {e}; stopping the daemon");
            let _ = stop_via_socket(&dir).await;
            clean(&dir);
            EXIT_FAILED
        }
    }
}

fn open_private(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).mode(0o600);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    o.open(path)
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join(LOG)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        format!("\n{tail}")
    }
}

async fn read_ready(l: &UnixListener) -> Result<Ready, String> {
    let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("bad ready message from the daemon: {e}"))
}

fn export(
    env: &dyn Env,
    dir: &Path,
    how: Export,
    env_file: Option<&Path>,
    vars: &[(String, String)],
    secret: &str,
) -> Result<(), String> {
    for (k, v) in vars {
        if v.contains('\n') || v.contains('\r') {
            return Err(format!("{k} has a line break; refusing to export it"));
        }
    }
    match how {
        Export::Sh => {
            let mut out = String::new();
            for (k, v) in vars {
                out.push_str(&format!("export {k}={}\n", sh_quote(v)));
            }
            print!("{out}");
        }
        Export::Dotenv => {
            let path = env_file
                .map(Path::to_owned)
                .unwrap_or_else(|| dir.join(ENV_FILE));
            let mut f =
                open_private(&path, false).map_err(|e| format!("{}: {e}", path.display()))?;
            for (k, v) in vars {
                writeln!(f, "{k}={v}").map_err(|e| format!("{}: {e}", path.display()))?;
            }
            println!("{}", path.display());
        }
        Export::Github => {
            let path = env
                .non_empty("GITHUB_ENV")
                .ok_or("--export github needs GITHUB_ENV (set by the GitHub runner)")?;
            // Mask first, so no later log line can show the secret.
            println!("::add-mask::{secret}");
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| format!("GITHUB_ENV {path}: {e}"))?;
            for (k, v) in vars {
                writeln!(f, "{k}={v}").map_err(|e| format!("GITHUB_ENV {path}: {e}"))?;
            }
        }
    }
    Ok(())
}

pub struct DaemonOptions {
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub audience: Option<String>,
    pub max_lifetime: Duration,
    pub watch_pid: i32,
}

/// Why a daemon ended.
enum End {
    Stop(UnixStream),
    Signal(&'static str),
    Watched(i32),
    Lifetime,
}

/// `lanyard __daemon` (started by `start`, never by hand).
pub async fn daemon(env: &dyn Env, opts: DaemonOptions) -> i32 {
    let dir = opts.state_dir;
    let send_ready = |r: Ready| {
        let path = dir.join(READY);
        async move {
            if let Ok(mut s) = UnixStream::connect(&path).await {
                let mut line = serde_json::to_string(&r).unwrap_or_default();
                line.push('\n');
                let _ = s.write_all(line.as_bytes()).await;
            }
        }
    };
    let cfg = match Config::load(&opts.config) {
        Ok(c) => c,
        Err(e) => {
            send_ready(Ready {
                ok: false,
                error: Some(e.to_string()),
                pid: 0,
                env: vec![],
                secret: String::new(),
            })
            .await;
            return EXIT_USAGE;
        }
    };
    let session = match Session::start(
        &cfg,
        env,
        SessionOptions {
            dir: dir.clone(),
            max_lifetime: opts.max_lifetime,
            audience: opts.audience,
        },
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            send_ready(Ready {
                ok: false,
                error: Some(e.to_string()),
                pid: 0,
                env: vec![],
                secret: String::new(),
            })
            .await;
            return EXIT_FAILED;
        }
    };
    let control_path = dir.join(CONTROL);
    let _ = std::fs::remove_file(&control_path);
    let control = match UnixListener::bind(&control_path) {
        Ok(l) => l,
        Err(e) => {
            send_ready(Ready {
                ok: false,
                error: Some(format!("control socket {}: {e}", control_path.display())),
                pid: 0,
                env: vec![],
                secret: String::new(),
            })
            .await;
            session.teardown().await;
            return EXIT_FAILED;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&control_path, std::fs::Permissions::from_mode(0o600));
    }
    let pid = std::process::id();
    let _ = std::fs::write(
        dir.join(AUDIT_PATH),
        format!("{}\n", session.audit_path.display()),
    );
    if let Err(e) = std::fs::write(dir.join(PID_FILE), format!("{pid}\n")) {
        send_ready(Ready {
            ok: false,
            error: Some(format!("pid file: {e}")),
            pid: 0,
            env: vec![],
            secret: String::new(),
        })
        .await;
        session.teardown().await;
        return EXIT_FAILED;
    }
    let env_out: Vec<(String, String)> = session
        .exports()
        .into_iter()
        .map(|(k, v)| (k, v.expose().to_owned()))
        .collect();
    send_ready(Ready {
        ok: true,
        error: None,
        pid,
        env: env_out,
        secret: session.proxy.secret().expose().to_owned(),
    })
    .await;
    tracing::info!("lanyard daemon ready on {}", session.proxy.addr);

    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            eprintln!("lanyard daemon: cannot watch signals; stopping");
            session.teardown().await;
            clean(&dir);
            return EXIT_FAILED;
        }
    };
    let deadline = tokio::time::Instant::now() + opts.max_lifetime;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    let end = loop {
        tokio::select! {
            c = control.accept() => {
                let Ok((s, _)) = c else { continue };
                if !same_user(&s) {
                    continue;
                }
                match serve_control(s, &session).await {
                    Some(s) => break End::Stop(s),
                    None => continue,
                }
            }
            _ = term.recv() => break End::Signal("SIGTERM"),
            _ = int.recv() => break End::Signal("SIGINT"),
            _ = hup.recv() => break End::Signal("SIGHUP"),
            _ = tokio::time::sleep_until(deadline) => break End::Lifetime,
            _ = tick.tick() => {
                if opts.watch_pid > 1 && !alive(opts.watch_pid) {
                    break End::Watched(opts.watch_pid);
                }
            }
        }
    };
    let done = session.teardown().await;
    let revoked = session::revoke_lines(&done.revoked);
    match end {
        End::Stop(mut s) => {
            let reply = StopReply {
                revoked,
                table: done.summary.table(),
                markdown: done.summary.markdown(),
                audit: done.audit.display().to_string(),
            };
            let mut line = serde_json::to_string(&reply).unwrap_or_default();
            line.push('\n');
            let _ = s.write_all(line.as_bytes()).await;
            let _ = s.shutdown().await;
            // `stop` cleans the folder once this process is gone.
            let _ = std::fs::remove_file(dir.join(PID_FILE));
            let _ = std::fs::remove_file(&control_path);
        }
        other => {
            let why = match other {
                End::Signal(s) => format!("received {s}"),
                End::Watched(p) => format!("the job's process {p} ended"),
                End::Lifetime => format!(
                    "the maximum lifetime ({}) passed",
                    humantime::format_duration(opts.max_lifetime)
                ),
                End::Stop(_) => unreachable!(),
            };
            eprintln!("lanyard daemon: {why}; revoked and stopped");
            eprint!("{revoked}{}", done.summary.table());
            eprint!("{}", session::audit_kept_line(&done.audit));
            // Nothing outlives the job: without a `stop`, clean up here.
            clean(&dir);
        }
    }
    EXIT_OK
}

fn same_user(s: &UnixStream) -> bool {
    s.peer_cred()
        .is_ok_and(|c| c.uid() == nix::unistd::getuid().as_raw())
}

#[derive(Debug, Serialize, Deserialize)]
struct Status {
    pid: u32,
    proxy: String,
    /// `a CI identity (github (sub …))` or `a developer login (lanyard login as …)`.
    #[serde(default)]
    identity: String,
    routes: Vec<RouteStatus>,
    credentials: Vec<CredentialStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RouteStatus {
    url: String,
    credential: String,
    methods: Option<Vec<String>>,
    name: Option<String>,
    /// `CI identities only`, `developer identities only`, or both.
    #[serde(default)]
    identities: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CredentialStatus {
    name: String,
    fingerprint: Option<String>,
    expires_in_s: Option<u64>,
    renewable: bool,
    rotations: u64,
    last_error: Option<String>,
    /// Set when the service has no revocation (AWS STS): when the current
    /// value ends by itself, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_on_its_own_at: Option<String>,
}

/// One request per connection: `status` or `stop`. Returns the stream
/// when a stop was asked for.
async fn serve_control(s: UnixStream, session: &Session) -> Option<UnixStream> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(_))) {
        return None;
    }
    let mut s = r.into_inner();
    match line.trim() {
        "stop" => Some(s),
        "status" => {
            let st = status_of(session);
            let mut out = serde_json::to_string(&st).unwrap_or_default();
            out.push('\n');
            let _ = s.write_all(out.as_bytes()).await;
            None
        }
        _ => None,
    }
}

fn status_of(session: &Session) -> Status {
    let store = &session.control.store;
    let now = tokio::time::Instant::now();
    let credentials = store
        .names()
        .map(|n| {
            let st = store.state(n).unwrap_or_default();
            let cur = st.current.as_ref();
            CredentialStatus {
                name: n.to_owned(),
                fingerprint: cur.map(|c| c.fingerprint.clone()),
                expires_in_s: cur
                    .and_then(|c| c.expires_at)
                    .map(|e| e.saturating_duration_since(now).as_secs()),
                renewable: cur.is_some_and(|c| c.renewable),
                rotations: st.rotations,
                last_error: st.last_error.clone(),
                expires_on_its_own_at: cur
                    .and_then(|c| c.expires_at)
                    .filter(|_| !store.revocable(n))
                    .map(|e| {
                        crate::identity::format_time(
                            std::time::SystemTime::now() + e.saturating_duration_since(now),
                        )
                    }),
            }
        })
        .collect();
    Status {
        pid: std::process::id(),
        proxy: session.proxy.addr.to_string(),
        identity: session.control.session_identity.describe(),
        routes: session
            .routes()
            .iter()
            .map(|r| RouteStatus {
                url: r.display_url(),
                credential: r.credential.clone(),
                methods: r
                    .methods
                    .as_ref()
                    .map(|m| m.iter().map(|m| m.to_string()).collect()),
                name: r.name.clone(),
                identities: r.identities.describe().to_owned(),
            })
            .collect(),
        credentials,
    }
}

async fn request(dir: &Path, what: &str, timeout: Duration) -> Result<String, String> {
    let mut s = UnixStream::connect(dir.join(CONTROL))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{what}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    tokio::time::timeout(timeout, BufReader::new(s).read_line(&mut line))
        .await
        .map_err(|_| format!("no answer to {what} within {}s", timeout.as_secs()))?
        .map_err(|e| e.to_string())?;
    Ok(line)
}

async fn stop_via_socket(dir: &Path) -> Result<StopReply, String> {
    let line = request(dir, "stop", STOP_TIMEOUT).await?;
    serde_json::from_str(&line).map_err(|e| format!("bad answer from the daemon: {e}"))
}

/// Wait (bounded) until a process is gone.
async fn wait_gone(pid: i32, limit: Duration) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while alive(pid) {
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// `lanyard stop`: idempotent.
pub async fn stop(env: &dyn Env) -> i32 {
    let dir = state_dir(env);
    if !dir.exists() {
        println!("lanyard: not running (no state in {})", dir.display());
        return EXIT_OK;
    }
    let pid = read_pid(&dir);
    match stop_via_socket(&dir).await {
        Ok(reply) => {
            print!("{}", reply.revoked);
            print!("{}", reply.table);
            if let Some(path) = env.non_empty("GITHUB_STEP_SUMMARY") {
                let r = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(reply.markdown.as_bytes()));
                if let Err(e) = r {
                    eprintln!("lanyard stop: cannot write GITHUB_STEP_SUMMARY {path}: {e}");
                }
            }
            if let Some(p) = pid {
                if !wait_gone(p, Duration::from_secs(10)).await {
                    eprintln!(
                        "lanyard stop: the daemon (pid {p}) is still running after its teardown"
                    );
                }
            }
            clean(&dir);
            println!("lanyard: stopped; removed {}", dir.display());
            if !reply.audit.is_empty() {
                print!("{}", session::audit_kept_line(Path::new(&reply.audit)));
            }
            EXIT_OK
        }
        Err(why) => {
            // A crash, a kill -9, or a stop that already ran.
            match pid {
                Some(p) if alive(p) => {
                    let _ = kill(Pid::from_raw(p), nix::sys::signal::Signal::SIGTERM);
                    let gone = wait_gone(p, STOP_TIMEOUT).await;
                    println!(
                        "lanyard: the daemon (pid {p}) did not answer ({why}); sent SIGTERM, {}",
                        if gone {
                            "it revoked and exited"
                        } else {
                            "it is still running"
                        }
                    );
                }
                Some(p) => println!(
                    "lanyard: not running (found state from pid {p}, which has exited); cleaning up"
                ),
                None => println!(
                    "lanyard: not running (found a state folder without a daemon); cleaning up"
                ),
            }
            let audit = std::fs::read_to_string(dir.join(AUDIT_PATH))
                .ok()
                .map(|p| PathBuf::from(p.trim_end()));
            if let Some(path) = &audit {
                if let Ok(s) = Summary::from_file(path) {
                    print!("{}", s.table());
                    session::write_step_summary(env, &s);
                }
            }
            clean(&dir);
            if let Some(path) = &audit {
                print!("{}", session::audit_kept_line(path));
            }
            EXIT_OK
        }
    }
}

/// `lanyard status`.
pub async fn status(env: &dyn Env, json: bool) -> i32 {
    let dir = state_dir(env);
    let line = match request(&dir, "status", Duration::from_secs(10)).await {
        Ok(l) => l,
        Err(_) => {
            println!("lanyard: not running (state folder {})", dir.display());
            return EXIT_FAILED;
        }
    };
    let st: Status = match serde_json::from_str(&line) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lanyard status: bad answer from the daemon: {e}");
            return EXIT_FAILED;
        }
    };
    if json {
        println!("{}", line.trim_end());
        return EXIT_OK;
    }
    println!("lanyard: running (pid {}), proxy on {}", st.pid, st.proxy);
    if !st.identity.is_empty() {
        println!("identity: {}", st.identity);
    }
    println!("routes:");
    for r in &st.routes {
        let m = r
            .methods
            .as_ref()
            .map(|m| format!(" [{}]", m.join(",")))
            .unwrap_or_default();
        let kinds = if r.identities.is_empty() || r.identities.starts_with("CI and developer") {
            String::new()
        } else {
            format!(" ({})", r.identities)
        };
        println!("  {}{m} → {}{kinds}", r.url, r.credential);
    }
    println!("credentials:");
    for c in &st.credentials {
        let exp = c
            .expires_in_s
            .map(|s| {
                format!(
                    "expires in {}",
                    humantime::format_duration(Duration::from_secs(s))
                )
            })
            .unwrap_or_else(|| "no expiry".into());
        let exp = match &c.expires_on_its_own_at {
            Some(at) => format!("{exp} (not revocable: expires on its own at {at})"),
            None => exp,
        };
        let err = c
            .last_error
            .as_ref()
            .map(|e| format!("; last refresh error: {e}"))
            .unwrap_or_default();
        println!(
            "  {} {}: {exp}, {} rotations{}{err}",
            c.name,
            c.fingerprint.as_deref().unwrap_or("-"),
            c.rotations,
            if c.renewable { ", renewable" } else { "" }
        );
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[cfg(target_os = "linux")]
    #[test]
    fn an_unreaped_exited_process_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id() as i32;
        // Poll the real condition (bounded): the child has exited but is
        // not reaped, so it is a zombie that signal 0 still reaches.
        let zombie = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        };
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !zombie(pid) {
            assert!(std::time::Instant::now() < end, "child {pid} never exited");
            std::thread::yield_now();
        }
        assert!(
            kill(Pid::from_raw(pid), None).is_ok(),
            "a zombie still takes signal 0"
        );
        assert!(!alive(pid), "a zombie counts as gone");
        child.wait().expect("reap");
        assert!(!alive(pid));
        assert!(alive(std::process::id() as i32));
    }

    #[test]
    fn state_dir_follows_the_contract_order() {
        let e = MapEnv::new([("RUNNER_TEMP", "/rt"), ("XDG_RUNTIME_DIR", "/x")]);
        assert_eq!(state_dir(&e), PathBuf::from("/rt/lanyard"));
        let e = MapEnv::new([
            ("CI_BUILDS_DIR", "/b"),
            ("CI_JOB_ID", "9"),
            ("XDG_RUNTIME_DIR", "/x"),
        ]);
        assert_eq!(state_dir(&e), PathBuf::from("/b/.lanyard-9"));
        let e = MapEnv::new([("LANYARD_STATE_DIR", "/s"), ("RUNNER_TEMP", "/rt")]);
        assert_eq!(state_dir(&e), PathBuf::from("/s"));
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }

    #[test]
    fn parent_of_reads_proc() {
        let me = std::process::id() as i32;
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw()));
    }
}
