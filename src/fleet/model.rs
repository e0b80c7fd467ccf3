//! The fleet's data: what the replicated state holds, in plain serde types.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, always passed in (commands carry the proposer's clock).
pub type Millis = i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BroadcastState {
    /// Origin stage being created.
    Starting,
    Live,
    /// Stages being deleted.
    Ending,
    Ended,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub user_id: String,
    /// Host tokens use `<participant_base>-s<slot>` as participant id (jti), one per origin stage.
    pub participant_base: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broadcast {
    pub id: String,
    pub name: String,
    pub state: BroadcastState,
    pub created_at: Millis,
    pub ended_at: Option<Millis>,
    /// Slot numbers are never reused within a broadcast, so tags stay unique.
    pub next_slot: u32,
    pub hosts: BTreeMap<String, Host>,
    /// Viewers admitted over the broadcast's life (re-joins of a seated user not counted).
    pub admitted_total: u64,
    /// Most seats one client network may hold in this broadcast (0 = no cap); `None` follows
    /// [`FleetPolicy::max_seats_per_client`](super::admission::FleetPolicy). Fixed at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seats_per_client: Option<u32>,
    /// How the hosts' media reaches every stage. Fixed at start.
    #[serde(default, skip_serializing_if = "Fanout::is_replication")]
    pub fanout: Fanout,
}

/// How the hosts' media gets into every stage of a broadcast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fanout {
    /// Hosts publish to the origin stages; IVS participant replication copies them into replicas.
    #[default]
    Replication,
    /// Hosts publish to every stage themselves (the broadcaster page publishes several times).
    Client,
}

impl Fanout {
    pub fn is_replication(&self) -> bool {
        *self == Fanout::Replication
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StageRole {
    /// Hosts publish here directly.
    Origin,
    /// Receives the hosts' media through participant replication.
    Replica,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StageState {
    /// Intent written, CreateStage not yet answered.
    Creating,
    Active,
    /// Intent to delete written, DeleteStage not yet answered.
    Deleting,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// `<broadcast id>:<slot>`: known before IVS answers, stable across adoption.
    pub id: String,
    pub broadcast_id: String,
    pub slot: u32,
    pub role: StageRole,
    pub state: StageState,
    pub capacity: u32,
    pub viewers: u32,
    /// Opaque here; the IVS stage id (token `topic`) is derived from it where tokens are built.
    pub arn: Option<String>,
    pub endpoints: Option<StageUrls>,
    /// Raft term of the leader that owns the pending side effect; results from any other term are fenced.
    pub intent_term: u64,
    pub created_at: Millis,
    /// Takes no new viewers: retired once empty (scale-down or `drainStage`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Whose media this stage carries and whether it flows yet.
    #[serde(default, skip_serializing_if = "Media::is_empty")]
    pub media: Media,
}

impl Stage {
    pub fn key(broadcast_id: &str, slot: u32) -> String {
        format!("{broadcast_id}:{slot}")
    }

    /// Eligible for a new viewer: created, not draining, the hosts' media flowing, a free seat.
    pub fn has_room(&self) -> bool {
        self.is_ready() && self.viewers < self.capacity
    }

    /// READY: created, not draining, and every publishing host's media reaches it.
    pub fn is_ready(&self) -> bool {
        self.state == StageState::Active && !self.draining && !self.media.waiting
    }

    /// Publisher-to-viewer connections one viewer seated here uses in the region's subscription
    /// quota: one per host stream the stage carries (at least one).
    pub fn streams(&self) -> u64 {
        self.media.publishers.len().max(self.media.replication.len()).max(1) as u64
    }

    /// Free seats a new viewer could take now.
    pub fn free_ready_seats(&self) -> u32 {
        if self.is_ready() {
            self.capacity.saturating_sub(self.viewers)
        } else {
            0
        }
    }
}

/// A stage's part in getting the hosts' media to its viewers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// A replica's origin: the slot whose hosts are replicated into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fed_by: Option<u32>,
    /// Some host publishing for this stage is not yet replicated into it (or, with client
    /// fan-out, not yet seen publishing here): no new viewers until it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
    /// Host participant ids seen publishing on this stage (origins; every stage with client fan-out).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub publishers: BTreeSet<String>,
    /// A replica's replications, by the host participant id on its origin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replication: BTreeMap<String, Replication>,
}

impl Media {
    pub fn is_empty(&self) -> bool {
        *self == Media::default()
    }
}

/// One host replicated into one replica stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    pub state: ReplicationState,
    /// StartParticipantReplication attempts since it last became active.
    pub attempts: u32,
    /// The last failure, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was last reported on (proposer's clock): retries and time-outs count from here.
    pub since: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicationState {
    /// Started (or to start); the replica's media is not seen flowing yet.
    Pending,
    /// The host's media flows into the stage.
    Active,
    /// The last attempt failed; retried with backoff.
    Failed,
}

/// Where participants reach a stage: what CreateStage/GetStage answer, cached with the stage
/// because tokens embed `events` and `whip` and only those calls return them.
///
/// Written into the log (`Command::StageCreated`) and snapshots, so the field names are a format:
/// they match what `ivs::StageEndpoints` wrote before the domain owned this type. `rtmp` and
/// `rtmps` are unused here but kept so entries stay byte-identical across a rolling upgrade.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageUrls {
    pub events: String,
    pub whip: String,
    pub rtmp: String,
    pub rtmps: String,
}

/// Why an IVS call for a stage failed, as the log records it (the adapter's error, reduced to
/// what an operator acts on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// An IVS quota is exhausted.
    Quota,
    /// IVS refused the node's credentials.
    AccessDenied,
    /// Anything else that did not complete after retries (throttling, timeouts, 5xx).
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageFailure {
    pub kind: FailureKind,
    /// The adapter's message, for logs and operators; never shown to viewers.
    pub message: String,
}

/// One viewer's stay on one stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub broadcast_id: String,
    pub user_id: String,
    pub stage_id: String,
    /// The token's `jti`; stable for the session so a re-join replaces the old connection in IVS.
    pub participant_id: String,
    pub attributes: BTreeMap<String, String>,
    pub joined_at: Millis,
    pub last_seen: Millis,
    pub lease_until: Millis,
    /// The client network that took the seat, recorded only when the broadcast caps seats per
    /// client, so ending the session frees that client's count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Admin,
    Host,
    Viewer,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the secret part; the secret itself is never stored.
    pub secret_sha256: String,
    pub created_at: Millis,
}

/// The token signing key, replicated so any node can mint tokens. The private half travels and
/// rests sealed: the log, the state and snapshots never hold it in clear (`crate::node::signing`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// Serialized as one field beside `arn`: `sealed_pkcs8`, or `pkcs8_b64` in older records.
    #[serde(flatten)]
    pub private: PrivateKey,
    /// Public key ARN from ImportPublicKey: the JWT `kid`.
    pub arn: String,
}

/// The P-384 private key (PKCS#8 DER) as a record holds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivateKey {
    /// Sealed with AES-256-GCM under the key-encryption key (`crate::node::kek`): base64 of
    /// nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes).
    #[serde(rename = "sealed_pkcs8")]
    Sealed(String),
    /// Base64 in clear, as records were written before keys were sealed. Still read, so those
    /// data dirs start (and seal it at once); never written.
    #[serde(rename = "pkcs8_b64")]
    Clear(String),
}

/// Never prints key material, not even sealed: commands and records end up in logs.
impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivateKey::Sealed(s) => write!(f, "Sealed({} chars)", s.len()),
            PrivateKey::Clear(_) => f.write_str("Clear(..)"),
        }
    }
}

/// Everything but sessions (which may be millions and live in their own sled keys).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    pub broadcasts: BTreeMap<String, Broadcast>,
    pub stages: BTreeMap<String, Stage>,
    pub api_keys: BTreeMap<String, ApiKeyRecord>,
    pub signing_key: Option<SigningKeyRecord>,
}

impl Fleet {
    pub fn stages_of<'a>(&'a self, broadcast_id: &'a str) -> impl Iterator<Item = &'a Stage> + 'a {
        // Stage keys start with "<broadcast id>:" so a range scan finds them in slot order... almost:
        // slots sort as strings, so filter exactly and let callers sort if they need slot order.
        self.stages.values().filter(move |s| s.broadcast_id == broadcast_id)
    }

    /// Stages that exist or are being created in IVS (counted against the region quota).
    pub fn managed_stage_count(&self) -> usize {
        self.stages.len()
    }
}

/// Why a join or a change was refused. Deterministic: every replica computes the same one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("no broadcast {0}")]
    UnknownBroadcast(String),
    #[error("broadcast {0} is not live")]
    BroadcastNotLive(String),
    #[error("every stage of broadcast {0} is full")]
    CapacityExhausted(String),
    #[error("the fleet already manages {0} stages, the configured maximum")]
    StageQuotaExceeded(u32),
    #[error("no stage {0}")]
    UnknownStage(String),
    #[error("stage {0} has {1} viewers; pass force to delete it anyway")]
    StageHasViewers(String, u32),
    #[error("stage {0} is the origin of a live broadcast; end the broadcast instead")]
    OriginStage(String),
    #[error("broadcast {0} already has the maximum of {1} hosts")]
    HostLimit(String, u32),
    #[error("broadcast {0} already exists")]
    BroadcastExists(String),
    #[error("this client already holds {1} seats in broadcast {0}, the most one client may hold")]
    ClientSeatLimit(String, u32),
    #[error("no session {0}")]
    UnknownSession(String),
    #[error("no API key {0}")]
    UnknownApiKey(String),
    #[error("the region's {0} concurrent subscriptions are in use; IVS would refuse more viewers")]
    RegionFull(u64),
    #[error("stage {0} is not active")]
    StageNotActive(String),
    #[error("{1} is not a host participant of broadcast {0}")]
    UnknownParticipant(String, String),
    /// A result reported by a leader that no longer owns the intent.
    #[error("stale result for {0}: the intent now belongs to another term")]
    Fenced(String),
    /// A leader's loop proposed it in its term, and the log took it in a later one: that leader
    /// was deposed meanwhile, and what it decided is not the new leader's to do.
    #[error("proposed by the leader of term {0} and logged in term {1}: that leader was deposed")]
    StaleLeader(u64, u64),
}

impl Refusal {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownBroadcast(_) => "unknown_broadcast",
            Refusal::BroadcastNotLive(_) => "broadcast_not_live",
            Refusal::CapacityExhausted(_) => "capacity_exhausted",
            Refusal::StageQuotaExceeded(_) => "stage_quota_exceeded",
            Refusal::UnknownStage(_) => "unknown_stage",
            Refusal::StageHasViewers(..) => "stage_has_viewers",
            Refusal::OriginStage(_) => "origin_stage",
            Refusal::HostLimit(..) => "host_limit",
            Refusal::BroadcastExists(_) => "broadcast_exists",
            Refusal::ClientSeatLimit(..) => "client_seat_limit",
            Refusal::UnknownSession(_) => "unknown_session",
            Refusal::UnknownApiKey(_) => "unknown_api_key",
            Refusal::RegionFull(_) => "region_full",
            Refusal::StageNotActive(_) => "stage_not_active",
            Refusal::UnknownParticipant(..) => "unknown_participant",
            Refusal::Fenced(_) => "fenced",
            Refusal::StaleLeader(..) => "stale_leader",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage record as snapshots held it when its endpoints were `ivs::StageEndpoints`.
    const STAGE_BEFORE_STAGE_URLS: &str = r#"{"id":"b1:0","broadcast_id":"b1","slot":0,"role":"Origin","state":"Active","capacity":12000,"viewers":3,"arn":"arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGHijkl","endpoints":{"events":"wss://global.events.live-video.net","whip":"https://f99084460c35.global-bm.whip.live-video.net","rtmp":"rtmp://f99084460c35.global-contribute-staging.live-video.net/app/","rtmps":"rtmps://f99084460c35.global-contribute-staging.live-video.net:443/app/"},"intent_term":2,"created_at":1764633600000}"#;

    #[test]
    fn snapshots_written_before_stage_urls_still_load() {
        let stage: Stage = serde_json::from_str(STAGE_BEFORE_STAGE_URLS).expect("old stage record decodes");
        let urls = stage.endpoints.as_ref().expect("endpoints kept");
        assert_eq!(urls.events, "wss://global.events.live-video.net");
        assert_eq!(urls.whip, "https://f99084460c35.global-bm.whip.live-video.net");
        assert_eq!(
            stage.arn.as_deref(),
            Some("arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGHijkl")
        );
        // Written back unchanged, so old and new nodes agree on every byte of a snapshot.
        assert_eq!(serde_json::to_string(&stage).unwrap(), STAGE_BEFORE_STAGE_URLS);
    }
}
