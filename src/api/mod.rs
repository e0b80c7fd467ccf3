//! The HTTP edge: GraphQL over HTTP POST and WebSocket (graphql-transport-ws) at `/graphql`,
//! GraphiQL on a plain GET, `/livez`, `/readyz`, `/metrics`, and the embedded web pages. Holds no
//! business rules: it authenticates, calls the node, and maps errors once.

pub mod assets;
pub mod auth;
pub mod error;
pub mod graphql;
pub mod health;
pub mod parse_cache;
pub mod schema;
pub mod validation_cache;

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
    pub schema: AppSchema,
    pub parsed: Arc<parse_cache::ParseCache>,
}

/// Largest request body accepted (GraphQL documents are small; attributes are capped at 1 KB).
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(node: Arc<Node>) -> Router {
    let schema = schema::build_schema(
        Some(node.clone()),
        node.cfg.graphql_max_depth,
        node.cfg.graphql_max_complexity,
    );
    let limits = schema.data::<Arc<auth::JoinLimits>>().cloned();
    if let Some(limits) = limits {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limits.prune();
            }
        });
    }
    let state = AppState {
        node,
        schema,
        parsed: Arc::new(parse_cache::ParseCache::new(256)),
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
