//! GraphQL transports. POST: a JSON body (415 otherwise), read within a time and size limit, screened
//! (`screen`), then one response; errors that async-graphql raises itself (parse, validation, depth,
//! complexity) get `extensions.code = BAD_REQUEST` so every error a client sees carries a code.
//! GET: a WebSocket upgrade within `max_websockets` (served by `ws`) or, from a browser, GraphiQL.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Principal, bearer};
use super::error::{ErrorCode, code_library_errors, error_body};
use super::{AppState, MAX_BODY_BYTES};

/// The client's network for per-client limits (see `client_ip`).
fn client_of(app: &AppState, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    app.identity.subnet(app.identity.client_ip(headers, peer.ip()))
}

/// GraphQL over HTTP is JSON: a form, multipart or text/plain POST — what a cross-site page can
/// send without a CORS preflight — never runs.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/graphql-response+json")
}

/// The request body, at most `MAX_BODY_BYTES`, within `body_read_timeout_secs`.
async fn read_body(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    // The rest of such a body is never read: the connection closes after the answer, and says
    // so, so a client does not send its next request on it.
    let closing = |mut r: Response| {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let too_large = || {
        app.node.metrics.refuse("too_large");
        let msg = format!("the body is larger than {} KiB", MAX_BODY_BYTES / 1024);
        closing(error_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestTooLarge,
            &msg,
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let limit = Duration::from_secs(app.node.cfg.body_read_timeout_secs.max(1));
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let over = std::error::Error::source(&e)
                .into_iter()
                .chain(std::iter::successors(std::error::Error::source(&e), |e| e.source()))
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if over {
                Err(too_large())
            } else {
                Err(closing(error_body(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    "the body could not be read",
                )))
            }
        }
        Err(_) => {
            let msg = format!("the body did not arrive within {} s", limit.as_secs());
            Err(closing(error_body(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::BadRequest,
                &msg,
            )))
        }
    }
}

pub async fn post_graphql(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    if !json_content_type(&headers) {
        app.node.metrics.refuse("media_type");
        let msg = "a GraphQL POST must have content-type application/json";
        return error_body(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedMediaType, msg);
    }
    let body = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let key = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let principal = match Principal::resolve(&app.node, key, client_of(&app, &headers, peer)) {
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
    let prepared = app.parsed.prepare(request, &app.screen);
    if let Some(why) = prepared.refused {
        app.node.metrics.refuse("gate");
        return error_body(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &why);
    }
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
    // A current read (`x-stagefleet-read: current`): every write committed before this request
    // is applied here first, on a follower too (one read barrier; concurrent ones share rounds).
    // Otherwise the answer is this node's applied state, as the response's headers say.
    let current = headers
        .get(READ_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("current"));
    if current && let Err(e) = app.node.store.catch_up().await {
        let msg = format!("a current read needs the leader to confirm the commit index: {e}");
        return error_body(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, &msg);
    }
    let validated = prepared.validated;
    let query = (!validated).then(|| request.query.clone());
    let schema = if validated { &app.schema_validated } else { &app.schema };
    let request = request
        .data(principal)
        .data(super::schema::types::RequestView::default());
    let mut response = schema.execute(request).await;
    // Errors without a code come from async-graphql itself (parse, validation, coercion); ours
    // always carry one. None at all means the document passed every validation rule.
    let uncoded = |e: &async_graphql::ServerError| e.extensions.as_ref().is_none_or(|x| x.get("code").is_none());
    if !validated
        && !response.errors.iter().any(uncoded)
        && let Some(q) = query
    {
        app.parsed.passed_validation(&q);
    }
    code_library_errors(&mut response.errors);
    app.node
        .metrics
        .graphql_http_seconds
        .observe(started.elapsed().as_secs_f64());
    let body = serde_json::to_vec(&response).expect("responses serialize");
    let (applied, leader) = app.node.store.applied_and_leader();
    let applied = applied.unwrap_or(0).to_string();
    let leader = leader.map_or_else(|| "none".to_string(), |l| l.to_string());
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                READ_HEADER,
                HeaderValue::from_static(if current { "current" } else { "local" }),
            ),
            (APPLIED_HEADER, HeaderValue::from_str(&applied).expect("digits")),
            (LEADER_HEADER, HeaderValue::from_str(&leader).expect("digits")),
        ],
        body,
    )
        .into_response()
}

/// Asks for a current read (`current`); answered with how the request was read (`current` or
/// `local`).
pub const READ_HEADER: header::HeaderName = header::HeaderName::from_static("x-stagefleet-read");
/// The log index of the state the answer was read from.
pub const APPLIED_HEADER: header::HeaderName = header::HeaderName::from_static("x-stagefleet-applied-index");
/// The leader as the answering node knows it (`none` during an election).
pub const LEADER_HEADER: header::HeaderName = header::HeaderName::from_static("x-stagefleet-leader");

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
        return super::graphiql::page();
    }
    let speaks = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == super::ws::PROTOCOL);
    if !speaks {
        let msg = "GraphQL over WebSocket needs the graphql-transport-ws subprotocol (Sec-WebSocket-Protocol)";
        return error_body(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, msg);
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let Ok(slot) = app.ws_slots.clone().try_acquire_owned() else {
        app.node.metrics.refuse("websocket");
        let msg = "this node holds its maximum of WebSockets (max_websockets); retry later or another node";
        return error_body(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, msg);
    };
    let client = client_of(&app, &parts.headers, peer);
    let conn_slot = parts.extensions.get::<super::server::ConnSlot>().cloned();
    upgrade
        .protocols([super::ws::PROTOCOL])
        // Incoming frames and messages are refused past the body limit as soon as a frame header
        // announces more (tungstenite otherwise reserves what a frame announces, up to 16 MiB).
        .max_message_size(MAX_BODY_BYTES)
        .max_frame_size(MAX_BODY_BYTES)
        // tungstenite's default 128 KiB read buffer per socket made 10,000 held viewers cost
        // ~1.5 GiB; GraphQL messages here are a few hundred bytes (a longer one is read in parts).
        .read_buffer_size(1024)
        .write_buffer_size(0)
        // Outgoing messages of any size are written (an answer listing many stages or keys can
        // be large); back-pressure comes from the bounded queue in `super::ws`.
        .on_upgrade(move |socket| super::ws::serve(app, socket, client, (slot, conn_slot)))
}
