//! The built-in IVS Real-Time emulator: a wire-compatible HTTP server that the real
//! aws-sdk-ivsrealtime client talks to via `endpoint_url`. This file owns the configuration and
//! the lifecycle (start, shutdown, standalone run); `server` speaks HTTP, `ops` implements the
//! operations on the pure model in `state`, `quota` enforces TPS, `persist` keeps the state file.
//!
//! Participants arrive two ways: a browser's IVS SDK opens the stage events socket and publishes
//! or subscribes over WHIP through a small SFU (`media`, so real video plays on 127.0.0.1), and
//! tests and load tools `POST /_emulator/join` with a token (no media).

mod error;
pub mod media;
mod ops;
mod persist;
mod quota;
mod server;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use error::ApiError;

/// Injected misbehaviour, changeable at runtime with [`EmulatorHandle::set_faults`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Added to every IVS operation before it is answered.
    pub latency_ms: u64,
    /// Share (0..1) of IVS operations answered 500 InternalServerException.
    pub error_rate: f64,
    /// Share (0..1) of IVS operations answered 429 ThrottlingException.
    pub throttle_rate: f64,
    /// Added to CreateStage on top of `latency_ms` (AWS takes a few hundred ms to create a stage).
    pub create_stage_ms: u64,
    /// How long after StartParticipantReplication the replica's media shows in the destination
    /// stage (its replica participant turns `published`); 0 = at once.
    pub replication_active_ms: u64,
}

#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// `127.0.0.1:0` picks an ephemeral port.
    pub listen: SocketAddr,
    pub region: String,
    pub account_id: String,
    /// Enforce the per-operation TPS quotas (the table in `crate::ivs::ratelimit`, from
    /// `ivs-realtime.md` §1.1 in the shared design folder).
    pub enforce_tps: bool,
    /// Operation name → calls/s, replacing the IVS default; ≤ 0 means unlimited.
    pub tps_overrides: BTreeMap<String, f64>,
    pub publishers_per_stage: u32,
    pub subscribers_per_stage: u32,
    pub max_stages: u32,
    pub max_public_keys: u32,
    pub max_replications_per_participant: u32,
    pub faults: Faults,
    /// Load at start and save after every mutating call (stages, keys, issued tokens).
    pub state_file: Option<PathBuf>,
    /// Base of the stage endpoints; default `http://<bound address>`.
    pub public_base_url: Option<String>,
    /// The events socket, WHIP and the SFU.
    pub media: media::MediaSettings,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            enforce_tps: true,
            tps_overrides: BTreeMap::new(),
            publishers_per_stage: 12,
            subscribers_per_stage: 10_000,
            max_stages: 1_000,
            max_public_keys: 3,
            max_replications_per_participant: 5,
            faults: Faults::default(),
            state_file: None,
            public_base_url: None,
            media: media::MediaSettings::default(),
        }
    }
}

/// A running emulator. Dropping it stops the server (without waiting); prefer [`Self::shutdown`].
pub struct EmulatorHandle {
    pub addr: SocketAddr,
    shared: Arc<server::Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults lock") = faults;
    }

    /// The SFU's UDP address, when the media plane is on.
    pub fn media_addr(&self) -> Option<SocketAddr> {
        self.shared.media.sfu.as_ref().map(|s| s.local_addr())
    }

    /// Stop accepting, let in-flight calls finish (bounded), and wait for the server task.
    pub async fn shutdown(mut self) {
        self.shared.media.close_all();
        if let Some(sfu) = &self.shared.media.sfu {
            sfu.shutdown().await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.shared.media.close_all();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Bind, load the state file if any, and serve in a background task.
pub async fn start(cfg: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let state = match &cfg.state_file {
        Some(path) => persist::load(path)?,
        None => state::State::default(),
    };
    let settings = ops::Settings {
        region: cfg.region,
        account_id: cfg.account_id,
        public_base_url: cfg
            .public_base_url
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .into(),
        publishers_per_stage: cfg.publishers_per_stage,
        subscribers_per_stage: cfg.subscribers_per_stage,
        max_stages: cfg.max_stages,
        max_public_keys: cfg.max_public_keys,
        max_replications_per_participant: cfg.max_replications_per_participant,
    };
    let (sfu, sfu_events) = match cfg.media.sfu.clone() {
        Some(media) => {
            let bind = media.bind;
            let (sfu, events) = media::Sfu::start(media)
                .await
                .with_context(|| format!("starting the media plane on UDP {bind}"))?;
            (Some(sfu), Some(events))
        }
        None => (None, None),
    };
    let shared = Arc::new(server::Shared {
        state: Mutex::new(state),
        settings,
        quotas: quota::Quotas::new(cfg.enforce_tps, cfg.tps_overrides),
        faults: Mutex::new(cfg.faults),
        state_file: cfg.state_file,
        media: media::Media::new(sfu, cfg.media.max_sockets),
    });
    if let Some(events) = sfu_events {
        tokio::spawn(media::follow_sfu(shared.clone(), events));
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let app = server::router(shared.clone());
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("IVS emulator server failed: {e}");
        }
    });
    Ok(EmulatorHandle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// `stagefleet ivs-emulator`: serve until Ctrl-C or SIGTERM.
pub async fn run_standalone(cfg: EmulatorConfig) -> anyhow::Result<()> {
    let handle = start(cfg).await?;
    match handle.media_addr() {
        Some(udp) => {
            tracing::info!(url = %handle.endpoint_url(), media = %udp, "IVS Real-Time emulator listening (events socket, WHIP, SFU on UDP); point endpoint_url here")
        }
        None => {
            tracing::info!(url = %handle.endpoint_url(), "IVS Real-Time emulator listening (no media); point endpoint_url here")
        }
    }
    shutdown_signal().await;
    tracing::info!("IVS Real-Time emulator stopping");
    handle.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
