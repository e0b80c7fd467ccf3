//! HTTP for the emulator: restJson1 routing (`POST /<Operation>`), injected faults, TPS quotas,
//! the AWS error/response envelope, persistence after mutations, and the `/_emulator/*` calls.
//! SigV4 headers are accepted and ignored: nothing here checks signatures.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Faults;
use super::error::{ApiError, ApiResult};
use super::ops::{self, Ctx, Settings};
use super::persist;
use super::quota::Quotas;
use super::state::State;
use crate::ivs::token::random_id;

pub struct Shared {
    pub state: Mutex<State>,
    pub settings: Settings,
    pub quotas: Quotas,
    pub faults: Mutex<Faults>,
    pub state_file: Option<PathBuf>,
    pub media: super::media::Media,
}

impl Shared {
    /// Run `f` on the state, settled to now (Unix ms passed along).
    pub fn with_settled_state<T>(&self, f: impl FnOnce(&mut State, i64) -> T) -> T {
        let mut state = self.state.lock().expect("state lock");
        let now_ms = unix_now_ms();
        state.settle(now_ms);
        f(&mut state, now_ms)
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        self.with_settled_state(|state, _| f(state))
    }

    /// Run a pure function of the model with a context as of now.
    pub fn with_ctx<T>(&self, f: impl FnOnce(Ctx<'_>) -> T) -> T {
        let replication_active_ms = self.faults.lock().expect("faults lock").replication_active_ms as i64;
        self.with_settled_state(|state, now_ms| {
            f(Ctx {
                state,
                settings: &self.settings,
                now: now_ms / 1000,
                now_ms,
                replication_active_ms,
            })
        })
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/events", get(super::media::events::upgrade))
        .merge(super::media::whip::routes())
        .route("/_emulator/join", post(join))
        .route("/_emulator/leave", post(leave))
        .route("/_emulator/state", get(summary))
        .route("/_emulator/faults", post(set_faults))
        .route("/{op}", post(operation))
        .with_state(shared)
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every answer carries a request id, as AWS's do; the SDK surfaces it in errors.
fn with_request_id(mut response: Response) -> Response {
    let id = HeaderValue::from_str(&random_id(32)).expect("alphanumeric header");
    response.headers_mut().insert("x-amzn-RequestId", id);
    response
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let bytes: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(bytes).map_err(|e| ApiError::Validation(format!("invalid request body: {e}")))
}

async fn operation(AxState(shared): AxState<Arc<Shared>>, Path(op): Path<String>, body: Bytes) -> Response {
    let result = run_operation(&shared, &op, &body).await;
    if let Err(e) = &result {
        tracing::debug!(op, code = e.code(), "emulated IVS error: {e}");
    }
    with_request_id(match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    })
}

async fn run_operation(shared: &Shared, op: &str, body: &Bytes) -> ApiResult<Value> {
    let faults = shared.faults.lock().expect("faults lock").clone();
    let latency = faults.latency_ms + if op == "CreateStage" { faults.create_stage_ms } else { 0 };
    if latency > 0 {
        // Simulated network/service latency, not synchronisation.
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if !ops::OPERATIONS.contains(&op) {
        return Err(ApiError::UnknownOperation(op.to_string()));
    }
    if faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate {
        return Err(ApiError::Internal("injected fault: internal server error".into()));
    }
    if faults.throttle_rate > 0.0 && rand::random::<f64>() < faults.throttle_rate {
        return Err(ApiError::Throttled("injected fault: rate exceeded".into()));
    }
    if !shared.quotas.admit(op, Instant::now()) {
        return Err(ApiError::Throttled(format!("rate exceeded for {op}")));
    }
    let request: Value = parse(body)?;
    let outcome = shared.with_settled_state(|state, now_ms| {
        let outcome = ops::dispatch(
            op,
            request,
            Ctx {
                state: &mut *state,
                settings: &shared.settings,
                now: now_ms / 1000,
                now_ms,
                replication_active_ms: faults.replication_active_ms as i64,
            },
        )?;
        if outcome.mutated {
            save(shared, state);
        }
        Ok::<_, ApiError>(outcome)
    })?;
    // A kick, a deleted stage or a replica reaches the stage's sockets (reads wake nobody).
    let moves_people = matches!(
        op,
        "DisconnectParticipant" | "StartParticipantReplication" | "StopParticipantReplication"
    );
    if outcome.mutated || moves_people {
        shared.media.touch();
    }
    Ok(outcome.body)
}

/// Saved under the state lock so files are written in the order the changes happened; the file
/// is small (stages and keys only), so the blocking write is brief.
fn save(shared: &Shared, state: &State) {
    if let Some(path) = &shared.state_file
        && let Err(e) = persist::save(path, state)
    {
        tracing::error!("emulator state not saved: {e:#}");
    }
}

/// The `/_emulator/*` answer: JSON on success, the AWS error envelope otherwise.
fn answer(result: ApiResult<Value>) -> Response {
    with_request_id(match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    })
}

/// Parse `body` as `R` and run `op` on the state under its lock.
fn run_json<R: DeserializeOwned>(shared: &Shared, body: &Bytes, op: fn(Ctx<'_>, R) -> ApiResult<Value>) -> Response {
    let result = parse::<R>(body).and_then(|req| shared.with_ctx(|ctx| op(ctx, req)));
    shared.media.touch();
    answer(result)
}

async fn join(AxState(shared): AxState<Arc<Shared>>, body: Bytes) -> Response {
    run_json::<ops::JoinRequest>(&shared, &body, ops::join)
}

async fn leave(AxState(shared): AxState<Arc<Shared>>, body: Bytes) -> Response {
    run_json::<ops::LeaveRequest>(&shared, &body, ops::leave)
}

async fn summary(AxState(shared): AxState<Arc<Shared>>) -> Response {
    let state = shared.state.lock().expect("state lock");
    with_request_id(axum::Json(ops::summary(&state)).into_response())
}

/// `POST /_emulator/faults {"latencyMs", "errorRate", "throttleRate", "createStageMs",
/// "replicationActiveMs"}`: change injected faults and latencies at
/// runtime (tests break IVS after a node has started against it).
async fn set_faults(AxState(shared): AxState<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Input {
        #[serde(default)]
        latency_ms: u64,
        #[serde(default)]
        error_rate: f64,
        #[serde(default)]
        throttle_rate: f64,
        #[serde(default)]
        create_stage_ms: u64,
        #[serde(default)]
        replication_active_ms: u64,
    }
    answer(parse::<Input>(&body).and_then(|i| {
        let ok = |r: f64| (0.0..=1.0).contains(&r);
        if !ok(i.error_rate) || !ok(i.throttle_rate) {
            return Err(ApiError::Validation(
                "errorRate and throttleRate must be between 0 and 1".into(),
            ));
        }
        *shared.faults.lock().expect("faults lock") = Faults {
            latency_ms: i.latency_ms,
            error_rate: i.error_rate,
            throttle_rate: i.throttle_rate,
            create_stage_ms: i.create_stage_ms,
            replication_active_ms: i.replication_active_ms,
        };
        Ok(serde_json::json!({}))
    }))
}
