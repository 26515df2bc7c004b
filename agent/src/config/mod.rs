//! Configuration: `lanyard.toml` → [`Config`]. `raw` reads what the user
//! wrote (with positions); this module checks meaning (URLs, the transport
//! rule, durations, references between credentials and routes) and builds the
//! validated objects the rest of lanyard uses. Every problem in a file is
//! reported in one pass, each naming file, line, column, key and expectation.
//!
//! - `model`: the validated types (routes are `crate::route`'s);
//! - `identity`, `credential` (one reader per exchange kind), `route`,
//!   `proxy`, `settings` (`[upstream]`, `[audit]`, `[rotation]`): one reader
//!   per section;
//! - `values`: checks the sections share (names, URLs, durations).

mod credential;
mod identity;
mod keyword;
mod model;
mod proxy;
mod raw;
mod route;
mod settings;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::Env;
use crate::route::Route;
#[cfg(test)]
pub(crate) use credential::aws::is_session_name;
pub use credential::google::GcpWorkloadIdentity;
pub use model::{
    AuditConfig, AwsSecret, AwsWebIdentity, ClientAuth, CredentialConfig, CredentialKind, Egress,
    Entra, IdentityConfig, KeyVaultSecret, LoginConfig, LoginFlow, OAuthEndpoint, Platform, Port,
    PortClientId, PortSecret, RotationConfig, SubjectTokenType, UpstreamConfig,
};
pub use proxy::{ProxyConfig, UpstreamLimits};
use raw::{Diag, Table};
use values::duration;

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
    #[error("cannot read config {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
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
    /// `tyk_api` on a route: (route index, the Tyk API definition file,
    /// resolved from the config file's folder). Only `doctor` reads it.
    pub tyk_apis: Vec<(usize, PathBuf)>,
    pub proxy: ProxyConfig,
    pub upstream: UpstreamConfig,
    pub audit: AuditConfig,
    pub rotation: RotationConfig,
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
        let src = std::fs::read_to_string(path).map_err(|cause| ConfigErrors::Read {
            path: path.to_owned(),
            cause,
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
            if let Some(from) = self.credential(needed[i]).and_then(|c| c.kind.parent()) {
                if !needed.contains(&from) {
                    needed.push(from);
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

/// The tables a file may have (each has its sections in `docs/config.md`).
pub(crate) const TOP_KEYS: &[&str] = &[
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
    let identity = identity::identity(d, t);
    let t = doc.table(d, "login");
    let login = identity::login(d, t);
    let cred_tables = doc.tables(d, "credential");
    let route_tables = doc.tables(d, "route");
    let t = doc.table(d, "proxy");
    let proxy = proxy::proxy(d, t);
    let t = doc.table(d, "upstream");
    let upstream = settings::upstream(d, t, &base);
    let t = doc.table(d, "audit");
    let audit = settings::audit(d, t);
    let t = doc.table(d, "rotation");
    let rotation = settings::rotation(d, t);
    doc.finish(d, TOP_KEYS);

    if cred_tables.is_empty() && d.errors.is_empty() {
        // Why: a session without credentials attaches nothing; most often
        // the wrong (or an empty) file was picked up. Said only when
        // nothing else is wrong: a file with typos gets those first.
        d.err(
            &(0..0),
            "",
            "no [[credential]]: lanyard would attach nothing. Add a [[credential]] and a [[route]] that uses it (docs/config.md starts with a minimal file)",
        );
    }
    let declared: Vec<String> = cred_tables
        .iter()
        .filter_map(|t| t.peek_string("name"))
        .collect();
    let mut credentials: Vec<CredentialConfig> = Vec::new();
    for t in cred_tables {
        if let Some(c) = credential::credential(d, t, &credentials) {
            credentials.push(c);
        }
    }
    // `from` names a vault credential defined above it (checked in
    // `credential`), which is also the order of the first exchange.
    let aws_creds: Vec<String> = credentials
        .iter()
        .filter(|c| matches!(c.kind, CredentialKind::AwsWebIdentity(_)))
        .map(|c| c.name.clone())
        .collect();
    let mut routes = Vec::new();
    let mut tyk_apis = Vec::new();
    let base = path.parent().unwrap_or(Path::new("."));
    let mut written = Vec::new();
    for t in route_tables {
        let at = (t.path.clone(), t.peek_span("url").unwrap_or(t.span.clone()));
        if let Some((r, tyk)) = route::route(d, t, &declared, &aws_creds) {
            if let Some(f) = tyk {
                tyk_apis.push((routes.len(), base.join(f)));
            }
            routes.push(r);
            written.push(at);
        }
    }
    route::check_names(d, &routes);
    route::check_duplicates(d, &routes, &written);
    let mut identity = identity?;
    identity.login = login?;
    aws_audience(&mut credentials, &identity);
    if identity.source == Some(Platform::Login) && identity.login.is_none() {
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
        tyk_apis,
        proxy: proxy?,
        upstream: upstream?,
        audit: audit?,
        rotation: rotation?,
    })
}

/// The credential served on the AWS container-credentials endpoint
/// (`container_endpoint = true`; config allows one).
pub fn container_credential(credentials: &[CredentialConfig]) -> Option<String> {
    credentials.iter().find_map(|c| match &c.kind {
        CredentialKind::AwsWebIdentity(a) if a.container_endpoint => Some(c.name.clone()),
        _ => None,
    })
}

/// `(name, scope, client_id)` of each `entra` credential, for the
/// managed-identity endpoint (on whenever there is one).
pub fn entra_credentials(credentials: &[CredentialConfig]) -> Vec<(String, String, String)> {
    credentials
        .iter()
        .filter_map(|c| match &c.kind {
            CredentialKind::Entra(e) => {
                Some((c.name.clone(), e.scope.clone(), e.client_id.clone()))
            }
            _ => None,
        })
        .collect()
}

/// `(name, config)` of each `gcp-workload-identity` credential, for the
/// GCE metadata server (on whenever there is one; the first is `default`).
pub fn gcp_credentials(credentials: &[CredentialConfig]) -> Vec<(String, GcpWorkloadIdentity)> {
    credentials
        .iter()
        .filter_map(|c| match &c.kind {
            CredentialKind::GcpWorkloadIdentity(g) => Some((c.name.clone(), g.clone())),
            _ => None,
        })
        .collect()
}

/// The variables in `env` that would take precedence over lanyard's GCE
/// metadata server ([`credential::google::OVERRIDING_VARIABLES`]), when the
/// config has a `gcp-workload-identity` credential; else none.
pub fn gcp_overriding_variables(
    credentials: &[CredentialConfig],
    env: &dyn Env,
) -> Vec<&'static str> {
    if gcp_credentials(credentials).is_empty() {
        return Vec::new();
    }
    credential::google::OVERRIDING_VARIABLES
        .iter()
        .copied()
        .filter(|v| env.var(v).is_some())
        .collect()
}

/// An `aws-web-identity` credential without its own `audience` asks for
/// `[identity] audience`, else `sts.amazonaws.com`.
fn aws_audience(credentials: &mut [CredentialConfig], identity: &IdentityConfig) {
    for c in credentials {
        if let CredentialKind::AwsWebIdentity(a) = &mut c.kind {
            if a.audience.is_empty() {
                a.audience = identity
                    .audience
                    .clone()
                    .unwrap_or_else(|| credential::aws::DEFAULT_AUDIENCE.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests;
