//! Phase 3, `decide`: what happens to a resolved request. A routed host
//! gets the strict path check and the route decision (path prefix,
//! method, identity kind, WebSocket); any other host is passed through
//! untouched, or refused by `egress = "deny"` (checked here, once, for
//! requests and CONNECT alike).

use http::header;
use http::{Method, Request};
use hyper::body::Incoming;

use crate::audit;
use crate::config::Egress;
use crate::proxy::context::Ctx;
use crate::proxy::refusal::Refusal;
use crate::proxy::server::Shared;
use crate::route::{check_path, Decision, Destination, Route, RouteTable};

/// What `decide` chose.
pub enum Plan<'s> {
    /// Attach this route's credential.
    Route(&'s Route),
    /// No route, egress allowed: forwarded with no credential.
    Pass,
    /// `CONNECT` to a routed host: intercept TLS and decide each request
    /// inside the tunnel on its own.
    Intercept,
    /// `CONNECT` to a host with no route, egress allowed: a blind tunnel.
    Tunnel,
}

pub fn decide<'s>(
    shared: &'s Shared,
    ctx: &mut Ctx,
    req: &Request<Incoming>,
) -> Result<Plan<'s>, Refusal> {
    ctx.locate_dest();
    let connect = req.method() == Method::CONNECT;
    let upgrade = match req.headers().get(header::UPGRADE) {
        Some(u) if !connect => Some(u.as_bytes()),
        _ => None,
    };
    if let Some(u) = upgrade {
        if !u.eq_ignore_ascii_case(b"websocket") {
            return Err(Refusal::malformed(format!(
                "protocol upgrade to {:?} is not supported (h2c is refused)",
                String::from_utf8_lossy(&u.to_ascii_lowercase())
            )));
        }
    }
    let route = match verdict(
        &shared.routes,
        shared.egress,
        &ctx.dest,
        ctx.path(),
        req.method(),
    )? {
        Plan::Pass if upgrade.is_some() => {
            return Err(Refusal::policy(
                "WebSocket through the plain-HTTP proxy needs a route with websocket = true",
            ))
        }
        Plan::Pass => {
            ctx.log.rec.decision = audit::Decision::Tunnelled;
            return Ok(Plan::Pass);
        }
        Plan::Route(r) => r,
        plan => return Ok(plan),
    };
    let rec = &mut ctx.log.rec;
    rec.route = Some(shared.routes.audit_name(route));
    rec.credential = Some(route.credential.clone());
    if upgrade.is_some() && !route.websocket {
        return Err(Refusal::policy(format!(
            "WebSocket is not enabled on route {} (websocket = true)",
            route.display_url()
        )));
    }
    rec.decision = audit::Decision::Injected;
    Ok(Plan::Route(route))
}

/// The verdict for a destination, a path (no query) and a method, from
/// the routes and `egress` alone: pure (no request headers, no network,
/// no credential). The proxy's `decide` and `doctor --url` both call it,
/// so doctor gives exactly the proxy's answer.
pub fn verdict<'s>(
    routes: &'s RouteTable,
    egress: Egress,
    dest: &Destination,
    path: &str,
    method: &Method,
) -> Result<Plan<'s>, Refusal> {
    let connect = method == Method::CONNECT;
    if !routes.has_host(dest) {
        if egress == Egress::Deny {
            return Err(Refusal::policy(format!(
                "egress = \"deny\": {}:{} has no route",
                dest.host, dest.port
            )));
        }
        return Ok(if connect { Plan::Tunnel } else { Plan::Pass });
    }
    if connect {
        return Ok(Plan::Intercept);
    }
    if let Err(e) = check_path(path) {
        return Err(Refusal::malformed(e.to_string()));
    }
    match routes.decide(dest, path, method) {
        Decision::Route(r) => Ok(Plan::Route(r)),
        Decision::Refused { rule } => Err(Refusal::policy(rule)),
        Decision::NoRoute => Err(Refusal::policy("no route")),
    }
}
