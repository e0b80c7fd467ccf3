//! What a transition changed, as the domain says it: the state machine collects these while it
//! applies an entry and publishes them (with the entry's log index and time) on the store's bus.
//! Subscriptions, the stage loop and use cases awaiting an outcome read them; nothing here is
//! stored, so adding a variant changes no log or snapshot format.

use super::model::{BroadcastState, ReplicationState, StageFailure};

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The viewer left (`leaveBroadcast`).
    Left,
    /// Its lease ran out: no heartbeat or open subscription kept it.
    Expired,
    /// Its broadcast ended.
    BroadcastEnded,
    /// Its stage was deleted with `force`.
    Evicted,
    /// Its viewer never connected to IVS within `connect_grace_secs` (`release_unused_seats`).
    Unused,
}

/// A stage's step in its life, as the operator would name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageStep {
    /// The intent to create it is in the log; CreateStage is not yet answered.
    Creating,
    /// CreateStage answered; it takes viewers once the hosts' media reaches it (then `Ready`).
    Created,
    /// READY: it takes viewers (created, not draining, every publishing host's media flowing).
    Ready,
    /// It was READY and no longer is: a host's media does not reach it yet (no new viewers).
    Waiting,
    /// It takes no new viewers and is deleted once empty.
    Draining,
    /// One host's replication into it changed state.
    Replication {
        participant_id: String,
        state: ReplicationState,
    },
    /// CreateStage failed: the intent is forgotten (with its origin's broadcast if that never went live).
    CreateFailed(Option<StageFailure>),
    /// The intent to delete it is in the log.
    Deleting,
    /// A DeleteStage attempt failed; the intent stays and is retried.
    DeleteFailed(StageFailure),
    /// Gone from IVS and from the fleet.
    Deleted,
    /// A new leader took the pending intent over.
    Reclaimed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A broadcast appeared or moved to another state. `None`: it was forgotten (its origin
    /// could not be created, so it never went live).
    Broadcast {
        id: String,
        state: Option<BroadcastState>,
    },
    Stage {
        id: String,
        broadcast_id: String,
        step: StageStep,
    },
    /// `count` new viewers took seats on the stage in one entry (re-joins are not seats).
    Seated {
        broadcast_id: String,
        stage_id: String,
        count: u32,
    },
    /// `count` joins to the broadcast were refused in one entry for `reason` (a [`Refusal::label`](super::Refusal::label)).
    Refused {
        broadcast_id: String,
        reason: &'static str,
        count: u32,
    },
    SessionEnded {
        session_id: String,
        broadcast_id: String,
        stage_id: String,
        reason: EndReason,
    },
    /// A viewer was moved off a draining stage onto another one (its session stays).
    SessionMoved {
        session_id: String,
        broadcast_id: String,
        from: String,
        to: String,
    },
    /// Who publishes on a stage changed (hosts seen publishing, from IVS or the broadcaster page).
    Publishers {
        broadcast_id: String,
        stage_id: String,
    },
    /// `count` sessions had their leases renewed.
    Renewed {
        count: u32,
    },
    HostAdded {
        broadcast_id: String,
        user_id: String,
    },
    /// API keys, the signing key or the policy changed.
    Meta,
}
