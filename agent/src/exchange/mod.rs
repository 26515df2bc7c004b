//! Exchange: turns the job identity into credentials. Second stage of the
//! flow; it takes identity tokens in and hands [`Issued`] credentials out,
//! and it knows how to renew and revoke what it issued. It does not schedule
//! anything; the store does.

mod answer;
pub mod aws;
pub mod azure;
mod client_auth;
pub mod google;
mod oauth;
mod port;
mod vault;

pub(crate) use answer::{refusal, refusal_of};
use client_auth::resolve_client;

use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::config::{ClientAuth, CredentialConfig, CredentialKind};
use crate::env::Env;
use crate::http::{endpoint, HttpClient, HttpError};
use crate::identity::{IdentityError, IdentityToken};
use crate::secret::{Credential, Secret};

/// The granularity of a lifetime reported in whole seconds.
pub const WHOLE_SECONDS: Duration = Duration::from_secs(1);

/// A credential as issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub value: Credential,
    /// `None`: the service gave no expiry (a KV secret).
    pub lifetime: Option<Duration>,
    /// How much sooner than `lifetime` the service may end it. `expires_in`
    /// and Vault's `lease_duration` are whole seconds, and a server that
    /// sets `exp = floor(now) + ttl` (oidc-provider; OpenBao batch tokens
    /// count from a whole-second creation time) ends the token up to 1 s
    /// early: [`WHOLE_SECONDS`]. Zero for an exact `exp` (a JWT's).
    pub granularity: Duration,
    /// Vault: `renew-self` may extend it.
    pub renewable: bool,
    /// What the service said about the value that is safe to show, for
    /// `status` and `doctor` (STS: the assumed-role ARN, the session name).
    pub about: Vec<(&'static str, String)>,
}

/// What happened at revocation, for the teardown report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The service confirmed (RFC 7009 200, Vault 204).
    Done(&'static str),
    /// Nothing to revoke with: no revocation endpoint, or the value is not a token we own.
    NotRevocable(&'static str),
    /// No revocation exists (STS role sessions); the value ends at `at`.
    ExpiresAt {
        at: std::time::SystemTime,
        why: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Http(#[from] HttpError),
    /// The service answered with an error. `detail` is its own message, with
    /// tokens redacted: the best explanation there is.
    #[error("{service} refused ({status}): {detail}")]
    Refused {
        service: String,
        status: u16,
        detail: String,
        code: Option<String>,
    },
    #[error("{service} answered HTTP {status} with {problem}")]
    BadAnswer {
        service: String,
        status: u16,
        problem: String,
    },
    /// A 429 or 5xx refusal that said when to come back (`Retry-After`).
    #[error("{refused}")]
    Busy {
        retry_after: std::time::Duration,
        refused: Box<ExchangeError>,
    },
    /// A call retried to its bound; `last` is the final attempt's error.
    #[error("{service} failed {attempts} times; the last attempt: {last}")]
    Retried {
        service: String,
        attempts: u32,
        last: Box<ExchangeError>,
    },
    #[error("credential {name:?}: client secret variable {variable} is not set")]
    MissingSecret { name: String, variable: String },
    #[error("credential {name:?}: {problem}")]
    Setup { name: String, problem: String },
    /// A URL built from configuration did not parse; `context` says which.
    #[error("credential {name:?}: {context}{cause}")]
    BadUrl {
        name: String,
        context: String,
        #[source]
        cause: url::ParseError,
    },
    /// The lifetime leaves no time in which the value could be served.
    #[error("credential {name:?}: {detail}")]
    TooShort { name: String, detail: String },
    #[error("credential {name:?} needs {parent:?}, which has no valid value: {reason}")]
    Parent {
        name: String,
        parent: String,
        /// The store's error (the stage after this one, so held as a
        /// boxed error), or [`NotObtained`].
        #[source]
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The parent credential was never obtained.
#[derive(Debug, thiserror::Error)]
#[error("not obtained")]
pub struct NotObtained;

impl ExchangeError {
    /// True when the service itself said no (as opposed to not answering).
    pub fn is_refusal(&self) -> bool {
        match self {
            ExchangeError::Refused { .. } => true,
            ExchangeError::Busy { refused, .. } => refused.is_refusal(),
            _ => false,
        }
    }
}

/// Client authentication with its secret resolved from the environment.
#[derive(Debug, Clone)]
pub(crate) enum Client {
    None { client_id: Option<String> },
    Basic { client_id: String, secret: Secret },
    Post { client_id: String, secret: Secret },
}

#[derive(Debug)]
enum Kind {
    OAuth(oauth::OAuth),
    Vault(vault::Vault),
    VaultKv {
        parent: String,
        address: Url,
        namespace: Option<String>,
        path: String,
        field: String,
        refresh: Duration,
    },
    Passthrough {
        audience: Option<String>,
    },
    Aws(aws::Sts),
    AwsSecret(aws::secrets::SecretRead),
    Entra(Box<azure::EntraExchange>),
    KeyVault(azure::keyvault::SecretRead),
    Port(port::PortExchange),
    Gcp(google::GcpExchange),
}

/// One credential's exchange, ready to run.
#[derive(Debug)]
pub struct Exchanger {
    pub name: String,
    kind: Kind,
}

impl Exchanger {
    /// Resolve secrets from the environment and endpoints by discovery.
    pub async fn prepare(
        cfg: &CredentialConfig,
        all: &[CredentialConfig],
        http: &HttpClient,
        env: &dyn Env,
    ) -> Result<Self, ExchangeError> {
        let name = cfg.name.clone();
        let kind = match &cfg.kind {
            CredentialKind::TokenExchange {
                endpoint,
                subject_token_type,
                requested_token_type,
                subject_issuer,
                client,
            } => {
                let client = resolve_client(&name, client, env)?;
                Kind::OAuth(
                    oauth::OAuth::prepare(
                        &name,
                        http,
                        endpoint,
                        oauth::Grant::TokenExchange {
                            subject_token_type: *subject_token_type,
                            requested_token_type: requested_token_type.clone(),
                            subject_issuer: subject_issuer.clone(),
                        },
                        client,
                    )
                    .await?,
                )
            }
            CredentialKind::JwtAuthorizationGrant { endpoint, client } => {
                let client = resolve_client(&name, client, env)?;
                Kind::OAuth(
                    oauth::OAuth::prepare(
                        &name,
                        http,
                        endpoint,
                        oauth::Grant::JwtAuthorization,
                        client,
                    )
                    .await?,
                )
            }
            CredentialKind::JwtBearer {
                endpoint,
                client_id,
            } => Kind::OAuth(
                oauth::OAuth::prepare(
                    &name,
                    http,
                    endpoint,
                    oauth::Grant::ClientAssertion,
                    Client::None {
                        client_id: client_id.clone(),
                    },
                )
                .await?,
            ),
            CredentialKind::Vault {
                address,
                mount,
                role,
                namespace,
            } => Kind::Vault(vault::Vault {
                address: address.clone(),
                mount: mount.clone(),
                role: role.clone(),
                namespace: namespace.clone(),
            }),
            CredentialKind::VaultKv {
                from,
                path,
                field,
                refresh,
            } => {
                let Some(CredentialConfig {
                    kind:
                        CredentialKind::Vault {
                            address, namespace, ..
                        },
                    ..
                }) = all.iter().find(|c| &c.name == from)
                else {
                    return Err(ExchangeError::Setup {
                        name,
                        problem: format!("`from` names {from:?}, which is not a vault credential"),
                    });
                };
                Kind::VaultKv {
                    parent: from.clone(),
                    address: address.clone(),
                    namespace: namespace.clone(),
                    path: path.clone(),
                    field: field.clone(),
                    refresh: *refresh,
                }
            }
            CredentialKind::Passthrough { audience } => Kind::Passthrough {
                audience: audience.clone(),
            },
            CredentialKind::AwsWebIdentity(a) => Kind::Aws(aws::Sts { cfg: a.clone() }),
            CredentialKind::AwsSecret(s) => {
                Kind::AwsSecret(aws::secrets::SecretRead { cfg: s.clone() })
            }
            CredentialKind::Entra(e) => Kind::Entra(Box::new(
                azure::EntraExchange::prepare(&name, http, e).await?,
            )),
            CredentialKind::KeyVaultSecret(s) => {
                Kind::KeyVault(azure::keyvault::SecretRead { cfg: s.clone() })
            }
            CredentialKind::Port(p) => Kind::Port(port::PortExchange::prepare(&name, p, env)?),
            CredentialKind::GcpWorkloadIdentity(g) => {
                Kind::Gcp(google::GcpExchange { cfg: g.clone() })
            }
        };
        Ok(Exchanger { name, kind })
    }

    /// The credential this one is read with, if any (KV → its vault).
    pub fn parent(&self) -> Option<&str> {
        match &self.kind {
            Kind::VaultKv { parent, .. } => Some(parent),
            Kind::AwsSecret(s) => Some(&s.cfg.from),
            Kind::KeyVault(s) => Some(&s.cfg.from),
            Kind::Port(p) => match &p.cfg.client_secret {
                crate::config::PortSecret::From(f) => Some(f),
                crate::config::PortSecret::Env(_) => None,
            },
            _ => None,
        }
    }

    /// The audience the identity token must be minted for, where the source
    /// can choose (passthrough may ask for its own).
    pub fn identity_audience(&self) -> Option<&str> {
        match &self.kind {
            Kind::Passthrough { audience } => audience.as_deref(),
            Kind::Aws(a) => Some(a.audience()),
            Kind::Entra(e) => Some(&e.cfg.audience),
            Kind::Gcp(g) => Some(&g.cfg.audience),
            _ => None,
        }
    }

    /// Whether obtaining needs an identity token.
    pub fn needs_identity(&self) -> bool {
        !matches!(
            self.kind,
            Kind::VaultKv { .. } | Kind::AwsSecret(_) | Kind::KeyVault(_) | Kind::Port(_)
        )
    }

    /// False where the service has no revocation (STS): the value expires
    /// on its own, and `status` says when.
    pub fn revocable(&self) -> bool {
        !matches!(
            self.kind,
            Kind::Aws(_) | Kind::Entra(_) | Kind::Port(_) | Kind::Gcp(_)
        )
    }

    /// How often to re-read a value that has no expiry.
    pub fn reread_interval(&self) -> Option<Duration> {
        match &self.kind {
            Kind::VaultKv { refresh, .. } => Some(*refresh),
            Kind::AwsSecret(s) => Some(s.cfg.refresh),
            Kind::KeyVault(s) => Some(s.cfg.refresh),
            _ => None,
        }
    }

    /// One line saying what this exchange does, for `doctor` and `status`.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::OAuth(o) => o.describe(),
            Kind::Vault(v) => format!(
                "vault JWT login at {} (auth/{}/login, role {:?})",
                endpoint(&v.address),
                v.mount,
                v.role
            ),
            Kind::VaultKv {
                parent,
                path,
                field,
                ..
            } => format!("KV v2 field {path}#{field} read with {parent:?}"),
            Kind::Passthrough { audience } => match audience {
                Some(a) => format!("passthrough of the identity token (audience {a:?})"),
                None => "passthrough of the identity token".into(),
            },
            Kind::Aws(a) => a.describe(),
            Kind::AwsSecret(s) => s.describe(),
            Kind::Entra(e) => e.describe(),
            Kind::KeyVault(s) => s.describe(),
            Kind::Port(p) => p.describe(),
            Kind::Gcp(g) => g.describe(),
        }
    }

    /// What was sent, for `doctor`'s likely-cause hints.
    pub fn sent_audience(&self, identity_audience: Option<&str>) -> Vec<String> {
        match &self.kind {
            Kind::OAuth(o) => o.audience.clone(),
            Kind::Aws(a) => vec![a.audience().to_owned()],
            Kind::Entra(e) => vec![e.cfg.audience.clone()],
            Kind::Gcp(g) => vec![g.cfg.audience.clone()],
            _ => identity_audience
                .map(|a| vec![a.to_owned()])
                .unwrap_or_default(),
        }
    }

    /// Likely causes of `e` that only this kind knows (AWS's), for `doctor`;
    /// `None`: the general hints apply.
    pub fn hints(
        &self,
        e: &ExchangeError,
        sent_audience: &[String],
        claims: &crate::identity::UnverifiedClaims,
    ) -> Option<Vec<String>> {
        match &self.kind {
            Kind::Aws(_) => aws::hints::hints(e, sent_audience, claims),
            Kind::AwsSecret(s) => aws::hints::secret_hints(e, &s.cfg),
            Kind::Entra(x) => azure::hints::entra_hints(e, &x.cfg, claims),
            Kind::KeyVault(s) => azure::hints::keyvault_hints(e, &s.cfg),
            Kind::Port(p) => port::hints(e, p),
            Kind::Gcp(g) => google::hints::hints(e, &g.cfg, claims),
            _ => None,
        }
    }

    /// Obtain a fresh credential. `identity` is required unless
    /// [`needs_identity`] is false; `parent` is the vault token for KV reads.
    pub async fn obtain(
        &self,
        http: &HttpClient,
        identity: Option<&IdentityToken>,
        parent: Option<&Credential>,
    ) -> Result<Issued, ExchangeError> {
        let need_id = || {
            identity.ok_or_else(|| ExchangeError::Setup {
                name: self.name.clone(),
                problem: "no identity token available".into(),
            })
        };
        match &self.kind {
            Kind::OAuth(o) => o.obtain(http, need_id()?).await,
            Kind::Vault(v) => v.login(http, need_id()?).await,
            Kind::Aws(a) => a.obtain(http, need_id()?).await,
            Kind::AwsSecret(s) => s.read(http, &self.name, parent).await,
            Kind::Entra(e) => e.obtain(http, need_id()?).await,
            Kind::KeyVault(s) => s.read(http, &self.name, parent).await,
            Kind::Port(p) => p.obtain(http, &self.name, parent).await,
            Kind::Gcp(g) => g.obtain(http, need_id()?).await,
            Kind::VaultKv {
                parent: pname,
                address,
                namespace,
                path,
                field,
                ..
            } => {
                let token = parent.ok_or_else(|| ExchangeError::Parent {
                    name: self.name.clone(),
                    parent: pname.clone(),
                    reason: Box::new(NotObtained),
                })?;
                vault::read_kv(http, address, namespace.as_deref(), token, path, field).await
            }
            Kind::Passthrough { .. } => {
                let id = need_id()?;
                Ok(Issued {
                    // The one place an identity token becomes a credential.
                    value: Credential::passthrough(&id.jwt),
                    // Counted from the absolute `exp`, read after the
                    // request was sent: exact, no rounding to allow for.
                    lifetime: id.claims.remaining(),
                    granularity: Duration::ZERO,
                    renewable: false,
                    about: Vec::new(),
                })
            }
        }
    }

    /// Extend a renewable credential in place (Vault `renew-self`).
    /// `Ok(None)` when this kind does not renew.
    pub async fn renew(
        &self,
        http: &HttpClient,
        current: &Credential,
    ) -> Result<Option<Issued>, ExchangeError> {
        match &self.kind {
            Kind::Vault(v) => v.renew(http, current).await.map(Some),
            _ => Ok(None),
        }
    }

    /// Whether [`Exchanger::revoke`] needs the job's token (an RFC 7523
    /// client-assertion client has no other credential to revoke with).
    pub fn revokes_with_identity(&self) -> bool {
        matches!(&self.kind, Kind::OAuth(o) if o.authenticates_with_assertion())
    }

    pub async fn revoke(
        &self,
        http: &HttpClient,
        value: &Credential,
        id: Option<&IdentityToken>,
    ) -> Result<Revoked, ExchangeError> {
        match &self.kind {
            Kind::OAuth(o) => o.revoke(http, value, id).await,
            Kind::Vault(v) => v.revoke(http, value).await,
            Kind::VaultKv { .. } => Ok(Revoked::NotRevocable(
                "a KV secret is not ours to revoke; its vault token is revoked",
            )),
            Kind::Passthrough { .. } => Ok(Revoked::NotRevocable(
                "the platform's own token expires by itself",
            )),
            Kind::Aws(a) => Ok(a.revoke(value)),
            Kind::AwsSecret(_) => Ok(Revoked::NotRevocable(
                "a Secrets Manager value is not ours to revoke; the role session's keys expire on their own",
            )),
            Kind::Entra(e) => Ok(e.revoke(value)),
            Kind::Gcp(g) => Ok(g.revoke(value)),
            Kind::KeyVault(_) => Ok(Revoked::NotRevocable(
                "a Key Vault secret is not ours to revoke; the Entra token it was read with expires on its own",
            )),
            Kind::Port(p) => Ok(p.revoke()),
        }
    }
}

/// Seconds from a JSON number or numeric string (some services send "3600").
pub(crate) fn seconds(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
