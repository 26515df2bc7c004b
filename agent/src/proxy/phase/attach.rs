//! Phase 4, `attach`: the request as it will go upstream. Its head is
//! rebuilt (target, hop-by-hop and `Proxy-*` headers removed), then, for
//! a routed request, [`credential`] puts the route's credential in
//! (rendered through its template) and the trace headers; a request
//! passed through loses every credential-looking header instead.
//!
//! An AWS route's request gets no header: the next step, [`super::sign`],
//! removes the client's signature (refusing what cannot be re-signed) and
//! signs the request once its body is read. Any other request that carries the job's placeholder AWS
//! keys is refused: the job is trying to use them elsewhere; so is one
//! carrying a placeholder Azure token anywhere but in `Authorization` on
//! a route of its own entra credential (which replaces it). Key Vault's
//! SDK's body-less challenge request goes without the token
//! ([`crate::proxy::azure_mi::Endpoint::challenge_probe`]).

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

/// The request body: as the client sends it, or already read (an AWS
/// route's, to hash it).
pub enum OutBody {
    Fresh(Incoming),
    Read(crate::proxy::body::Buffered),
}

/// The upstream request under construction.
pub struct Outgoing<'s> {
    /// `None`: passed through with no credential.
    pub route: Option<&'s Route>,
    /// The client's request head; its headers are the outgoing ones.
    pub parts: Parts,
    pub uri: Uri,
    pub body: OutBody,
    /// An AWS route's request: what it is signed for (set by `sign`).
    pub signing: Option<crate::proxy::sigv4::Scope>,
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

/// The audit reason of a Key Vault challenge probe sent without the token.
const KV_PROBE: &str = "Key Vault SDK's body-less challenge request: sent without the token so the vault's 401 challenge reaches the SDK, which retries with its placeholder";

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
    let method = parts.method.clone();
    let headers = &mut parts.headers;
    let upgrade = websocket
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    let mut cred = None;
    if route.is_none_or(|r| r.aws.is_none()) {
        if let Some(p) = &shared.aws {
            if p.seen_in(headers, uri.query()) {
                return Err(Refusal::policy(PLACEHOLDER_ELSEWHERE));
            }
        }
    }
    if let Some(az) = &shared.azure {
        if az.misused(headers, uri.query(), route) {
            return Err(Refusal::policy(
                crate::proxy::azure_mi::PLACEHOLDER_ELSEWHERE,
            ));
        }
    }
    if let Some(g) = &shared.gce {
        if g.misused(headers, uri.query(), route) {
            return Err(Refusal::policy(
                crate::proxy::gce_metadata::PLACEHOLDER_ELSEWHERE,
            ));
        }
    }
    match route {
        Some(r) if r.aws.is_some() => {
            let c = shared
                .store
                .get(&r.credential)
                .map_err(|e| Refusal::credential(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
            inject::strip(headers, None);
            for (k, v) in &shared.trace {
                headers.insert(k.clone(), v.clone());
            }
            ctx.log.rec.fingerprint = Some(c.fingerprint.clone());
            cred = Some(c);
        }
        Some(r)
            if shared
                .azure
                .as_ref()
                .is_some_and(|az| az.challenge_probe(&method, headers, r)) =>
        {
            inject::strip(headers, None);
            ctx.log.rec.decision = crate::audit::Decision::Tunnelled;
            ctx.log.rec.reason = Some(KV_PROBE.to_owned());
        }
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
        body: OutBody::Fresh(body),
        signing: None,
        client_upgrade,
        cred,
    })
}

/// The rule for the job's placeholder AWS keys sent to any host that is
/// not an AWS route. The placeholders themselves are never quoted.
pub const PLACEHOLDER_ELSEWHERE: &str = "the request carries the job's placeholder AWS credentials (from AWS_ACCESS_KEY_ID / AWS_SESSION_TOKEN), which only lanyard's AWS routes accept; this host is not one";

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
