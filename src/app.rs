//! The composition root: one stagefleet process wired together. Config → data dir → IVS backend
//! (real AWS or the built-in emulator, through the same SDK client) → the replicated store → the
//! node's use cases → the leader's control loops under a supervisor → this node's renewal loop.
//! `main` starts an [`App`], serves the API over `app.node`, and shuts the app down.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::control::{self, LoopContext, supervisor::Supervisor};
use crate::ivs::StageBackend;
use crate::ivs::aws::{AwsBackend, AwsConfig};
use crate::ivs::emulator::{self, EmulatorConfig, EmulatorHandle};
use crate::metrics::Metrics;
use crate::node::{Node, Parts, datadir, kek};
use crate::state::{ClusterConfig, Store, StoreConfig};

pub struct App {
    pub node: Arc<Node>,
    supervisor: Supervisor,
    renewals: JoinHandle<()>,
    stop_renewals: watch::Sender<bool>,
    /// The in-process emulator, when it is the backend; it stops when the app is dropped (it
    /// saved its state on every change).
    _emulator: Option<EmulatorHandle>,
}

impl App {
    /// Where the built-in emulator's SFU takes media (UDP), when it serves media.
    pub fn media_addr(&self) -> Option<std::net::SocketAddr> {
        self._emulator.as_ref().and_then(EmulatorHandle::media_addr)
    }
}

impl App {
    pub async fn start(cfg: Config) -> anyhow::Result<App> {
        // First, before anything creates a file: the data dir and all in it private.
        datadir::prepare(&cfg.data_dir)?;
        let (aws_cfg, emulator, backend_label) = backend_config(&cfg).await?;
        let backend: Arc<dyn StageBackend> = Arc::new(AwsBackend::new(aws_cfg).await?);
        let store = Arc::new(
            Store::open(&StoreConfig {
                data_dir: cfg.data_dir.clone(),
                node_id: cfg.node_id,
                advertise_addr: if cfg.is_clustered() {
                    cfg.raft_advertised()
                } else {
                    cfg.http_addr.to_string()
                },
                sled_cache_bytes: cfg.sled_cache_mb * 1024 * 1024,
                snapshot_every: cfg.snapshot_every,
                cluster: cfg.is_clustered().then(|| ClusterConfig {
                    raft_addr: cfg.raft_addr.parse().expect("validated with the config"),
                    secret: cfg.cluster_secret.clone(),
                    bootstrap_expect: cfg.bootstrap_expect,
                    join: cfg.join_addrs(),
                }),
            })
            .await?,
        );
        // A forming cluster waits for its other nodes (the store says every few seconds which).
        let leader_within = Duration::from_secs(if cfg.is_clustered() { 600 } else { 30 });
        store.wait_for_leader(leader_within).await?;
        let keks = load_keks(&cfg, &store)?;
        let mut metrics = Metrics::new();
        metrics.register_raft_rpc_refused(store.rpc_refused_counter());
        let metrics = Arc::new(metrics);
        let settings = Arc::new(control::Settings::from_config(&cfg));
        let renew_every = Duration::from_secs(cfg.presence_interval_secs.max(1));
        let node = Arc::new(
            Node::new(Parts {
                cfg,
                store: store.clone(),
                backend: backend.clone(),
                backend_label,
                metrics: metrics.clone(),
                keks,
            })
            .await?,
        );
        let decisions = node.scaler_decisions.clone();
        let drift = node.drift.clone();
        let setup_node = node.clone();
        let supervisor = Supervisor::spawn(store.node_id, store.leadership(), move |term| {
            let mut loops = control::leader_loops(LoopContext {
                store: store.clone(),
                backend: backend.clone(),
                metrics: metrics.clone(),
                settings: settings.clone(),
                decisions: decisions.clone(),
                drift: drift.clone(),
                term,
            });
            // Each new leader finishes the first-start setup if a leader before it could not
            // (it lost leadership or died between importing the signing key and storing it).
            let node = setup_node.clone();
            loops.spawn(async move {
                match crate::node::bootstrap::run(&node).await {
                    Ok(Some(admin_key)) => {
                        tracing::warn!("this leader created the cluster's first admin key; it is shown once:");
                        println!("  admin key (shown once): {admin_key}");
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "first-start setup failed; the next leader tries again"),
                }
                // A task of the group that ends restarts the group: this one is done, not ended.
                std::future::pending::<()>().await
            });
            loops
        });
        let (stop_renewals, stopped) = watch::channel(false);
        let renewals = tokio::spawn(renew_loop(node.clone(), renew_every, stopped));
        Ok(App {
            node,
            supervisor,
            renewals,
            stop_renewals,
            _emulator: emulator,
        })
    }

    /// The term whose control loops run on this node (`None` while it does not lead).
    pub fn leading(&self) -> watch::Receiver<Option<u64>> {
        self.supervisor.running()
    }

    /// Stop the control loops, write the last renewals, stop the store.
    pub async fn shutdown(self) {
        self.supervisor.stop().await;
        let _ = self.stop_renewals.send(true);
        let _ = self.renewals.await;
        self.node.store.shutdown().await;
    }
}

/// Every node: write the renewals it collected, every `every` (jittered), and once more on stop.
async fn renew_loop(node: Arc<Node>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(control::jittered(every)) => node.flush_renewals().await,
            _ = stop.changed() => {
                node.flush_renewals().await;
                return;
            }
        }
    }
}

/// The key-encryption keys. The default file is generated only while nothing sealed is stored:
/// a node whose sealed key lost its KEK must say so, not mint a KEK that opens nothing.
fn load_keks(cfg: &Config, store: &Store) -> anyhow::Result<kek::Keks> {
    let sealed_stored = matches!(
        store.view().fleet.signing_key,
        Some(crate::fleet::SigningKeyRecord {
            private: crate::fleet::PrivateKey::Sealed(_),
            ..
        })
    );
    kek::Keks::load(
        &cfg.key_encryption_key_file,
        &cfg.data_dir.join("key-encryption-key"),
        &cfg.previous_key_encryption_key_file,
        !sealed_stored,
    )
    .context("loading the key-encryption key that seals the token signing key")
}

/// Real AWS when configured; otherwise the built-in emulator (in-process, or at `ivs_endpoint_url`).
async fn backend_config(cfg: &Config) -> anyhow::Result<(AwsConfig, Option<EmulatorHandle>, String)> {
    let mut aws = AwsConfig {
        max_attempts: cfg.ivs_max_attempts,
        initial_backoff: std::time::Duration::from_millis(cfg.ivs_retry_backoff_ms.max(1)),
        operation_timeout: Duration::from_secs(cfg.ivs_timeout_secs),
        ..AwsConfig::default()
    };
    aws.rates.extend(cfg.ivs_rate_overrides()?);
    if !cfg.ivs_endpoint_url.is_empty() {
        aws.endpoint_url = Some(cfg.ivs_endpoint_url.clone());
    }
    if cfg.use_aws() {
        aws.region = cfg
            .aws_region()
            .context("the aws backend needs a region: set ivs_region or AWS_REGION")?;
        let label = format!("AWS IVS Real-Time in {}", aws.region);
        return Ok((aws, None, label));
    }
    // Emulator: static throwaway credentials, never AWS's credential chain.
    aws.static_credentials = Some(("stagefleet-emulator".into(), "stagefleet-emulator".into()));
    aws.region = "us-east-1".into();
    if aws.endpoint_url.is_some() {
        let label = format!("IVS emulator at {}", cfg.ivs_endpoint_url);
        return Ok((aws, None, label));
    }
    let em = emulator::start(EmulatorConfig {
        listen: cfg.emulator_addr,
        enforce_tps: cfg.emulator_enforce_tps,
        state_file: Some(cfg.data_dir.join("emulator-state.json")),
        faults: emulator::Faults {
            create_stage_ms: cfg.emulator_create_stage_ms,
            replication_active_ms: cfg.emulator_replication_active_ms,
            ..emulator::Faults::default()
        },
        media: emulator::media::MediaSettings {
            sfu: cfg.emulator_media.then(|| emulator::media::MediaConfig {
                bind: cfg.media_bind,
                advertise: cfg.media_advertise_ip.trim().parse().ok(),
                max_sessions: cfg.media_max_sessions as usize,
                max_bitrate_bps: cfg.media_max_bitrate_kbps.saturating_mul(1000),
                ..emulator::media::MediaConfig::default()
            }),
            max_sockets: cfg.media_max_sockets as usize,
        },
        ..EmulatorConfig::default()
    })
    .await
    .context("starting the built-in IVS emulator")?;
    aws.endpoint_url = Some(em.endpoint_url());
    let label = format!("built-in IVS emulator at {}", em.endpoint_url());
    Ok((aws, Some(em), label))
}
