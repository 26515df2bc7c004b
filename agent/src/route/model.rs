//! A route: which requests get which credential, and how. `config` builds
//! routes from `[[route]]` entries; the URL is parsed here into one
//! canonical form (lowercase host, explicit port, normalised path prefix)
//! and anything ambiguous is refused.

use http::{HeaderName, Method};
use url::Url;

use super::host::{parse_authority, HostPattern};
use super::path::path_problem;
use super::Scheme;

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
pub struct Route {
    /// For the reverse listener: `LANYARD_URL_<NAME>`.
    pub name: Option<String>,
    pub scheme: Scheme,
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
    /// `Some`: the credential holds AWS keys and each request is signed
    /// with SigV4 instead of carrying `header` (which is then unused).
    pub aws: Option<AwsSigning>,
}

/// How an AWS route signs: the service and region, when the config names
/// them (`aws_service`, `aws_region`); otherwise derived from each
/// request's host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSigning {
    pub service: Option<String>,
    pub region: Option<String>,
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

impl Route {
    /// The URL as the user could have written it, for messages.
    pub fn display_url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            self.scheme.authority(&self.host, self.port),
            self.path_prefix
        )
    }

    /// How the audit record and the teardown summary name the route: its
    /// name, else its URL.
    pub fn audit_key(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.display_url())
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

/// `https://*.example.com:8443/v1/` → (Https, Suffix("example.com"), 8443, "/v1/").
pub fn parse_route_url(raw: &str) -> Result<(Scheme, HostPattern, u16, String), String> {
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
    let authority_end = rest_for_parse
        .find(['/', '?', '#'])
        .unwrap_or(rest_for_parse.len());
    let (authority, raw_path) = rest_for_parse.split_at(authority_end);
    let raw_path = &raw_path[..raw_path.find(['?', '#']).unwrap_or(raw_path.len())];
    // Why the proxy's own check: a prefix no request path can have would
    // be a route that never matches, or one an upstream reads otherwise.
    if let Some(problem) = (!raw_path.is_empty())
        .then(|| path_problem(raw_path))
        .flatten()
    {
        return Err(format!(
            "the path prefix must not contain {problem}, got {raw_path:?}"
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
    let Some(scheme) = Scheme::parse(u.scheme()) else {
        return Err(format!(
            "expected an https:// route (or http:// to a loopback host), got scheme {:?}",
            u.scheme()
        ));
    };
    // Why the proxy's own parse: a route host spelt in a way no request's
    // canonical host can be (an empty label after IDNA mapping, a
    // non-canonical IPv4) would never match.
    let dest = parse_authority(scheme, authority).map_err(|e| format!("{e}, in {raw:?}"))?;
    let host = dest.host;
    if wild
        && (host.starts_with('[')
            || host.parse::<std::net::Ipv4Addr>().is_ok()
            || !host.contains('.'))
    {
        return Err(format!("a wildcard needs a domain of at least two labels after it (\"*.example.com\"), got {raw:?}"));
    }
    if scheme == Scheme::Http && (wild || !crate::http::is_loopback(&u)) {
        return Err(format!("plain http routes are only for loopback hosts (local test upstreams); use https for {raw:?}"));
    }
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
    Ok((scheme, pattern, dest.port, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_urls_are_canonical_and_refuse_ambiguity() {
        let ok = |u: &str| parse_route_url(u).expect(u);
        assert_eq!(
            ok("https://API.Example.COM./v1"),
            (
                Scheme::Https,
                HostPattern::Exact("api.example.com".into()),
                443,
                "/v1/".into()
            )
        );
        assert_eq!(
            ok("https://*.example.com:8443/").1,
            HostPattern::Suffix("example.com".into())
        );
        assert_eq!(ok("http://127.0.0.1:9000/x/").2, 9000);
        assert_eq!(
            ok("https://bücher.example/").1,
            HostPattern::Exact("xn--bcher-kva.example".into())
        );
        for bad in [
            "https://api.example.com/a/%2F/",
            "https://api.example.com/a/%2e%2e/",
            "https://api.example.com/a//b",
            "https://api.example.com/a\\b",
            "https://u:p@api.example.com/",
            "https://api.example.com/?q=1",
            "https://a.*.example.com/",
            "https://*.com/",
            "https://*.127.0.0.1/",
            "http://api.example.com/",
            "ftp://api.example.com/",
        ] {
            assert!(parse_route_url(bad).is_err(), "{bad} should be refused");
        }
    }

    /// Found while fuzzing (the proxy's side of the same IDNA bug): a route
    /// whose host has an empty label after IDNA mapping (`a.\u{34f}.example.com`
    /// → `a..example.com`) or more than one trailing dot was accepted, though no
    /// request can ever match it: the proxy refuses such a host.
    #[test]
    fn route_hosts_with_an_empty_label_are_refused() {
        for bad in [
            "https://a.\u{34f}.example.com/",
            "https://api.example.com../",
            "https://api.example.com.\u{ad}./",
            "https://*.example.com../",
        ] {
            let r = parse_route_url(bad);
            assert!(
                r.as_ref().is_err_and(|e| e.contains("empty label")),
                "{bad:?} should be refused for an empty label, got {r:?}"
            );
        }
        // One trailing dot is the root, as for requests.
        assert_eq!(
            parse_route_url("https://api.example.com./")
                .expect("one dot")
                .1,
            HostPattern::Exact("api.example.com".into())
        );
    }
}
