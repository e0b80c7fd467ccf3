//! The HTTP edge: GraphQL over HTTP POST and WebSocket (graphql-transport-ws) at `/graphql`,
//! GraphiQL on a plain GET, `/livez`, `/readyz`, `/metrics`, and the embedded web pages. Holds no
//! business rules: it authenticates, calls the node, and maps errors once.

pub mod assets;
pub mod auth;
pub mod client_ip;
pub mod cluster;
pub mod compiled;
pub mod enum_literals;
pub mod error;
pub mod gate;
pub mod graphiql;
pub mod graphql;
pub mod headers;
pub mod health;
pub mod parse_cache;
pub mod schema;
pub mod screen;
pub mod server;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::sync::{Semaphore, watch};

use crate::node::Node;
use schema::AppSchema;

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    /// Every validation rule: for documents this node has not seen pass yet, and for WebSockets.
    pub schema: AppSchema,
    /// Depth and complexity only: for documents that passed `schema`'s validation before.
    pub schema_validated: AppSchema,
    pub parsed: Arc<parse_cache::ParseCache>,
    pub limits: Arc<auth::JoinLimits>,
    /// Front gate and enum-literal check, before any document is parsed or run.
    pub screen: Arc<screen::Screen>,
    pub identity: Arc<client_ip::ClientIdentity>,
    pub cors: Arc<headers::Cors>,
    /// The Content-Security-Policy of the embedded pages (allows the SDK's origin).
    pub page_csp: axum::http::HeaderValue,
    /// One permit per open WebSocket (`max_websockets`).
    pub ws_slots: Arc<Semaphore>,
    /// Executions of WebSocket operations, shared between identical subscriptions.
    pub groups: Arc<ws::groups::Groups>,
    /// Renders `assignment` updates without an execution held open per subscriber.
    pub assignments: ws::assignment::Renderer,
    /// Becomes true when the node starts shutting down: WebSockets close themselves.
    pub shutdown: watch::Receiver<bool>,
}

/// Largest request body, WebSocket frame and message accepted (GraphQL documents are small;
/// attributes are capped at 1 KB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What `server::serve` needs besides the router: the sender that tells WebSockets the node is
/// shutting down, and their permits, to wait for them while draining.
pub struct Edge {
    pub router: Router,
    pub closing: watch::Sender<bool>,
    pub websockets: Arc<Semaphore>,
}

pub fn router(node: Arc<Node>) -> Edge {
    let limits = Arc::new(auth::JoinLimits::new(
        node.cfg.viewer_join,
        node.cfg.join_rate_per_ip,
        node.cfg.join_rate_per_key,
        node.cfg.join_rate_per_viewer_key,
    ));
    let build = |mode| {
        schema::build_schema(
            node.clone(),
            limits.clone(),
            node.cfg.graphql_max_depth,
            node.cfg.graphql_max_complexity,
            mode,
        )
    };
    let (schema, schema_validated) = (
        build(async_graphql::ValidationMode::Strict),
        build(async_graphql::ValidationMode::Fast),
    );
    let pruned = limits.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            pruned.prune();
        }
    });
    let (closing, shutdown) = watch::channel(false);
    let identity = client_ip::ClientIdentity::from_config(&node.cfg).expect("validated with the config");
    let state = AppState {
        screen: Arc::new(screen::Screen::new(&node.cfg, &schema.sdl())),
        identity: Arc::new(identity),
        cors: Arc::new(headers::Cors::new(&node.cfg.cors_allowed_origins)),
        page_csp: headers::page_csp(node.cfg.sdk_origin().as_deref()),
        ws_slots: Arc::new(Semaphore::new(node.cfg.max_websockets)),
        groups: ws::groups::Groups::new(node.metrics.clone()),
        assignments: ws::assignment::renderer(
            node.clone(),
            node.cfg.graphql_max_depth,
            node.cfg.graphql_max_complexity,
        ),
        shutdown,
        node,
        schema,
        schema_validated,
        parsed: Arc::new(parse_cache::ParseCache::new(256)),
        limits,
    };
    let websockets = state.ws_slots.clone();
    let router = Router::new()
        .route("/graphql", get(graphql::get_graphql).post(graphql::post_graphql))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(cluster::routes(state.clone()))
        .route("/sdk/{*path}", get(assets::sdk))
        .fallback(assets::serve)
        .layer(axum::middleware::from_fn_with_state(state.clone(), headers::layer))
        .with_state(state);
    Edge {
        router,
        closing,
        websockets,
    }
}
