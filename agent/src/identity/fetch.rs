//! Fetching the identity token from where each platform keeps it: GitHub's
//! token endpoint, `buildkite-agent`, a token file. Each answer goes
//! straight into an [`IdentityJwt`]; each failure keeps its cause as the
//! error's source.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::{truncate, ClaimsError, IdentityError};
use crate::http::{Header, HttpClient};
use crate::secret::{redact, IdentityJwt, Secret};

/// Why: `buildkite-agent` talks to the Buildkite API; it must not hang a job.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Token files and variables are small; anything larger is not a JWT.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Why `buildkite-agent oidc request-token` gave no token.
#[derive(Debug, thiserror::Error)]
pub enum BuildkiteProblem {
    #[error("no answer within {}s", COMMAND_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0}")]
    Spawn(#[from] std::io::Error),
    /// `stderr` is truncated and has tokens redacted.
    #[error("{status}: {stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("output is not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
}

/// Why a token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("no [identity] path configured")]
    NotConfigured,
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("larger than {MAX_TOKEN_BYTES} bytes; not a token")]
    TooLarge,
    #[error("not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("empty")]
    Empty,
}

/// What is wrong with an identity token (or the URL it is minted at).
#[derive(Debug, thiserror::Error)]
pub enum InvalidToken {
    #[error("{0}")]
    Claims(#[from] ClaimsError),
    #[error("not a URL ({0})")]
    Url(#[from] url::ParseError),
}

pub(super) async fn github(
    http: &HttpClient,
    base: &Url,
    bearer: &Secret,
    audience: Option<&str>,
) -> Result<IdentityJwt, IdentityError> {
    // The documented URL already carries `?api-version=...`; append.
    let mut url = base.clone();
    if let Some(a) = audience {
        url.query_pairs_mut().append_pair("audience", a);
    }
    let resp = http
        .get(
            &url,
            &[Header::Secret(
                http::header::AUTHORIZATION,
                zeroize::Zeroizing::new(format!("bearer {}", bearer.expose())),
            )],
        )
        .await?;
    if !resp.status.is_success() {
        let body = redact(&resp.text_lossy(), &[bearer]);
        return Err(IdentityError::GithubRefused {
            status: resp.status.as_u16(),
            body: truncate(&body, 300),
        });
    }
    /// The token goes straight into its typed secret, never a plain string.
    #[derive(serde::Deserialize)]
    struct Answer {
        value: Option<IdentityJwt>,
    }
    let a: Answer =
        serde_json::from_slice(&resp.body).map_err(|_| IdentityError::GithubBadAnswer {
            status: resp.status.as_u16(),
        })?;
    match a.value {
        Some(v) if !v.as_secret().is_empty() => Ok(v),
        _ => Err(IdentityError::GithubBadAnswer {
            status: resp.status.as_u16(),
        }),
    }
}

pub(super) async fn buildkite(
    agent: &str,
    audience: Option<&str>,
) -> Result<IdentityJwt, IdentityError> {
    let mut cmd = tokio::process::Command::new(agent);
    cmd.args(["oidc", "request-token"]);
    if let Some(a) = audience {
        cmd.args(["--audience", a]);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let fail = |reason: BuildkiteProblem| IdentityError::Buildkite {
        command: agent.to_owned(),
        reason,
    };
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .map_err(|_| fail(BuildkiteProblem::Timeout))?
        .map_err(|e| fail(e.into()))?;
    let stdout = zeroize::Zeroizing::new(out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(BuildkiteProblem::Failed {
            status: out.status,
            stderr: truncate(&redact(stderr.trim(), &[]), 300),
        }));
    }
    let text = std::str::from_utf8(&stdout).map_err(|e| fail(BuildkiteProblem::NotUtf8(e)))?;
    Ok(IdentityJwt::new(text.trim()))
}

pub(super) async fn read_file(path: &PathBuf) -> Result<IdentityJwt, IdentityError> {
    let fail = |reason: FileProblem| IdentityError::File {
        path: path.clone(),
        reason,
    };
    let bytes = zeroize::Zeroizing::new(tokio::fs::read(path).await.map_err(|e| fail(e.into()))?);
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(fail(FileProblem::TooLarge));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| fail(FileProblem::NotUtf8(e)))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(fail(FileProblem::Empty));
    }
    Ok(IdentityJwt::new(t))
}
