//! What every command returns: an [`ExitCode`] when it ran to its end, or a
//! [`CommandError`] when it could not. Only `cli.rs` prints the error and
//! turns either into the process's exit status.

use crate::config::ConfigErrors;
use crate::daemon::StartError;
use crate::http::HttpError;
use crate::identity::login::LoginError;
use crate::session::SessionError;

/// The exit codes of every command: the one table (README "Exit codes" and
/// "Job lifecycle", docs/lifecycle-contract.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 0: done (`status`: running).
    Ok,
    /// 1: an identity, exchange or revocation step failed; `start` never
    /// got ready; `status`: not running.
    Failed,
    /// 2: a usage or config error.
    Usage,
    /// 3: `stop`: a credential's revocation failed; it stays valid until
    /// it expires. Everything else was stopped and removed.
    RevokeFailed,
    /// 124: `run`: `--max-lifetime` passed while CMD ran; CMD's process
    /// group was ended (SIGTERM, SIGKILL after 5 s) and everything revoked.
    LifetimePassed,
    /// 125: `run`: lanyard failed to start (identity, exchange, listener);
    /// CMD is not run (the `env`/`docker run` convention).
    StartFailed,
    /// 126: `run`: CMD is not executable.
    NotExecutable,
    /// 127: `run`: CMD is not found.
    NotFound,
    /// `run`: CMD's own status (128+signal when it was killed).
    Child(i32),
}

impl ExitCode {
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Failed => 1,
            ExitCode::Usage => 2,
            ExitCode::RevokeFailed => 3,
            ExitCode::LifetimePassed => 124,
            ExitCode::StartFailed => 125,
            ExitCode::NotExecutable => 126,
            ExitCode::NotFound => 127,
            ExitCode::Child(c) => c,
        }
    }
}

/// Why a command stopped. The text never holds a secret: every cause is
/// already redacted where it was made.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The config file: not found, unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A bad `LANYARD_WORKER_THREADS`.
    #[error("{0}")]
    Workers(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("no command given (usage: lanyard run [--config F] -- CMD...)")]
    NoCommand,
    #[error("cannot make a private folder: {0}")]
    RunDir(#[source] std::io::Error),
    #[error("not running {program}: {source}")]
    NotStarted {
        program: String,
        #[source]
        source: Box<SessionError>,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("bad answer from the daemon: {0}")]
    BadAnswer(#[source] serde_json::Error),
    #[error("cannot watch signals; stopping")]
    Signals(#[source] std::io::Error),
    #[error("{} has no [login] table; {missing}", path.display())]
    NoLogin {
        path: std::path::PathBuf,
        missing: &'static str,
    },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("corporate proxy: {0}")]
    UpstreamProxy(#[from] crate::outbound::ProxyEnvError),
}
