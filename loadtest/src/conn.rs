//! A light HTTP/1.1 client for the GraphQL hot path: a stack of idle keep-alive connections per
//! target, each a bare `hyper` connection (no pool bookkeeping, proxy logic or redirects), so the
//! generator spends its CPU on the requests rather than on itself. On the same machine as the
//! server, every microsecond the generator saves is one the server gets.
//!
//! A connection that fails is dropped; the next request opens a new one, so a node that restarts
//! (the `crash` scenario) is picked up again without any reset.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::api::ApiError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections to one node, reused last-in first-out.
pub struct ConnPool {
    /// `host:port`, for connecting and for the `Host` header.
    authority: String,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    max_idle: usize,
}

impl ConnPool {
    /// `base` is `http://host:port` (no path); only plain HTTP.
    pub fn new(base: &str, max_idle: usize) -> anyhow::Result<Self> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("{base}: only http:// targets are supported"))?
            .trim_end_matches('/')
            .to_string();
        if authority.is_empty() || authority.contains('/') {
            anyhow::bail!("{base}: expected http://host:port");
        }
        Ok(Self {
            host: HeaderValue::from_str(&authority)?,
            authority,
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle: max_idle.max(1),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ApiError> {
        let transport = |e: &dyn std::fmt::Display| ApiError::Transport(format!("{}: {e}", self.authority));
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|e| transport(&e))?
            .map_err(|e| transport(&e))?;
        tcp.set_nodelay(true).map_err(|e| transport(&e))?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(|e| transport(&e))?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or the sender is dropped.
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().expect("connection pool");
        while let Some(c) = idle.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn checkin(&self, c: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().expect("connection pool");
        if idle.len() < self.max_idle {
            idle.push(c);
        }
    }

    /// POST `body` (JSON) to `/graphql`; the status and the whole answer body.
    pub async fn post_graphql(&self, key: Option<&str>, body: Vec<u8>) -> Result<(StatusCode, Bytes), ApiError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.post_inner(key, body))
            .await
            .map_err(|_| ApiError::Transport(format!("{}: no answer within {REQUEST_TIMEOUT:?}", self.authority)))?
    }

    async fn post_inner(&self, key: Option<&str>, body: Vec<u8>) -> Result<(StatusCode, Bytes), ApiError> {
        let transport = |e: &dyn std::fmt::Display| ApiError::Transport(format!("{}: {e}", self.authority));
        let mut sender = match self.checkout() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/graphql")
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(k) = key {
            req = req.header(AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| transport(&e))?;
        sender.ready().await.map_err(|e| transport(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| transport(&e))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| transport(&e))?.to_bytes();
        self.checkin(sender);
        Ok((status, bytes))
    }
}
