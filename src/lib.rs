//! stagefleet: one broadcast on a fleet of AWS IVS Real-Time stages.
//!
//! Module map (DESIGN.md §3): `fleet` decides (pure), `state` remembers (Raft on sled), `ivs`
//! talks to IVS (SDK, tokens, emulator), `control` drives IVS from the leader, `node` runs the
//! viewer and operator use cases, `app` wires one process together, `api` serves GraphQL, health,
//! metrics and the web pages. ARCHITECTURE.md has the whole map.

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod control;
pub mod fleet;
pub mod ivs;
pub mod metrics;
pub mod net;
pub mod node;
pub mod state;
