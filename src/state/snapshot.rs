//! Snapshots of the state machine: a copy of every key/value of its sled tree, length-prefixed,
//! plus openraft's `SnapshotMeta`. The current one is kept in a file (written to a temporary name
//! and renamed) so it survives restarts and can be sent to a lagging follower.

use std::io::{self, Cursor, Write};
use std::path::PathBuf;

use openraft::{BasicNode, Snapshot, SnapshotMeta};

use super::{NodeId, TypeConfig};

/// Encode key/value pairs as `u32 len, key, u32 len, value`, repeated.
pub fn encode(pairs: impl Iterator<Item = (sled::IVec, sled::IVec)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(&k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(&v);
    }
    out
}

pub fn decode(mut data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    fn take<'a>(data: &mut &'a [u8]) -> io::Result<&'a [u8]> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "truncated snapshot");
        let len_bytes: [u8; 4] = data.get(..4).ok_or_else(bad)?.try_into().expect("4 bytes");
        let len = u32::from_be_bytes(len_bytes) as usize;
        let body = data.get(4..4 + len).ok_or_else(bad)?;
        *data = &data[4 + len..];
        Ok(body)
    }
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let k = take(&mut data)?.to_vec();
        let v = take(&mut data)?.to_vec();
        pairs.push((k, v));
    }
    Ok(pairs)
}

#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("current.snapshot")
    }

    /// File layout: one line of JSON meta, then the encoded pairs.
    pub fn save(&self, meta: &SnapshotMeta<NodeId, BasicNode>, data: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join("current.snapshot.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&mut f, meta)?;
        f.write_all(b"\n")?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path())?;
        Ok(())
    }

    pub fn load(&self) -> io::Result<Option<Snapshot<TypeConfig>>> {
        let bytes = match self.file() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (meta, data) = split_file(&bytes)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }

    /// The current snapshot file as it is on disk (a backup is this file).
    pub fn file(&self) -> io::Result<Vec<u8>> {
        std::fs::read(self.path())
    }
}

/// A snapshot file's meta and its encoded pairs.
pub fn split_file(bytes: &[u8]) -> io::Result<(SnapshotMeta<NodeId, BasicNode>, &[u8])> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| io::Error::other("not a stagefleet snapshot: it has no meta line"))?;
    let meta: SnapshotMeta<NodeId, BasicNode> = serde_json::from_slice(&bytes[..nl])
        .map_err(|e| io::Error::other(format!("not a stagefleet snapshot: {e}")))?;
    Ok((meta, &bytes[nl + 1..]))
}

/// Make `data_dir` (empty, or holding no database yet) start from a backup: the state the
/// backup holds, without its Raft history and membership, so the next start forms a new
/// cluster (bootstrapped as a single node or with `bootstrap_expect`) that carries it on.
pub fn restore(backup: &[u8], data_dir: &std::path::Path) -> anyhow::Result<SnapshotMeta<NodeId, BasicNode>> {
    use anyhow::Context;
    let db_dir = data_dir.join("db");
    anyhow::ensure!(
        !db_dir.exists(),
        "{} already holds a database: restore only into a new data dir",
        data_dir.display()
    );
    let (meta, data) = split_file(backup)?;
    let pairs = decode(data).context("the backup's state is damaged")?;
    std::fs::create_dir_all(data_dir)?;
    let db = sled::Config::new()
        .path(&db_dir)
        .open()
        .context("creating the database")?;
    let tree = db.open_tree("sm")?;
    let mut batch = sled::Batch::default();
    for (k, v) in pairs {
        if k.as_slice() == super::keys::APPLIED || k.as_slice() == super::keys::MEMBERSHIP {
            continue;
        }
        batch.insert(k, v);
    }
    tree.apply_batch(batch)?;
    db.flush()?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pairs_survive_encode_and_decode_and_truncation_is_an_error() {
        let pairs = vec![
            (sled::IVec::from(&b"a"[..]), sled::IVec::from(&b""[..])),
            ("key".into(), "value".into()),
        ];
        let data = super::encode(pairs.clone().into_iter());
        let back = super::decode(&data).unwrap();
        assert_eq!(
            back,
            vec![(b"a".to_vec(), vec![]), (b"key".to_vec(), b"value".to_vec())]
        );
        assert!(super::decode(&data[..data.len() - 1]).is_err());
    }
}
