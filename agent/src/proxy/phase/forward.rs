//! Phase 5, `forward`: send the request upstream and stream the answer
//! back. Through this worker's pool (or the HTTP/1.1 client for a
//! WebSocket upgrade), within the upstream deadlines; a routed request
//! answered 401 gets one refresh of its credential and one replay when its
//! body was small enough to keep. A blind `CONNECT` tunnel is dialled and
//! copied here too.

use std::sync::atomic::Ordering;

use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::attach::{self, OutBody, Outgoing};
use super::sign;
use crate::audit;
use crate::proxy::body::Buffered;
use crate::proxy::conn::{Activity, GateHandle};
use crate::proxy::context::Ctx;
use crate::proxy::forward::{self as fwd, empty, strip_hop_by_hop, Body, Pending};
use crate::proxy::refusal::Refusal;
use crate::proxy::server::{Shared, IDLE_TIMEOUT, MAX_REPLAY_BODY, WORKER};
use crate::proxy::sigv4::Payload;
use crate::route::Destination;
use hyper::body::Incoming;

pub async fn forward(
    shared: &Shared,
    ctx: &mut Ctx,
    out: Outgoing<'_>,
) -> Result<Response<Body>, Refusal> {
    let websocket = out.websocket();
    let (route, parts, uri) = (out.route, out.parts, out.uri);
    let headers = parts.headers;
    let build = |headers: http::HeaderMap, body: Body| {
        let mut r = Request::new(body);
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = uri.clone();
        *r.version_mut() = Version::HTTP_11;
        *r.headers_mut() = headers;
        r
    };
    // Why: a body of unknown length (chunked) is read up to the bound
    // before anything is sent, so a framing error in it (found by the
    // gate) is refused before the head and its credential go upstream; a
    // routed body of known small length is kept whole to replay on 401.
    let signing = out.signing;
    let (fresh, read) = match out.body {
        OutBody::Fresh(b) => (Some(b), None),
        OutBody::Read(b) => (None, Some(b)),
    };
    let exact = fresh.as_ref().and_then(|b| b.size_hint().exact());
    let gate = parts.extensions.get::<GateHandle>().cloned();
    let buffer = !websocket
        && (exact.is_none() || (route.is_some() && exact.is_some_and(|n| n <= MAX_REPLAY_BODY)));
    let worker = WORKER.with(|w| w.get());
    let upstream = &shared.upstreams[worker % shared.upstreams.len()];
    let pool = &shared.pools[worker % shared.pools.len()];
    let dest = &ctx.dest;
    let go = |r: Request<Body>| async move {
        if websocket {
            upstream
                .h1
                .request(r)
                .await
                .map(|resp| resp.map(|b| b.map_err(Into::into).boxed_unsync()))
                .map_err(|e| upstream_error(dest, &e))
        } else {
            pool.request(dest, r)
                .await
                .map_err(|e| upstream_error(dest, e.as_ref()))
        }
    };
    // Head, total and rate bounds; Err carries the status (502 or 504).
    let log = &mut ctx.log;
    let cut = log.cut.clone();
    let (limits, cut, go) = (&shared.limits, &cut, &go);
    let send = |r: Request<Body>| crate::proxy::deadline::send(limits, cut, r, go);
    // `Ok`: read (whole, or up to the bound); `Err`: streamed as it comes.
    let read: Result<Buffered, Incoming> = match (fresh, read) {
        (_, Some(b)) => Ok(b),
        (Some(b), None) if buffer => {
            match crate::proxy::body::prebuffer(b, MAX_REPLAY_BODY).await {
                Ok(b) => Ok(b),
                Err(e) => return Err(body_failed(gate.as_ref(), &e.to_string())),
            }
        }
        (Some(b), None) => Err(b),
        (None, None) => return Err(Refusal::malformed("the request body was lost")),
    };
    let (first, kept) = match read {
        Ok(Buffered::Whole(bytes)) => {
            log.bytes_in
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            (
                build(headers.clone(), fwd::full(bytes.clone())),
                Some((headers, bytes)),
            )
        }
        Ok(Buffered::Partial(rest)) => (
            build(headers, fwd::counted(rest, log.bytes_in.clone())),
            None,
        ),
        Err(body) => (
            build(headers, fwd::counted(body, log.bytes_in.clone())),
            None,
        ),
    };
    let mut resp = match send(first).await {
        Ok(r) => r,
        Err((_, e)) if gate.as_ref().is_some_and(|g| g.refusal().is_some()) => {
            return Err(body_failed(gate.as_ref(), &e))
        }
        Err((status, e)) => return Err(Refusal::upstream(status, e)),
    };
    if resp.status() == StatusCode::UNAUTHORIZED {
        if let (Some(r), Some(c), Some((mut headers, bytes))) = (route, &out.cred, kept) {
            match shared.store.refresh(&r.credential, c.generation).await {
                // A refresh may bring back the same token (Port's one
                // active token): replaying it would only be refused again.
                Ok(fresh)
                    if fresh.generation != c.generation
                        && fresh.value.expose() != c.value.expose() =>
                {
                    // An AWS request is signed again with the fresh keys,
                    // never replayed with its old signature.
                    let again = match &signing {
                        Some(scope) => sign::resign(
                            &mut headers,
                            &parts.method,
                            scope,
                            &fresh,
                            Payload::Bytes(&bytes),
                        )
                        .is_ok(),
                        None => attach::credential(shared, &mut headers, r, &fresh).is_ok(),
                    };
                    if again {
                        log.rec.fingerprint = Some(fresh.fingerprint.clone());
                        log.rec.reason = Some(
                            "upstream answered 401; refreshed the credential and replayed once"
                                .into(),
                        );
                        resp = send(build(headers, fwd::full(bytes)))
                            .await
                            .map_err(|(status, e)| Refusal::upstream(status, e))?;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    log.rec.reason = Some(format!("upstream answered 401; refresh failed: {e}"))
                }
            }
        }
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(on_client) = out.client_upgrade {
            let on_up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (on_client.await, on_up.await) {
                    let mut c = TokioIo::new(c);
                    let mut u = TokioIo::new(u);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, empty()));
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = body.map_err(Into::into).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

fn upstream_error(dest: &Destination, e: &(dyn std::error::Error + 'static)) -> String {
    format!(
        "upstream {}://{}:{}: {}",
        dest.scheme,
        dest.host,
        dest.port,
        crate::http::error_chain(e)
    )
}

/// The request body could not be read: a framing error the gate found
/// (its status and rule, and the connection closes), or the client went.
fn body_failed(gate: Option<&GateHandle>, err: &str) -> Refusal {
    match gate.and_then(GateHandle::refusal) {
        Some(r) => Refusal::client(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
            format!("request framing: {}", r.rule),
        )
        .closing(),
        None => Refusal::client(
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {err}"),
        ),
    }
}

/// A blind tunnel's upstream connection: direct, or a CONNECT through the
/// corporate proxy (its `https` settings: what a client tunnels is most
/// often TLS).
pub async fn dial(shared: &Shared, ctx: &Ctx) -> Result<TcpStream, Refusal> {
    let d = &ctx.dest;
    shared
        .dial
        .dial(true, &d.host, d.port)
        .await
        .map_err(|e| Refusal::upstream(StatusCode::BAD_GATEWAY, e.to_string()))
}

/// Copy a blind tunnel both ways until either side ends or it idles; the
/// CONNECT's record is written when it closes, with the bytes moved.
pub async fn tunnel(on: OnUpgrade, mut upstream: TcpStream, mut log: Pending) {
    log.rec.decision = audit::Decision::Tunnelled;
    log.rec.status = 200;
    if let Ok(up) = on.await {
        let (mut client, activity) = Activity::new(TokioIo::new(up));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Ok((a, b)) = r {
                    log.bytes_in.store(a, Ordering::Relaxed);
                    log.bytes_out.store(b, Ordering::Relaxed);
                }
            }
            _ = activity.idle(IDLE_TIMEOUT) => {
                log.rec.reason = Some(format!("tunnel idle for {}s; closed", IDLE_TIMEOUT.as_secs()));
            }
        }
    }
}
