//! Typed proposals: one small struct per kind of [`Command`], knowing which [`Response`] shape its
//! apply answers with. `Store::propose` takes one and returns its output, so the three ways a
//! proposal can fail — not applied, refused, answered with the wrong shape — are told apart in
//! one place instead of in every use case. `Command` and `Response` stay the log's (serde) format;
//! these structs are never stored.

use std::collections::{BTreeMap, BTreeSet};

use super::{Command, NodeId, Response};
use crate::fleet::admission::{FleetPolicy, PolicyPatch};
use crate::fleet::transition::{JoinRequest, ReplicationReport, Seated};
use crate::fleet::{
    ApiKeyRecord, Broadcast, Fanout, Host, Millis, Refusal, Session, SigningKeyRecord, Stage, StageFailure, StageRole,
    StageUrls,
};

/// A command together with the answer its apply gives.
pub trait Proposal: Send + 'static {
    type Output: Send + 'static;
    fn into_command(self) -> Command;
    /// This command's answer; `None` when the response has another shape. A `Response::Refused`
    /// never gets here (`Store::propose` answers it as a refusal).
    fn output(r: Response) -> Option<Self::Output>;
}

/// Why a command was not applied at all (nothing changed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader; the leader is {leader:?}")]
    NotLeader {
        leader: Option<NodeId>,
        leader_addr: Option<String>,
    },
    #[error("the replicated store is unavailable: {0}")]
    Unavailable(String),
}

/// Why a proposal gave no output.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProposalError {
    /// The log did not take it (not the leader, the store is unavailable).
    #[error(transparent)]
    NotApplied(#[from] ProposeError),
    /// Applied, and refused by the state machine: nothing changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Applied, but answered with another shape than the command's: a bug, not the client's
    /// mistake.
    #[error("the state machine answered {command} with {response}")]
    WrongAnswer {
        command: &'static str,
        response: &'static str,
    },
}

/// Answer through `Store::propose`: a refusal is an error, any other shape is checked by `P`.
pub(super) fn answer<P: Proposal>(command: &'static str, r: Response) -> Result<P::Output, ProposalError> {
    match r {
        Response::Refused(refusal) => Err(refusal.into()),
        r => {
            let response = r.label();
            P::output(r).ok_or_else(|| {
                tracing::error!(command, response, "the state machine answered with the wrong shape");
                ProposalError::WrongAnswer { command, response }
            })
        }
    }
}

/// `impl Proposal for $name { .. }` where the output is one `Response` pattern.
macro_rules! proposal {
    ($name:ident => $out:ty, $pat:pat => $val:expr, |$s:ident| $cmd:expr) => {
        impl Proposal for $name {
            type Output = $out;
            fn into_command(self) -> Command {
                let $s = self;
                $cmd
            }
            fn output(r: Response) -> Option<$out> {
                match r {
                    $pat => Some($val),
                    _ => None,
                }
            }
        }
    };
}

pub struct SetPolicy(pub FleetPolicy);
proposal!(SetPolicy => (), Response::Done => (), |s| Command::SetPolicy(s.0));

/// Answers the policy as it is after the patch.
pub struct PatchPolicy(pub PolicyPatch);
proposal!(PatchPolicy => FleetPolicy, Response::Policy(p) => p, |s| Command::PatchPolicy(s.0));

pub struct SetSigningKey(pub SigningKeyRecord);
proposal!(SetSigningKey => (), Response::Done => (), |s| Command::SetSigningKey(s.0));

pub struct CreateApiKey(pub ApiKeyRecord);
proposal!(CreateApiKey => ApiKeyRecord, Response::ApiKey(k) => k, |s| Command::CreateApiKey(s.0));

pub struct RevokeApiKey {
    pub id: String,
}
proposal!(RevokeApiKey => ApiKeyRecord, Response::ApiKey(k) => k, |s| Command::RevokeApiKey { id: s.id });

/// Answers the origin stage's intent.
pub struct StartBroadcast {
    pub id: String,
    pub name: String,
    pub now: Millis,
    pub max_seats_per_client: Option<u32>,
    pub fanout: Fanout,
}
proposal!(StartBroadcast => Stage, Response::Stage(s) => s, |s| Command::StartBroadcast {
    id: s.id,
    name: s.name,
    now: s.now,
    max_seats_per_client: s.max_seats_per_client,
    fanout: s.fanout,
});

/// Answers the new stage's intent.
pub struct AddStage {
    pub broadcast_id: String,
    pub role: StageRole,
    pub now: Millis,
}
proposal!(AddStage => Stage, Response::Stage(s) => s, |s| Command::AddStage {
    broadcast_id: s.broadcast_id,
    role: s.role,
    now: s.now,
});

pub struct StageCreated {
    pub stage_id: String,
    pub intent_term: u64,
    pub arn: String,
    pub endpoints: StageUrls,
    pub now: Millis,
}
proposal!(StageCreated => Stage, Response::Stage(s) => s, |s| Command::StageCreated {
    stage_id: s.stage_id,
    intent_term: s.intent_term,
    arn: s.arn,
    endpoints: s.endpoints,
    now: s.now,
});

pub struct StageCreateFailed {
    pub stage_id: String,
    pub intent_term: u64,
    pub failure: StageFailure,
}
proposal!(StageCreateFailed => (), Response::Done => (), |s| Command::StageCreateFailed {
    stage_id: s.stage_id,
    intent_term: s.intent_term,
    failure: Some(s.failure),
});

pub struct StageDeleteFailed {
    pub stage_id: String,
    pub intent_term: u64,
    pub failure: StageFailure,
}
proposal!(StageDeleteFailed => (), Response::Done => (), |s| Command::StageDeleteFailed {
    stage_id: s.stage_id,
    intent_term: s.intent_term,
    failure: s.failure,
});

pub struct ReclaimIntent {
    pub stage_id: String,
}
proposal!(ReclaimIntent => Stage, Response::Stage(s) => s, |s| Command::ReclaimIntent { stage_id: s.stage_id });

/// Answers the stage's deletion intent and how many sessions were ended.
pub struct DeleteStage {
    pub stage_id: String,
    pub force: bool,
}
proposal!(DeleteStage => (Stage, u32), Response::StageDeleting { stage, evicted } => (stage, evicted), |s| {
    Command::DeleteStage {
        stage_id: s.stage_id,
        force: s.force,
    }
});

pub struct StageDeleted {
    pub stage_id: String,
    pub intent_term: u64,
    pub now: Millis,
}
proposal!(StageDeleted => (), Response::Done => (), |s| Command::StageDeleted {
    stage_id: s.stage_id,
    intent_term: s.intent_term,
    now: s.now,
});

/// Answers the broadcast and the stages now to delete.
pub struct EndBroadcast {
    pub id: String,
    pub now: Millis,
}
proposal!(EndBroadcast => (Broadcast, Vec<Stage>),
    Response::Broadcast { broadcast, deleting } => (broadcast, deleting),
    |s| Command::EndBroadcast { id: s.id, now: s.now });

/// Answers one seat or refusal per request, in order.
pub struct AdmitViewers {
    pub now: Millis,
    pub requests: Vec<JoinRequest>,
}
proposal!(AdmitViewers => Vec<Result<Seated, Refusal>>, Response::Admitted(v) => v, |s| Command::AdmitViewers {
    now: s.now,
    requests: s.requests,
    origin: None,
});

/// Answers one ended session or refusal per id, in order.
pub struct Leave {
    pub session_ids: Vec<String>,
}
proposal!(Leave => Vec<Result<Session, Refusal>>, Response::Left(v) => v, |s| Command::Leave {
    session_ids: s.session_ids,
});

/// Answers how many sessions were renewed.
pub struct Renew {
    pub session_ids: Vec<String>,
    pub now: Millis,
}
proposal!(Renew => usize, Response::Renewed(n) => n, |s| Command::Renew {
    session_ids: s.session_ids,
    now: s.now,
});

/// Answers the sessions that expired.
pub struct Expire {
    pub now: Millis,
    pub limit: usize,
}
proposal!(Expire => Vec<Session>, Response::Expired(v) => v, |s| Command::Expire {
    now: s.now,
    limit: s.limit,
});

/// Answers the host and the origin stages to issue its tokens for.
pub struct AddHost {
    pub broadcast_id: String,
    pub user_id: String,
    pub participant_base: String,
    pub attributes: BTreeMap<String, String>,
    pub now: Millis,
}
proposal!(AddHost => (Host, Vec<Stage>), Response::Host { host, origins } => (host, origins), |s| Command::AddHost {
    broadcast_id: s.broadcast_id,
    user_id: s.user_id,
    participant_base: s.participant_base,
    attributes: s.attributes,
    now: s.now,
});

/// Answers the stage as it is after.
pub struct SetPublishers {
    pub stage_id: String,
    pub publishers: BTreeSet<String>,
    pub now: Millis,
}
proposal!(SetPublishers => Stage, Response::Stage(s) => s, |s| Command::SetPublishers {
    stage_id: s.stage_id,
    publishers: s.publishers,
    now: s.now,
});

/// Answers the stage the participant publishes on, as it is after.
pub struct HostPublishing {
    pub broadcast_id: String,
    pub participant_id: String,
    pub publishing: bool,
    pub now: Millis,
}
proposal!(HostPublishing => Stage, Response::Stage(s) => s, |s| Command::HostPublishing {
    broadcast_id: s.broadcast_id,
    participant_id: s.participant_id,
    publishing: s.publishing,
    now: s.now,
});

/// Answers the replica stage as it is after.
pub struct ReportReplication {
    pub stage_id: String,
    pub participant_id: String,
    pub report: ReplicationReport,
    pub now: Millis,
}
proposal!(ReportReplication => Stage, Response::Stage(s) => s, |s| Command::ReplicationReport {
    stage_id: s.stage_id,
    participant_id: s.participant_id,
    report: s.report,
    now: s.now,
});

/// Answers the stage (draining, or already a delete intent if it was empty).
pub struct DrainStage {
    pub stage_id: String,
}
proposal!(DrainStage => Stage, Response::Stage(s) => s, |s| Command::DrainStage { stage_id: s.stage_id });

pub struct UndrainStage {
    pub stage_id: String,
}
proposal!(UndrainStage => Stage, Response::Stage(s) => s, |s| Command::UndrainStage { stage_id: s.stage_id });

/// Answers how many seats were released.
pub struct ReleaseUnused {
    pub session_ids: Vec<String>,
}
proposal!(ReleaseUnused => u32, Response::Released(n) => n, |s| Command::ReleaseUnused {
    session_ids: s.session_ids,
});

/// Answers how many viewers moved.
pub struct MoveViewers {
    pub stage_id: String,
    pub limit: u32,
}
proposal!(MoveViewers => u32, Response::Moved(n) => n, |s| Command::MoveViewers {
    stage_id: s.stage_id,
    limit: s.limit,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_a_refusal_and_a_wrong_shape_is_named() {
        let refused = answer::<RevokeApiKey>("revoke_api_key", Response::Refused(Refusal::UnknownApiKey("k".into())));
        assert!(matches!(
            refused,
            Err(ProposalError::Refused(Refusal::UnknownApiKey(_)))
        ));
        let wrong = answer::<RevokeApiKey>("revoke_api_key", Response::Done);
        assert!(matches!(
            wrong,
            Err(ProposalError::WrongAnswer {
                command: "revoke_api_key",
                response: "done"
            })
        ));
    }
}
