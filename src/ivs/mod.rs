//! Everything that talks IVS Real-Time: the [`backend::StageBackend`] seam, its AWS SDK
//! implementation, self-signed participant tokens, and the built-in wire-compatible emulator.
//! Knows nothing about viewers or Raft.

pub mod aws;
pub mod backend;
pub mod emulator;
pub mod naming;
pub mod ratelimit;
pub mod signer;
pub mod token;

pub use backend::{BackendError, StageBackend, StageEndpoints, StageInfo};
