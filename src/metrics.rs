//! Prometheus metrics of one node. Counters and histograms are updated where things happen;
//! gauges of the fleet and of Raft are read from the state at scrape time, so they always equal
//! what GraphQL shows (DESIGN.md §4 invariant 6).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub joins: Family<Labels, Counter>,
    pub join_refusals: Family<Labels, Counter>,
    pub tokens_minted: Family<Labels, Counter>,
    pub join_seconds: Histogram,
    pub graphql_seconds: Family<Labels, Histogram>,
    pub batch_size: Family<Labels, Histogram>,
    pub ivs_calls: Family<Labels, Counter>,
    /// The scaler's decisions, by action and reason.
    pub scaler_decisions: Family<Labels, Counter>,
    pub gauges: Family<Labels, Gauge>,
    /// HTTP GraphQL requests answered by a compiled plan (`api::compiled`) instead of the executor.
    pub graphql_compiled: Counter,
    /// Stages of this fleet that the state did not know, deleted by the reaper.
    pub orphans_deleted: Counter,
    /// Ledger vs IVS per stage, as last sampled by the drift reconciler.
    pub drift: Family<Labels, Gauge>,
    /// Requests and connections the front door refused, by kind (gate, websocket, connection,
    /// media_type, too_large, revoked, ...).
    pub refused: Family<Labels, Counter>,
    /// Open TCP connections and WebSockets.
    pub open_connections: Gauge,
    pub open_websockets: Gauge,
    /// Subscription operations open on this node's WebSockets (one per subscriber).
    pub subscriptions_open: Gauge,
    /// Subscription payloads serialized, and frames sent carrying them: identical subscriptions
    /// share one payload per update, so frames grow with subscribers and payloads with distinct
    /// subscriptions.
    pub subscription_payloads: Counter,
    pub subscription_frames: Counter,
    // Handles on the series every join touches, so the hot path neither allocates labels nor
    // looks them up.
    pub joins_admitted: Counter,
    pub joins_rejoined: Counter,
    pub viewer_tokens: Counter,
    pub graphql_http_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stagefleet");
        let joins = Family::<Labels, Counter>::default();
        registry.register(
            "joins",
            "Joins answered with a token, by outcome (admitted, rejoined)",
            joins.clone(),
        );
        let join_refusals = Family::<Labels, Counter>::default();
        registry.register("join_refusals", "Joins refused, by reason", join_refusals.clone());
        let tokens_minted = Family::<Labels, Counter>::default();
        registry.register(
            "tokens_minted",
            "Participant tokens signed, by kind (viewer, host)",
            tokens_minted.clone(),
        );
        let join_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "join_duration_seconds",
            "Time to admit a viewer and sign its token",
            join_seconds.clone(),
        );
        let graphql_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register(
            "graphql_duration_seconds",
            "GraphQL request latency, by transport",
            graphql_seconds.clone(),
        );
        let batch_size =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 12)));
        registry.register(
            "group_commit_batch_size",
            "Requests per Raft log entry, by kind",
            batch_size.clone(),
        );
        let ivs_calls = Family::<Labels, Counter>::default();
        registry.register(
            "ivs_calls",
            "IVS control-plane calls made by this node, by operation and result",
            ivs_calls.clone(),
        );
        let scaler_decisions = Family::<Labels, Counter>::default();
        registry.register(
            "scaler_decisions",
            "The scaler's decisions, by action (add_replica, add_origin, held) and reason (headroom, warm_pool, or the limit that held it back)",
            scaler_decisions.clone(),
        );
        let gauges = Family::<Labels, Gauge>::default();
        registry.register(
            "state",
            "Fleet and Raft state as this node sees it (name label: broadcasts_live, stages, viewers, raft_term, ...)",
            gauges.clone(),
        );
        let drift = Family::<Labels, Gauge>::default();
        registry.register(
            "stage_drift",
            "Ledger vs IVS per stage as the leader last sampled it (kind: never_connected = seats whose viewer never joined IVS within connect_grace_secs; unknown = viewers in IVS holding no seat)",
            drift.clone(),
        );
        let orphans_deleted = Counter::default();
        registry.register(
            "orphans_deleted",
            "Stages carrying this fleet's tag that the state did not know (a crash between CreateStage and its record, a duplicate for one slot), deleted by the leader's reaper after reaper_grace_secs",
            orphans_deleted.clone(),
        );
        let graphql_compiled = Counter::default();
        registry.register(
            "graphql_compiled",
            "HTTP GraphQL requests answered by a compiled plan (a joinBroadcast document seen before) instead of the executor",
            graphql_compiled.clone(),
        );
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "front_door_refusals",
            "Requests and connections refused before any work, by kind (gate, websocket, connection, media_type, too_large, revoked, subscription_limit, slow_subscriber, ws_init_timeout, ws_idle)",
            refused.clone(),
        );
        let open_connections = Gauge::default();
        registry.register("open_connections", "Open HTTP connections", open_connections.clone());
        let open_websockets = Gauge::default();
        registry.register("open_websockets", "Open GraphQL WebSockets", open_websockets.clone());
        let subscriptions_open = Gauge::default();
        registry.register(
            "subscriptions_open",
            "GraphQL subscriptions open on this node's WebSockets",
            subscriptions_open.clone(),
        );
        let subscription_payloads = Counter::default();
        registry.register(
            "subscription_payloads",
            "Subscription payloads serialized (identical subscriptions share one per update)",
            subscription_payloads.clone(),
        );
        let subscription_frames = Counter::default();
        registry.register(
            "subscription_frames",
            "Subscription frames queued to WebSockets",
            subscription_frames.clone(),
        );
        Self {
            registry,
            subscriptions_open,
            subscription_payloads,
            subscription_frames,
            graphql_compiled,
            orphans_deleted,
            drift,
            refused,
            open_connections,
            open_websockets,
            joins_admitted: handle(&joins, label("outcome", "admitted")),
            joins_rejoined: handle(&joins, label("outcome", "rejoined")),
            viewer_tokens: handle(&tokens_minted, label("kind", "viewer")),
            graphql_http_seconds: handle(&graphql_seconds, label("transport", "http")),
            joins,
            join_refusals,
            tokens_minted,
            join_seconds,
            graphql_seconds,
            batch_size,
            ivs_calls,
            scaler_decisions,
            gauges,
        }
    }

    /// Count internode requests refused for the cluster secret (the store owns the counter).
    pub fn register_raft_rpc_refused(&mut self, refused: Counter) {
        self.registry.register(
            "raft_rpc_refused",
            "Internode (Raft port) requests refused for a missing or wrong cluster secret",
            refused,
        );
    }

    pub fn set(&self, name: &'static str, extra: Option<(&'static str, String)>, v: i64) {
        let mut labels = vec![("name", name.to_string())];
        labels.extend(extra);
        self.gauges.get_or_create(&labels).set(v);
    }

    /// Count one front-door refusal of `kind`.
    pub fn refuse(&self, kind: &'static str) {
        self.refused.get_or_create(&label("kind", kind)).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// The series of `family` with `labels`, to keep and update without looking it up again.
fn handle<M: Clone, C: prometheus_client::metrics::family::MetricConstructor<M>>(
    family: &Family<Labels, M, C>,
    labels: Labels,
) -> M {
    family.get_or_create(&labels).clone()
}

pub fn label(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}
