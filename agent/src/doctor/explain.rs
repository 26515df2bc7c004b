//! `doctor --url`: which route a URL would match, and why.

use super::*;

pub(super) fn explain_url(
    cfg: &Config,
    raw: &str,
    method: &str,
    who: Option<&SessionIdentity>,
    out: &mut String,
) {
    use crate::proxy::phase::decide::{verdict, Plan};
    use crate::proxy::phase::resolve::absolute_target;
    use crate::proxy::refusal::{rule_header, Refusal};
    use crate::route::RouteTable;
    let _ = writeln!(out, "\nroute for {method} {raw}");
    // The proxy's own functions give the verdict: the request target is
    // read by `resolve`'s, the decision is `decide`'s, so doctor says
    // exactly what the proxy will answer (its listener's own checks, the
    // proxy secret and the self-loop, aside).
    let refused = |r: &Refusal, out: &mut String| {
        let _ = writeln!(
            out,
            "  verdict: {}, x-lanyard-rule: {}",
            r.status.as_u16(),
            rule_header(&r.rule)
        );
    };
    let uri = match http::Uri::try_from(raw) {
        Ok(u) => u,
        Err(e) => {
            let _ = writeln!(
                out,
                "  verdict: 400 from the HTTP parser, before lanyard's rules (no x-lanyard-rule): {e}"
            );
            return;
        }
    };
    let m = match http::Method::from_bytes(method.as_bytes()) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(
                out,
                "  verdict: 400 from the HTTP parser, before lanyard's rules (no x-lanyard-rule): {method:?}: {e}"
            );
            return;
        }
    };
    let (dest, pq) = match absolute_target(&uri) {
        Ok(t) => t,
        Err(r) => return refused(&r, out),
    };
    let path = pq.split_once('?').map_or(pq.as_str(), |(p, _)| p);
    let table = match who {
        Some(w) => RouteTable::for_identity(cfg.routes.clone(), w.clone()),
        None => RouteTable::new(cfg.routes.clone()),
    };
    match verdict(&table, cfg.proxy.egress, &dest, path, &m) {
        Err(r) => refused(&r, out),
        Ok(Plan::Route(r)) => {
            let _ = writeln!(
                out,
                "  verdict: forwarded with credential {} in header {} (route {}); the status is the upstream's",
                r.credential,
                r.header,
                r.display_url()
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
                        "  the route is for {} (this session's identity is not known, so it was not checked)",
                        r.identities.describe()
                    );
                }
            }
        }
        Ok(Plan::Pass) => {
            let _ = writeln!(
                out,
                "  verdict: forwarded untouched with no credential (no route; egress = \"allow\"); the status is the upstream's"
            );
        }
        Ok(Plan::Tunnel) => {
            let _ = writeln!(
                out,
                "  verdict: tunnelled untouched with no credential (no route; egress = \"allow\")"
            );
        }
        Ok(Plan::Intercept) => {
            let _ = writeln!(
                out,
                "  verdict: intercepted (TLS); each request inside the tunnel is decided on its own"
            );
        }
    }
    // The route the URL falls under, whatever its methods or identities
    // (the longest prefix; the first in config on a tie).
    let chosen = cfg
        .routes
        .iter()
        .rev()
        .filter(|r| r.scheme == dest.scheme && r.port == dest.port && r.host.matches(&dest.host))
        .filter(|r| path.starts_with(&r.path_prefix) || format!("{path}/") == r.path_prefix)
        .max_by_key(|r| r.path_prefix.len())
        .map(|r| r.display_url());
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
