//! Routes the job's `NO_PROXY` sends around lanyard. lanyard keeps the
//! job's entries in the exported `NO_PROXY` (hosts the job reached
//! directly before), so a client that honours it dials a routed host
//! directly, with no credential and no word from lanyard. `run`, `start`
//! and `doctor` name each such route and entry. Matching is the one the
//! dialler uses ([`Matcher`], curl's rules).

use hyper_util::client::proxy::matcher::Matcher;

use super::NO_VARS;
use crate::env::Env;
use crate::route::{HostPattern, Route};

/// One warning line per route a `NO_PROXY` entry covers (the first entry
/// that covers it), without the `lanyard: ` prefix.
pub fn no_proxy_warnings(env: &dyn Env, routes: &[Route]) -> Vec<String> {
    let Some(no_proxy) = NO_VARS.iter().find_map(|v| env.non_empty(v)) else {
        return Vec::new();
    };
    let entries: Vec<&str> = no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    routes
        .iter()
        .filter_map(|r| {
            let entry = entries.iter().find(|e| covers(e, r))?;
            Some(format!(
                "warning: route {} is covered by NO_PROXY entry {entry:?}: a client that honours NO_PROXY goes to {} directly, around lanyard, with no credential; remove the entry from NO_PROXY",
                r.display_url(),
                r.host
            ))
        })
        .collect()
}

/// Does this one `NO_PROXY` entry send (some of) the route's hosts direct?
fn covers(entry: &str, r: &Route) -> bool {
    let m = Matcher::builder()
        .all("http://proxy.invalid:1")
        .no(entry)
        .build();
    let direct = |host: &str| {
        format!("{}://{host}:{}/", r.scheme, r.port)
            .parse::<http::Uri>()
            .is_ok_and(|u| m.intercept(&u).is_none())
    };
    match &r.host {
        HostPattern::Exact(h) => direct(h),
        // Any host under the wildcard (`*`, `.corp.test`), or an entry
        // naming one of its hosts (`build.corp.test`).
        HostPattern::Suffix(s) => {
            let named = entry.trim_start_matches("*.").trim_start_matches('.');
            direct(&format!("lanyard-check.{s}")) || (r.host.matches(named) && direct(named))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{parse_route_url, IdentityKinds, Template};

    fn route(url: &str) -> Route {
        let (scheme, host, port, path_prefix) = parse_route_url(url).expect(url);
        Route {
            name: None,
            scheme,
            host,
            port,
            path_prefix,
            credential: "c".into(),
            header: http::header::AUTHORIZATION,
            template: Template::Format {
                before: "Bearer ".into(),
                after: String::new(),
            },
            methods: None,
            websocket: false,
            identities: IdentityKinds::default(),
            aws: None,
        }
    }

    #[test]
    fn entries_that_cover_a_route() {
        let cases = [
            ("api.example.com", "https://api.example.com/", true),
            (".example.com", "https://api.example.com/v1/", true),
            ("example.com", "https://api.example.com/", true),
            ("*", "https://api.example.com/", true),
            ("10.0.0.0/8", "https://10.1.2.3/", true),
            ("other.com", "https://api.example.com/", false),
            ("le.com", "https://api.example.com/", false),
            (".corp.test", "https://*.corp.test/", true),
            ("build.corp.test", "https://*.corp.test/", true),
            ("corp.test.evil", "https://*.corp.test/", false),
            ("x.other.test", "https://*.corp.test/", false),
        ];
        for (entry, url, want) in cases {
            assert_eq!(covers(entry, &route(url)), want, "{entry} vs {url}");
        }
    }
}
