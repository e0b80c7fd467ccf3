//! stagefleet: one broadcast on a fleet of AWS IVS Real-Time stages.
//!
//! Module map (see DESIGN.md §3): `fleet` decides (pure), `state` remembers (Raft on sled),
//! `ivs` talks to IVS (SDK, tokens, emulator), `control` drives IVS from the leader, `api` serves
//! GraphQL, health and metrics, `node` wires one process together.

pub mod ivs;
