//! What the gate and the request handlers of one connection share: the
//! refusal of a request (by its index), and the handler's verdict on a
//! request that may switch protocols.

use std::sync::Mutex;
use std::task::Waker;

/// A refused request, for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The request's place on its connection, from 0.
    pub index: u64,
    pub status: u16,
    pub rule: String,
    /// The method and request-target as far as they were read before the
    /// error (lossy, for the audit record): the same however the bytes
    /// were split into reads.
    pub method: String,
    pub target: String,
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) refusal: Option<Refusal>,
    /// `Some(index)` while the gate waits for the handler's answer to a
    /// request that may switch protocols.
    pub(super) awaiting: Option<u64>,
    pub(super) tunnel: Option<bool>,
    pub(super) waker: Option<Waker>,
}

/// What the gate and the request handlers of one connection share.
#[derive(Debug, Default)]
pub struct Verdicts(Mutex<Shared>);

impl Verdicts {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The refusal of request `index`, if the gate refused it.
    pub fn refusal_for(&self, index: u64) -> Option<Refusal> {
        self.lock()
            .refusal
            .as_ref()
            .filter(|r| r.index == index)
            .cloned()
    }

    /// The handler's answer to request `index`: did the protocol switch
    /// (a 2xx to CONNECT, a 101)? Other requests are ignored.
    pub fn settle_tunnel(&self, index: u64, open: bool) {
        let mut s = self.lock();
        if s.awaiting == Some(index) {
            s.awaiting = None;
            s.tunnel = Some(open);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}
