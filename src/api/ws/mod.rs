//! One GraphQL WebSocket, speaking graphql-transport-ws itself (so the node owns its bounds), with
//! the node's rules around it:
//! - `connection_init` must arrive within `ws_init_timeout_secs` (else close 4408); a socket that
//!   sends nothing for `ws_idle_timeout_secs` is closed (4000); the node pings at a third of that.
//! - Every operation passes the same screen as an HTTP request (front gate, enum literals) and
//!   re-checks the connection's API key against the replicated key set: a revoked key runs
//!   nothing, and revoking it closes the socket (4403, with the reason).
//! - At most `max_subscriptions_per_connection` operations at once; one more is refused with
//!   `SUBSCRIPTION_LIMIT` and the socket lives on.
//! - Identical `stats`, `broadcast` and `node` subscriptions run in groups (`groups`): one
//!   execution and one serialized payload per update for all their subscribers. Every other
//!   operation (a viewer's `assignment` above all) is polled by the socket's own task: no task,
//!   group or map entry of its own.
//! - What the node sends goes through a bounded queue to one writer; a socket whose queue is full
//!   fell behind and is closed (4001) rather than buffered without limit.
//! - Shutting the node down ends every open operation with an `UNAVAILABLE` error, then closes
//!   the socket (1001).

pub mod assignment;
pub mod frames;
pub mod groups;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::{OperationType, Selection};
use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use self::frames::ClientMessage;
use self::groups::{Membership, Outbox};
use super::AppState;
use super::auth::Principal;
use super::error::ErrorCode;

/// The one subprotocol spoken (graphql-transport-ws, as the `graphql-ws` library and GraphiQL use it).
pub const PROTOCOL: &str = "graphql-transport-ws";

/// Frames queued for one socket's writer before it counts as fallen behind.
const OUTBOX: usize = 64;

/// graphql-transport-ws close codes, and ours (4000–4099).
const CLOSE_INVALID: u16 = 4400;
const CLOSE_UNAUTHORIZED: u16 = 4401;
const CLOSE_FORBIDDEN: u16 = 4403;
const CLOSE_INIT_TIMEOUT: u16 = 4408;
const CLOSE_DUPLICATE_ID: u16 = 4409;
const CLOSE_TOO_MANY_INITS: u16 = 4429;
const CLOSE_IDLE: u16 = 4000;
const CLOSE_SLOW: u16 = 4001;
/// RFC 6455 "going away".
const CLOSE_SHUTDOWN: u16 = 1001;

/// Subscriptions whose identical copies share one execution: they follow one value, so a late
/// subscriber is served by the latest payload.
const SHARED_FIELDS: &[&str] = &["stats", "broadcast", "node"];

/// Whether the key `principal` presented (if any) is no longer in the replicated key set.
fn key_revoked(app: &AppState, principal: &Principal) -> bool {
    principal
        .key_id
        .as_ref()
        .is_some_and(|id| !app.node.store.view().fleet.api_keys.contains_key(id))
}

/// Resolves when the key `principal` presented is no longer in the replicated key set.
async fn revoked(app: AppState, principal: Principal) {
    if principal.key_id.is_none() {
        return std::future::pending().await;
    }
    let mut version = app.node.store.meta_changes();
    loop {
        if version.changed().await.is_err() {
            return std::future::pending().await;
        }
        if key_revoked(&app, &principal) {
            return;
        }
    }
}

/// Why the node closes a socket.
struct Close(u16, String);

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Close(code, reason.into())
    }
}

/// One open operation of a socket.
enum Op {
    /// A member of a shared group; dropping it leaves the group.
    Shared(#[allow(dead_code)] Membership),
    /// Its stream is in the socket's `own` list.
    Own,
}

/// An operation only this socket follows, polled by the socket's task.
struct OwnOp {
    id: String,
    id_json: String,
    stream: BoxStream<'static, async_graphql::Response>,
}

/// The socket's side of its open operations.
struct Conn {
    app: AppState,
    client: IpAddr,
    principal: Option<Principal>,
    ops: HashMap<String, Op>,
    own: Vec<OwnOp>,
    /// Where the next poll of `own` starts, so one busy operation cannot starve the others.
    own_turn: usize,
    out: Outbox,
}

/// The next item of one of a socket's own operations: its index and the item (`None`: it ended).
fn next_own<'a>(
    own: &'a mut [OwnOp],
    turn: &'a mut usize,
) -> impl std::future::Future<Output = (usize, Option<async_graphql::Response>)> + 'a {
    std::future::poll_fn(move |cx| {
        let n = own.len();
        for k in 0..n {
            let i = (*turn + k) % n;
            if let std::task::Poll::Ready(item) = own[i].stream.poll_next_unpin(cx) {
                *turn = i + 1;
                return std::task::Poll::Ready((i, item));
            }
        }
        std::task::Poll::Pending
    })
}

/// Serve one socket. `slots`: its place under `max_websockets` and under `max_connections`, held
/// until it closes.
pub async fn serve(
    app: AppState,
    socket: WebSocket,
    client: IpAddr,
    slots: (OwnedSemaphorePermit, Option<super::server::ConnSlot>),
) {
    let _slots = slots;
    let metrics = app.node.metrics.clone();
    metrics.open_websockets.inc();
    let cfg = &app.node.cfg;
    let init_timeout = Duration::from_secs(cfg.ws_init_timeout_secs.max(1));
    let idle_timeout = Duration::from_secs(cfg.ws_idle_timeout_secs.max(3));
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outbox, signals) = Outbox::new(OUTBOX);
    // The one writer: a socket whose reader stalls blocks only this task, and hands the sink back
    // for the close frame once every sender is gone.
    let mut writer = tokio::spawn(async move {
        while let Some(msg) = outbox.recv().await {
            sink.send(msg).await.ok()?;
        }
        Some(sink)
    });
    let mut conn = Conn {
        app: app.clone(),
        client,
        principal: None,
        ops: HashMap::new(),
        own: Vec::new(),
        own_turn: 0,
        out,
    };
    let init_deadline = Instant::now() + init_timeout;
    let mut idle_deadline = Instant::now() + idle_timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + idle_timeout / 3, idle_timeout / 3);
    let mut shutdown = app.shutdown.clone();
    // Watches the key set once the socket has presented a key.
    let mut revocation: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(std::future::pending());
    let mut writer_done = false;
    let closing: Option<Close> = loop {
        tokio::select! {
            biased;
            () = &mut revocation => {
                metrics.refuse("revoked");
                break Some(Close::new(CLOSE_FORBIDDEN, "Forbidden: the API key was revoked"));
            }
            _ = async { shutdown.wait_for(|down| *down).await.is_ok() } => {
                // Every open operation ends with a reason, before the close.
                let reason = frames::errors(ErrorCode::Unavailable.as_str(), "the node is shutting down");
                for id in conn.ops.keys() {
                    conn.refuse_json(&frames::id_json(id), &reason);
                }
                break Some(Close::new(CLOSE_SHUTDOWN, "the node is shutting down"));
            }
            () = signals.tripped() => {
                metrics.refuse("slow_subscriber");
                break Some(Close::new(CLOSE_SLOW, format!("fell behind: {OUTBOX} messages queued and not read")));
            }
            // The writer stopped on its own: the socket failed under it.
            _ = &mut writer => {
                writer_done = true;
                break None;
            }
            ids = signals.ended() => {
                for id in ids {
                    if conn.ops.remove(&id).is_some() {
                        metrics.subscriptions_open.dec();
                    }
                }
            }
            (i, item) = next_own(&mut conn.own, &mut conn.own_turn), if !conn.own.is_empty() => {
                conn.on_own(i, item);
            }
            msg = incoming.next() => {
                let Some(Ok(msg)) = msg else { break None };
                idle_deadline = Instant::now() + idle_timeout;
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Binary(_) => break Some(Close::new(CLOSE_INVALID, "Invalid message received: binary frames are not GraphQL")),
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                let had_principal = conn.principal.is_some();
                if let Some(close) = conn.on_message(text.as_str()) {
                    break Some(close);
                }
                if let (false, Some(p)) = (had_principal, &conn.principal) {
                    revocation = Box::pin(revoked(app.clone(), p.clone()));
                }
            }
            _ = tokio::time::sleep_until(init_deadline), if conn.principal.is_none() => {
                metrics.refuse("ws_init_timeout");
                break Some(Close::new(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout"));
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                metrics.refuse("ws_idle");
                break Some(Close::new(CLOSE_IDLE, format!("idle: nothing received for {} s", idle_timeout.as_secs())));
            }
            _ = ping.tick() => { conn.out.offer(frames::PING.to_string()); }
        }
    };
    let open = conn.ops.len() as i64;
    // Leaving every group drops the last senders: the writer sends what is queued and returns.
    drop(conn);
    metrics.subscriptions_open.dec_by(open);
    let sink = match &closing {
        _ if writer_done => None,
        // Its reader stalled: nothing more gets through, so the socket is dropped as it is.
        Some(Close(CLOSE_SLOW, reason)) => {
            tracing::info!(%client, reason, "closing a WebSocket that fell behind");
            writer.abort();
            None
        }
        _ => match tokio::time::timeout(Duration::from_secs(5), &mut writer).await {
            Ok(Ok(sink)) => sink,
            _ => {
                writer.abort();
                None
            }
        },
    };
    if let Some(mut sink) = sink {
        if let Some(Close(code, reason)) = closing {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    }
    metrics.open_websockets.dec();
}

impl Conn {
    /// One item of the socket's own operation `i`: a response to send, or its end.
    fn on_own(&mut self, i: usize, item: Option<async_graphql::Response>) {
        let metrics = &self.app.node.metrics;
        let op = &self.own[i];
        match item {
            Some(response) => {
                let payload = groups::payload(metrics, response);
                if self.out.offer(frames::next(&op.id_json, &payload)) {
                    metrics.subscription_frames.inc();
                }
            }
            None => {
                self.out.offer(frames::complete(&op.id_json));
                let op = self.own.swap_remove(i);
                if self.ops.remove(&op.id).is_some() {
                    metrics.subscriptions_open.dec();
                }
            }
        }
    }

    /// Forget operation `id` (completed by the client).
    fn forget(&mut self, id: &str) {
        if let Some(op) = self.ops.remove(id) {
            if matches!(op, Op::Own) {
                self.own.retain(|o| o.id != id);
            }
            self.app.node.metrics.subscriptions_open.dec();
        }
    }

    /// Handle one client message; `Some` closes the socket.
    fn on_message(&mut self, text: &str) -> Option<Close> {
        let Ok(msg) = serde_json::from_str::<ClientMessage>(text) else {
            return Some(Close::new(CLOSE_INVALID, "Invalid message received"));
        };
        match msg {
            ClientMessage::ConnectionInit { payload } => {
                if self.principal.is_some() {
                    return Some(Close::new(CLOSE_TOO_MANY_INITS, "Too many initialisation requests"));
                }
                let key = payload.as_ref().and_then(|p| p.get("token")).and_then(|t| t.as_str());
                match Principal::resolve(&self.app.node, key, self.client) {
                    Ok(p) => self.principal = Some(p),
                    Err(e) => return Some(Close::new(CLOSE_FORBIDDEN, format!("Forbidden: {}", e.message))),
                }
                self.out.offer(frames::ACK.to_string());
            }
            ClientMessage::Ping {} => {
                self.out.offer(frames::PONG.to_string());
            }
            ClientMessage::Pong {} => {}
            ClientMessage::Subscribe { id, payload } => {
                if self.principal.is_none() {
                    return Some(Close::new(
                        CLOSE_UNAUTHORIZED,
                        "Unauthorized: send connection_init first",
                    ));
                }
                if self.ops.contains_key(&id) {
                    return Some(Close::new(
                        CLOSE_DUPLICATE_ID,
                        format!("Subscriber for {id} already exists"),
                    ));
                }
                self.subscribe(id, *payload);
            }
            ClientMessage::Complete { id } => self.forget(&id),
        }
        None
    }

    /// Answer one operation with an error and end it (`next` with `errors`, then `complete`, as
    /// the executor answers a refused operation); the socket lives on.
    fn refuse(&self, id_json: &str, code: ErrorCode, message: &str) {
        self.refuse_json(id_json, &frames::errors(code.as_str(), message));
    }

    fn refuse_json(&self, id_json: &str, response: &str) {
        self.out.offer(frames::next(id_json, response));
        self.out.offer(frames::complete(id_json));
    }

    fn subscribe(&mut self, id: String, request: async_graphql::Request) {
        let app = self.app.clone();
        let metrics = &app.node.metrics;
        let id_json = frames::id_json(&id);
        let principal = self.principal.clone().expect("checked by the caller");
        let cap = app.node.cfg.max_subscriptions_per_connection;
        if self.ops.len() >= cap {
            metrics.refuse("subscription_limit");
            let msg =
                format!("this connection holds its maximum of {cap} operations (max_subscriptions_per_connection)");
            self.refuse(&id_json, ErrorCode::SubscriptionLimit, &msg);
            return;
        }
        if key_revoked(&app, &principal) {
            metrics.refuse("revoked");
            let msg = "the API key of this connection was revoked";
            self.refuse(&id_json, ErrorCode::Unauthenticated, msg);
            return;
        }
        let prepared = app.parsed.prepare(request, &app.screen);
        if let Some(why) = prepared.refused {
            metrics.refuse("gate");
            self.refuse(&id_json, ErrorCode::BadRequest, &why);
            return;
        }
        let mut request = prepared.request;
        if prepared.plan.is_some() {
            // Plans answer HTTP only; the executor needs the document.
            app.parsed.attach(&mut request);
        }
        let shape = shape(&mut request);
        let role = principal.role;
        if shape == Shape::Other {
            // One view of the state per query or mutation; a subscription reads a fresh one each time.
            request = request.data(super::schema::types::RequestView::default());
        }
        let mut data = Data::default();
        data.insert(principal);
        let session = Arc::new(data);
        match shape {
            Shape::Shared => {
                let key = format!(
                    "shared\u{0}{:?}\u{0}{}\u{0}{:?}\u{0}{}",
                    role,
                    request.query,
                    request.operation_name,
                    serde_json::to_string(&request.variables).unwrap_or_default()
                );
                let schema = app.schema.clone();
                let start = move || Executor::execute_stream(&schema, request, Some(session));
                let membership = app.groups.join(key, &id, self.out.clone(), start);
                self.ops.insert(id, Op::Shared(membership));
            }
            _ => {
                let stream = if shape == Shape::Assignment {
                    assignment::follow(app.assignments.clone(), request, session)
                } else {
                    Executor::execute_stream(&app.schema, request, Some(session))
                };
                self.own.push(OwnOp {
                    id: id.clone(),
                    id_json,
                    stream,
                });
                self.ops.insert(id, Op::Own);
            }
        }
        metrics.subscriptions_open.inc();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A subscription whose identical copies may share one execution.
    Shared,
    /// `assignment` alone: rendered per update, no execution held open (`assignment`).
    Assignment,
    /// Another subscription.
    Subscription,
    Other,
}

/// The operation the request will run, as far as sharing is concerned. A document that does not
/// parse, or names no operation it has, is left for the executor to refuse.
fn shape(request: &mut async_graphql::Request) -> Shape {
    let name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return Shape::Other;
    };
    let op = doc
        .operations
        .iter()
        .find(|(n, _)| name.is_none() || n.map(|n| n.as_str()) == name.as_deref())
        .map(|(_, op)| op);
    let Some(op) = op else { return Shape::Other };
    if op.node.ty != OperationType::Subscription {
        return Shape::Other;
    }
    let fields: Vec<&str> = op
        .node
        .selection_set
        .node
        .items
        .iter()
        .filter_map(|s| match &s.node {
            Selection::Field(f) => Some(f.node.name.node.as_str()),
            _ => None,
        })
        .collect();
    let single = (fields.len() == 1 && op.node.selection_set.node.items.len() == 1).then(|| fields[0]);
    match single {
        Some(f) if SHARED_FIELDS.contains(&f) => Shape::Shared,
        Some("assignment") => Shape::Assignment,
        _ => Shape::Subscription,
    }
}
