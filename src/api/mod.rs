//! The HTTP edge: GraphQL over HTTP POST and WebSocket (graphql-transport-ws) at `/graphql`,
//! GraphiQL on a plain GET, `/livez`, `/readyz`, `/metrics`, and the embedded web pages. Holds no
//! business rules: it authenticates, calls the node, and maps errors once.

pub mod assets;
pub mod auth;
pub mod compiled;
pub mod error;
pub mod graphql;
pub mod health;
pub mod parse_cache;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

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
}

/// Largest request body accepted (GraphQL documents are small; attributes are capped at 1 KB).
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(node: Arc<Node>) -> Router {
    let limits = Arc::new(auth::JoinLimits::new(
        node.cfg.viewer_join,
        node.cfg.join_rate_per_ip,
        node.cfg.join_rate_per_key,
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
    let state = AppState {
        node,
        schema,
        schema_validated,
        parsed: Arc::new(parse_cache::ParseCache::new(256)),
        limits,
    };
    Router::new()
        .route("/graphql", get(graphql::get_graphql).post(graphql::post_graphql))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(assets::serve)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
