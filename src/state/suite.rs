//! openraft's own storage conformance suite (34 scenarios: log, vote, purge, truncate, apply,
//! snapshots, membership recovery) against our sled log store and state machine.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::machine::StateMachine;
use super::{NodeId, TypeConfig};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("sled opens");
        let log = LogStore::open(&db)?;
        let sm = StateMachine::open(&db, dir.path().join("snapshots"), 1)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_openraft_storage_suite() {
    Suite::test_all(SledBuilder).expect("storage suite");
}
