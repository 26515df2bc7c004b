//! The credential store: named credentials with expiry. Third stage of the
//! flow; it schedules the exchange stage and serves the proxy.
//!
//! Each credential has one driver task, the only place a refresh runs, so
//! refreshes never overlap and every reader waiting on a forced refresh
//! shares its one result (published through a `watch`, so a reader always
//! sees a whole value). A refresh is due at `fraction` of the lifetime ±
//! `jitter`; a failed refresh keeps the still-valid value and retries with
//! capped exponential backoff; a value past its expiry is never handed out.
//!
//! This file: the store's API (start, get, refresh, teardown); `driver`:
//! the refresh loop and its schedule; `source`: exchanges as sources.

mod driver;
mod first;
mod source;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RotationConfig;
use crate::exchange::{ExchangeError, Issued, Revoked};
use crate::secret::Credential;
use driver::{current_of, drive, usable};
pub use source::ExchangeSource;

/// Why: a value that expires while a request is on the wire is as bad as an
/// expired one; stop handing it out this long before `exp`.
pub const EXPIRY_MARGIN: Duration = Duration::from_millis(500);
/// Grace for driver tasks to notice cancellation at teardown.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a credential comes from. The real one is [`ExchangeSource`]; unit
/// tests use a scripted one under paused time.
pub trait CredentialSource: Send + Sync + 'static {
    fn obtain(&self) -> BoxFut<'_, Result<Issued, ExchangeError>>;
    /// Extend in place; `Ok(None)` when the kind does not renew.
    fn renew<'a>(
        &'a self,
        current: &'a Credential,
    ) -> BoxFut<'a, Result<Option<Issued>, ExchangeError>>;
    fn revoke<'a>(&'a self, value: &'a Credential) -> BoxFut<'a, Result<Revoked, ExchangeError>>;
    /// Re-read period for values without expiry.
    fn reread_interval(&self) -> Option<Duration> {
        None
    }
    /// False when no revocation exists (the value expires on its own).
    fn revocable(&self) -> bool {
        true
    }
}

/// A credential's current value.
#[derive(Debug)]
pub struct Current {
    pub value: Credential,
    pub fingerprint: String,
    pub issued_at: Instant,
    pub expires_at: Option<Instant>,
    /// The lifetime at the last full exchange (not a renewal).
    pub full_lifetime: Option<Duration>,
    pub renewable: bool,
    /// What is safe to show about it (`Issued::about`).
    pub about: Vec<(&'static str, String)>,
    /// Increases with every new value.
    pub generation: u64,
}

/// What readers see.
#[derive(Debug, Clone, Default)]
pub struct SlotState {
    pub current: Option<Arc<Current>>,
    /// The last refresh error, cleared by a success.
    pub last_error: Option<String>,
    /// Completed refresh attempts, successful or not.
    pub attempts: u64,
    pub rotations: u64,
    /// Set at teardown; readers then get nothing.
    pub closed: bool,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("no credential named {0:?}")]
    Unknown(String),
    #[error("credential {name:?} expired {ago_ms} ms ago and could not be refreshed: {reason}")]
    Expired {
        name: String,
        ago_ms: u128,
        reason: String,
    },
    #[error("credential {name:?} is not available: {reason}")]
    Unavailable { name: String, reason: String },
    #[error("credential {0:?} was revoked at teardown")]
    Closed(String),
}

struct Slot {
    name: String,
    source: Arc<dyn CredentialSource>,
    state: watch::Sender<SlotState>,
    kick: Notify,
    /// The newest generation a caller of `refresh` found stale. A kick
    /// that a newer value already answers is dropped: `Notify` keeps one
    /// permit from kicks made during a refresh, and that permit alone must
    /// not start a second refresh.
    stale: AtomicU64,
    /// Values replaced by a full re-exchange, revoked at teardown if still
    /// valid. A std mutex: never held across an await.
    superseded: Mutex<Vec<Arc<Current>>>,
}

/// The outcome of revoking one credential at teardown.
#[derive(Debug, Clone)]
pub struct RevokeReport {
    pub name: String,
    pub fingerprint: String,
    pub outcome: Result<Revoked, String>,
}

pub struct Store {
    slots: Vec<Arc<Slot>>,
    index: HashMap<String, usize>,
    rotation: RotationConfig,
    cancel: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("credentials", &self.index.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A failed first exchange, naming the credential.
#[derive(Debug, thiserror::Error)]
#[error("credential {name:?}: {source}")]
pub struct StartError {
    pub name: String,
    #[source]
    pub source: ExchangeError,
}

impl Store {
    pub fn new(rotation: RotationConfig, cancel: CancellationToken) -> Self {
        Store {
            slots: Vec::new(),
            index: HashMap::new(),
            rotation,
            cancel,
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// A receiver of a credential's state (for a dependent source).
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<SlotState>> {
        self.index
            .get(name)
            .map(|&i| self.slots[i].state.subscribe())
    }

    /// Obtain the first value (fails closed: an error here means the job
    /// does not start) and spawn the refresh driver.
    pub async fn add(
        &mut self,
        name: &str,
        source: Arc<dyn CredentialSource>,
    ) -> Result<(), StartError> {
        let started = Instant::now();
        let issued = first::obtain(name, source.as_ref())
            .await
            .and_then(|i| usable(name, i))
            .map_err(|e| StartError {
                name: name.to_owned(),
                source: e,
            })?;
        let current = Arc::new(current_of(issued, started, 1, None));
        tracing::info!(credential = name, fingerprint = %current.fingerprint, lifetime_s = current.full_lifetime.map(|d| d.as_secs_f64()), "credential obtained");
        let (tx, _) = watch::channel(SlotState {
            current: Some(current),
            attempts: 1,
            ..Default::default()
        });
        let slot = Arc::new(Slot {
            name: name.to_owned(),
            source,
            state: tx,
            kick: Notify::new(),
            stale: AtomicU64::new(0),
            superseded: Mutex::new(Vec::new()),
        });
        self.index.insert(name.to_owned(), self.slots.len());
        self.slots.push(slot.clone());
        let (rotation, cancel) = (self.rotation, self.cancel.clone());
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn(drive(slot, rotation, cancel));
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    pub fn state(&self, name: &str) -> Option<SlotState> {
        self.index
            .get(name)
            .map(|&i| self.slots[i].state.borrow().clone())
    }

    /// False for a credential that cannot be revoked (it expires on its own).
    pub fn revocable(&self, name: &str) -> bool {
        self.slot(name).map_or(true, |s| s.source.revocable())
    }

    /// The current value, never an expired one.
    pub fn get(&self, name: &str) -> Result<Arc<Current>, StoreError> {
        let slot = self.slot(name)?;
        let st = slot.state.borrow();
        valid(&slot.name, &st)
    }

    /// Force a refresh unless a newer value than `seen_generation` exists
    /// (e.g. after an upstream 401), and wait for its result. Concurrent
    /// callers share the one refresh.
    pub async fn refresh(
        &self,
        name: &str,
        seen_generation: u64,
    ) -> Result<Arc<Current>, StoreError> {
        let slot = self.slot(name)?;
        let mut rx = slot.state.subscribe();
        let attempts_before = {
            let st = rx.borrow_and_update();
            if let Some(c) = &st.current {
                if c.generation > seen_generation {
                    return valid(&slot.name, &st);
                }
            }
            st.attempts
        };
        slot.stale.fetch_max(seen_generation, Ordering::SeqCst);
        slot.kick.notify_one();
        let res = rx
            .wait_for(|s| {
                s.closed
                    || s.attempts > attempts_before
                    || s.current
                        .as_ref()
                        .is_some_and(|c| c.generation > seen_generation)
            })
            .await;
        match res {
            Ok(st) => valid(&slot.name, &st),
            Err(_) => Err(StoreError::Closed(name.to_owned())),
        }
    }

    fn slot(&self, name: &str) -> Result<&Arc<Slot>, StoreError> {
        self.index
            .get(name)
            .map(|&i| &self.slots[i])
            .ok_or_else(|| StoreError::Unknown(name.to_owned()))
    }

    /// Stop the drivers, then revoke every credential still valid (current
    /// and superseded), dependents first.
    pub async fn shutdown(&self) -> Vec<RevokeReport> {
        self.cancel.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let drained = tokio::time::timeout(DRAIN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "credential refresh tasks did not stop within {}s; revoking anyway",
                DRAIN_GRACE.as_secs()
            );
            tasks.abort_all();
        }
        let mut reports = Vec::new();
        for slot in self.slots.iter().rev() {
            let mut values: Vec<Arc<Current>> =
                std::mem::take(&mut *slot.superseded.lock().unwrap_or_else(|p| p.into_inner()));
            slot.state.send_modify(|s| {
                if let Some(c) = s.current.take() {
                    values.push(c);
                }
                s.closed = true;
            });
            let now = Instant::now();
            for c in values {
                if c.expires_at.is_some_and(|e| e <= now) {
                    continue;
                }
                let outcome = slot
                    .source
                    .revoke(&c.value)
                    .await
                    .map_err(|e| e.to_string());
                match &outcome {
                    Ok(r) => {
                        tracing::info!(credential = %slot.name, fingerprint = %c.fingerprint, result = ?r, "credential revoked")
                    }
                    Err(e) => {
                        tracing::warn!(credential = %slot.name, fingerprint = %c.fingerprint, error = %e, "revocation failed")
                    }
                }
                reports.push(RevokeReport {
                    name: slot.name.clone(),
                    fingerprint: c.fingerprint.clone(),
                    outcome,
                });
            }
        }
        reports
    }
}

fn valid(name: &str, st: &SlotState) -> Result<Arc<Current>, StoreError> {
    if st.closed {
        return Err(StoreError::Closed(name.to_owned()));
    }
    let Some(c) = &st.current else {
        return Err(StoreError::Unavailable {
            name: name.to_owned(),
            reason: st
                .last_error
                .clone()
                .unwrap_or_else(|| "not obtained".into()),
        });
    };
    if let Some(exp) = c.expires_at {
        let now = Instant::now();
        if now + EXPIRY_MARGIN >= exp {
            return Err(StoreError::Expired {
                name: name.to_owned(),
                ago_ms: now.saturating_duration_since(exp).as_millis(),
                reason: st
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no refresh has completed yet".into()),
            });
        }
    }
    Ok(c.clone())
}

#[cfg(test)]
mod tests;
