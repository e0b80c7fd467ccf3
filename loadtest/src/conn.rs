//! A small HTTP/1.1 client for the GraphQL hot path, in the manner of wrk: a stack of idle
//! keep-alive connections per target, and each request written and its answer read by the task
//! that sends it, with no connection task, channel or pool bookkeeping in between. On the same
//! machine as the node, every microsecond the generator saves is one the node gets (BENCHMARKS.md
//! measures the generator's CPU against the node's).
//!
//! It speaks just what a GraphQL POST needs: one request at a time per connection, answers with
//! `Content-Length`, chunked, or delimited by close, and `Connection: close`. A connection that
//! fails is dropped; the next request opens a new one, so a node that restarts (the `crash`
//! scenario) is picked up again without any reset.

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ApiError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Status line and headers larger than this are refused (ours are ~150 bytes).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Answers larger than this are refused (a join's is ~1.5 KB; a 40-session lookup ~10 KB).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One keep-alive connection and the bytes read from it but not yet used.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Idle connections to one node, reused last-in first-out.
pub struct ConnPool {
    /// `host:port`, for connecting and for the `Host` header.
    authority: String,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

/// How the body of an answer ends.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

impl ConnPool {
    /// `base` is `http://host:port` (no path); only plain HTTP.
    pub fn new(base: &str, max_idle: usize) -> anyhow::Result<Self> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("{base}: only http:// targets are supported"))?
            .trim_end_matches('/')
            .to_string();
        if authority.is_empty() || authority.contains(['/', ' ', '\r', '\n']) {
            anyhow::bail!("{base}: expected http://host:port");
        }
        Ok(Self {
            authority,
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle: max_idle.max(1),
        })
    }

    fn transport(&self, e: impl std::fmt::Display) -> ApiError {
        ApiError::Transport(format!("{}: {e}", self.authority))
    }

    async fn connect(&self) -> Result<Conn, ApiError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| self.transport(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| self.transport(e))?;
        stream.set_nodelay(true).map_err(|e| self.transport(e))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    fn checkout(&self) -> Option<Conn> {
        self.idle.lock().expect("connection pool").pop()
    }

    fn checkin(&self, c: Conn) {
        let mut idle = self.idle.lock().expect("connection pool");
        if idle.len() < self.max_idle {
            idle.push(c);
        }
    }

    /// POST `body` (JSON) to `/graphql`; the status and the whole answer body.
    pub async fn post_graphql(&self, key: Option<&str>, body: Vec<u8>) -> Result<(u16, Vec<u8>), ApiError> {
        if key.is_some_and(|k| k.contains(['\r', '\n'])) {
            return Err(ApiError::Protocol("the API key holds a line break".into()));
        }
        let mut request = Vec::with_capacity(body.len() + 256);
        request.extend_from_slice(b"POST /graphql HTTP/1.1\r\nHost: ");
        request.extend_from_slice(self.authority.as_bytes());
        request.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
        request.extend_from_slice(body.len().to_string().as_bytes());
        if let Some(k) = key {
            request.extend_from_slice(b"\r\nAuthorization: Bearer ");
            request.extend_from_slice(k.as_bytes());
        }
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(&body);
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(&request))
            .await
            .map_err(|_| self.transport(format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }

    async fn exchange(&self, request: &[u8]) -> Result<(u16, Vec<u8>), ApiError> {
        // An idle connection the node has closed in the meantime fails on first use, before any
        // answer: then the request goes once more on a new connection (as hyper's pool does).
        if let Some(mut conn) = self.checkout() {
            match self.round_trip(&mut conn, request).await {
                Ok(answer) => return Ok(self.finish(conn, answer)),
                Err(Failure::Stale(_)) => {}
                Err(Failure::Broken(m)) => return Err(self.transport(m)),
            }
        }
        let mut conn = self.connect().await?;
        match self.round_trip(&mut conn, request).await {
            Ok(answer) => Ok(self.finish(conn, answer)),
            Err(Failure::Stale(m) | Failure::Broken(m)) => Err(self.transport(m)),
        }
    }

    fn finish(&self, conn: Conn, (status, body, reusable): (u16, Vec<u8>, bool)) -> (u16, Vec<u8>) {
        if reusable {
            self.checkin(conn);
        }
        (status, body)
    }

    /// Write `request`, read one answer: (status, body, whether the connection can be reused).
    async fn round_trip(&self, conn: &mut Conn, request: &[u8]) -> Result<(u16, Vec<u8>, bool), Failure> {
        conn.buf.clear();
        if let Err(e) = conn.stream.write_all(request).await {
            return Err(Failure::Stale(e.to_string()));
        }
        read_answer(conn).await
    }
}

enum Failure {
    /// Closed or reset before any answer came back.
    Stale(String),
    /// An answer began but was cut off or malformed.
    Broken(String),
}

/// Read more bytes into `conn.buf`; `Ok(0)` means the peer closed.
async fn fill(conn: &mut Conn) -> std::io::Result<usize> {
    conn.buf.reserve(8192);
    conn.stream.read_buf(&mut conn.buf).await
}

async fn read_answer(conn: &mut Conn) -> Result<(u16, Vec<u8>, bool), Failure> {
    let other = Failure::Broken;
    // Status line and headers.
    let (head_len, status, framing, keep_alive) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&conn.buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let mut framing = Framing::Close;
                let mut keep_alive = resp.version == Some(1);
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let len = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .ok_or_else(|| other("bad Content-Length".into()))?;
                        framing = Framing::Length(len);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                        && h.value.eq_ignore_ascii_case(b"chunked")
                    {
                        framing = Framing::Chunked;
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        keep_alive = !h.value.eq_ignore_ascii_case(b"close");
                    }
                }
                break (n, status, framing, keep_alive);
            }
            Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD_BYTES => {}
            Ok(httparse::Status::Partial) => return Err(other("answer head too large".into())),
            Err(e) => return Err(other(format!("not an HTTP answer: {e}"))),
        }
        match fill(conn).await {
            Ok(0) | Err(_) if conn.buf.is_empty() => {
                return Err(Failure::Stale("connection closed before an answer".into()));
            }
            Ok(0) => return Err(other("closed inside the answer head".into())),
            Err(e) => return Err(other(e.to_string())),
            Ok(_) => {}
        }
    };
    let body = match framing {
        Framing::Length(len) => {
            if len > MAX_BODY_BYTES {
                return Err(other(format!("answer of {len} bytes is too large")));
            }
            while conn.buf.len() < head_len + len {
                match fill(conn).await {
                    Ok(0) => return Err(other("closed inside the answer body".into())),
                    Ok(_) => {}
                    Err(e) => return Err(other(e.to_string())),
                }
            }
            conn.buf[head_len..head_len + len].to_vec()
        }
        Framing::Chunked => read_chunked(conn, head_len).await?,
        Framing::Close => {
            loop {
                match fill(conn).await {
                    Ok(0) => break,
                    Ok(_) if conn.buf.len() - head_len > MAX_BODY_BYTES => {
                        return Err(other("answer too large".into()));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(other(e.to_string())),
                }
            }
            return Ok((status, conn.buf[head_len..].to_vec(), false));
        }
    };
    Ok((status, body, keep_alive))
}

/// Decode a chunked body that starts at `pos` in `conn.buf`.
async fn read_chunked(conn: &mut Conn, mut pos: usize) -> Result<Vec<u8>, Failure> {
    let other = |m: &str| Failure::Broken(m.to_string());
    let mut body = Vec::new();
    loop {
        let (size_len, size) = loop {
            match httparse::parse_chunk_size(&conn.buf[pos..]) {
                Ok(httparse::Status::Complete((n, size))) => break (n, size as usize),
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(other("bad chunk size")),
            }
            if matches!(fill(conn).await, Ok(0) | Err(_)) {
                return Err(other("closed inside a chunk"));
            }
        };
        pos += size_len;
        if body.len() + size > MAX_BODY_BYTES {
            return Err(other("answer too large"));
        }
        // The chunk, then its CRLF (after the last, empty chunk: no trailers expected, just CRLF).
        while conn.buf.len() < pos + size + 2 {
            if matches!(fill(conn).await, Ok(0) | Err(_)) {
                return Err(other("closed inside a chunk"));
            }
        }
        body.extend_from_slice(&conn.buf[pos..pos + size]);
        pos += size + 2;
        if size == 0 {
            return Ok(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-connection server that answers each request with the next canned reply.
    async fn serve(replies: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut replies = replies.into_iter();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                loop {
                    // Each test request fits in one read.
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let Some(reply) = replies.next() else { return };
                    if reply.is_empty() {
                        break; // hang up without answering
                    }
                    s.write_all(reply).await.unwrap();
                    if reply.windows(17).any(|w| w.eq_ignore_ascii_case(b"connection: close")) {
                        break;
                    }
                }
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_length_chunked_and_close_delimited_answers_and_reuses_the_connection() {
        let url = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"data\":{}}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"dat\r\n6\r\na\":{}}\r\n0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        ])
        .await;
        let pool = ConnPool::new(&url, 4).unwrap();
        assert_eq!(
            pool.post_graphql(None, b"{}".to_vec()).await.unwrap(),
            (200, b"{\"data\":{}}".to_vec())
        );
        assert_eq!(pool.idle.lock().unwrap().len(), 1, "kept alive");
        let (status, body) = pool.post_graphql(Some("k"), b"{}".to_vec()).await.unwrap();
        assert_eq!((status, body), (200, b"{\"data\":{}}".to_vec()));
        assert_eq!(
            pool.post_graphql(None, b"{}".to_vec()).await.unwrap(),
            (400, b"{}".to_vec())
        );
        assert!(pool.idle.lock().unwrap().is_empty(), "Connection: close is not reused");
    }

    #[tokio::test]
    async fn a_kept_connection_the_node_hung_up_on_is_replaced_once() {
        let url = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
            b"",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nshort",
        ])
        .await;
        let pool = ConnPool::new(&url, 4).unwrap();
        assert_eq!(pool.post_graphql(None, vec![]).await.unwrap().1, b"a");
        assert_eq!(
            pool.post_graphql(None, vec![]).await.unwrap().1,
            b"b",
            "answered on a new connection"
        );
        assert_eq!(pool.post_graphql(None, vec![]).await.unwrap().1, b"short");
    }

    #[tokio::test]
    async fn a_cut_off_answer_is_a_transport_error_and_the_connection_is_dropped() {
        let url = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\ncut",
        ])
        .await;
        let pool = ConnPool::new(&url, 4).unwrap();
        let err = pool.post_graphql(None, vec![]).await.unwrap_err();
        assert!(
            matches!(&err, ApiError::Transport(m) if m.contains("closed inside the answer body")),
            "{err:?}"
        );
        assert!(pool.idle.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transport_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = ConnPool::new(&url, 1)
            .unwrap()
            .post_graphql(None, vec![])
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::Transport(_)), "{err:?}");
        assert!(ConnPool::new("https://x:1", 1).is_err());
    }
}
