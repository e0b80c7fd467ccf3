//! [`AwsBackend`]: the production [`StageBackend`] on aws-sdk-ivsrealtime. Owns client setup
//! (explicit region, retries, timeouts, bounded credential loading), the client-side
//! per-operation rate limit, paging, and the mapping of SDK errors to [`BackendError`] by code.
//! Pointed at the built-in emulator with `endpoint_url`, it runs exactly the production path.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ivsrealtime::Client;
use aws_sdk_ivsrealtime::config::Credentials;
use aws_sdk_ivsrealtime::config::http::HttpResponse;
use aws_sdk_ivsrealtime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ivsrealtime::types as sdk;

use super::backend::{
    BackendError, BackendResult, IssuedToken, ParticipantFilter, ParticipantInfo, ParticipantState, PublicKeyInfo,
    ReplicaInfo, ReplicationState, ReplicationType, StageBackend, StageEndpoints, StageInfo, TokenRequest,
};
use super::ratelimit::{OpLimiter, default_rates};

#[derive(Clone, Debug)]
pub struct AwsConfig {
    pub region: String,
    /// The emulator or another override; `None` = the AWS endpoint for the region.
    pub endpoint_url: Option<String>,
    /// Access key id and secret; `None` = the default AWS credential chain.
    pub static_credentials: Option<(String, String)>,
    /// Attempts per call, first included (SDK standard retry: jittered exponential backoff on
    /// throttling and 5xx).
    pub max_attempts: u32,
    /// The first retry's backoff (doubling per attempt, jittered). The SDK's own default is 1 s,
    /// tuned for clients that do not pace themselves; ours stay under the quota, so a throttle
    /// means a brief burst elsewhere in the account and a short wait is enough.
    pub initial_backoff: Duration,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    /// Client-side calls/s per IVS operation name; operations not listed are not limited.
    pub rates: BTreeMap<String, f64>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            endpoint_url: None,
            static_credentials: None,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            rates: default_rates(),
        }
    }
}

/// Caps credential loading so a machine without credentials fails a call in seconds, not minutes.
const CREDENTIALS_LOAD_TIMEOUT: Duration = Duration::from_secs(3);

pub struct AwsBackend {
    client: Client,
    limiter: OpLimiter,
}

impl AwsBackend {
    pub async fn new(cfg: AwsConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.max_attempts >= 1, "max_attempts must be at least 1");
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(cfg.connect_timeout)
            .operation_attempt_timeout(cfg.attempt_timeout)
            .operation_timeout(cfg.operation_timeout)
            .build();
        // The region is always explicit: the region chain would otherwise consult IMDS and stall.
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(cfg.max_attempts)
                    .with_initial_backoff(cfg.initial_backoff),
            )
            .timeout_config(timeouts)
            .identity_cache(IdentityCache::lazy().load_timeout(CREDENTIALS_LOAD_TIMEOUT).build());
        if let Some(url) = &cfg.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((id, secret)) = &cfg.static_credentials {
            loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "stagefleet-static"));
        }
        let shared = loader.load().await;
        Ok(Self {
            client: Client::new(&shared),
            limiter: OpLimiter::new(&cfg.rates),
        })
    }

    /// The underlying SDK client, for operations the trait does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Error codes the SDK's retry classifier treats as throttling (aws-runtime `classifiers.rs`).
const THROTTLE_CODES: [&str; 14] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// The variant for an error code (what IVS said) or, without one, the HTTP status; no code and no
/// status means the call never got an answer (network, timeout, credentials): Unavailable.
fn classify(code: Option<&str>, status: Option<u16>, message: String) -> BackendError {
    match (code, status) {
        (Some("ResourceNotFoundException"), _) => BackendError::NotFound(message),
        (Some("ValidationException"), _) => BackendError::Validation(message),
        (Some("ConflictException"), _) => BackendError::Conflict(message),
        (Some("ServiceQuotaExceededException"), _) => BackendError::QuotaExceeded(message),
        (Some(c), _) if THROTTLE_CODES.contains(&c) => BackendError::Throttled(message),
        (Some("AccessDeniedException" | "PendingVerification"), _) => BackendError::AccessDenied(message),
        (Some("InternalServerException"), _) => BackendError::Unavailable(message),
        (_, Some(s)) if s >= 500 => BackendError::Unavailable(message),
        (None, Some(429)) => BackendError::Throttled(message),
        (Some(c), _) => BackendError::Other {
            code: c.to_string(),
            message,
        },
        (None, Some(s)) => BackendError::Other {
            code: format!("HTTP {s}"),
            message,
        },
        (None, None) => BackendError::Unavailable(message),
    }
}

fn map_err<E>(op: &str, err: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let message = format!("{op}: {}", DisplayErrorContext(&err));
    classify(err.code(), status, message)
}

fn to_map(map: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    Some(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn from_map(map: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn stage_info(stage: &sdk::Stage) -> StageInfo {
    StageInfo {
        arn: stage.arn().to_string(),
        name: stage.name().unwrap_or_default().to_string(),
        tags: from_map(stage.tags()),
        endpoints: stage.endpoints().map(|e| StageEndpoints {
            events: e.events().unwrap_or_default().to_string(),
            whip: e.whip().unwrap_or_default().to_string(),
            rtmp: e.rtmp().unwrap_or_default().to_string(),
            rtmps: e.rtmps().unwrap_or_default().to_string(),
        }),
        active_session_id: stage.active_session_id().unwrap_or_default().to_string(),
    }
}

fn summary_info(stage: &sdk::StageSummary) -> StageInfo {
    StageInfo {
        arn: stage.arn().to_string(),
        name: stage.name().unwrap_or_default().to_string(),
        tags: from_map(stage.tags()),
        endpoints: None,
        active_session_id: stage.active_session_id().unwrap_or_default().to_string(),
    }
}

fn participant_info(p: &sdk::ParticipantSummary) -> ParticipantInfo {
    ParticipantInfo {
        participant_id: p.participant_id().unwrap_or_default().to_string(),
        user_id: p.user_id().unwrap_or_default().to_string(),
        state: match p.state() {
            Some(sdk::ParticipantState::Connected) => ParticipantState::Connected,
            _ => ParticipantState::Disconnected,
        },
        published: p.published(),
        replication_type: match p.replication_type() {
            Some(sdk::ReplicationType::Source) => ReplicationType::Source,
            Some(sdk::ReplicationType::Replica) => ReplicationType::Replica,
            _ => ReplicationType::None,
        },
    }
}

fn replica_info(r: &sdk::ParticipantReplica) -> ReplicaInfo {
    ReplicaInfo {
        source_stage_arn: r.source_stage_arn().to_string(),
        destination_stage_arn: r.destination_stage_arn().to_string(),
        participant_id: r.participant_id().to_string(),
        state: match r.replication_state() {
            sdk::ReplicationState::Active => ReplicationState::Active,
            _ => ReplicationState::Stopped,
        },
    }
}

#[async_trait]
impl StageBackend for AwsBackend {
    async fn create_stage(&self, name: &str, tags: &BTreeMap<String, String>) -> BackendResult<StageInfo> {
        self.limiter.acquire("CreateStage").await;
        let req = self.client.create_stage().name(name).set_tags(to_map(tags));
        let out = req.send().await.map_err(|e| map_err("CreateStage", e))?;
        out.stage()
            .map(stage_info)
            .ok_or_else(|| BackendError::Unavailable("CreateStage: no stage in answer".into()))
    }

    async fn get_stage(&self, arn: &str) -> BackendResult<StageInfo> {
        self.limiter.acquire("GetStage").await;
        let out = self
            .client
            .get_stage()
            .arn(arn)
            .send()
            .await
            .map_err(|e| map_err("GetStage", e))?;
        out.stage()
            .map(stage_info)
            .ok_or_else(|| BackendError::Unavailable("GetStage: no stage in answer".into()))
    }

    async fn list_stages(&self, tag_filter: &BTreeMap<String, String>) -> BackendResult<Vec<StageInfo>> {
        let mut stages = vec![];
        let mut next: Option<String> = None;
        loop {
            self.limiter.acquire("ListStages").await;
            let req = self.client.list_stages().max_results(100).set_next_token(next.take());
            let out = req.send().await.map_err(|e| map_err("ListStages", e))?;
            let matching = out.stages().iter().map(summary_info);
            stages.extend(matching.filter(|s| tag_filter.iter().all(|(k, v)| s.tags.get(k) == Some(v))));
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(stages),
            }
        }
    }

    async fn delete_stage(&self, arn: &str) -> BackendResult<()> {
        self.limiter.acquire("DeleteStage").await;
        self.client
            .delete_stage()
            .arn(arn)
            .send()
            .await
            .map_err(|e| map_err("DeleteStage", e))?;
        Ok(())
    }

    async fn import_public_key(
        &self,
        name: &str,
        public_key_pem: &str,
        tags: &BTreeMap<String, String>,
    ) -> BackendResult<PublicKeyInfo> {
        self.limiter.acquire("ImportPublicKey").await;
        let req = self
            .client
            .import_public_key()
            .name(name)
            .public_key_material(public_key_pem)
            .set_tags(to_map(tags));
        let out = req.send().await.map_err(|e| map_err("ImportPublicKey", e))?;
        let key = out
            .public_key()
            .ok_or_else(|| BackendError::Unavailable("ImportPublicKey: no key in answer".into()))?;
        Ok(PublicKeyInfo {
            arn: key.arn().unwrap_or_default().to_string(),
            name: key.name().unwrap_or_default().to_string(),
            fingerprint: key.fingerprint().unwrap_or_default().to_string(),
        })
    }

    async fn delete_public_key(&self, arn: &str) -> BackendResult<()> {
        self.limiter.acquire("DeletePublicKey").await;
        self.client
            .delete_public_key()
            .arn(arn)
            .send()
            .await
            .map_err(|e| map_err("DeletePublicKey", e))?;
        Ok(())
    }

    async fn create_participant_token(&self, stage_arn: &str, req: &TokenRequest) -> BackendResult<IssuedToken> {
        let mut caps = vec![];
        if req.capabilities.publish {
            caps.push(sdk::ParticipantTokenCapability::Publish);
        }
        if req.capabilities.subscribe {
            caps.push(sdk::ParticipantTokenCapability::Subscribe);
        }
        self.limiter.acquire("CreateParticipantToken").await;
        let call = self
            .client
            .create_participant_token()
            .stage_arn(stage_arn)
            .user_id(&req.user_id)
            .set_attributes(to_map(&req.attributes))
            .set_capabilities(Some(caps))
            .duration(i32::try_from(req.duration_minutes).unwrap_or(i32::MAX));
        let out = call.send().await.map_err(|e| map_err("CreateParticipantToken", e))?;
        let token = out
            .participant_token()
            .ok_or_else(|| BackendError::Unavailable("CreateParticipantToken: no token in answer".into()))?;
        Ok(IssuedToken {
            participant_id: token.participant_id().unwrap_or_default().to_string(),
            token: token.token().unwrap_or_default().to_string(),
            expires_at: token.expiration_time().map_or(0, |t| t.secs()),
        })
    }

    async fn start_participant_replication(
        &self,
        source_stage_arn: &str,
        destination_stage_arn: &str,
        participant_id: &str,
        reconnect_window_seconds: u32,
        attributes: &BTreeMap<String, String>,
    ) -> BackendResult<()> {
        self.limiter.acquire("StartParticipantReplication").await;
        let req = self
            .client
            .start_participant_replication()
            .source_stage_arn(source_stage_arn)
            .destination_stage_arn(destination_stage_arn)
            .participant_id(participant_id)
            .reconnect_window_seconds(i32::try_from(reconnect_window_seconds).unwrap_or(i32::MAX))
            .set_attributes(to_map(attributes));
        req.send()
            .await
            .map_err(|e| map_err("StartParticipantReplication", e))?;
        Ok(())
    }

    async fn stop_participant_replication(
        &self,
        source_stage_arn: &str,
        destination_stage_arn: &str,
        participant_id: &str,
    ) -> BackendResult<()> {
        self.limiter.acquire("StopParticipantReplication").await;
        let req = self
            .client
            .stop_participant_replication()
            .source_stage_arn(source_stage_arn)
            .destination_stage_arn(destination_stage_arn)
            .participant_id(participant_id);
        req.send().await.map_err(|e| map_err("StopParticipantReplication", e))?;
        Ok(())
    }

    async fn list_participant_replicas(
        &self,
        source_stage_arn: &str,
        participant_id: &str,
    ) -> BackendResult<Vec<ReplicaInfo>> {
        let mut replicas = vec![];
        let mut next: Option<String> = None;
        loop {
            self.limiter.acquire("ListParticipantReplicas").await;
            let req = self
                .client
                .list_participant_replicas()
                .source_stage_arn(source_stage_arn)
                .participant_id(participant_id)
                .max_results(50)
                .set_next_token(next.take());
            let out = req.send().await.map_err(|e| map_err("ListParticipantReplicas", e))?;
            replicas.extend(out.replicas().iter().map(replica_info));
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(replicas),
            }
        }
    }

    async fn list_participants(
        &self,
        stage_arn: &str,
        session_id: &str,
        filter: ParticipantFilter,
    ) -> BackendResult<Vec<ParticipantInfo>> {
        let mut participants = vec![];
        let mut next: Option<String> = None;
        loop {
            self.limiter.acquire("ListParticipants").await;
            let mut req = self
                .client
                .list_participants()
                .stage_arn(stage_arn)
                .session_id(session_id)
                .max_results(100)
                .set_next_token(next.take());
            req = match filter {
                ParticipantFilter::All => req,
                ParticipantFilter::Connected => req.filter_by_state(sdk::ParticipantState::Connected),
                ParticipantFilter::Published => req.filter_by_published(true),
            };
            let out = req.send().await.map_err(|e| map_err("ListParticipants", e))?;
            participants.extend(out.participants().iter().map(participant_info));
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(participants),
            }
        }
    }

    async fn disconnect_participant(&self, stage_arn: &str, participant_id: &str, reason: &str) -> BackendResult<()> {
        self.limiter.acquire("DisconnectParticipant").await;
        let req = self
            .client
            .disconnect_participant()
            .stage_arn(stage_arn)
            .participant_id(participant_id)
            .reason(reason);
        req.send().await.map_err(|e| map_err("DisconnectParticipant", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_code_before_status() {
        let m = || "m".to_string();
        assert_eq!(
            classify(Some("ResourceNotFoundException"), Some(404), m()).kind(),
            "not_found"
        );
        assert_eq!(
            classify(Some("ValidationException"), Some(400), m()).kind(),
            "validation"
        );
        assert_eq!(classify(Some("ConflictException"), Some(409), m()).kind(), "conflict");
        assert_eq!(
            classify(Some("ServiceQuotaExceededException"), Some(402), m()).kind(),
            "quota_exceeded"
        );
        assert_eq!(
            classify(Some("TooManyRequestsException"), Some(400), m()).kind(),
            "throttled"
        );
        assert_eq!(
            classify(Some("PendingVerification"), Some(403), m()).kind(),
            "access_denied"
        );
        assert_eq!(
            classify(Some("InternalServerException"), Some(500), m()).kind(),
            "unavailable"
        );
        assert_eq!(classify(Some("Weird"), Some(503), m()).kind(), "unavailable");
        assert_eq!(
            classify(Some("Weird"), Some(400), m()),
            BackendError::Other {
                code: "Weird".into(),
                message: m()
            }
        );
        assert_eq!(
            classify(None, None, m()).kind(),
            "unavailable",
            "no answer at all: network or credentials"
        );
    }
}
