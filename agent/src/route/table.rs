//! A listener's routes and the matcher: for a canonical destination, a
//! path and a method, which route's credential applies, or why none does.

use http::Method;

use super::{Destination, Route};

/// What the matcher decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Inject this route's credential.
    Route(&'a Route),
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
    routes: Vec<Route>,
    /// `None`: identity kinds are not checked (doctor before it knows).
    identity: Option<SessionIdentity>,
    /// Each route's name in the audit log (its URL when it has no name),
    /// rendered once rather than per request.
    audit_names: Vec<String>,
}

fn audit_names(routes: &[Route]) -> Vec<String> {
    routes.iter().map(Route::audit_key).collect()
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        RouteTable {
            audit_names: audit_names(&routes),
            routes,
            identity: None,
        }
    }

    /// A table that refuses routes not meant for this identity kind.
    pub fn for_identity(routes: Vec<Route>, identity: SessionIdentity) -> Self {
        RouteTable {
            audit_names: audit_names(&routes),
            routes,
            identity: Some(identity),
        }
    }

    /// The audit log's name for a route of this table (as `decide` returned it).
    pub fn audit_name(&self, route: &Route) -> String {
        match self.routes.iter().position(|r| std::ptr::eq(r, route)) {
            Some(i) => self.audit_names[i].clone(),
            None => route.audit_key(),
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
        let on_host: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| r.scheme == d.scheme && r.port == d.port && r.host.matches(&d.host))
            .collect();
        if on_host.is_empty() {
            return Decision::NoRoute;
        }
        // `/v1` is covered by a prefix `/v1/` too.
        let under =
            |r: &Route| path.starts_with(&r.path_prefix) || format!("{path}/") == r.path_prefix;
        let mut best: Option<&Route> = None;
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
    use crate::route::{parse_authority, parse_route_url, IdentityKinds, Scheme, Template};

    /// A route to credential `gw` with the defaults a `[[route]]` gets.
    fn route(url: &str) -> Route {
        let (scheme, host, port, path_prefix) = parse_route_url(url).expect(url);
        Route {
            name: None,
            scheme,
            host,
            port,
            path_prefix,
            methods: None,
            credential: "gw".into(),
            header: http::header::AUTHORIZATION,
            template: Template::Format {
                before: "Bearer ".into(),
                after: String::new(),
            },
            websocket: false,
            identities: IdentityKinds::default(),
            aws: None,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            Route {
                methods: Some(vec![Method::GET]),
                ..route("https://api.example.com/v1/")
            },
            route("https://api.example.com/v1/admin/"),
            route("https://*.corp.example/"),
        ])
    }

    fn dest(a: &str) -> Destination {
        parse_authority(Scheme::Https, a).expect(a)
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
        let routes = vec![
            route("https://api.example.com/v1/"),
            Route {
                identities: IdentityKinds {
                    ci: true,
                    developer: false,
                },
                ..route("https://api.example.com/v1/deploy/")
            },
        ];
        let dev = SessionIdentity {
            developer: true,
            who: "alice@acme.test (sub alice)".into(),
        };
        let t = RouteTable::for_identity(routes.clone(), dev);
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
            routes,
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
                &parse_authority(Scheme::Http, "api.example.com").expect("http"),
                "/v1/",
                &Method::GET
            ),
            Decision::NoRoute
        ));
    }
}
