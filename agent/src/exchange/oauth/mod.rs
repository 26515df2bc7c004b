//! OAuth token endpoints: RFC 8693 token exchange and RFC 7523 client
//! assertions (`client_credentials` with the job's JWT as the client's
//! proof, as Entra ID federated credentials use), RFC 7009 revocation, and
//! OpenID discovery of the endpoints, with RFC 8414 as the fallback.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use url::Url;

use super::answer::{self, Loose, TokenAnswer};
use super::{refusal_of, seconds, Client, ExchangeError, Issued, Revoked};
use crate::config::{OAuthEndpoint, SubjectTokenType};
use crate::http::{endpoint, FormValue, Header, HttpClient};
use crate::identity::IdentityToken;
use crate::secret::{Credential, Secret};

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Why: a token valid for more than a day is not short-lived; treat a larger
/// `expires_in` as a service error rather than trusting it.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub(super) enum Grant {
    TokenExchange {
        subject_token_type: SubjectTokenType,
        requested_token_type: Option<String>,
        subject_issuer: Option<String>,
    },
    ClientAssertion,
    /// RFC 7523 §2.1: the job's token as the grant itself.
    JwtAuthorization,
}

#[derive(Debug)]
pub(super) struct OAuth {
    grant: Grant,
    token_url: Url,
    revocation_url: Option<Url>,
    pub(super) audience: Vec<String>,
    resource: Vec<Url>,
    scope: Option<String>,
    default_lifetime: Duration,
    client: Client,
}

impl OAuth {
    pub(super) async fn prepare(
        name: &str,
        http: &HttpClient,
        ep: &OAuthEndpoint,
        grant: Grant,
        client: Client,
    ) -> Result<Self, ExchangeError> {
        let (mut token_url, mut revocation_url) = (ep.token_url.clone(), ep.revocation_url.clone());
        if let Some(issuer) = &ep.issuer {
            let meta = discover(http, issuer).await?;
            if token_url.is_none() {
                token_url = meta.token_endpoint;
            }
            if revocation_url.is_none() {
                revocation_url = meta.revocation_endpoint;
            }
        }
        let token_url = token_url.ok_or_else(|| ExchangeError::Setup {
            name: name.into(),
            problem: "the issuer's metadata has no token_endpoint".into(),
        })?;
        Ok(OAuth {
            grant,
            token_url,
            revocation_url,
            audience: ep.audience.clone(),
            resource: ep.resource.clone(),
            scope: ep.scope.clone(),
            default_lifetime: ep.lifetime,
            client,
        })
    }

    pub(super) fn describe(&self) -> String {
        let what = match self.grant {
            Grant::TokenExchange { .. } => "RFC 8693 token exchange",
            Grant::ClientAssertion => "RFC 7523 client assertion",
            Grant::JwtAuthorization => "RFC 7523 JWT authorization grant",
        };
        let mut s = format!("{what} at {}", endpoint(&self.token_url));
        if !self.audience.is_empty() {
            s.push_str(&format!(", audience {}", self.audience.join(" ")));
        }
        if let Some(sc) = &self.scope {
            s.push_str(&format!(", scope {sc:?}"));
        }
        s
    }

    pub(super) async fn obtain(
        &self,
        http: &HttpClient,
        id: &IdentityToken,
    ) -> Result<Issued, ExchangeError> {
        let mut form: Vec<(&str, FormValue<'_>)> = Vec::new();
        match &self.grant {
            Grant::TokenExchange {
                subject_token_type,
                requested_token_type,
                subject_issuer,
            } => {
                form.push(("grant_type", FormValue::Plain(GRANT_TOKEN_EXCHANGE)));
                form.push(("subject_token", FormValue::Secret(id.jwt.as_secret())));
                form.push((
                    "subject_token_type",
                    FormValue::Plain(subject_token_type.urn()),
                ));
                if let Some(r) = requested_token_type {
                    form.push(("requested_token_type", FormValue::Plain(r)));
                }
                if let Some(i) = subject_issuer {
                    form.push(("subject_issuer", FormValue::Plain(i)));
                }
            }
            Grant::JwtAuthorization => {
                form.push(("grant_type", FormValue::Plain(GRANT_JWT_BEARER)));
                form.push(("assertion", FormValue::Secret(id.jwt.as_secret())));
            }
            Grant::ClientAssertion => {
                form.push(("grant_type", FormValue::Plain("client_credentials")));
                form.push(("client_assertion_type", FormValue::Plain(ASSERTION_TYPE)));
                form.push(("client_assertion", FormValue::Secret(id.jwt.as_secret())));
            }
        }
        for a in &self.audience {
            form.push(("audience", FormValue::Plain(a)));
        }
        for r in &self.resource {
            form.push(("resource", FormValue::Plain(r.as_str())));
        }
        if let Some(s) = &self.scope {
            form.push(("scope", FormValue::Plain(s)));
        }
        let (headers, secrets) = self.client_auth(&mut form);
        let resp = http.post_form(&self.token_url, &headers, &form).await?;
        let mut known: Vec<&Secret> = vec![id.jwt.as_secret()];
        known.extend(secrets.iter());
        if !resp.status.is_success() {
            return Err(refusal_of(&self.token_url, &resp, &known));
        }
        self.parse(resp.status, &resp.body)
    }

    fn parse(&self, status: http::StatusCode, body: &[u8]) -> Result<Issued, ExchangeError> {
        let bad = |problem: &str| ExchangeError::BadAnswer {
            service: endpoint(&self.token_url),
            status: status.as_u16(),
            problem: problem.into(),
        };
        let v: TokenAnswer = answer::parse(body).map_err(bad)?;
        let token = v
            .access_token
            .and_then(|t| t.0)
            .filter(|t| !t.as_secret().is_empty())
            .ok_or_else(|| bad("no access_token"))?;
        if let Some(Loose(Some(tt))) = &v.token_type {
            // RFC 8693 §2.2.1: "Bearer", or "N_A" when the token is not an access token.
            if !tt.eq_ignore_ascii_case("bearer") && !tt.eq_ignore_ascii_case("n_a") {
                return Err(bad(&format!(
                    "token_type {tt:?}; only Bearer tokens can be attached to requests"
                )));
            }
        }
        let (lifetime, granularity) = match seconds(v.expires_in.as_ref()) {
            Some(0) => return Err(bad("expires_in 0")),
            Some(s) if Duration::from_secs(s) > MAX_LIFETIME => {
                return Err(bad(&format!(
                    "expires_in {s}s, more than a day; refusing a long-lived token"
                )))
            }
            Some(s) => (Duration::from_secs(s), super::WHOLE_SECONDS),
            // The configured lifetime is the user's own figure.
            None => (self.default_lifetime, Duration::ZERO),
        };
        Ok(Issued {
            value: token,
            lifetime: Some(lifetime),
            granularity,
            renewable: false,
            about: Vec::new(),
        })
    }

    /// Adds client authentication: a Basic header, or form fields.
    fn client_auth<'a>(
        &'a self,
        form: &mut Vec<(&'a str, FormValue<'a>)>,
    ) -> (Vec<Header<'a>>, Vec<&'a Secret>) {
        match &self.client {
            Client::None { client_id } => {
                if let Some(id) = client_id {
                    form.push(("client_id", FormValue::Plain(id)));
                }
                (Vec::new(), Vec::new())
            }
            Client::Basic { client_id, secret } => {
                // RFC 6749 §2.3.1: both parts form-urlencoded before base64.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let raw =
                    zeroize::Zeroizing::new(format!("{}:{}", enc(client_id), enc(secret.expose())));
                let b64 = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()),
                );
                (
                    vec![Header::Secret(
                        http::header::AUTHORIZATION,
                        zeroize::Zeroizing::new(format!("Basic {}", b64.as_str())),
                    )],
                    vec![secret],
                )
            }
            Client::Post { client_id, secret } => {
                form.push(("client_id", FormValue::Plain(client_id)));
                form.push(("client_secret", FormValue::Secret(secret)));
                (Vec::new(), vec![secret])
            }
        }
    }

    /// Whether the client authenticates with the job's token (RFC 7523
    /// client assertion): then revocation needs it too.
    pub(super) fn authenticates_with_assertion(&self) -> bool {
        matches!(self.grant, Grant::ClientAssertion)
    }

    /// RFC 7009. Without a revocation endpoint there is nothing to call. A
    /// client-assertion client proves itself with `id` (RFC 7523 §2.2), as
    /// for the token.
    pub(super) async fn revoke(
        &self,
        http: &HttpClient,
        value: &Credential,
        id: Option<&IdentityToken>,
    ) -> Result<Revoked, ExchangeError> {
        let Some(url) = &self.revocation_url else {
            return Ok(Revoked::NotRevocable(
                "the token service offers no revocation endpoint; the token expires by itself",
            ));
        };
        let mut form: Vec<(&str, FormValue<'_>)> = vec![
            ("token", FormValue::Secret(value.as_secret())),
            ("token_type_hint", FormValue::Plain("access_token")),
        ];
        let (headers, mut secrets) = self.client_auth(&mut form);
        if self.authenticates_with_assertion() {
            let Some(id) = id else {
                return Ok(Revoked::NotRevocable(
                    "no identity token to authenticate the revocation with; the token expires by itself",
                ));
            };
            form.push(("client_assertion_type", FormValue::Plain(ASSERTION_TYPE)));
            form.push(("client_assertion", FormValue::Secret(id.jwt.as_secret())));
            secrets.push(id.jwt.as_secret());
        }
        let resp = http.post_form(url, &headers, &form).await?;
        if resp.status.is_success() {
            Ok(Revoked::Done("RFC 7009 revocation"))
        } else {
            let mut known = vec![value.as_secret()];
            known.extend(secrets);
            Err(refusal_of(url, &resp, &known))
        }
    }
}

pub(super) struct Metadata {
    token_endpoint: Option<Url>,
    revocation_endpoint: Option<Url>,
}

/// OpenID discovery (`crate::discovery`, the same as the login IdP's),
/// then RFC 8414 for a token service that is no OpenID provider. The
/// document's `issuer` must be the one configured (RFC 8414 §3.3: protects
/// against mix-up).
async fn discover(http: &HttpClient, issuer: &Url) -> Result<Metadata, ExchangeError> {
    let base = issuer.as_str().trim_end_matches('/');
    if let Ok(oidc_issuer) = openidconnect::IssuerUrl::new(base.to_owned()) {
        match crate::discovery::discover(http, oidc_issuer).await {
            Ok(m) => {
                let revocation = m.additional_metadata().revocation_endpoint.as_ref();
                return Ok(Metadata {
                    token_endpoint: checked(m.token_endpoint().map(|u| u.url()))?,
                    revocation_endpoint: checked(revocation.map(|u| u.url()))?,
                });
            }
            Err(openidconnect::DiscoveryError::Request(e)) => return Err(e.into()),
            // Mix-up protection: a document for another issuer is an answer,
            // not a missing one.
            Err(openidconnect::DiscoveryError::Validation(why)) => {
                return Err(ExchangeError::BadAnswer {
                    service: format!("{base}/.well-known/openid-configuration"),
                    status: 200,
                    problem: why,
                })
            }
            Err(e) => tracing::debug!(
                "OpenID discovery at {base}: {}; trying RFC 8414",
                crate::http::error_chain(&e)
            ),
        }
    }
    rfc8414(http, base).await
}

/// An endpoint from discovery, held to the transport rule.
fn checked(u: Option<&Url>) -> Result<Option<Url>, ExchangeError> {
    match u {
        None => Ok(None),
        Some(u) => {
            crate::http::check_transport(u)?;
            Ok(Some(u.clone()))
        }
    }
}

/// RFC 8414 authorization server metadata.
async fn rfc8414(http: &HttpClient, base: &str) -> Result<Metadata, ExchangeError> {
    let url =
        Url::parse(&format!("{base}/.well-known/oauth-authorization-server")).map_err(|e| {
            ExchangeError::Setup {
                name: String::new(),
                problem: e.to_string(),
            }
        })?;
    let resp = http.get(&url, &[]).await?;
    if !resp.status.is_success() {
        return Err(refusal_of(&url, &resp, &[]));
    }
    let bad = |p: String| ExchangeError::BadAnswer {
        service: endpoint(&url),
        status: resp.status.as_u16(),
        problem: p,
    };
    let v: Value =
        serde_json::from_slice(&resp.body).map_err(|_| bad("a body that is not JSON".into()))?;
    let got = v.get("issuer").and_then(Value::as_str).unwrap_or("");
    if got.trim_end_matches('/') != base {
        return Err(bad(format!("issuer {got:?}, not the configured {base:?}")));
    }
    let url_of = |k: &str| -> Result<Option<Url>, ExchangeError> {
        match v.get(k).and_then(Value::as_str) {
            None => Ok(None),
            Some(s) => {
                let u = Url::parse(s).map_err(|_| bad(format!("{k} that is not a URL")))?;
                checked(Some(&u))
            }
        }
    };
    Ok(Metadata {
        token_endpoint: url_of("token_endpoint")?,
        revocation_endpoint: url_of("revocation_endpoint")?,
    })
}

#[cfg(test)]
mod tests;
