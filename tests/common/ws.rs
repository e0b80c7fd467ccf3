//! A graphql-transport-ws client for tests, speaking to the real binary as a page would.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use super::TestNode;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub struct Ws {
    pub socket: Socket,
    /// Messages of other operations, read while waiting for one: kept for their own turn.
    held: std::collections::VecDeque<Value>,
}

/// How long a test waits for one message before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

impl Ws {
    /// Open `/graphql` without `connection_init`.
    pub async fn open(n: &TestNode) -> Ws {
        let url = format!("{}/graphql", n.url.replacen("http", "ws", 1));
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        Ws {
            socket,
            held: Default::default(),
        }
    }

    /// Open `/graphql` on a socket whose receive buffer is `bytes` (the kernel does not grow
    /// it), initialised anonymously: a client that stops reading backs up into the node fast.
    pub async fn connect_small_buffer(n: &TestNode, bytes: u32) -> Ws {
        let addr: std::net::SocketAddr = n.url.trim_start_matches("http://").parse().unwrap();
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        tcp.set_recv_buffer_size(bytes).unwrap();
        let stream = tcp.connect(addr).await.unwrap();
        let url = format!("{}/graphql", n.url.replacen("http", "ws", 1));
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (socket, _) = tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        let mut ws = Ws {
            socket,
            held: Default::default(),
        };
        ws.send(json!({"type": "connection_init", "payload": {}})).await;
        assert_eq!(ws.next().await["type"], "connection_ack");
        ws
    }

    /// Open and initialise with `key`, expecting `connection_ack`.
    pub async fn connect(n: &TestNode, key: Option<&str>) -> Ws {
        let mut ws = Ws::open(n).await;
        let payload = key.map_or(json!({}), |k| json!({"token": k}));
        ws.send(json!({"type": "connection_init", "payload": payload})).await;
        let ack = ws.next().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws
    }

    pub async fn send(&mut self, v: Value) {
        self.socket.send(Message::text(v.to_string())).await.unwrap();
    }

    /// Start operation `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}))
            .await;
    }

    /// The next text message as JSON (server pings answered); panics on close.
    pub async fn next(&mut self) -> Value {
        match self.next_or_close().await {
            Ok(v) => v,
            Err(f) => panic!("closed: {f:?}"),
        }
    }

    /// The next text message, or the close frame (None: closed without one).
    pub async fn next_or_close(&mut self) -> Result<Value, Option<CloseFrame>> {
        // One deadline for the message, however many server pings come first.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("a message within 20 s");
            let Some(Ok(msg)) = msg else { return Err(None) };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "ping" {
                        self.send(json!({"type": "pong"})).await;
                        continue;
                    }
                    return Ok(v);
                }
                Message::Close(f) => return Err(f),
                _ => continue,
            }
        }
    }

    /// The next message of operation `id` (others read meanwhile are kept for later).
    pub async fn next_of(&mut self, id: &str) -> Value {
        if let Some(i) = self.held.iter().position(|m| m["id"] == id) {
            return self.held.remove(i).expect("found above");
        }
        loop {
            let m = self.next().await;
            if m["id"] == id {
                return m;
            }
            self.held.push_back(m);
        }
    }

    /// The next `next` payload's `data.<field>` of operation `id`; panics on an error or
    /// `complete`.
    pub async fn data(&mut self, id: &str, field: &str) -> Value {
        let m = self.next_of(id).await;
        assert_eq!(m["type"], "next", "{m}");
        assert!(m["payload"]["errors"].is_null(), "{m}");
        m["payload"]["data"][field].clone()
    }

    /// Messages of operation `id` until one whose `data.<field>` satisfies `f`.
    pub async fn data_until(&mut self, id: &str, field: &str, f: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Vec::new();
        let wait = tokio::time::timeout(WAIT, async {
            loop {
                let d = self.data(id, field).await;
                if f(&d) {
                    return d;
                }
                seen.push(d);
            }
        });
        match wait.await {
            Ok(d) => d,
            Err(_) => panic!("no message of {id} as wanted within 20 s; got {seen:?}"),
        }
    }

    /// Run one query or mutation as operation `id`: its answer (`next`), after which `complete`
    /// must follow.
    pub async fn run(&mut self, id: &str, query: &str) -> Value {
        self.subscribe(id, query, json!({})).await;
        let answer = self.next_of(id).await;
        if answer["type"] == "next" {
            let done = self.next_of(id).await;
            assert_eq!(done["type"], "complete", "{done}");
        }
        answer
    }

    /// The error code operation `id` ends with (`next` carrying errors, then `complete`).
    pub async fn error_code(&mut self, id: &str) -> String {
        let m = self.next_of(id).await;
        let code = m["payload"]["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error: {m}"))
            .to_string();
        let done = self.next_of(id).await;
        assert_eq!(done["type"], "complete", "{done}");
        code
    }

    /// Wait for the close frame: (code, reason).
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            match self.next_or_close().await {
                Ok(_) => continue,
                Err(f) => return f.map(|f| (u16::from(f.code), f.reason.to_string())),
            }
        }
    }
}
