//! GraphQL subscriptions (over graphql-transport-ws at `/graphql`): live stats, stage events, a
//! viewer's own seat, a broadcast's state and this node's status, all pushed from this node's
//! applied log (`crate::node::live`). Identical `stats`, `broadcast` and `node` subscriptions
//! share one execution per node (`crate::api::ws::groups`).

use std::time::Duration;

use async_graphql::{Context, Enum, ID, SimpleObject, Subscription};
use futures_util::{Stream, StreamExt};

use super::principal;
use super::types::*;
use crate::api::error::{ErrorCode, Gql};
use crate::fleet::{self, event};
use crate::node::live::{AssignmentUpdate, LiveStats as NodeLiveStats, StageEvent as NodeStageEvent};

fn stats_every(ctx: &Context<'_>) -> Duration {
    Duration::from_millis(node(ctx).cfg.stats_interval_ms.max(10))
}

pub struct Subscription;

#[Subscription]
impl Subscription {
    /// One broadcast's audience and rates: the current value at once, then at most one message
    /// per `stats_interval_ms`, only when something changed. Anyone may watch a live broadcast;
    /// hosts and admins any broadcast.
    async fn stats(&self, ctx: &Context<'_>, broadcast_id: ID) -> async_graphql::Result<impl Stream<Item = LiveStats>> {
        let n = node(ctx);
        // Refuse only on current state: a follower may not have applied the broadcast's start
        // (or its going live) that a viewer already saw through another node.
        let state = broadcast_state(n, broadcast_id.as_str(), |s| s == Some(fleet::BroadcastState::Live)).await;
        match state {
            None => return Err(ErrorCode::BroadcastNotFound.error(format!("no broadcast {}", broadcast_id.as_str()))),
            Some(fleet::BroadcastState::Live) => {}
            Some(_) => principal(ctx).require(fleet::Role::Host)?,
        }
        Ok(n.live
            .stats_stream(&broadcast_id, stats_every(ctx))
            .map(LiveStats::from))
    }

    /// Every step of the broadcast's stages: first the stages as they are (`current: true`), then
    /// each step as it is applied. Host or admin.
    async fn stage_events(
        &self,
        ctx: &Context<'_>,
        broadcast_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = StageEvent>> {
        principal(ctx).require(fleet::Role::Host)?;
        let n = node(ctx);
        // Opened on current state (a console's, rare): the first message holds every write
        // committed before it, whichever node made it.
        if broadcast_state(n, broadcast_id.as_str(), |_| false).await.is_none() {
            return Err(ErrorCode::BroadcastNotFound.error(format!("no broadcast {}", broadcast_id.as_str())));
        }
        Ok(n.live.stage_events(&broadcast_id).map(StageEvent::from))
    }

    /// A viewer's own seat: first where the session sits, with a fresh token; then, if it ends,
    /// why (and the subscription completes). While it is open the session stays alive — no
    /// heartbeat needed. The session id is the credential.
    async fn assignment(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Assignment>> {
        let updates = node(ctx).assignment(&session_id).await.gql()?;
        Ok(updates.map(Assignment::from))
    }

    /// A broadcast as it is, then again whenever it changes (at most once per
    /// `stats_interval_ms`); completes when the broadcast is forgotten. Host or admin.
    async fn broadcast(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<impl Stream<Item = Broadcast>> {
        principal(ctx).require(fleet::Role::Host)?;
        let n = node(ctx);
        // Opened on current state, as stageEvents: a host who saw the start answered LIVE through
        // one node must not be shown STARTING first by another that has not applied it yet.
        if broadcast_state(n, id.as_str(), |_| false).await.is_none() {
            return Err(ErrorCode::BroadcastNotFound.error(format!("no broadcast {}", id.as_str())));
        }
        Ok(n.live.broadcast_stream(&id, stats_every(ctx)).map(Broadcast))
    }

    /// This node: leader, term, applied index and its open subscriptions, at most once per
    /// `stats_interval_ms` and only when something changed. Host or admin.
    async fn node(&self, ctx: &Context<'_>) -> async_graphql::Result<impl Stream<Item = NodeStatus>> {
        principal(ctx).require(fleet::Role::Host)?;
        let n = node(ctx).clone();
        let every = stats_every(ctx);
        let first = node_status(&n);
        Ok(futures_util::stream::unfold(
            (n, None::<NodeStatus>, first),
            move |(n, last, next)| async move {
                let mut now = next;
                if last.is_some() {
                    loop {
                        tokio::time::sleep(every).await;
                        now = node_status(&n);
                        if last.as_ref() != Some(&now) {
                            break;
                        }
                    }
                }
                Some((now.clone(), (n, Some(now.clone()), now)))
            },
        ))
    }
}

/// One broadcast's live numbers.
#[derive(SimpleObject, Clone, PartialEq)]
pub struct LiveStats {
    pub broadcast_id: ID,
    /// Viewers seated now.
    pub viewers: u64,
    /// Seats on active stages.
    pub capacity: u64,
    pub stages_creating: u64,
    pub stages_active: u64,
    pub stages_deleting: u64,
    /// Viewers admitted over the broadcast's life.
    pub admitted_total: u64,
    /// Admitted joins per second over the last 10 s.
    pub joins_per_second: f64,
    /// Joins refused over the last 10 s, by reason.
    pub refusals: Vec<RefusalCount>,
    /// The applied log index these numbers are of.
    pub applied_index: u64,
    /// When the last change to this broadcast was made (Unix ms, the proposer's clock): compare
    /// with the time of receipt to measure delivery delay.
    pub changed_at_ms: i64,
}

#[derive(SimpleObject, Clone, PartialEq)]
pub struct RefusalCount {
    /// Why, in capitals (e.g. `CAPACITY_EXHAUSTED`, `CLIENT_SEAT_LIMIT`).
    pub reason: String,
    pub count: u64,
}

impl From<NodeLiveStats> for LiveStats {
    fn from(s: NodeLiveStats) -> Self {
        LiveStats {
            broadcast_id: ID(s.broadcast_id),
            viewers: s.stats.viewers,
            capacity: s.stats.capacity,
            stages_creating: s.stats.stages_creating,
            stages_active: s.stats.stages_active,
            stages_deleting: s.stats.stages_deleting,
            admitted_total: s.stats.admitted_total,
            joins_per_second: s.joins_per_second,
            refusals: s
                .refusals
                .into_iter()
                .map(|(reason, count)| RefusalCount {
                    reason: reason.to_ascii_uppercase(),
                    count,
                })
                .collect(),
            applied_index: s.applied_index,
            changed_at_ms: s.changed_at_ms,
        }
    }
}

/// A stage's step.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum StageStep {
    /// The intent to create it is in the log; IVS has not answered yet.
    Creating,
    /// IVS created it; it takes viewers once the hosts' media reaches it (`READY`).
    Created,
    /// READY: it takes viewers (created, not draining, every publishing host's media flowing).
    Ready,
    /// It was READY, and a host's media does not reach it yet: no new viewers until it does.
    Waiting,
    /// It takes no new viewers and is deleted once empty.
    Draining,
    /// One host's replication into it changed state (`participantId`, `replication`).
    Replication,
    /// IVS could not create it; the intent is dropped (`reason` says why).
    CreateFailed,
    /// The intent to delete it is in the log (no new viewers).
    Deleting,
    /// A DeleteStage attempt failed (`reason`); it is retried.
    DeleteFailed,
    /// Gone from IVS and from the fleet.
    Deleted,
    /// A new leader took the pending intent over.
    Reclaimed,
}

#[derive(SimpleObject)]
pub struct StageEvent {
    /// The log index of the change (for `current` events: the index the state is of).
    pub index: u64,
    /// When the change was made (Unix ms).
    pub at_ms: i64,
    pub stage_id: ID,
    pub step: StageStep,
    /// Why, for failures; for `REPLICATION`, the host participant and its new state.
    pub reason: Option<String>,
    /// The stage after the step (absent once deleted).
    pub stage: Option<Stage>,
    /// True for the first messages, which describe the stages as they were at subscription.
    pub current: bool,
}

impl From<NodeStageEvent> for StageEvent {
    fn from(e: NodeStageEvent) -> Self {
        let failure = |f: &fleet::StageFailure| format!("{:?}: {}", f.kind, f.message);
        let (step, reason) = match &e.step {
            event::StageStep::Creating => (StageStep::Creating, None),
            event::StageStep::Created => (StageStep::Created, None),
            event::StageStep::Ready => (StageStep::Ready, None),
            event::StageStep::Waiting => (StageStep::Waiting, None),
            event::StageStep::Draining => (StageStep::Draining, None),
            event::StageStep::Replication { participant_id, state } => {
                (StageStep::Replication, Some(format!("{participant_id}: {state:?}")))
            }
            event::StageStep::CreateFailed(f) => (StageStep::CreateFailed, f.as_ref().map(failure)),
            event::StageStep::Deleting => (StageStep::Deleting, None),
            event::StageStep::DeleteFailed(f) => (StageStep::DeleteFailed, Some(failure(f))),
            event::StageStep::Deleted => (StageStep::Deleted, None),
            event::StageStep::Reclaimed => (StageStep::Reclaimed, None),
        };
        StageEvent {
            index: e.index,
            at_ms: e.at_ms,
            stage_id: ID(e.stage_id),
            step,
            reason,
            stage: e.stage.map(Stage),
            current: e.current,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum AssignmentKind {
    /// Where the session sits, with a fresh token.
    Seated,
    /// The session was moved to another stage (its stage drained): switch to `stage` with `token`.
    Moved,
    /// The session ended (`reason`); nothing follows.
    Ended,
}

/// Why a session ended.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum EndReason {
    /// The viewer left.
    Left,
    /// Nothing renewed it (no open `assignment`, no heartbeat) for the session lease.
    Expired,
    /// Its broadcast ended.
    BroadcastEnded,
    /// An operator deleted its stage with `force`.
    Evicted,
    /// Its viewer never connected to IVS within `connect_grace_secs` (`release_unused_seats`).
    Unused,
    /// It is gone, and this node did not see why (it caught up from a snapshot).
    Unknown,
}

/// A viewer's seat, as `assignment` sends it.
#[derive(SimpleObject)]
pub struct Assignment {
    pub kind: AssignmentKind,
    pub session: Session,
    /// The stage to be on (for `SEATED`).
    pub stage: Option<Stage>,
    /// A subscribe-only token for `stage` (for `SEATED`).
    pub token: Option<String>,
    pub token_expires_at: Option<String>,
    /// Why the session ended (for `ENDED`).
    pub reason: Option<EndReason>,
}

impl From<AssignmentUpdate> for Assignment {
    fn from(u: AssignmentUpdate) -> Self {
        match u {
            AssignmentUpdate::Seated {
                session,
                stage,
                token,
                expires_at,
            } => Assignment {
                kind: AssignmentKind::Seated,
                session: Session(session),
                stage: Some(Stage(stage)),
                token: Some(token),
                token_expires_at: Some(rfc3339(expires_at * 1000)),
                reason: None,
            },
            AssignmentUpdate::Moved {
                session,
                stage,
                token,
                expires_at,
            } => Assignment {
                kind: AssignmentKind::Moved,
                session: Session(session),
                stage: Some(Stage(stage)),
                token: Some(token),
                token_expires_at: Some(rfc3339(expires_at * 1000)),
                reason: None,
            },
            AssignmentUpdate::Ended { session, reason } => Assignment {
                kind: AssignmentKind::Ended,
                session: Session(session),
                stage: None,
                token: None,
                token_expires_at: None,
                reason: Some(match reason {
                    Some(event::EndReason::Left) => EndReason::Left,
                    Some(event::EndReason::Expired) => EndReason::Expired,
                    Some(event::EndReason::BroadcastEnded) => EndReason::BroadcastEnded,
                    Some(event::EndReason::Evicted) => EndReason::Evicted,
                    Some(event::EndReason::Unused) => EndReason::Unused,
                    None => EndReason::Unknown,
                }),
            },
        }
    }
}

/// A broadcast's state — local while `settled` holds of it, else as of every write committed
/// before now (a follower may not yet have applied a start made through another node); `|_| false`
/// always reads current state. When no current read is possible (cut off from the majority), the
/// local state answers.
async fn broadcast_state(
    n: &crate::node::Node,
    id: &str,
    settled: impl Fn(Option<fleet::BroadcastState>) -> bool,
) -> Option<fleet::BroadcastState> {
    let state = |v: &crate::state::View| v.fleet.broadcasts.get(id).map(|b| b.state);
    let view = n.store.view_where(|v| settled(state(v))).await;
    state(&view.unwrap_or_else(|_| n.store.view()))
}

/// This node as `node` shows it (the query and the subscription).
pub fn node_status(n: &crate::node::Node) -> NodeStatus {
    let c = n.store.cluster_status();
    NodeStatus {
        node_id: c.node_id,
        leader_id: c.leader,
        is_leader: c.is_leader(),
        term: c.term,
        last_applied_index: c.last_applied_index,
        ivs_backend: n.backend_label.clone(),
        subscribers: n.metrics.subscriptions_open.get().max(0) as u64,
        members: c
            .members
            .iter()
            .map(|m| ClusterMember {
                node_id: m.node_id,
                raft_addr: m.raft_addr.clone(),
                voter: m.voter,
                lag: if c.is_leader() { m.lag(c.last_log_index) } else { None },
            })
            .collect(),
    }
}
