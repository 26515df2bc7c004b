//! Developer login: the identity stage for laptops. `lanyard login` signs
//! the developer in to the company IdP with OpenID Connect (the RFC 8628
//! device grant, or authorization code + PKCE with a loopback redirect),
//! verifies the ID token (signature by the IdP's JWKS, iss, aud = our
//! client, exp, nonce) and keeps only the refresh token, in a private file
//! (`store.rs`). A running lanyard turns that refresh token into fresh,
//! verified ID tokens on demand; they are the identity the exchanges get,
//! exactly where a CI job's platform token would go.
//!
//! The `openidconnect` crate does the protocol; its HTTP goes through our
//! own client (`http/`), so the transport rule, timeouts and size caps are
//! the same as everywhere else.
//!
//! `idp`: discovery and the flows; `verify`: the ID token checks;
//! `callback`: the PKCE redirect listener; `source`: the running identity
//! source; `store`: the refresh-token file. This file: the errors and the
//! `login` / `logout` commands' protocol side.

mod callback;
mod idp;
mod source;
pub mod store;
mod verify;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{LoginConfig, LoginFlow};
use crate::env::Env;
use crate::http::{HttpClient, HttpError};
use crate::secret::redact;
#[cfg(test)]
use crate::secret::Secret;
pub use idp::{ExtraMetadata, Idp, Metadata};
pub use source::LoginSource;
pub use store::{StoreError, Stored, TokenFile};
pub use verify::{verifier, verify_id_token, LoginIdentity, NonceRule};

/// Why: a developer may need a minute to find the browser tab; an IdP's
/// device code usually lives 5–15 minutes and its own `expires_in` wins.
pub const PKCE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("OpenID discovery at {issuer} failed: {}", crate::http::error_chain(.cause))]
    Discovery {
        issuer: String,
        #[source]
        cause: DiscoveryProblem,
    },
    #[error("the IdP at {issuer} advertises no device_authorization_endpoint; set [login] flow = \"pkce\" (or pass --flow pkce)")]
    NoDeviceEndpoint { issuer: String },
    /// `detail` is the server's own words (redacted and cut short).
    #[error("the IdP refused the {step}: {detail}")]
    Refused { step: &'static str, detail: String },
    /// A request the client could not make from what discovery gave.
    #[error("the IdP refused the {step}: {cause}")]
    Unconfigured {
        step: &'static str,
        #[source]
        cause: openidconnect::ConfigurationError,
    },
    #[error("the IdP refused the revocation: bad revocation_endpoint in discovery: {0}")]
    RevocationUrl(#[source] url::ParseError),
    #[error("the ID token from {issuer} was refused: {reason}")]
    IdToken { issuer: String, reason: String },
    #[error("the IdP's {step} answer has no ID token; is the `openid` scope allowed for client {client_id}?")]
    NoIdToken {
        step: &'static str,
        client_id: String,
    },
    #[error("the IdP gave no refresh token; client {client_id} needs the refresh_token grant and the offline_access scope")]
    NoRefreshToken { client_id: String },
    #[error(
        "the developer login for {issuer} is no longer valid ({detail}); run `lanyard login` again"
    )]
    Expired { issuer: String, detail: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("browser sign-in: {0}")]
    Browser(String),
    #[error("browser sign-in: cannot listen on 127.0.0.1: {0}")]
    Listen(#[source] std::io::Error),
    #[error("browser sign-in: {0}")]
    Callback(#[source] std::io::Error),
    #[error("browser sign-in: {0}")]
    RedirectUrl(#[source] url::ParseError),
    #[error("no sign-in within {}s", .0.as_secs())]
    Timeout(Duration),
}

/// Why OpenID discovery failed: the issuer is not a URL, or fetching or
/// checking its document (or JWKS) failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryProblem {
    #[error(transparent)]
    Issuer(#[from] url::ParseError),
    #[error(transparent)]
    Fetch(#[from] crate::discovery::DiscoveryError),
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    crate::secret::ct_eq(a, b)
}

fn server_words(code: &str, description: Option<&String>) -> String {
    let text = match description {
        Some(d) => format!("{code}: {d}"),
        None => code.to_owned(),
    };
    crate::identity::truncate(&redact(&text, &[]), 300)
}

/// `lanyard login`: sign in with the configured (or given) flow and save
/// the refresh token. Returns the identity and where it was saved.
pub async fn login(
    cfg: &LoginConfig,
    flow: LoginFlow,
    http: &HttpClient,
    env: &dyn Env,
    say: &dyn Fn(&str),
) -> Result<(LoginIdentity, TokenFile), LoginError> {
    let file = TokenFile::for_login(cfg, env)?;
    // Fail before the user spends time in a browser.
    file.check_dir()?;
    let idp = Idp::discover(http, cfg).await?;
    let (id, rt, nonce) = match flow {
        LoginFlow::Device => idp.device_login(http, cfg, say).await?,
        LoginFlow::Pkce => idp.pkce_login(http, cfg, env, say).await?,
    };
    let _guard = file.lock().await?;
    file.write(&Stored {
        issuer: idp.issuer().to_owned(),
        client_id: cfg.client_id.clone(),
        refresh_token: rt,
        subject: id.subject.clone(),
        email: id.email.clone(),
        nonce: Some(nonce),
        saved_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })?;
    Ok((id, file))
}

/// What `lanyard logout` did.
#[derive(Debug)]
pub struct LoggedOut {
    pub path: std::path::PathBuf,
    /// Whether there was a stored login at all.
    pub found: bool,
    /// `Some(true)`: revoked at the IdP; `Some(false)`: the IdP offers no
    /// revocation; `None`: nothing to revoke.
    pub revoked: Option<bool>,
    /// Why revocation failed (the file is removed anyway).
    pub revoke_error: Option<LoginError>,
}

/// `lanyard logout`: revoke at the IdP when it offers RFC 7009, then
/// remove the file. Idempotent.
pub async fn logout(
    cfg: &LoginConfig,
    http: &HttpClient,
    env: &dyn Env,
) -> Result<LoggedOut, LoginError> {
    let file = TokenFile::for_login(cfg, env)?;
    let _guard = file.lock().await?;
    let stored = match file.read_for_removal()? {
        Some(s) => s,
        None => {
            return Ok(LoggedOut {
                path: file.path.clone(),
                found: false,
                revoked: None,
                revoke_error: None,
            })
        }
    };
    let revoked = match Idp::discover(http, cfg).await {
        Ok(idp) => idp.revoke(http, &stored.refresh_token).await,
        Err(e) => Err(e),
    };
    file.remove()?;
    let (revoked, revoke_error) = match revoked {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    Ok(LoggedOut {
        path: file.path.clone(),
        found: true,
        revoked,
        revoke_error,
    })
}

#[cfg(test)]
mod tests;
