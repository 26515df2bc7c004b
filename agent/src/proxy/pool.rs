//! Upstream connections for the proxy's hot path. Each worker thread has
//! its own pool, so a connection is only ever used by the thread whose
//! event loop drives it: no lock is contended and no request hops threads.
//!
//! An HTTP/1.1 connection goes back to its pool when its response body has
//! ended (a body dropped early closes it, since its state is unknown); an
//! HTTP/2 connection is shared by every request to its destination. A
//! request that a reused connection could not even start sending (the
//! server closed it while idle) is retried once on a new connection.
//!
//! Why not hyper-util's legacy client: it spawns a task per request to put
//! the connection back and races a new connect against every checkout;
//! both showed in profiles at 64 connections (bench/RESULTS.md). WebSocket
//! upgrades still use it (`forward::Upstream::h1`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service as _;

use super::forward::{Body, BoxError};
use crate::outbound::connect::Connector;
use crate::route::{Destination, Scheme};

/// Why: an idle upstream connection older than this is likely closed by
/// the server already (nginx's default keepalive_timeout is 75 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Why: bounds what a burst leaves behind; beyond it connections close.
pub const MAX_IDLE_PER_DESTINATION: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    scheme: Scheme,
    host: String,
    port: u16,
}

impl Key {
    fn of(d: &Destination) -> Key {
        Key {
            scheme: d.scheme,
            host: d.host.clone(),
            port: d.port,
        }
    }

    /// `host[:port]`, the port only when it is not the scheme's default
    /// (`Scheme::authority`'s spelling, without `format!`: once per request).
    fn authority(&self) -> String {
        let mut s = String::with_capacity(self.host.len() + 6);
        s.push_str(&self.host);
        if self.port != self.scheme.default_port() {
            s.push(':');
            s.push_str(itoa::Buffer::new().format(self.port));
        }
        s
    }
}

enum Conn {
    /// With the proxy's `Proxy-Authorization` (`Some(None)`: none needed)
    /// when the connection is to the corporate proxy, which takes
    /// absolute-form requests for plain `http`.
    H1(http1::SendRequest<Body>, Via),
    H2(http2::SendRequest<Body>),
}

/// `Some(auth)` for a connection to the corporate proxy.
type Via = Option<Option<HeaderValue>>;

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One worker's upstream connections.
pub struct Pool {
    connector: HttpsConnector<Connector>,
    /// The same dialler, asked whether plain `http` goes to the proxy.
    dial: Connector,
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Pool {
    pub fn new(tls: rustls::ClientConfig, dial: Connector) -> Arc<Pool> {
        let dial = dial.forwarding_plain();
        let http = dial.clone();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Arc::new(Pool {
            connector,
            dial,
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// Send `req` (its URI's path and query are used; its Host header is
    /// set from `dest`) and return the response.
    pub async fn request(
        self: &Arc<Self>,
        dest: &Destination,
        req: Request<Body>,
    ) -> Result<Response<Body>, BoxError> {
        let key = Key::of(dest);
        let req = self.prepare(&key, req)?;
        if let Some(conn) = self.checkout(&key) {
            match self.send(&key, conn, req).await {
                Ok(r) => return Ok(r),
                // The request never left: the idle connection had been closed.
                Err(Failed::NotSent(req, _)) => return self.send_new(&key, *req).await,
                Err(Failed::Other(e)) => return Err(e),
            }
        }
        self.send_new(&key, req).await
    }

    /// The Host header names the destination; the request-target is set
    /// per protocol in `send`.
    fn prepare(&self, key: &Key, mut req: Request<Body>) -> Result<Request<Body>, BoxError> {
        let host = HeaderValue::from_str(&key.authority())?;
        req.headers_mut().insert(header::HOST, host);
        Ok(req)
    }

    fn checkout(&self, key: &Key) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        while let Some(i) = list.pop() {
            let fresh = now.duration_since(i.since) < IDLE_TIMEOUT;
            match i.conn {
                Conn::H1(s, via) if fresh && !s.is_closed() => return Some(Conn::H1(s, via)),
                Conn::H2(s) if fresh && !s.is_closed() => {
                    // Shared: it stays in the pool for the next request.
                    let out = s.clone();
                    list.push(Idle {
                        conn: Conn::H2(s),
                        since: i.since,
                    });
                    return Some(Conn::H2(out));
                }
                _ => {}
            }
        }
        None
    }

    fn checkin(&self, key: Key, conn: Conn) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_DESTINATION {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn send_new(
        self: &Arc<Self>,
        key: &Key,
        req: Request<Body>,
    ) -> Result<Response<Body>, BoxError> {
        let conn = self.connect(key).await?;
        match self.send(key, conn, req).await {
            Ok(r) => Ok(r),
            Err(Failed::NotSent(_, e)) | Err(Failed::Other(e)) => Err(e),
        }
    }

    async fn connect(self: &Arc<Self>, key: &Key) -> Result<Conn, BoxError> {
        let uri: Uri = format!("{}://{}:{}/", key.scheme, key.host, key.port).parse()?;
        let mut connector = self.connector.clone();
        let via = (key.scheme == Scheme::Http)
            .then(|| {
                self.dial
                    .upstream_proxy()
                    .via(false, &key.host, key.port)
                    .map(|p| p.auth().cloned())
            })
            .flatten();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let io = connector.call(uri).await?;
        if io.connected().is_negotiated_h2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("upstream HTTP/2 connection ended: {e}");
                }
            });
            let conn = Conn::H2(sender);
            // Shared from the start: later requests find it in the pool.
            if let Conn::H2(s) = &conn {
                self.checkin(key.clone(), Conn::H2(s.clone()));
            }
            Ok(conn)
        } else {
            let (sender, conn) = http1::Builder::new().handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("upstream HTTP/1.1 connection ended: {e}");
                }
            });
            Ok(Conn::H1(sender, via))
        }
    }

    async fn send(
        self: &Arc<Self>,
        key: &Key,
        conn: Conn,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Failed> {
        match conn {
            Conn::H1(mut s, via) => {
                if let Err(e) = s.ready().await {
                    return Err(Failed::NotSent(Box::new(req), e.into()));
                }
                match &via {
                    // To the corporate proxy: absolute-form, and its
                    // credentials (never the client's Proxy-* headers:
                    // they were removed as hop-by-hop).
                    Some(auth) => {
                        let uri = format!("http://{}{}", key.authority(), path_and_query(&req));
                        *req.uri_mut() = match uri.parse() {
                            Ok(u) => u,
                            Err(e) => return Err(Failed::Other(Box::new(e))),
                        };
                        if let Some(a) = auth {
                            req.headers_mut()
                                .insert(header::PROXY_AUTHORIZATION, a.clone());
                        }
                    }
                    // HTTP/1.1 wants origin-form; Host is already set.
                    None => *req.uri_mut() = Uri::from(path_and_query(&req)),
                }
                *req.version_mut() = Version::HTTP_11;
                match s.try_send_request(req).await {
                    // Why: a body framed two ways leaves the connection's
                    // next bytes ambiguous (a desync, the response-side
                    // twin of request smuggling). Dropping the response
                    // and `s` here closes the connection: it never reaches
                    // the pool.
                    Ok(resp) if super::forward::framed_two_ways(resp.headers()) => {
                        drop(resp);
                        drop(s);
                        Err(Failed::Other(super::forward::TWO_WAYS.into()))
                    }
                    Ok(resp) => Ok(resp.map(|body| {
                        ReturnOnEnd {
                            body,
                            slot: Some((self.clone(), key.clone(), s, via)),
                        }
                        .boxed()
                    })),
                    Err(mut e) => match e.take_message() {
                        Some(req) => Err(Failed::NotSent(Box::new(req), e.into_error().into())),
                        None => Err(Failed::Other(e.into_error().into())),
                    },
                }
            }
            Conn::H2(mut s) => {
                // :scheme and :authority come from the URI, built from the
                // pool key; a Host header would repeat them.
                let uri = format!(
                    "{}://{}:{}{}",
                    key.scheme,
                    key.host,
                    key.port,
                    path_and_query(&req)
                );
                *req.uri_mut() = match uri.parse() {
                    Ok(u) => u,
                    Err(e) => return Err(Failed::Other(Box::new(e))),
                };
                req.headers_mut().remove(header::HOST);
                *req.version_mut() = Version::HTTP_2;
                match s.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync())),
                    Err(mut e) => match e.take_message() {
                        Some(req) => Err(Failed::NotSent(Box::new(req), e.into_error().into())),
                        None => Err(Failed::Other(e.into_error().into())),
                    },
                }
            }
        }
    }
}

fn path_and_query(req: &Request<Body>) -> http::uri::PathAndQuery {
    req.uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
}

enum Failed {
    /// The request is handed back: it can be sent on another connection.
    NotSent(Box<Request<Body>>, BoxError),
    Other(BoxError),
}

/// An HTTP/1.1 response body that puts its connection back in the pool
/// when it has been read to the end.
struct ReturnOnEnd {
    body: Incoming,
    slot: Option<(Arc<Pool>, Key, http1::SendRequest<Body>, Via)>,
}

impl ReturnOnEnd {
    fn boxed(self) -> Body {
        self.boxed_unsync()
    }

    fn give_back(&mut self) {
        if let Some((pool, key, s, via)) = self.slot.take() {
            if !s.is_closed() {
                pool.checkin(key, Conn::H1(s, via));
            }
        }
    }
}

impl Drop for ReturnOnEnd {
    /// An empty body (204, HEAD) may never be polled.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

impl hyper::body::Body for ReturnOnEnd {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.give_back(),
            // Why: hyper stops polling a body that says it has ended.
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            // Why: a failed body leaves the connection in an unknown state.
            Poll::Ready(Some(Err(_))) => self.slot = None,
            _ => {}
        }
        r.map(|o| o.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn authority_is_spelt_as_scheme_authority() {
        for scheme in [Scheme::Http, Scheme::Https] {
            for port in [1u16, 9, 10, 80, 443, 8080, 10000, 65535] {
                for host in ["127.0.0.1", "api.example.com", "[::1]"] {
                    let k = Key {
                        scheme,
                        host: host.into(),
                        port,
                    };
                    assert_eq!(k.authority(), scheme.authority(host, port));
                }
            }
        }
    }
}
