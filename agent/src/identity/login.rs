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
//! own client (`http.rs`), so the transport rule, timeouts and size caps are
//! the same as everywhere else.

pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreDeviceAuthorizationResponse, CoreGrantType, CoreIdToken,
    CoreIdTokenVerifier, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
    CoreSubjectIdentifierType, CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, AsyncHttpClient, AuthorizationCode, ClientId, CsrfToken,
    DeviceAuthorizationUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, ProviderMetadata,
    RedirectUrl, RefreshToken, RequestTokenError, RevocationUrl, Scope,
};
use serde::{Deserialize, Serialize};

use crate::config::{LoginConfig, LoginFlow};
use crate::env::Env;
use crate::http::{HttpClient, HttpError};
use crate::secret::{redact, Secret};
pub use store::{StoreError, Stored, TokenFile};

/// Why: a developer may need a minute to find the browser tab; an IdP's
/// device code usually lives 5–15 minutes and its own `expires_in` wins.
pub const PKCE_TIMEOUT: Duration = Duration::from_secs(300);
/// Refresh an ID token when less than this share of its lifetime is left
/// (capped at [`REFRESH_MARGIN_MAX`]), so an exchange never receives one
/// that expires on the way.
const REFRESH_SHARE: u32 = 3;
const REFRESH_MARGIN_MAX: Duration = Duration::from_secs(60);
/// Asymmetric algorithms only: an ID token is never accepted with `none`
/// or an HMAC keyed by the (public) client id.
const ALLOWED_ALGS: &[CoreJwsSigningAlgorithm] = &[
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("OpenID discovery at {issuer} failed: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("the IdP at {issuer} advertises no device_authorization_endpoint; set [login] flow = \"pkce\" (or pass --flow pkce)")]
    NoDeviceEndpoint { issuer: String },
    #[error("the IdP refused the {step}: {detail}")]
    Refused { step: &'static str, detail: String },
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
    #[error("no sign-in within {}s", .0.as_secs())]
    Timeout(Duration),
}

/// What the IdP answers in discovery besides the core fields.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExtraMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revocation_endpoint: Option<RevocationUrl>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type Oidc = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// `openidconnect` over our HTTP client.
struct Transport<'a>(&'a HttpClient);

impl<'c> AsyncHttpClient<'c> for Transport<'_> {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.0.request_raw(request))
    }
}

/// A verified developer identity: the ID token and what it says.
#[derive(Debug, Clone)]
pub struct LoginIdentity {
    pub id_token: Secret,
    pub subject: String,
    pub email: Option<String>,
    pub issuer: String,
    pub issued: SystemTime,
    pub expires: SystemTime,
}

impl LoginIdentity {
    /// `alice@acme.test (sub alice)`, or the sub alone.
    pub fn who(&self) -> String {
        match &self.email {
            Some(e) => format!("{e} (sub {})", self.subject),
            None => self.subject.clone(),
        }
    }

    /// True when the token should be replaced before it is handed out.
    pub fn needs_refresh(&self, now: SystemTime) -> bool {
        let life = self.expires.duration_since(self.issued).unwrap_or_default();
        let margin = (life / REFRESH_SHARE).min(REFRESH_MARGIN_MAX);
        match self.expires.duration_since(now) {
            Ok(left) => left <= margin,
            Err(_) => true,
        }
    }
}

/// How the nonce of an ID token is checked.
#[derive(Clone, Copy)]
pub enum NonceRule<'a> {
    /// Authorization code flow: the token must carry exactly our nonce.
    Required(&'a str),
    /// Device flow and refresh: the IdP may leave it out (RFC 8628 has no
    /// nonce), but a nonce it does send must be ours.
    IfPresent(Option<&'a str>),
}

/// The verifier lanyard uses for every ID token of this IdP.
pub fn verifier(
    client_id: &str,
    issuer: &IssuerUrl,
    jwks: openidconnect::core::CoreJsonWebKeySet,
) -> CoreIdTokenVerifier<'static> {
    CoreIdTokenVerifier::new_public_client(
        ClientId::new(client_id.to_owned()),
        issuer.clone(),
        jwks,
    )
    .set_allowed_algs(ALLOWED_ALGS.iter().cloned())
}

/// Check signature (JWKS), iss, aud (our client id), exp and nonce.
pub fn verify_id_token(
    verifier: &CoreIdTokenVerifier<'_>,
    issuer: &str,
    raw: &str,
    nonce: NonceRule<'_>,
) -> Result<LoginIdentity, LoginError> {
    let fail = |reason: String| LoginError::IdToken {
        issuer: issuer.to_owned(),
        reason,
    };
    let token: CoreIdToken = raw.parse().map_err(|_| fail("not a signed JWT".into()))?;
    let check = |got: Option<&Nonce>| -> Result<(), String> {
        let same = |want: &str, got: &Nonce| ct_eq(want.as_bytes(), got.secret().as_bytes());
        match (nonce, got) {
            (NonceRule::Required(want), Some(g)) if same(want, g) => Ok(()),
            (NonceRule::Required(_), Some(_)) => {
                Err("nonce mismatch: the token was not issued for this sign-in".into())
            }
            (NonceRule::Required(_), None) => Err("missing nonce claim".into()),
            (NonceRule::IfPresent(Some(want)), Some(g)) if !same(want, g) => {
                Err("nonce mismatch: the token was not issued for this sign-in".into())
            }
            (NonceRule::IfPresent(None), Some(_)) => {
                Err("unexpected nonce: the token was not issued for this sign-in".into())
            }
            _ => Ok(()),
        }
    };
    let claims = token
        .claims(verifier, check)
        .map_err(|e| fail(redact(&e.to_string(), &[])))?;
    let secs = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok(LoginIdentity {
        id_token: Secret::new(raw),
        subject: claims.subject().as_str().to_owned(),
        email: claims.email().map(|e| e.as_str().to_owned()),
        issuer: claims.issuer().as_str().to_owned(),
        issued: secs(claims.issue_time().timestamp()),
        expires: secs(claims.expiration().timestamp()),
    })
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    crate::secret::ct_eq(a, b)
}

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
        let issuer = IssuerUrl::new(issuer_text.clone()).map_err(|e| LoginError::Discovery {
            issuer: issuer_text.clone(),
            reason: e.to_string(),
        })?;
        let metadata = Metadata::discover_async(issuer, &Transport(http))
            .await
            .map_err(|e| LoginError::Discovery {
                issuer: issuer_text.clone(),
                reason: crate::http::error_chain(&e),
            })?;
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
            .map_err(|e| LoginError::Refused {
                step: "device token request",
                detail: e.to_string(),
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
            .map_err(|e| LoginError::Browser(format!("cannot listen on 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| LoginError::Browser(e.to_string()))?
            .port();
        let redirect = format!("http://127.0.0.1:{port}/callback");
        let client = self.client().set_redirect_uri(
            RedirectUrl::new(redirect.clone()).map_err(|e| LoginError::Browser(e.to_string()))?,
        );
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
            .map_err(|e| LoginError::Refused {
                step: "code exchange",
                detail: e.to_string(),
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
            .map_err(|e| LoginError::Refused {
                step: "refresh",
                detail: e.to_string(),
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
        let url = url::Url::parse(url.as_str()).map_err(|e| LoginError::Refused {
            step: "revocation",
            detail: format!("bad revocation_endpoint in discovery: {e}"),
        })?;
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

fn server_words(code: &str, description: Option<&String>) -> String {
    let text = match description {
        Some(d) => format!("{code}: {d}"),
        None => code.to_owned(),
    };
    crate::identity::truncate(&redact(&text, &[]), 300)
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

/// The loopback redirect listener for the PKCE flow.
mod callback {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use tokio::sync::mpsc;

    use super::LoginError;
    use crate::secret::Secret;

    type Outcome = Result<Secret, LoginError>;

    /// Serve `/callback` until a request with our `state` arrives. Requests
    /// with another state are answered 400 and ignored (they are not from
    /// this sign-in); an IdP error with our state ends the wait.
    pub async fn wait(listener: tokio::net::TcpListener, state: &str) -> Outcome {
        let (tx, mut rx) = mpsc::channel::<Outcome>(1);
        let state = state.to_owned();
        let server = async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Why: a persistent accept error (EMFILE) must not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let (tx, state) = (tx.clone(), state.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (tx, state) = (tx.clone(), state.clone());
                        async move { Ok::<_, Infallible>(answer(req, &state, &tx).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        };
        tokio::select! {
            () = server => Err(LoginError::Browser("the callback listener stopped".into())),
            r = rx.recv() => r.unwrap_or_else(|| Err(LoginError::Browser("the callback listener stopped".into()))),
        }
    }

    fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
        let body = format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>lanyard</title></head><body><p>{text}</p></body></html>"
        );
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        r
    }

    async fn answer(
        req: Request<Incoming>,
        state: &str,
        tx: &mpsc::Sender<Outcome>,
    ) -> Response<Full<Bytes>> {
        if req.uri().path() != "/callback" {
            return page(StatusCode::NOT_FOUND, "Not found.");
        }
        let mut code = None;
        let mut got_state = None;
        let mut error = None;
        let mut description = None;
        for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "code" => code = Some(Secret::new(v.into_owned())),
                "state" => got_state = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                "error_description" => description = Some(v.into_owned()),
                _ => {}
            }
        }
        let ours = got_state
            .as_deref()
            .is_some_and(|s| super::ct_eq(s.as_bytes(), state.as_bytes()));
        if !ours {
            return page(
                StatusCode::BAD_REQUEST,
                "This sign-in answer is not for the lanyard login that is waiting (state mismatch). It was ignored.",
            );
        }
        if let Some(e) = error {
            let detail = super::server_words(&e, description.as_ref());
            let _ = tx
                .send(Err(LoginError::Refused {
                    step: "authorization",
                    detail,
                }))
                .await;
            return page(
                StatusCode::OK,
                "Sign-in failed; see the terminal for the reason.",
            );
        }
        match code {
            Some(c) => {
                let _ = tx.send(Ok(c)).await;
                page(
                    StatusCode::OK,
                    "Signed in to lanyard. You can close this tab and return to the terminal.",
                )
            }
            None => page(StatusCode::BAD_REQUEST, "The answer has no code."),
        }
    }
}

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
