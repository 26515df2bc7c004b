//! `doctor --url`: which route a URL would match, and why.

use super::*;

pub(super) fn explain_url(
    cfg: &Config,
    raw: &str,
    method: &str,
    who: Option<&SessionIdentity>,
    out: &mut String,
) {
    use crate::route::{check_path, parse_authority, Decision, RouteTable, Scheme};
    let _ = writeln!(out, "\nroute for {method} {raw}");
    // The proxy's own parse and matcher give the verdict, so doctor can
    // never disagree with what the proxy will do.
    let parsed = url::Url::parse(raw)
        .map_err(|e| e.to_string())
        .and_then(|u| {
            let Some(scheme) = Scheme::parse(u.scheme()) else {
                return Err(format!("scheme {:?} is not proxied", u.scheme()));
            };
            let authority = match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
                None => u.host_str().unwrap_or("").to_owned(),
            };
            let dest = parse_authority(scheme, &authority).map_err(|e| e.to_string())?;
            check_path(u.path()).map_err(|e| e.to_string())?;
            Ok((dest, u.path().to_owned()))
        });
    let (dest, path) = match parsed {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(out, "  refused with 400: {e}");
            return;
        }
    };
    let m = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
    let table = match who {
        Some(w) => RouteTable::for_identity(cfg.routes.clone(), w.clone()),
        None => RouteTable::new(cfg.routes.clone()),
    };
    let chosen = match table.decide(&dest, &path, &m) {
        Decision::Route(r) => {
            let _ = writeln!(
                out,
                "  matches {} → credential {} in header {}",
                r.display_url(),
                r.credential,
                r.header
            );
            match who {
                Some(w) => {
                    let _ = writeln!(
                        out,
                        "  applies to this session: the route is for {}, and this session uses {}",
                        r.identities.describe(),
                        w.describe()
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  the route is for {} (this session's identity is not known)",
                        r.identities.describe()
                    );
                }
            }
            Some(r.display_url())
        }
        Decision::Refused { rule } => {
            let _ = writeln!(out, "  refused with 403: {rule}");
            // A route refused for its identity kind still is the match.
            match RouteTable::new(cfg.routes.clone()).decide(&dest, &path, &m) {
                Decision::Route(r) => Some(r.display_url()),
                _ => None,
            }
        }
        Decision::NoRoute => {
            let _ = writeln!(
                out,
                "  no route: the request gets no credential; it is {}",
                match cfg.proxy.egress {
                    crate::config::Egress::Allow => "passed through untouched (egress = \"allow\")",
                    crate::config::Egress::Deny => "refused with 403 (egress = \"deny\")",
                }
            );
            None
        }
    };
    // Why each other route does not apply.
    for r in cfg
        .routes
        .iter()
        .filter(|r| Some(r.display_url()) != chosen)
    {
        let mut why = Vec::new();
        if r.scheme != dest.scheme {
            why.push(format!("scheme {} is not {}", dest.scheme, r.scheme));
        }
        if !r.host.matches(&dest.host) {
            why.push(format!("host {} does not match {}", dest.host, r.host));
        }
        if r.port != dest.port {
            why.push(format!("port {} is not {}", dest.port, r.port));
        }
        if !path.starts_with(&r.path_prefix) {
            why.push(format!("path {path} is not under {}", r.path_prefix));
        }
        if why.is_empty() {
            why.push("a longer path prefix matches".into());
        }
        let _ = writeln!(out, "  not {}: {}", r.display_url(), why.join("; "));
    }
}

pub(super) fn methods(r: &Route) -> String {
    match &r.methods {
        None => "every method".into(),
        Some(m) => m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "),
    }
}
