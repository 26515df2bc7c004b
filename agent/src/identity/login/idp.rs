//! The IdP as discovered (`crate::discovery`, with its JWKS) and the flows
//! against it: the RFC 8628 device grant, authorization code + PKCE with a
//! loopback redirect, refresh, and RFC 7009 revocation.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreDeviceAuthorizationResponse, CoreIdTokenVerifier,
    CoreTokenResponse,
};
use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, RefreshToken,
    RequestTokenError, RevocationUrl, Scope,
};

use super::verify::{verifier, verify_id_token, LoginIdentity, NonceRule};
use super::{callback, server_words, DiscoveryProblem, LoginError, PKCE_TIMEOUT};
use crate::config::LoginConfig;
use crate::discovery::Transport;
pub use crate::discovery::{ExtraMetadata, Metadata};
use crate::env::Env;
use crate::http::{HttpClient, HttpError};
use crate::secret::{redact, Secret};

type Oidc = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The IdP as discovered, with the client built from it.
pub struct Idp {
    pub metadata: Metadata,
    client_id: String,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idp")
            .field("issuer", &self.metadata.issuer().as_str())
            .finish_non_exhaustive()
    }
}

impl Idp {
    /// OIDC discovery (and the JWKS it names). The document's `issuer` must
    /// be the configured one.
    pub async fn discover(http: &HttpClient, cfg: &LoginConfig) -> Result<Idp, LoginError> {
        let issuer_text = cfg.issuer.as_str().trim_end_matches('/').to_owned();
        let failed = |e: DiscoveryProblem| LoginError::Discovery {
            issuer: issuer_text.clone(),
            cause: e,
        };
        let issuer = IssuerUrl::new(issuer_text.clone()).map_err(|e| failed(e.into()))?;
        let metadata = crate::discovery::discover(http, issuer)
            .await
            .map_err(|e| failed(e.into()))?;
        Ok(Idp {
            metadata,
            client_id: cfg.client_id.clone(),
        })
    }

    pub fn issuer(&self) -> &str {
        self.metadata.issuer().as_str()
    }

    pub fn revocation_endpoint(&self) -> Option<&RevocationUrl> {
        self.metadata
            .additional_metadata()
            .revocation_endpoint
            .as_ref()
    }

    fn client(&self) -> Oidc {
        CoreClient::from_provider_metadata(
            self.metadata.clone(),
            ClientId::new(self.client_id.clone()),
            None,
        )
    }

    fn verifier(&self) -> CoreIdTokenVerifier<'static> {
        verifier(
            &self.client_id,
            self.metadata.issuer(),
            self.metadata.jwks().clone(),
        )
    }

    fn verify(&self, raw: &str, nonce: NonceRule<'_>) -> Result<LoginIdentity, LoginError> {
        verify_id_token(&self.verifier(), self.issuer(), raw, nonce)
    }

    fn identity_of(
        &self,
        step: &'static str,
        resp: &CoreTokenResponse,
        nonce: NonceRule<'_>,
    ) -> Result<LoginIdentity, LoginError> {
        let raw = resp
            .extra_fields()
            .id_token()
            .map(|t| zeroize::Zeroizing::new(t.to_string()))
            .ok_or_else(|| LoginError::NoIdToken {
                step,
                client_id: self.client_id.clone(),
            })?;
        self.verify(&raw, nonce)
    }

    /// `openid` (unless the request adds it itself), `offline_access`
    /// (for the refresh token) and the configured scopes.
    fn scopes(cfg: &LoginConfig, with_openid: bool) -> Vec<Scope> {
        let mut s = Vec::new();
        if with_openid {
            s.push(Scope::new("openid".into()));
        }
        s.push(Scope::new("offline_access".into()));
        s.extend(cfg.scopes.iter().map(|x| Scope::new(x.clone())));
        s
    }

    /// RFC 8628: ask for a device code, show the user where to go, poll
    /// (honouring `interval` and `slow_down`) until they approve.
    pub async fn device_login(
        &self,
        http: &HttpClient,
        cfg: &LoginConfig,
        say: &dyn Fn(&str),
    ) -> Result<(LoginIdentity, Secret, String), LoginError> {
        let device_url = self
            .metadata
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
            .ok_or_else(|| LoginError::NoDeviceEndpoint {
                issuer: self.issuer().to_owned(),
            })?;
        let client = self.client().set_device_authorization_url(device_url);
        let nonce = Nonce::new_random();
        let t = Transport(http);
        let details: CoreDeviceAuthorizationResponse = client
            .exchange_device_code()
            .add_scopes(Self::scopes(cfg, true))
            .add_extra_param("nonce", nonce.secret().clone())
            .request_async(&t)
            .await
            .map_err(|e| refused("device authorization request", e))?;
        say("To sign in, open this page in a browser and enter the code:");
        say(&format!("  url:  {}", details.verification_uri().as_str()));
        say(&format!("  code: {}", details.user_code().secret()));
        if let Some(c) = details.verification_uri_complete() {
            say(&format!("  (or open {} directly)", c.secret()));
        }
        say(&format!(
            "Waiting for the sign-in (the code expires in {}s)...",
            details.expires_in().as_secs()
        ));
        let resp = client
            .exchange_device_access_token(&details)
            .map_err(|cause| LoginError::Unconfigured {
                step: "device token request",
                cause,
            })?
            .request_async(&t, tokio::time::sleep, None)
            .await
            .map_err(|e| refused("device sign-in", e))?;
        let id = self.identity_of("device", &resp, NonceRule::IfPresent(Some(nonce.secret())))?;
        Ok((id, self.refresh_token_of(&resp)?, nonce.secret().clone()))
    }

    /// Authorization code + PKCE (S256) with a loopback redirect on an
    /// ephemeral port (RFC 8252 §7.3).
    pub async fn pkce_login(
        &self,
        http: &HttpClient,
        cfg: &LoginConfig,
        env: &dyn Env,
        say: &dyn Fn(&str),
    ) -> Result<(LoginIdentity, Secret, String), LoginError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(LoginError::Listen)?;
        let port = listener.local_addr().map_err(LoginError::Callback)?.port();
        let redirect = format!("http://127.0.0.1:{port}/callback");
        let client = self
            .client()
            .set_redirect_uri(RedirectUrl::new(redirect.clone()).map_err(LoginError::RedirectUrl)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (auth_url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(Self::scopes(cfg, false))
            .set_pkce_challenge(challenge)
            // Why: most IdPs grant offline_access (a refresh token) to a
            // code flow only with explicit consent.
            .add_prompt(openidconnect::core::CoreAuthPrompt::Consent)
            .url();
        say("To sign in, open this page in a browser:");
        say(&format!("  url:  {auth_url}"));
        open_browser(env, auth_url.as_str(), say);
        say(&format!(
            "Waiting for the browser to come back to {redirect} (up to {}s)...",
            PKCE_TIMEOUT.as_secs()
        ));
        let code = tokio::time::timeout(PKCE_TIMEOUT, callback::wait(listener, state.secret()))
            .await
            .map_err(|_| LoginError::Timeout(PKCE_TIMEOUT))??;
        let resp = client
            .exchange_code(AuthorizationCode::new(code.expose().to_owned()))
            .map_err(|cause| LoginError::Unconfigured {
                step: "code exchange",
                cause,
            })?
            .set_pkce_verifier(verifier)
            .request_async(&Transport(http))
            .await
            .map_err(|e| refused("code exchange", e))?;
        let id = self.identity_of("code", &resp, NonceRule::Required(nonce.secret()))?;
        Ok((id, self.refresh_token_of(&resp)?, nonce.secret().clone()))
    }

    /// A sign-in must yield a refresh token: lanyard keeps nothing else.
    fn refresh_token_of(&self, resp: &CoreTokenResponse) -> Result<Secret, LoginError> {
        resp.refresh_token()
            .map(|r| Secret::new(r.secret().as_str()))
            .ok_or_else(|| LoginError::NoRefreshToken {
                client_id: self.client_id.clone(),
            })
    }

    /// A fresh, verified ID token from the refresh token, and the rotated
    /// refresh token when the IdP issued one.
    pub async fn refresh(
        &self,
        http: &HttpClient,
        refresh_token: &Secret,
        nonce: Option<&str>,
    ) -> Result<(LoginIdentity, Option<Secret>), LoginError> {
        let rt = RefreshToken::new(refresh_token.expose().to_owned());
        let resp = self
            .client()
            .exchange_refresh_token(&rt)
            .map_err(|cause| LoginError::Unconfigured {
                step: "refresh",
                cause,
            })?
            .request_async(&Transport(http))
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) if r.error().as_ref() == "invalid_grant" => {
                    LoginError::Expired {
                        issuer: self.issuer().to_owned(),
                        detail: server_words(r.error().as_ref(), r.error_description()),
                    }
                }
                other => refused("refresh", other),
            })?;
        let id = self.identity_of("refresh", &resp, NonceRule::IfPresent(nonce))?;
        let rotated = resp
            .refresh_token()
            .map(|r| Secret::new(r.secret().as_str()));
        Ok((id, rotated))
    }

    /// RFC 7009 revocation of the refresh token, when the IdP offers it.
    /// `Ok(false)`: no revocation endpoint. Sent with our client (not the
    /// crate's, which insists on https even for a loopback IdP; ours applies
    /// the project's transport rule).
    pub async fn revoke(
        &self,
        http: &HttpClient,
        refresh_token: &Secret,
    ) -> Result<bool, LoginError> {
        let Some(url) = self.revocation_endpoint() else {
            return Ok(false);
        };
        let url = url::Url::parse(url.as_str()).map_err(LoginError::RevocationUrl)?;
        use crate::http::FormValue;
        let resp = http
            .post_form(
                &url,
                &[],
                &[
                    ("token", FormValue::Secret(refresh_token)),
                    ("token_type_hint", FormValue::Plain("refresh_token")),
                    ("client_id", FormValue::Plain(&self.client_id)),
                ],
            )
            .await?;
        if resp.status.is_success() {
            return Ok(true);
        }
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        Err(LoginError::Refused {
            step: "revocation",
            detail: format!(
                "HTTP {}: {}",
                resp.status.as_u16(),
                server_words(
                    v["error"].as_str().unwrap_or("error"),
                    v["error_description"].as_str().map(str::to_owned).as_ref(),
                )
            ),
        })
    }
}

/// An OAuth error in the server's own words; never the body of an
/// unparsable answer (it may hold a token).
fn refused<T: openidconnect::ErrorResponse + 'static>(
    step: &'static str,
    e: RequestTokenError<HttpError, T>,
) -> LoginError {
    let detail = match e {
        RequestTokenError::ServerResponse(r) => {
            // `StandardErrorResponse` serialises as the RFC 6749 JSON.
            let v = serde_json::to_value(&r).unwrap_or_default();
            server_words(
                v["error"].as_str().unwrap_or("error"),
                v["error_description"].as_str().map(str::to_owned).as_ref(),
            )
        }
        RequestTokenError::Request(h) => return LoginError::Http(h),
        // serde's message may quote a field's value: mask anything token-shaped.
        RequestTokenError::Parse(p, _) => {
            format!("unparsable answer ({})", redact(&p.to_string(), &[]))
        }
        RequestTokenError::Other(o) => crate::identity::truncate(&redact(&o, &[]), 300),
    };
    LoginError::Refused { step, detail }
}

/// `$LANYARD_BROWSER URL` when set (a program, for tests and unusual
/// desktops), else the desktop's opener when there is one. The URL is
/// printed either way.
fn open_browser(env: &dyn Env, url: &str, say: &dyn Fn(&str)) {
    let candidates: Vec<String> = match env.non_empty("LANYARD_BROWSER") {
        Some(b) => vec![b],
        None if cfg!(target_os = "macos") => vec!["open".into()],
        None => vec!["xdg-open".into()],
    };
    for program in candidates {
        let spawned = std::process::Command::new(&program)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                // Reap it in the background; its exit status means nothing to us.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return;
            }
            Err(e) if env.non_empty("LANYARD_BROWSER").is_some() => {
                say(&format!(
                    "(could not start LANYARD_BROWSER {program:?}: {e})"
                ));
            }
            Err(_) => {}
        }
    }
}
