//! `lanyard __daemon`: the detached session `start` spawns. It reports
//! readiness over `ready.sock`, then serves `status` and `stop` on
//! `control.sock` until a `stop`, a signal, the watched process's end or
//! the maximum lifetime, and revokes everything before it exits.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::protocol::{self, CredentialStatus, Ready, RouteStatus, Status, StopReply};
use super::{alive, clean, AUDIT_PATH, CONTROL, PID_FILE, READY};
use crate::accept::{self, Backoff};
use crate::command::{CommandError, ExitCode};
use crate::config::Config;
use crate::env::Env;
use crate::session::{self, Session, SessionOptions};

const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Why: a client that connects and says nothing must not hold the socket.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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

/// `lanyard __daemon` (started by `start`, never by hand). A failure
/// before readiness goes to `start` over the ready socket, which says it;
/// the exit code is all that is left to return.
pub async fn daemon(env: &dyn Env, opts: DaemonOptions) -> Result<ExitCode, CommandError> {
    let dir = opts.state_dir;
    let ready_path = dir.join(READY);
    let cfg = match Config::load(&opts.config) {
        Ok(c) => c,
        Err(e) => {
            protocol::send_ready(&ready_path, &Ready::failed(e.to_string())).await;
            return Ok(ExitCode::Usage);
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
            protocol::send_ready(&ready_path, &Ready::failed(e.to_string())).await;
            return Ok(ExitCode::Failed);
        }
    };
    let control_path = dir.join(CONTROL);
    let _ = std::fs::remove_file(&control_path);
    let control = match UnixListener::bind(&control_path) {
        Ok(l) => l,
        Err(e) => {
            let why = format!("control socket {}: {e}", control_path.display());
            protocol::send_ready(&ready_path, &Ready::failed(why)).await;
            session.teardown().await;
            return Ok(ExitCode::Failed);
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
        protocol::send_ready(&ready_path, &Ready::failed(format!("pid file: {e}"))).await;
        session.teardown().await;
        return Ok(ExitCode::Failed);
    }
    let env_out: Vec<(String, String)> = session
        .exports()
        .into_iter()
        .map(|(k, v)| (k, v.expose().to_owned()))
        .collect();
    let ready = Ready {
        ok: true,
        error: None,
        pid,
        env: env_out,
        secret: session.proxy.secret().expose().to_owned(),
    };
    protocol::send_ready(&ready_path, &ready).await;
    drop(ready);
    tracing::info!("lanyard daemon ready on {}", session.proxy.addr);

    let signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            session.teardown().await;
            clean(&dir);
            return Err(CommandError::Signals(e));
        }
    };
    let cancel = CancellationToken::new();
    let (stop, ended) = tokio::join!(
        async {
            let stop = serve_control_socket(control, &session, cancel.clone()).await;
            cancel.cancel();
            stop
        },
        async {
            let why = tokio::select! {
                why = ends(signals, opts.max_lifetime, opts.watch_pid) => Some(why),
                () = cancel.cancelled() => None,
            };
            cancel.cancel();
            why
        },
    );
    let end = match (stop, ended) {
        (Some(s), _) => End::Stop(s),
        (None, Some(why)) => why,
        // Neither a stop nor an end: only a cancel from outside does that.
        (None, None) => End::Signal("a cancellation"),
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
                revoke_failed: done
                    .revoked
                    .iter()
                    .filter(|r| r.outcome.is_err())
                    .map(|r| r.name.clone())
                    .collect(),
            };
            protocol::send(&mut s, &reply).await;
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
    Ok(ExitCode::Ok)
}

type Signals = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

/// The daemon's ends other than `stop`: a signal, the maximum lifetime,
/// the watched process gone.
async fn ends(signals: Signals, max_lifetime: Duration, watch_pid: i32) -> End {
    let (mut term, mut int, mut hup) = signals;
    let deadline = tokio::time::Instant::now() + max_lifetime;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = term.recv() => return End::Signal("SIGTERM"),
            _ = int.recv() => return End::Signal("SIGINT"),
            _ = hup.recv() => return End::Signal("SIGHUP"),
            () = tokio::time::sleep_until(deadline) => return End::Lifetime,
            _ = tick.tick() => {
                if watch_pid > 1 && !alive(watch_pid) {
                    return End::Watched(watch_pid);
                }
            }
        }
    }
}

/// Serve `status` and `stop` on the control socket, to this user only,
/// until a `stop` (its stream is returned, for the reply) or `cancel`.
/// Accept errors wait (see `accept`) instead of spinning.
async fn serve_control_socket(
    listener: UnixListener,
    session: &Session,
    cancel: CancellationToken,
) -> Option<UnixStream> {
    let mut backoff = Backoff::default();
    while let Some(s) = accept::next(&listener, &mut backoff, &cancel).await {
        if !same_user(&s) {
            continue;
        }
        if let Some(s) = serve_control(s, session).await {
            return Some(s);
        }
    }
    None
}

fn same_user(s: &UnixStream) -> bool {
    s.peer_cred()
        .is_ok_and(|c| c.uid() == nix::unistd::getuid().as_raw())
}

/// One request per connection: `status` or `stop`. Returns the stream
/// when a stop was asked for.
async fn serve_control(s: UnixStream, session: &Session) -> Option<UnixStream> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, r.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(_))) {
        return None;
    }
    let mut s = r.into_inner();
    match line.trim() {
        "stop" => Some(s),
        "status" => {
            protocol::send(&mut s, &status_of(session)).await;
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
                    .filter(|e| *e > now)
                    .map(|e| e.saturating_duration_since(now).as_secs()),
                expired_s_ago: cur
                    .and_then(|c| c.expires_at)
                    .filter(|e| *e <= now)
                    .map(|e| now.saturating_duration_since(e).as_secs()),
                renewable: cur.is_some_and(|c| c.renewable),
                rotations: st.rotations,
                last_error: st.last_error.clone(),
                expires_on_its_own_at: cur
                    .and_then(|c| c.expires_at)
                    .filter(|e| *e > now && !store.revocable(n))
                    .map(|e| {
                        crate::identity::format_time(
                            std::time::SystemTime::now() + e.saturating_duration_since(now),
                        )
                    }),
                aws: aws_report(session, n, cur.map(|c| &**c)),
                azure: entra_report(session, n, cur.map(|c| &**c)),
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
        aws_container_endpoint: session.container_url(),
    }
}

/// An entra credential's app, assertion and token, for `status`.
fn entra_report(
    session: &Session,
    name: &str,
    cur: Option<&crate::store::Current>,
) -> Option<crate::exchange::azure::EntraReport> {
    let cfg = session.credentials().iter().find_map(|c| match &c.kind {
        crate::config::CredentialKind::Entra(e) if c.name == name => Some(e),
        _ => None,
    })?;
    let routes = session
        .routes()
        .iter()
        .filter(|r| r.credential == name)
        .map(|r| r.display_url())
        .collect();
    Some(crate::exchange::azure::EntraReport::new(
        cfg,
        cur.map_or(&[], |c| &c.about),
        routes,
    ))
}

/// An aws-web-identity credential's role session, for `status`.
fn aws_report(
    session: &Session,
    name: &str,
    cur: Option<&crate::store::Current>,
) -> Option<crate::exchange::aws::SessionReport> {
    let cfg = session.credentials().iter().find_map(|c| match &c.kind {
        crate::config::CredentialKind::AwsWebIdentity(a) if c.name == name => Some(a),
        _ => None,
    })?;
    let routes = session
        .routes()
        .iter()
        .filter(|r| r.credential == name)
        .map(|r| r.display_url())
        .collect();
    Some(crate::exchange::aws::SessionReport::new(
        cfg,
        cur.map_or(&[], |c| &c.about),
        cur.map(|c| &c.value),
        routes,
    ))
}
