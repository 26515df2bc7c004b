//! Re-originating a request upstream: hop-by-hop cleanup, the client for
//! WebSocket upgrades (the pool in `pool.rs` carries the rest), streaming
//! bodies with byte counts, and the audit record written when the response
//! body ends or is dropped (pingora's "logging" phase: it always runs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::audit::{Audit, Decision, Record};
use crate::outbound::connect::Connector;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|n| match n {}).boxed_unsync()
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove the hop-by-hop headers, every header the `Connection` header
/// names, `Keep-Alive`, and every `Proxy-*` header (they are for lanyard,
/// or for no one; never for the upstream).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    named.extend(
        h.keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned(),
    );
    for n in named.iter().chain(HOP_BY_HOP) {
        h.remove(n);
    }
    h.remove("keep-alive");
}

/// Why a response with both framings is refused (RFC 9112 §6.3: a sender
/// must not send both; a proxy that forwards one invites a desync).
pub const TWO_WAYS: &str = "the upstream's response has both Content-Length and \
     Transfer-Encoding (ambiguous framing); refused, and its connection closed";

/// Both `Content-Length` and `Transfer-Encoding` on one response.
pub fn framed_two_ways(h: &HeaderMap) -> bool {
    h.contains_key(header::CONTENT_LENGTH) && h.contains_key(header::TRANSFER_ENCODING)
}

/// The upstream client for WebSocket upgrades (HTTP/1.1 only, so the
/// upgrade can happen). Every other request goes through `pool::Pool`.
#[derive(Clone)]
pub struct Upstream {
    pub h1: Client<HttpsConnector<Connector>, Body>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

impl Upstream {
    /// Plain `ws://` through a corporate proxy goes in a CONNECT tunnel
    /// (an upgrade through a forwarding proxy is not dependable).
    pub fn new(tls: rustls::ClientConfig, http: Connector) -> Upstream {
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .timer(hyper_util::rt::TokioTimer::new())
            .build(conn);
        Upstream { h1 }
    }
}

/// Bytes counted while a body streams.
pub fn counted<B>(body: B, counter: Arc<AtomicU64>) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_frame(move |f| {
        if let Some(d) = f.data_ref() {
            counter.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        f
    })
    .map_err(Into::into)
    .boxed_unsync()
}

/// The reason on the record of a request that never got an answer.
pub const NO_ANSWER: &str = "no answer was sent: the client went away (or the proxy stopped) first";

/// An audit record in flight. It is written exactly once, when dropped:
/// after the response body ended, or when the client went away.
pub struct Pending {
    audit: Arc<Audit>,
    pub rec: Record,
    started: Instant,
    pub bytes_in: Arc<AtomicU64>,
    pub bytes_out: Arc<AtomicU64>,
    /// Set when the response was cut after its head went out.
    pub cut: super::deadline::Cut,
    /// Cleared when the record is handed over (an intercepted CONNECT's
    /// requests are recorded one by one instead).
    armed: bool,
}

impl Pending {
    pub fn new(audit: Arc<Audit>, rec: Record) -> Pending {
        Pending {
            audit,
            rec,
            started: Instant::now(),
            bytes_in: Arc::default(),
            bytes_out: Arc::default(),
            cut: Arc::default(),
            armed: true,
        }
    }

    /// Write nothing: the requests inside an intercepted tunnel are
    /// recorded instead of the CONNECT that opened it.
    pub fn disarm(mut self) {
        self.armed = false;
    }

    /// Attach to a response: the record is written when its body is done.
    pub fn finish(mut self, status: StatusCode, resp: Response<Body>) -> Response<Body> {
        self.rec.status = status.as_u16();
        let out = self.bytes_out.clone();
        let (parts, body) = resp.into_parts();
        let guard = self;
        let body = body
            .map_frame(move |f| {
                if let Some(d) = f.data_ref() {
                    out.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                // Why: the closure owns the guard, so the record is written
                // when hyper drops the body (done or aborted), not earlier.
                let _ = &guard;
                f
            })
            .boxed_unsync();
        Response::from_parts(parts, body)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.rec.duration_ms = self.started.elapsed().as_millis() as u64;
        self.rec.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        self.rec.bytes_out = self.bytes_out.load(Ordering::Relaxed);
        if self.rec.status == 0 && self.rec.reason.is_none() {
            // Dropped before an answer: the handler was dropped mid-request.
            self.rec.reason = Some(NO_ANSWER.into());
        }
        if let Some(why) = self.cut.get() {
            self.rec.decision = Decision::Failed;
            self.rec.reason = Some(match self.rec.reason.take() {
                Some(before) => format!("{before}; then the response was cut: {why}"),
                None => format!("the response was cut: {why}"),
            });
        }
        self.audit.record(&self.rec);
    }
}

/// A JSON refusal that names its rule, in the body and in a header. With
/// `close`, the connection ends after it (ambiguous input).
pub fn refusal(status: StatusCode, rule: &str, close: bool) -> Response<Body> {
    let body = serde_json::json!({
        "error": format!("lanyard refused this request ({})", status.as_u16()),
        "rule": rule,
    });
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let ascii = super::refusal::rule_header(rule);
    if let Ok(v) = HeaderValue::from_str(&ascii) {
        h.insert("x-lanyard-rule", v);
    }
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

pub fn decision_for(status: StatusCode) -> Decision {
    if status == StatusCode::BAD_GATEWAY
        || status == StatusCode::SERVICE_UNAVAILABLE
        || status == StatusCode::GATEWAY_TIMEOUT
    {
        Decision::Failed
    } else {
        Decision::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert("proxy-foo", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn refusal_names_the_rule_in_header_and_body() {
        let r = refusal(
            StatusCode::FORBIDDEN,
            "method DELETE is not allowed\r\nx: y",
            false,
        );
        assert_eq!(r.status(), 403);
        let h = r.headers().get("x-lanyard-rule").expect("rule header");
        assert_eq!(h, "method DELETE is not allowed??x: y");
    }
}
