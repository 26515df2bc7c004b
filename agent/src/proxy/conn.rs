//! One client connection's plumbing, below the request path: the IO
//! wrapper that feeds the client's bytes through the strict request gate
//! (`framing`) and remembers when bytes last moved (idle timeout), hyper's
//! HTTP/1.1 server settings, and the service that answers what the gate
//! refused and tells the gate whether a protocol switch happened.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::forward::Body;
use super::framing::{Gate, Refusal, Released, Verdicts};
use super::server::{HEADER_READ_TIMEOUT, MAX_HEAD};

/// hyper's HTTP/1.1 server as every connection uses it. The gate enforces
/// the head limit (431, audited); hyper's buffer only needs room for it.
pub fn http1_server() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    // Why not hyper-util's TokioTimer: it arms a new tokio timer per request
    // (see `conn_timer`); the deadline is the same.
    b.timer(super::conn_timer::ConnTimer::default())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(super::framing::grammar::MAX_HEADERS)
        .max_buf_size(2 * MAX_HEAD);
    b
}

/// Which request of its connection this is, and the gate's verdicts: the
/// request path reads it to tell a framing error in the body from any
/// other body error.
#[derive(Clone)]
pub struct GateHandle {
    verdicts: Arc<Verdicts>,
    index: u64,
}

impl GateHandle {
    pub fn refusal(&self) -> Option<Refusal> {
        self.verdicts.refusal_for(self.index)
    }
}

/// A connection's service: a request the gate refused is answered by
/// `refuse`; every other goes to `handle`. After the answer to a request
/// that may switch protocols, the gate learns whether it did.
pub fn gated_service<H, F, R>(
    verdicts: Arc<Verdicts>,
    handle: H,
    refuse: R,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<Body>, Infallible>>,
>
where
    H: Fn(Request<Incoming>) -> F + Clone,
    F: std::future::Future<Output = Response<Body>>,
    R: Fn(Refusal, &Request<Incoming>) -> Response<Body>,
{
    let seen = AtomicU64::new(0);
    service_fn(move |mut req: Request<Incoming>| {
        let index = seen.fetch_add(1, Ordering::Relaxed);
        let verdicts = verdicts.clone();
        let connect = req.method() == Method::CONNECT;
        req.extensions_mut().insert(GateHandle {
            verdicts: verdicts.clone(),
            index,
        });
        // Ok: answered at once (refused by the gate); Err: to be handled.
        let answer = match verdicts.refusal_for(index) {
            Some(r) => Ok(refuse(r, &req)),
            None => Err(req),
        };
        // Why: the handler's future (tens of kilobytes of state machine) is
        // created inside this block, on its first poll, and boxed: hyper
        // moves this block into its connection state once per request, and
        // whether the compiler builds a large future in place or copies it
        // changed with unrelated edits (seen as +20k instructions per
        // request in bench/instructions.sh). One allocation is cheaper
        // than that copy and does not depend on the optimiser.
        let handle = handle.clone();
        async move {
            let resp = match answer {
                Ok(r) => r,
                Err(req) => Box::pin(handle(req)).await,
            };
            let s = resp.status();
            let open = s == StatusCode::SWITCHING_PROTOCOLS || (connect && s.is_success());
            verdicts.settle_tunnel(index, open);
            Ok::<_, Infallible>(resp)
        }
    })
}

/// IO that remembers when bytes last moved, for the idle timeout; with a
/// gate, the client's bytes reach hyper only as the gate releases them.
pub struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
    base: Instant,
    gate: Option<Gate>,
    /// Released bytes that did not fit the caller's buffer yet.
    out: Vec<u8>,
    out_pos: usize,
}

pub struct IdleWatch {
    last: Arc<AtomicU64>,
    base: Instant,
}

impl IdleWatch {
    /// Resolves once no byte has moved for `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl<T> Activity<T> {
    pub fn new(inner: T) -> (Activity<T>, IdleWatch) {
        let last = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        (
            Activity {
                inner,
                last: last.clone(),
                base,
                gate: None,
                out: Vec::new(),
                out_pos: 0,
            },
            IdleWatch { last, base },
        )
    }

    /// Put the strict request gate in front of the reader.
    pub fn gated(mut self) -> (Activity<T>, Arc<Verdicts>) {
        let (gate, verdicts) = Gate::new();
        self.gate = Some(gate);
        (self, verdicts)
    }

    fn touch(&self) {
        self.last
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn set_out(&mut self, released: Released, from: &[u8]) {
        self.out = match released {
            Released::Prefix(n) => from[..n].to_vec(),
            Released::Copied(v) => v,
        };
        self.out_pos = 0;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let Some(mut gate) = this.gate.take() else {
            let before = buf.filled().len();
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                this.touch();
            }
            return r;
        };
        let r = this.read_gated(&mut gate, cx, buf);
        this.gate = Some(gate);
        r
    }
}

impl<T: AsyncRead + Unpin> Activity<T> {
    fn read_gated(
        &mut self,
        gate: &mut Gate,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self;
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match gate.before_read(cx.waker()) {
                None => return Poll::Pending,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                Some(Ok(())) => {}
            }
            if let Some(stash) = gate.take_stash() {
                let released = gate.feed(&stash);
                this.set_out(released, &stash);
                continue;
            }
            if gate.is_open() {
                let r = Pin::new(&mut this.inner).poll_read(cx, buf);
                if matches!(r, Poll::Ready(Ok(()))) {
                    this.touch();
                }
                return r;
            }
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            if buf.filled().len() == before {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.touch();
            // Why: the gate decides what hyper sees; in the common case
            // that is everything just read, left in place.
            match gate.feed(&buf.filled()[before..]) {
                Released::Prefix(n) => {
                    buf.set_filled(before + n);
                    if n > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Released::Copied(v) => {
                    buf.set_filled(before);
                    this.out = v;
                    this.out_pos = 0;
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
