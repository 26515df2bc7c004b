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
use crate::route::Route;
use crate::route::{check_path, Decision};

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
    if !shared.routes.has_host(&ctx.dest) {
        if shared.egress == Egress::Deny {
            return Err(Refusal::policy(format!(
                "egress = \"deny\": {}:{} has no route",
                ctx.dest.host, ctx.dest.port
            )));
        }
        if connect {
            return Ok(Plan::Tunnel);
        }
        if upgrade.is_some() {
            return Err(Refusal::policy(
                "WebSocket through the plain-HTTP proxy needs a route with websocket = true",
            ));
        }
        ctx.log.rec.decision = audit::Decision::Tunnelled;
        return Ok(Plan::Pass);
    }
    if connect {
        return Ok(Plan::Intercept);
    }
    let path = ctx.path();
    if let Err(e) = check_path(path) {
        return Err(Refusal::malformed(e.to_string()));
    }
    let route = match shared.routes.decide(&ctx.dest, path, req.method()) {
        Decision::Route(r) => r,
        Decision::Refused { rule } => return Err(Refusal::policy(rule)),
        Decision::NoRoute => return Err(Refusal::policy("no route")),
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
