//! The store's event bus: what each apply changed, typed, in log order. Fed by apply — not by
//! proposers — so every node (a follower too) publishes the changes of its own applied log.
//! Bounded: a subscriber that falls more than [`CAPACITY`] apply calls behind gets a
//! [`Applied::Reset`] and re-reads the store's `view()`, as after a snapshot install.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::fleet::Millis;
use crate::fleet::event::Change;

/// Apply calls a subscriber may fall behind before it is told to start over.
pub const CAPACITY: usize = 4096;

/// One change with where it sits in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The log index of the entry that caused it.
    pub index: u64,
    /// When it happened: the proposer's clock for commands that carry one (joins, renewals,
    /// expiry, starting and ending broadcasts, adding and deleting stages, new API keys), else the
    /// applying node's clock. Subscribers measure delivery delay against it.
    pub at_ms: Millis,
    pub change: Change,
}

#[derive(Clone, Debug)]
pub enum Applied {
    /// The changes of one apply call (one or more entries), in log order; never empty.
    Changes(Arc<[Event]>),
    /// What a subscriber knew is void: a snapshot replaced the state (`lagged: false`), or this
    /// subscriber fell behind and missed changes (`lagged: true`). Re-read `view()`.
    Reset { lagged: bool },
}

pub(super) fn channel() -> broadcast::Sender<Applied> {
    broadcast::channel(CAPACITY).0
}

/// One subscriber's end of the bus.
pub struct Subscription {
    rx: broadcast::Receiver<Applied>,
}

impl Subscription {
    pub(super) fn new(rx: broadcast::Receiver<Applied>) -> Self {
        Self { rx }
    }

    /// The next applied changes; `None` once the store is gone.
    pub async fn recv(&mut self) -> Option<Applied> {
        match self.rx.recv().await {
            Ok(a) => Some(a),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Applied::Reset { lagged: true }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
