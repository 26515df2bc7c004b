//! The messages between `start`/`stop`/`status` and the daemon: one JSON
//! line each. `Ready` goes over the one-shot `ready.sock`; `status` and
//! `stop` are one request line on `control.sock`, answered by a `Status`
//! or a `StopReply`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::CONTROL;

/// The daemon's first word to `start`: ready (with the job's environment)
/// or the control plane's error.
#[derive(Serialize, Deserialize)]
pub(super) struct Ready {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub pid: u32,
    /// The job's environment; the proxy URLs in it hold the proxy secret.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The proxy secret.
    #[serde(default)]
    pub secret: String,
}

/// Names only: the values of `env` and `secret` hold the proxy secret.
impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Ready")
            .field("ok", &self.ok)
            .field("error", &self.error)
            .field("pid", &self.pid)
            .field("env", &names)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl Ready {
    pub fn failed(error: String) -> Ready {
        Ready {
            ok: false,
            error: Some(error),
            pid: 0,
            env: vec![],
            secret: String::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StopReply {
    pub revoked: String,
    pub table: String,
    pub markdown: String,
    /// The audit file, kept.
    #[serde(default)]
    pub audit: String,
    /// Credentials whose revocation failed (still valid until they expire).
    #[serde(default)]
    pub revoke_failed: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Status {
    pub pid: u32,
    pub proxy: String,
    /// `a CI identity (github (sub …))` or `a developer login (lanyard login as …)`.
    #[serde(default)]
    pub identity: String,
    pub routes: Vec<RouteStatus>,
    pub credentials: Vec<CredentialStatus>,
    /// The AWS container-credentials endpoint's URL, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_container_endpoint: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RouteStatus {
    pub url: String,
    pub credential: String,
    pub methods: Option<Vec<String>>,
    pub name: Option<String>,
    /// `CI identities only`, `developer identities only`, or both.
    #[serde(default)]
    pub identities: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CredentialStatus {
    pub name: String,
    pub fingerprint: Option<String>,
    /// Seconds until the current value expires; `null` once it has.
    pub expires_in_s: Option<u64>,
    /// Seconds since the current value expired (it is no longer attached
    /// usefully: the upstream refuses it); `null` while it is valid.
    #[serde(default)]
    pub expired_s_ago: Option<u64>,
    pub renewable: bool,
    pub rotations: u64,
    pub last_error: Option<String>,
    /// Set when the service has no revocation (AWS STS): when the current
    /// value ends by itself, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on_its_own_at: Option<String>,
    /// An aws-web-identity credential's role session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<crate::exchange::aws::SessionReport>,
    /// An entra credential's app, assertion and token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<crate::exchange::azure::EntraReport>,
}

/// Write `msg` as one JSON line.
pub(super) async fn send<T: Serialize>(s: &mut UnixStream, msg: &T) {
    let mut line = serde_json::to_string(msg).unwrap_or_default();
    line.push('\n');
    let _ = s.write_all(line.as_bytes()).await;
}

/// The daemon's side of `ready.sock`: best effort, `start` reports a
/// daemon that said nothing.
pub(super) async fn send_ready(path: &Path, r: &Ready) {
    if let Ok(mut s) = UnixStream::connect(path).await {
        send(&mut s, r).await;
    }
}

/// `start`'s side of `ready.sock`.
pub(super) async fn read_ready(l: &UnixListener) -> Result<Ready, ReadyError> {
    let (s, _) = l.accept().await.map_err(ReadyError::Io)?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .await
        .map_err(ReadyError::Io)?;
    serde_json::from_str(&line).map_err(ReadyError::Bad)
}

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("bad ready message from the daemon: {0}")]
    Bad(#[source] serde_json::Error),
}

/// Why a control request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("no answer to {what} within {}s", .timeout.as_secs())]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("bad answer from the daemon: {0}")]
    Bad(#[source] serde_json::Error),
}

/// One request on `control.sock`; the answer line.
pub(super) async fn request(
    dir: &Path,
    what: &'static str,
    timeout: Duration,
) -> Result<String, RequestError> {
    let mut s = UnixStream::connect(dir.join(CONTROL))
        .await
        .map_err(RequestError::Io)?;
    s.write_all(format!("{what}\n").as_bytes())
        .await
        .map_err(RequestError::Io)?;
    let mut line = String::new();
    tokio::time::timeout(timeout, BufReader::new(s).read_line(&mut line))
        .await
        .map_err(|_| RequestError::Timeout { what, timeout })?
        .map_err(RequestError::Io)?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_debug_shows_no_secret() {
        let secret = "s3cr3t-proxy-value-0123456789";
        let url = format!("http://lanyard:{secret}@127.0.0.1:4000");
        let r = Ready {
            ok: true,
            error: None,
            pid: 42,
            env: vec![
                ("HTTPS_PROXY".into(), url.clone()),
                ("http_proxy".into(), url),
            ],
            secret: secret.into(),
        };
        let shown = format!("{r:?} {r:#?}");
        assert!(!shown.contains(secret), "Debug shows the secret: {shown}");
        assert!(shown.contains("HTTPS_PROXY"), "names stay visible: {shown}");
        assert!(shown.contains("42"), "{shown}");
        // The wire form still carries it: `start` needs it.
        let wire = serde_json::to_string(&r).expect("serialise");
        assert!(wire.contains(secret));
    }
}
