//! Raw WebSockets for `front-door`: the upgrade done by hand over a TCP socket, so a client can
//! stop where no WebSocket library lets it — inside a frame, right after its header. Opens many
//! at bounded concurrency, tells which ones the node has closed, and closes them with a reset (no
//! TIME_WAIT: the next phase needs the ephemeral ports back).
//!
//! Measures nothing of the node; the scenario samples its RSS around these calls.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::docs::Rng;
use crate::driver::progress_bar;

/// RFC 6455 §1.3: appended to the client's key before hashing it into `Sec-WebSocket-Accept`.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Connect, upgrade and stall within this, or the socket counts as failed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The 101's head is ~200 bytes.
const MAX_HEAD: usize = 8 * 1024;

/// Where each socket stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// Right after the 101: nothing sent.
    Idle,
    /// After a text frame's header announcing `announce` bytes and the first `sent` of them.
    MidFrame { announce: u64, sent: usize },
}

pub fn upgrade_request(authority: &str, key: &str) -> String {
    format!(
        "GET /graphql HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
pub fn accept_key(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{WS_GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The header of a final, masked text frame announcing `len` payload bytes (RFC 6455 §5.2):
/// the 7-bit length up to 125, the 16-bit form up to 65535, the 64-bit form past it.
pub fn frame_head(len: u64, mask: [u8; 4]) -> Vec<u8> {
    let mut head = vec![0x81];
    match len {
        0..=125 => head.push(0x80 | len as u8),
        126..=0xFFFF => {
            head.push(0x80 | 126);
            head.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            head.push(0x80 | 127);
            head.extend_from_slice(&len.to_be_bytes());
        }
    }
    head.extend_from_slice(&mask);
    head
}

/// Client-to-server payload bytes are XORed with the mask, byte i with mask[i % 4].
pub fn masked(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect()
}

/// What a stalled socket writes after the 101: a frame header and the first `sent` bytes of a
/// `connection_init` message padded to `announce` bytes.
pub fn stalled_frame(announce: u64, sent: usize, mask: [u8; 4]) -> Vec<u8> {
    let start = br#"{"type":"connection_init","payload":{"pad":""#;
    let sent = sent.min(usize::try_from(announce).unwrap_or(usize::MAX));
    let payload: Vec<u8> = start
        .iter()
        .copied()
        .chain(std::iter::repeat(b'x'))
        .take(sent)
        .collect();
    let mut frame = frame_head(announce, mask);
    frame.extend_from_slice(&masked(&payload, mask));
    frame
}

/// Connect, upgrade to a graphql-transport-ws WebSocket, write what `stall` says, and stop.
/// The error is a short label to count failures by.
pub async fn open_one(authority: &str, stall: Stall, seed: u64) -> Result<TcpStream, String> {
    tokio::time::timeout(OPEN_TIMEOUT, upgrade(authority, stall, seed))
        .await
        .unwrap_or_else(|_| Err(format!("no 101 within {OPEN_TIMEOUT:?}")))
}

async fn upgrade(authority: &str, stall: Stall, seed: u64) -> Result<TcpStream, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {:?}", e.kind());
    let mut stream = TcpStream::connect(authority).await.map_err(|e| io("connect", e))?;
    stream.set_nodelay(true).map_err(|e| io("nodelay", e))?;
    let mut rng = Rng::new(seed);
    let nonce: Vec<u8> = (0..16).map(|_| rng.next_u64() as u8).collect();
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    stream
        .write_all(upgrade_request(authority, &key).as_bytes())
        .await
        .map_err(|e| io("write", e))?;
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut head = httparse::Response::new(&mut headers);
        match head.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let status = head.code.unwrap_or(0);
                if status != 101 {
                    return Err(format!("HTTP {status}"));
                }
                let header = |name: &str| {
                    head.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                if header("sec-websocket-accept") != Some(accept_key(&key).as_bytes()) {
                    return Err("wrong Sec-WebSocket-Accept".into());
                }
                if header("sec-websocket-protocol") != Some(b"graphql-transport-ws".as_slice()) {
                    return Err("no graphql-transport-ws subprotocol".into());
                }
                break;
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("answer head too large".into()),
            Err(_) => return Err("not an HTTP answer".into()),
        }
        buf.reserve(512);
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err("closed before the 101".into()),
            Ok(_) => {}
            Err(e) => return Err(io("read", e)),
        }
    }
    if let Stall::MidFrame { announce, sent } = stall {
        let mask = (rng.next_u64() as u32).to_be_bytes();
        stream
            .write_all(&stalled_frame(announce, sent, mask))
            .await
            .map_err(|e| io("write frame", e))?;
    }
    Ok(stream)
}

/// Open `count` sockets, `concurrency` at a time; the open ones (non-blocking, closing with a
/// reset when dropped), failures by label, and how long it took.
pub async fn open_all(
    authority: &str,
    stall: Stall,
    count: usize,
    concurrency: usize,
    label: &str,
) -> (Vec<std::net::TcpStream>, BTreeMap<String, u64>, Duration) {
    let bar = progress_bar(count as u64, label);
    let started = Instant::now();
    let mut open = Vec::with_capacity(count);
    let mut errors = BTreeMap::new();
    let mut attempts = futures_util::stream::iter(0..count)
        .map(|i| open_one(authority, stall, i as u64))
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = attempts.next().await {
        bar.inc(1);
        // Out of tokio's reactor: a plain non-blocking socket costs this process nothing more.
        let result = result.and_then(|s| {
            s.set_zero_linger().map_err(|e| format!("linger: {:?}", e.kind()))?;
            s.into_std().map_err(|e| format!("into_std: {:?}", e.kind()))
        });
        match result {
            Ok(s) => open.push(s),
            Err(e) => *errors.entry(e).or_insert(0) += 1,
        }
    }
    bar.finish_and_clear();
    (open, errors, started.elapsed())
}

/// Whether the node still holds `s` open: end-of-file or a reset means it closed it. Anything
/// the node sent is read and dropped.
fn still_open(mut s: &std::net::TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Drop the sockets the node has closed; how many there were.
pub fn sweep(sockets: &mut Vec<std::net::TcpStream>) -> usize {
    let before = sockets.len();
    sockets.retain(still_open);
    before - sockets.len()
}

/// One socket whose frame header announces `announce` bytes (past the node's limit): how long
/// until the node closed it, or `None` if it still had not after `wait`.
pub async fn probe_oversized(authority: &str, announce: u64, wait: Duration) -> Result<Option<Duration>, String> {
    let mut s = open_one(authority, Stall::MidFrame { announce, sent: 8 }, u64::MAX).await?;
    let sent = Instant::now();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await
            && n > 0
        {}
    })
    .await;
    Ok(closed.is_ok().then(|| sent.elapsed()))
}

/// Raise this process's open-files soft limit to its hard limit: each held socket is a file.
/// Returns the soft limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_stalled_frame_announces_60000_bytes_in_the_16_bit_form_and_sends_a_few() {
        let mask = [0x11, 0x22, 0x33, 0x44];
        assert_eq!(
            frame_head(60_000, mask),
            [0x81, 0xFE, 0xEA, 0x60, 0x11, 0x22, 0x33, 0x44]
        );
        let frame = stalled_frame(60_000, 8, mask);
        assert_eq!(frame.len(), 8 + 8, "header, then 8 payload bytes");
        assert_eq!(
            masked(&frame[8..], mask),
            br#"{"type":"#,
            "unmasks to the message's start"
        );
    }

    #[test]
    fn each_length_takes_its_own_form() {
        let mask = [0; 4];
        assert_eq!(frame_head(125, mask)[..2], [0x81, 0x80 | 125]);
        assert_eq!(frame_head(126, mask)[..4], [0x81, 0x80 | 126, 0, 126]);
        assert_eq!(frame_head(65_535, mask)[..4], [0x81, 0xFE, 0xFF, 0xFF]);
        assert_eq!(frame_head(1 << 20, mask)[..10], [0x81, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(frame_head(1 << 20, mask).len(), 14);
        assert_eq!(
            stalled_frame(4, 100, mask).len(),
            2 + 4 + 4,
            "never more than announced"
        );
    }

    #[test]
    fn the_upgrade_asks_for_graphql_transport_ws() {
        let r = upgrade_request("127.0.0.1:1", "k==");
        assert!(r.starts_with("GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(r.contains("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"));
        assert!(r.contains("\r\nSec-WebSocket-Key: k==\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(r.ends_with("Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"));
    }

    /// A node stand-in: answers one upgrade correctly, then closes or keeps the socket.
    #[tokio::test]
    async fn sockets_the_node_closes_are_told_from_those_it_holds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut kept = Vec::new();
            for n in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 2048];
                let len = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..len]).to_string();
                let key = req
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .unwrap()
                    .trim()
                    .to_string();
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
                    accept_key(&key)
                );
                s.write_all(answer.as_bytes()).await.unwrap();
                if n == 0 {
                    kept.push(s);
                }
            }
            kept
        });
        let stall = Stall::MidFrame {
            announce: 60_000,
            sent: 8,
        };
        let (mut open, errors, _) = open_all(&authority, stall, 2, 1, "test").await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(open.len(), 2);
        let _kept = server.await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut closed = 0;
        while closed == 0 && Instant::now() < deadline {
            closed += sweep(&mut open);
            tokio::time::sleep(Duration::from_millis(10)).await; // poll, bounded by the deadline
        }
        assert_eq!((closed, open.len()), (1, 1), "one closed by the stand-in, one held");
    }
}
