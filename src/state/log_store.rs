//! The Raft log, vote and purge marker in sled. Every write is flushed before openraft is told
//! it happened (`append`'s callback, `save_vote`, `purge`, `truncate`): a leader commits on that
//! signal, so acknowledging before the bytes are down could lose a write it already answered.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};

use super::{LogId, NodeId, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

fn index_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub fn open(db: &sled::Db) -> Result<Self, StorageError<NodeId>> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree("raft_log").map_err(read_err)?,
            meta: db.open_tree("raft_meta").map_err(read_err)?,
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<NodeId>> {
        match self.meta.get(key).map_err(read_err)? {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    async fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T) -> Result<(), StorageError<NodeId>> {
        self.meta
            .insert(key, serde_json::to_vec(v).map_err(write_err)?)
            .map_err(write_err)?;
        super::flush(&self.db).await.map_err(write_err)?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError<NodeId>> {
        match self.log.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = serde_json::from_slice(&v).map_err(read_err)?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }

    /// Bytes the whole sled database takes on disk (log, state machine, meta).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.log
            .range((Bound::Included(index_key(start)), end))
            .map(|r| {
                let (_, v) = r.map_err(read_err)?;
                serde_json::from_slice(&v).map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<NodeId>> {
        // Not flushed on its own: it only saves re-applying after a restart, and our state machine
        // is persistent anyway. It rides along with the next flush.
        self.meta
            .insert(COMMITTED, serde_json::to_vec(&committed).map_err(write_err)?)
            .map_err(write_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Plain inserts, not a `sled::Batch`: sled 0.34 writes its log buffer out and waits for the
        // disk twice for every batch (it seals the buffer before and after the batch's marker), and
        // the flush below is the one wait an append needs. A crash part-way loses a suffix of these
        // entries at most (sled recovers a prefix of its log), which Raft allows: none of them was
        // acknowledged, and a log that ends earlier is what `get_log_state` reports.
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(write_err)?;
            self.log
                .insert(index_key(entry.log_id.index), bytes)
                .map_err(write_err)?;
        }
        // Readable now (sled serves its page cache); durable once the flush returns.
        let flushed = super::flush(&self.db).await.map_err(std::io::Error::other);
        let failed = flushed
            .as_ref()
            .err()
            .map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(flushed);
        match failed {
            Some(e) => Err(write_err(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let mut batch = sled::Batch::default();
        for k in self.log.range(index_key(log_id.index)..).keys() {
            batch.remove(k.map_err(write_err)?);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        super::flush(&self.db).await.map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: if we crash half-way, get_log_state still tells the truth.
        self.put_meta(LAST_PURGED, &log_id).await?;
        let mut batch = sled::Batch::default();
        for k in self.log.range(..=index_key(log_id.index)).keys() {
            batch.remove(k.map_err(write_err)?);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        super::flush(&self.db).await.map_err(write_err)?;
        Ok(())
    }
}
