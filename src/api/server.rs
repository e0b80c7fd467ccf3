//! The HTTP server's front door: its own accept loop over hyper, so that no client can hold the
//! node's resources for free.
//! - A listen backlog sized for connection storms (`listen_backlog`).
//! - A cap on open connections (`max_connections`, WebSockets included: an upgraded connection
//!   keeps its place): past it, a connection gets a 503 with a code and is closed at once, so the
//!   node keeps file descriptors for `/readyz` and real clients.
//! - `header_read_timeout_secs`: a request's headers (the first request's, and every next one's
//!   on a kept-alive connection) must arrive within it, which also closes idle connections.
//!   Bodies have their own timeout in `graphql::read_body`.
//! - Graceful shutdown with a bound: on the signal the listener closes, connections finish the
//!   request in hand (keep-alive off), WebSockets are told to close, and after
//!   `shutdown_drain_secs` whatever is left is dropped. The function always returns.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::metrics::Metrics;

pub struct ServerOptions {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_drain: Duration,
    /// The WebSockets' permits (`AppState::ws_slots`) and how many there are: an upgraded
    /// connection leaves hyper, so the drain waits for these as well.
    pub websockets: (Arc<Semaphore>, usize),
}

/// Bind `addr` with `backlog` pending connections (the kernel caps it at net.core.somaxconn).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Raise the soft open-files limit to the hard one and return it (None if it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        Some(lim.rlim_cur as u64)
    }
}

/// Descriptors kept for everything but client connections (sled, the emulator, IVS calls, logs).
pub const RESERVED_FILES: u64 = 512;

/// `max_connections` and `max_websockets` lowered to what the open-files limit can hold, so a
/// client past the cap gets a clean 503 instead of the node failing at accept (where nothing,
/// not even `/readyz`, is answered).
pub fn fit_caps(max_connections: usize, max_websockets: usize, open_files: Option<u64>) -> (usize, usize) {
    let room = open_files.map_or(usize::MAX, |l| l.saturating_sub(RESERVED_FILES).max(16) as usize);
    let conns = max_connections.min(room);
    if conns < max_connections {
        tracing::warn!(
            open_files_limit = open_files,
            max_connections,
            using = conns,
            "max_connections does not fit under the open-files limit; using less (raise the limit: ulimit -n, LimitNOFILE=)"
        );
    }
    (conns, max_websockets.min(conns))
}

/// The connection's place under `max_connections`, held by the request so an upgraded WebSocket
/// keeps it for as long as it is open.
#[derive(Clone)]
pub struct ConnSlot(pub Arc<tokio::sync::OwnedSemaphorePermit>);

const REFUSAL: &str = "{\"data\":null,\"errors\":[{\"message\":\"this node holds its maximum of connections \
                       (max_connections); retry later or another node\",\"extensions\":{\"code\":\"UNAVAILABLE\"}}]}";

/// Tell a connection over the cap why it is closed, without reading what it sent.
async fn refuse(mut stream: TcpStream) {
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\n\r\n",
        REFUSAL.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(REFUSAL.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Serve `router` on `listener` until `shutdown` resolves, then drain (see the module header).
/// `closing` is set to true when the drain starts, for WebSockets to close themselves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    metrics: Arc<Metrics>,
    opts: ServerOptions,
    shutdown: impl std::future::Future<Output = ()>,
    closing: watch::Sender<bool>,
) {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    // Refusals are cheap but not free: past this many in flight, excess connections are just dropped.
    let refusals = Arc::new(Semaphore::new(256));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(64 * 1024);
    let http1 = Arc::new(http1);
    tokio::pin!(shutdown);
    let mut accept_errors = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: the backlog keeps the connection; back off a little
                    // instead of spinning on the error.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = accept_errors, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refuse("connection");
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let slot = ConnSlot(Arc::new(slot));
        let held = slot.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(held.clone());
            let mut router = router.clone();
            async move {
                Ok::<_, Infallible>(
                    tower_service::Service::call(&mut router, req)
                        .await
                        .unwrap_or_else(|e| match e {}),
                )
            }
        });
        let http1 = http1.clone();
        let mut closing = closing.subscribe();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.open_connections.inc();
            let conn = http1.serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { closing.wait_for(|c| *c).await.is_ok() } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            metrics.open_connections.dec();
            drop(slot);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    tracing::info!(drain_secs = opts.shutdown_drain.as_secs(), "draining connections");
    let permits = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let (ws, max_ws) = &opts.websockets;
    let drained = async {
        let _http = slots.acquire_many(permits(opts.max_connections)).await;
        let _ws = ws.acquire_many(permits(*max_ws)).await;
    };
    match tokio::time::timeout(opts.shutdown_drain, drained).await {
        Ok(()) => tracing::info!("every connection closed"),
        Err(_) => tracing::warn!(
            http = opts.max_connections - slots.available_permits(),
            websockets = max_ws - ws.available_permits(),
            "drain time is up; closing the remaining connections"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_are_lowered_to_fit_the_open_files_limit() {
        // this machine's default: a hard limit of 20,000 descriptors
        assert_eq!(fit_caps(25_000, 20_000, Some(20_000)), (19_488, 19_488));
        assert_eq!(fit_caps(1_000, 500, Some(20_000)), (1_000, 500));
        assert_eq!(
            fit_caps(1_000, 5_000, None),
            (1_000, 1_000),
            "never more WebSockets than connections"
        );
        assert_eq!(
            fit_caps(1_000, 500, Some(100)),
            (16, 16),
            "a tiny limit still serves a few"
        );
    }
}
