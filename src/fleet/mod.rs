//! The domain, pure: broadcasts, stages, sessions, and the decisions over them (placement,
//! admission, state transitions). Everything here is a function of state + config + `now` passed
//! in: no I/O, no clocks, no awaits, no GraphQL or AWS types. That is what lets the state machine
//! apply the same log to the same state on every node, and lets property tests run it cheaply.

pub mod admission;
pub mod drift;
pub mod event;
pub mod model;
pub mod placement;
pub mod reaping;
pub mod replication;
pub mod scaling;
pub mod sessions;
pub mod stats;
pub mod transition;

#[cfg(test)]
mod invariants;

pub use model::*;
