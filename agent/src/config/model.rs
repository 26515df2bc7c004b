//! The validated configuration the rest of lanyard reads (routes are in
//! `crate::route`). Built by the section readers; nothing here parses.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::keyword;
use super::{DEFAULT_JITTER, DEFAULT_REFRESH_FRACTION, DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN};

/// Where the identity token comes from: a CI platform, a file, a variable,
/// or a developer login. Spelt in the config as `source = "github"` etc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Github,
    Gitlab,
    Bitbucket,
    Circleci,
    Buildkite,
    File,
    Env,
    /// A developer's own login (`lanyard login`), on a laptop.
    Login,
}

impl Platform {
    /// A developer login, as opposed to a CI automation identity; routes
    /// may be limited to one kind (`identities`).
    pub fn is_developer(self) -> bool {
        self == Platform::Login
    }

    /// As in `source = "..."`.
    pub fn name(self) -> &'static str {
        keyword::name(&self)
    }
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `None`: `source = "auto"`, detected from the environment.
    pub source: Option<Platform>,
    /// Audience requested where the platform mints on demand (GitHub, Buildkite).
    pub audience: Option<String>,
    /// GitLab / env: the variable holding the token.
    pub variable: Option<String>,
    /// file: the token file, re-read on every use.
    pub path: Option<PathBuf>,
    /// Buildkite: the agent binary.
    pub buildkite_agent: String,
    /// Remove GitHub's `ACTIONS_ID_TOKEN_REQUEST_*` from a child's environment.
    pub scrub_request_env: bool,
    /// `[login]`: the developer identity profile for laptops.
    pub login: Option<LoginConfig>,
}

/// How `lanyard login` gets the developer's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginFlow {
    /// RFC 8628 device authorization grant (default: works over SSH too).
    Device,
    /// Authorization code + PKCE (S256) with a loopback redirect, for IdPs
    /// without a device endpoint.
    Pkce,
}

/// `[login]`: the company IdP as a developer signs in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginConfig {
    /// OIDC issuer; discovery is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: Url,
    /// A public (native) client; the ID token's `aud` must be this.
    pub client_id: String,
    /// Asked for besides `openid` and `offline_access`.
    pub scopes: Vec<String>,
    pub flow: LoginFlow,
}

/// `subject_token_type`: `jwt`, `id_token` or `access_token` (or the RFC
/// 8693 URN of any). `access_token` is for servers that validate an
/// external token only as an access token (Keycloak's external-to-internal
/// exchange, through the provider's introspection and UserInfo endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectTokenType {
    Jwt,
    IdToken,
    AccessToken,
}

impl SubjectTokenType {
    /// RFC 8693's token type URNs are this followed by the config spelling.
    pub(super) const URN_PREFIX: &'static str = "urn:ietf:params:oauth:token-type:";

    pub fn urn(self) -> &'static str {
        match self {
            SubjectTokenType::Jwt => "urn:ietf:params:oauth:token-type:jwt",
            SubjectTokenType::IdToken => "urn:ietf:params:oauth:token-type:id_token",
            SubjectTokenType::AccessToken => "urn:ietf:params:oauth:token-type:access_token",
        }
    }
}

/// How lanyard authenticates to an OAuth token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Public client: `client_id` in the form, if any.
    None { client_id: Option<String> },
    /// `client_secret_basic` (RFC 6749 §2.3.1).
    Basic {
        client_id: String,
        secret_env: String,
    },
    /// `client_secret_post`.
    Post {
        client_id: String,
        secret_env: String,
    },
}

#[derive(Debug, Clone)]
pub struct OAuthEndpoint {
    /// Token endpoint; filled from discovery when only `issuer` is given.
    pub token_url: Option<Url>,
    /// Discovery base (`/.well-known/openid-configuration`, then
    /// `/.well-known/oauth-authorization-server`).
    pub issuer: Option<Url>,
    pub revocation_url: Option<Url>,
    pub audience: Vec<String>,
    pub resource: Vec<Url>,
    pub scope: Option<String>,
    /// Used when the service omits `expires_in`.
    pub lifetime: Duration,
}

#[derive(Debug, Clone)]
pub enum CredentialKind {
    /// RFC 8693.
    TokenExchange {
        endpoint: OAuthEndpoint,
        subject_token_type: SubjectTokenType,
        requested_token_type: Option<String>,
        /// Keycloak's `subject_issuer`: the alias of the identity provider
        /// that issued the subject token (not part of RFC 8693).
        subject_issuer: Option<String>,
        client: ClientAuth,
    },
    /// RFC 7523 §2.1: the job's token as a JWT authorization grant
    /// (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`).
    JwtAuthorizationGrant {
        endpoint: OAuthEndpoint,
        client: ClientAuth,
    },
    /// RFC 7523 client assertion with `client_credentials`. Without
    /// `client_id` the server finds the client from the assertion itself
    /// (RFC 7521 §4.2; Keycloak's federated client authentication).
    JwtBearer {
        endpoint: OAuthEndpoint,
        client_id: Option<String>,
    },
    /// Vault/OpenBao JWT login.
    Vault {
        address: Url,
        mount: String,
        role: String,
        namespace: Option<String>,
    },
    /// A KV v2 field read with a vault credential.
    VaultKv {
        from: String,
        path: String,
        field: String,
        refresh: Duration,
    },
    /// The identity token itself.
    Passthrough { audience: Option<String> },
    /// AWS STS `AssumeRoleWithWebIdentity`.
    AwsWebIdentity(AwsWebIdentity),
    /// A Secrets Manager value read with an aws-web-identity credential.
    AwsSecret(AwsSecret),
    /// Entra ID: the job's token as a federated client assertion.
    Entra(Entra),
    /// A Key Vault secret read with an entra credential.
    KeyVaultSecret(KeyVaultSecret),
    /// Port's API: client id and secret for an access token.
    Port(Port),
    /// Google Cloud workload identity federation (STS, then optionally
    /// service account impersonation).
    GcpWorkloadIdentity(super::credential::google::GcpWorkloadIdentity),
}

/// `exchange = "port"`: `POST <api_url>/v1/auth/access_token` with
/// `{"clientId","clientSecret"}` for a Bearer access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// `https://api.getport.io` (EU) unless configured (`https://api.us.getport.io`).
    pub api_url: Url,
    /// `<api_url>/v1/auth/access_token`.
    pub token_url: Url,
    pub client_id: PortClientId,
    pub client_secret: PortSecret,
}

/// Where a Port credential's client id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortClientId {
    /// `client_id = "..."`: not a secret.
    Literal(String),
    /// `client_id_env = "VAR"`: a CI variable, scrubbed from `lanyard run`'s child.
    Env(String),
}

/// Where a Port credential's client secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSecret {
    /// `client_secret_env = "VAR"`: a CI variable, scrubbed from `lanyard run`'s child.
    Env(String),
    /// `client_secret_from = "<credential>"`: a secret read defined above
    /// (Vault KV, Secrets Manager, Key Vault); its current value.
    From(String),
}

/// `exchange = "entra"`: RFC 7523 client assertion at Entra ID's v2.0 token
/// endpoint, `client_credentials` for one resource's `.default` scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entra {
    /// A directory (tenant) ID or a verified domain.
    pub tenant: String,
    /// The application (client) ID whose federated credential trusts the job.
    pub client_id: String,
    /// `<resource>/.default`.
    pub scope: String,
    /// `https://login.microsoftonline.com` unless configured.
    pub authority: Url,
    /// `<authority>/<tenant>/oauth2/v2.0/token`.
    pub token_url: Url,
    /// The `aud` the identity token is minted for (`api://AzureADTokenExchange`).
    pub audience: String,
}

/// `from = "<entra credential>"`: `GET <secret url>?api-version=7.4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultSecret {
    pub from: String,
    /// `https://<vault>.vault.azure.net/secrets/<name>[/<version>]`.
    pub url: Url,
    pub refresh: Duration,
}

/// `from = "<aws credential>"`: `GetSecretValue`, signed with its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSecret {
    pub from: String,
    /// A secret name or its ARN.
    pub secret_id: String,
    /// A key of the JSON object the secret holds; `None`: the whole string.
    pub field: Option<String>,
    /// `None`: AWSCURRENT.
    pub version_stage: Option<String>,
    pub region: String,
    /// `https://secretsmanager.<region>.amazonaws.com` unless configured.
    pub endpoint: Url,
    pub refresh: Duration,
}

/// `exchange = "aws-web-identity"`: the job's identity token for a role's
/// temporary keys (STS `AssumeRoleWithWebIdentity`, unsigned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsWebIdentity {
    /// `arn:<partition>:iam::<account>:role/<path/name>`.
    pub role_arn: String,
    /// `None`: built from the CI claims at each exchange.
    pub session_name: Option<String>,
    /// Serve the keys to the job on the AWS container-credentials endpoint
    /// (`container_endpoint = true`; off by default: the job then sees
    /// short-lived real keys).
    pub container_endpoint: bool,
    /// `DurationSeconds`, 900 s to 12 h.
    pub duration: Duration,
    /// An inline session policy (JSON text).
    pub policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub region: String,
    /// `https://sts.<region>.amazonaws.com` unless configured.
    pub sts_endpoint: Url,
    /// The `aud` the identity token is minted for: the credential's
    /// `audience`, else `[identity] audience`, else `sts.amazonaws.com`.
    pub audience: String,
}

impl CredentialKind {
    /// The credential a `from` read is made with.
    pub fn parent(&self) -> Option<&str> {
        match self {
            CredentialKind::VaultKv { from, .. } => Some(from),
            CredentialKind::AwsSecret(s) => Some(&s.from),
            CredentialKind::KeyVaultSecret(s) => Some(&s.from),
            CredentialKind::Port(Port {
                client_secret: PortSecret::From(from),
                ..
            }) => Some(from),
            _ => None,
        }
    }

    /// Variables holding a secret lanyard reads (client secrets, a Port
    /// client id): `lanyard run` removes them from the child's environment.
    pub fn secret_variables(&self) -> Vec<&str> {
        match self {
            CredentialKind::TokenExchange { client, .. }
            | CredentialKind::JwtAuthorizationGrant { client, .. } => match client {
                ClientAuth::Basic { secret_env, .. } | ClientAuth::Post { secret_env, .. } => {
                    vec![secret_env]
                }
                ClientAuth::None { .. } => Vec::new(),
            },
            CredentialKind::Port(p) => {
                let mut v = Vec::new();
                if let PortClientId::Env(e) = &p.client_id {
                    v.push(e.as_str());
                }
                if let PortSecret::Env(e) = &p.client_secret {
                    v.push(e.as_str());
                }
                v
            }
            _ => Vec::new(),
        }
    }

    /// The `exchange` it was configured with, or `vault-kv` for a `from` read.
    pub fn label(&self) -> &'static str {
        let exchange = match self {
            CredentialKind::TokenExchange { .. } => ExchangeKind::TokenExchange,
            CredentialKind::JwtBearer { .. } => ExchangeKind::JwtBearer,
            CredentialKind::JwtAuthorizationGrant { .. } => ExchangeKind::JwtAuthorizationGrant,
            CredentialKind::Vault { .. } => ExchangeKind::Vault,
            CredentialKind::VaultKv { .. } => return "vault-kv",
            CredentialKind::Passthrough { .. } => ExchangeKind::Passthrough,
            CredentialKind::AwsWebIdentity(_) => ExchangeKind::AwsWebIdentity,
            CredentialKind::AwsSecret(_) => return "aws-secrets-manager",
            CredentialKind::Entra(_) => ExchangeKind::Entra,
            CredentialKind::KeyVaultSecret(_) => return "azure-key-vault",
            CredentialKind::Port(_) => ExchangeKind::Port,
            CredentialKind::GcpWorkloadIdentity(_) => ExchangeKind::GcpWorkloadIdentity,
        };
        keyword::name(&exchange)
    }
}

/// `exchange = "..."`: how a credential is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExchangeKind {
    TokenExchange,
    JwtBearer,
    JwtAuthorizationGrant,
    Vault,
    Passthrough,
    AwsWebIdentity,
    Entra,
    Port,
    GcpWorkloadIdentity,
}

#[derive(Debug, Clone)]
pub struct CredentialConfig {
    pub name: String,
    pub kind: CredentialKind,
}

/// `[proxy] egress`: what happens to a request no route covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Default)]
pub struct UpstreamConfig {
    pub extra_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    pub file: Option<PathBuf>,
    /// Send the commit and pipeline ids to routed upstreams as headers.
    pub trace_headers: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct RotationConfig {
    pub fraction: f64,
    pub jitter: f64,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            fraction: DEFAULT_REFRESH_FRACTION,
            jitter: DEFAULT_JITTER,
            retry_min: DEFAULT_RETRY_MIN,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}
