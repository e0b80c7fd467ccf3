//! The replicated log's vocabulary. Ids and clocks are chosen by the proposer and carried in the
//! command, so applying it is deterministic on every node.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::NodeId;

use crate::fleet::admission::{FleetPolicy, PolicyPatch};
use crate::fleet::transition::{JoinRequest, ReplicationReport, Seated};
use crate::fleet::{
    ApiKeyRecord, Broadcast, Fanout, Host, Millis, Refusal, Session, SigningKeyRecord, Stage, StageFailure, StageRole,
    StageUrls,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A leader's loop's command, applied only if the log took it in the term it was proposed
    /// in (`term`); otherwise refused `StaleLeader`, whatever it says.
    Fenced {
        term: u64,
        command: Box<Command>,
    },
    SetPolicy(FleetPolicy),
    /// `setPolicy`: only the fields it names change.
    PatchPolicy(PolicyPatch),
    SetSigningKey(SigningKeyRecord),
    CreateApiKey(ApiKeyRecord),
    RevokeApiKey {
        id: String,
    },
    /// Creates the broadcast and the intent for its origin stage (owned by the entry's term).
    StartBroadcast {
        id: String,
        name: String,
        now: Millis,
        /// The broadcast's own per-client seat cap; absent in entries written before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_seats_per_client: Option<u32>,
        /// How hosts' media reaches the stages (absent: replication, as before it was a choice).
        #[serde(default, skip_serializing_if = "Fanout::is_replication")]
        fanout: Fanout,
    },
    AddStage {
        broadcast_id: String,
        role: StageRole,
        now: Millis,
    },
    StageCreated {
        stage_id: String,
        intent_term: u64,
        arn: String,
        endpoints: StageUrls,
        /// The proposer's clock (absent in entries written before replication was tracked).
        #[serde(default, skip_serializing_if = "is_zero")]
        now: Millis,
    },
    StageCreateFailed {
        stage_id: String,
        intent_term: u64,
        /// Why (absent in entries written before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<StageFailure>,
    },
    /// A DeleteStage attempt failed; the intent stays and is retried. Changes no state: it
    /// tells whoever awaits the deletion (on any node) why it has not happened.
    StageDeleteFailed {
        stage_id: String,
        intent_term: u64,
        failure: StageFailure,
    },
    /// A new leader takes over a pending stage intent (fences the old leader's late results).
    ReclaimIntent {
        stage_id: String,
    },
    DeleteStage {
        stage_id: String,
        force: bool,
    },
    StageDeleted {
        stage_id: String,
        intent_term: u64,
        now: Millis,
    },
    EndBroadcast {
        id: String,
        now: Millis,
    },
    /// A group commit of concurrent joins: one log entry for many viewers.
    AdmitViewers {
        now: Millis,
        requests: Vec<JoinRequest>,
        /// The follower that forwarded this batch to the leader: it takes the seats from its own
        /// apply of the entry (`StateMachine::take_answer`), so the leader answers with the log id
        /// alone instead of every seat in JSON. Absent when the leader proposed it, and in entries
        /// of builds before it (nodes that do not know the field ignore it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<NodeId>,
    },
    Leave {
        session_ids: Vec<String>,
    },
    Renew {
        session_ids: Vec<String>,
        now: Millis,
    },
    Expire {
        now: Millis,
        limit: usize,
    },
    AddHost {
        broadcast_id: String,
        user_id: String,
        participant_base: String,
        attributes: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "is_zero")]
        now: Millis,
    },
    /// Who publishes on a stage now, as the replicator read it from IVS (the whole set).
    SetPublishers {
        stage_id: String,
        publishers: BTreeSet<String>,
        now: Millis,
    },
    /// `hostPublishing`: the broadcaster page reports one host participant publishing or not.
    HostPublishing {
        broadcast_id: String,
        participant_id: String,
        publishing: bool,
        now: Millis,
    },
    /// The replicator's outcome for one host into one replica stage.
    ReplicationReport {
        stage_id: String,
        participant_id: String,
        report: ReplicationReport,
        now: Millis,
    },
    /// No new viewers on the stage; deleted (an intent of the entry's term) once empty.
    DrainStage {
        stage_id: String,
    },
    UndrainStage {
        stage_id: String,
    },
    /// End sessions whose viewer never connected to IVS (drift reconciler).
    ReleaseUnused {
        session_ids: Vec<String>,
    },
    /// Move up to `limit` viewers off a draining stage onto stages with room.
    MoveViewers {
        stage_id: String,
        limit: u32,
    },
}

fn is_zero(v: &Millis) -> bool {
    *v == 0
}

impl Command {
    /// The proposer's clock, for the commands that carry one.
    pub fn proposed_at(&self) -> Option<Millis> {
        match self {
            Command::StartBroadcast { now, .. }
            | Command::AddStage { now, .. }
            | Command::StageDeleted { now, .. }
            | Command::EndBroadcast { now, .. }
            | Command::AdmitViewers { now, .. }
            | Command::Renew { now, .. }
            | Command::Expire { now, .. }
            | Command::SetPublishers { now, .. }
            | Command::HostPublishing { now, .. }
            | Command::ReplicationReport { now, .. } => Some(*now),
            Command::CreateApiKey(k) => Some(k.created_at),
            _ => None,
        }
    }

    /// The follower that forwarded this join batch and takes its answer from its own apply
    /// (see `AdmitViewers::origin`); `None` for every other command.
    pub fn origin(&self) -> Option<NodeId> {
        match self {
            Command::AdmitViewers { origin, .. } => *origin,
            _ => None,
        }
    }

    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Command::Fenced { command, .. } => command.label(),
            Command::SetPolicy(_) => "set_policy",
            Command::PatchPolicy(_) => "patch_policy",
            Command::SetSigningKey(_) => "set_signing_key",
            Command::CreateApiKey(_) => "create_api_key",
            Command::RevokeApiKey { .. } => "revoke_api_key",
            Command::StartBroadcast { .. } => "start_broadcast",
            Command::AddStage { .. } => "add_stage",
            Command::StageCreated { .. } => "stage_created",
            Command::StageCreateFailed { .. } => "stage_create_failed",
            Command::StageDeleteFailed { .. } => "stage_delete_failed",
            Command::ReclaimIntent { .. } => "reclaim_intent",
            Command::DeleteStage { .. } => "delete_stage",
            Command::StageDeleted { .. } => "stage_deleted",
            Command::EndBroadcast { .. } => "end_broadcast",
            Command::AdmitViewers { .. } => "admit_viewers",
            Command::Leave { .. } => "leave",
            Command::Renew { .. } => "renew",
            Command::Expire { .. } => "expire",
            Command::AddHost { .. } => "add_host",
            Command::SetPublishers { .. } => "set_publishers",
            Command::HostPublishing { .. } => "host_publishing",
            Command::ReplicationReport { .. } => "replication_report",
            Command::DrainStage { .. } => "drain_stage",
            Command::UndrainStage { .. } => "undrain_stage",
            Command::MoveViewers { .. } => "move_viewers",
            Command::ReleaseUnused { .. } => "release_unused",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries.
    #[default]
    None,
    Done,
    Refused(Refusal),
    Stage(Stage),
    StageDeleting {
        stage: Stage,
        evicted: u32,
    },
    Broadcast {
        broadcast: Broadcast,
        deleting: Vec<Stage>,
    },
    Admitted(Vec<Result<Seated, Refusal>>),
    Left(Vec<Result<Session, Refusal>>),
    Renewed(usize),
    Expired(Vec<Session>),
    Host {
        host: Host,
        origins: Vec<Stage>,
    },
    ApiKey(ApiKeyRecord),
    Policy(FleetPolicy),
    /// Viewers moved off a draining stage.
    Moved(u32),
    /// Unused seats released.
    Released(u32),
}

impl Response {
    /// Short label for logs and errors (the shape, not the contents).
    pub fn label(&self) -> &'static str {
        match self {
            Response::None => "none",
            Response::Done => "done",
            Response::Refused(_) => "refused",
            Response::Stage(_) => "stage",
            Response::StageDeleting { .. } => "stage_deleting",
            Response::Broadcast { .. } => "broadcast",
            Response::Admitted(_) => "admitted",
            Response::Left(_) => "left",
            Response::Renewed(_) => "renewed",
            Response::Expired(_) => "expired",
            Response::Host { .. } => "host",
            Response::ApiKey(_) => "api_key",
            Response::Policy(_) => "policy",
            Response::Moved(_) => "moved",
            Response::Released(_) => "released",
        }
    }
}

impl<T: Into<Response>> From<Result<T, Refusal>> for Response {
    fn from(r: Result<T, Refusal>) -> Self {
        match r {
            Ok(v) => v.into(),
            Err(e) => Response::Refused(e),
        }
    }
}

impl From<Stage> for Response {
    fn from(s: Stage) -> Self {
        Response::Stage(s)
    }
}

impl From<()> for Response {
    fn from(_: ()) -> Self {
        Response::Done
    }
}

impl From<ApiKeyRecord> for Response {
    fn from(k: ApiKeyRecord) -> Self {
        Response::ApiKey(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `StageCreated` entry as the log held it when it carried `ivs::StageEndpoints`.
    const STAGE_CREATED_BEFORE_STAGE_URLS: &str = r#"{"StageCreated":{"stage_id":"b1:0","intent_term":2,"arn":"arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGHijkl","endpoints":{"events":"wss://global.events.live-video.net","whip":"https://f99084460c35.global-bm.whip.live-video.net","rtmp":"rtmp://f99084460c35.global-contribute-staging.live-video.net/app/","rtmps":"rtmps://f99084460c35.global-contribute-staging.live-video.net:443/app/"}}}"#;

    #[test]
    fn log_entries_written_before_stage_urls_still_load() {
        let cmd: Command = serde_json::from_str(STAGE_CREATED_BEFORE_STAGE_URLS).expect("old entry decodes");
        let Command::StageCreated {
            stage_id,
            intent_term,
            arn,
            endpoints,
            ..
        } = &cmd
        else {
            panic!("decoded as {cmd:?}");
        };
        assert_eq!((stage_id.as_str(), *intent_term), ("b1:0", 2));
        assert_eq!(arn, "arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGHijkl");
        assert_eq!(endpoints.events, "wss://global.events.live-video.net");
        assert_eq!(endpoints.whip, "https://f99084460c35.global-bm.whip.live-video.net");
        // Encoded back unchanged, so a mixed-version cluster replicates entries both sides read.
        assert_eq!(serde_json::to_string(&cmd).unwrap(), STAGE_CREATED_BEFORE_STAGE_URLS);
    }
}
