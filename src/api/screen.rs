//! What every GraphQL document passes before the executor sees it, on HTTP and WebSocket alike:
//! the front gate on the raw text (linear time, before any parsing) and, once parsed, the check
//! that enum arguments are not given as string literals. Documents the parse cache already holds
//! passed both when they were first seen.

use async_graphql::parser::types::ExecutableDocument;

use super::enum_literals::EnumArgs;
use super::gate::{self, GateLimits};
use crate::config::Config;

pub struct Screen {
    pub limits: GateLimits,
    pub enums: EnumArgs,
}

impl Screen {
    pub fn new(cfg: &Config, sdl: &str) -> Self {
        Self {
            limits: GateLimits {
                max_nesting: cfg.graphql_max_nesting,
                max_tokens: cfg.graphql_max_tokens,
                max_fragments: cfg.graphql_max_fragments,
                max_spreads: cfg.graphql_max_spreads,
            },
            enums: EnumArgs::from_sdl(sdl),
        }
    }

    /// The raw document, before parsing: a refusal names the limit.
    pub fn text(&self, query: &str) -> Result<(), String> {
        gate::check(query, &self.limits).map_err(|e| e.to_string())
    }

    /// The parsed document.
    pub fn parsed(&self, doc: &ExecutableDocument) -> Result<(), String> {
        self.enums.check(doc)
    }
}
