//! How long an upstream may take (`[proxy] upstream_*` keys, see the
//! README's *Limits*). Three bounds, all counted from the moment the
//! request's last byte was handed to the upstream connection:
//!
//! - the response head must arrive within `header` (else 504, JSON);
//! - the whole response must arrive within `total`;
//! - while the proxy waits on the upstream for body bytes, they must come
//!   at `min_rate` bytes per second or more, measured over each `window`
//!   of waiting. Time spent waiting on a slow *client* is not counted: the
//!   body is only polled when the client can take more.
//!
//! Once the head has been passed on, a status can no longer change: a
//! response cut by the last two bounds ends with its connection closed
//! (the client sees a short body), and the audit line says which bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::forward::{framed_two_ways, Body, BoxError, TWO_WAYS};

pub use crate::config::UpstreamLimits as Limits;

/// Why a response was cut after its head went out; read by the audit
/// record when it is written.
pub type Cut = Arc<OnceLock<String>>;

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// Send `req` with `go` under the bounds. A missing head is a 504 naming
/// the timeout; a transport failure from `go` is a 502. The response body
/// comes back wrapped so the total and rate bounds hold while it streams.
pub async fn send<Fut>(
    limits: &Limits,
    cut: &Cut,
    req: Request<Body>,
    go: impl FnOnce(Request<Body>) -> Fut,
) -> Result<Response<Body>, (StatusCode, String)>
where
    Fut: Future<Output = Result<Response<Body>, String>>,
{
    let head = limits.header;
    let late = |what: String| {
        Err((
            StatusCode::GATEWAY_TIMEOUT,
            format!("the upstream {what} ([proxy] upstream_header_timeout)"),
        ))
    };
    // Why: most requests (every GET) are sent whole at once; they need no
    // send tracking, only the head bound from now (the hot path).
    if req.body().is_end_stream() {
        let at = Instant::now();
        return match tokio::time::timeout_at(at + head, go(req)).await {
            Ok(r) => bounded(r, at, limits, cut),
            Err(_) => late(format!(
                "sent no response head within {} of the request",
                human(head)
            )),
        };
    }
    let (tx, mut sent) = watch::channel(None);
    let taken = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        let mut mark = SentMark {
            inner,
            tx: Some(tx),
            taken: taken.clone(),
        };
        if mark.inner.is_end_stream() {
            mark.mark();
        }
        mark.boxed_unsync()
    });
    let fut = go(req);
    tokio::pin!(fut);
    // Until the request is sent in full, an upload sets the pace (the
    // client's idle timeout bounds a stalled one). But the upstream must
    // start taking it (connect, TLS, the head) within the head bound.
    let mut untaken_by = Some(Instant::now() + head);
    let early = loop {
        tokio::select! {
            r = &mut fut => break Some(r),
            _ = sent.wait_for(Option::is_some) => break None,
            _ = sleep_until_opt(untaken_by) => {
                if !taken.load(Ordering::SeqCst) {
                    return late(format!("did not take the request within {}", human(head)));
                }
                untaken_by = None;
            }
        }
    };
    let resp = match early {
        Some(r) => r,
        None => {
            let at = (*sent.borrow()).unwrap_or_else(Instant::now);
            match tokio::time::timeout_at(at + head, &mut fut).await {
                Ok(r) => r,
                Err(_) => {
                    return late(format!(
                        "sent no response head within {} of the request",
                        human(head)
                    ))
                }
            }
        }
    };
    let at = (*sent.borrow()).unwrap_or_else(Instant::now);
    bounded(resp, at, limits, cut)
}

/// The answer to a request sent at `at`: a transport failure is a 502, a
/// response framed two ways is refused, the body streams under the total
/// and rate bounds.
fn bounded(
    resp: Result<Response<Body>, String>,
    at: Instant,
    limits: &Limits,
    cut: &Cut,
) -> Result<Response<Body>, (StatusCode, String)> {
    let resp = resp.map_err(|e| (StatusCode::BAD_GATEWAY, e))?;
    if framed_two_ways(resp.headers()) {
        return Err((StatusCode::BAD_GATEWAY, TWO_WAYS.to_owned()));
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp);
    }
    let limits = *limits;
    let cut = cut.clone();
    Ok(resp.map(|inner| {
        Bounded {
            inner,
            deadline: at + limits.total,
            total_timer: None,
            limits,
            waiting_since: None,
            waited: Duration::ZERO,
            window_bytes: 0,
            rate_timer: None,
            cut,
        }
        .boxed_unsync()
    }))
}

/// A request body that records when its last byte was taken (or when it
/// was dropped unfinished: the send is over either way).
struct SentMark {
    inner: Body,
    tx: Option<watch::Sender<Option<Instant>>>,
    /// Set at the first poll: the connection is up and took the head.
    taken: Arc<AtomicBool>,
}

async fn sleep_until_opt(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl SentMark {
    fn mark(&mut self) {
        self.taken.store(true, Ordering::SeqCst);
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(Instant::now()));
        }
    }
}

impl Drop for SentMark {
    fn drop(&mut self) {
        self.mark();
    }
}

impl hyper::body::Body for SentMark {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.taken.store(true, Ordering::SeqCst);
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.mark();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body under the total and rate bounds.
struct Bounded {
    inner: Body,
    /// `upstream_response_timeout` ends here. Why a timer only once the
    /// body waits: a response that arrives with its head (most) never
    /// needs one.
    deadline: Instant,
    total_timer: Option<Pin<Box<Sleep>>>,
    limits: Limits,
    /// Since when the last poll has been waiting on the upstream.
    waiting_since: Option<Instant>,
    /// Waiting time in this window, and the bytes that came in it.
    waited: Duration,
    window_bytes: u64,
    rate_timer: Option<Pin<Box<Sleep>>>,
    cut: Cut,
}

impl Bounded {
    fn fail(&mut self, why: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        tracing::debug!("upstream response cut: {why}");
        let _ = self.cut.set(why.clone());
        // Why: an empty body ends the stream; the error closes the client
        // connection so the short body cannot pass for a whole one.
        self.inner = super::forward::empty();
        Poll::Ready(Some(Err(why.into())))
    }

    /// Waiting time so far in this window, counting the current wait.
    fn waited(&self, now: Instant) -> Duration {
        self.waited + self.waiting_since.map_or(Duration::ZERO, |s| now - s)
    }

    /// At the end of a window of waiting: too few bytes is a failure,
    /// enough starts the next window.
    fn check_rate(&mut self, now: Instant) -> Option<String> {
        let Limits {
            min_rate, window, ..
        } = self.limits;
        if min_rate == 0 || self.waited(now) < window {
            return None;
        }
        let need = (min_rate as f64 * window.as_secs_f64()) as u64;
        if self.window_bytes < need {
            return Some(format!(
                "the upstream sent {} bytes in {} of waiting, under {min_rate} bytes/s \
                 ([proxy] upstream_min_rate, upstream_rate_window)",
                self.window_bytes,
                human(window)
            ));
        }
        self.waited = Duration::ZERO;
        self.window_bytes = 0;
        self.waiting_since = self.waiting_since.map(|_| now);
        None
    }
}

impl hyper::body::Body for Bounded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let now = Instant::now();
        if now >= this.deadline {
            let why = format!(
                "the upstream's response took longer than {} in all \
                 ([proxy] upstream_response_timeout)",
                human(this.limits.total)
            );
            return this.fail(why);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.window_bytes += d.len() as u64;
                }
                if let Some(s) = this.waiting_since.take() {
                    this.waited += now - s;
                }
                this.rate_timer = None;
                match this.check_rate(now) {
                    Some(why) => this.fail(why),
                    None => Poll::Ready(Some(Ok(f))),
                }
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                let deadline = this.deadline;
                let total = this
                    .total_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if total.as_mut().poll(cx).is_ready() {
                    // The deadline passed since `now`: fail on the next poll.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if this.limits.min_rate == 0 {
                    return Poll::Pending;
                }
                this.waiting_since.get_or_insert(now);
                if let Some(why) = this.check_rate(now) {
                    return this.fail(why);
                }
                let wake = now + this.limits.window.saturating_sub(this.waited(now));
                let timer = this
                    .rate_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake)));
                timer.as_mut().reset(wake);
                if timer.as_mut().poll(cx).is_ready() {
                    // The window ended between the check and now: check
                    // again on the next poll.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of one-byte frames fed by a task, one every `every`.
    struct Drip(tokio::sync::mpsc::Receiver<Bytes>);

    impl hyper::body::Body for Drip {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    fn drip(n: usize, every: Duration) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..n {
                tokio::time::sleep(every).await;
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
            }
        });
        Drip(rx).boxed_unsync()
    }

    async fn through(limits: Limits, body: Body) -> (Result<usize, String>, Option<String>) {
        let cut = Cut::default();
        let resp = send(
            &limits,
            &cut,
            Request::new(super::super::forward::empty()),
            |_| async move { Ok(Response::new(body)) },
        )
        .await
        .expect("head");
        let mut body = resp.into_body();
        let mut n = 0;
        let r = loop {
            match body.frame().await {
                None => break Ok(n),
                Some(Ok(f)) => n += f.data_ref().map_or(0, |d| d.len()),
                Some(Err(e)) => break Err(e.to_string()),
            }
        };
        (r, cut.get().cloned())
    }

    #[tokio::test(start_paused = true)]
    async fn a_drip_under_the_minimum_rate_is_cut_after_one_window() {
        let limits = Limits {
            min_rate: 10,
            window: Duration::from_secs(5),
            ..Limits::default()
        };
        let started = Instant::now();
        let (r, cut) = through(limits, drip(1000, Duration::from_secs(1))).await;
        assert!(r.is_err(), "{r:?}");
        let why = cut.expect("cut");
        assert!(why.contains("upstream_min_rate"), "{why}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(7),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes_and_the_total_bound_cuts_a_long_one() {
        let fast = Limits {
            min_rate: 1,
            window: Duration::from_secs(5),
            ..Limits::default()
        };
        let (r, cut) = through(fast, drip(20, Duration::from_millis(500))).await;
        assert_eq!(r, Ok(20));
        assert_eq!(cut, None);
        let short = Limits {
            total: Duration::from_secs(3),
            min_rate: 0,
            ..Limits::default()
        };
        let (r, cut) = through(short, drip(20, Duration::from_millis(500))).await;
        assert!(r.is_err(), "{r:?}");
        assert!(cut.expect("cut").contains("upstream_response_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_that_never_takes_a_request_body_gets_a_504() {
        let limits = Limits {
            header: Duration::from_secs(2),
            ..Limits::default()
        };
        // A connect that never completes: the body is never polled.
        let req = Request::new(super::super::forward::full("payload"));
        let r = send(&limits, &Cut::default(), req, |r| async move {
            let _hold = r;
            std::future::pending::<Result<Response<Body>, String>>().await
        })
        .await;
        let (status, why) = r.expect_err("timeout");
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            why.contains("did not take the request") && why.contains("upstream_header_timeout"),
            "{why}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_head_in_time_is_a_504_naming_the_key() {
        let limits = Limits {
            header: Duration::from_secs(2),
            ..Limits::default()
        };
        let r = send(
            &limits,
            &Cut::default(),
            Request::new(super::super::forward::empty()),
            |_| std::future::pending::<Result<Response<Body>, String>>(),
        )
        .await;
        let (status, why) = r.expect_err("timeout");
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            why.contains("upstream_header_timeout") && why.contains("2s"),
            "{why}"
        );
    }
}
