//! The operator's cluster surface over HTTP, for admin keys (`Authorization: Bearer <key>`);
//! `stagefleet cluster …` calls these:
//! - `GET /v1/cluster/status`: this node's view — leader, term, indexes, members and their lag;
//! - `POST /v1/cluster/transfer-leader` (`{"to": N}`, optional): hand leadership over;
//! - `POST /v1/cluster/leave`: take this node out of the cluster (it then serves no writes);
//! - `POST /v1/cluster/remove` (`{"node": N}`): take another member out, e.g. one that is gone;
//! - `GET /v1/cluster/backup`: a consistent snapshot of the state (`stagefleet backup`).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::{Principal, bearer};
use crate::fleet::Role;

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message.into()}}))).into_response()
}

/// The request's key must be an admin key; else the refusal to answer.
fn admin(app: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Response> {
    let presented = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let principal = Principal::resolve(&app.node, presented, peer.ip())
        .map_err(|e| refuse(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", e.message))?;
    principal.require(Role::Admin).map_err(|e| {
        let status = if principal.role.is_none() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        refuse(status, if principal.role.is_none() { "UNAUTHENTICATED" } else { "FORBIDDEN" }, e.message)
    })
}

pub async fn status(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&app, &headers, peer) {
        return r;
    }
    Json(app.node.store.cluster_status()).into_response()
}

#[derive(Deserialize, Default)]
pub struct TransferLeader {
    to: Option<u64>,
}

pub async fn transfer_leader(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Option<Json<TransferLeader>>,
) -> Response {
    if let Err(r) = admin(&app, &headers, peer) {
        return r;
    }
    let to = body.and_then(|Json(b)| b.to);
    match app.node.store.transfer_leader(to).await {
        Ok(target) => Json(json!({"electing": target})).into_response(),
        Err(why) => refuse(StatusCode::CONFLICT, "CLUSTER", why),
    }
}

#[derive(Deserialize)]
pub struct RemoveMember {
    node: u64,
}

/// `POST /v1/cluster/remove` `{"node": N}`: take member N out (a node that is gone for good).
pub async fn remove(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<RemoveMember>,
) -> Response {
    if let Err(r) = admin(&app, &headers, peer) {
        return r;
    }
    match app.node.store.remove_member(body.node).await {
        Ok(()) => Json(json!({"removed": body.node})).into_response(),
        Err(why) => refuse(StatusCode::CONFLICT, "CLUSTER", why),
    }
}

/// `GET /v1/cluster/backup`: a consistent snapshot of this node's state, as a file.
pub async fn backup(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&app, &headers, peer) {
        return r;
    }
    match app.node.store.backup(std::time::Duration::from_secs(60)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"stagefleet.backup\""),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", format!("{e:#}")),
    }
}

pub async fn leave(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&app, &headers, peer) {
        return r;
    }
    match app.node.store.leave().await {
        Ok(()) => Json(json!({"left": app.node.store.node_id})).into_response(),
        Err(why) => refuse(StatusCode::CONFLICT, "CLUSTER", why),
    }
}
