//! `lanyard run -- CMD...`: start a session, run CMD with the proxy
//! environment in its own process group, forward SIGINT/SIGTERM/SIGHUP to
//! that group, end what CMD left running in it, tear down, and exit with
//! CMD's status.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use crate::command::{CommandError, ExitCode};
use crate::config::Config;
use crate::env::Env;
use crate::session::{self, Session, SessionOptions};

pub struct RunOptions {
    pub command: Vec<String>,
    pub audience: Option<String>,
    pub max_lifetime: Duration,
}

/// A private folder for this run's CA bundle, removed at the end.
struct RunDir(PathBuf);

impl RunDir {
    fn new() -> std::io::Result<RunDir> {
        let tag =
            crate::secret::Secret::random(8).map_err(|e| std::io::Error::other(e.to_string()))?;
        let p = std::env::temp_dir().join(format!("lanyard-run-{}", tag.expose()));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&p)?;
        Ok(RunDir(p))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One line naming the variables (never their values) that would take
/// precedence over the metadata server, and what was done about them.
pub fn stale_google_line(names: &[&str], done: &str) -> String {
    format!(
        "{} {done}: with a gcp-workload-identity credential, Google's libraries must find lanyard's metadata server, and these (a credentials file or token from an earlier step) would come first",
        names.join(", ")
    )
}

pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    }
}

/// `lanyard run`: CMD's status when it ran; a failure to start (CMD not
/// run) or to spawn CMD is the error, said after the teardown.
pub async fn run(cfg: &Config, env: &dyn Env, opts: RunOptions) -> Result<ExitCode, CommandError> {
    let Some((program, args)) = opts.command.split_first() else {
        return Err(CommandError::NoCommand);
    };
    let dir = RunDir::new().map_err(CommandError::RunDir)?;
    let session = match Session::start(
        cfg,
        env,
        SessionOptions {
            dir: dir.0.clone(),
            max_lifetime: opts.max_lifetime,
            audience: opts.audience,
        },
    )
    .await
    {
        Ok(s) => s,
        Err(source) => {
            return Err(CommandError::NotStarted {
                program: program.clone(),
                source: Box::new(source),
            })
        }
    };
    for w in crate::outbound::bypass::no_proxy_warnings(env, &cfg.routes) {
        eprintln!("lanyard: {w}");
    }
    for name in &session.control.skipped {
        eprintln!("lanyard: credential {name} not obtained: only routes for CI identities use it, and this session is a developer login");
    }
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for k in session.scrub() {
        cmd.env_remove(k);
    }
    let stale = crate::config::gcp_overriding_variables(&cfg.credentials, env);
    if !stale.is_empty() {
        for k in &stale {
            cmd.env_remove(k);
        }
        eprintln!(
            "lanyard: {}",
            stale_google_line(&stale, "removed from the command's environment")
        );
    }
    for (k, v) in session.exports() {
        cmd.env(k, v.expose());
    }
    // Its own group, so a signal reaches everything CMD started.
    cmd.process_group(0);
    let code = match cmd.spawn() {
        Ok(child) => {
            let group = child.id().map(|id| Pid::from_raw(id as i32));
            let waited = wait_forwarding(child, opts.max_lifetime).await;
            if let Some(g) = group {
                end_group(g).await;
            }
            Ok(match waited {
                Waited::Exited(code) => ExitCode::Child(code),
                Waited::LifetimePassed => ExitCode::LifetimePassed,
            })
        }
        Err(source) => Err(CommandError::Spawn {
            program: program.clone(),
            source,
        }),
    };
    let done = session.teardown().await;
    eprint!("{}", session::revoke_lines(&done.revoked));
    eprint!("{}", done.summary.table());
    session::write_step_summary(env, &done.summary);
    drop(dir);
    eprint!("{}", session::audit_kept_line(&done.audit));
    code
}

/// Why: CMD's background processes would outlive the job holding a proxy
/// address that no longer answers; nothing lanyard started may outlive it.
/// Polled, bounded: SIGTERM, then SIGKILL after this long.
const GROUP_GRACE: Duration = Duration::from_secs(5);

/// Does the group still have a running (not zombie) member?
/// Why not signal 0 alone: it reaches zombies too, and orphans are reaped
/// by whatever adopted them (PID 1 in a container can take seconds).
fn group_alive(group: Pid) -> bool {
    if killpg(group, None).is_err() {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        // No /proc (not Linux): the signal check decides.
        return true;
    };
    dir.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let mut f = stat
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace();
            let state = f.next().unwrap_or("Z");
            let pgrp = f.nth(1).and_then(|g| g.parse::<i32>().ok());
            state != "Z" && state != "X" && pgrp == Some(group.as_raw())
        })
    })
}

/// End what CMD left running in its process group: SIGTERM, and SIGKILL
/// for what is still there after [`GROUP_GRACE`].
async fn end_group(group: Pid) {
    // ESRCH: the group is empty (CMD left nothing behind).
    if killpg(group, Signal::SIGTERM).is_err() {
        return;
    }
    let end = tokio::time::Instant::now() + GROUP_GRACE;
    while group_alive(group) {
        if tokio::time::Instant::now() >= end {
            eprintln!(
                "lanyard run: processes CMD left running did not end on SIGTERM within {}s; sending SIGKILL",
                GROUP_GRACE.as_secs()
            );
            let _ = killpg(group, Signal::SIGKILL);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How CMD's wait ended.
enum Waited {
    /// CMD exited (its status, 128+signal when killed).
    Exited(i32),
    /// `--max-lifetime` passed: CMD's group was ended.
    LifetimePassed,
}

/// Wait for CMD, forwarding signals to its group. When `max_lifetime`
/// passes first, CMD's group is ended as the daemon ends a `start`ed
/// session: the credentials must not outlive the job's stated lifetime.
async fn wait_forwarding(child: tokio::process::Child, max_lifetime: Duration) -> Waited {
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let deadline = tokio::time::Instant::now() + max_lifetime;
    tokio::select! {
        code = wait_child(child) => Waited::Exited(code),
        () = tokio::time::sleep_until(deadline) => {
            eprintln!(
                "lanyard run: the maximum lifetime ({}) passed; ending the command (SIGTERM to its process group) and revoking (exit status 124)",
                humantime::format_duration(max_lifetime)
            );
            if let Some(g) = pgid {
                end_group(g).await;
            }
            Waited::LifetimePassed
        }
    }
}

async fn wait_child(mut child: tokio::process::Child) -> i32 {
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let (mut int, mut term, mut hup) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            eprintln!("lanyard run: cannot watch signals; the command runs without forwarding");
            return match child.wait().await {
                Ok(st) => exit_code(st),
                Err(_) => 1,
            };
        }
    };
    loop {
        let sig = tokio::select! {
            st = child.wait() => {
                return match st {
                    Ok(st) => exit_code(st),
                    Err(e) => {
                        eprintln!("lanyard run: waiting for the command: {e}");
                        1
                    }
                };
            }
            _ = int.recv() => Signal::SIGINT,
            _ = term.recv() => Signal::SIGTERM,
            _ = hup.recv() => Signal::SIGHUP,
        };
        if let Some(pg) = pgid {
            let _ = killpg(pg, sig);
        }
    }
}
