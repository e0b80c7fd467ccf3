//! The seam between stagefleet and IVS Real-Time: what the control loops and the node need from
//! "a place that creates stages", and nothing about viewers or Raft.
//!
//! The production implementation is [`super::aws::AwsBackend`] on aws-sdk-ivsrealtime; with no AWS
//! configuration the same implementation talks to the built-in emulator over HTTP, so every run
//! exercises the real SDK code path.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The URLs a participant token embeds (`events_url`, `whip_url`); IVS returns them on
/// CreateStage/GetStage only, so they are cached with the stage in our state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEndpoints {
    pub events: String,
    pub whip: String,
    pub rtmp: String,
    pub rtmps: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageInfo {
    pub arn: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    /// `None` from ListStages (summaries carry no endpoints).
    pub endpoints: Option<StageEndpoints>,
    /// Empty when the stage is idle.
    pub active_session_id: String,
}

impl StageInfo {
    /// Stage id = the last path segment of the ARN (the token's `topic`).
    pub fn id(&self) -> &str {
        stage_id_from_arn(&self.arn)
    }
}

pub fn stage_id_from_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyInfo {
    pub arn: String,
    pub name: String,
    pub fingerprint: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub publish: bool,
    pub subscribe: bool,
}

/// CreateParticipantToken input (the fallback token mode: one AWS call per token, 50/s per account).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub user_id: String,
    pub attributes: BTreeMap<String, String>,
    pub capabilities: Capabilities,
    pub duration_minutes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub participant_id: String,
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParticipantState {
    Connected,
    Disconnected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationType {
    None,
    Source,
    Replica,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub participant_id: String,
    pub user_id: String,
    pub state: ParticipantState,
    pub published: bool,
    pub replication_type: ReplicationType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParticipantFilter {
    All,
    Connected,
    Published,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    Active,
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub source_stage_arn: String,
    pub destination_stage_arn: String,
    pub participant_id: String,
    pub state: ReplicationState,
}

/// What went wrong, by IVS error code. Callers branch on the variant; the message is for logs.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("rejected by IVS validation: {0}")]
    Validation(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("IVS quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("throttled by IVS after retries: {0}")]
    Throttled(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Network failure, timeout, 5xx after retries, or no credentials: worth retrying later.
    #[error("IVS unavailable: {0}")]
    Unavailable(String),
    #[error("IVS error {code}: {message}")]
    Other { code: String, message: String },
}

impl BackendError {
    /// A stable, short name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::NotFound(_) => "not_found",
            BackendError::Validation(_) => "validation",
            BackendError::Conflict(_) => "conflict",
            BackendError::QuotaExceeded(_) => "quota_exceeded",
            BackendError::Throttled(_) => "throttled",
            BackendError::AccessDenied(_) => "access_denied",
            BackendError::Unavailable(_) => "unavailable",
            BackendError::Other { .. } => "other",
        }
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// Every IVS operation stagefleet uses. Implementations rate-limit per operation and retry
/// throttling/5xx with jittered backoff before returning an error.
#[async_trait]
pub trait StageBackend: Send + Sync + 'static {
    async fn create_stage(&self, name: &str, tags: &BTreeMap<String, String>) -> BackendResult<StageInfo>;
    async fn get_stage(&self, arn: &str) -> BackendResult<StageInfo>;
    /// All stages whose tags include every pair of `tag_filter` (IVS has no server-side tag
    /// filter: this pages through ListStages and filters the summaries).
    async fn list_stages(&self, tag_filter: &BTreeMap<String, String>) -> BackendResult<Vec<StageInfo>>;
    async fn delete_stage(&self, arn: &str) -> BackendResult<()>;
    async fn import_public_key(
        &self,
        name: &str,
        public_key_pem: &str,
        tags: &BTreeMap<String, String>,
    ) -> BackendResult<PublicKeyInfo>;
    async fn delete_public_key(&self, arn: &str) -> BackendResult<()>;
    async fn create_participant_token(&self, stage_arn: &str, req: &TokenRequest) -> BackendResult<IssuedToken>;
    async fn start_participant_replication(
        &self,
        source_stage_arn: &str,
        destination_stage_arn: &str,
        participant_id: &str,
        reconnect_window_seconds: u32,
        attributes: &BTreeMap<String, String>,
    ) -> BackendResult<()>;
    async fn stop_participant_replication(
        &self,
        source_stage_arn: &str,
        destination_stage_arn: &str,
        participant_id: &str,
    ) -> BackendResult<()>;
    async fn list_participant_replicas(
        &self,
        source_stage_arn: &str,
        participant_id: &str,
    ) -> BackendResult<Vec<ReplicaInfo>>;
    /// Pages through every participant of one stage session.
    async fn list_participants(
        &self,
        stage_arn: &str,
        session_id: &str,
        filter: ParticipantFilter,
    ) -> BackendResult<Vec<ParticipantInfo>>;
    async fn disconnect_participant(&self, stage_arn: &str, participant_id: &str, reason: &str) -> BackendResult<()>;
}
