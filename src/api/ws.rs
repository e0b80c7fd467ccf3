//! One GraphQL WebSocket (graphql-transport-ws): async-graphql-axum speaks the protocol; this
//! module puts the node's rules around it.
//! - Every operation passes the same screen as an HTTP request (front gate, enum literals), and
//!   re-checks the connection's API key against the replicated key set: a revoked key runs nothing.
//! - Revoking a key closes the sockets that presented it (close code 4403, with the reason), and
//!   shutting the node down closes every socket (1001). Both are noticed by watching the store's
//!   meta version and the shutdown flag, so a join storm never wakes a held socket.
//! - What the node sends goes through a bounded queue to one writer: a slow reader holds back
//!   only its own socket.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use async_graphql::{Data, ErrorExtensionValues, Executor, Response as GqlResponse, ServerError};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{self, BoxStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use super::AppState;
use super::auth::Principal;
use super::error::ErrorCode;

/// Messages queued for one socket's writer.
const OUTBOX: usize = 64;

/// graphql-transport-ws's "Forbidden".
const CLOSE_REVOKED: u16 = 4403;
/// RFC 6455 "going away".
const CLOSE_SHUTDOWN: u16 = 1001;

/// The executor a socket runs operations on: the node's schema behind the screen and the key check.
#[derive(Clone)]
struct Gated {
    app: AppState,
    principal: Arc<OnceLock<Principal>>,
}

/// One answer holding only `message` with `code` (no location: it is about the whole document).
fn refused(code: ErrorCode, message: &str) -> BoxStream<'static, GqlResponse> {
    let mut err = ServerError::new(message, None);
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code.as_str());
    err.extensions = Some(ext);
    stream::once(async move { GqlResponse::from_errors(vec![err]) }).boxed()
}

/// Whether the key `principal` presented (if any) is no longer in the replicated key set.
fn key_revoked(app: &AppState, principal: &OnceLock<Principal>) -> bool {
    principal
        .get()
        .and_then(|p| p.key_id.as_deref())
        .is_some_and(|id| !app.node.store.view().fleet.api_keys.contains_key(id))
}

impl Executor for Gated {
    async fn execute(&self, request: async_graphql::Request) -> GqlResponse {
        self.execute_stream(request, None)
            .next()
            .await
            .unwrap_or_else(|| GqlResponse::from_errors(Vec::<ServerError>::new()))
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, GqlResponse> {
        let metrics = &self.app.node.metrics;
        if key_revoked(&self.app, &self.principal) {
            metrics.refuse("revoked");
            return refused(ErrorCode::Unauthenticated, "the API key of this connection was revoked");
        }
        let prepared = self.app.parsed.prepare(request, &self.app.screen);
        if let Some(why) = prepared.refused {
            metrics.refuse("gate");
            return refused(ErrorCode::BadRequest, &why);
        }
        let mut request = prepared.request.data(super::schema::types::RequestView::default());
        if prepared.plan.is_some() {
            // Plans answer HTTP only; the executor needs the document.
            self.app.parsed.attach(&mut request);
        }
        Executor::execute_stream(&self.app.schema, request, session_data)
            .map(|mut r| {
                super::error::code_library_errors(&mut r.errors);
                r
            })
            .boxed()
    }
}

/// Why the node closes a socket.
enum Closing {
    Revoked,
    Shutdown,
}

/// Resolves when the key `principal` presented is no longer in the replicated key set.
async fn revoked(app: &AppState, principal: &OnceLock<Principal>) {
    let mut version = app.node.store.meta_changes();
    loop {
        if version.changed().await.is_err() {
            return std::future::pending().await;
        }
        let gone = key_revoked(app, principal);
        if gone {
            return;
        }
    }
}

/// Serve one socket. `slots`: its place under `max_websockets` and under `max_connections`, held
/// until it closes.
pub async fn serve(
    app: AppState,
    socket: WebSocket,
    protocol: GraphQLProtocol,
    client: IpAddr,
    slots: (OwnedSemaphorePermit, Option<super::server::ConnSlot>),
) {
    let _slots = slots;
    let metrics = app.node.metrics.clone();
    metrics.open_websockets.inc();
    let principal = Arc::new(OnceLock::new());
    let (mut sink, incoming) = socket.split();
    let (tx, mut outbox) = tokio::sync::mpsc::channel::<Message>(OUTBOX);
    let outgoing = futures_util::sink::unfold(tx, |tx, msg: Message| async move { tx.send(msg).await.map(|()| tx) });
    let executor = Gated {
        app: app.clone(),
        principal: principal.clone(),
    };
    let node = app.node.clone();
    let seen = principal.clone();
    let graphql = GraphQLWebSocket::new_with_pair(outgoing, incoming, executor, protocol)
        .on_connection_init(move |payload: serde_json::Value| async move {
            let key = payload.get("token").and_then(|t| t.as_str());
            let p = Principal::resolve(&node, key, client)?;
            let _ = seen.set(p.clone());
            let mut data = Data::default();
            data.insert(p);
            Ok(data)
        })
        .keepalive_timeout(std::time::Duration::from_secs(60))
        .serve();
    tokio::pin!(graphql);
    let revocation = revoked(&app, &principal);
    tokio::pin!(revocation);
    let mut shutdown = app.shutdown.clone();
    let mut graphql_done = false;
    let closing = loop {
        tokio::select! {
            () = &mut graphql, if !graphql_done => graphql_done = true,
            msg = outbox.recv() => match msg {
                Some(msg) => if sink.send(msg).await.is_err() { break None },
                // The protocol ended (client closed, or a protocol error) and all it said is sent.
                None => break None,
            },
            () = &mut revocation => break Some(Closing::Revoked),
            _ = async { shutdown.wait_for(|down| *down).await.is_ok() } => break Some(Closing::Shutdown),
        }
    };
    if let Some(why) = closing {
        let (code, reason) = match why {
            Closing::Revoked => {
                metrics.refuse("revoked");
                (CLOSE_REVOKED, "Forbidden: the API key was revoked")
            }
            Closing::Shutdown => (CLOSE_SHUTDOWN, "the node is shutting down"),
        };
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
    metrics.open_websockets.dec();
}
