//! Snapshots of the state machine: a copy of every key/value of its sled tree, length-prefixed,
//! after one line of openraft's `SnapshotMeta` as JSON. The current one is a file (written to a
//! temporary name and renamed) so it survives restarts; the same file is what a lagging follower
//! receives (openraft reads and writes it in chunks of `snapshot_max_chunk_size`) and what
//! `stagefleet backup` downloads. No whole snapshot is ever held in memory as bytes: it is
//! written, sent, received and read back as a stream.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};

use super::NodeId;

pub type Meta = SnapshotMeta<NodeId, BasicNode>;

/// Write key/value pairs as `u32 len, key, u32 len, value`, repeated.
pub fn write_pairs<W: Write>(
    out: &mut W,
    pairs: impl Iterator<Item = (impl AsRef<[u8]>, impl AsRef<[u8]>)>,
) -> io::Result<()> {
    for (k, v) in pairs {
        for part in [k.as_ref(), v.as_ref()] {
            let len = u32::try_from(part.len()).map_err(|_| io::Error::other("snapshot value over 4 GiB"))?;
            out.write_all(&len.to_be_bytes())?;
            out.write_all(part)?;
        }
    }
    Ok(())
}

/// Read pairs written by [`write_pairs`] until the end of `input`, one at a time.
pub fn read_pairs<R: Read>(input: &mut R, mut each: impl FnMut(Vec<u8>, Vec<u8>)) -> io::Result<u64> {
    fn part<R: Read>(input: &mut R, first: bool) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match input.read(&mut len[got..])? {
                0 if got == 0 && first => return Ok(None),
                0 => return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated snapshot")),
                n => got += n,
            }
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        input
            .read_exact(&mut body)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "truncated snapshot"))?;
        Ok(Some(body))
    }
    let mut n = 0;
    while let Some(k) = part(input, true)? {
        let v = part(input, false)?.expect("a value follows its key");
        each(k, v);
        n += 1;
    }
    Ok(n)
}

/// Read the meta line at the start of a snapshot file, leaving `input` at the first pair.
pub fn read_meta<R: BufRead>(input: &mut R) -> io::Result<Meta> {
    let mut line = Vec::new();
    input.read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(io::Error::other("not a stagefleet snapshot: it has no meta line"));
    }
    serde_json::from_slice(&line).map_err(|e| io::Error::other(format!("not a stagefleet snapshot: {e}")))
}

/// Read a whole snapshot file (meta and pairs), one pair at a time.
pub fn read_file<R: Read>(input: R, each: impl FnMut(Vec<u8>, Vec<u8>)) -> io::Result<Meta> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let meta = read_meta(&mut input)?;
    read_pairs(&mut input, each)?;
    Ok(meta)
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

    pub fn path(&self) -> PathBuf {
        self.dir.join("current.snapshot")
    }

    /// Write a new current snapshot (meta line, then the pairs), durably; returns its size.
    pub fn save(
        &self,
        meta: &Meta,
        pairs: impl Iterator<Item = (impl AsRef<[u8]>, impl AsRef<[u8]>)>,
    ) -> io::Result<u64> {
        let tmp = self.dir.join("current.snapshot.tmp");
        let mut out = BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
        serde_json::to_writer(&mut out, meta)?;
        out.write_all(b"\n")?;
        write_pairs(&mut out, pairs)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let len = file.metadata()?.len();
        std::fs::rename(&tmp, self.path())?;
        Ok(len)
    }

    /// Make a received snapshot file the current one (a copy, streamed, then renamed).
    pub fn adopt(&self, received: &mut File) -> io::Result<()> {
        use std::io::Seek;
        received.rewind()?;
        let tmp = self.dir.join("current.snapshot.tmp");
        let mut out = File::create(&tmp)?;
        io::copy(received, &mut out)?;
        out.sync_all()?;
        std::fs::rename(&tmp, self.path())
    }

    /// The current snapshot's meta and the file open at its start, if there is one.
    pub fn open(&self) -> io::Result<Option<(Meta, File)>> {
        let file = match File::open(self.path()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = read_meta(&mut BufReader::new(&file))?;
        use std::io::Seek;
        let mut file = file;
        file.rewind()?;
        Ok(Some((meta, file)))
    }

    /// A new, nameless file in the snapshot directory to receive a snapshot into: unlinked at
    /// once, so an interrupted transfer leaves nothing behind.
    pub fn receiving(&self) -> io::Result<File> {
        let path = self
            .dir
            .join(format!("incoming-{}.snapshot", crate::ivs::token::random_id(12)));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(file)
    }
}

/// Make `data_dir` (empty, or holding no database yet) start from a backup file: the state the
/// backup holds, without its Raft history and membership, so the next start forms a new
/// cluster (bootstrapped as a single node or with `bootstrap_expect`) that carries it on.
pub fn restore(backup: &Path, data_dir: &Path) -> anyhow::Result<Meta> {
    use anyhow::Context;
    let db_dir = data_dir.join("db");
    anyhow::ensure!(
        !db_dir.exists(),
        "{} already holds a database: restore only into a new data dir",
        data_dir.display()
    );
    let file = File::open(backup).with_context(|| format!("reading {}", backup.display()))?;
    std::fs::create_dir_all(data_dir)?;
    let db = sled::Config::new()
        .path(&db_dir)
        .open()
        .context("creating the database")?;
    let tree = db.open_tree("sm")?;
    // One batch: a restore that fails half-way leaves no half-restored state behind.
    let mut batch = sled::Batch::default();
    let meta = read_file(file, |k, v| {
        if k.as_slice() != super::keys::APPLIED && k.as_slice() != super::keys::MEMBERSHIP {
            batch.insert(k, v);
        }
    });
    let meta = match meta {
        Ok(m) => m,
        Err(e) => {
            drop((tree, db));
            let _ = std::fs::remove_dir_all(&db_dir);
            return Err(anyhow::Error::new(e).context("the backup is damaged"));
        }
    };
    tree.apply_batch(batch)?;
    db.flush()?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_survive_a_file_and_truncation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path().to_path_buf()).unwrap();
        let meta = Meta::default();
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"a", b""), (b"key", b"value")];
        store.save(&meta, pairs.iter().copied()).unwrap();

        let (back_meta, file) = store.open().unwrap().unwrap();
        assert_eq!(back_meta, meta);
        let mut back = Vec::new();
        read_file(file, |k, v| back.push((k, v))).unwrap();
        assert_eq!(
            back,
            vec![(b"a".to_vec(), vec![]), (b"key".to_vec(), b"value".to_vec())]
        );

        let bytes = std::fs::read(store.path()).unwrap();
        let cut = &bytes[..bytes.len() - 1];
        assert!(read_file(cut, |_, _| {}).is_err());
        assert!(read_file(&b"no meta line"[..], |_, _| {}).is_err());
    }

    #[test]
    fn a_received_file_becomes_the_current_snapshot_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path().to_path_buf()).unwrap();
        let mut incoming = store.receiving().unwrap();
        let sender = tempfile::tempdir().unwrap();
        let sent = SnapshotStore::new(sender.path().to_path_buf()).unwrap();
        sent.save(&Meta::default(), [(b"k", b"v")].into_iter()).unwrap();
        io::copy(&mut File::open(sent.path()).unwrap(), &mut incoming).unwrap();
        store.adopt(&mut incoming).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("current.snapshot")]);
        let (_, file) = store.open().unwrap().unwrap();
        let mut back = Vec::new();
        read_file(file, |k, v| back.push((k, v))).unwrap();
        assert_eq!(back, vec![(b"k".to_vec(), b"v".to_vec())]);
    }
}
