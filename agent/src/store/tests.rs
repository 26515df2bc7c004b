//! Store scheduling under paused tokio time, with a scripted source.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;

struct Scripted {
    lifetime: Mutex<Duration>,
    /// As `Issued::granularity`: `WHOLE_SECONDS` for an `expires_in`.
    granularity: Duration,
    obtains: AtomicU64,
    renews: AtomicU64,
    fail: AtomicBool,
    renewable: bool,
    latency: Duration,
    revoked: Mutex<Vec<String>>,
    /// Answer every obtain with the same token (Port's one active token).
    same_value: AtomicBool,
}

impl Scripted {
    fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(Scripted {
            lifetime: Mutex::new(lifetime),
            granularity: Duration::ZERO,
            obtains: AtomicU64::new(0),
            renews: AtomicU64::new(0),
            fail: AtomicBool::new(false),
            renewable: false,
            latency: Duration::from_millis(50),
            revoked: Mutex::new(Vec::new()),
            same_value: AtomicBool::new(false),
        })
    }
}

impl CredentialSource for Scripted {
    fn obtain(&self) -> BoxFut<'_, Result<Issued, ExchangeError>> {
        Box::pin(async move {
            tokio::time::sleep(self.latency).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(ExchangeError::Setup {
                    name: "t".into(),
                    problem: "sts down".into(),
                });
            }
            let n = self.obtains.fetch_add(1, Ordering::SeqCst);
            let n = if self.same_value.load(Ordering::SeqCst) {
                0
            } else {
                n
            };
            Ok(Issued {
                value: Credential::new(format!("token-{n}")),
                lifetime: Some(*self.lifetime.lock().expect("lock")),
                granularity: self.granularity,
                renewable: self.renewable,
                about: Vec::new(),
            })
        })
    }
    fn renew<'a>(
        &'a self,
        current: &'a Credential,
    ) -> BoxFut<'a, Result<Option<Issued>, ExchangeError>> {
        Box::pin(async move {
            self.renews.fetch_add(1, Ordering::SeqCst);
            Ok(Some(Issued {
                value: current.clone(),
                lifetime: Some(*self.lifetime.lock().expect("lock")),
                granularity: self.granularity,
                renewable: true,
                about: Vec::new(),
            }))
        })
    }
    fn revoke<'a>(&'a self, value: &'a Credential) -> BoxFut<'a, Result<Revoked, ExchangeError>> {
        Box::pin(async move {
            self.revoked
                .lock()
                .expect("lock")
                .push(value.expose().to_owned());
            Ok(Revoked::Done("scripted"))
        })
    }
}

impl Scripted {
    /// A source reporting `secs` in whole seconds, like `expires_in`.
    fn whole_seconds(secs: u64) -> Arc<Self> {
        Arc::new(Scripted {
            granularity: crate::exchange::WHOLE_SECONDS,
            ..Arc::try_unwrap(Scripted::new(Duration::from_secs(secs)))
                .ok()
                .expect("unique")
        })
    }
}

fn rotation() -> RotationConfig {
    RotationConfig {
        fraction: 0.5,
        jitter: 0.0,
        retry_min: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
    }
}

async fn store_with(src: Arc<Scripted>) -> Store {
    let mut s = Store::new(rotation(), CancellationToken::new());
    s.add("c", src).await.expect("first obtain");
    s
}

#[tokio::test(start_paused = true)]
async fn refreshes_at_the_configured_share_of_the_lifetime() {
    let src = Scripted::new(Duration::from_secs(10));
    let store = store_with(src.clone()).await;
    assert_eq!(store.get("c").expect("value").value.expose(), "token-0");
    // Due at 5 s (+50 ms latency each): after 16 s, refreshes at ~5, ~10, ~15.
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(src.obtains.load(Ordering::SeqCst), 4);
    assert_eq!(store.state("c").expect("state").rotations, 3);
    assert_eq!(store.get("c").expect("value").generation, 4);
}

#[tokio::test(start_paused = true)]
async fn a_failing_refresh_serves_the_valid_value_then_fails_closed() {
    let src = Scripted::new(Duration::from_secs(10));
    let store = store_with(src.clone()).await;
    src.fail.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(9)).await;
    // Still valid at 9 s, although refreshes have failed since 5 s.
    let c = store.get("c").expect("still valid");
    assert_eq!(c.value.expose(), "token-0");
    assert_eq!(
        store.state("c").expect("state").last_error.as_deref(),
        Some("credential \"t\": sts down")
    );
    // Within the margin before expiry and after it: refused, with the reason.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let e = store.get("c").unwrap_err();
    assert!(
        matches!(&e, StoreError::Expired { reason, .. } if reason.contains("sts down")),
        "{e}"
    );
    // Recovery: the next retry succeeds and the value is fresh again.
    src.fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(store.get("c").expect("recovered").value.expose(), "token-1");
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_up_to_the_cap() {
    let src = Scripted::new(Duration::from_secs(100));
    let store = store_with(src.clone()).await;
    src.fail.store(true, Ordering::SeqCst);
    // First attempt at 50 s, then retries after 0.2, 0.4, 0.8, 1.6, 2, 2, 2 … s.
    tokio::time::sleep(Duration::from_secs(50) + Duration::from_millis(100)).await;
    let a0 = store.state("c").expect("s").attempts;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let a1 = store.state("c").expect("s").attempts;
    // 0.2+0.4+0.8+1.6 = 3 s for 4 retries, then 7 s at 2 s each: 3 more.
    let retries = a1 - a0;
    assert!((6..=8).contains(&retries), "retries in 10 s: {retries}");
}

#[tokio::test(start_paused = true)]
async fn concurrent_forced_refreshes_share_one_exchange() {
    let src = Scripted::new(Duration::from_secs(100));
    let store = Arc::new(store_with(src.clone()).await);
    let gen = store.get("c").expect("v").generation;
    let mut set = JoinSet::new();
    for _ in 0..20 {
        let s = store.clone();
        set.spawn(async move {
            s.refresh("c", gen)
                .await
                .map(|c| c.value.expose().to_owned())
        });
    }
    let mut got = Vec::new();
    while let Some(r) = set.join_next().await {
        got.push(r.expect("join").expect("refresh"));
    }
    assert!(got.iter().all(|v| v == "token-1"), "{got:?}");
    assert_eq!(
        src.obtains.load(Ordering::SeqCst),
        2,
        "one initial obtain and one shared refresh"
    );
    // Kicks made while that refresh ran must not leave a second one
    // queued (a stored `Notify` permit did): let virtual time run on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        src.obtains.load(Ordering::SeqCst),
        2,
        "a second refresh ran after the shared one"
    );
    assert_eq!(store.get("c").expect("v").generation, gen + 1);
    // A caller that already saw the new generation gets it without a refresh.
    let again = store.refresh("c", gen).await.expect("fresh");
    assert_eq!(again.value.expose(), "token-1");
    assert_eq!(src.obtains.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn renewable_credentials_renew_instead_of_exchanging() {
    let src = Arc::new(Scripted {
        renewable: true,
        ..Arc::try_unwrap(Scripted::new(Duration::from_secs(10)))
            .ok()
            .expect("unique")
    });
    let store = store_with(src.clone()).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(src.obtains.load(Ordering::SeqCst), 1);
    assert!(src.renews.load(Ordering::SeqCst) >= 2);
    assert_eq!(store.get("c").expect("v").value.expose(), "token-0");
}

#[tokio::test(start_paused = true)]
async fn teardown_revokes_current_and_superseded_values_then_refuses_reads() {
    let src = Scripted::new(Duration::from_secs(10));
    let store = store_with(src.clone()).await;
    tokio::time::sleep(Duration::from_secs(6)).await; // one rotation: token-0 superseded, still valid
    let reports = store.shutdown().await;
    let mut revoked = src.revoked.lock().expect("lock").clone();
    revoked.sort();
    assert_eq!(revoked, ["token-0", "token-1"]);
    assert_eq!(reports.len(), 2);
    assert!(matches!(store.get("c"), Err(StoreError::Closed(_))));
}

// A whole-second lifetime (`expires_in: 5`) from a server that sets
// `exp = floor(now) + 5` may end as early as 4 s after the request was sent.
// The soak served one token 30 ms past such an `exp`.

#[tokio::test(start_paused = true)]
async fn a_whole_second_lifetime_is_not_served_past_the_earliest_server_exp() {
    let src = Scripted::whole_seconds(5);
    let sent = Instant::now();
    let store = store_with(src.clone()).await;
    src.fail.store(true, Ordering::SeqCst);
    let earliest_exp = sent + Duration::from_secs(4);
    tokio::time::sleep_until(earliest_exp - EXPIRY_MARGIN - Duration::from_millis(10)).await;
    assert_eq!(store.get("c").expect("valid").value.expose(), "token-0");
    tokio::time::sleep_until(earliest_exp - EXPIRY_MARGIN).await;
    let e = store.get("c").unwrap_err();
    assert!(
        matches!(&e, StoreError::Expired { reason, .. } if reason.contains("sts down")),
        "served {}ms before the server's earliest exp: {e:?}",
        earliest_exp
            .saturating_duration_since(Instant::now())
            .as_millis()
    );
}

#[tokio::test(start_paused = true)]
async fn whole_second_lifetimes_refresh_before_the_earliest_server_exp() {
    // The soak's timing: a refresh as late as 0.8 of the lifetime.
    let rotation = RotationConfig {
        fraction: 0.8,
        ..rotation()
    };
    let src = Scripted::whole_seconds(5);
    let mut store = Store::new(rotation, CancellationToken::new());
    store.add("c", src.clone()).await.expect("first obtain");
    let start = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while Instant::now() < start + Duration::from_secs(30) {
        let c = store.get("c").unwrap_or_else(|e| {
            panic!(
                "no value at {:?}: {e}",
                Instant::now().saturating_duration_since(start)
            )
        });
        // `issued_at` is when that value's request was sent.
        let earliest_exp = c.issued_at + Duration::from_secs(4);
        assert!(
            Instant::now() + EXPIRY_MARGIN < earliest_exp,
            "{} served {}ms before its earliest exp",
            c.value.expose(),
            earliest_exp
                .saturating_duration_since(Instant::now())
                .as_millis()
        );
        seen.insert(c.generation);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Refreshed every 0.8 × (4 s − the 500 ms margin) + 50 ms = 2.85 s.
    assert!(seen.len() >= 10, "values seen: {}", seen.len());
}

/// Seen in a fresh-clone CI run: 2-second credentials (counted 1 s) were
/// refreshed at 0.7 of 1 s, after they had stopped being served (500 ms
/// before their expiry), so requests in between got 503.
#[tokio::test(start_paused = true)]
async fn short_credentials_are_replaced_before_the_margin_not_after() {
    let rotation = RotationConfig {
        fraction: 0.8,
        ..rotation()
    };
    let mut store = Store::new(rotation, CancellationToken::new());
    store
        .add("c", Scripted::whole_seconds(2))
        .await
        .expect("first obtain");
    let start = Instant::now();
    while Instant::now() < start + Duration::from_secs(10) {
        if let Err(e) = store.get("c") {
            panic!(
                "no value at {:?}: {e}",
                Instant::now().saturating_duration_since(start)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_one_second_whole_second_lifetime_is_refused_at_start() {
    // `expires_in: 1` may mean the token is already dead: nothing to serve.
    let mut store = Store::new(rotation(), CancellationToken::new());
    let e = store
        .add("c", Scripted::whole_seconds(1))
        .await
        .expect_err("a 1 s whole-second lifetime was accepted");
    let msg = e.to_string();
    assert!(
        msg.contains("\"c\"") && msg.contains("1s") && msg.contains("whole seconds"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refresh_with_a_too_short_lifetime_backs_off_instead_of_spinning() {
    let src = Scripted::whole_seconds(10);
    let store = store_with(src.clone()).await;
    // From now on the service hands out 1-second tokens (a misconfigured TTL).
    *src.lifetime.lock().expect("lock") = Duration::from_secs(1);
    // Refresh due at 0.5 × (9 s − 500 ms); then retries back off 0.2, 0.4, … 2 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let st = store.state("c").expect("state");
    assert_eq!(
        st.current.as_ref().expect("value").value.expose(),
        "token-0"
    );
    let err = st.last_error.expect("the short lifetime is an error");
    assert!(err.contains("whole seconds"), "{err}");
    // 4.5 s to 8 s: about 5 attempts with backoff, not a hot loop.
    let obtains = src.obtains.load(Ordering::SeqCst);
    assert!((3..=8).contains(&obtains), "obtains: {obtains}");
    // The old value is still served until its own earliest exp.
    assert_eq!(store.get("c").expect("valid").value.expose(), "token-0");
}

#[tokio::test(start_paused = true)]
async fn the_same_token_back_from_a_refresh_keeps_its_first_expiry() {
    // Port answers with its one active token, and the full lifetime again.
    let src = Scripted::new(Duration::from_secs(10));
    src.same_value.store(true, Ordering::SeqCst);
    let store = store_with(src.clone()).await;
    let first = store.get("c").expect("value").expires_at.expect("exp");
    // Refreshed at ~5 s: the same token, still ending at ~10 s, not ~15 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let c = store.get("c").expect("value");
    assert!(c.generation >= 2, "no refresh happened");
    assert_eq!(c.value.expose(), "token-0");
    assert_eq!(c.expires_at, Some(first));
    // Refreshes come sooner as the end nears, and nothing is served past it.
    tokio::time::sleep(Duration::from_millis(3700)).await;
    assert!(
        store.get("c").is_err(),
        "served within the margin of its first expiry"
    );
    // Once the service issues a new token, it is served with its own lifetime.
    src.same_value.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = store.get("c").expect("a new token");
    assert_ne!(c.value.expose(), "token-0");
    // The same token was never queued for revocation once per refresh.
    store.shutdown().await;
    let revoked = src.revoked.lock().expect("lock").clone();
    assert!(
        revoked.iter().filter(|v| *v == "token-0").count() <= 1,
        "{revoked:?}"
    );
}
