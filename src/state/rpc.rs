//! Internode RPC, the server side: the routes a node serves on its Raft port (`raft_addr`),
//! separate from the public HTTP port. Every request must carry the cluster secret
//! ([`network::SECRET_HEADER`]); one without it, or with another, is refused (401) and counted.
//!
//! - `/raft/append`, `/raft/vote`, `/raft/snapshot`: openraft's RPCs (snapshots in chunks);
//! - `/raft/propose`: a follower's write, applied here if this node leads;
//! - `/raft/hello`: who this node is (id, address, whether it is in a cluster), for bootstrap;
//! - `/raft/join`: add a node to the cluster (as a learner, then a voter), forwarded to the leader.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Json, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{Deserialize, Serialize};

use super::network::{Peers, SECRET_HEADER};
use super::{Command, LogId, NodeId, Raft, Response, TypeConfig};

/// Largest internode request body: a batch of entries, or one snapshot chunk (1 MiB, see
/// `Store::open`) with room to spare.
const BODY_LIMIT: usize = 64 << 20;
/// How long a join forwarded to the leader may take (adding a learner waits until it caught up).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct RpcState {
    pub raft: Raft,
    pub node_id: NodeId,
    pub addr: String,
    pub secret: Arc<str>,
    pub peers: Peers,
    /// Internode requests refused for a missing or wrong cluster secret.
    pub refused: prometheus_client::metrics::counter::Counter,
}

/// A follower's write as the leader answers it.
#[derive(Debug, Serialize, Deserialize)]
pub enum ProposeAnswer {
    Applied {
        log_id: LogId,
        response: Response,
    },
    /// Applied here, and the sender takes the answer from its own apply of the entry: a join
    /// batch it forwarded as its `origin` (see `Command::AdmitViewers`).
    Committed {
        log_id: LogId,
    },
    /// This node does not lead (any more); the leader it knows of, if any.
    NotLeader {
        leader: Option<NodeId>,
        leader_addr: Option<String>,
    },
    Unavailable(String),
    /// The sender is not a member of the cluster (it left or was removed).
    NotMember,
}

/// A follower's write, sent to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded<C> {
    pub from: NodeId,
    pub command: C,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub node_id: NodeId,
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloAnswer {
    pub node_id: NodeId,
    pub addr: String,
    /// Member of a cluster already (it has a membership in its log).
    pub initialized: bool,
    pub leader: Option<NodeId>,
    pub leader_addr: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_id: NodeId,
    pub addr: String,
}

pub fn router(state: RpcState) -> axum::Router {
    axum::Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/propose", post(propose))
        .route("/raft/hello", post(hello))
        .route("/raft/join", post(join))
        .route("/raft/remove", post(remove))
        .route("/raft/elect", post(elect))
        .route("/raft/timers", post(timers))
        .route("/raft/read-index", post(read_index))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serve the Raft port until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: RpcState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "the Raft port stopped serving");
    }
}

async fn authenticate(State(s): State<RpcState>, req: Request, next: Next) -> HttpResponse {
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_secret(given, s.secret.as_bytes()) {
        s.refused.inc();
        tracing::warn!(path = %req.uri().path(), "internode request refused: wrong or missing cluster secret");
        return (StatusCode::UNAUTHORIZED, "cluster secret refused\n").into_response();
    }
    next.run(req).await
}

/// Compare in time that depends on the length only, not on where the bytes differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn append(State(s): State<RpcState>, Json(req): Json<AppendEntriesRequest<TypeConfig>>) -> impl IntoResponse {
    Json(s.raft.append_entries(req).await)
}

async fn vote(State(s): State<RpcState>, Json(req): Json<VoteRequest<NodeId>>) -> impl IntoResponse {
    Json(s.raft.vote(req).await)
}

async fn snapshot(State(s): State<RpcState>, Json(req): Json<InstallSnapshotRequest<TypeConfig>>) -> impl IntoResponse {
    Json(s.raft.install_snapshot(req).await)
}

/// How long a leader waits for a majority: to take a write, or to confirm it still leads.
pub const COMMIT_WITHIN: Duration = Duration::from_secs(5);

async fn propose(State(s): State<RpcState>, Json(req): Json<Forwarded<Command>>) -> Json<ProposeAnswer> {
    let member = s
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&req.from)
        .is_some();
    if !member {
        return Json(ProposeAnswer::NotMember);
    }
    let cmd = req.command;
    // A follower that names itself as a join batch's origin reads the seats from its own apply.
    let answered_there = cmd.origin() == Some(req.from);
    let Ok(written) = tokio::time::timeout(COMMIT_WITHIN, s.raft.client_write(cmd)).await else {
        return Json(ProposeAnswer::Unavailable(format!(
            "not committed within {} s: the leader cannot reach a majority of the cluster",
            COMMIT_WITHIN.as_secs()
        )));
    };
    Json(match written {
        Ok(r) if answered_there => ProposeAnswer::Committed { log_id: r.log_id },
        Ok(r) => ProposeAnswer::Applied {
            log_id: r.log_id,
            response: r.data,
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => ProposeAnswer::NotLeader {
            leader: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        },
        Err(e) => ProposeAnswer::Unavailable(e.to_string()),
    })
}

/// The leader Raft's metrics name and its Raft address (from the membership), if known.
pub fn leader_of(m: &openraft::RaftMetrics<NodeId, BasicNode>) -> (Option<NodeId>, Option<String>) {
    let addr = m
        .current_leader
        .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
    (m.current_leader, addr)
}

pub async fn hello_answer(s: &RpcState) -> HelloAnswer {
    let (leader, leader_addr) = leader_of(&s.raft.metrics().borrow());
    HelloAnswer {
        node_id: s.node_id,
        addr: s.addr.clone(),
        initialized: s.raft.is_initialized().await.unwrap_or(false),
        leader,
        leader_addr,
    }
}

/// A membership change: made here if this node leads (`here`), else `req` is sent to the
/// leader's `path`, which makes it.
async fn at_leader<Req: Serialize, F: std::future::Future<Output = Result<(), String>>>(
    s: &RpcState,
    path: &str,
    req: &Req,
    here: impl FnOnce() -> F,
) -> Result<(), String> {
    let (leader, leader_addr) = leader_of(&s.raft.metrics().borrow());
    match leader {
        Some(l) if l == s.node_id => here().await,
        Some(_) => {
            let addr = leader_addr.ok_or("the leader's address is unknown")?;
            s.peers
                .call::<_, Result<(), String>>(&addr, path, req, JOIN_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?
        }
        None => Err("no leader right now (an election is under way); retry".into()),
    }
}

async fn hello(State(s): State<RpcState>, Json(from): Json<Hello>) -> Json<HelloAnswer> {
    tracing::debug!(node = from.node_id, addr = %from.addr, "hello from a peer");
    Json(hello_answer(&s).await)
}

async fn join(State(s): State<RpcState>, Json(req): Json<JoinRequest>) -> Json<Result<(), String>> {
    Json(add_member(&s, req).await)
}

/// Add `req` as a voter: on the leader, as a learner first (waiting until it caught up), then
/// as a voter; elsewhere, forwarded to the leader. A node that already votes is left as it is.
pub async fn add_member(s: &RpcState, req: JoinRequest) -> Result<(), String> {
    let votes = s
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == req.node_id);
    if votes {
        return Ok(());
    }
    at_leader(s, "/raft/join", &req, || async {
        tracing::info!(node = req.node_id, addr = %req.addr, "adding a node: learner first");
        s.raft
            .add_learner(req.node_id, BasicNode { addr: req.addr.clone() }, true)
            .await
            .map_err(|e| format!("adding node {} as a learner: {e}", req.node_id))?;
        s.raft
            .change_membership(
                openraft::ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id])),
                false,
            )
            .await
            .map_err(|e| format!("making node {} a voter: {e}", req.node_id))?;
        tracing::info!(node = req.node_id, "node added as a voter");
        Ok(())
    })
    .await
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub node_id: NodeId,
}

async fn remove(State(s): State<RpcState>, Json(req): Json<RemoveRequest>) -> Json<Result<(), String>> {
    Json(remove_member(&s, req.node_id).await)
}

/// Remove `node_id` from the cluster (voter or learner): on the leader, or forwarded to it.
pub async fn remove_member(s: &RpcState, node_id: NodeId) -> Result<(), String> {
    let member = s
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&node_id)
        .is_some();
    if !member {
        return Ok(());
    }
    at_leader(s, "/raft/remove", &RemoveRequest { node_id }, || async {
        tracing::info!(node = node_id, "removing a node from the cluster");
        s.raft
            .change_membership(openraft::ChangeMembers::RemoveVoters(BTreeSet::from([node_id])), false)
            .await
            .map_err(|e| format!("removing node {node_id}: {e}"))?;
        // A learner left over (not a voter any more) goes too.
        s.raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
            .await
            .map_err(|e| format!("removing node {node_id}: {e}"))?;
        Ok(())
    })
    .await
}

/// The leader's read index: once a quorum confirmed this node still leads, the log index every
/// read that must be current waits for. `Err` when this node does not lead.
async fn read_index(State(s): State<RpcState>) -> Json<Result<u64, String>> {
    Json(confirmed_read_index(&s.raft).await)
}

/// On the leader: its read index once a quorum confirmed it still leads (applied here by then).
pub async fn confirmed_read_index(raft: &Raft) -> Result<u64, String> {
    match tokio::time::timeout(COMMIT_WITHIN, raft.ensure_linearizable()).await {
        Ok(Ok(read)) => Ok(read.map_or(0, |l| l.index)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("a majority did not confirm the leader in time".into()),
    }
}

/// Switch this node's heartbeats (sent while it leads) and elections (started when a leader is
/// not heard from) on or off: how a leadership hand-over keeps everyone but the chosen node quiet.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Timers {
    pub heartbeat: Option<bool>,
    pub elect: Option<bool>,
}

pub fn set_timers(raft: &Raft, t: &Timers) {
    if let Some(on) = t.heartbeat {
        raft.runtime_config().heartbeat(on);
    }
    if let Some(on) = t.elect {
        raft.runtime_config().elect(on);
    }
}

async fn timers(State(s): State<RpcState>, Json(t): Json<Timers>) -> Json<Result<(), String>> {
    set_timers(&s.raft, &t);
    Json(Ok(()))
}

/// Start an election here: with a log as current as the others' (a voter that is caught up),
/// this node becomes the leader — how leadership is handed over.
async fn elect(State(s): State<RpcState>) -> Json<Result<(), String>> {
    Json(s.raft.trigger().elect().await.map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn only_the_same_secret_passes() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same_secret(b"", b"0123456789abcdef"));
    }
}
