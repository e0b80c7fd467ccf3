//! Internode RPC for openraft, the client side: HTTP/JSON to a peer's Raft port (`raft_addr`),
//! one pooled HTTP client for all peers, every request carrying the cluster secret. The server
//! side is [`super::rpc`]. A single node is a one-member cluster and never calls a peer; it has
//! no secret and no client calls are made.
//!
//! Besides openraft's three RPCs (append entries, vote, install snapshot — the snapshot already
//! arrives in chunks of `snapshot_max_chunk_size`), the same port carries what the cluster adds
//! around Raft: forwarding a write to the leader, hello (who is there, for bootstrap) and join.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{NodeId, TypeConfig};

/// The header every internode request carries the cluster secret in.
pub const SECRET_HEADER: &str = "x-stagefleet-cluster-secret";

/// What a peer call can fail with before any answer of the peer's own.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing listens there, or the connection was refused or reset before sending.
    #[error("{addr} is not reachable: {why}")]
    Unreachable { addr: String, why: String },
    /// The peer refused our cluster secret.
    #[error("{addr} refused this node's cluster secret (every node needs the same cluster_secret)")]
    Refused { addr: String },
    /// Sent, but no usable answer (time-out, broken connection, a body we cannot read).
    #[error("{addr}: {why}")]
    Failed { addr: String, why: String },
}

/// The HTTP client peers are called with, shared by Raft's RPCs and the cluster's own calls.
#[derive(Clone)]
pub struct Peers {
    http: reqwest::Client,
    secret: Arc<str>,
}

impl Peers {
    pub fn new(secret: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .expect("an HTTP client with a connect time-out builds");
        Peers {
            http,
            secret: secret.into(),
        }
    }

    /// POST `body` as JSON to `http://{addr}{path}` and read a JSON answer within `timeout`.
    pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let failed = |why: String| CallError::Failed {
            addr: addr.to_string(),
            why,
        };
        let response = self
            .http
            .post(format!("http://{addr}{path}"))
            .header(SECRET_HEADER, &*self.secret)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CallError::Unreachable {
                        addr: addr.to_string(),
                        why: root_cause(&e),
                    }
                } else {
                    failed(root_cause(&e))
                }
            })?;
        match response.status() {
            reqwest::StatusCode::UNAUTHORIZED => Err(CallError::Refused { addr: addr.to_string() }),
            s if !s.is_success() => Err(failed(format!("answered HTTP {s}"))),
            _ => {
                let bytes = response.bytes().await.map_err(|e| failed(root_cause(&e)))?;
                serde_json::from_slice(&bytes).map_err(|e| failed(format!("unreadable answer: {e}")))
            }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if std::ptr::eq(cause, e) {
        e.to_string()
    } else {
        format!("{e}: {cause}")
    }
}

/// openraft's factory of per-peer clients (one per target, all sharing [`Peers`]).
#[derive(Clone)]
pub struct Network {
    peers: Option<Peers>,
}

impl Network {
    /// `None`: a single node without a cluster secret; every RPC answers `Unreachable`.
    pub fn new(peers: Option<Peers>) -> Self {
        Network { peers }
    }
}

pub struct Peer {
    target: NodeId,
    addr: String,
    peers: Option<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

impl Peer {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        opt: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(peers) = &self.peers else {
            let why = AnyError::error(format!(
                "node {} is not reachable: this node runs without a cluster (no raft_addr)",
                self.target
            ));
            return Err(RPCError::Unreachable(Unreachable::new(&NetworkError::new(&why))));
        };
        let answer: Result<Resp, RaftError<NodeId, E>> = peers
            .call(&self.addr, path, req, opt.hard_ttl())
            .await
            .map_err(|e| match e {
                CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        opt: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("/raft/append", &req, &opt).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        opt: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.rpc("/raft/snapshot", &req, &opt).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        opt: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &req, &opt).await
    }
}
