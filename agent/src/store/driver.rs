//! The rotation driver: each credential's one refresh loop, when its
//! next refresh is due (`fraction` of the lifetime ± `jitter`), renewal
//! or a fresh exchange, and the backoff after a failure.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Current, Slot, EXPIRY_MARGIN};
use crate::config::RotationConfig;
use crate::exchange::{ExchangeError, Issued};

pub(super) fn current_of(
    issued: Issued,
    started: Instant,
    generation: u64,
    full_lifetime: Option<Option<Duration>>,
) -> Current {
    let lifetime = counted(&issued);
    Current {
        fingerprint: issued.value.fingerprint(),
        value: issued.value,
        issued_at: started,
        // Counted from when the request was sent, less the granularity of
        // a whole-second lifetime: the server's `exp` is `floor(its now) +
        // lifetime` at the earliest, which is not before `started +
        // lifetime - 1 s` (clocks in step). Never later than that.
        expires_at: lifetime.map(|l| started + l),
        full_lifetime: full_lifetime.unwrap_or(lifetime),
        renewable: issued.renewable,
        about: issued.about,
        generation,
    }
}

/// Why: a service may answer a re-exchange with the token it already
/// issued (Port returns its one active token until it expires). That token
/// still ends when it first would, whatever lifetime came with it again;
/// counting from now would serve it past its end.
/// Once that end is within [`EXPIRY_MARGIN`], the answer is an error: the
/// refresh backs off and asks again, rather than looping on a dead token.
fn keep_first_expiry(name: &str, old: &Current, new: &mut Current) -> Result<(), ExchangeError> {
    if old.value.expose() != new.value.expose() {
        return Ok(());
    }
    if let (Some(first), Some(later)) = (old.expires_at, new.expires_at) {
        new.expires_at = Some(first.min(later));
    }
    match new.expires_at {
        Some(exp) if exp <= Instant::now() + EXPIRY_MARGIN => Err(ExchangeError::TooShort {
            name: name.to_owned(),
            detail: format!(
                "the service answered with the token it had already issued, which ends within {}; asking again after a backoff",
                humantime::format_duration(EXPIRY_MARGIN)
            ),
        }),
        _ => Ok(()),
    }
}

/// The lifetime lanyard counts on: the reported one less its granularity.
fn counted(issued: &Issued) -> Option<Duration> {
    issued
        .lifetime
        .map(|l| l.saturating_sub(issued.granularity))
}

/// Refuses a value that could never be served: its counted lifetime is
/// within [`EXPIRY_MARGIN`] (`expires_in: 1` may mean it is dead on
/// arrival). As an error it fails the start or backs off, where accepting
/// it would refresh again at once, in a loop.
pub(super) fn usable(name: &str, issued: Issued) -> Result<Issued, ExchangeError> {
    match (issued.lifetime, counted(&issued)) {
        (Some(given), Some(c)) if c <= EXPIRY_MARGIN => {
            let rounding = if issued.granularity.is_zero() {
                String::new()
            } else {
                format!(
                    " in whole seconds, so it may end up to {} sooner",
                    humantime::format_duration(issued.granularity)
                )
            };
            Err(ExchangeError::TooShort {
                name: name.to_owned(),
                detail: format!(
                    "the service gave a lifetime of {}{rounding}, which leaves nothing once \
                     lanyard stops serving a value {} before it expires; configure a longer lifetime",
                    humantime::format_duration(given),
                    humantime::format_duration(EXPIRY_MARGIN)
                ),
            })
        }
        _ => Ok(issued),
    }
}

/// When the next refresh is due.
fn due(
    c: &Current,
    rotation: &RotationConfig,
    reread: Option<Duration>,
    rand01: f64,
) -> Option<Instant> {
    match c.expires_at {
        Some(exp) => {
            // Why: a value stops being handed out EXPIRY_MARGIN before
            // `exp`; the share is of the time it can be served, so a short
            // credential (2 s, counted 1 s) is replaced before that point,
            // not after it.
            let usable = exp.checked_sub(EXPIRY_MARGIN).unwrap_or(exp);
            let life = usable.saturating_duration_since(c.issued_at);
            let share =
                (rotation.fraction + rotation.jitter * (2.0 * rand01 - 1.0)).clamp(0.05, 0.95);
            Some(c.issued_at + life.mul_f64(share))
        }
        None => reread.map(|r| c.issued_at + r),
    }
}

fn rand01() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    u32::from_le_bytes(b) as f64 / u32::MAX as f64
}

/// The one refresh loop of a credential.
pub(super) async fn drive(slot: Arc<Slot>, rotation: RotationConfig, cancel: CancellationToken) {
    let mut backoff = rotation.retry_min;
    let mut retry_at: Option<Instant> = None;
    let mut last_logged: Option<String> = None;
    loop {
        let current = slot.state.borrow().current.clone();
        let when = retry_at.or_else(|| {
            current
                .as_ref()
                .and_then(|c| due(c, &rotation, slot.source.reread_interval(), rand01()))
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = slot.kick.notified() => {
                let stale = slot.stale.load(Ordering::SeqCst);
                if current.as_ref().is_some_and(|c| c.generation > stale) {
                    // Every caller that asked already has a newer value.
                    continue;
                }
            },
            _ = sleep_until_opt(when) => {},
        }
        let started = Instant::now();
        let gen = current.as_ref().map(|c| c.generation + 1).unwrap_or(1);
        let res = refresh_once(&slot, current.as_deref(), &rotation)
            .await
            .and_then(|(i, full)| Ok((usable(&slot.name, i)?, full)))
            .and_then(|(i, full)| {
                let mut new = current_of(i, started, gen, full);
                if let Some(old) = current.as_ref().filter(|_| full.is_none()) {
                    keep_first_expiry(&slot.name, old, &mut new)?;
                }
                Ok((new, full))
            });
        match res {
            Ok((new, full)) => {
                let new = Arc::new(new);
                tracing::info!(credential = %slot.name, fingerprint = %new.fingerprint, generation = gen, lifetime_s = new.expires_at.map(|e| e.saturating_duration_since(started).as_secs_f64()), "credential refreshed");
                if last_logged.take().is_some() {
                    tracing::info!(credential = %slot.name, "refresh recovered");
                }
                // A full re-exchange produced a different token: keep the
                // old one for revocation at teardown.
                if let Some(old) = &current {
                    if full.is_none() && old.value.expose() != new.value.expose() {
                        slot.superseded
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(old.clone());
                    }
                }
                slot.state.send_modify(|s| {
                    s.current = Some(new);
                    s.last_error = None;
                    s.attempts += 1;
                    s.rotations += 1;
                });
                backoff = rotation.retry_min;
                retry_at = None;
            }
            Err(e) => {
                let msg = e.to_string();
                // Repeated identical failures are damped to debug.
                if last_logged.as_deref() == Some(msg.as_str()) {
                    tracing::debug!(credential = %slot.name, error = %msg, retry_in_s = backoff.as_secs_f64(), "refresh failed again");
                } else {
                    tracing::warn!(credential = %slot.name, error = %msg, retry_in_s = backoff.as_secs_f64(), "refresh failed; serving the current value while it is valid");
                    last_logged = Some(msg.clone());
                }
                slot.state.send_modify(|s| {
                    s.last_error = Some(msg);
                    s.attempts += 1;
                });
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(rotation.retry_max);
            }
        }
    }
}

async fn sleep_until_opt(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Renew when possible and worthwhile, else exchange again. Returns the new
/// value and, for a renewal, the unchanged full lifetime.
async fn refresh_once(
    slot: &Slot,
    current: Option<&Current>,
    rotation: &RotationConfig,
) -> Result<(Issued, Option<Option<Duration>>), ExchangeError> {
    if let Some(c) = current.filter(|c| c.renewable) {
        match slot.source.renew(&c.value).await {
            Ok(Some(r)) => {
                // Why: near the server's max TTL a renewal returns less and
                // less time; once it gives under a third of the original
                // lifetime, a fresh login is the better refresh.
                let enough = match (counted(&r), c.full_lifetime) {
                    (Some(got), Some(full)) => got >= full / 3 && got > rotation.retry_min * 2,
                    _ => true,
                };
                if enough {
                    return Ok((r, Some(c.full_lifetime)));
                }
                tracing::debug!(credential = %slot.name, "renewal gave too little time; exchanging again");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(credential = %slot.name, error = %e, "renewal failed; exchanging again")
            }
        }
    }
    slot.source.obtain().await.map(|i| (i, None))
}
