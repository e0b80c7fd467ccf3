//! Leader-side loops that turn intents in the replicated state into IVS calls (stage creation and
//! deletion, reconciliation after a restart or a change of leader) and keep presence: renewals
//! collected on every node, expiry driven by the leader. Never on the join path.

pub mod presence;
pub mod stages;

use std::sync::Arc;
use std::time::Duration;

use crate::node::Node;

pub fn spawn_loops(node: Arc<Node>) {
    let interval = Duration::from_secs(node.cfg.presence_interval_secs.max(1));
    let n = node.clone();
    tokio::spawn(async move { presence::run(n, interval).await });
    tokio::spawn(async move { stages::reconcile_loop(node, Duration::from_secs(15)).await });
}
