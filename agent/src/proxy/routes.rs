//! One strict, canonical parse of a request's destination, and the route
//! matcher. The canonical host is the single value used for matching, for
//! TLS SNI and for dialling, so the three can never disagree. Anything
//! ambiguous is refused, never guessed.

use http::Method;

use crate::config::RouteConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: &'static str,
    /// Lowercase, IDNA ASCII, no trailing dot; IPv6 in brackets.
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("bad host: {0}")]
    Host(String),
    #[error("bad port: {0}")]
    Port(String),
    #[error("ambiguous path: {0}")]
    Path(String),
}

/// Parse `host[:port]` (a CONNECT authority, a Host header, the authority
/// of an absolute-form URI).
pub fn parse_authority(scheme: &'static str, authority: &str) -> Result<Destination, TargetError> {
    let default_port = if scheme == "https" { 443 } else { 80 };
    if authority.is_empty() {
        return Err(TargetError::Host("empty".into()));
    }
    if authority.chars().any(|c| {
        c.is_control()
            || c.is_whitespace()
            || c == '@'
            || c == '\\'
            || c == '/'
            || c == '?'
            || c == '#'
    }) {
        return Err(TargetError::Host(format!(
            "{authority:?} has characters a host cannot have (userinfo, path or whitespace)"
        )));
    }
    let (host_part, port_part) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| TargetError::Host(format!("{authority:?}: unclosed IPv6 bracket")))?;
        let inside = &rest[..end];
        if inside.contains('%') {
            return Err(TargetError::Host(format!(
                "{authority:?}: zone ids are not allowed"
            )));
        }
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(TargetError::Host(format!(
                    "{authority:?}: junk after the IPv6 address"
                )))
            }
        };
        (&authority[..end + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port_part {
        None => default_port,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(TargetError::Port(format!("{p:?} is not 1-65535"))),
            }
        }
        Some(p) => return Err(TargetError::Port(format!("{p:?} is not a port number"))),
    };
    if host_part.contains('%') {
        return Err(TargetError::Host(format!(
            "{host_part:?}: percent-encoding is not allowed in a host"
        )));
    }
    let trimmed = host_part.strip_suffix('.').unwrap_or(host_part);
    if trimmed.is_empty()
        || trimmed.ends_with('.')
        || trimmed.starts_with('.')
        || trimmed.contains("..")
    {
        return Err(TargetError::Host(format!("{host_part:?}: empty label")));
    }
    let host = match url::Host::parse(trimmed) {
        Ok(url::Host::Domain(d)) => {
            // Why again after IDNA: the mapping drops some code points
            // (U+034F, U+00AD) and turns U+3002 into `.`, which can make an
            // empty label the checks above could not see.
            if d.is_empty() || d.starts_with('.') || d.ends_with('.') || d.contains("..") {
                return Err(TargetError::Host(format!(
                    "{host_part:?}: empty label after IDNA mapping"
                )));
            }
            d.to_ascii_lowercase()
        }
        Ok(url::Host::Ipv4(ip)) => {
            // Why: `url` accepts 0x7f.1 and 2130706433 as IPv4; refuse any
            // spelling that is not the canonical dotted quad, so a route for
            // one address cannot be reached through a look-alike.
            if ip.to_string() != trimmed {
                return Err(TargetError::Host(format!(
                    "{trimmed:?} is a non-canonical IPv4 spelling of {ip}"
                )));
            }
            ip.to_string()
        }
        Ok(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Err(e) => return Err(TargetError::Host(format!("{trimmed:?}: {e}"))),
    };
    Ok(Destination { scheme, host, port })
}

/// Check a request path (no query). Refuses encoded slashes, backslashes
/// and dots, dot segments, empty segments and control characters: the
/// forms that an upstream may read differently from us.
pub fn check_path(path: &str) -> Result<(), TargetError> {
    if !path.starts_with('/') {
        return Err(TargetError::Path(format!("{path:?} does not start with /")));
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b'\\' || b == b'#' || b == b' ' || b >= 0x80)
    {
        return Err(TargetError::Path(
            "control characters, spaces, backslashes or raw non-ASCII bytes".into(),
        ));
    }
    let lower = path.to_ascii_lowercase();
    for enc in ["%2f", "%5c", "%2e", "%00", "%25"] {
        if lower.contains(enc) {
            return Err(TargetError::Path(format!("encoded {enc}")));
        }
    }
    if path.len() > 1
        && path[1..].split('/').enumerate().any(|(i, seg)| {
            seg == "." || seg == ".." || (seg.is_empty() && i + 1 < path[1..].split('/').count())
        })
    {
        return Err(TargetError::Path("dot segments or empty segments".into()));
    }
    Ok(())
}

/// What the matcher decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Inject this route's credential.
    Route(&'a RouteConfig),
    /// The host has routes but none allows this path or method: 403.
    Refused { rule: String },
    /// No route for this host: tunnel untouched or deny, per `egress`.
    NoRoute,
}

/// Who this session's requests act as, for routes that serve only some
/// identity kinds (`identities = ["ci"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    pub developer: bool,
    /// For refusals: `GitHub Actions` or `alice@acme.test (sub alice)`.
    pub who: String,
}

impl SessionIdentity {
    /// The words a refusal uses for this session.
    pub fn describe(&self) -> String {
        if self.developer {
            format!("a developer login (lanyard login as {})", self.who)
        } else {
            format!("a CI identity ({})", self.who)
        }
    }
}

/// Routes for one listener, in config order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<RouteConfig>,
    /// `None`: identity kinds are not checked (doctor before it knows).
    identity: Option<SessionIdentity>,
}

impl RouteTable {
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        RouteTable {
            routes,
            identity: None,
        }
    }

    /// A table that refuses routes not meant for this identity kind.
    pub fn for_identity(routes: Vec<RouteConfig>, identity: SessionIdentity) -> Self {
        RouteTable {
            routes,
            identity: Some(identity),
        }
    }

    /// Does any route cover this host and port (for CONNECT: intercept or tunnel)?
    pub fn has_host(&self, d: &Destination) -> bool {
        self.routes
            .iter()
            .any(|r| r.scheme == d.scheme && r.port == d.port && r.host.matches(&d.host))
    }

    /// The longest matching path prefix wins; on a tie, the first in config.
    pub fn decide(&self, d: &Destination, path: &str, method: &Method) -> Decision<'_> {
        let on_host: Vec<&RouteConfig> = self
            .routes
            .iter()
            .filter(|r| r.scheme == d.scheme && r.port == d.port && r.host.matches(&d.host))
            .collect();
        if on_host.is_empty() {
            return Decision::NoRoute;
        }
        // `/v1` is covered by a prefix `/v1/` too.
        let under = |r: &RouteConfig| {
            path.starts_with(&r.path_prefix) || format!("{path}/") == r.path_prefix
        };
        let mut best: Option<&RouteConfig> = None;
        for r in on_host.iter().copied().filter(|r| under(r)) {
            if best.is_none_or(|b| r.path_prefix.len() > b.path_prefix.len()) {
                best = Some(r);
            }
        }
        let Some(r) = best else {
            let prefixes: Vec<String> = on_host.iter().map(|r| r.display_url()).collect();
            return Decision::Refused {
                rule: format!(
                    "path {path} is outside the routes for {}: {}",
                    d.host,
                    prefixes.join(", ")
                ),
            };
        };
        // Why after the longest-prefix choice: a CI-only `/v1/admin/` must
        // not fall back to a broader `/v1/` route for a developer.
        if let Some(id) = &self.identity {
            if !r.identities.allows(id.developer) {
                return Decision::Refused {
                    rule: format!(
                        "route {} is for {}; this session uses {}",
                        r.display_url(),
                        r.identities.describe(),
                        id.describe()
                    ),
                };
            }
        }
        if let Some(ms) = &r.methods {
            if !ms.contains(method) {
                let allowed: Vec<&str> = ms.iter().map(Method::as_str).collect();
                return Decision::Refused {
                    rule: format!(
                        "method {method} is not allowed on {} (allowed: {})",
                        r.display_url(),
                        allowed.join(", ")
                    ),
                };
            }
        }
        Decision::Route(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table() -> RouteTable {
        let cfg = Config::parse(
            std::path::Path::new("t.toml"),
            r#"
[[credential]]
name = "gw"
exchange = "passthrough"
[[route]]
url = "https://api.example.com/v1/"
credential = "gw"
methods = ["GET"]
[[route]]
url = "https://api.example.com/v1/admin/"
credential = "gw"
[[route]]
url = "https://*.corp.example/"
credential = "gw"
"#,
        )
        .expect("config");
        RouteTable::new(cfg.routes)
    }

    fn dest(a: &str) -> Destination {
        parse_authority("https", a).expect(a)
    }

    #[test]
    fn destinations_are_canonical() {
        assert_eq!(
            dest("API.Example.COM."),
            Destination {
                scheme: "https",
                host: "api.example.com".into(),
                port: 443
            }
        );
        assert_eq!(dest("api.example.com:8443").port, 8443);
        assert_eq!(dest("bücher.example").host, "xn--bcher-kva.example");
        assert_eq!(dest("[::1]:9").host, "[::1]");
        assert_eq!(dest("127.0.0.1").host, "127.0.0.1");
    }

    #[test]
    fn hostile_authorities_are_refused() {
        for bad in [
            "",
            "user@api.example.com",
            "api.example.com@evil.net",
            "api.example.com:0",
            "api.example.com:99999",
            "api.example.com:",
            "api.example.com:443x",
            "[fe80::1%25eth0]",
            "[::1",
            "api..example.com",
            ".api.example.com",
            "api.example.com..",
            "api.example.com/x",
            "api.example.com\\x",
            "api%2eexample.com",
            "api.example.com\r\nx: y",
            "0x7f.1",
            "2130706433",
            "127.1",
            "api example.com",
        ] {
            assert!(
                parse_authority("https", bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    /// Found by the `authority` fuzz target: IDNA maps some code points to
    /// nothing (U+034F, U+00AD) and the ideographic full stop to `.`, so the
    /// empty-label checks done before the mapping let `!.\u{34f}` become
    /// the host `!.`, whose canonical spelling does not parse back to itself.
    #[test]
    fn idna_mapping_cannot_leave_an_empty_label() {
        for bad in [
            "!.\u{34f}",
            "api.example.com.\u{34f}",
            "api.example.com.\u{ad}:443",
            "api.example.com\u{3002}",
            "api.\u{34f}.example.com",
            "\u{ad}.example.com",
            "api\u{3002}\u{3002}example.com",
        ] {
            assert!(
                parse_authority("https", bad).is_err(),
                "{bad:?} should be refused, got {:?}",
                parse_authority("https", bad)
            );
        }
        // A mapping that leaves every label non-empty is IDNA's business:
        // the canonical host is the mapped one, and it re-parses to itself.
        let d = dest("api.exa\u{34f}mple.com");
        assert_eq!(d.host, "api.example.com");
        assert_eq!(dest(&format!("{}:{}", d.host, d.port)), d);
    }

    #[test]
    fn path_tricks_are_refused() {
        for bad in [
            "/v1/../admin",
            "/v1/./x",
            "/v1/%2e%2e/admin",
            "/v1%2fadmin",
            "/v1/%5cadmin",
            "/v1\\admin",
            "/v1//admin",
            "v1/",
            "/v1/%00",
            "/v1/%252e%252e/",
            "/v1/\u{0}",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} should be refused");
        }
        for ok in ["/", "/v1/", "/v1/charges", "/v1/a%20b", "/v1/x.y"] {
            assert!(check_path(ok).is_ok(), "{ok:?} should pass");
        }
    }

    #[test]
    fn longest_prefix_wins_and_refusals_name_the_rule() {
        let t = table();
        let d = dest("api.example.com");
        assert!(
            matches!(t.decide(&d, "/v1/charges", &Method::GET), Decision::Route(r) if r.path_prefix == "/v1/")
        );
        // The admin route allows every method; the /v1/ route only GET.
        assert!(
            matches!(t.decide(&d, "/v1/admin/x", &Method::POST), Decision::Route(r) if r.path_prefix == "/v1/admin/")
        );
        assert!(matches!(
            t.decide(&d, "/v1", &Method::GET),
            Decision::Route(_)
        ));
        match t.decide(&d, "/v1/charges", &Method::DELETE) {
            Decision::Refused { rule } => assert!(
                rule.contains(
                    "method DELETE is not allowed on https://api.example.com/v1/ (allowed: GET)"
                ),
                "{rule}"
            ),
            other => panic!("{other:?}"),
        }
        match t.decide(&d, "/v10/charges", &Method::GET) {
            Decision::Refused { rule } => assert!(
                rule.starts_with("path /v10/charges is outside the routes for api.example.com"),
                "{rule}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_developer_never_gets_a_ci_only_route_and_the_refusal_says_why() {
        let cfg = Config::parse(
            std::path::Path::new("t.toml"),
            r#"
[[credential]]
name = "gw"
exchange = "passthrough"
[[route]]
url = "https://api.example.com/v1/"
credential = "gw"
[[route]]
url = "https://api.example.com/v1/deploy/"
credential = "gw"
identities = ["ci"]
"#,
        )
        .expect("config");
        let dev = SessionIdentity {
            developer: true,
            who: "alice@acme.test (sub alice)".into(),
        };
        let t = RouteTable::for_identity(cfg.routes.clone(), dev);
        let d = dest("api.example.com");
        assert!(matches!(
            t.decide(&d, "/v1/charges", &Method::GET),
            Decision::Route(_)
        ));
        // The longer CI-only prefix wins the match, then refuses: no
        // fallback to the broader route.
        match t.decide(&d, "/v1/deploy/x", &Method::POST) {
            Decision::Refused { rule } => assert_eq!(
                rule,
                "route https://api.example.com/v1/deploy/ is for CI identities only; this session uses a developer login (lanyard login as alice@acme.test (sub alice))"
            ),
            other => panic!("{other:?}"),
        }
        let ci = RouteTable::for_identity(
            cfg.routes,
            SessionIdentity {
                developer: false,
                who: "github".into(),
            },
        );
        assert!(matches!(
            ci.decide(&d, "/v1/deploy/x", &Method::POST),
            Decision::Route(_)
        ));
    }

    #[test]
    fn look_alike_hosts_and_ports_get_no_route() {
        let t = table();
        for a in [
            "api.example.com.evil.net",
            "apiexample.com",
            "api.example.co",
            "corp.example",
            "xcorp.example",
            "api.example.com:8443",
        ] {
            assert_eq!(
                t.decide(&dest(a), "/v1/x", &Method::GET),
                Decision::NoRoute,
                "{a}"
            );
        }
        assert!(matches!(
            t.decide(&dest("git.corp.example"), "/x", &Method::GET),
            Decision::Route(_)
        ));
        assert!(matches!(
            t.decide(
                &parse_authority("http", "api.example.com").expect("http"),
                "/v1/",
                &Method::GET
            ),
            Decision::NoRoute
        ));
    }
}
