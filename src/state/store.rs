//! One node's view of the replicated state: opens sled, starts openraft with the log store and
//! state machine, bootstraps a one-member cluster on first start, and publishes four things —
//! nothing outside `state/` reaches into its internals or into openraft:
//! - [`Store::propose`]: the one write entry (a typed [`Proposal`]; where forwarding will go);
//! - [`Store::view`]: an immutable snapshot of the applied state, one per request;
//! - [`Store::subscribe`]: the typed, bounded bus of what apply changed (see [`super::bus`]);
//! - [`Store::leadership`]: a watch of who leads in which term (and [`Store::cluster_status`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::sync::watch;

use super::bus::Subscription;
use super::log_store::LogStore;
use super::machine::{Shared, StateMachine, View};
use super::network::Network;
use super::proposal::{self, Proposal, ProposalError, ProposeError};
use super::{Command, LogId, NodeId, Raft, Response};

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// Address peers reach this node's Raft RPC at; stored in the membership, so keep it stable.
    pub advertise_addr: String,
    pub sled_cache_bytes: u64,
    /// Take a snapshot (and purge the log before it) every this many entries.
    pub snapshot_every: u64,
}

pub struct Store {
    raft: Raft,
    shared: Arc<Shared>,
    pub node_id: NodeId,
    log: LogStore,
    leadership: Arc<watch::Sender<Leadership>>,
}

/// Who leads, in which term, as this node sees it. Control loops watch it to run on the leader
/// only; it changes only on elections, never with the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<NodeId>,
    pub term: u64,
}

/// What the API shows of the replicated store, read in one place (health, metrics, GraphQL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// Raft's core is running (false once it stopped on a storage or fatal error).
    pub running: bool,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
}

impl ClusterStatus {
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.node_id)
    }
}

/// Keep `tx` equal to the leader and term in Raft's metrics, waking watchers only when they change.
fn follow_leadership(
    mut metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    tx: Arc<watch::Sender<Leadership>>,
) {
    tokio::spawn(async move {
        loop {
            let now = {
                let m = metrics.borrow_and_update();
                Leadership {
                    leader: m.current_leader,
                    term: m.current_term,
                }
            };
            tx.send_if_modified(|seen| std::mem::replace(seen, now) != now);
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

impl Store {
    pub async fn open(cfg: &StoreConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
        let db = sled::Config::new()
            .path(cfg.data_dir.join("db"))
            .cache_capacity(cfg.sled_cache_bytes)
            .flush_every_ms(Some(500))
            .open()
            .with_context(|| {
                format!(
                    "opening sled in {} (is another stagefleet using it?)",
                    cfg.data_dir.display()
                )
            })?;
        let log = LogStore::open(&db)?;
        let sm = StateMachine::open(&db, cfg.data_dir.join("snapshots"))?;
        let shared = sm.shared();
        let raft_config = openraft::Config {
            cluster_name: "stagefleet".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            install_snapshot_timeout: 2_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        }
        .validate()?;
        let raft = Raft::new(cfg.node_id, Arc::new(raft_config), Network, log.clone(), sm).await?;
        if !raft.is_initialized().await? {
            let members = BTreeMap::from([(
                cfg.node_id,
                BasicNode {
                    addr: cfg.advertise_addr.clone(),
                },
            )]);
            raft.initialize(members)
                .await
                .context("bootstrapping the one-member cluster")?;
        }
        let leadership = Arc::new(watch::Sender::new(Leadership { leader: None, term: 0 }));
        follow_leadership(raft.metrics(), leadership.clone());
        Ok(Self {
            raft,
            shared,
            node_id: cfg.node_id,
            log,
            leadership,
        })
    }

    /// Wait until some node leads (a restarted single node elects itself within an election timeout).
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .context("no Raft leader")?;
        Ok(m.current_leader.expect("waited for it"))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// The applied state as of now; take one per request and read everything from it.
    pub fn view(&self) -> View {
        self.shared.view()
    }

    /// The read side alone, for a part that only reads (the signing key holder).
    pub fn reader(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// What apply changes from now on, in log order.
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.shared.events.subscribe())
    }

    /// Changes whenever API keys, the signing key or the policy change (or a snapshot replaced
    /// the state); never with joins, so thousands of sockets may watch it.
    pub fn meta_changes(&self) -> watch::Receiver<u64> {
        self.shared.meta_version.subscribe()
    }

    /// A watch of who leads and in which term.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    /// This node's view of the cluster, for health, metrics and the API.
    pub fn cluster_status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        ClusterStatus {
            node_id: self.node_id,
            leader: m.current_leader,
            term: m.current_term,
            running: m.running_state.is_ok(),
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
        }
    }

    pub fn size_on_disk(&self) -> u64 {
        self.log.size_on_disk()
    }

    /// Replicate and apply `p`; answers its output once it is committed, applied and flushed.
    pub async fn propose<P: Proposal>(&self, p: P) -> Result<P::Output, ProposalError> {
        Ok(self.propose_logged(p).await?.1)
    }

    /// [`Store::propose`], also answering the entry's log id.
    pub async fn propose_logged<P: Proposal>(&self, p: P) -> Result<(LogId, P::Output), ProposalError> {
        let cmd = p.into_command();
        let label = cmd.label();
        let (log_id, response) = self.write(cmd).await?;
        Ok((log_id, proposal::answer::<P>(label, response)?))
    }

    async fn write(&self, cmd: Command) -> Result<(LogId, Response), ProposeError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok((r.log_id, r.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader {
                leader: f.leader_id,
                leader_addr: f.leader_node.map(|n| n.addr),
            }),
            Err(e) => Err(ProposeError::Unavailable(e.to_string())),
        }
    }

    /// Snapshot the state now and purge the log through `index`, so what entries up to it said
    /// survives only as the state they produced. For an entry whose payload must not stay on disk
    /// (a signing key in an old form): the snapshot file is replaced too. Openraft builds one
    /// snapshot at a time and ignores a trigger while one runs, hence the retry.
    pub async fn compact_through(&self, index: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.raft.trigger().snapshot().await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let built = self
                .raft
                .wait(Some(left.min(Duration::from_secs(2))))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= index),
                    "a snapshot covers the index",
                )
                .await;
            if built.is_ok() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no snapshot through index {index} within {timeout:?}"
            );
        }
        self.raft.trigger().purge_log(index).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(left))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= index),
                "the log is purged through the index",
            )
            .await
            .with_context(|| format!("purging the Raft log through index {index}"))?;
        Ok(())
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_single_node_sees_itself_lead_in_the_leadership_watch_and_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig {
            data_dir: dir.path().to_path_buf(),
            node_id: 7,
            advertise_addr: "127.0.0.1:0".into(),
            sled_cache_bytes: 1 << 20,
            snapshot_every: 1_000,
        })
        .await
        .unwrap();
        let mut watch = store.leadership();
        let led = tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|l| l.leader == Some(7)))
            .await
            .expect("a leader within 10 s")
            .unwrap()
            .to_owned();
        assert!(led.term >= 1, "{led:?}");
        let status = store.cluster_status();
        assert!(status.is_leader() && status.running, "{status:?}");
        assert_eq!((status.leader, status.term), (led.leader, led.term));
        assert!(status.last_applied_index.is_some(), "the membership entry is applied");
        store.shutdown().await;
    }
}
