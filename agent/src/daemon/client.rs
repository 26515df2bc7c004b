//! `lanyard start`, `stop` and `status` as the caller sees them: spawn the
//! daemon and wait for its ready message; ask it to stop or for its status
//! over the control socket; clean up after a daemon that is gone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::net::{UnixListener, UnixStream};

use super::export::{export, Export, ExportError};
use super::protocol::{self, ReadyError, RequestError, Status, StopReply};
use super::{
    alive, clean, ensure_dir, open_private, parent_of, read_pid, state_dir, StateDirError,
    AUDIT_PATH, CONTROL, CREATED, LOG, READY,
};
use crate::audit::Summary;
use crate::command::{CommandError, ExitCode};
use crate::env::Env;
use crate::session;

/// Why: a first exchange against a slow token service still finishes well
/// inside this; past it, `start` reports the daemon as stuck.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Why: revocation calls each have a 30 s timeout; stop waits for them.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);
/// Why: after the daemon exited, its ready message (if it sent one) is
/// already queued on the socket; this only bounds a scheduling delay.
const READY_AFTER_EXIT: Duration = Duration::from_millis(500);

pub struct StartOptions {
    pub config: PathBuf,
    pub audience: Option<String>,
    pub export: Export,
    pub env_file: Option<PathBuf>,
    pub max_lifetime: Option<Duration>,
    pub watch_pid: Option<i32>,
    /// Variables in the caller's environment that would take precedence
    /// over the GCE metadata server ([`crate::config::gcp_overriding_variables`]).
    pub stale_google: Vec<&'static str>,
    /// Routes the job's `NO_PROXY` sends around lanyard
    /// ([`crate::outbound::bypass`]), one warning line each.
    pub no_proxy_warnings: Vec<String>,
}

/// Why `lanyard start` did not leave a ready daemon behind.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("already running (pid {pid}) with state in {}; run `lanyard stop` first", dir.display())]
    AlreadyRunning { pid: i32, dir: PathBuf },
    #[error("cannot find my own binary: {0}")]
    OwnBinary(#[source] std::io::Error),
    #[error("cannot listen on {}: {source}", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    LogClone(#[source] std::io::Error),
    #[error("cannot start the daemon: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the daemon exited before it was ready ({status}); its log: {log}")]
    ExitedEarly { status: String, log: String },
    #[error("the daemon was not ready after {}s; its log: {log}", READY_TIMEOUT.as_secs())]
    NotReady { log: String },
    #[error(transparent)]
    Ready(#[from] ReadyError),
    /// The daemon's own words: the control plane's error.
    #[error("{0}")]
    Daemon(String),
    #[error("{0}; stopping the daemon")]
    Export(#[source] ExportError),
}

/// `lanyard start`.
pub async fn start(env: &dyn Env, opts: StartOptions) -> Result<ExitCode, CommandError> {
    let dir = state_dir(env);
    let created = ensure_dir(&dir).map_err(StartError::from)?;
    if let Some(pid) = read_pid(&dir) {
        if alive(pid) && UnixStream::connect(dir.join(CONTROL)).await.is_ok() {
            return Err(StartError::AlreadyRunning { pid, dir }.into());
        }
        clean(&dir);
        let _ = ensure_dir(&dir);
    }
    if created {
        let _ = std::fs::write(dir.join(CREATED), b"");
    }
    let exe = std::env::current_exe().map_err(StartError::OwnBinary)?;
    let ready_path = dir.join(READY);
    let _ = std::fs::remove_file(&ready_path);
    let ready = UnixListener::bind(&ready_path).map_err(|source| StartError::Listen {
        path: ready_path.clone(),
        source,
    })?;
    let log = open_private(&dir.join(LOG), true).map_err(|source| StartError::Log {
        path: dir.join(LOG),
        source,
    })?;
    let log2 = log.try_clone().map_err(StartError::LogClone)?;
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
    let mut child = cmd.spawn().map_err(StartError::Spawn)?;
    // Why one future, polled to the end: the daemon's exit can be seen
    // after `read_ready` accepted its connection but before the line was
    // read. Dropping that read and starting another would wait for a
    // second connection that never comes and lose the daemon's error
    // (seen as "exited before it was ready; its log: (empty)").
    let read = protocol::read_ready(&ready);
    tokio::pin!(read);
    let reply = tokio::select! {
        r = &mut read => r.map_err(StartError::from),
        st = child.wait() => {
            // A daemon that fails writes its error to the ready socket and
            // exits at once, so its exit can be seen before the message is
            // read (regression: the Action's "issuer refuses" test on a
            // fresh clone). A message already sent is read, not lost.
            match tokio::time::timeout(READY_AFTER_EXIT, &mut read).await {
                Ok(Ok(r)) => Ok(r),
                _ => Err(StartError::ExitedEarly {
                    status: st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    log: log_tail(&dir),
                }),
            }
        }
        () = tokio::time::sleep(READY_TIMEOUT) => Err(StartError::NotReady { log: log_tail(&dir) }),
    };
    let _ = std::fs::remove_file(&ready_path);
    let ready = match reply {
        Ok(r) if r.ok => r,
        Ok(r) => {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            clean(&dir);
            let said = r.error.clone().unwrap_or_else(|| "failed".into());
            return Err(StartError::Daemon(said).into());
        }
        Err(e) => {
            let _ = child.start_kill();
            clean(&dir);
            return Err(e.into());
        }
    };
    let mut vars = ready.env.clone();
    vars.push(("LANYARD_STATE_DIR".into(), dir.display().to_string()));
    let exported = export(
        env,
        &dir,
        opts.export,
        opts.env_file.as_deref(),
        &vars,
        &ready.secret,
    );
    if let Err(e) = exported {
        let _ = stop_via_socket(&dir).await;
        clean(&dir);
        return Err(StartError::Export(e).into());
    }
    if !opts.stale_google.is_empty() {
        // Why: `start` cannot change its caller's environment; `eval` of
        // the sh export can, other exports cannot unset.
        let done = if opts.export == Export::Sh {
            for k in &opts.stale_google {
                println!("unset {k}");
            }
            "are set (the sh export unsets them; with another export, unset them in the job)"
        } else {
            "are set: unset them in the job's later steps"
        };
        eprintln!(
            "lanyard: warning: {}",
            crate::run::stale_google_line(&opts.stale_google, done)
        );
    }
    for w in &opts.no_proxy_warnings {
        eprintln!("lanyard: {w}");
    }
    eprintln!(
        "lanyard: ready (pid {}); state in {}",
        ready.pid,
        dir.display()
    );
    Ok(ExitCode::Ok)
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

async fn stop_via_socket(dir: &Path) -> Result<StopReply, RequestError> {
    let line = protocol::request(dir, "stop", STOP_TIMEOUT).await?;
    serde_json::from_str(&line).map_err(RequestError::Bad)
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

/// `lanyard stop`: idempotent; it ends with 0 and says what it found, or
/// with 3 when a revocation failed (the credential outlives the job).
pub async fn stop(env: &dyn Env) -> Result<ExitCode, CommandError> {
    let dir = state_dir(env);
    if !dir.exists() {
        println!("lanyard: not running (no state in {})", dir.display());
        return Ok(ExitCode::Ok);
    }
    let pid = read_pid(&dir);
    match stop_via_socket(&dir).await {
        Ok(reply) => {
            let failed = reply.revoke_failed.clone();
            stopped(env, &dir, pid, reply).await;
            if !failed.is_empty() {
                eprintln!(
                    "lanyard stop: revocation failed for {}: still valid until it expires (see above); exit status 3",
                    failed.join(", ")
                );
                return Ok(ExitCode::RevokeFailed);
            }
        }
        Err(why) => gone(env, &dir, pid, why).await,
    }
    Ok(ExitCode::Ok)
}

/// The daemon answered `stop`: print what it revoked, wait for it to exit.
async fn stopped(env: &dyn Env, dir: &Path, pid: Option<i32>, reply: StopReply) {
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
            eprintln!("lanyard stop: the daemon (pid {p}) is still running after its teardown");
        }
    }
    clean(dir);
    println!("lanyard: stopped; removed {}", dir.display());
    if !reply.audit.is_empty() {
        print!("{}", session::audit_kept_line(Path::new(&reply.audit)));
    }
}

/// No answer: a crash, a kill -9, or a stop that already ran.
async fn gone(env: &dyn Env, dir: &Path, pid: Option<i32>, why: RequestError) {
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
        None => {
            println!("lanyard: not running (found a state folder without a daemon); cleaning up")
        }
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
    clean(dir);
    if let Some(path) = &audit {
        print!("{}", session::audit_kept_line(path));
    }
}

/// `lanyard status`: 0 running, 1 not running (said on stdout).
pub async fn status(env: &dyn Env, json: bool) -> Result<ExitCode, CommandError> {
    let dir = state_dir(env);
    let Ok(line) = protocol::request(&dir, "status", Duration::from_secs(10)).await else {
        println!("lanyard: not running (state folder {})", dir.display());
        return Ok(ExitCode::Failed);
    };
    let st: Status = serde_json::from_str(&line).map_err(CommandError::BadAnswer)?;
    if json {
        println!("{}", line.trim_end());
    } else {
        print!("{}", human_status(&st));
    }
    Ok(ExitCode::Ok)
}

fn human_status(st: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lanyard: running (pid {}), proxy on {}",
        st.pid, st.proxy
    );
    if !st.identity.is_empty() {
        let _ = writeln!(out, "identity: {}", st.identity);
    }
    let _ = writeln!(out, "routes:");
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
        let _ = writeln!(out, "  {}{m} → {}{kinds}", r.url, r.credential);
    }
    if let Some(u) = &st.aws_container_endpoint {
        let _ = writeln!(out, "AWS container-credentials endpoint: {u}");
    }
    let _ = writeln!(out, "credentials:");
    for c in &st.credentials {
        let ago = c.expired_s_ago.map(|s| {
            format!(
                "EXPIRED {} ago",
                humantime::format_duration(Duration::from_secs(s))
            )
        });
        let exp = c
            .expires_in_s
            .map(|s| {
                format!(
                    "expires in {}",
                    humantime::format_duration(Duration::from_secs(s))
                )
            })
            .or(ago)
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
        let _ = writeln!(
            out,
            "  {} {}: {exp}, {} rotations{}{err}",
            c.name,
            c.fingerprint.as_deref().unwrap_or("-"),
            c.rotations,
            if c.renewable { ", renewable" } else { "" }
        );
        for l in c.aws.iter().flat_map(|a| a.lines()) {
            let _ = writeln!(out, "    {l}");
        }
        for l in c.azure.iter().flat_map(|a| a.lines()) {
            let _ = writeln!(out, "    {l}");
        }
    }
    out
}
