//! `lanyard doctor`: explains what lanyard would do with this config on this
//! machine: the platform, the identity claims (unverified), each exchange's
//! result or the service's own refusal with a likely cause, and which route
//! a URL would match. Every credential it obtains is revoked before it exits.
//! It never prints a token.

use std::fmt::Write as _;
use std::time::Duration;

use crate::command::{CommandError, ExitCode};
use crate::config::Config;
use crate::env::Env;
use crate::exchange::{ExchangeError, Exchanger, Issued, Revoked};
use crate::http::HttpClient;
use crate::identity::{format_time, IdentitySource, IdentityToken, UnverifiedClaims};
use crate::route::{Route, SessionIdentity};
use crate::secret::Credential;

mod claims;
mod echo;
mod explain;
mod hints;
mod probe;
pub(crate) mod tyk;

use explain::{explain_url, methods};
pub use hints::hints;

/// Clients that go around the proxy without a word: they get no
/// credential, and the teardown's "configured but never used" is the only
/// sign. Kept in step with README "Clients that ignore the proxy".
/// Sources: Node's NODE_USE_ENV_PROXY (v24.0 fetch, v24.5 http/https,
/// both v22.21), Go's DefaultTransport, Java's net properties, aiohttp's
/// trust_env.
const BYPASS: &str = "proxy variables: lanyard sees only clients that honour HTTPS_PROXY. These ignore it unless told:
  - Node's built-in fetch and http/https: only with NODE_USE_ENV_PROXY=1 (lanyard exports it; Node 24.0+/22.21+ for fetch, 24.5+/22.21+ for http/https; older Node ignores it)
  - Go: a client with its own http.Transport and no Proxy: http.ProxyFromEnvironment
  - Java (HttpURLConnection, java.net.http.HttpClient): never reads it; it needs -Dhttps.proxyHost/-Dhttps.proxyPort and the proxy's credentials (java.net.useSystemProxies reads desktop settings, not HTTPS_PROXY)
  - Python aiohttp: ClientSession(trust_env=True); requests, httpx and urllib honour it
";

pub struct Options {
    pub exchange: bool,
    pub url: Option<String>,
    pub method: String,
    /// With `url`: send one GET through the route's credential and explain
    /// the answer.
    pub probe: bool,
    /// Show personal claims ([`claims::PERSONAL`]) instead of masking them.
    pub show_personal: bool,
    /// Show every claim, not only those that decide trust ([`claims::TRUST`]).
    pub all_claims: bool,
}

/// Runs the checks, writing the report to `out` (a failed check is part of
/// the report, and exit code 1).
pub async fn run(
    cfg: &Config,
    env: &dyn Env,
    opts: &Options,
    out: &mut String,
) -> Result<ExitCode, CommandError> {
    let _ = writeln!(
        out,
        "config: {} is valid ({} credential{}, {} route{})",
        cfg.path.display(),
        cfg.credentials.len(),
        plural(cfg.credentials.len()),
        cfg.routes.len(),
        plural(cfg.routes.len())
    );
    out.push_str(BYPASS);
    for w in crate::outbound::bypass::no_proxy_warnings(env, &cfg.routes) {
        let _ = writeln!(out, "{w}");
    }
    let mut code = ExitCode::Ok;

    if !opts.exchange {
        // Nothing is contacted; a login's stored file still says who.
        let who = match IdentitySource::from_config(&cfg.identity, env) {
            Ok(s) => Some(offline_identity(&s)),
            Err(e) => {
                let _ = writeln!(out, "identity: not determined ({e})");
                None
            }
        };
        if let Some(u) = &opts.url {
            explain_url(cfg, u, &opts.method, who.as_ref(), out);
        }
        let _ = writeln!(out, "exchange: skipped (--no-exchange)");
        return Ok(code);
    }

    let proxy = match crate::outbound::UpstreamProxy::from_env(env) {
        Ok(p) => std::sync::Arc::new(p),
        Err(e) => {
            let _ = writeln!(out, "corporate proxy: FAILED: {e}");
            return Ok(ExitCode::Failed);
        }
    };
    let _ = writeln!(out, "upstream proxy: {}", proxy.describe());
    let http = match HttpClient::new(cfg.upstream.extra_ca.as_deref(), &proxy) {
        Ok(h) => h,
        Err(e) => {
            let _ = writeln!(out, "upstream TLS: FAILED: {e}");
            return Ok(ExitCode::Failed);
        }
    };
    let _ = writeln!(out, "\nidentity");
    let source = match IdentitySource::from_config(&cfg.identity, env) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "  FAILED: {e}");
            if let Some(u) = &opts.url {
                explain_url(cfg, u, &opts.method, None, out);
            }
            return Ok(ExitCode::Failed);
        }
    };
    if source.platform.is_developer() {
        let _ = writeln!(out, "  identity: developer login ({})", source.reason);
    } else {
        let _ = writeln!(
            out,
            "  platform: {} (because {})",
            source.platform.name(),
            source.reason
        );
        let _ = writeln!(out, "  identity kind: ci");
    }
    let _ = writeln!(
        out,
        "  token from: {}{}",
        source.origin(),
        if source.refreshes() {
            " (a fresh token is fetched on each exchange)"
        } else {
            " (fixed for the job)"
        }
    );
    if let Some(a) = &source.audience {
        if !source.platform.is_developer() {
            let _ = writeln!(out, "  audience requested: {a}");
        }
    }
    let token = match source.token(&http, None).await {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(out, "  FAILED: {e}");
            if let Some(u) = &opts.url {
                explain_url(cfg, u, &opts.method, Some(&offline_identity(&source)), out);
            }
            return Ok(ExitCode::Failed);
        }
    };
    let who = crate::app::session_identity(&source, &token.claims);
    if source.platform.is_developer() {
        let exp = token
            .claims
            .exp()
            .map(|e| {
                let rel = e
                    .duration_since(std::time::SystemTime::now())
                    .map(|d| format!("in {}", human(d)))
                    .unwrap_or_else(|_| "expired".into());
                format!("{} ({rel})", format_time(e))
            })
            .unwrap_or_else(|| "no exp".into());
        let _ = writeln!(
            out,
            "  who: {}, issuer {}",
            sanitize(&who.who),
            sanitize(&token.claims.text("iss").unwrap_or_default())
        );
        let _ = writeln!(
            out,
            "  ID token: verified by lanyard (signature by the IdP's JWKS, iss, aud = {}, exp, nonce); expires {exp}; refreshed with the stored refresh token near expiry",
            cfg.identity
                .login
                .as_ref()
                .map(|l| l.client_id.as_str())
                .unwrap_or("?")
        );
    }
    claims::print(&token.claims, source.platform.is_developer(), opts, out);
    if let (Some(want), false) = (&source.audience, source.refreshes()) {
        if !token.claims.audiences().iter().any(|a| a == want) {
            let _ = writeln!(out, "  warning: the token's aud is {:?}, not the configured audience {want:?}; this platform fixes the audience when it mints the token", token.claims.audiences());
        }
    }
    if let Some(u) = &opts.url {
        explain_url(cfg, u, &opts.method, Some(&who), out);
    }
    let (obtained, failed) = credentials(cfg, env, &http, &source, &token, out).await;
    if failed {
        code = ExitCode::Failed;
    }
    tyk::report(cfg, &obtained, out);
    routes(cfg, &who, out);
    if let (true, Some(u)) = (opts.probe, &opts.url) {
        if !probe::probe(cfg, &http, &who, u, &obtained, &opts.method, out).await {
            code = ExitCode::Failed;
        }
    }
    if teardown(&http, &obtained, &source, &token, out).await {
        code = ExitCode::Failed;
    }
    let _ = writeln!(
        out,
        "\nresult: {}",
        if code == ExitCode::Ok {
            "ok"
        } else {
            "FAILED (see above)"
        }
    );
    Ok(code)
}

/// Obtains each credential as the running sidecar would; the ones obtained,
/// and whether any failed.
async fn credentials(
    cfg: &Config,
    env: &dyn Env,
    http: &HttpClient,
    source: &IdentitySource,
    token: &IdentityToken,
    out: &mut String,
) -> (Vec<(Exchanger, Issued)>, bool) {
    let mut failed = false;
    let skipped = if source.platform.is_developer() {
        cfg.ci_only_credentials()
    } else {
        Vec::new()
    };

    let _ = writeln!(out, "\ncredentials");
    let mut obtained: Vec<(Exchanger, Issued)> = Vec::new();
    for c in &cfg.credentials {
        if skipped.contains(&c.name) {
            let _ = writeln!(
                out,
                "  {}: skipped: only routes for CI identities use it, and this session is a developer login",
                c.name
            );
            continue;
        }
        let ex = match Exchanger::prepare(c, &cfg.credentials, http, env).await {
            Ok(x) => x,
            Err(e) => {
                let _ = writeln!(out, "  {}: FAILED to set up: {e}", c.name);
                failed = true;
                continue;
            }
        };
        let _ = writeln!(out, "  {}: {}", c.name, ex.describe());
        // A fresh token per exchange where the platform mints one (as the
        // running sidecar does), else the job's one token.
        let id: Option<IdentityToken> =
            if ex.needs_identity() && (ex.identity_audience().is_some() || source.refreshes()) {
                match source.token(http, ex.identity_audience()).await {
                    Ok(t) => Some(t),
                    Err(e) => {
                        let _ = writeln!(out, "    FAILED: {e}");
                        failed = true;
                        continue;
                    }
                }
            } else {
                Some(token.clone())
            };
        let parent: Option<Credential> = ex.parent().and_then(|p| {
            obtained
                .iter()
                .find(|(x, _)| x.name == p)
                .map(|(_, i)| i.value.clone())
        });
        if ex.parent().is_some() && parent.is_none() {
            let _ = writeln!(
                out,
                "    FAILED: its vault credential {:?} was not obtained",
                ex.parent().unwrap_or_default()
            );
            failed = true;
            continue;
        }
        match ex.obtain(http, id.as_ref(), parent.as_ref()).await {
            Ok(issued) => {
                let life = match issued.lifetime {
                    Some(l) => format!("lifetime {}", human(l)),
                    None => "no expiry given (re-read periodically)".into(),
                };
                let _ = writeln!(
                    out,
                    "    ok: {life}{}, fingerprint {}",
                    if issued.renewable { ", renewable" } else { "" },
                    issued.value.fingerprint()
                );
                for l in aws_lines(cfg, &ex.name, &issued) {
                    let _ = writeln!(out, "    {l}");
                }
                for l in entra_lines(cfg, &ex.name, &issued) {
                    let _ = writeln!(out, "    {l}");
                }
                obtained.push((ex, issued));
            }
            Err(e) => {
                failed = true;
                let _ = writeln!(out, "    FAILED: {e}");
                let claims = id.as_ref().map(|t| &t.claims).unwrap_or(&token.claims);
                let sent = ex.sent_audience(source.audience.as_deref());
                let likely = ex
                    .hints(&e, &sent, claims)
                    .unwrap_or_else(|| hints(&e, &sent, claims, ex.revokes_with_identity()));
                for h in likely
                    .into_iter()
                    .map(|h| hints::for_platform(h, source.platform))
                {
                    let _ = writeln!(out, "    likely cause: {h}");
                }
            }
        }
    }

    (obtained, failed)
}

/// An aws-web-identity credential's role session: the assumed role,
/// session, region, expiry, the container endpoint, the routes using it.
fn aws_lines(cfg: &Config, name: &str, issued: &Issued) -> Vec<String> {
    let aws = cfg.credentials.iter().find_map(|c| match &c.kind {
        crate::config::CredentialKind::AwsWebIdentity(a) if c.name == name => Some(a),
        _ => None,
    });
    let Some(aws) = aws else {
        return Vec::new();
    };
    let routes = cfg
        .routes
        .iter()
        .filter(|r| r.credential == name)
        .map(|r| r.display_url())
        .collect();
    crate::exchange::aws::SessionReport::new(aws, &issued.about, Some(&issued.value), routes)
        .lines()
}

/// An entra credential's app, tenant, scope, the assertion sent, expiry,
/// the managed-identity resource, the routes using it.
fn entra_lines(cfg: &Config, name: &str, issued: &Issued) -> Vec<String> {
    let entra = cfg.credentials.iter().find_map(|c| match &c.kind {
        crate::config::CredentialKind::Entra(e) if c.name == name => Some(e),
        _ => None,
    });
    let Some(entra) = entra else {
        return Vec::new();
    };
    let routes = cfg
        .routes
        .iter()
        .filter(|r| r.credential == name)
        .map(|r| r.display_url())
        .collect();
    crate::exchange::azure::EntraReport::new(entra, &issued.about, routes).lines()
}

/// Each route, and whether it applies to this session.
fn routes(cfg: &Config, who: &SessionIdentity, out: &mut String) {
    if !cfg.routes.is_empty() {
        let _ = writeln!(out, "\nroutes");
        for r in &cfg.routes {
            let applies = if r.identities.allows(who.developer) {
                ""
            } else {
                " — does not apply to this session"
            };
            let _ = writeln!(
                out,
                "  {} → {} ({}; {}{}){applies}",
                r.display_url(),
                r.credential,
                methods(r),
                r.identities.describe(),
                r.env_name()
                    .map(|e| format!(", reverse base URL in {e}"))
                    .unwrap_or_default()
            );
            if r.aws.is_some() {
                let _ = writeln!(
                    out,
                    "    signs each request with SigV4 (AWS); the job gets placeholder AWS keys"
                );
            }
        }
        if cfg.routes.iter().any(|r| r.aws.is_some()) {
            let _ = writeln!(out, "  note: presigned URLs made in the job will not work: they are signed with lanyard's placeholder keys (presign outside the job, or call the API through lanyard)");
        }
    }
}

/// Revokes what was obtained, dependents first; whether a revocation failed.
async fn teardown(
    http: &HttpClient,
    obtained: &[(Exchanger, Issued)],
    source: &IdentitySource,
    token: &IdentityToken,
    out: &mut String,
) -> bool {
    let mut failed = false;
    if !obtained.is_empty() {
        let _ = writeln!(out, "\nteardown");
        // Dependents first (a KV value is read with its vault token).
        for (ex, issued) in obtained.iter().rev() {
            // A client-assertion client revokes with a token as fresh as the
            // one it got the credential with.
            let id = match (ex.revokes_with_identity(), source.refreshes()) {
                (true, true) => source.token(http, ex.identity_audience()).await.ok(),
                (true, false) => Some(token.clone()),
                (false, _) => None,
            };
            match ex.revoke(http, &issued.value, id.as_ref()).await {
                Ok(Revoked::Done(how)) => {
                    let _ = writeln!(out, "  {}: revoked ({how})", ex.name);
                }
                Ok(Revoked::NotRevocable(why)) => {
                    let _ = writeln!(out, "  {}: not revoked: {why}", ex.name);
                }
                Ok(Revoked::ExpiresAt { at, why }) => {
                    let _ = writeln!(
                        out,
                        "  {}: not revoked, expires on its own at {} ({why})",
                        ex.name,
                        format_time(at)
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  {}: revocation FAILED: {e}", ex.name);
                    failed = true;
                }
            }
        }
    }
    failed
}

/// Claims come from outside: no control characters reach the terminal.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Who the session would be, without contacting anything: the platform, or
/// the developer named in the stored login file.
fn offline_identity(source: &IdentitySource) -> SessionIdentity {
    let who = match source.login().map(|l| l.file.read()) {
        Some(Ok(s)) => match s.email {
            Some(e) => format!("{e} (sub {})", s.subject),
            None => s.subject,
        },
        Some(Err(_)) => "(unknown)".into(),
        None => source.platform.name().to_owned(),
    };
    SessionIdentity {
        developer: source.platform.is_developer(),
        who: sanitize(&who),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `1h 2m`, `5m 3s`, `30s`, `750ms`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests;
