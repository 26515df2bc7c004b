//! `[[route]]` entries: which requests get which credential, and how. The
//! matcher itself lives in the proxy; this module turns what the user wrote
//! into one canonical form (lowercase host, explicit port, normalised path
//! prefix) and refuses anything ambiguous.

use http::{HeaderName, Method};
use url::Url;

use super::raw::{Diag, Table};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`: one or more labels before the suffix, never the
    /// suffix itself. Holds `example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => {
                host.len() > s.len() + 1
                    && host.ends_with(s.as_str())
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
                    // Why: the label before the suffix must be non-empty
                    // (`.example.com` is not a host).
                    && !host.starts_with('.')
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

/// How the credential becomes a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// `Bearer {token}`: text before and after the token.
    Format { before: String, after: String },
    /// HTTP Basic with a fixed user name and the token as password (git).
    Basic { username: String },
}

impl Template {
    /// The header value for a token. The caller marks it sensitive.
    pub fn render(&self, token: &str) -> String {
        match self {
            Template::Format { before, after } => format!("{before}{token}{after}"),
            Template::Basic { username } => {
                use base64::Engine;
                let raw = zeroize::Zeroizing::new(format!("{username}:{token}"));
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// For the reverse listener: `LANYARD_URL_<NAME>`.
    pub name: Option<String>,
    pub scheme: String,
    pub host: HostPattern,
    pub port: u16,
    /// Starts and ends with `/`, no dot segments, no encoded slashes.
    pub path_prefix: String,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    pub credential: String,
    pub header: HeaderName,
    pub template: Template,
    pub websocket: bool,
    /// Which identity kinds may use this route (default: both).
    pub identities: IdentityKinds,
}

/// The kinds of identity a route serves: CI automation tokens and
/// developer logins (`lanyard login`). Keeping them apart lets a config
/// say that a developer never gets a CI-only route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityKinds {
    pub ci: bool,
    pub developer: bool,
}

impl Default for IdentityKinds {
    /// Both, so configs written before the key existed keep working.
    fn default() -> Self {
        IdentityKinds {
            ci: true,
            developer: true,
        }
    }
}

impl IdentityKinds {
    pub const NAMES: &'static [&'static str] = &["ci", "developer"];

    pub fn allows_developer(&self) -> bool {
        self.developer
    }

    pub fn allows(&self, developer: bool) -> bool {
        if developer {
            self.developer
        } else {
            self.ci
        }
    }

    /// `CI identities only`, `developer identities only`, or `CI and developer identities`.
    pub fn describe(&self) -> &'static str {
        match (self.ci, self.developer) {
            (true, false) => "CI identities only",
            (false, true) => "developer identities only",
            _ => "CI and developer identities",
        }
    }
}

impl RouteConfig {
    /// The URL as the user could have written it, for messages.
    pub fn display_url(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        if self.port == default {
            format!("{}://{}{}", self.scheme, self.host, self.path_prefix)
        } else {
            format!(
                "{}://{}:{}{}",
                self.scheme, self.host, self.port, self.path_prefix
            )
        }
    }

    /// `LANYARD_URL_API` for `name = "api"`.
    pub fn env_name(&self) -> Option<String> {
        self.name.as_ref().map(|n| {
            let up: String = n
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("LANYARD_URL_{up}")
        })
    }
}

const ALLOWED_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Headers a route may not inject into: framing, routing and proxy control.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "keep-alive",
    "expect",
    "cookie",
];

const ROUTE_KEYS: &[&str] = &[
    "url",
    "credential",
    "methods",
    "read_only",
    "header",
    "format",
    "username",
    "name",
    "websocket",
    "identities",
];

pub(super) fn route(d: &mut Diag<'_>, mut t: Table<'_>, creds: &[String]) -> Option<RouteConfig> {
    let url_v = t.string(d, "url");
    let cred = t.string(d, "credential");
    let methods = t.strings(d, "methods");
    let read_only = t.bool(d, "read_only");
    let header = t.string(d, "header");
    let format = t.string(d, "format");
    let username = t.string(d, "username");
    let name = t.string(d, "name");
    let websocket = t.bool(d, "websocket").map(|b| b.v).unwrap_or(false);
    let identities = t.strings(d, "identities");
    t.finish(d, ROUTE_KEYS);
    let identities = match identities {
        None => Some(IdentityKinds::default()),
        Some(list) => {
            let mut k = IdentityKinds {
                ci: false,
                developer: false,
            };
            let mut ok = true;
            for s in &list.v {
                match s.as_str() {
                    "ci" => k.ci = true,
                    "developer" => k.developer = true,
                    other => {
                        ok = false;
                        d.err(
                            &list.span,
                            &t.key("identities"),
                            format!(
                                "unknown identity kind {other:?}; expected some of: {}",
                                IdentityKinds::NAMES.join(", ")
                            ),
                        );
                    }
                }
            }
            if ok && list.v.is_empty() {
                ok = false;
                d.err(&list.span, &t.key("identities"), "an empty `identities` list would refuse every request; omit it to allow CI and developer identities");
            }
            ok.then_some(k)
        }
    };

    let target = match &url_v {
        None => {
            d.err(
                &t.span,
                &t.key("url"),
                "every [[route]] needs `url`, e.g. \"https://api.example.com/v1/\"",
            );
            None
        }
        Some(u) => match parse_route_url(&u.v) {
            Ok(x) => Some(x),
            Err(msg) => {
                d.err(&u.span, &t.key("url"), msg);
                None
            }
        },
    };
    let credential = match &cred {
        None => {
            d.err(
                &t.span,
                &t.key("credential"),
                "every [[route]] needs `credential`, the name of a [[credential]]",
            );
            None
        }
        Some(c) => match creds.iter().find(|x| **x == c.v) {
            Some(_) => Some(c.v.clone()),
            None => {
                let known: Vec<&str> = creds.iter().map(|c| c.as_str()).collect();
                d.err(
                    &c.span,
                    &t.key("credential"),
                    format!(
                        "no credential named {:?}; defined: {}",
                        c.v,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                None
            }
        },
    };
    let methods = match (methods, read_only) {
        (Some(m), Some(r)) if r.v => {
            d.err(
                &m.span,
                &t.key("methods"),
                "give either `methods` or `read_only = true`, not both",
            );
            None
        }
        (_, Some(r)) if r.v => Some(Some(vec![Method::GET, Method::HEAD, Method::OPTIONS])),
        (Some(m), _) => {
            let mut out = Vec::new();
            let mut ok = true;
            for s in &m.v {
                if ALLOWED_METHODS.contains(&s.as_str()) {
                    out.push(Method::from_bytes(s.as_bytes()).unwrap_or(Method::GET));
                } else {
                    ok = false;
                    d.err(&m.span, &t.key("methods"), format!("unknown or unsupported method {s:?}; expected some of: {} (upper case)", ALLOWED_METHODS.join(", ")));
                }
            }
            if m.v.is_empty() {
                ok = false;
                d.err(&m.span, &t.key("methods"), "an empty `methods` list would refuse every request; omit it to allow every method");
            }
            ok.then_some(Some(out))
        }
        _ => Some(None),
    };
    let header_name = match &header {
        None => Some(http::header::AUTHORIZATION),
        Some(h) => match HeaderName::from_bytes(h.v.as_bytes()) {
            Ok(n) if !RESERVED_HEADERS.contains(&n.as_str()) => Some(n),
            Ok(n) => {
                d.err(
                    &h.span,
                    &t.key("header"),
                    format!("`{n}` controls framing or proxying and cannot carry a credential"),
                );
                None
            }
            Err(_) => {
                d.err(
                    &h.span,
                    &t.key("header"),
                    format!("expected an HTTP header name, got {:?}", h.v),
                );
                None
            }
        },
    };
    let template = match (&format, &username) {
        (Some(f), _) if f.v == "basic" => Some(Template::Basic {
            username: username
                .as_ref()
                .map(|u| u.v.clone())
                .unwrap_or_else(|| "x-access-token".into()),
        }),
        (_, Some(u)) => {
            d.err(
                &u.span,
                &t.key("username"),
                "`username` goes with format = \"basic\"",
            );
            None
        }
        (None, None) => Some(Template::Format {
            before: "Bearer ".into(),
            after: String::new(),
        }),
        (Some(f), None) => {
            if f.v.matches("{token}").count() != 1 || f.v.chars().any(|c| c.is_control()) {
                d.err(&f.span, &t.key("format"), format!("expected a template with exactly one {{token}} and no control characters (e.g. \"Bearer {{token}}\"), or \"basic\"; got {:?}", f.v));
                None
            } else {
                let (before, after) = f.v.split_once("{token}").unwrap_or(("", ""));
                Some(Template::Format {
                    before: before.into(),
                    after: after.into(),
                })
            }
        }
    };
    let name = match name {
        Some(n)
            if !n.v.is_empty()
                && n.v.len() <= 64
                && n.v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Some(Some(n.v))
        }
        Some(n) => {
            d.err(
                &n.span,
                &t.key("name"),
                format!(
                    "expected a route name of letters, digits, - and _, got {:?}",
                    n.v
                ),
            );
            None
        }
        None => Some(None),
    };
    let (scheme, host, port, path_prefix) = target?;
    Some(RouteConfig {
        name: name?,
        scheme,
        host,
        port,
        path_prefix,
        methods: methods?,
        credential: credential?,
        header: header_name?,
        template: template?,
        websocket,
        identities: identities?,
    })
}

/// Route names must stay distinct after `LANYARD_URL_` mangling.
pub(super) fn check_names(d: &mut Diag<'_>, routes: &[RouteConfig]) {
    let mut seen = std::collections::HashSet::new();
    for r in routes {
        if let Some(env) = r.env_name() {
            if !seen.insert(env.clone()) {
                // No span survives to here; point at the top of the file.
                d.err(
                    &(0..0),
                    "route.name",
                    format!("two routes map to the same {env}"),
                );
            }
        }
    }
}

/// `https://*.example.com:8443/v1/` → ("https", Suffix("example.com"), 8443, "/v1/").
pub fn parse_route_url(raw: &str) -> Result<(String, HostPattern, u16, String), String> {
    if raw.chars().any(|c| c.is_control() || c == ' ' || c == '\\') {
        return Err(format!(
            "expected a URL without spaces, backslashes or control characters, got {raw:?}"
        ));
    }
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| format!("expected scheme://host/path, got {raw:?}"))?;
    let (wild, rest_for_parse) = match rest.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest_for_parse.contains('*') {
        return Err(format!(
            "a wildcard is allowed only as the first label (\"*.example.com\"), got {raw:?}"
        ));
    }
    let authority_end = rest_for_parse.find('/').unwrap_or(rest_for_parse.len());
    let raw_path = &rest_for_parse[authority_end..];
    let lower_path = raw_path.to_ascii_lowercase();
    if lower_path.contains("%2f") || lower_path.contains("%5c") || lower_path.contains("%2e") {
        return Err(format!(
            "the path prefix must not contain encoded slashes or dots, got {raw_path:?}"
        ));
    }
    if raw_path.split('/').any(|seg| seg == "." || seg == "..") || raw_path.contains("//") {
        return Err(format!(
            "the path prefix must not contain dot segments or empty segments, got {raw_path:?}"
        ));
    }
    let u = Url::parse(&format!("{scheme}://{rest_for_parse}"))
        .map_err(|e| format!("expected an absolute URL, got {raw:?} ({e})"))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err("a route URL must not carry userinfo".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(
            "a route URL is scheme, host, port and path prefix; no query or fragment".into(),
        );
    }
    let scheme = u.scheme().to_owned();
    if scheme != "https" && scheme != "http" {
        return Err(format!(
            "expected an https:// route (or http:// to a loopback host), got scheme {scheme:?}"
        ));
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => {
            // Why: the proxy refuses a host with an empty label (IDNA can
            // make one, e.g. from U+034F), so such a route could never match.
            let d = d.strip_suffix('.').unwrap_or(d);
            if d.is_empty() || d.split('.').any(str::is_empty) {
                return Err(format!(
                    "the host has an empty label (after IDNA mapping), got {raw:?}"
                ));
            }
            d.to_owned()
        }
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        None => return Err(format!("expected a host in {raw:?}")),
    };
    if wild
        && (matches!(u.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)))
            || !host.contains('.'))
    {
        return Err(format!("a wildcard needs a domain of at least two labels after it (\"*.example.com\"), got {raw:?}"));
    }
    if scheme == "http" && (wild || !crate::http::is_loopback(&u)) {
        return Err(format!("plain http routes are only for loopback hosts (local test upstreams); use https for {raw:?}"));
    }
    let port = u.port_or_known_default().unwrap_or(443);
    let mut path = u.path().to_owned();
    if !path.ends_with('/') {
        // Why: a prefix "/v1" must not match "/v10"; treat it as a folder.
        path.push('/');
    }
    let pattern = if wild {
        HostPattern::Suffix(host)
    } else {
        HostPattern::Exact(host)
    };
    Ok((scheme, pattern, port, path))
}
