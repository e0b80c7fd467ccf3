//! What the fleet remembers and how it agrees on it: every change is a [`Command`] proposed
//! through openraft (0.9, storage-v2), stored in a sled log, and applied by a deterministic state
//! machine whose data lives in sled. A single node is a one-member cluster: one code path.
//!
//! Decisions are not made here: the state machine calls `crate::fleet::transition`.

pub mod batcher;
pub mod bus;
pub mod command;
pub mod formation;
mod frozen;
pub mod keys;
pub mod log_store;
pub mod machine;
pub mod network;
pub mod proposal;
pub mod rpc;
pub mod sled_sessions;
pub mod snapshot;
pub mod store;

#[cfg(test)]
mod bus_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod suite;

pub use bus::{Applied, Event, Subscription};
pub use command::{Command, Response};
pub use machine::{Shared, View};
pub use proposal::ProposeError;
pub use proposal::{Proposal, ProposalError};
pub use store::{ClusterConfig, ClusterStatus, Leadership, MemberStatus, Store, StoreConfig};

openraft::declare_raft_types!(
    /// openraft's type configuration for stagefleet.
    pub TypeConfig:
        D = Command,
        R = Response,
        SnapshotData = tokio::fs::File,
);

pub type NodeId = u64;

/// Make every write so far durable (the whole database: log, vote and state share one sled log).
pub async fn flush(db: &sled::Db) -> sled::Result<()> {
    db.flush_async().await.map(|_| ())
}
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
