//! Accept loops that neither spin nor give up on accept errors.
//!
//! Why: an accept error such as EMFILE (no file descriptor left) repeats
//! until a connection closes; retrying at once is a busy loop that starves
//! the connections that would free one. Each failure waits a little longer
//! (doubling, capped), and a success resets the wait.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first wait after an accept error.
pub(crate) const FIRST: Duration = Duration::from_millis(5);
/// The longest wait: short enough that a freed descriptor is used soon.
pub(crate) const MAX: Duration = Duration::from_secs(1);

/// Something that accepts connections (a listener; a fake in tests).
pub(crate) trait Accept {
    type Conn;
    fn accept_conn(&self) -> impl Future<Output = std::io::Result<Self::Conn>>;
}

impl Accept for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;
    async fn accept_conn(&self) -> std::io::Result<Self::Conn> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept_conn(&self) -> std::io::Result<Self::Conn> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// How long to wait after consecutive accept errors.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// The wait after this accept error. A connection that failed on its
    /// own (aborted, reset, interrupted) used up its queued connection, so
    /// retrying at once cannot spin: no wait. Anything else (out of
    /// descriptors or memory) waits, longer each time.
    pub fn after(&mut self, e: &std::io::Error) -> Duration {
        use std::io::ErrorKind::*;
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
            return Duration::ZERO;
        }
        self.fail()
    }

    /// The wait after one more failure.
    pub fn fail(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX);
        wait
    }

    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// The next connection, waiting out accept errors; `None` once `cancel`
/// fires.
pub(crate) async fn next<A: Accept>(
    listener: &A,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> Option<A::Conn> {
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => return None,
            r = listener.accept_conn() => r,
        };
        match accepted {
            Ok(c) => {
                backoff.reset();
                return Some(c);
            }
            Err(e) => {
                let wait = backoff.after(&e);
                tracing::warn!("accept failed ({e}); trying again in {wait:?}");
                if !wait.is_zero() {
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return None,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Fails like a process out of descriptors, `fails` times, then
    /// accepts. Panics when called far more often than a backoff allows,
    /// so a spinning loop fails the test instead of hanging it.
    struct Emfile {
        calls: Cell<u32>,
        fails: u32,
    }

    impl Accept for Emfile {
        type Conn = u32;
        async fn accept_conn(&self) -> std::io::Result<u32> {
            let n = self.calls.get() + 1;
            self.calls.set(n);
            assert!(n < 1000, "accept called {n} times: the loop spins");
            tokio::task::yield_now().await;
            if n <= self.fails {
                Err(std::io::Error::from_raw_os_error(
                    nix::errno::Errno::EMFILE as i32,
                ))
            } else {
                Ok(n)
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.fail().as_millis() as u64).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.fail(), FIRST);
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_wait_instead_of_spinning() {
        let l = Emfile {
            calls: Cell::new(0),
            fails: u32::MAX,
        };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let start = tokio::time::Instant::now();
        let timer = async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();
        };
        let mut b = Backoff::default();
        let (got, ()) = tokio::join!(next(&l, &mut b, &cancel), timer);
        assert!(got.is_none(), "cancelled while failing: no connection");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // 5+10+...+640 ms = 1275 ms over 8 failures, then one a second.
        let calls = l.calls.get();
        assert!((15..=20).contains(&calls), "{calls} accept calls in 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_after_errors_is_returned_and_resets_the_wait() {
        let l = Emfile {
            calls: Cell::new(0),
            fails: 3,
        };
        let cancel = CancellationToken::new();
        let mut b = Backoff::default();
        let start = tokio::time::Instant::now();
        assert_eq!(next(&l, &mut b, &cancel).await, Some(4));
        assert_eq!(start.elapsed(), Duration::from_millis(5 + 10 + 20));
        assert_eq!(b.fail(), FIRST, "a success resets the wait");
    }

    #[tokio::test]
    async fn cancel_ends_a_quiet_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = tokio::net::UnixListener::bind(dir.path().join("s")).expect("bind");
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(next(&l, &mut Backoff::default(), &cancel).await.is_none());
    }

    /// Counts accept calls on a real listener.
    struct Counting<'a> {
        inner: &'a tokio::net::UnixListener,
        calls: Cell<u32>,
    }

    impl Accept for Counting<'_> {
        type Conn = tokio::net::UnixStream;
        async fn accept_conn(&self) -> std::io::Result<Self::Conn> {
            self.calls.set(self.calls.get() + 1);
            self.inner.accept_conn().await
        }
    }

    const EMFILE_CHILD: &str = "LANYARD_TEST_EMFILE_CHILD";

    /// A real EMFILE: in a child process (its own descriptor limit, so no
    /// other test loses descriptors), a connection waits in the backlog
    /// while every descriptor is taken. Accept fails at once each time it
    /// is tried; the loop must wait, and take the connection once
    /// descriptors are free again.
    #[test]
    fn a_real_emfile_is_waited_out_and_the_connection_taken_after() {
        if std::env::var_os(EMFILE_CHILD).is_some() {
            return emfile_child();
        }
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 128 && exec \"$0\" \"$@\"")
            .arg(exe)
            .args([
                "accept::tests::a_real_emfile_is_waited_out_and_the_connection_taken_after",
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(EMFILE_CHILD, "1")
            .output()
            .expect("run the child");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(
            text.contains("emfile-child: ok"),
            "child did not run:\n{text}"
        );
    }

    fn emfile_child() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("s");
            let l = tokio::net::UnixListener::bind(&path).expect("bind");
            let _client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
            let mut hog = Vec::new();
            loop {
                match std::fs::File::open("/dev/null") {
                    Ok(f) => hog.push(f),
                    Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMFILE as i32) => break,
                    Err(e) => panic!("unexpected error while taking descriptors: {e}"),
                }
            }
            let counting = Counting {
                inner: &l,
                calls: Cell::new(0),
            };
            let mut b = Backoff::default();
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            let window = async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                stop.cancel();
            };
            let (got, ()) = tokio::join!(next(&counting, &mut b, &cancel), window);
            assert!(got.is_none(), "no descriptor, no connection");
            let calls = counting.calls.get();
            // 0, 5, 15, 35, 75, 155, 315, 635 ms: 8 tries in the second.
            assert!((2..=12).contains(&calls), "{calls} accept calls in 1 s");
            drop(hog);
            let took = tokio::time::Instant::now();
            let conn = tokio::time::timeout(
                Duration::from_secs(5),
                next(&counting, &mut b, &CancellationToken::new()),
            )
            .await
            .expect("the connection is taken once descriptors are free");
            assert!(conn.is_some());
            assert!(took.elapsed() <= MAX + Duration::from_millis(500));
            println!("emfile-child: ok ({calls} tries while out of descriptors)");
        });
    }
}
