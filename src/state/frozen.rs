//! The state machine's tree: how an apply's writes reach it, and a point-in-time copy of it read
//! while apply goes on (what lets a snapshot be built without pausing apply for longer than it
//! takes to set a flag).
//!
//! **Writing.** An apply's writes must land all or none: the data and `last_applied` may never
//! disagree after a crash. A `sled::Batch` gives that, but sled 0.34 writes its log buffer out and
//! waits for the disk twice for every batch (it seals the buffer before and after the batch's
//! marker), which on every node for every log entry was most of the disk work of a join storm.
//! So an apply writes one *redo record* first (every write of the apply, in order, under
//! `keys::REDO` in a tree of its own, `sm_redo`, so that a large record is not rewritten with
//! the state's pages) and then the writes themselves as plain inserts. sled recovers a prefix of
//! its log after a crash (one log for all trees), so either the redo record of the last apply is
//! there, or none of that apply's writes is; [`recover`] writes the record's writes again when the
//! tree is opened (they are puts and removes of final values: writing them twice is the same as
//! once) and the tree is exactly "as of `last_applied`" again. Nothing here waits for the disk;
//! durability is the log's flush. Whoever replaces the state whole (a snapshot install) clears the
//! redo tree first.
//!
//! **Reading at a point in time.** sled has no snapshots of its own, and iterating a tree while it
//! is written sees some writes and not others. So while a snapshot is being read, apply first
//! records the value each key it is about to write had before (its *pre-image*, once per key: the
//! value at the snapshot point), then writes. The reader takes each key's pre-image when there is
//! one and the tree's value otherwise; keys removed since the snapshot point are added back from
//! their pre-images at the end. Memory is bounded by the keys written while one snapshot is read,
//! not by the state.

use std::collections::HashMap;
use std::sync::Mutex;

use sled::IVec;

use super::keys;

/// The writes of one apply, in order (`None`: remove the key).
#[derive(Default)]
pub struct Writes {
    ops: Vec<(IVec, Option<IVec>)>,
}

impl Writes {
    pub fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<IVec>) {
        self.ops.push((key.into(), None));
    }

    pub fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }

    /// The redo record: `n`, then per write `key_len key (0 | 1 value_len value)`, lengths as
    /// little-endian u32.
    fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .ops
            .iter()
            .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
            .sum();
        let mut out = Vec::with_capacity(4 + size);
        let len = |n: usize| u32::try_from(n).expect("a state record under 4 GiB").to_le_bytes();
        out.extend_from_slice(&len(self.ops.len()));
        for (k, v) in &self.ops {
            out.extend_from_slice(&len(k.len()));
            out.extend_from_slice(k);
            match v {
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&len(v.len()));
                    out.extend_from_slice(v);
                }
                None => out.push(0),
            }
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
            *bytes = rest;
            Some(head)
        }
        fn len(bytes: &mut &[u8]) -> Option<usize> {
            Some(u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?) as usize)
        }
        let n = len(&mut bytes)?;
        let mut ops = Vec::with_capacity(n.min(bytes.len()));
        for _ in 0..n {
            let key_len = len(&mut bytes)?;
            let key = IVec::from(take(&mut bytes, key_len)?);
            let value = match take(&mut bytes, 1)?[0] {
                0 => None,
                1 => {
                    let value_len = len(&mut bytes)?;
                    Some(IVec::from(take(&mut bytes, value_len)?))
                }
                _ => return None,
            };
            ops.push((key, value));
        }
        bytes.is_empty().then_some(Writes { ops })
    }

    /// The redo record, then every write as a plain insert or remove.
    fn write(&self, tree: &sled::Tree, redo: &sled::Tree) -> sled::Result<()> {
        redo.insert(keys::REDO, self.encode())?;
        self.write_through(tree)
    }

    fn write_through(&self, tree: &sled::Tree) -> sled::Result<()> {
        for (k, v) in &self.ops {
            match v {
                Some(v) => tree.insert(k, v.clone())?,
                None => tree.remove(k)?,
            };
        }
        Ok(())
    }
}

/// When the tree is opened: finish the last apply a crash may have cut short by writing its redo
/// record's writes again. Returns how many writes that was.
pub fn recover(tree: &sled::Tree, redo: &sled::Tree) -> sled::Result<usize> {
    let Some(record) = redo.get(keys::REDO)? else {
        return Ok(0);
    };
    let writes = Writes::decode(&record).ok_or_else(|| {
        sled::Error::ReportableBug("the state's redo record is unreadable (written by a newer stagefleet?)".into())
    })?;
    writes.write_through(tree)?;
    Ok(writes.ops.len())
}

/// A key's value at the snapshot point (`None`: it did not exist) and whether the reader has
/// given it out already.
struct PreImage {
    value: Option<IVec>,
    given: bool,
}

/// The pre-images of the snapshot being read, if one is.
#[derive(Default)]
pub struct Freezer {
    reading: Mutex<Option<HashMap<IVec, PreImage>>>,
}

impl Freezer {
    /// The snapshot point: call with apply paused (under the apply lock).
    pub fn freeze(&self) {
        *self.reading.lock().expect("freezer lock") = Some(HashMap::new());
    }

    /// Write `writes` to `tree`, first keeping the pre-image of every key a reader still needs.
    pub fn apply(&self, tree: &sled::Tree, redo: &sled::Tree, writes: Writes) -> sled::Result<()> {
        {
            let mut reading = self.reading.lock().expect("freezer lock");
            if let Some(pre) = reading.as_mut() {
                for (key, _) in &writes.ops {
                    if let std::collections::hash_map::Entry::Vacant(slot) = pre.entry(key.clone()) {
                        let value = tree.get(slot.key())?;
                        slot.insert(PreImage { value, given: false });
                    }
                }
            }
        }
        writes.write(tree, redo)
    }

    /// Every pair of `tree` as of the last [`Freezer::freeze`], one at a time, then stop
    /// recording. A key may come twice with the same value (a write landed after the reader
    /// passed it); loading the pairs into a tree makes that harmless.
    pub fn read<'a>(&'a self, tree: &'a sled::Tree) -> impl Iterator<Item = sled::Result<(IVec, IVec)>> + 'a {
        let current = tree.iter().filter_map(move |pair| {
            let (key, value) = match pair {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            let mut reading = self.reading.lock().expect("freezer lock");
            match reading.as_mut().and_then(|pre| pre.get_mut(&key)) {
                Some(pre) => {
                    pre.given = true;
                    pre.value.clone().map(|v| Ok((key, v)))
                }
                None => Some(Ok((key, value))),
            }
        });
        // Then what was removed (or rewritten unseen) since the snapshot point.
        let mut rest: Option<std::vec::IntoIter<(IVec, IVec)>> = None;
        let removed = std::iter::from_fn(move || {
            let rest = rest.get_or_insert_with(|| {
                let pre = self.reading.lock().expect("freezer lock").take().unwrap_or_default();
                let left: Vec<(IVec, IVec)> = pre
                    .into_iter()
                    .filter(|(_, p)| !p.given)
                    .filter_map(|(k, p)| p.value.map(|v| (k, v)))
                    .collect();
                left.into_iter()
            });
            rest.next().map(Ok)
        });
        current.chain(removed)
    }

    /// Stop recording (a reader gave up).
    pub fn thaw(&self) {
        self.reading.lock().expect("freezer lock").take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(f: &Freezer, tree: &sled::Tree, mut between: impl FnMut(usize)) -> Vec<(String, String)> {
        let mut out = vec![];
        for (i, p) in f.read(tree).enumerate() {
            let (k, v) = p.unwrap();
            out.push((
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ));
            between(i);
        }
        out.sort();
        out.dedup();
        out
    }

    fn contents(tree: &sled::Tree) -> Vec<(IVec, IVec)> {
        tree.iter().map(|p| p.unwrap()).collect()
    }

    /// A state tree, its redo tree and a freezer, on a temporary database.
    fn fresh() -> (sled::Db, sled::Tree, sled::Tree, Freezer) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (tree, redo) = (db.open_tree("t").unwrap(), db.open_tree("r").unwrap());
        (db, tree, redo, Freezer::default())
    }

    #[test]
    fn an_apply_cut_short_by_a_crash_is_finished_when_the_tree_is_opened() {
        let (db, tree, redo, f) = fresh();
        let mut first = Writes::default();
        first.insert("a", &b"a0"[..]);
        first.insert("b", &b"b0"[..]);
        first.insert(keys::APPLIED, &b"1"[..]);
        f.apply(&tree, &redo, first).unwrap();
        // Opening after a complete apply changes nothing, removes included.
        let mut second = Writes::default();
        second.insert("a", &b"a1"[..]);
        second.remove("b");
        second.insert("c", &b""[..]);
        second.remove("c");
        second.insert("c", &b"c1"[..]);
        second.insert(keys::APPLIED, &b"2"[..]);
        let (whole, whole_redo) = (db.open_tree("whole").unwrap(), db.open_tree("whole_r").unwrap());
        second.write(&whole, &whole_redo).unwrap();
        let done = contents(&whole);
        assert_eq!(recover(&whole, &whole_redo).unwrap(), 6);
        assert_eq!(contents(&whole), done);
        // A crash after the redo record and the first write of the second apply: what sled
        // recovers is a prefix of its log, so this is the worst it can leave.
        redo.insert(keys::REDO, second.encode()).unwrap();
        tree.insert("a", &b"a1"[..]).unwrap();
        assert_eq!(
            tree.get(keys::APPLIED).unwrap().unwrap(),
            &b"1"[..],
            "torn: data and last_applied disagree"
        );
        recover(&tree, &redo).unwrap();
        assert_eq!(contents(&tree), done, "the second apply, whole");
        // And a record that cannot be read is an error, not a silent half state.
        redo.insert(keys::REDO, &b"\x05\0\0\0garbage"[..]).unwrap();
        assert!(recover(&tree, &redo).is_err());
    }

    #[test]
    fn a_reader_sees_the_tree_as_it_was_at_the_freeze_whatever_apply_writes_meanwhile() {
        let (_db, tree, redo, f) = fresh();
        let mut w = Writes::default();
        for k in ["a", "b", "c", "d"] {
            w.insert(k, format!("{k}0").as_bytes());
        }
        f.apply(&tree, &redo, w).unwrap();

        f.freeze();
        // Writes land while the reader is at every point of the tree: before, behind and ahead.
        let got = pairs(&f, &tree, |i| {
            let mut w = Writes::default();
            match i {
                0 => {
                    w.insert("a", &b"a1"[..]); // already read
                    w.insert("d", &b"d1"[..]); // not read yet
                    w.remove("c"); // not read yet: removed
                    w.insert("bb", &b"new"[..]); // did not exist at the freeze
                }
                1 => {
                    w.insert("d", &b"d2"[..]);
                    w.insert("c", &b"c2"[..]); // back, with another value
                }
                _ => {}
            }
            f.apply(&tree, &redo, w).unwrap();
        });
        let want: Vec<(String, String)> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| (k.to_string(), format!("{k}0")))
            .collect();
        assert_eq!(got, want);

        // Recording stopped with the read: later writes are plain writes.
        let mut w = Writes::default();
        w.insert("e", &b"e0"[..]);
        f.apply(&tree, &redo, w).unwrap();
        assert!(f.reading.lock().unwrap().is_none());
        assert_eq!(tree.get("c").unwrap().unwrap(), &b"c2"[..]);
    }
}
