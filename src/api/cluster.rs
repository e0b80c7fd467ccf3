//! The operator's cluster surface over HTTP, for admin keys (`Authorization: Bearer <key>`);
//! `stagefleet cluster …` calls these:
//! - `GET /v1/cluster/status`: this node's view — leader, term, indexes, members and their lag;
//! - `POST /v1/cluster/transfer-leader` (`{"to": N}`, optional): hand leadership over;
//! - `POST /v1/cluster/leave`: take this node out of the cluster (it then serves no writes);
//! - `POST /v1/cluster/remove` (`{"node": N}`): take another member out, e.g. one that is gone;
//! - `GET /v1/cluster/backup`: a consistent snapshot of the state (`stagefleet backup`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::{Principal, bearer};
use crate::fleet::Role;

/// The `/v1/cluster/*` routes, every one behind an admin key.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/cluster/status", get(status))
        .route("/v1/cluster/transfer-leader", post(transfer_leader))
        .route("/v1/cluster/leave", post(leave))
        .route("/v1/cluster/remove", post(remove))
        .route("/v1/cluster/backup", get(backup))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// The request's key must be an admin key; else it is refused before the route runs.
async fn require_admin(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let presented = bearer(req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let principal = match Principal::resolve(&app.node, presented, peer.ip()) {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", e.message),
    };
    if let Err(e) = principal.require(Role::Admin) {
        return match principal.role {
            None => refuse(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", e.message),
            Some(_) => refuse(StatusCode::FORBIDDEN, "FORBIDDEN", e.message),
        };
    }
    next.run(req).await
}

async fn status(State(app): State<AppState>) -> Response {
    Json(app.node.store.cluster_status()).into_response()
}

#[derive(Deserialize, Default)]
struct TransferLeader {
    to: Option<u64>,
}

async fn transfer_leader(State(app): State<AppState>, body: Option<Json<TransferLeader>>) -> Response {
    let to = body.and_then(|Json(b)| b.to);
    match app.node.store.transfer_leader(to).await {
        Ok(target) => Json(json!({"electing": target})).into_response(),
        Err(why) => refuse(StatusCode::CONFLICT, "CLUSTER", why),
    }
}

#[derive(Deserialize)]
struct RemoveMember {
    node: u64,
}

/// `POST /v1/cluster/remove` `{"node": N}`: take member N out (a node that is gone for good).
async fn remove(State(app): State<AppState>, Json(body): Json<RemoveMember>) -> Response {
    match app.node.store.remove_member(body.node).await {
        Ok(()) => Json(json!({"removed": body.node})).into_response(),
        Err(why) => refuse(StatusCode::CONFLICT, "CLUSTER", why),
    }
}

/// `GET /v1/cluster/backup`: a consistent snapshot of this node's state, as a file, streamed
/// from disk in chunks (a large state is never held in memory).
async fn backup(State(app): State<AppState>) -> Response {
    match app.node.store.backup(std::time::Duration::from_secs(60)).await {
        Ok(file) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"stagefleet.backup\"",
                ),
            ],
            axum::body::Body::from_stream(chunks(tokio::fs::File::from_std(file))),
        )
            .into_response(),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", format!("{e:#}")),
    }
}

async fn leave(State(app): State<AppState>) -> Response {
    match app.node.store.leave().await {
        Ok(()) => Json(json!({"left": app.node.store.node_id})).into_response(),
        Err(why) => refuse(StatusCode::CONFLICT, "CLUSTER", why),
    }
}

/// A file as a stream of chunks of at most 256 KiB.
fn chunks(file: tokio::fs::File) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        let n = file.read(&mut buf).await?;
        buf.truncate(n);
        Ok((n > 0).then_some((buf, file)))
    })
}
