//! Configuration: `lanyard.toml` → [`Config`]. `raw` reads what the user
//! wrote (with positions); this module checks meaning (URLs, the transport
//! rule, durations, references between credentials and routes) and builds the
//! validated objects the rest of lanyard uses. Every problem in a file is
//! reported in one pass, each naming file, line, column, key and expectation.

mod proxy;
mod raw;
mod route;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::env::Env;
use crate::route::Route;
pub use proxy::{ProxyConfig, UpstreamLimits};
use raw::{At, Diag, Table};

/// Config file name looked up in the working directory when neither
/// `--config` nor `$LANYARD_CONFIG` names one.
pub const DEFAULT_FILE: &str = "lanyard.toml";
/// Why 0.7: refresh with 30 % of the lifetime left, enough for a retry or two
/// before expiry (linkerd uses the same share).
pub const DEFAULT_REFRESH_FRACTION: f64 = 0.7;
/// ± share of the lifetime, so parallel jobs do not refresh in lockstep.
pub const DEFAULT_JITTER: f64 = 0.1;
/// First retry delay after a failed refresh; doubles up to the max.
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Lifetime assumed when a token service omits `expires_in` (RFC 6749 makes
/// it optional); short on purpose.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// How often a Vault KV field is re-read.
pub const DEFAULT_KV_REFRESH: Duration = Duration::from_secs(300);
/// Matches DESIGN's connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `credential[1].token_url`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// All problems found in one file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrors {
    #[error("cannot read config {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("no config file: pass --config, set LANYARD_CONFIG, or create ./lanyard.toml")]
    NotFound,
    #[error("{}", invalid_summary(.0))]
    Invalid(Vec<ConfigError>),
}

/// `F has N problems:` and one indented line each. Never indexes: an empty
/// list must not panic while printing an error.
fn invalid_summary(errs: &[ConfigError]) -> String {
    let file = errs
        .first()
        .map(|e| e.file.display().to_string())
        .unwrap_or_else(|| "the config".into());
    let mut s = format!(
        "{file} has {} problem{}:",
        errs.len(),
        if errs.len() == 1 { "" } else { "s" }
    );
    for e in errs {
        s.push_str(&format!("\n  {e}"));
    }
    s
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub identity: IdentityConfig,
    pub credentials: Vec<CredentialConfig>,
    pub routes: Vec<Route>,
    pub proxy: ProxyConfig,
    pub upstream: UpstreamConfig,
    pub audit: AuditConfig,
    pub rotation: RotationConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Auto,
    Github,
    Gitlab,
    Bitbucket,
    Circleci,
    Buildkite,
    File,
    Env,
    Login,
}

impl SourceKind {
    pub const NAMES: &'static [&'static str] = &[
        "auto",
        "github",
        "gitlab",
        "bitbucket",
        "circleci",
        "buildkite",
        "file",
        "env",
        "login",
    ];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Self::Auto,
            "github" => Self::Github,
            "gitlab" => Self::Gitlab,
            "bitbucket" => Self::Bitbucket,
            "circleci" => Self::Circleci,
            "buildkite" => Self::Buildkite,
            "file" => Self::File,
            "env" => Self::Env,
            "login" => Self::Login,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub source: SourceKind,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectTokenType {
    Jwt,
    IdToken,
}

impl SubjectTokenType {
    pub fn urn(self) -> &'static str {
        match self {
            SubjectTokenType::Jwt => "urn:ietf:params:oauth:token-type:jwt",
            SubjectTokenType::IdToken => "urn:ietf:params:oauth:token-type:id_token",
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
        client: ClientAuth,
    },
    /// RFC 7523 client assertion with `client_credentials`.
    JwtBearer {
        endpoint: OAuthEndpoint,
        client_id: String,
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
}

impl CredentialKind {
    pub fn label(&self) -> &'static str {
        match self {
            CredentialKind::TokenExchange { .. } => "token-exchange",
            CredentialKind::JwtBearer { .. } => "jwt-bearer",
            CredentialKind::Vault { .. } => "vault",
            CredentialKind::VaultKv { .. } => "vault-kv",
            CredentialKind::Passthrough { .. } => "passthrough",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CredentialConfig {
    pub name: String,
    pub kind: CredentialKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Config {
    /// Which file to load: `--config`, then `$LANYARD_CONFIG`, then `./lanyard.toml`.
    pub fn locate(flag: Option<&Path>, env: &dyn Env) -> Result<PathBuf, ConfigErrors> {
        if let Some(p) = flag {
            return Ok(p.to_owned());
        }
        if let Some(p) = env.non_empty("LANYARD_CONFIG") {
            return Ok(PathBuf::from(p));
        }
        let p = PathBuf::from(DEFAULT_FILE);
        if p.exists() {
            Ok(p)
        } else {
            Err(ConfigErrors::NotFound)
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigErrors::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Config::parse(path, &src)
    }

    pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigErrors> {
        let mut d = Diag::new(path, src);
        let cfg = raw::parse(&mut d, src).and_then(|doc| build(&mut d, path, doc));
        if d.errors.is_empty() {
            cfg.ok_or_else(|| ConfigErrors::Invalid(Vec::new()))
        } else {
            let mut errs = d.errors;
            errs.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors::Invalid(errs))
        }
    }

    pub fn credential(&self, name: &str) -> Option<&CredentialConfig> {
        self.credentials.iter().find(|c| c.name == name)
    }

    /// Credentials a developer login does not obtain: every route that uses
    /// them is CI-only (`identities = ["ci"]`), and no credential that is
    /// obtained reads through them. Why: the same file must start on a
    /// laptop, where the CI-only exchange (bound to a repository claim)
    /// would refuse the developer and stop the whole session.
    pub fn ci_only_credentials(&self) -> Vec<String> {
        let routed = |name: &str| self.routes.iter().any(|r| r.credential == name);
        let mut needed: Vec<&str> = self
            .credentials
            .iter()
            .filter(|c| {
                !routed(&c.name)
                    || self
                        .routes
                        .iter()
                        .any(|r| r.credential == c.name && r.identities.allows_developer())
            })
            .map(|c| c.name.as_str())
            .collect();
        // A KV read needs its vault credential; follow `from` to the top.
        let mut i = 0;
        while i < needed.len() {
            if let Some(CredentialKind::VaultKv { from, .. }) =
                self.credential(needed[i]).map(|c| &c.kind)
            {
                if !needed.contains(&from.as_str()) {
                    needed.push(from.as_str());
                }
            }
            i += 1;
        }
        self.credentials
            .iter()
            .filter(|c| !needed.contains(&c.name.as_str()))
            .map(|c| c.name.clone())
            .collect()
    }
}

const TOP_KEYS: &[&str] = &[
    "identity",
    "credential",
    "route",
    "proxy",
    "upstream",
    "audit",
    "rotation",
    "login",
];

fn build(d: &mut Diag<'_>, path: &Path, mut doc: Table<'_>) -> Option<Config> {
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let t = doc.table(d, "identity");
    let identity_span = t.as_ref().map(|t| t.span.clone());
    let identity = identity(d, t);
    let t = doc.table(d, "login");
    let login = login(d, t);
    let cred_tables = doc.tables(d, "credential");
    let route_tables = doc.tables(d, "route");
    let t = doc.table(d, "proxy");
    let proxy = proxy::proxy(d, t);
    let t = doc.table(d, "upstream");
    let upstream = upstream(d, t, &base);
    let t = doc.table(d, "audit");
    let audit = audit(d, t);
    let t = doc.table(d, "rotation");
    let rotation = rotation(d, t);
    doc.finish(d, TOP_KEYS);

    let declared: Vec<String> = cred_tables
        .iter()
        .filter_map(|t| t.peek_string("name"))
        .collect();
    let mut credentials: Vec<CredentialConfig> = Vec::new();
    for t in cred_tables {
        if let Some(c) = credential(d, t, &credentials) {
            credentials.push(c);
        }
    }
    // `from` names a vault credential defined above it (checked in
    // `credential`), which is also the order of the first exchange.
    let mut routes = Vec::new();
    for t in route_tables {
        if let Some(r) = route::route(d, t, &declared) {
            routes.push(r);
        }
    }
    route::check_names(d, &routes);
    let mut identity = identity?;
    identity.login = login?;
    if identity.source == SourceKind::Login && identity.login.is_none() {
        d.err(
            &identity_span.unwrap_or(0..0),
            "identity.source",
            "source = \"login\" needs a [login] table with `issuer` and `client_id` (the IdP a developer signs in to)",
        );
    }
    Some(Config {
        path: path.to_owned(),
        identity,
        credentials,
        routes,
        proxy: proxy?,
        upstream: upstream?,
        audit: audit?,
        rotation: rotation?,
    })
}

fn identity(d: &mut Diag<'_>, t: Option<Table<'_>>) -> Option<IdentityConfig> {
    let Some(mut t) = t else {
        return Some(IdentityConfig {
            source: SourceKind::Auto,
            audience: None,
            variable: None,
            path: None,
            buildkite_agent: "buildkite-agent".into(),
            scrub_request_env: true,
            login: None,
        });
    };
    let source = t.string(d, "source");
    let audience = t.string(d, "audience");
    let variable = t.string(d, "variable");
    let path = t.string(d, "path");
    let agent = t.string(d, "buildkite_agent");
    let scrub = t.bool(d, "scrub_request_env");
    let kind = match &source {
        None => SourceKind::Auto,
        Some(s) => match SourceKind::parse(&s.v) {
            Some(k) => k,
            None => {
                d.err(
                    &s.span,
                    &t.key("source"),
                    format!(
                        "unknown identity source {:?}; expected one of: {}",
                        s.v,
                        SourceKind::NAMES.join(", ")
                    ),
                );
                SourceKind::Auto
            }
        },
    };
    if let Some(a) = &audience {
        if a.v.trim().is_empty() {
            d.err(&a.span, &t.key("audience"), "expected a non-empty audience");
        }
    }
    if kind == SourceKind::Env && variable.is_none() {
        d.err(
            &t.span.clone(),
            &t.key("variable"),
            "source = \"env\" needs `variable`, the environment variable that holds the token",
        );
    }
    if let Some(v) = &variable {
        if !is_env_name(&v.v) {
            d.err(
                &v.span,
                &t.key("variable"),
                format!(
                    "expected an environment variable name (letters, digits, _), got {:?}",
                    v.v
                ),
            );
        }
    }
    if kind == SourceKind::File && path.is_none() {
        d.err(
            &t.span.clone(),
            &t.key("path"),
            "source = \"file\" needs `path`, the token file",
        );
    }
    t.finish(
        d,
        &[
            "source",
            "audience",
            "variable",
            "path",
            "buildkite_agent",
            "scrub_request_env",
        ],
    );
    Some(IdentityConfig {
        source: kind,
        audience: audience.map(|a| a.v),
        variable: variable.map(|v| v.v),
        path: path.map(|p| PathBuf::from(p.v)),
        buildkite_agent: agent
            .map(|a| a.v)
            .unwrap_or_else(|| "buildkite-agent".into()),
        scrub_request_env: scrub.map(|s| s.v).unwrap_or(true),
        login: None,
    })
}

const LOGIN_KEYS: &[&str] = &["issuer", "client_id", "scopes", "flow"];

fn login(d: &mut Diag<'_>, t: Option<Table<'_>>) -> Option<Option<LoginConfig>> {
    let Some(mut t) = t else { return Some(None) };
    let issuer = t.string(d, "issuer");
    let client_id = t.string(d, "client_id");
    let scopes = t.strings(d, "scopes");
    let flow = t.string(d, "flow");
    t.finish(d, LOGIN_KEYS);
    let issuer = match &issuer {
        Some(i) => url(d, &t.key("issuer"), i),
        None => {
            d.err(
                &t.span,
                &t.key("issuer"),
                "[login] needs `issuer`, the company IdP's OIDC issuer URL, e.g. \"https://login.example.com\"",
            );
            None
        }
    };
    let client_id = match &client_id {
        Some(c) if !c.v.trim().is_empty() => Some(c.v.clone()),
        Some(c) => {
            d.err(
                &c.span,
                &t.key("client_id"),
                "expected a non-empty client id",
            );
            None
        }
        None => {
            d.err(
                &t.span,
                &t.key("client_id"),
                "[login] needs `client_id`, the IdP's public (native) client for lanyard",
            );
            None
        }
    };
    let mut list = Vec::new();
    if let Some(s) = &scopes {
        for sc in &s.v {
            if sc.is_empty()
                || sc
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
            {
                d.err(
                    &s.span,
                    &t.key("scopes"),
                    format!("expected scope names without spaces or quotes, got {sc:?}"),
                );
            } else if sc != "openid" && sc != "offline_access" && !list.contains(sc) {
                list.push(sc.clone());
            }
        }
    }
    let flow = match flow.as_ref().map(|f| f.v.as_str()) {
        None | Some("device") => Some(LoginFlow::Device),
        Some("pkce") => Some(LoginFlow::Pkce),
        Some(other) => {
            if let Some(f) = &flow {
                d.err(
                    &f.span,
                    &t.key("flow"),
                    format!("expected \"device\" or \"pkce\", got {other:?}"),
                );
            }
            None
        }
    };
    Some(Some(LoginConfig {
        issuer: issuer?,
        client_id: client_id?,
        scopes: list,
        flow: flow?,
    }))
}

pub(crate) fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A URL that obeys the transport rule: https, or http to a loopback host.
pub(crate) fn url(d: &mut Diag<'_>, key: &str, v: &At<String>) -> Option<Url> {
    let u = match Url::parse(&v.v) {
        Ok(u) => u,
        Err(e) => {
            d.err(
                &v.span,
                key,
                format!("expected an absolute URL, got {:?} ({e})", v.v),
            );
            return None;
        }
    };
    if !u.username().is_empty() || u.password().is_some() {
        d.err(
            &v.span,
            key,
            "a URL here must not carry userinfo (user:password@); credentials never go in config",
        );
        return None;
    }
    if let Err(e) = crate::http::check_transport(&u) {
        d.err(
            &v.span,
            key,
            format!("expected an https:// URL (plain http only for loopback hosts): {e}"),
        );
        return None;
    }
    Some(u)
}

pub(crate) fn duration(d: &mut Diag<'_>, key: &str, v: &At<String>) -> Option<Duration> {
    match humantime::parse_duration(&v.v) {
        Ok(dur) if !dur.is_zero() => Some(dur),
        Ok(_) => {
            d.err(&v.span, key, "expected a duration greater than zero");
            None
        }
        Err(e) => {
            d.err(
                &v.span,
                key,
                format!(
                    "expected a duration such as \"30s\", \"5m\" or \"1h 30m\", got {:?} ({e})",
                    v.v
                ),
            );
            None
        }
    }
}

const CREDENTIAL_KEYS: &[&str] = &[
    "name",
    "exchange",
    "from",
    "token_url",
    "issuer",
    "revocation_url",
    "audience",
    "resource",
    "scope",
    "subject_token_type",
    "requested_token_type",
    "client_id",
    "client_secret_env",
    "client_auth",
    "lifetime",
    "address",
    "mount",
    "role",
    "namespace",
    "secret",
    "refresh",
];
const EXCHANGES: &[&str] = &["token-exchange", "jwt-bearer", "vault", "passthrough"];

fn credential(
    d: &mut Diag<'_>,
    mut t: Table<'_>,
    earlier: &[CredentialConfig],
) -> Option<CredentialConfig> {
    let name = t.string(d, "name");
    let exchange = t.string(d, "exchange");
    let from = t.string(d, "from");
    // Read every key first, so that each wrong type is reported.
    let token_url = t.string(d, "token_url");
    let issuer = t.string(d, "issuer");
    let revocation_url = t.string(d, "revocation_url");
    let audience = t.strings(d, "audience");
    let resource = t.strings(d, "resource");
    let scope = t.strings(d, "scope");
    let stt = t.string(d, "subject_token_type");
    let rtt = t.string(d, "requested_token_type");
    let client_id = t.string(d, "client_id");
    let secret_env = t.string(d, "client_secret_env");
    let client_auth = t.string(d, "client_auth");
    let lifetime = t.string(d, "lifetime");
    let address = t.string(d, "address");
    let mount = t.string(d, "mount");
    let role = t.string(d, "role");
    let namespace = t.string(d, "namespace");
    let secret = t.string(d, "secret");
    let refresh = t.string(d, "refresh");
    t.finish(d, CREDENTIAL_KEYS);
    let sp = |v: &Option<At<String>>| v.as_ref().map(|v| v.span.clone());
    let (address_span, mount_span, role_span, namespace_span) =
        (sp(&address), sp(&mount), sp(&role), sp(&namespace));

    let name_v = match &name {
        None => {
            d.err(
                &t.span,
                &t.key("name"),
                "every [[credential]] needs a `name`",
            );
            None
        }
        Some(n) if !is_name(&n.v) => {
            d.err(
                &n.span,
                &t.key("name"),
                format!(
                    "expected a name of lowercase letters, digits, - and _ (at most 64), got {:?}",
                    n.v
                ),
            );
            None
        }
        Some(n) if earlier.iter().any(|c| c.name == n.v) => {
            d.err(
                &n.span,
                &t.key("name"),
                format!("credential {:?} is defined twice", n.v),
            );
            None
        }
        Some(n) => Some(n.v.clone()),
    };

    // Keys given that mean nothing for this kind, checked before building
    // the kind so that they are reported even when the kind is invalid.
    let applicable: &[&str] = match (exchange.as_ref().map(|e| e.v.as_str()), from.is_some()) {
        (None, true) => &["name", "from", "secret", "refresh"],
        (Some("token-exchange"), false) => &[
            "name",
            "exchange",
            "token_url",
            "issuer",
            "revocation_url",
            "audience",
            "resource",
            "scope",
            "lifetime",
            "client_id",
            "subject_token_type",
            "requested_token_type",
            "client_secret_env",
            "client_auth",
        ],
        (Some("jwt-bearer"), false) => &[
            "name",
            "exchange",
            "token_url",
            "issuer",
            "revocation_url",
            "audience",
            "resource",
            "scope",
            "lifetime",
            "client_id",
        ],
        (Some("vault"), false) => &["name", "exchange", "address", "mount", "role", "namespace"],
        (Some("passthrough"), false) => &["name", "exchange", "audience"],
        _ => CREDENTIAL_KEYS,
    };
    let kind_label = match (&exchange, &from) {
        (Some(e), _) => format!("exchange = {:?}", e.v),
        _ => "from".to_owned(),
    };
    // Keys that were given but mean nothing for this kind.
    for (k, span) in [
        ("token_url", token_url.as_ref().map(|v| v.span.clone())),
        ("issuer", issuer.as_ref().map(|v| v.span.clone())),
        (
            "revocation_url",
            revocation_url.as_ref().map(|v| v.span.clone()),
        ),
        ("audience", audience.as_ref().map(|v| v.span.clone())),
        ("resource", resource.as_ref().map(|v| v.span.clone())),
        ("scope", scope.as_ref().map(|v| v.span.clone())),
        ("subject_token_type", stt.as_ref().map(|v| v.span.clone())),
        ("requested_token_type", rtt.as_ref().map(|v| v.span.clone())),
        ("client_id", client_id.as_ref().map(|v| v.span.clone())),
        (
            "client_secret_env",
            secret_env.as_ref().map(|v| v.span.clone()),
        ),
        ("client_auth", client_auth.as_ref().map(|v| v.span.clone())),
        ("lifetime", lifetime.as_ref().map(|v| v.span.clone())),
        ("address", address_span),
        ("mount", mount_span),
        ("role", role_span),
        ("namespace", namespace_span),
        ("secret", secret.as_ref().map(|v| v.span.clone())),
        ("refresh", refresh.as_ref().map(|v| v.span.clone())),
    ] {
        if let Some(span) = span {
            if !applicable.contains(&k) {
                d.err(
                    &span,
                    &t.key(k),
                    format!("`{k}` does not apply to a credential with {kind_label}"),
                );
            }
        }
    }
    // Which keys each kind accepts, to name a key that does not apply.
    let kind = match (&exchange, &from) {
        (Some(e), Some(f)) => {
            d.err(
                &f.span,
                &t.key("from"),
                format!(
                    "a credential has either `exchange` or `from`, not both (exchange = {:?})",
                    e.v
                ),
            );
            return None;
        }
        (None, None) => {
            d.err(&t.span, &t.key("exchange"), format!("every [[credential]] needs `exchange` (one of: {}) or `from` (a vault credential, with `secret`)", EXCHANGES.join(", ")));
            return None;
        }
        (None, Some(f)) => {
            let (path, field) = match &secret {
                None => {
                    d.err(&t.span, &t.key("secret"), "a `from` credential needs `secret = \"<kv-v2 path>#<field>\"`, e.g. \"secret/data/ci/stripe#api_key\"");
                    (None, None)
                }
                Some(s) => match s.v.split_once('#') {
                    Some((p, f))
                        if !p.is_empty()
                            && !f.is_empty()
                            && !p.starts_with('/')
                            && !p.contains("..")
                            && p.contains("/data/") =>
                    {
                        (Some(p.to_owned()), Some(f.to_owned()))
                    }
                    _ => {
                        d.err(&s.span, &t.key("secret"), format!("expected \"<mount>/data/<path>#<field>\" (a KV v2 read path and a field), got {:?}", s.v));
                        (None, None)
                    }
                },
            };
            match earlier.iter().find(|c| c.name == f.v) {
                Some(CredentialConfig {
                    kind: CredentialKind::Vault { .. },
                    ..
                }) => {}
                Some(other) => d.err(
                    &f.span,
                    &t.key("from"),
                    format!(
                        "`from` must name a vault credential; {:?} is {}",
                        f.v,
                        other.kind.label()
                    ),
                ),
                None => d.err(
                    &f.span,
                    &t.key("from"),
                    format!(
                        "no vault credential named {:?} is defined above this one",
                        f.v
                    ),
                ),
            }
            let refresh = match &refresh {
                Some(r) => duration(d, &t.key("refresh"), r),
                None => Some(DEFAULT_KV_REFRESH),
            };
            Some(CredentialKind::VaultKv {
                from: f.v.clone(),
                path: path?,
                field: field?,
                refresh: refresh?,
            })
        }
        (Some(e), None) => {
            match e.v.as_str() {
                "token-exchange" | "jwt-bearer" => {
                    let endpoint = oauth_endpoint(
                        d,
                        &t,
                        &token_url,
                        &issuer,
                        &revocation_url,
                        &audience,
                        &resource,
                        &scope,
                        &lifetime,
                    );
                    if e.v == "token-exchange" {
                        let stt = match &stt {
                            None => Some(SubjectTokenType::Jwt),
                            Some(s) => match s.v.as_str() {
                                "jwt" | "urn:ietf:params:oauth:token-type:jwt" => {
                                    Some(SubjectTokenType::Jwt)
                                }
                                "id_token" | "urn:ietf:params:oauth:token-type:id_token" => {
                                    Some(SubjectTokenType::IdToken)
                                }
                                _ => {
                                    d.err(
                                        &s.span,
                                        &t.key("subject_token_type"),
                                        format!("expected \"jwt\" or \"id_token\", got {:?}", s.v),
                                    );
                                    None
                                }
                            },
                        };
                        let client = client_auth_of(d, &t, &client_id, &secret_env, &client_auth);
                        Some(CredentialKind::TokenExchange {
                            endpoint: endpoint?,
                            subject_token_type: stt?,
                            requested_token_type: rtt.as_ref().map(|r| r.v.clone()),
                            client: client?,
                        })
                    } else {
                        let cid = match &client_id {
                            Some(c) if !c.v.is_empty() => Some(c.v.clone()),
                            _ => {
                                d.err(&t.span, &t.key("client_id"), "exchange = \"jwt-bearer\" needs `client_id` (the application whose federated credential trusts this job)");
                                None
                            }
                        };
                        Some(CredentialKind::JwtBearer {
                            endpoint: endpoint?,
                            client_id: cid?,
                        })
                    }
                }
                "vault" => {
                    let address = match &address {
                        Some(a) => url(d, &t.key("address"), a),
                        None => {
                            d.err(&t.span, &t.key("address"), "exchange = \"vault\" needs `address`, e.g. \"https://vault.example.com\"");
                            None
                        }
                    };
                    let mount = mount.map(|m| m.v).unwrap_or_else(|| "jwt".into());
                    if mount.is_empty() || mount.contains("..") || mount.starts_with('/') {
                        d.err(
                            &t.span,
                            &t.key("mount"),
                            format!("expected an auth mount path such as \"jwt\", got {mount:?}"),
                        );
                    }
                    let role = match &role {
                        Some(r) if !r.v.is_empty() && !r.v.contains('/') => Some(r.v.clone()),
                        Some(r) => {
                            d.err(
                                &r.span,
                                &t.key("role"),
                                format!("expected a role name, got {:?}", r.v),
                            );
                            None
                        }
                        None => {
                            d.err(&t.span, &t.key("role"), "exchange = \"vault\" needs `role`, the JWT auth role to log in with");
                            None
                        }
                    };
                    Some(CredentialKind::Vault {
                        address: address?,
                        mount,
                        role: role?,
                        namespace: namespace.as_ref().map(|n| n.v.clone()),
                    })
                }
                "passthrough" => {
                    let aud = audience.as_ref().and_then(|a| {
                        if a.v.len() > 1 {
                            d.err(&a.span, &t.key("audience"), "passthrough takes one audience (the one the platform token is minted for)");
                        }
                        a.v.first().cloned()
                    });
                    Some(CredentialKind::Passthrough { audience: aud })
                }
                other => {
                    d.err(
                        &e.span,
                        &t.key("exchange"),
                        format!(
                            "unknown exchange {other:?}; expected one of: {}",
                            EXCHANGES.join(", ")
                        ),
                    );
                    return None;
                }
            }
        }
    };
    Some(CredentialConfig {
        name: name_v?,
        kind: kind?,
    })
}

#[allow(clippy::too_many_arguments)]
fn oauth_endpoint(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    token_url: &Option<At<String>>,
    issuer: &Option<At<String>>,
    revocation_url: &Option<At<String>>,
    audience: &Option<At<Vec<String>>>,
    resource: &Option<At<Vec<String>>>,
    scope: &Option<At<Vec<String>>>,
    lifetime: &Option<At<String>>,
) -> Option<OAuthEndpoint> {
    let tu = token_url.as_ref().map(|u| url(d, &t.key("token_url"), u));
    let is = issuer.as_ref().map(|u| url(d, &t.key("issuer"), u));
    let ru = revocation_url
        .as_ref()
        .map(|u| url(d, &t.key("revocation_url"), u));
    if token_url.is_none() && issuer.is_none() {
        d.err(
            &t.span,
            &t.key("token_url"),
            "needs `token_url` (the token endpoint), or `issuer` to discover it",
        );
        return None;
    }
    let mut res = Vec::new();
    if let Some(r) = resource {
        for s in &r.v {
            match Url::parse(s) {
                Ok(u) if u.fragment().is_none() => res.push(u),
                _ => d.err(
                    &r.span,
                    &t.key("resource"),
                    format!("expected an absolute URI without a fragment (RFC 8707), got {s:?}"),
                ),
            }
        }
    }
    let lt = match lifetime {
        Some(l) => duration(d, &t.key("lifetime"), l),
        None => Some(DEFAULT_LIFETIME),
    };
    Some(OAuthEndpoint {
        token_url: tu.flatten(),
        issuer: is.flatten(),
        revocation_url: ru.flatten(),
        audience: audience.as_ref().map(|a| a.v.clone()).unwrap_or_default(),
        resource: res,
        scope: scope
            .as_ref()
            .map(|s| s.v.join(" "))
            .filter(|s| !s.is_empty()),
        lifetime: lt?,
    })
}

fn client_auth_of(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    client_id: &Option<At<String>>,
    secret_env: &Option<At<String>>,
    method: &Option<At<String>>,
) -> Option<ClientAuth> {
    if let Some(s) = secret_env {
        if !is_env_name(&s.v) {
            d.err(&s.span, &t.key("client_secret_env"), format!("expected the name of an environment variable that holds the client secret, got {:?}", s.v));
            return None;
        }
    }
    let m = method
        .as_ref()
        .map(|m| m.v.as_str())
        .unwrap_or(if secret_env.is_some() {
            "basic"
        } else {
            "none"
        });
    let span = method
        .as_ref()
        .map(|m| m.span.clone())
        .unwrap_or(t.span.clone());
    match (m, client_id, secret_env) {
        ("none", cid, None) => Some(ClientAuth::None {
            client_id: cid.as_ref().map(|c| c.v.clone()),
        }),
        ("none", _, Some(s)) => {
            d.err(&s.span, &t.key("client_secret_env"), "client_auth = \"none\" sends no secret; remove client_secret_env or pick \"basic\"/\"post\"");
            None
        }
        ("basic" | "post", Some(cid), Some(s)) => {
            let (client_id, secret_env) = (cid.v.clone(), s.v.clone());
            Some(if m == "basic" {
                ClientAuth::Basic {
                    client_id,
                    secret_env,
                }
            } else {
                ClientAuth::Post {
                    client_id,
                    secret_env,
                }
            })
        }
        ("basic" | "post", _, _) => {
            d.err(
                &span,
                &t.key("client_auth"),
                format!("client_auth = {m:?} needs both `client_id` and `client_secret_env`"),
            );
            None
        }
        (other, _, _) => {
            d.err(
                &span,
                &t.key("client_auth"),
                format!("expected \"basic\", \"post\" or \"none\", got {other:?}"),
            );
            None
        }
    }
}

fn upstream(d: &mut Diag<'_>, t: Option<Table<'_>>, base: &Path) -> Option<UpstreamConfig> {
    let Some(mut t) = t else {
        return Some(UpstreamConfig::default());
    };
    let mut out = UpstreamConfig::default();
    if let Some(ca) = t.string(d, "extra_ca") {
        // Relative to the config file: the CA travels with the config.
        let p = base.join(&ca.v);
        if p.is_file() {
            out.extra_ca = Some(p);
        } else {
            d.err(&ca.span, &t.key("extra_ca"), format!("expected a PEM file; {} does not exist (relative paths are from the config file's folder)", p.display()));
        }
    }
    t.finish(d, &["extra_ca"]);
    Some(out)
}

fn audit(d: &mut Diag<'_>, t: Option<Table<'_>>) -> Option<AuditConfig> {
    let Some(mut t) = t else {
        return Some(AuditConfig::default());
    };
    let file = t.string(d, "file").map(|f| PathBuf::from(f.v));
    let trace = t.bool(d, "trace_headers").map(|b| b.v).unwrap_or(false);
    t.finish(d, &["file", "trace_headers"]);
    Some(AuditConfig {
        file,
        trace_headers: trace,
    })
}

fn rotation(d: &mut Diag<'_>, t: Option<Table<'_>>) -> Option<RotationConfig> {
    let mut out = RotationConfig::default();
    let Some(mut t) = t else { return Some(out) };
    if let Some(f) = t.number(d, "fraction") {
        if (0.1..=0.95).contains(&f.v) {
            out.fraction = f.v;
        } else {
            d.err(
                &f.span,
                &t.key("fraction"),
                format!(
                    "expected a share of the lifetime between 0.1 and 0.95, got {}",
                    f.v
                ),
            );
        }
    }
    if let Some(j) = t.number(d, "jitter") {
        if (0.0..=0.25).contains(&j.v) {
            out.jitter = j.v;
        } else {
            d.err(
                &j.span,
                &t.key("jitter"),
                format!("expected 0 to 0.25, got {}", j.v),
            );
        }
    }
    if let Some(v) = t.string(d, "retry_min") {
        if let Some(dur) = duration(d, &t.key("retry_min"), &v) {
            out.retry_min = dur;
        }
    }
    if let Some(v) = t.string(d, "retry_max") {
        if let Some(dur) = duration(d, &t.key("retry_max"), &v) {
            out.retry_max = dur;
        }
    }
    if out.retry_max < out.retry_min {
        d.err(
            &t.span,
            &t.key("retry_max"),
            "retry_max must not be smaller than retry_min",
        );
    }
    if out.fraction + out.jitter >= 1.0 {
        d.err(
            &t.span,
            &t.key("jitter"),
            "fraction + jitter must stay below 1, or a refresh could be scheduled after expiry",
        );
    }
    t.finish(d, &["fraction", "jitter", "retry_min", "retry_max"]);
    Some(out)
}

#[cfg(test)]
mod tests;
