//! One stagefleet process wired together: config, the replicated store, the IVS backend (real AWS
//! or the built-in emulator through the same SDK client), the token signer, the group-commit
//! batchers and the background loops. The API holds an `Arc<Node>` and calls its operations.

pub mod bootstrap;
pub mod datadir;
pub mod error;
pub mod join;
pub mod kek;
pub mod keys;
pub mod ops;
pub mod signing;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use error::NodeError;

use crate::config::Config;
use crate::ivs::StageBackend;
use crate::ivs::aws::{AwsBackend, AwsConfig};
use crate::ivs::emulator::{self, EmulatorConfig, EmulatorHandle};
use crate::ivs::signer::Signer;
use crate::ivs::token::SigningKey;
use crate::metrics::Metrics;
use crate::state::batcher::{BatchConfig, Batcher};
use crate::state::{Store, StoreConfig};

pub struct Node {
    pub cfg: Config,
    pub store: Arc<Store>,
    pub backend: Arc<dyn StageBackend>,
    pub signer: Signer,
    pub metrics: Arc<Metrics>,
    /// The replicated signing key, parsed.
    keys: Arc<signing::SigningKeys>,
    joins: Batcher<join::JoinKind>,
    leaves: Batcher<join::LeaveKind>,
    pub presence: crate::control::presence::Presence,
    pub control: crate::control::stages::StageDriver,
    pub emulator: Option<EmulatorHandle>,
    /// Printed once at first start; `None` afterwards.
    pub first_admin_key: Option<String>,
    pub backend_label: String,
}

impl Node {
    pub async fn start(cfg: Config) -> anyhow::Result<Arc<Node>> {
        // First, before anything creates a file: the data dir and all in it private.
        datadir::prepare(&cfg.data_dir)?;
        let (aws_cfg, emulator, backend_label) = backend_config(&cfg).await?;
        let backend: Arc<dyn StageBackend> = Arc::new(AwsBackend::new(aws_cfg).await?);
        let store = Arc::new(
            Store::open(&StoreConfig {
                data_dir: cfg.data_dir.clone(),
                node_id: cfg.node_id,
                advertise_addr: cfg.http_addr.to_string(),
                sled_cache_bytes: cfg.sled_cache_mb * 1024 * 1024,
                snapshot_every: cfg.snapshot_every,
            })
            .await?,
        );
        store.wait_for_leader(Duration::from_secs(30)).await?;
        let keks = load_keks(&cfg, &store)?;
        let metrics = Arc::new(Metrics::new());
        let batch = BatchConfig {
            max_batch: cfg.group_commit_max_batch,
            max_in_flight: cfg.group_commit_in_flight,
            queue: cfg.group_commit_max_batch * 4,
            linger: Duration::from_micros(cfg.group_commit_linger_us),
        };
        let signer = Signer::new(cfg.signer_threads);
        let keys = Arc::new(signing::SigningKeys::new(store.shared.clone(), keks));
        let join_kind = join::JoinKind {
            signer: signer.clone(),
            keys: keys.clone(),
            token_ttl_minutes: cfg.token_ttl_minutes,
        };
        let m = metrics.clone();
        let joins = Batcher::spawn(store.clone(), join_kind, batch, move |n| {
            m.batch_size
                .get_or_create(&crate::metrics::label("kind", "join"))
                .observe(n as f64)
        });
        let m = metrics.clone();
        let leaves = Batcher::spawn(store.clone(), join::LeaveKind, batch, move |n| {
            m.batch_size
                .get_or_create(&crate::metrics::label("kind", "leave"))
                .observe(n as f64)
        });
        let mut node = Node {
            signer,
            presence: crate::control::presence::Presence::default(),
            control: crate::control::stages::StageDriver::default(),
            cfg,
            store,
            backend,
            metrics,
            keys,
            joins,
            leaves,
            emulator,
            first_admin_key: None,
            backend_label,
        };
        node.first_admin_key = bootstrap::run(&node).await?;
        let node = Arc::new(node);
        crate::control::spawn_loops(node.clone());
        Ok(node)
    }

    /// The key tokens are signed with, as replicated.
    pub fn signing_key(&self) -> Result<Arc<SigningKey>, NodeError> {
        self.keys.current()
    }

    pub async fn shutdown(&self) {
        // The in-process emulator stops when the node is dropped; it saved its state on every change.
        self.store.shutdown().await;
    }
}

/// The key-encryption keys. The default file is generated only while nothing sealed is stored:
/// a node whose sealed key lost its KEK must say so, not mint a KEK that opens nothing.
fn load_keks(cfg: &Config, store: &Store) -> anyhow::Result<kek::Keks> {
    let sealed_stored = matches!(
        store.shared.read().fleet.signing_key,
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
        ..EmulatorConfig::default()
    })
    .await
    .context("starting the built-in IVS emulator")?;
    aws.endpoint_url = Some(em.endpoint_url());
    let label = format!("built-in IVS emulator at {}", em.endpoint_url());
    Ok((aws, Some(em), label))
}
