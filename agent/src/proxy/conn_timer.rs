//! hyper's header-read timeout on one tokio timer per connection.
//!
//! hyper's HTTP/1 server drops its header-read timer after every head and
//! asks the timer for a new one when it starts reading the next, so with
//! hyper-util's `TokioTimer` every request registered a fresh tokio timer.
//! Its deadline (30 s) comes before the connection's idle timer, so tokio
//! also woke its own event loop (one `write` to the eventfd) per request.
//!
//! [`ConnTimer`] hands hyper cheap sleeps that share one tokio timer per
//! connection, kept at or before the earliest deadline still waited for.
//! On a keep-alive connection each new deadline is later than the one the
//! shared timer already has, so a request arms nothing: the shared timer
//! fires at the old deadline, the sleep sees that its own deadline has not
//! come, and moves the timer once (at most once per timeout period, not
//! per request). A sleep never resolves before its deadline, and never
//! later than the shared timer lets it: the timeout is exactly as strict.
//!
//! One connection is one task, so every sleep of a timer is polled with
//! the same waker; the shared timer keeps the last one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// One per connection (see the module docs).
#[derive(Clone, Default)]
pub struct ConnTimer {
    shared: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(LazySleep {
            deadline: tokio::time::Instant::from_std(deadline),
            shared: self.shared.clone(),
        })
    }

    /// tokio's clock, so that deadlines and the shared timer agree (also
    /// when a test pauses time).
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

struct LazySleep {
    deadline: tokio::time::Instant,
    shared: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl Future for LazySleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        if tokio::time::Instant::now() >= deadline {
            return Poll::Ready(());
        }
        let mut shared = match self.shared.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let timer = shared.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // Why: the shared timer must fire no later than this deadline;
        // a later one (or one that has fired) is moved here.
        if timer.deadline() > deadline || timer.is_elapsed() {
            timer.as_mut().reset(deadline);
        }
        // Ready only at or after this deadline (the timer is never later).
        timer.as_mut().poll(cx)
    }
}

impl Sleep for LazySleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::conn::http1_server;
    use crate::proxy::server::HEADER_READ_TIMEOUT;
    use http::{Request, Response};
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A head that never completes ends the connection at the header-read
    /// timeout, on the first request and on a later one of the same
    /// keep-alive connection (where the shared timer was armed for an
    /// earlier deadline), and not before.
    #[tokio::test(start_paused = true)]
    async fn an_unfinished_head_times_out_on_every_request_of_a_connection() {
        for earlier_requests in [0, 1, 3] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            });
            let conn = tokio::spawn(http1_server().serve_connection(TokioIo::new(server), svc));
            let mut buf = vec![0u8; 4096];
            for _ in 0..earlier_requests {
                // Some time passes between requests, as on a real connection.
                tokio::time::sleep(HEADER_READ_TIMEOUT / 3).await;
                client
                    .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .expect("write");
                let n = client.read(&mut buf).await.expect("read");
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
            }
            let start = tokio::time::Instant::now();
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
            let ended = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, conn)
                .await
                .expect("the connection must end at the header-read timeout")
                .expect("join");
            let waited = start.elapsed();
            assert!(ended.is_err(), "a header timeout is an error: {ended:?}");
            assert!(
                waited >= HEADER_READ_TIMEOUT
                    && waited < HEADER_READ_TIMEOUT + Duration::from_secs(1),
                "after {earlier_requests} requests the head timed out after {waited:?}"
            );
        }
    }

    /// Sleeps sharing one timer each resolve at their own deadline, in
    /// whatever order their deadlines were set.
    #[tokio::test(start_paused = true)]
    async fn sleeps_sharing_a_timer_keep_their_own_deadlines() {
        let t = ConnTimer::default();
        for secs in [5u64, 30, 2, 30, 1] {
            let start = tokio::time::Instant::now();
            t.sleep(Duration::from_secs(secs)).await;
            assert_eq!(start.elapsed().as_secs(), secs, "a {secs}s sleep");
        }
        // A sleep dropped while waiting leaves the timer armed for its
        // deadline: a later sleep still waits for its own, and an earlier
        // one moves the timer back.
        for (first, second) in [(1u64, 3u64), (30, 2)] {
            let start = tokio::time::Instant::now();
            let mut s = t.sleep(Duration::from_secs(first));
            let polled = std::future::poll_fn(|cx| Poll::Ready(s.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
            drop(s);
            t.sleep(Duration::from_secs(second)).await;
            assert_eq!(start.elapsed().as_secs(), second, "{first}s then {second}s");
        }
    }
}
