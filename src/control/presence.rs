//! Presence: heartbeats (and, later, open subscriptions) mark sessions alive on the node that
//! sees them; every interval the node writes all its renewals as one command, so Raft entries grow
//! with nodes, not viewers. The leader expires sessions whose lease ran out.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::now_ms;
use crate::node::Node;
use crate::state::proposal;

/// Most sessions expired per log entry; the rest go in the next round.
const EXPIRE_BATCH: usize = 10_000;

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

/// One round: write renewals, then (leader) expire lapsed sessions.
pub async fn tick(node: &Node) {
    let renewals = node.presence.drain();
    if !renewals.is_empty()
        && let Err(e) = node
            .store
            .propose(proposal::Renew {
                session_ids: renewals,
                now: now_ms(),
            })
            .await
    {
        tracing::warn!(error = %e, "writing session renewals failed");
    }
    if node.store.is_leader() {
        let now = now_ms();
        let lapsed = node.store.shared.any_expired(now);
        if lapsed {
            match node
                .store
                .propose(proposal::Expire {
                    now,
                    limit: EXPIRE_BATCH,
                })
                .await
            {
                Ok(v) => tracing::info!(count = v.len(), "expired lapsed sessions"),
                Err(e) => tracing::warn!(error = %e, "expiring sessions failed"),
            }
        }
    }
}

pub async fn run(node: Arc<Node>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        tick(&node).await;
    }
}
