//! The listener: the accept loop (one per worker thread), each client
//! connection (the same-user check before any HTTP, then hyper behind the
//! strict request gate), and TLS interception for a routed `CONNECT`,
//! whose requests go through the same phases. Every request is handed to
//! [`phase::handle`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{gated_service, http1_server, Activity};
use super::context::{audit_path, loggable_path, record, truncate};
use super::forward::{Body, Pending};
use super::framing;
use super::phase::{self, admit};
use super::refusal::Refusal;
use super::server::{Shared, DRAIN_GRACE, IDLE_TIMEOUT};
use crate::accept::Backoff;
use crate::audit;
use crate::route::{parse_authority, Destination, Scheme};

/// Why: a TLS client that connects and stalls must not hold a slot.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the accept loop needs of a listener (tests make accept fail).
pub trait Accept {
    type Conn;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Conn, SocketAddr)>>;
}

impl Accept for TcpListener {
    type Conn = TcpStream;
    fn accept(&self) -> impl Future<Output = std::io::Result<(TcpStream, SocketAddr)>> {
        TcpListener::accept(self)
    }
}

/// Accept until `cancel`, at most as many open connections as `limit` has
/// permits; `serve` gets each connection and its permit.
pub async fn accept_loop<L: Accept>(
    listener: L,
    cancel: CancellationToken,
    limit: Arc<Semaphore>,
    mut serve: impl FnMut(L::Conn, SocketAddr, OwnedSemaphorePermit),
) {
    let mut backoff = Backoff::default();
    loop {
        // Why: waiting for a permit before accepting makes the cap real:
        // excess clients queue in the kernel's backlog, not in memory.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = cancel.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cancel.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.reset();
                serve(stream, peer, permit);
            }
            Err(e) => {
                drop(permit);
                let wait = backoff.after(&e);
                tracing::warn!("proxy: accept failed: {e}; next try in {wait:?}");
                if !wait.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// One worker's accept loop on the proxy's listener.
pub async fn serve(
    listener: TcpListener,
    cancel: CancellationToken,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    let c = cancel.clone();
    accept_loop(listener, c, limit, |stream, peer, permit| {
        let shared = shared.clone();
        let cancel = cancel.clone();
        let t2 = tracker.clone();
        tracker.spawn(async move {
            let _permit = permit;
            connection(stream, peer, shared, cancel, t2).await;
        });
    })
    .await
}

/// Raw refusal before any HTTP: another user's socket.
async fn refuse_raw(mut stream: TcpStream, shared: &Shared, peer: SocketAddr, r: Refusal) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::json!({ "error": "lanyard refused this connection", "rule": r.rule })
        .to_string();
    let resp = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        r.status.as_u16(),
        r.status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(resp.as_bytes())).await;
    let mut rec = record(&Method::GET, "tcp", &peer.ip().to_string(), peer.port(), "");
    rec.method = "-".into();
    r.audit(&mut rec);
    shared.audit.record(&rec);
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    if let Err(r) = admit::connection(&shared, peer) {
        return refuse_raw(stream, &shared, peer, r).await;
    }
    let _ = stream.set_nodelay(true);
    let (io, activity) = Activity::new(stream);
    let (io, verdicts) = io.gated();
    let refuse = {
        let shared = shared.clone();
        move |refusal, req: &Request<Incoming>| gate_refusal(&shared, None, refusal, req)
    };
    let svc = gated_service(
        verdicts,
        // Why the peer is an argument and not a request extension: inserting
        // an extension here made hyper copy the whole handler future on each
        // request (+20k instructions per request, bench/instructions.sh).
        move |req| phase::handle(shared.clone(), tracker.clone(), peer, req),
        refuse,
    );
    let conn = http1_server()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("proxy: connection from {peer}: {e}");
            }
        }
        _ = activity.idle(IDLE_TIMEOUT) => {
            tracing::debug!("proxy: connection from {peer} idle for {}s; closed", IDLE_TIMEOUT.as_secs());
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_GRACE, conn.as_mut()).await;
        }
    }
}

/// The answer to a request the gate refused: its status, its rule, one
/// audit record with the method and path as far as they could be read
/// (escaped), and the connection closes. `tunnel` is the intercepted
/// destination, `None` on the plain listener.
fn gate_refusal(
    shared: &Shared,
    tunnel: Option<&Destination>,
    r: framing::Refusal,
    req: &Request<Incoming>,
) -> Response<Body> {
    // A head refusal carries what was read of the head; the request hyper
    // saw is the sentinel. A body refusal belongs to the real request.
    let (method, target) = if r.method.is_empty() {
        (req.method().as_str().to_owned(), req.uri().to_string())
    } else {
        (r.method, r.target)
    };
    let path = loggable_path(&audit::escape_controls(&audit_path(&target)));
    let mut rec = match tunnel {
        Some(d) => record(&Method::GET, "https", &d.host, d.port, &path),
        None => record(
            &Method::GET,
            "http",
            &shared.local_ip,
            shared.local.port(),
            &path,
        ),
    };
    rec.method = audit::escape_controls(&truncate(&method, 32));
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    Refusal::client(status, format!("request framing: {}", r.rule))
        .closing()
        .answer(Pending::new(shared.audit.clone(), rec))
}

/// TLS interception for a routed host: the SNI must agree with the CONNECT
/// authority, and every request inside must agree again (`resolve`). The
/// CONNECT's record (`log`) is written only if the tunnel fails to open.
pub async fn intercept(
    shared: Arc<Shared>,
    on: hyper::upgrade::OnUpgrade,
    dest: Destination,
    mut log: Pending,
) {
    let up = match on.await {
        Ok(up) => up,
        Err(e) => {
            log.disarm();
            return tracing::debug!("proxy: CONNECT upgrade failed: {e}");
        }
    };
    let mut deny_tls = |reason: String| log.rec.reason = Some(reason);
    let (io, activity) = Activity::new(TokioIo::new(up));
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return deny_tls(format!("TLS handshake: {e}")),
        Err(_) => return deny_tls("TLS handshake timed out".into()),
    };
    // Why: a leaf is presented only for the name the client asked for and
    // the CONNECT named. An address has no SNI (RFC 6066; rustls reads an
    // address sent as SNI as none), so only an IP route goes without one.
    let ip_route = dest
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    match start.client_hello().server_name() {
        Some(sni) => {
            let agrees = !sni.contains(':')
                && parse_authority(Scheme::Https, sni).is_ok_and(|d| d.host == dest.host);
            if !agrees {
                return deny_tls(format!(
                    "TLS SNI {:?} does not match the CONNECT host {}",
                    audit::escape_controls(sni),
                    dest.host
                ));
            }
        }
        None if ip_route => {}
        None => {
            return deny_tls(format!(
                "the TLS ClientHello names no server (no SNI, or an address as SNI); \
                 CONNECT {} needs that name as SNI",
                dest.host
            ))
        }
    }
    let cfg = match shared.ca.server_config(&dest.host) {
        Ok(c) => c,
        Err(e) => return deny_tls(e.to_string()),
    };
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, start.into_stream(cfg)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return deny_tls(format!("TLS handshake: {e}")),
        Err(_) => return deny_tls("TLS handshake timed out".into()),
    };
    log.disarm();
    // Why: only HTTP/1.1 is offered inside a tunnel (tls.rs), so every
    // request there passes the same strict gate as the plain listener.
    let (tls, verdicts) = Activity::new(tls).0.gated();
    let svc = gated_service(
        verdicts,
        {
            let shared = shared.clone();
            let dest = dest.clone();
            move |req| phase::handle_in_tunnel(shared.clone(), dest.clone(), req)
        },
        move |refusal, req| gate_refusal(&shared, Some(&dest), refusal, req),
    );
    let conn = http1_server()
        .serve_connection(TokioIo::new(tls), svc)
        .with_upgrades();
    tokio::select! {
        _ = conn => {}
        _ = activity.idle(IDLE_TIMEOUT) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::io::{Error, ErrorKind};
    use tokio::time::Instant;

    /// A listener whose accepts fail (or succeed) as scripted, noting when
    /// each was tried; once the script is done it cancels the loop.
    struct Scripted {
        script: RefCell<Vec<std::io::Result<()>>>,
        tries: RefCell<Vec<Instant>>,
        cancel: CancellationToken,
    }

    impl Accept for &Scripted {
        type Conn = ();
        fn accept(&self) -> impl Future<Output = std::io::Result<((), SocketAddr)>> {
            self.tries.borrow_mut().push(Instant::now());
            let next = self.script.borrow_mut().pop();
            if next.is_none() {
                self.cancel.cancel();
            }
            async move {
                match next {
                    Some(r) => r.map(|()| ((), SocketAddr::from(([127, 0, 0, 1], 1)))),
                    None => std::future::pending().await,
                }
            }
        }
    }

    fn emfile() -> std::io::Result<()> {
        Err(Error::from_raw_os_error(nix::libc::EMFILE))
    }

    /// Run the loop over `script` (in order) on paused time; the gaps
    /// between tries and how many connections were served.
    async fn run(mut script: Vec<std::io::Result<()>>) -> (Vec<Duration>, usize) {
        script.reverse();
        let cancel = CancellationToken::new();
        let l = Scripted {
            script: RefCell::new(script),
            tries: RefCell::default(),
            cancel: cancel.clone(),
        };
        let tries = &l.tries;
        let mut served = 0;
        let limit = Arc::new(Semaphore::new(4));
        accept_loop(&l, cancel, limit, |(), _, _| served += 1).await;
        let t = tries.borrow();
        (t.windows(2).map(|w| w[1] - w[0]).collect(), served)
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_instead_of_spinning() {
        // Out of descriptors five times: 5, 10, 20, 40, 80 ms apart; an
        // accept that works starts the wait over at 5 ms.
        let (gaps, served) = run(vec![
            emfile(),
            emfile(),
            emfile(),
            emfile(),
            emfile(),
            Ok(()),
            emfile(),
        ])
        .await;
        let ms = |n| Duration::from_millis(n);
        assert_eq!(gaps, [ms(5), ms(10), ms(20), ms(40), ms(80), ms(0), ms(5)]);
        assert_eq!(served, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_stops_at_one_second_and_a_failed_connection_is_retried_at_once() {
        let mut b = Backoff::default();
        let e = Error::from_raw_os_error(nix::libc::ENFILE);
        let waits: Vec<Duration> = (0..12).map(|_| b.after(&e)).collect();
        assert_eq!(waits[0], crate::accept::FIRST);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(waits[11], crate::accept::MAX);
        let (gaps, _) = run(vec![
            Err(ErrorKind::ConnectionAborted.into()),
            Err(ErrorKind::ConnectionAborted.into()),
        ])
        .await;
        assert_eq!(gaps, [Duration::ZERO, Duration::ZERO]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_the_loop_during_a_backoff() {
        let cancel = CancellationToken::new();
        let l = Scripted {
            // Every accept fails; the loop must still end when cancelled.
            script: RefCell::new((0..1000).map(|_| emfile()).collect()),
            tries: RefCell::default(),
            cancel: CancellationToken::new(),
        };
        let started = Instant::now();
        let stop = cancel.clone();
        let limit = Arc::new(Semaphore::new(1));
        tokio::join!(accept_loop(&l, cancel, limit, |(), _, _| {}), async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop.cancel();
        });
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        // 5 + 10 + 20 + 40 + 80 + 160 = 315 ms; the seventh wait (320 ms)
        // was cut.
        assert_eq!(l.tries.borrow().len(), 7);
    }
}
