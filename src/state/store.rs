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
                if let Err(fatal) = &m.running_state {
                    tracing::error!(error = %fatal, "the Raft core stopped: this node serves no writes and leads nothing until it is restarted");
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
        let sm = StateMachine::open(&db, cfg.data_dir.join("snapshots"))?;
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

    /// A consistent backup: a snapshot of this node's state taken now (covering every entry it
    /// had applied when asked), as the snapshot file open at its start (a later snapshot
    /// replaces the file's name, not this open file). `stagefleet restore` starts a new data
    /// dir from it.
    pub async fn backup(&self, timeout: Duration) -> anyhow::Result<std::fs::File> {
        let applied = self.cluster_status().last_applied_index.unwrap_or(0);
        self.snapshot_through(applied, tokio::time::Instant::now() + timeout)
            .await?;
        let current = super::snapshot::SnapshotStore::new(self.snapshot_dir.clone())?.open()?;
        Ok(current.context("no snapshot was written")?.1)
    }

    /// Hand leadership to `to` (or to the most caught-up other voter): that node starts an
    /// election, which it wins with a log as current as the others'. Answers the node asked.
    pub async fn transfer_leader(&self, to: Option<NodeId>) -> Result<NodeId, String> {
        let rpc = self
            .rpc
            .as_ref()
            .ok_or("a single node has no one to hand leadership to")?;
        let status = self.cluster_status();
        let target = match to {
            Some(t) => t,
            None => status
                .members
                .iter()
                .filter(|m| m.voter && Some(m.node_id) != status.leader)
                .max_by_key(|m| (m.matched_index, std::cmp::Reverse(m.node_id)))
                .map(|m| m.node_id)
                .ok_or("no other voter to hand leadership to")?,
        };
        let member = status
            .members
            .iter()
            .find(|m| m.node_id == target && m.voter)
            .ok_or_else(|| format!("node {target} is not a voting member"))?;
        if status.leader == Some(target) {
            return Ok(target);
        }
        let target_addr = member.raft_addr.clone();
        let others: Vec<(NodeId, String)> = status
            .members
            .iter()
            .filter(|m| m.voter && m.node_id != target)
            .map(|m| (m.node_id, m.raft_addr.clone()))
            .collect();
        // Everyone but the target stays quiet: the leader stops its heartbeats and nobody else
        // starts an election, so once the followers' leader lease (election_timeout_max) has run
        // out, the target's election is the only one. Writes pause meanwhile.
        let quiet = Timers {
            heartbeat: Some(false),
            elect: Some(false),
        };
        let outcome = async {
            for (id, addr) in &others {
                self.timers_of(rpc, *id, addr, &quiet).await?;
            }
            tokio::time::sleep(Duration::from_millis(ELECTION_TIMEOUT_MAX_MS + 100)).await;
            if target == self.node_id {
                self.raft.trigger().elect().await.map_err(|e| e.to_string())?;
            } else {
                rpc.peers
                    .call::<_, Result<(), String>>(&target_addr, "/raft/elect", &(), Duration::from_secs(5))
                    .await
                    .map_err(|e| e.to_string())??;
            }
            self.raft
                .wait(Some(Duration::from_secs(5)))
                .metrics(|m| m.current_leader == Some(target), "the target leads")
                .await
                .map_err(|e| format!("node {target} did not take over: {e}"))?;
            Ok::<_, String>(())
        }
        .await;
        // Whatever happened, everyone's timers run again.
        let normal = Timers {
            heartbeat: Some(true),
            elect: Some(true),
        };
        for (id, addr) in &others {
            if let Err(e) = self.timers_of(rpc, *id, addr, &normal).await {
                tracing::warn!(node = id, error = %e, "could not switch a node's Raft timers back on");
            }
        }
        outcome.map(|()| target)
    }

    async fn timers_of(&self, rpc: &RpcState, id: NodeId, addr: &str, t: &Timers) -> Result<(), String> {
        if id == self.node_id {
            rpc::set_timers(&self.raft, t);
            return Ok(());
        }
        rpc.peers
            .call::<_, Result<(), String>>(addr, "/raft/timers", t, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Take another member out of the cluster (through the leader): for a node that is gone.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<(), String> {
        let rpc = self.rpc.as_ref().ok_or("a single node is not in a cluster")?;
        if node_id == self.node_id {
            return self.leave().await;
        }
        rpc::remove_member(rpc, node_id).await
    }

    /// Take this node out of the cluster (through the leader). It then serves no writes.
    pub async fn leave(&self) -> Result<(), String> {
        let rpc = self.rpc.as_ref().ok_or("a single node is not in a cluster")?;
        rpc::remove_member(rpc, self.node_id).await?;
        self.not_member.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!("this node left the cluster: it takes no more writes; stop it");
        Ok(())
    }

    /// `Some(why)` when this cluster node is known not to be a member (it left, was removed,
    /// or has not joined yet): it serves no writes and is not ready.
    pub fn not_a_member(&self) -> Option<&'static str> {
        if self.not_member.load(std::sync::atomic::Ordering::Relaxed) {
            Some("this node left or was removed from the cluster")
        } else if self.removed() {
            Some("this node is not a member of the cluster yet")
        } else {
            None
        }
    }

    /// Whether this cluster member has been removed from the membership it knows.
    fn removed(&self) -> bool {
        self.peers.is_some()
            && !self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .any(|(id, _)| *id == self.node_id)
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

    /// Replicate and apply `p`; answers its output once it is committed, applied and flushed.
    pub async fn propose<P: Proposal>(&self, p: P) -> Result<P::Output, ProposalError> {
        Ok(self.propose_logged(p).await?.1)
    }

    /// A leader's loop's write for its `term`: taken only while this node leads in that term
    /// (never forwarded), and applied only if the log takes it in that term (a leader deposed
    /// and re-elected in between does not count) — otherwise refused, and nothing changes.
    pub async fn propose_fenced<P: Proposal>(&self, term: u64, p: P) -> Result<P::Output, ProposalError> {
        let now = *self.leadership.borrow();
        if now.leader != Some(self.node_id) || now.term != term {
            return Err(ProposalError::NotApplied(ProposeError::NotLeader {
                leader: now.leader,
                leader_addr: None,
            }));
        }
        let cmd = Command::Fenced {
            term,
            command: Box::new(p.into_command()),
        };
        let label = cmd.label();
        let (_, response) = self.write_here(cmd).await?;
        Ok(proposal::answer::<P>(label, response)?)
    }

    /// [`Store::propose`], also answering the entry's log id.
    pub async fn propose_logged<P: Proposal>(&self, p: P) -> Result<(LogId, P::Output), ProposalError> {
        let cmd = p.into_command();
        let label = cmd.label();
        let (log_id, response) = self.write(cmd).await?;
        Ok((log_id, proposal::answer::<P>(label, response)?))
    }

    async fn write(&self, cmd: Command) -> Result<(LogId, Response), ProposeError> {
        if self.peers.is_none() || self.is_leader() {
            return self.write_here(cmd).await;
        }
        self.forward(&cmd).await
    }

    /// Append through this node's Raft (it leads, or is told who does). In a cluster, a leader
    /// cut off from the majority never commits: the write is answered within a bound instead of
    /// held (the entry may still commit once the cluster heals, so a client retries — joins are
    /// idempotent per user).
    async fn write_here(&self, cmd: Command) -> Result<(LogId, Response), ProposeError> {
        if self.peers.is_none() {
            return self.client_write(cmd).await;
        }
        tokio::time::timeout(COMMIT_WITHIN, self.client_write(cmd))
            .await
            .unwrap_or_else(|_| {
                Err(ProposeError::Unavailable(format!(
                    "not committed within {} s: this node cannot reach a majority of the cluster",
                    COMMIT_WITHIN.as_secs()
                )))
            })
    }

    async fn client_write(&self, cmd: Command) -> Result<(LogId, Response), ProposeError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok((r.log_id, r.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader {
                leader: f.leader_id,
                leader_addr: f.leader_node.map(|n| n.addr),
            }),
            Err(e) => Err(ProposeError::Unavailable(e.to_string())),
        }
    }

    /// Wait until this node's state holds every write committed before now (a linearizable
    /// read barrier): for reads that must be current, such as a session looked up on another
    /// node than the one that seated it. Immediate on a single node; on the leader, a quorum
    /// confirms it still leads; on a follower, the leader's read index is applied here first.
    pub async fn catch_up(&self) -> Result<(), ProposeError> {
        if self.peers.is_none() {
            return Ok(());
        }
        // Reads share rounds: once a round that started after this read arrived has completed,
        // it covers this read too (rounds run one at a time, so the second one to complete after
        // arrival started after it). A burst of reads costs a few rounds, not one each.
        let arrived = self.read_rounds.load(std::sync::atomic::Ordering::Acquire);
        let _turn = self.read_turn.lock().await;
        if self.read_rounds.load(std::sync::atomic::Ordering::Acquire) >= arrived + 2 {
            return Ok(());
        }
        let done = self.read_round().await;
        if done.is_ok() {
            self.read_rounds.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        done
    }

    async fn read_round(&self) -> Result<(), ProposeError> {
        // The leader's confirmation round gives each follower one heartbeat interval to answer; a
        // busy moment misses it, so a failed round is tried again before the read is refused.
        let mut last = None;
        for attempt in 0..4u32 {
            match self.catch_up_once().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
        }
        Err(last.expect("tried"))
    }

    async fn catch_up_once(&self) -> Result<(), ProposeError> {
        let Some(peers) = &self.peers else {
            return Ok(());
        };
        let unavailable = |why: String| ProposeError::Unavailable(format!("a current read is not possible now: {why}"));
        if self.is_leader() {
            return rpc::confirmed_read_index(&self.raft)
                .await
                .map(drop)
                .map_err(unavailable);
        }
        let (_, addr) = self
            .leader_addr()
            .ok_or_else(|| unavailable("no leader is known".into()))?;
        let index = peers
            .call::<_, Result<u64, String>>(&addr, "/raft/read-index", &(), FORWARD_TIMEOUT)
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .map_err(unavailable)?;
        self.raft
            .wait(Some(FORWARD_TIMEOUT))
            .applied_index_at_least(Some(index), "the leader's read index is applied here")
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(())
    }

    /// A follower's write: sent to the leader (one request per write, so a batch of joins
    /// stays one request), answered once this node has applied it too, so what the caller reads
    /// next here includes it. Waits up to [`LEADER_WITHIN`] for a leader; a write that was sent
    /// but not answered is not sent again (it may have been applied).
    async fn forward(&self, cmd: &Command) -> Result<(LogId, Response), ProposeError> {
        let peers = self.peers.as_ref().expect("only a cluster member forwards");
        if let Some(why) = self.not_a_member() {
            return Err(ProposeError::Unavailable(format!(
                "{why}: it takes no writes; send them to a member"
            )));
        }
        let forwarded = rpc::Forwarded {
            from: self.node_id,
            command: cmd,
        };
        let deadline = tokio::time::Instant::now() + LEADER_WITHIN;
        let mut leadership = self.leadership();
        let mut last_problem = String::from("no leader is known");
        loop {
            let leader_addr = self.leader_addr();
            if let Some((leader, addr)) = leader_addr {
                if leader == self.node_id {
                    // Became the leader meanwhile.
                    return self.write_here(cmd.clone()).await;
                }
                match peers
                    .call::<_, ProposeAnswer>(&addr, "/raft/propose", &forwarded, FORWARD_TIMEOUT)
                    .await
                {
                    Ok(ProposeAnswer::Applied { log_id, response }) => {
                        let applied = self
                            .raft
                            .wait(Some(FORWARD_TIMEOUT))
                            .applied_index_at_least(Some(log_id.index), "a forwarded write is applied here")
                            .await;
                        if let Err(e) = applied {
                            tracing::warn!(index = log_id.index, error = %e, "a write the leader applied is not applied here yet");
                        }
                        return Ok((log_id, response));
                    }
                    Ok(ProposeAnswer::Unavailable(why)) => return Err(ProposeError::Unavailable(why)),
                    Ok(ProposeAnswer::NotMember) => {
                        self.not_member.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            leader,
                            "the leader says this node is not a member of the cluster: it takes no more writes"
                        );
                        return Err(ProposeError::Unavailable(
                            "this node left or was removed from the cluster: it takes no writes; send them to a member"
                                .into(),
                        ));
                    }
                    // The leader changed or died before it took the write: try the next one.
                    Ok(ProposeAnswer::NotLeader { .. }) => last_problem = format!("node {leader} no longer leads"),
                    Err(e @ CallError::Unreachable { .. }) => last_problem = e.to_string(),
                    Err(e) => {
                        return Err(ProposeError::Unavailable(format!(
                            "the leader (node {leader}) did not answer a forwarded write: {e}"
                        )));
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ProposeError::Unavailable(format!(
                    "no leader took the write within {} s ({last_problem}); this node may be cut off from the majority",
                    LEADER_WITHIN.as_secs()
                )));
            }
            // Until the leadership changes, or a moment passes (a dead leader is still named).
            let _ = tokio::time::timeout(Duration::from_millis(100).min(deadline - now), leadership.changed()).await;
        }
    }

    /// The leader this node knows of and its Raft address.
    fn leader_addr(&self) -> Option<(NodeId, String)> {
        match rpc::leader_of(&self.raft.metrics().borrow()) {
            (Some(leader), Some(addr)) => Some((leader, addr)),
            _ => None,
        }
    }

    /// Snapshot the state now and purge the log through `index`, so what entries up to it said
    /// survives only as the state they produced. For an entry whose payload must not stay on disk
    /// (a signing key in an old form): the snapshot file is replaced too.
    pub async fn compact_through(&self, index: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.snapshot_through(index, deadline).await?;
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

    /// Until a snapshot covers `index`. Openraft builds one snapshot at a time and ignores a
    /// trigger while one runs, hence the retry.
    async fn snapshot_through(&self, index: u64, deadline: tokio::time::Instant) -> anyhow::Result<()> {
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
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no snapshot through index {index} in time"
            );
        }
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
