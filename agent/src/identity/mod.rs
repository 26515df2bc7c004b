//! Identity: where the job's OIDC token comes from. First stage of the flow;
//! it knows the CI platforms' documented variables and nothing about token
//! services. A source hands out an [`IdentityToken`] on demand: GitHub and
//! Buildkite mint a fresh one (with our audience), a file is re-read (it
//! rotates), and the variable-based platforms give the one token they have.

pub mod claims;
pub mod login;

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::config::IdentityConfig;
pub use crate::config::Platform;
use crate::env::Env;
use crate::http::{Header, HttpClient, HttpError};
use crate::secret::{redact, Secret};
pub use claims::{ClaimsError, JobInfo, UnverifiedClaims};

/// Why: `buildkite-agent` talks to the Buildkite API; it must not hang a job.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Token files and variables are small; anything larger is not a JWT.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
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
    Buildkite { command: String, reason: String },
    #[error("cannot read token file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("the identity token from {origin} is {problem}")]
    Invalid { origin: String, problem: String },
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
    pub jwt: Secret,
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
        token: Secret,
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
                    token: Secret::new(token),
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
                    problem: format!("not a URL ({e})"),
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
                    reason: "no [identity] path configured".into(),
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

    fn check(&self, jwt: Secret) -> Result<IdentityToken, IdentityError> {
        let claims =
            UnverifiedClaims::decode(jwt.expose()).map_err(|e| IdentityError::Invalid {
                origin: self.origin(),
                problem: e.to_string(),
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

async fn github(
    http: &HttpClient,
    base: &Url,
    bearer: &Secret,
    audience: Option<&str>,
) -> Result<Secret, IdentityError> {
    // The documented URL already carries `?api-version=...`; append.
    let mut url = base.clone();
    if let Some(a) = audience {
        url.query_pairs_mut().append_pair("audience", a);
    }
    let resp = http
        .get(
            &url,
            &[Header::Secret(
                http::header::AUTHORIZATION,
                zeroize::Zeroizing::new(format!("bearer {}", bearer.expose())),
            )],
        )
        .await?;
    if !resp.status.is_success() {
        let body = redact(&resp.text_lossy(), &[bearer]);
        return Err(IdentityError::GithubRefused {
            status: resp.status.as_u16(),
            body: truncate(&body, 300),
        });
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        value: Option<String>,
    }
    let a: Answer =
        serde_json::from_slice(&resp.body).map_err(|_| IdentityError::GithubBadAnswer {
            status: resp.status.as_u16(),
        })?;
    match a.value {
        Some(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(IdentityError::GithubBadAnswer {
            status: resp.status.as_u16(),
        }),
    }
}

async fn buildkite(agent: &str, audience: Option<&str>) -> Result<Secret, IdentityError> {
    let mut cmd = tokio::process::Command::new(agent);
    cmd.args(["oidc", "request-token"]);
    if let Some(a) = audience {
        cmd.args(["--audience", a]);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let fail = |reason: String| IdentityError::Buildkite {
        command: agent.to_owned(),
        reason,
    };
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .map_err(|_| fail(format!("no answer within {}s", COMMAND_TIMEOUT.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
    let stdout = zeroize::Zeroizing::new(out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "{}: {}",
            out.status,
            truncate(&redact(stderr.trim(), &[]), 300)
        )));
    }
    let text = std::str::from_utf8(&stdout).map_err(|_| fail("output is not UTF-8".into()))?;
    Ok(Secret::new(text.trim()))
}

async fn read_file(path: &PathBuf) -> Result<Secret, IdentityError> {
    let fail = |reason: String| IdentityError::File {
        path: path.clone(),
        reason,
    };
    let bytes = zeroize::Zeroizing::new(
        tokio::fs::read(path)
            .await
            .map_err(|e| fail(e.to_string()))?,
    );
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(fail(format!(
            "larger than {MAX_TOKEN_BYTES} bytes; not a token"
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("not UTF-8".into()))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(fail("empty".into()));
    }
    Ok(Secret::new(t))
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

/// RFC 3339 UTC, seconds precision, without a date crate.
pub fn format_time(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    fn cfg() -> IdentityConfig {
        IdentityConfig {
            source: None,
            audience: Some("https://sts.test".into()),
            variable: None,
            path: None,
            buildkite_agent: "buildkite-agent".into(),
            scrub_request_env: true,
            login: None,
        }
    }

    #[test]
    fn auto_detects_each_platform_from_its_documented_variables() {
        let cases: [(MapEnv, Platform); 5] = [
            (
                MapEnv::new([
                    ("GITHUB_ACTIONS", "true"),
                    (
                        "ACTIONS_ID_TOKEN_REQUEST_URL",
                        "http://127.0.0.1:1/x?api-version=2.0",
                    ),
                    ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "b"),
                ]),
                Platform::Github,
            ),
            (
                MapEnv::new([("GITLAB_CI", "true"), ("LANYARD_ID_TOKEN", "t")]),
                Platform::Gitlab,
            ),
            (
                MapEnv::new([
                    ("BITBUCKET_BUILD_NUMBER", "7"),
                    ("BITBUCKET_STEP_OIDC_TOKEN", "t"),
                ]),
                Platform::Bitbucket,
            ),
            (
                MapEnv::new([("CIRCLECI", "true"), ("CIRCLE_OIDC_TOKEN_V2", "t")]),
                Platform::Circleci,
            ),
            (MapEnv::new([("BUILDKITE", "true")]), Platform::Buildkite),
        ];
        for (env, want) in cases {
            let s = IdentitySource::from_config(&cfg(), &env).expect("detect");
            assert_eq!(s.platform, want);
        }
        assert!(matches!(
            IdentitySource::from_config(&cfg(), &MapEnv::default()),
            Err(IdentityError::NotDetected)
        ));
    }

    #[test]
    fn auto_picks_the_developer_login_only_when_no_ci_platform_is_detected() {
        let mut c = cfg();
        c.login = Some(crate::config::LoginConfig {
            issuer: Url::parse("https://login.acme.test").expect("url"),
            client_id: "lanyard-cli".into(),
            scopes: Vec::new(),
            flow: crate::config::LoginFlow::Device,
        });
        let home = tempfile::tempdir().expect("tmp");
        let laptop = MapEnv::new([("HOME", home.path().to_str().expect("utf8"))]);
        // Chosen, and without a stored login it says what to do.
        let e = IdentitySource::from_config(&c, &laptop)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not logged in to https://login.acme.test") && e.contains("lanyard login"),
            "{e}"
        );
        // In CI the platform wins: a [login] table never replaces the job's identity.
        let ci = MapEnv::new([("BUILDKITE", "true")]);
        assert_eq!(
            IdentitySource::from_config(&c, &ci).expect("ci").platform,
            Platform::Buildkite
        );
        assert!(!Platform::Buildkite.is_developer() && Platform::Login.is_developer());
    }

    #[test]
    fn github_without_id_token_permission_says_how_to_fix_it() {
        let env = MapEnv::new([("GITHUB_ACTIONS", "true")]);
        let e = IdentitySource::from_config(&cfg(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ACTIONS_ID_TOKEN_REQUEST_URL is not set") && e.contains("id-token: write"),
            "{e}"
        );
    }

    #[test]
    fn gitlab_names_the_id_tokens_variable() {
        let env = MapEnv::new([("GITLAB_CI", "true")]);
        let e = IdentitySource::from_config(&cfg(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LANYARD_ID_TOKEN is not set") && e.contains("id_tokens"),
            "{e}"
        );
    }

    #[test]
    fn consumed_variables_cover_the_identity_inputs() {
        let env = MapEnv::new([
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", "http://127.0.0.1:1/"),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "b"),
        ]);
        let s = IdentitySource::from_config(&cfg(), &env).expect("github");
        assert_eq!(s.consumed_variables(), GITHUB_REQUEST_VARS);
        let mut c = cfg();
        c.scrub_request_env = false;
        assert!(IdentitySource::from_config(&c, &env)
            .expect("github")
            .consumed_variables()
            .is_empty());
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(
            format_time(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }
}
