//! The one dialler for lanyard's upstream connections: directly, or through
//! the corporate proxy (an HTTP CONNECT tunnel; for the pool's plain-HTTP
//! requests, a connection to the proxy that carries absolute-form requests).
//!
//! Why not hyper-util's `Tunnel`: it drops bytes the far end sends right
//! after the proxy's 200 (a server-first protocol through a blind tunnel,
//! e.g. SSH) and reports a refusal without its status (403 and 502 look
//! alike). The handshake below peeks, so nothing after the response head is
//! consumed, and names the status and the proxy. `NO_PROXY` matching is
//! hyper-util's (`super::UpstreamProxy::via`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tower_service::Service;

use super::{Proxy, UpstreamProxy};

/// Why: a proxy that accepts the connection but never answers the CONNECT
/// must not hold a dial forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A CONNECT answer's head larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to {dest}: {cause}")]
    Direct {
        dest: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot connect to the proxy {proxy} (from {var}) for {dest}: {cause}")]
    ToProxy {
        proxy: String,
        var: &'static str,
        dest: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the proxy {proxy} (from {var}) refused CONNECT {dest}: {status}{hint}")]
    Refused {
        proxy: String,
        var: &'static str,
        dest: String,
        status: String,
        hint: &'static str,
    },
    #[error("the proxy {proxy} (from {var}) sent no valid answer to CONNECT {dest}: {why}")]
    Garbled {
        proxy: String,
        var: &'static str,
        dest: String,
        why: String,
    },
}

/// Dials upstream destinations, through the corporate proxy when it
/// applies. Cheap to clone; a tower `Service<Uri>` for hyper-rustls.
#[derive(Clone)]
pub struct Connector {
    proxy: Arc<UpstreamProxy>,
    tcp: HttpConnector,
    /// Plain `http` through the proxy: connect to the proxy itself (the
    /// caller sends absolute-form requests) instead of a CONNECT tunnel.
    forward_plain: bool,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

impl Connector {
    pub fn new(proxy: Arc<UpstreamProxy>) -> Connector {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        Connector {
            proxy,
            tcp,
            forward_plain: false,
        }
    }

    /// For the pool, which writes absolute-form requests to the proxy.
    pub fn forwarding_plain(mut self) -> Connector {
        self.forward_plain = true;
        self
    }

    pub fn upstream_proxy(&self) -> &Arc<UpstreamProxy> {
        &self.proxy
    }

    /// A TCP stream to `host:port` (a bracketed or bare IPv6 literal is
    /// fine): direct, or a tunnel through the proxy for `https` (and for
    /// `http` unless `forwarding_plain`, when it is the proxy itself).
    pub async fn dial(&self, https: bool, host: &str, port: u16) -> Result<TcpStream, DialError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let authority = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        match self.proxy.via(https, bare, port) {
            None => {
                let uri: Uri =
                    format!("http://{authority}/")
                        .parse()
                        .map_err(|e| DialError::Direct {
                            dest: authority.clone(),
                            cause: Box::new(e),
                        })?;
                let io = self
                    .tcp
                    .clone()
                    .call(uri)
                    .await
                    .map_err(|e| DialError::Direct {
                        dest: authority.clone(),
                        cause: Box::new(e),
                    })?;
                let stream = io.into_inner();
                if bare.eq_ignore_ascii_case("localhost") {
                    on_loopback(&stream, &authority)?;
                }
                Ok(stream)
            }
            Some(p) => {
                let io = self
                    .tcp
                    .clone()
                    .call(p.uri())
                    .await
                    .map_err(|e| DialError::ToProxy {
                        proxy: p.shown(),
                        var: p.var,
                        dest: authority.clone(),
                        cause: Box::new(e),
                    })?;
                let stream = io.into_inner();
                if !https && self.forward_plain {
                    return Ok(stream);
                }
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, p, &authority))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(DialError::Garbled {
                        proxy: p.shown(),
                        var: p.var,
                        dest: authority,
                        why: format!("no answer within {}s", HANDSHAKE_TIMEOUT.as_secs()),
                    }),
                }
            }
        }
    }
}

/// Why: plain-http routes are allowed only to loopback hosts, and the name
/// `localhost` is one of them (RFC 6761 §6.3). A resolver that maps it
/// elsewhere (a hosts file, a DNS answer) must not get a credential sent
/// in the clear to that address; the connection is dropped unused.
fn on_loopback(stream: &TcpStream, authority: &str) -> Result<(), DialError> {
    let refused = |why: String| DialError::Direct {
        dest: authority.to_owned(),
        cause: why.into(),
    };
    match stream.peer_addr() {
        Ok(peer) if peer.ip().is_loopback() => Ok(()),
        Ok(peer) => Err(refused(format!(
            "localhost resolved to {}, which is not a loopback address",
            peer.ip()
        ))),
        Err(e) => Err(refused(format!("the connected address is unknown: {e}"))),
    }
}

/// `CONNECT authority`, then the proxy's answer head, read without taking
/// a byte beyond it.
async fn handshake(mut s: TcpStream, p: &Proxy, authority: &str) -> Result<TcpStream, DialError> {
    let garbled = |why: String| DialError::Garbled {
        proxy: p.shown(),
        var: p.var,
        dest: authority.to_owned(),
        why,
    };
    let io = |e: std::io::Error| garbled(e.to_string());
    let mut head = zeroize::Zeroizing::new(format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    ));
    if let Some(a) = p.auth() {
        head.push_str("Proxy-Authorization: ");
        head.push_str(a.to_str().unwrap_or_default());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.map_err(io)?;
    drop(head);
    // Consumed bytes (all part of the head) and the ones peeked after them.
    let mut got: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.peek(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Err(garbled("the connection closed before an answer".into()));
        }
        let mut all = got.clone();
        all.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&all) {
            Ok(httparse::Status::Complete(len)) => {
                // Take exactly the head; what follows is the tunnel's.
                let mut rest = vec![0u8; len - got.len()];
                s.read_exact(&mut rest).await.map_err(io)?;
                let code = resp.code.unwrap_or(0);
                if (200..300).contains(&code) {
                    return Ok(s);
                }
                let reason: String = resp
                    .reason
                    .unwrap_or("")
                    .chars()
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .take(80)
                    .collect();
                let hint = match (code, p.auth().is_some()) {
                    (401 | 407, true) => {
                        " (the proxy did not accept the user and password in the proxy URL)"
                    }
                    (401 | 407, false) => {
                        " (the proxy wants a user and password: http://user:password@host:port)"
                    }
                    _ => "",
                };
                return Err(DialError::Refused {
                    proxy: p.shown(),
                    var: p.var,
                    dest: authority.to_owned(),
                    status: format!("{code} {reason}").trim_end().to_owned(),
                    hint,
                });
            }
            Ok(httparse::Status::Partial) => {
                if all.len() > MAX_HEAD {
                    return Err(garbled(format!("an answer head over {MAX_HEAD} bytes")));
                }
                // All of it is head: consume it and wait for more.
                let mut part = vec![0u8; n];
                s.read_exact(&mut part).await.map_err(io)?;
                got.extend_from_slice(&part);
            }
            Err(e) => return Err(garbled(format!("not HTTP ({e})"))),
        }
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let https = dst.scheme_str() == Some("https");
            let host = dst.host().unwrap_or_default().to_owned();
            let port = dst.port_u16().unwrap_or(if https { 443 } else { 80 });
            this.dial(https, &host, port).await.map(TokioIo::new)
        })
    }
}
