//! The viewer and operator use cases: validate, propose through the store, await the outcome,
//! sign tokens after commit. First-start setup (`bootstrap`), keys at rest (`kek`, `datadir`,
//! `signing`) and the renewals this node collects (`presence`) live here too. The process is
//! wired in `crate::app`; the API holds an `Arc<Node>` and calls its operations.

pub mod bootstrap;
pub mod datadir;
pub mod error;
pub mod join;
pub mod kek;
pub mod keys;
pub mod live;
pub mod ops;
pub mod presence;
pub mod signing;

use std::sync::Arc;
use std::time::Duration;

pub use error::NodeError;

use crate::config::Config;
use crate::ivs::StageBackend;
use crate::ivs::signer::Signer;
use crate::ivs::token::SigningKey;
use crate::metrics::Metrics;
use crate::state::Store;
use crate::state::batcher::{BatchConfig, Batcher};

pub struct Node {
    pub cfg: Config,
    pub store: Arc<Store>,
    /// For first-start setup only (importing the token signing key's public half): operations
    /// never call IVS; the leader's control loops do.
    pub backend: Arc<dyn StageBackend>,
    pub signer: Signer,
    pub metrics: Arc<Metrics>,
    /// The replicated signing key, parsed.
    keys: Arc<signing::SigningKeys>,
    joins: Batcher<join::JoinKind>,
    leaves: Batcher<join::LeaveKind>,
    presence: presence::Presence,
    /// Live views over the applied log, for subscriptions.
    pub live: Arc<live::Live>,
    /// The scaler's last decisions (filled on the node that leads, while `autoscale` is on).
    pub scaler_decisions: Arc<crate::fleet::scaling::Decisions>,
    /// The drift reconciler's last report per stage (filled on the node that leads).
    pub drift: Arc<crate::fleet::drift::Reports>,
    /// Printed once at first start; `None` afterwards.
    pub first_admin_key: Option<String>,
    pub backend_label: String,
}

/// What the composition root (`crate::app`) hands a node.
pub struct Parts {
    pub cfg: Config,
    pub store: Arc<Store>,
    pub backend: Arc<dyn StageBackend>,
    pub backend_label: String,
    pub metrics: Arc<Metrics>,
    pub keks: kek::Keks,
}

impl Node {
    /// The node's use cases over `parts`; then runs first-start setup (policy, signing key, admin key).
    pub async fn new(parts: Parts) -> anyhow::Result<Node> {
        let Parts {
            cfg,
            store,
            backend,
            backend_label,
            metrics,
            keks,
        } = parts;
        let batch = BatchConfig {
            max_batch: cfg.group_commit_max_batch,
            max_in_flight: cfg.group_commit_in_flight,
            queue: cfg.group_commit_max_batch * 4,
            linger: Duration::from_micros(cfg.group_commit_linger_us),
        };
        let signer = Signer::new(cfg.signer_threads);
        let keys = Arc::new(signing::SigningKeys::new(store.reader(), keks));
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
            presence: presence::Presence::default(),
            live: live::Live::new(store.clone()),
            scaler_decisions: Arc::default(),
            drift: Arc::default(),
            cfg,
            store,
            backend,
            metrics,
            keys,
            joins,
            leaves,
            first_admin_key: None,
            backend_label,
        };
        node.first_admin_key = bootstrap::run(&node).await?;
        Ok(node)
    }

    /// The key tokens are signed with, as replicated.
    pub fn signing_key(&self) -> Result<Arc<SigningKey>, NodeError> {
        self.keys.current()
    }
}
