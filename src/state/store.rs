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
use super::network::{CallError, Network, Peers};
use super::proposal::{self, Proposal, ProposalError, ProposeError};
use super::rpc::{self, COMMIT_WITHIN, ProposeAnswer, RpcState, Timers};
use super::{Command, LogId, NodeId, Raft, Response};

mod operator;
mod writes;

/// How long a write may wait for a leader (an election, a leader that just died) before it is
/// answered `Unavailable`.
const LEADER_WITHIN: Duration = Duration::from_secs(5);
/// Raft's election time-out, upper bound (also the followers' leader lease), in ms.
const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// How long a follower waits for the leader's answer to a forwarded write.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// Address peers reach this node's Raft RPC at; stored in the membership, so keep it stable.
    pub advertise_addr: String,
    pub sled_cache_bytes: u64,
    /// Take a snapshot (and purge the log before it) every this many entries.
    pub snapshot_every: u64,
    /// Member of a multi-node cluster (`None`: a single node, no Raft port).
    pub cluster: Option<ClusterConfig>,
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Where this node's Raft RPC listens (`advertise_addr` is where peers reach it).
    pub raft_addr: std::net::SocketAddr,
    pub secret: String,
    /// Nodes that form the cluster on first start (the lowest id initialises it).
    pub bootstrap_expect: u32,
    /// Raft addresses of other members, asked for hello and join.
    pub join: Vec<String>,
}

pub struct Store {
    raft: Raft,
    shared: Arc<Shared>,
    pub node_id: NodeId,
    log: LogStore,
    leadership: Arc<watch::Sender<Leadership>>,
    /// The client of the other nodes (`None` on a single node).
    peers: Option<Peers>,
    /// What the Raft port serves, for the operator's cluster actions (`None` on a single node).
    rpc: Option<RpcState>,
    snapshot_dir: PathBuf,
    /// Read barriers completed, and the turn to run one (see [`Store::catch_up`]).
    read_rounds: std::sync::atomic::AtomicU64,
    read_turn: tokio::sync::Mutex<()>,
    /// This node left the cluster, or the leader said it is not a member: it takes no writes.
    not_member: std::sync::atomic::AtomicBool,
    /// Internode requests refused for a wrong or missing cluster secret.
    rpc_refused: prometheus_client::metrics::counter::Counter,
}

/// Who leads, in which term, as this node sees it. Control loops watch it to run on the leader
/// only; it changes only on elections, never with the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<NodeId>,
    pub term: u64,
}

/// What the API shows of the replicated store, read in one place (health, metrics, GraphQL).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// Raft's core is running (false once it stopped on a storage or fatal error).
    pub running: bool,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Voting members (this node alone on a single node).
    pub voters: Vec<NodeId>,
    /// Every member (voters and learners) with its Raft address and, as the leader sees it, the
    /// last log index it holds (`None` on a follower, or for a member not yet reached).
    pub members: Vec<MemberStatus>,
    /// On the leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Internode requests refused for a wrong or missing cluster secret.
    pub rpc_refused: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub raft_addr: String,
    pub voter: bool,
    /// The leader's view of the member's log: the last index it holds.
    pub matched_index: Option<u64>,
}

impl MemberStatus {
    /// Entries the member is behind the leader's log (known on the leader only).
    pub fn lag(&self, last_log_index: Option<u64>) -> Option<u64> {
        Some(last_log_index?.saturating_sub(self.matched_index.unwrap_or(0)))
    }
}

impl ClusterStatus {
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.node_id)
    }
}

/// The leader as Raft's metrics name it, except where they are stale: a stopped core still names
/// the last leader it knew, and a node restarted from disk resumes as leader of its old term
/// (from its stored, committed vote) until it hears of the newer one. This node counts as leader
/// only once a quorum has acknowledged it in its term (alone, it is its own quorum at once).
fn known_leader(m: &openraft::RaftMetrics<NodeId, BasicNode>) -> Option<NodeId> {
    let leader = m.current_leader.filter(|_| m.running_state.is_ok())?;
    if leader == m.id && (m.state != openraft::ServerState::Leader || m.millis_since_quorum_ack.is_none()) {
        return None;
    }
    Some(leader)
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
                match &m.running_state {
                    Ok(()) => {}
                    // Asked to stop: the node is shutting down.
                    Err(openraft::error::Fatal::Stopped) => tracing::info!("the Raft core stopped"),
                    Err(fatal) => {
                        tracing::error!(error = %fatal, "the Raft core stopped: this node serves no writes and leads nothing until it is restarted")
                    }
                }
                Leadership {
                    leader: known_leader(&m),
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
        let sm = StateMachine::open(&db, cfg.data_dir.join("snapshots"), cfg.node_id)?;
        let shared = sm.shared();
        let raft_config = openraft::Config {
            cluster_name: "stagefleet".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            install_snapshot_timeout: 2_000,
            // One chunk per request, well under the Raft port's body limit.
            snapshot_max_chunk_size: 1 << 20,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        }
        .validate()?;
        // The Raft port first: a port in use is a clear error before anything starts.
        let listener = match &cfg.cluster {
            Some(c) => Some(
                tokio::net::TcpListener::bind(c.raft_addr)
                    .await
                    .with_context(|| format!("binding raft_addr {} (is another process using it?)", c.raft_addr))?,
            ),
            None => None,
        };
        let peers = cfg.cluster.as_ref().map(|c| Peers::new(&c.secret));
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(raft_config),
            Network::new(peers.clone()),
            log.clone(),
            sm,
        )
        .await?;
        let rpc_refused = prometheus_client::metrics::counter::Counter::default();
        let mut rpc_state = None;
        match (&cfg.cluster, listener, &peers) {
            (Some(c), Some(listener), Some(peers)) => {
                let state = RpcState {
                    raft: raft.clone(),
                    node_id: cfg.node_id,
                    addr: cfg.advertise_addr.clone(),
                    secret: c.secret.as_str().into(),
                    peers: peers.clone(),
                    refused: rpc_refused.clone(),
                };
                tokio::spawn(rpc::serve(listener, state.clone()));
                rpc_state = Some(state.clone());
                if !raft.is_initialized().await? {
                    tokio::spawn(super::formation::form_or_join(
                        state,
                        c.bootstrap_expect,
                        c.join.clone(),
                    ));
                }
            }
            _ => {
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
            }
        }
        let leadership = Arc::new(watch::Sender::new(Leadership { leader: None, term: 0 }));
        follow_leadership(raft.metrics(), leadership.clone());
        Ok(Self {
            raft,
            shared,
            node_id: cfg.node_id,
            log,
            leadership,
            peers,
            rpc: rpc_state,
            not_member: std::sync::atomic::AtomicBool::new(false),
            snapshot_dir: cfg.data_dir.join("snapshots"),
            read_rounds: std::sync::atomic::AtomicU64::new(0),
            read_turn: tokio::sync::Mutex::new(()),
            rpc_refused,
        })
    }

    /// Wait until some node leads (a restarted single node elects itself within an election timeout).
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| known_leader(m).is_some(), "a leader is elected")
            .await
            .context("no Raft leader")?;
        Ok(known_leader(&m).expect("waited for it"))
    }

    pub fn is_leader(&self) -> bool {
        known_leader(&self.raft.metrics().borrow()) == Some(self.node_id)
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
    /// The applied index and the known leader, without copying the rest of the metrics (every
    /// GraphQL answer over HTTP says which state it was read from).
    pub fn applied_and_leader(&self) -> (Option<u64>, Option<NodeId>) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.last_applied.map(|l| l.index), known_leader(&m))
    }

    pub fn cluster_status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        ClusterStatus {
            node_id: self.node_id,
            leader: known_leader(&m),
            term: m.current_term,
            running: m.running_state.is_ok(),
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            voters: m.membership_config.membership().voter_ids().collect(),
            members: {
                let membership = m.membership_config.membership();
                let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
                membership
                    .nodes()
                    .map(|(id, node)| MemberStatus {
                        node_id: *id,
                        raft_addr: node.addr.clone(),
                        voter: voters.contains(id),
                        matched_index: if *id == self.node_id {
                            m.last_log_index
                        } else {
                            m.replication
                                .as_ref()
                                .and_then(|r| r.get(id).copied().flatten())
                                .map(|l| l.index)
                        },
                    })
                    .collect()
            },
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            rpc_refused: self.rpc_refused.get(),
        }
    }

    /// Internode requests refused for the cluster secret, as a Prometheus counter.
    pub fn rpc_refused_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.rpc_refused.clone()
    }

    pub fn size_on_disk(&self) -> u64 {
        self.log.size_on_disk()
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
            cluster: None,
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

        // A leader's loop writes only for the term it leads in.
        let key = |id: &str| proposal::RevokeApiKey { id: id.to_string() };
        let stale = store.propose_fenced(led.term + 1, key("k1")).await;
        assert!(
            matches!(stale, Err(ProposalError::NotApplied(ProposeError::NotLeader { .. }))),
            "{stale:?}"
        );
        let current = store.propose_fenced(led.term, key("k1")).await;
        assert!(
            matches!(
                current,
                Err(ProposalError::Refused(crate::fleet::Refusal::UnknownApiKey(_)))
            ),
            "applied in its term and answered by the state machine: {current:?}"
        );
        store.shutdown().await;
    }
}
