//! The closed set of error codes clients see in `extensions.code`, and the one mapping from node
//! errors to them. Internal details are logged here and replaced by a generic message.

use async_graphql::{Enum, ErrorExtensionValues, ErrorExtensions, Value};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::fleet::{FailureKind, Refusal};
use crate::ivs::BackendError;
use crate::node::NodeError;
use crate::state::ProposeError;

/// Every `extensions.code` stagefleet returns.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "ErrorCode")]
pub enum ErrorCode {
    /// The request is not valid JSON, not valid GraphQL, too deep or complex, or refused by the
    /// front gate (nesting, tokens, fragments, spreads); the message says which limit.
    BadRequest,
    /// The body (413) or the headers (431) are larger than the node accepts.
    RequestTooLarge,
    /// A POST whose content type is not `application/json` (415).
    UnsupportedMediaType,
    /// An argument breaks a rule (length, characters, size, range).
    InvalidInput,
    /// A key is required, or the key given is not valid.
    Unauthenticated,
    /// The key is valid but its role may not do this.
    Forbidden,
    /// Too many joins from this client; retry after a moment.
    RateLimited,
    BroadcastNotFound,
    StageNotFound,
    SessionNotFound,
    ApiKeyNotFound,
    BroadcastExists,
    BroadcastNotLive,
    /// Every stage of the broadcast is full.
    CapacityExhausted,
    /// The fleet manages its configured maximum of stages.
    StageQuotaExceeded,
    /// The stage seats viewers; pass `force: true` to delete it anyway.
    StageHasViewers,
    /// The origin stage of a live broadcast cannot be deleted; end the broadcast.
    OriginStage,
    /// The broadcast has its maximum of 12 hosts.
    HostLimit,
    /// This client's network holds the most seats one client may hold in the broadcast
    /// (`maxSeatsPerClient`); a user already seated may still join again.
    ClientSeatLimit,
    /// The IVS region's concurrent-subscriptions quota (`regionSubscriptionQuota`) is in use:
    /// IVS would refuse another viewer. Retry later, or raise the quota with AWS and the policy.
    RegionFull,
    /// The stage is being created or deleted: it cannot be drained (or reported on) now.
    StageNotActive,
    /// The participant id is not one of the broadcast's host participants on a live stage.
    ParticipantNotFound,
    /// An IVS call failed (after retries); nothing was changed.
    IvsError,
    /// The change is in the log but IVS has not answered within `stage_outcome_timeout_secs`;
    /// it goes on in the background: watch the stage, or retry (a retry is safe).
    StillPending,
    /// The WebSocket holds its maximum of operations (`max_subscriptions_per_connection`); complete
    /// one first, or open another connection.
    SubscriptionLimit,
    /// The node cannot take writes right now (no leader, shutting down); retry.
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::RequestTooLarge => "REQUEST_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::BroadcastNotFound => "BROADCAST_NOT_FOUND",
            ErrorCode::StageNotFound => "STAGE_NOT_FOUND",
            ErrorCode::SessionNotFound => "SESSION_NOT_FOUND",
            ErrorCode::ApiKeyNotFound => "API_KEY_NOT_FOUND",
            ErrorCode::BroadcastExists => "BROADCAST_EXISTS",
            ErrorCode::BroadcastNotLive => "BROADCAST_NOT_LIVE",
            ErrorCode::CapacityExhausted => "CAPACITY_EXHAUSTED",
            ErrorCode::StageQuotaExceeded => "STAGE_QUOTA_EXCEEDED",
            ErrorCode::StageHasViewers => "STAGE_HAS_VIEWERS",
            ErrorCode::OriginStage => "ORIGIN_STAGE",
            ErrorCode::HostLimit => "HOST_LIMIT",
            ErrorCode::ClientSeatLimit => "CLIENT_SEAT_LIMIT",
            ErrorCode::RegionFull => "REGION_FULL",
            ErrorCode::StageNotActive => "STAGE_NOT_ACTIVE",
            ErrorCode::ParticipantNotFound => "PARTICIPANT_NOT_FOUND",
            ErrorCode::IvsError => "IVS_ERROR",
            ErrorCode::StillPending => "STILL_PENDING",
            ErrorCode::SubscriptionLimit => "SUBSCRIPTION_LIMIT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    pub fn error(self, message: impl Into<String>) -> async_graphql::Error {
        async_graphql::Error::new(message).extend_with(|_, e| e.set("code", self.as_str()))
    }
}

fn refusal_code(r: &Refusal) -> ErrorCode {
    match r {
        Refusal::UnknownBroadcast(_) => ErrorCode::BroadcastNotFound,
        Refusal::BroadcastNotLive(_) => ErrorCode::BroadcastNotLive,
        Refusal::CapacityExhausted(_) => ErrorCode::CapacityExhausted,
        Refusal::StageQuotaExceeded(_) => ErrorCode::StageQuotaExceeded,
        Refusal::UnknownStage(_) => ErrorCode::StageNotFound,
        Refusal::StageHasViewers(..) => ErrorCode::StageHasViewers,
        Refusal::OriginStage(_) => ErrorCode::OriginStage,
        Refusal::HostLimit(..) => ErrorCode::HostLimit,
        Refusal::ClientSeatLimit(..) => ErrorCode::ClientSeatLimit,
        Refusal::BroadcastExists(_) => ErrorCode::BroadcastExists,
        Refusal::UnknownSession(_) => ErrorCode::SessionNotFound,
        Refusal::UnknownApiKey(_) => ErrorCode::ApiKeyNotFound,
        Refusal::Fenced(_) | Refusal::StaleLeader(..) => ErrorCode::Unavailable,
        Refusal::RegionFull(_) => ErrorCode::RegionFull,
        Refusal::StageNotActive(_) => ErrorCode::StageNotActive,
        Refusal::UnknownParticipant(..) => ErrorCode::ParticipantNotFound,
    }
}

/// `.gql()?` in resolvers: node errors become coded GraphQL errors (async-graphql's blanket
/// `From<Display>` would drop the code).
pub trait Gql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> Gql<T> for Result<T, NodeError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| to_graphql(&e))
    }
}

pub fn to_graphql(e: &NodeError) -> async_graphql::Error {
    {
        match e {
            NodeError::Input(i) => ErrorCode::InvalidInput.error(i.to_string()),
            NodeError::Refused(r) => refusal_code(r).error(r.to_string()),
            NodeError::Backend(b) => {
                tracing::warn!(error = %b, "IVS call failed");
                let msg = match b {
                    BackendError::QuotaExceeded(_) => "IVS refused: an IVS quota is exhausted",
                    BackendError::AccessDenied(_) => "IVS refused: access denied (check the node's AWS credentials)",
                    _ => "IVS did not complete the call; nothing was changed, retry later",
                };
                ErrorCode::IvsError.error(msg)
            }
            NodeError::StageFailed(f) => {
                let msg = match f.kind {
                    FailureKind::Quota => "IVS refused: an IVS quota is exhausted",
                    FailureKind::AccessDenied => "IVS refused: access denied (check the node's AWS credentials)",
                    FailureKind::Failed => "IVS did not complete the call; nothing was changed, retry later",
                };
                ErrorCode::IvsError.error(msg)
            }
            NodeError::Pending { stage, waited } => ErrorCode::StillPending.error(format!(
                "stage {stage} is still waiting for IVS after {} s; it goes on in the background",
                waited.as_secs()
            )),
            NodeError::Propose(ProposeError::NotLeader { leader, .. }) => {
                ErrorCode::Unavailable.error(format!("this node is not the leader (leader: {leader:?}); retry"))
            }
            NodeError::Propose(ProposeError::Unavailable(why)) => {
                tracing::warn!(%why, "write refused");
                ErrorCode::Unavailable.error("the replicated store is unavailable; retry")
            }
            NodeError::NoSigningKey => ErrorCode::Unavailable.error("the node is still setting up its signing key"),
            NodeError::Internal(why) => {
                tracing::error!(%why, "internal error");
                ErrorCode::Internal.error("internal error")
            }
        }
    }
}

/// A response holding only errors, in the GraphQL-over-HTTP shape.
pub fn error_body(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({ "data": null, "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Errors without a code come from async-graphql itself (parse, validation, coercion, limits):
/// they are the client's mistake.
pub fn code_library_errors(errors: &mut [async_graphql::ServerError]) {
    for err in errors {
        let ext = err.extensions.get_or_insert_with(ErrorExtensionValues::default);
        if ext.get("code").is_none() {
            ext.set("code", Value::from(ErrorCode::BadRequest.as_str()));
        }
    }
}
