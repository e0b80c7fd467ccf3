//! GraphQL transports. POST: JSON body → one response; errors that async-graphql raises itself
//! (parse, validation, depth, complexity) get `extensions.code = BAD_REQUEST` so every error a
//! client sees carries a code. GET: WebSocket upgrade (graphql-transport-ws, key checked in
//! `connection_init`) or, from a browser, GraphiQL.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::{Data, ErrorExtensionValues, Value};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::auth::{Principal, bearer};
use super::error::ErrorCode;

/// A response holding only errors, in the GraphQL-over-HTTP shape.
fn error_body(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({ "data": null, "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The client's address: the configured proxy header's first entry if present and valid, else the
/// TCP peer (behind a load balancer every viewer would otherwise share one join limit).
fn client_ip(app: &AppState, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    let name = &app.node.cfg.client_ip_header;
    if name.is_empty() {
        return peer.ip();
    }
    headers
        .get(name.as_str())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|first| first.trim().parse().ok())
        .unwrap_or(peer.ip())
}

pub async fn post_graphql(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let key = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let principal = match Principal::resolve(&app.node, key, client_ip(&app, &headers, peer)) {
        Ok(p) => p,
        Err(e) => {
            return error_body(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, &e.message);
        }
    };
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("the body is not a GraphQL request in JSON: {e}");
            return error_body(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &msg);
        }
    };
    let prepared = app.parsed.prepare(request);
    let mut request = prepared.request;
    if let Some(plan) = prepared.plan {
        if let Some(body) = super::compiled::answer(&app, &plan, &request, &principal).await {
            app.node.metrics.graphql_compiled.inc();
            app.node
                .metrics
                .graphql_http_seconds
                .observe(started.elapsed().as_secs_f64());
            return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        app.parsed.attach(&mut request);
    }
    let validated = prepared.validated;
    let query = (!validated).then(|| request.query.clone());
    let schema = if validated { &app.schema_validated } else { &app.schema };
    let mut response = schema.execute(request.data(principal)).await;
    // Errors without a code come from async-graphql itself (parse, validation, coercion); ours
    // always carry one. None at all means the document passed every validation rule.
    let uncoded = |e: &async_graphql::ServerError| e.extensions.as_ref().is_none_or(|x| x.get("code").is_none());
    if !validated
        && !response.errors.iter().any(uncoded)
        && let Some(q) = query
    {
        app.parsed.passed_validation(&q);
    }
    for err in &mut response.errors {
        let ext = err.extensions.get_or_insert_with(ErrorExtensionValues::default);
        if ext.get("code").is_none() {
            ext.set("code", Value::from(ErrorCode::BadRequest.as_str()));
        }
    }
    app.node
        .metrics
        .graphql_http_seconds
        .observe(started.elapsed().as_secs_f64());
    let body = serde_json::to_vec(&response).expect("responses serialize");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub async fn get_graphql(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (mut parts, _body) = req.into_parts();
    let wants_ws = parts
        .headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !wants_ws {
        return Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response();
    }
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let node = app.node.clone();
    let client = client_ip(&app, &parts.headers, peer);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(64 * 1024)
        // tungstenite's default 128 KiB read buffer per socket made 10,000 held viewers cost
        // ~1.5 GiB; GraphQL messages here are a few hundred bytes.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, app.schema.clone(), protocol)
                .on_connection_init(move |payload: serde_json::Value| async move {
                    let key = payload.get("token").and_then(|t| t.as_str());
                    let principal = Principal::resolve(&node, key, client)?;
                    let mut data = Data::default();
                    data.insert(principal);
                    Ok(data)
                })
                .keepalive_timeout(Duration::from_secs(60))
                .serve()
        })
}
