//! The request path, as phases over one [`Ctx`], each returning
//! `Result<_, Refusal>`; read them in this order:
//!
//! 1. [`admit`]: the job's user, no browser page, the proxy secret;
//! 2. [`resolve`]: forward, reverse or CONNECT → one canonical
//!    destination (and the self-loop check);
//! 3. [`decide`]: route, path, method, identity, WebSocket, egress;
//! 4. [`attach`]: the upstream head, the credential through its template
//!    (an AWS route's client signature removed instead), then [`sign`]:
//!    an AWS route's body read and the request signed with SigV4;
//! 5. [`forward`]: pool, deadlines, 401 refresh and replay.
//!
//! [`handle`] runs them. A refusal from any phase is answered by
//! [`Refusal::answer`]; the audit record is the context's drop guard.

pub mod admit;
pub mod attach;
pub mod decide;
pub mod forward;
pub mod resolve;
pub mod sign;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use super::context::Ctx;
use super::forward::{empty, Body};
use super::refusal::Refusal;
use super::server::Shared;
use crate::route::Destination;
use decide::Plan;

/// How a request that was not refused ends.
enum Done {
    /// The upstream's answer; the record is written when its body ends.
    Answer(Response<Body>),
    /// `CONNECT` to a routed host: TLS is intercepted once the client's
    /// side switches.
    Intercept(OnUpgrade),
    /// `CONNECT` with no route: copied blindly once the client's side
    /// switches.
    Tunnel(OnUpgrade, TcpStream),
}

/// One request on the plain listener.
pub async fn handle(
    shared: Arc<Shared>,
    tracker: TaskTracker,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut ctx = Ctx::new(&shared, req.method(), None);
    ctx.peer = Some(peer);
    match phases(&shared, &mut ctx, req).await {
        Ok(Done::Intercept(on)) => {
            let (dest, log) = (ctx.dest, ctx.log);
            tracker.spawn(super::listener::intercept(shared, on, dest, log));
            Response::new(empty())
        }
        Ok(Done::Tunnel(on, upstream)) => {
            tracker.spawn(forward::tunnel(on, upstream, ctx.log));
            Response::new(empty())
        }
        done => answer(ctx, done),
    }
}

/// One request inside the intercepted tunnel to `dest`.
pub async fn handle_in_tunnel(
    shared: Arc<Shared>,
    dest: Destination,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut ctx = Ctx::new(&shared, req.method(), Some(dest));
    let done = phases(&shared, &mut ctx, req).await;
    answer(ctx, done)
}

/// The answer to a request that did not open a tunnel.
fn answer(ctx: Ctx, done: Result<Done, Refusal>) -> Response<Body> {
    match done {
        Ok(Done::Answer(resp)) => {
            let status = resp.status();
            ctx.log.finish(status, resp)
        }
        // `resolve` refuses CONNECT inside a tunnel; never reached.
        Ok(Done::Intercept(_) | Done::Tunnel(..)) => {
            Refusal::malformed("CONNECT inside an intercepted tunnel").answer(ctx.log)
        }
        Err(refusal) => refusal.answer(ctx.log),
    }
}

/// The five phases, in order; the first refusal ends the request.
async fn phases(shared: &Shared, ctx: &mut Ctx, req: Request<Incoming>) -> Result<Done, Refusal> {
    let admitted = admit::request(shared, ctx, &req)?;
    if crate::proxy::aws_container::is_for(shared, ctx, &req) {
        return crate::proxy::aws_container::serve(shared, ctx, &req).map(Done::Answer);
    }
    if crate::proxy::azure_mi::is_for(shared, ctx, &req) {
        return crate::proxy::azure_mi::serve(shared, ctx, &req).map(Done::Answer);
    }
    if crate::proxy::gce_metadata::is_for(shared, ctx, &req) {
        return crate::proxy::gce_metadata::serve(shared, ctx, &req).map(Done::Answer);
    }
    resolve::resolve(shared, ctx, &req, admitted).await?;
    let plan = decide::decide(shared, ctx, &req)?;
    match plan {
        Plan::Intercept => return Ok(Done::Intercept(hyper::upgrade::on(req))),
        Plan::Tunnel => {
            let upstream = forward::dial(shared, ctx).await?;
            return Ok(Done::Tunnel(hyper::upgrade::on(req), upstream));
        }
        Plan::Route(_) | Plan::Pass => {}
    }
    let mut out = attach::attach(shared, ctx, plan, req)?;
    sign::sign(ctx, &mut out).await?;
    forward::forward(shared, ctx, out).await.map(Done::Answer)
}
