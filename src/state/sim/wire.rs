//! The simulation's network: openraft's three RPCs delivered in memory to the target node's Raft,
//! as the JSON the real Raft port carries, delayed, lost (requests and answers) and cut (per
//! link and direction) by a seeded die.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, BasicNode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::NODES;
use crate::state::machine::Shared;
use crate::state::{NodeId, Raft, TypeConfig};

/// Messages lost in a thousand while no fault adds to it.
const LOSS_PERMILLE: u32 = 20;
/// A message takes 0 to this many ms each way.
const MAX_DELAY_MS: u64 = 8;

/// The simulated network: who is up, which links are cut, and the dice for every message.
pub(super) struct Wire {
    /// The nodes running now.
    pub(super) up: Mutex<BTreeMap<NodeId, Running>>,
    /// `(from, to)`: messages from `from` to `to` are not delivered while faults cut it (counted:
    /// faults overlap, and the link is up again when the last of them heals).
    pub(super) cut: Mutex<BTreeMap<(NodeId, NodeId), u32>>,
    rng: Mutex<StdRng>,
    pub(super) loss_permille: AtomicU32,
    pub(super) delivered: AtomicU64,
    pub(super) lost: AtomicU64,
    pub(super) snapshot_chunks: AtomicU64,
}

impl Wire {
    pub(super) fn new(seed: u64) -> Self {
        Wire {
            up: Mutex::default(),
            cut: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            loss_permille: AtomicU32::new(LOSS_PERMILLE),
            delivered: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            snapshot_chunks: AtomicU64::new(0),
        }
    }

    /// How long the next message takes, and whether it is lost on the way.
    fn fate(&self) -> (Duration, bool) {
        let mut rng = self.rng.lock().unwrap();
        let delay = Duration::from_millis(rng.random_range(0..=MAX_DELAY_MS));
        let lost = rng.random_range(0..1_000) < self.loss_permille.load(Ordering::Relaxed);
        (delay, lost)
    }

    fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.lock().unwrap().contains_key(&(from, to))
    }

    /// `to`'s Raft, if it runs and the link from `from` carries messages.
    fn reach(&self, from: NodeId, to: NodeId) -> Option<Raft> {
        if !self.link_up(from, to) {
            return None;
        }
        self.up.lock().unwrap().get(&to).map(|n| n.raft.clone())
    }

    pub(super) fn cut(&self, links: &[(NodeId, NodeId)], cut: bool) {
        let mut cuts = self.cut.lock().unwrap();
        for link in links {
            let n = cuts.entry(*link).or_default();
            if cut {
                *n += 1;
            } else {
                *n -= 1;
                if *n == 0 {
                    cuts.remove(link);
                }
            }
        }
    }

    /// Both ways between `node` and every other node.
    pub(super) fn links_of(node: NodeId) -> Vec<(NodeId, NodeId)> {
        NODES
            .into_iter()
            .filter(|n| *n != node)
            .flat_map(|other| [(node, other), (other, node)])
            .collect()
    }
}

/// The JSON round trip every internode message makes between real nodes.
fn over_the_wire<T: Serialize + DeserializeOwned>(value: &T) -> T {
    serde_json::from_slice(&serde_json::to_vec(value).expect("encodes")).expect("decodes")
}

#[derive(Clone)]
pub(super) struct SimNetwork {
    pub(super) from: NodeId,
    pub(super) wire: Arc<Wire>,
}

pub(super) struct SimPeer {
    from: NodeId,
    to: NodeId,
    wire: Arc<Wire>,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimPeer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> SimPeer {
        SimPeer {
            from: self.from,
            to: target,
            wire: self.wire.clone(),
        }
    }
}

type Rpc<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

fn network_error<E: std::error::Error>(why: String) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&AnyError::error(why)))
}

impl SimPeer {
    async fn deliver<Req, Resp, E, F, Fut>(&self, req: Req, opt: &RPCOption, call: F) -> Rpc<Resp, E>
    where
        Req: Serialize + DeserializeOwned,
        Resp: Serialize + DeserializeOwned,
        E: std::error::Error + Serialize + DeserializeOwned,
        F: FnOnce(Raft, Req) -> Fut,
        Fut: Future<Output = Result<Resp, RaftError<NodeId, E>>>,
    {
        let (from, to) = (self.from, self.to);
        let trip = async {
            let (delay, lost) = self.wire.fate();
            tokio::time::sleep(delay).await;
            let Some(raft) = self.wire.reach(from, to) else {
                let why = AnyError::error(format!("node {to} is not reachable from node {from}"));
                return Err(RPCError::Unreachable(Unreachable::new(&why)));
            };
            if lost {
                self.wire.lost.fetch_add(1, Ordering::Relaxed);
                return Err(network_error(format!("request from {from} to {to} lost")));
            }
            let answer = call(raft, over_the_wire(&req)).await;
            let (delay, lost) = self.wire.fate();
            tokio::time::sleep(delay).await;
            if lost || !self.wire.link_up(to, from) {
                self.wire.lost.fetch_add(1, Ordering::Relaxed);
                return Err(network_error(format!("answer from {to} to {from} lost")));
            }
            self.wire.delivered.fetch_add(1, Ordering::Relaxed);
            over_the_wire(&answer).map_err(|e| RPCError::RemoteError(RemoteError::new(to, e)))
        };
        match tokio::time::timeout(opt.hard_ttl(), trip).await {
            Ok(answer) => answer,
            Err(_) => Err(network_error(format!(
                "no answer from {to} within {:?}",
                opt.hard_ttl()
            ))),
        }
    }
}

impl RaftNetwork<TypeConfig> for SimPeer {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        opt: RPCOption,
    ) -> Rpc<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.deliver(req, &opt, |raft, req| async move { raft.append_entries(req).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        opt: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.wire.snapshot_chunks.fetch_add(1, Ordering::Relaxed);
        self.deliver(req, &opt, |raft, req| async move { raft.install_snapshot(req).await })
            .await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        opt: RPCOption,
    ) -> Rpc<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.deliver(req, &opt, |raft, req| async move { raft.vote(req).await })
            .await
    }
}

pub(super) struct Running {
    pub(super) raft: Raft,
    pub(super) shared: Arc<Shared>,
}
