//! The IVS Real-Time operations: decode a JSON request, apply it to [`State`], encode the answer.
//! Pure functions of (state, settings, request, `now`); HTTP, quotas, faults and persistence are
//! the server's business.

mod join;
mod keys;
mod lookup;
pub mod media;
mod participants;
mod replication;
mod stages;
mod summary;
pub mod validate;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::state::State;

/// What the operations need from the emulator's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub region: String,
    pub account_id: String,
    /// Base for stage endpoints, without a trailing slash (e.g. `http://127.0.0.1:4566`).
    pub public_base_url: String,
    pub publishers_per_stage: u32,
    pub subscribers_per_stage: u32,
    pub max_stages: u32,
    pub max_public_keys: u32,
    pub max_replications_per_participant: u32,
}

impl Settings {
    /// Stage endpoints derived from the public base URL. No query strings: clients append their own.
    pub fn endpoints(&self) -> Value {
        let base = self.public_base_url.trim_end_matches('/');
        let (secure, authority) = match base.split_once("://") {
            Some((scheme, rest)) => (scheme == "https", rest.split('/').next().unwrap_or(rest)),
            None => (false, base),
        };
        let ws = if secure { "wss" } else { "ws" };
        json!({
            "events": format!("{ws}://{authority}/events"),
            "whip": format!("{base}/whip"),
            "rtmp": format!("rtmp://{authority}/app/"),
            "rtmps": format!("rtmps://{authority}/app/"),
        })
    }
}

/// One call: the state to act on, the settings, and the time.
pub struct Ctx<'a> {
    pub state: &'a mut State,
    pub settings: &'a Settings,
    pub now: i64,
    /// The same moment in milliseconds (for delays shorter than a second).
    pub now_ms: i64,
    /// Delay before a new replica participant publishes (`Faults::replication_active_ms`).
    pub replication_active_ms: i64,
}

/// An operation's answer and whether it changed something worth persisting.
pub struct Outcome {
    pub body: Value,
    pub mutated: bool,
}

impl Outcome {
    fn read(body: Value) -> ApiResult<Self> {
        Ok(Self { body, mutated: false })
    }

    fn wrote(body: Value) -> ApiResult<Self> {
        Ok(Self { body, mutated: true })
    }
}

/// Run operation `op` (the URL path segment) on `body`.
pub fn dispatch(op: &str, body: Value, ctx: Ctx<'_>) -> ApiResult<Outcome> {
    match op {
        "CreateStage" => stages::create(ctx, parse(body)?),
        "GetStage" => stages::get(ctx, parse(body)?),
        "ListStages" => stages::list(ctx, parse(body)?),
        "DeleteStage" => stages::delete(ctx, parse(body)?),
        "ImportPublicKey" => keys::import(ctx, parse(body)?),
        "GetPublicKey" => keys::get(ctx, parse(body)?),
        "ListPublicKeys" => keys::list(ctx, parse(body)?),
        "DeletePublicKey" => keys::delete(ctx, parse(body)?),
        "CreateParticipantToken" => participants::create_token(ctx, parse(body)?),
        "ListParticipants" => participants::list(ctx, parse(body)?),
        "DisconnectParticipant" => participants::disconnect(ctx, parse(body)?),
        "StartParticipantReplication" => replication::start(ctx, parse(body)?),
        "StopParticipantReplication" => replication::stop(ctx, parse(body)?),
        "ListParticipantReplicas" => replication::list(ctx, parse(body)?),
        other => Err(ApiError::UnknownOperation(other.to_string())),
    }
}

pub use join::{JoinRequest, LeaveRequest, join, leave};
pub use summary::summary;

/// Every IVS operation the emulator answers (others get UnknownOperationException).
pub use crate::ivs::ratelimit::OPERATIONS;

/// `{arn}`: the request of the Get*/Delete* operations.
#[derive(serde::Deserialize)]
pub struct ArnReq {
    pub arn: String,
}

/// Paging arguments of the List* operations.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListReq {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

fn parse<T: DeserializeOwned>(body: Value) -> ApiResult<T> {
    serde_json::from_value(body).map_err(|e| ApiError::Validation(format!("invalid request body: {e}")))
}

/// ISO-8601 UTC with a `Z`, the form the SDK parses.
pub fn iso8601(unix_secs: i64) -> String {
    use aws_sdk_ivsrealtime::primitives::{DateTime, DateTimeFormat};
    DateTime::from_secs(unix_secs)
        .fmt(DateTimeFormat::DateTime)
        .expect("in-range timestamp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base: &str) -> Settings {
        Settings {
            region: "us-east-1".into(),
            account_id: "1".into(),
            public_base_url: base.into(),
            publishers_per_stage: 12,
            subscribers_per_stage: 10,
            max_stages: 2,
            max_public_keys: 3,
            max_replications_per_participant: 5,
        }
    }

    #[test]
    fn endpoints_follow_the_public_base_url_scheme() {
        let e = settings("https://ivs.example.com:8443/").endpoints();
        assert_eq!(e["events"], "wss://ivs.example.com:8443/events");
        assert_eq!(e["whip"], "https://ivs.example.com:8443/whip");
        assert_eq!(e["rtmps"], "rtmps://ivs.example.com:8443/app/");
        assert_eq!(
            settings("http://127.0.0.1:9").endpoints()["events"],
            "ws://127.0.0.1:9/events"
        );
    }
}
