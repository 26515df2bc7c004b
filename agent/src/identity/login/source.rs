//! The identity source for `source = "login"`.

use std::time::SystemTime;

use super::idp::Idp;
use super::verify::LoginIdentity;
use super::{LoginError, Stored, TokenFile};
use crate::config::LoginConfig;
use crate::env::Env;
use crate::http::HttpClient;

/// The identity source for `source = "login"`: the stored refresh token,
/// turned into a verified ID token whenever the current one is near expiry.
pub struct LoginSource {
    pub cfg: LoginConfig,
    pub file: TokenFile,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    idp: Option<std::sync::Arc<Idp>>,
    current: Option<LoginIdentity>,
}

impl std::fmt::Debug for LoginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginSource")
            .field("issuer", &self.cfg.issuer.as_str())
            .field("client_id", &self.cfg.client_id)
            .field("file", &self.file.path)
            .finish_non_exhaustive()
    }
}

impl LoginSource {
    /// Fails at once, with what to do, when there is no usable login.
    pub fn open(cfg: &LoginConfig, env: &dyn Env) -> Result<LoginSource, LoginError> {
        let file = TokenFile::for_login(cfg, env)?;
        // Read now: "not logged in" and a too-open file are start errors.
        file.read()?;
        Ok(LoginSource {
            cfg: cfg.clone(),
            file,
            state: tokio::sync::Mutex::new(State::default()),
        })
    }

    /// A verified ID token with more than its refresh margin left.
    pub async fn token(&self, http: &HttpClient) -> Result<LoginIdentity, LoginError> {
        let mut st = self.state.lock().await;
        if let Some(c) = &st.current {
            if !c.needs_refresh(SystemTime::now()) {
                return Ok(c.clone());
            }
        }
        let idp = match &st.idp {
            Some(i) => i.clone(),
            None => {
                let i = std::sync::Arc::new(Idp::discover(http, &self.cfg).await?);
                st.idp = Some(i.clone());
                i
            }
        };
        // The lock on the file spans read, refresh and write: a second
        // lanyard on this laptop must not replay a rotated refresh token
        // (IdPs revoke the whole login on reuse).
        let guard = self.file.lock().await?;
        let stored = self.file.read()?;
        let (id, rotated) = idp
            .refresh(http, &stored.refresh_token, stored.nonce.as_deref())
            .await?;
        if id.subject != stored.subject {
            return Err(LoginError::IdToken {
                issuer: idp.issuer().to_owned(),
                reason: format!(
                    "the refreshed token is for {:?}, but the login was for {:?}",
                    id.subject, stored.subject
                ),
            });
        }
        if let Some(rt) = rotated {
            self.file.write(&Stored {
                refresh_token: rt,
                email: id.email.clone(),
                ..stored
            })?;
        }
        drop(guard);
        tracing::debug!(sub = %id.subject, fingerprint = %id.id_token.fingerprint(), "developer ID token refreshed");
        st.current = Some(id.clone());
        Ok(id)
    }
}
