//! Renewals: heartbeats (and, later, open subscriptions) mark sessions alive on the node that sees
//! them; every interval the node writes all its renewals as one command, so Raft entries grow with
//! nodes, not viewers. Every node does this; ending lapsed sessions is the leader's
//! (`crate::control::expiry`).

use std::collections::HashSet;
use std::sync::Mutex;

use super::Node;
use crate::clock::now_ms;
use crate::state::proposal;

#[derive(Default)]
pub struct Presence {
    seen: Mutex<HashSet<String>>,
}

impl Presence {
    pub fn touch(&self, session_id: &str) {
        self.seen.lock().expect("presence set").insert(session_id.to_string());
    }

    fn drain(&self) -> Vec<String> {
        self.seen.lock().expect("presence set").drain().collect()
    }
}

impl Node {
    /// Write the renewals seen since the last call as one command.
    pub async fn flush_renewals(&self) {
        let mut renewals = self.presence.drain();
        // An open assignment subscription keeps its session alive, like a heartbeat each interval.
        renewals.extend(self.live.open_sessions());
        renewals.sort_unstable();
        renewals.dedup();
        if renewals.is_empty() {
            return;
        }
        let renew = proposal::Renew {
            session_ids: renewals,
            now: now_ms(),
        };
        if let Err(e) = self.store.propose(renew).await {
            tracing::warn!(error = %e, "writing session renewals failed");
        }
    }
}
