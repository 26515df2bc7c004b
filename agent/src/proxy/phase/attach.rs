//! Phase 4, `attach`: the request as it will go upstream. Its head is
//! rebuilt (target, hop-by-hop and `Proxy-*` headers removed), then, for
//! a routed request, [`credential`] puts the route's credential in
//! (rendered through its template) and the trace headers; a request
//! passed through loses every credential-looking header instead.
//!
//! This is where later back ends plug in: request signing (which needs
//! the final method, target and headers, all in [`Outgoing`]) and
//! placeholder substitution go into [`credential`], which also runs again
//! for the 401 replay with the refreshed value.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::decide::Plan;
use crate::proxy::context::Ctx;
use crate::proxy::forward::strip_hop_by_hop;
use crate::proxy::inject::{self, InjectError};
use crate::proxy::refusal::Refusal;
use crate::proxy::server::Shared;
use crate::route::Route;
use crate::store::Current;

/// The upstream request under construction.
pub struct Outgoing<'s> {
    /// `None`: passed through with no credential.
    pub route: Option<&'s Route>,
    /// The client's request head; its headers are the outgoing ones.
    pub parts: Parts,
    pub uri: Uri,
    pub body: Incoming,
    /// A WebSocket upgrade: the client's side of the switch.
    pub client_upgrade: Option<OnUpgrade>,
    /// The credential attached, for the 401 refresh.
    pub cred: Option<Arc<Current>>,
}

impl Outgoing<'_> {
    pub fn websocket(&self) -> bool {
        self.client_upgrade.is_some()
    }
}

pub fn attach<'s>(
    shared: &'s Shared,
    ctx: &mut Ctx,
    plan: Plan<'s>,
    mut req: Request<Incoming>,
) -> Result<Outgoing<'s>, Refusal> {
    let route = match plan {
        Plan::Route(r) => Some(r),
        _ => None,
    };
    let websocket = req.headers().contains_key(header::UPGRADE);
    // The pool names the destination itself (Host, :authority); only the
    // WebSocket client needs the absolute URL.
    let uri = if websocket {
        let d = &ctx.dest;
        format!("{}://{}:{}{}", d.scheme, d.host, d.port, ctx.pq).parse::<Uri>()
    } else {
        std::mem::take(&mut ctx.pq).parse::<Uri>()
    };
    let uri = uri.map_err(|e| Refusal::malformed(format!("bad request target: {e}")))?;
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    let upgrade = websocket
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    let mut cred = None;
    match route {
        Some(r) => {
            let c = shared
                .store
                .get(&r.credential)
                .map_err(|e| Refusal::credential(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
            credential(shared, headers, r, &c).map_err(|_| {
                Refusal::credential(
                    StatusCode::BAD_GATEWAY,
                    "the credential has characters not allowed in a header",
                )
            })?;
            ctx.log.rec.fingerprint = Some(c.fingerprint.clone());
            cred = Some(c);
        }
        None => inject::strip(headers, None),
    }
    if let Some(up) = upgrade {
        headers.insert(header::UPGRADE, up);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    Ok(Outgoing {
        route,
        parts,
        uri,
        body,
        client_upgrade,
        cred,
    })
}

/// Attach a routed request's credential: the route's header, rendered
/// through its template, replacing any the client sent; then the trace
/// headers. Runs for the first try and for the 401 replay.
pub fn credential(
    shared: &Shared,
    headers: &mut HeaderMap,
    route: &Route,
    cred: &Current,
) -> Result<(), InjectError> {
    inject::inject(headers, route, &cred.value)?;
    for (k, v) in &shared.trace {
        headers.insert(k.clone(), v.clone());
    }
    Ok(())
}
