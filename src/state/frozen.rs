//! A point-in-time copy of the state machine's tree, read while apply goes on: what lets a
//! snapshot be built without pausing apply for longer than it takes to set a flag.
//!
//! sled has no snapshots of its own, and iterating a tree while it is written sees some writes
//! and not others. So while a snapshot is being read, apply first records the value each key
//! it is about to write had before (its *pre-image*, once per key: the value at the snapshot
//! point), then writes. The reader takes each key's pre-image when there is one and the tree's
//! value otherwise; keys removed since the snapshot point are added back from their pre-images at
//! the end. Memory is bounded by the keys written while one snapshot is read, not by the state.
//!
//! [`Writes`] is a sled batch that also remembers its keys (a `sled::Batch` cannot be read back).

use std::collections::HashMap;
use std::sync::Mutex;

use sled::IVec;

/// A batch of writes for the state tree, knowing which keys it touches.
#[derive(Default)]
pub struct Writes {
    batch: sled::Batch,
    keys: Vec<IVec>,
}

impl Writes {
    pub fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        let key = key.into();
        self.keys.push(key.clone());
        self.batch.insert(key, value);
    }

    pub fn remove(&mut self, key: impl Into<IVec>) {
        let key = key.into();
        self.keys.push(key.clone());
        self.batch.remove(key);
    }

    pub fn into_batch(self) -> sled::Batch {
        self.batch
    }
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
    pub fn apply(&self, tree: &sled::Tree, writes: Writes) -> sled::Result<()> {
        {
            let mut reading = self.reading.lock().expect("freezer lock");
            if let Some(pre) = reading.as_mut() {
                for key in writes.keys {
                    if let std::collections::hash_map::Entry::Vacant(slot) = pre.entry(key) {
                        let value = tree.get(slot.key())?;
                        slot.insert(PreImage { value, given: false });
                    }
                }
            }
        }
        tree.apply_batch(writes.batch)
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

    #[test]
    fn a_reader_sees_the_tree_as_it_was_at_the_freeze_whatever_apply_writes_meanwhile() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let f = Freezer::default();
        let mut w = Writes::default();
        for k in ["a", "b", "c", "d"] {
            w.insert(k, format!("{k}0").as_bytes());
        }
        f.apply(&tree, w).unwrap();

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
            f.apply(&tree, w).unwrap();
        });
        let want: Vec<(String, String)> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| (k.to_string(), format!("{k}0")))
            .collect();
        assert_eq!(got, want);

        // Recording stopped with the read: later writes are plain writes.
        let mut w = Writes::default();
        w.insert("e", &b"e0"[..]);
        f.apply(&tree, w).unwrap();
        assert!(f.reading.lock().unwrap().is_none());
        assert_eq!(tree.get("c").unwrap().unwrap(), &b"c2"[..]);
    }
}
