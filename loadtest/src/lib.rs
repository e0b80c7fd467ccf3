//! `loadtest`: a load generator for stagefleet that is a client of its public API only (GraphQL
//! over HTTP and WebSocket). It shares no code with the server, so it measures what a real client
//! would see and can point at any deployment.
//!
//! Layout: `driver` paces and measures, `scenario/*` say what one operation is, `ledger` and
//! `verify` check the server lost nothing, `report` prints, `target`/`procstat` know the node
//! process (`cluster` several of them as one Raft cluster), `calibrate` measures the machine's signing limit.
//! `media` is the exception to "public API only": it speaks WHIP and WebRTC to the IVS emulator's
//! SFU with the integration tests' peers (`webrtc`, included from `tests/common`).

pub mod api;
pub mod calibrate;
pub mod cli;
pub mod cluster;
pub mod conn;
pub mod driver;
pub mod error;
pub mod ledger;
pub mod pacing;
pub mod percentiles;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod setup;
pub mod target;
pub mod token;
pub mod verify;
// The integration tests' WebRTC peers (str0m), which the `media` scenario publishes and
// subscribes with; test code, not the server's.
#[path = "../../tests/common/webrtc.rs"]
mod webrtc;
pub mod ws;
