//! The corporate proxy lanyard's own connections go through: read once from
//! the environment lanyard starts in (`https_proxy`, `HTTPS_PROXY`,
//! `http_proxy`, `HTTP_PROXY`, `all_proxy`, `ALL_PROXY`, `no_proxy`,
//! `NO_PROXY`), in curl's order, and used by every upstream dial through
//! [`connect::Connector`]: the proxied requests, untouched tunnels, token
//! exchanges, secret reads and discovery.
//!
//! Precedence (curl's): for an `https` destination `https_proxy`, then
//! `HTTPS_PROXY`, then `all_proxy`, then `ALL_PROXY`; for `http`,
//! `http_proxy`, then `HTTP_PROXY` (curl ignores the upper-case one because
//! of httpoxy, a CGI problem; lanyard is no CGI program and CI runners set
//! it), then the `all_proxy` pair; `no_proxy` before `NO_PROXY`. An empty
//! value counts as unset. `NO_PROXY` matching is hyper-util's (curl's
//! rules: a comma list, a name matches itself and its subdomains with or
//! without a leading dot, `*` matches all, IP literals and CIDR ranges;
//! ports in entries are not supported, as in curl). Loopback destinations
//! are always dialled directly: a proxy cannot reach the job's loopback.
//!
//! Never a loop: a value that is a lanyard's own listener (equal to
//! `LANYARD_PROXY`, or user `lanyard` at a loopback address: what `run` and
//! `start` export) is skipped, so a nested `lanyard run`, or a `start` after
//! an earlier job's `stop` left the variables behind, does not proxy
//! through a lanyard.

pub mod bypass;
pub mod connect;
#[cfg(test)]
mod tests;

use http::header::HeaderValue;
use hyper_util::client::proxy::matcher::Matcher;

use crate::env::Env;

/// Curl's order, per destination scheme.
const HTTPS_VARS: &[&str] = &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
const HTTP_VARS: &[&str] = &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];
const NO_VARS: &[&str] = &["no_proxy", "NO_PROXY"];

#[derive(Debug, thiserror::Error)]
pub enum ProxyEnvError {
    #[error("{var} = {shown}: {why}")]
    Invalid {
        var: &'static str,
        /// The value without its user and password.
        shown: String,
        why: &'static str,
    },
}

/// One corporate proxy: where it is, which variable named it, and its
/// `Proxy-Authorization` (Basic, from the URL's `user:pass@`; never shown).
#[derive(Clone)]
pub struct Proxy {
    pub var: &'static str,
    host: String,
    port: u16,
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (from {})", self.shown(), self.var)
    }
}

impl Proxy {
    /// `http://host:port`: what logs and errors may show.
    pub fn shown(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    pub fn auth(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    fn uri(&self) -> http::Uri {
        // Host and port were parsed from a URL; this cannot fail.
        format!("http://{}:{}/", self.host, self.port)
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1:9/"))
    }
}

/// The corporate proxy settings lanyard dials with; `none()` dials directly.
#[derive(Debug, Default)]
pub struct UpstreamProxy {
    http: Option<Proxy>,
    https: Option<Proxy>,
    /// The job's `NO_PROXY` as given (kept in the child's `NO_PROXY`).
    no_proxy: Option<String>,
    matcher: Option<Matcher>,
    /// Variables that named a lanyard's own listener, skipped.
    pub skipped_own: Vec<&'static str>,
    /// `all_proxy`/`ALL_PROXY` when they carry a user or password: removed
    /// from `run`'s child, which gets lanyard's URL in the other four.
    pub scrub: Vec<&'static str>,
}

impl UpstreamProxy {
    pub fn none() -> UpstreamProxy {
        UpstreamProxy::default()
    }

    pub fn from_env(env: &dyn Env) -> Result<UpstreamProxy, ProxyEnvError> {
        let own = env.non_empty("LANYARD_PROXY");
        let mut out = UpstreamProxy::none();
        let mut pick = |vars: &[&'static str]| -> Result<Option<Proxy>, ProxyEnvError> {
            for var in vars {
                let Some(v) = env.non_empty(var) else {
                    continue;
                };
                if own.as_deref() == Some(v.as_str()) || is_lanyard_listener(&v) {
                    if !out.skipped_own.contains(var) {
                        out.skipped_own.push(var);
                    }
                    continue;
                }
                return parse(var, &v).map(Some);
            }
            Ok(None)
        };
        let https = pick(HTTPS_VARS)?;
        let http = pick(HTTP_VARS)?;
        out.https = https;
        out.http = http;
        out.no_proxy = NO_VARS.iter().find_map(|v| env.non_empty(v));
        for var in ["all_proxy", "ALL_PROXY"] {
            if env
                .non_empty(var)
                .and_then(|v| url::Url::parse(&with_scheme(&v)).ok())
                .is_some_and(|u| !u.username().is_empty() || u.password().is_some())
            {
                out.scrub.push(var);
            }
        }
        if out.http.is_some() || out.https.is_some() {
            // Only NO_PROXY is asked of the matcher: which proxy is ours.
            out.matcher = Some(
                Matcher::builder()
                    .all("http://proxy.invalid:1")
                    .no(out.no_proxy.clone().unwrap_or_default())
                    .build(),
            );
        }
        Ok(out)
    }

    /// The proxy for this destination, or `None` to dial it directly
    /// (no proxy for its scheme, a loopback host, or `NO_PROXY` lists it).
    pub fn via(&self, https: bool, host: &str, port: u16) -> Option<&Proxy> {
        let proxy = if https { &self.https } else { &self.http }.as_ref()?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if is_loopback_host(bare) {
            return None;
        }
        let uri: http::Uri = format!(
            "{}://{}:{port}/",
            if https { "https" } else { "http" },
            if bare.contains(':') {
                format!("[{bare}]")
            } else {
                bare.to_owned()
            }
        )
        .parse()
        .ok()?;
        self.matcher.as_ref()?.intercept(&uri)?;
        Some(proxy)
    }

    /// The child's `NO_PROXY`: the job's own entries, then `own` (lanyard's
    /// listener), without duplicates.
    pub fn child_no_proxy(&self, own: &str) -> String {
        let mut entries: Vec<&str> = self
            .no_proxy
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if !entries.contains(&own) {
            entries.push(own);
        }
        entries.join(",")
    }

    /// Say at start which proxy is used, and which variables were skipped.
    pub fn log(&self) {
        if self.https.is_some() || self.http.is_some() {
            tracing::info!("upstream connections: corporate proxy {}", self.describe());
        }
        if !self.skipped_own.is_empty() {
            tracing::info!(
                "{} point at a lanyard listener (its own export, not a corporate proxy): not used for upstream connections",
                self.skipped_own.join(", ")
            );
        }
    }

    /// One line for logs and `doctor`: which proxy, from which variable.
    pub fn describe(&self) -> String {
        match (&self.https, &self.http) {
            (None, None) => "none (direct connections)".to_owned(),
            (s, h) => {
                let one = |p: &Option<Proxy>| {
                    p.as_ref().map_or("direct".to_owned(), |p| format!("{p:?}"))
                };
                let mut d = format!("https: {}; http: {}", one(s), one(h));
                if let Some(n) = &self.no_proxy {
                    d.push_str(&format!("; NO_PROXY: {n}"));
                }
                d
            }
        }
    }
}

fn with_scheme(v: &str) -> String {
    if v.contains("://") {
        v.to_owned()
    } else {
        format!("http://{v}")
    }
}

/// What `run` and `start` export: `http://lanyard:<secret>@127.0.0.1:<port>`.
fn is_lanyard_listener(v: &str) -> bool {
    url::Url::parse(&with_scheme(v))
        .is_ok_and(|u| u.username() == "lanyard" && u.host_str().is_some_and(is_loopback_host))
}

fn is_loopback_host(h: &str) -> bool {
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[http://][user[:pass]@]host[:port][/]`; a missing port is 1080, as in
/// curl. https and SOCKS proxies are refused by name.
fn parse(var: &'static str, v: &str) -> Result<Proxy, ProxyEnvError> {
    let url = url::Url::parse(&with_scheme(v));
    let shown = match &url {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(not a URL; value not shown)".to_owned(),
    };
    let bad = |why| ProxyEnvError::Invalid {
        var,
        shown: shown.clone(),
        why,
    };
    let url =
        url.map_err(|_| bad("not a proxy URL (expected http://[user:password@]host:port)"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(bad(
                "an https:// proxy (TLS to the proxy) is not supported; use http://",
            ))
        }
        s if s.starts_with("socks") => {
            return Err(bad("SOCKS proxies are not supported; use an HTTP proxy"))
        }
        _ => return Err(bad("unsupported proxy scheme; use http://")),
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    if url.path() != "/" || url.query().is_some() {
        return Err(bad("a proxy URL has no path or query"));
    }
    let auth = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        // hyper-util decodes and encodes `user:pass@` as curl does
        // (percent-decoded, Basic); its value is marked sensitive.
        let m = Matcher::builder().all(url.as_str()).build();
        let probe = http::Uri::from_static("http://lanyard.invalid/");
        m.intercept(&probe).and_then(|i| i.basic_auth().cloned())
    };
    Ok(Proxy {
        var,
        host: host.to_owned(),
        // `url` drops a port equal to the scheme's default (80); `http::Uri`
        // keeps what was written.
        port: with_scheme(v)
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.port_u16())
            .unwrap_or(1080),
        auth,
    })
}
