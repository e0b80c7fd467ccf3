//! The GraphQL WebSocket transport (`graphql-transport-ws`) as a viewer page uses it: connect,
//! `connection_init` with the API key, then run `heartbeat` as a `subscribe` operation every few
//! seconds, answer `ping` with `pong`, and send our own `ping` so the server's 60 s idle timeout
//! never fires. [`hold`] keeps one such connection until told to stop. [`connect_from`] opens
//! one from a given local address (the `subscribers` scenario spreads its sockets over several).
//!
//! Counts what happened into a shared [`HoldTally`]; it does not decide how many to open.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::driver::histogram;
use crate::error::ApiError;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn text(v: Value) -> Message {
    Message::text(v.to_string())
}

fn transport(e: impl std::fmt::Display) -> ApiError {
    ApiError::Transport(e.to_string())
}

/// Open `ws://…/graphql` and complete `connection_init` → `connection_ack`.
pub async fn connect(base_url: &str, api_key: Option<&str>) -> Result<Socket, ApiError> {
    connect_from(base_url, api_key, None).await
}

/// As [`connect`], from the local address `source` when given (any loopback address on Linux):
/// each source address has its own ~28,000 ephemeral ports towards one node, so spreading tens
/// of thousands of sockets over several of them keeps the ports from running out.
pub async fn connect_from(base_url: &str, api_key: Option<&str>, source: Option<IpAddr>) -> Result<Socket, ApiError> {
    let url = format!("{}/graphql", base_url.replacen("http", "ws", 1));
    let mut req = url.as_str().into_client_request().map_err(transport)?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let authority = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest)
        .trim_end_matches('/');
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tcp_connect(authority, source))
        .await
        .map_err(|_| ApiError::Transport(format!("{authority}: no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| ApiError::Transport(format!("{authority} from {source:?}: {e}")))?;
    // Messages here are a few hundred bytes; tungstenite's default 128 KiB read buffer per socket
    // would make 10,000 held viewers cost the load generator over a gigabyte.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, MaybeTlsStream::Plain(stream), Some(config))
        .await
        .map_err(transport)?;
    let payload = api_key.map_or(json!({}), |k| json!({ "token": k }));
    ws.send(text(json!({ "type": "connection_init", "payload": payload })))
        .await
        .map_err(transport)?;
    let ack = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            let v = parse(&msg.map_err(transport)?);
            match v["type"].as_str() {
                Some("connection_ack") => return Ok(()),
                Some("ping") => ws.send(text(json!({ "type": "pong" }))).await.map_err(transport)?,
                Some("close") => break,
                _ => {}
            }
        }
        Err(ApiError::Protocol("socket closed before connection_ack".into()))
    })
    .await
    .map_err(|_| ApiError::Protocol("no connection_ack within 10 s".into()))?;
    ack.map(|()| ws)
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to `authority` (`host:port`), bound to `source` first when given.
async fn tcp_connect(authority: &str, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(authority).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            if ip.is_ipv4() != addr.is_ipv4() {
                continue;
            }
            bind_address_no_port(&socket);
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address of the node matches the source address")))
}

/// `IP_BIND_ADDRESS_NO_PORT`: the port is picked at connect, by the whole 4-tuple, instead of at
/// bind (where one source address could hand out each port once only). Best effort.
#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `one` (an int, as the option wants) through the pointer and length given.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_: &TcpSocket) {}

/// The JSON of a text frame; a close frame reads as `{"type":"close"}`.
fn parse(msg: &Message) -> Value {
    match msg {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap_or(Value::Null),
        Message::Close(_) => json!({ "type": "close" }),
        _ => Value::Null,
    }
}

/// What all held connections did, shared between them.
pub struct HoldTally {
    pub open: AtomicU64,
    pub peak_open: AtomicU64,
    pub heartbeats_ok: AtomicU64,
    pub unexpected_closes: AtomicU64,
    pub heartbeat_errors: Mutex<BTreeMap<String, u64>>,
    pub heartbeat_latency: Mutex<Histogram<u64>>,
}

impl Default for HoldTally {
    fn default() -> Self {
        Self {
            open: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            heartbeats_ok: AtomicU64::new(0),
            unexpected_closes: AtomicU64::new(0),
            heartbeat_errors: Mutex::new(BTreeMap::new()),
            heartbeat_latency: Mutex::new(histogram()),
        }
    }
}

impl HoldTally {
    fn error(&self, code: &str) {
        *self
            .heartbeat_errors
            .lock()
            .expect("tally")
            .entry(code.to_string())
            .or_default() += 1;
    }
}

pub struct HoldPlan {
    pub session_id: String,
    pub heartbeat_every: Duration,
    pub ping_every: Duration,
    /// Delay of the first heartbeat, so thousands of sockets do not beat in lockstep.
    pub first_heartbeat_after: Duration,
}

/// Keep `ws` open, heartbeating, until `stop` turns true; then close it politely.
pub async fn hold(ws: Socket, plan: HoldPlan, tally: &HoldTally, mut stop: watch::Receiver<bool>) {
    let now = tally.open.fetch_add(1, Ordering::Relaxed) + 1;
    tally.peak_open.fetch_max(now, Ordering::Relaxed);
    let (mut tx, mut rx) = ws.split();
    let start = tokio::time::Instant::now();
    let mut beat = tokio::time::interval_at(start + plan.first_heartbeat_after, plan.heartbeat_every);
    let mut ping = tokio::time::interval_at(start + plan.ping_every, plan.ping_every);
    let query = "mutation($s: ID!) { heartbeat(sessionId: $s) { id leaseUntil } }";
    // The one heartbeat in flight: (operation id, sent at, failed).
    let mut pending: Option<(String, Instant, bool)> = None;
    let mut next_id = 0u64;
    let closed_by_us = loop {
        if *stop.borrow() {
            break true;
        }
        tokio::select! {
            _ = stop.changed() => break true,
            _ = beat.tick(), if pending.is_none() => {
                next_id += 1;
                let id = next_id.to_string();
                let msg = json!({ "id": id, "type": "subscribe",
                    "payload": { "query": query, "variables": { "s": plan.session_id } } });
                if tx.send(text(msg)).await.is_err() { break false; }
                pending = Some((id, Instant::now(), false));
            }
            _ = ping.tick() => {
                if tx.send(text(json!({ "type": "ping" }))).await.is_err() { break false; }
            }
            msg = rx.next() => {
                let Some(Ok(msg)) = msg else { break false };
                let v = parse(&msg);
                let same = |p: &Option<(String, Instant, bool)>| {
                    p.as_ref().is_some_and(|(id, _, _)| v["id"].as_str() == Some(id))
                };
                match v["type"].as_str() {
                    Some("ping") if tx.send(text(json!({ "type": "pong" }))).await.is_err() => break false,
                    Some("close") => break false,
                    Some("next") if same(&pending) => {
                        let first_error = v["payload"]["errors"].as_array().and_then(|e| e.first());
                        if let Some(err) = first_error {
                            tally.error(err["extensions"]["code"].as_str().unwrap_or("NO_CODE"));
                            pending.as_mut().expect("pending").2 = true;
                        }
                    }
                    Some("error") if same(&pending) => {
                        tally.error("WS_ERROR");
                        pending = None;
                    }
                    Some("complete") if same(&pending) => {
                        let (_, sent, failed) = pending.take().expect("pending");
                        if !failed {
                            tally.heartbeats_ok.fetch_add(1, Ordering::Relaxed);
                            let us = (sent.elapsed().as_micros() as u64).max(1);
                            tally.heartbeat_latency.lock().expect("tally").saturating_record(us);
                        }
                    }
                    _ => {}
                }
            }
        }
    };
    tally.open.fetch_sub(1, Ordering::Relaxed);
    if closed_by_us {
        let _ = tx.send(Message::Close(None)).await;
    } else {
        tally.unexpected_closes.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_comes_from_the_source_address_asked_for() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        for source in ["127.0.0.2", "127.0.0.3"] {
            let source: IpAddr = source.parse().unwrap();
            let (client, accepted) = tokio::join!(tcp_connect(&authority, Some(source)), listener.accept());
            assert_eq!(client.unwrap().local_addr().unwrap().ip(), source);
            assert_eq!(accepted.unwrap().1.ip(), source, "the node sees the source address");
        }
        let (client, accepted) = tokio::join!(tcp_connect(&authority, None), listener.accept());
        assert_eq!(client.unwrap().peer_addr().unwrap(), listener.local_addr().unwrap());
        assert!(accepted.is_ok());
        // An IPv6 source cannot reach an IPv4 node.
        let v6: IpAddr = "::1".parse().unwrap();
        assert!(tcp_connect(&authority, Some(v6)).await.is_err());
    }
}
