//! Identity: where the job's OIDC token comes from. First stage of the flow;
//! it knows the CI platforms' documented variables and nothing about token
//! services. A source hands out an [`IdentityToken`] on demand: GitHub and
//! Buildkite mint a fresh one (with our audience), a file is re-read (it
//! rotates), and the variable-based platforms give the one token they have.

pub mod claims;
mod fetch;
pub mod login;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::config::IdentityConfig;
pub use crate::config::Platform;
use crate::env::Env;
use crate::http::{HttpClient, HttpError};
use crate::secret::{IdentityJwt, Secret};
pub use claims::{ClaimsError, JobInfo, UnverifiedClaims};
use fetch::{buildkite, github, read_file};
pub use fetch::{BuildkiteProblem, FileProblem, InvalidToken};

/// GitHub's documented request variables.
pub const GITHUB_REQUEST_VARS: [&str; 2] = [
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
];
/// The variable our GitLab component declares in `id_tokens`.
pub const DEFAULT_GITLAB_VARIABLE: &str = "LANYARD_ID_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no CI platform detected (none of GITHUB_ACTIONS, GITLAB_CI, BITBUCKET_BUILD_NUMBER, CIRCLECI, BUILDKITE is set); set [identity] source explicitly, e.g. source = \"file\" or \"env\"")]
    NotDetected,
    #[error("{platform}: {variable} is not set; {hint}")]
    Missing {
        platform: &'static str,
        variable: String,
        hint: &'static str,
    },
    #[error("GitHub's token endpoint refused the request (HTTP {status}): {body}; the job needs `permissions: id-token: write`")]
    GithubRefused { status: u16, body: String },
    #[error("GitHub's token endpoint answered HTTP {status} without a token in `value`")]
    GithubBadAnswer { status: u16 },
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("`{command} oidc request-token` failed: {reason}")]
    Buildkite {
        command: String,
        #[source]
        reason: BuildkiteProblem,
    },
    #[error("cannot read token file {}: {reason}", path.display())]
    File {
        path: PathBuf,
        #[source]
        reason: FileProblem,
    },
    #[error("the identity token from {origin} is {problem}")]
    Invalid {
        origin: String,
        #[source]
        problem: InvalidToken,
    },
    #[error("the identity token from {origin} expired at {exp} ({ago}s ago){hint}")]
    Expired {
        origin: String,
        exp: String,
        ago: u64,
        hint: &'static str,
    },
    #[error("developer login: {0}")]
    Login(#[from] login::LoginError),
    #[error("source = \"login\" needs a [login] table (issuer, client_id)")]
    LoginNotConfigured,
}

/// A job identity token and its (unverified) claims.
#[derive(Debug, Clone)]
pub struct IdentityToken {
    pub jwt: IdentityJwt,
    pub claims: UnverifiedClaims,
}

#[derive(Debug)]
enum Kind {
    Github {
        url: Url,
        bearer: Secret,
    },
    /// A token handed over in a variable, fixed for the job.
    Fixed {
        variable: String,
        token: IdentityJwt,
    },
    Buildkite {
        agent: String,
    },
    File {
        path: PathBuf,
    },
    Login(Box<login::LoginSource>),
}

/// A configured, detected identity source.
#[derive(Debug)]
pub struct IdentitySource {
    pub platform: Platform,
    /// How the platform was chosen, e.g. `GITHUB_ACTIONS=true`.
    pub reason: String,
    /// Audience asked for where the platform mints on demand.
    pub audience: Option<String>,
    kind: Kind,
    /// Variables this source consumed; `run` removes them from the child.
    consumed: Vec<String>,
}

impl IdentitySource {
    /// Pick and set up the source from config and the environment.
    pub fn from_config(cfg: &IdentityConfig, env: &dyn Env) -> Result<Self, IdentityError> {
        let (platform, reason) = match cfg.source {
            None => detect(env, cfg)?,
            Some(p) => (p, format!("source = {:?}", p.name())),
        };
        let fixed = |platform: &'static str,
                     var: &str,
                     hint: &'static str|
         -> Result<(Kind, Vec<String>), IdentityError> {
            let token = env.non_empty(var).ok_or_else(|| IdentityError::Missing {
                platform,
                variable: var.to_owned(),
                hint,
            })?;
            Ok((
                Kind::Fixed {
                    variable: var.to_owned(),
                    token: IdentityJwt::new(token),
                },
                vec![var.to_owned()],
            ))
        };
        let (kind, consumed) = match platform {
            Platform::Github => {
                let missing = |v: &str| IdentityError::Missing {
                    platform: "github",
                    variable: v.to_owned(),
                    hint: "add `permissions: id-token: write` to the workflow or job",
                };
                let url = env
                    .non_empty(GITHUB_REQUEST_VARS[0])
                    .ok_or_else(|| missing(GITHUB_REQUEST_VARS[0]))?;
                let bearer = env
                    .non_empty(GITHUB_REQUEST_VARS[1])
                    .ok_or_else(|| missing(GITHUB_REQUEST_VARS[1]))?;
                let url = Url::parse(&url).map_err(|e| IdentityError::Invalid {
                    origin: GITHUB_REQUEST_VARS[0].into(),
                    problem: e.into(),
                })?;
                let consumed = if cfg.scrub_request_env {
                    GITHUB_REQUEST_VARS.iter().map(|s| s.to_string()).collect()
                } else {
                    Vec::new()
                };
                (
                    Kind::Github {
                        url,
                        bearer: Secret::new(bearer),
                    },
                    consumed,
                )
            }
            Platform::Gitlab => {
                let var = cfg.variable.as_deref().unwrap_or(DEFAULT_GITLAB_VARIABLE);
                fixed("gitlab", var, "declare it under `id_tokens:` in the job (with `aud:`), or set [identity] variable")?
            }
            Platform::Bitbucket => fixed(
                "bitbucket",
                "BITBUCKET_STEP_OIDC_TOKEN",
                "add `oidc: true` to the step",
            )?,
            Platform::Circleci => fixed(
                "circleci",
                "CIRCLE_OIDC_TOKEN_V2",
                "OIDC tokens need a CircleCI context or project with OIDC enabled",
            )?,
            Platform::Env => {
                let var = cfg.variable.as_deref().unwrap_or("LANYARD_ID_TOKEN");
                fixed("env", var, "set it to the job's OIDC token")?
            }
            Platform::Buildkite => (
                Kind::Buildkite {
                    agent: cfg.buildkite_agent.clone(),
                },
                Vec::new(),
            ),
            Platform::File => {
                let path = cfg.path.clone().ok_or_else(|| IdentityError::File {
                    path: PathBuf::new(),
                    reason: FileProblem::NotConfigured,
                })?;
                (Kind::File { path }, Vec::new())
            }
            Platform::Login => {
                let lc = cfg
                    .login
                    .as_ref()
                    .ok_or(IdentityError::LoginNotConfigured)?;
                (
                    Kind::Login(Box::new(login::LoginSource::open(lc, env)?)),
                    Vec::new(),
                )
            }
        };
        Ok(IdentitySource {
            platform,
            reason,
            audience: cfg.audience.clone(),
            kind,
            consumed,
        })
    }

    /// True when a fresh token can be had later (minted or re-read).
    pub fn refreshes(&self) -> bool {
        matches!(
            self.kind,
            Kind::Github { .. } | Kind::Buildkite { .. } | Kind::File { .. } | Kind::Login(_)
        )
    }

    /// Variables to remove from a child's environment.
    pub fn consumed_variables(&self) -> &[String] {
        &self.consumed
    }

    /// Where tokens come from, for messages (never the token).
    pub fn origin(&self) -> String {
        match &self.kind {
            Kind::Github { url, .. } => {
                format!("GitHub's token endpoint ({})", crate::http::endpoint(url))
            }
            Kind::Fixed { variable, .. } => format!("${variable}"),
            Kind::Buildkite { agent } => format!("`{agent} oidc request-token`"),
            Kind::File { path } => path.display().to_string(),
            Kind::Login(l) => format!(
                "the developer login at {} (client {}, refresh token in {})",
                l.cfg.issuer.as_str().trim_end_matches('/'),
                l.cfg.client_id,
                l.file.path.display()
            ),
        }
    }

    /// The login source, when this is a developer login.
    pub fn login(&self) -> Option<&login::LoginSource> {
        match &self.kind {
            Kind::Login(l) => Some(l),
            _ => None,
        }
    }

    /// A token for `audience` (or the configured one). Fixed tokens ignore
    /// the audience: the platform chose it when it minted them.
    pub async fn token(
        &self,
        http: &HttpClient,
        audience: Option<&str>,
    ) -> Result<IdentityToken, IdentityError> {
        let audience = audience.or(self.audience.as_deref());
        let jwt = match &self.kind {
            Kind::Fixed { token, .. } => token.clone(),
            Kind::Github { url, bearer } => github(http, url, bearer, audience).await?,
            Kind::Buildkite { agent } => buildkite(agent, audience).await?,
            Kind::File { path } => read_file(path).await?,
            // Verified here (signature, iss, aud, exp, nonce) and refreshed
            // near expiry; the exchange verifies it again.
            Kind::Login(l) => l.token(http).await?.id_token,
        };
        self.check(jwt)
    }

    fn check(&self, jwt: IdentityJwt) -> Result<IdentityToken, IdentityError> {
        let claims =
            UnverifiedClaims::decode(jwt.expose()).map_err(|e| IdentityError::Invalid {
                origin: self.origin(),
                problem: e.into(),
            })?;
        if let Some(exp) = claims.exp() {
            if claims.is_expired() {
                let ago = std::time::SystemTime::now()
                    .duration_since(exp)
                    .unwrap_or_default()
                    .as_secs();
                return Err(IdentityError::Expired {
                    origin: self.origin(),
                    exp: format_time(exp),
                    ago,
                    hint: if self.refreshes() {
                        ""
                    } else {
                        "; this platform's token lives for the job and cannot be re-minted"
                    },
                });
            }
        }
        Ok(IdentityToken { jwt, claims })
    }
}

/// Auto-detection from each platform's documented variables.
fn detect(env: &dyn Env, cfg: &IdentityConfig) -> Result<(Platform, String), IdentityError> {
    let is_true = |k: &str| env.var(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if is_true("GITHUB_ACTIONS") {
        return Ok((Platform::Github, "GITHUB_ACTIONS=true".into()));
    }
    if is_true("GITLAB_CI") {
        return Ok((Platform::Gitlab, "GITLAB_CI=true".into()));
    }
    if env.non_empty("BITBUCKET_BUILD_NUMBER").is_some() {
        return Ok((Platform::Bitbucket, "BITBUCKET_BUILD_NUMBER is set".into()));
    }
    if is_true("CIRCLECI") {
        return Ok((Platform::Circleci, "CIRCLECI=true".into()));
    }
    if is_true("BUILDKITE") {
        return Ok((Platform::Buildkite, "BUILDKITE=true".into()));
    }
    if cfg.path.is_some() {
        return Ok((Platform::File, "[identity] path is set".into()));
    }
    if let Some(v) = &cfg.variable {
        if env.non_empty(v).is_some() {
            return Ok((Platform::Env, format!("[identity] variable {v} is set")));
        }
    }
    if cfg.login.is_some() {
        return Ok((
            Platform::Login,
            "no CI platform detected: none of GITHUB_ACTIONS, GITLAB_CI, BITBUCKET_BUILD_NUMBER, CIRCLECI, BUILDKITE is set, and [login] is configured".into(),
        ));
    }
    Err(IdentityError::NotDetected)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// RFC 3339 UTC, seconds precision (`2023-11-14T22:13:20Z`). Times outside
/// what RFC 3339 can write (before 1970 here, after 9999) are clamped to the
/// nearest end: `exp` comes from an unverified token and must not panic.
pub fn format_time(t: std::time::SystemTime) -> String {
    const LAST: Duration = Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + since).to_string()
}
