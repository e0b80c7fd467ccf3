//! [`Sessions`] on the state machine's sled tree: one record per session (`s/<id>`), and the
//! lookups by user, by stage and by lease, and the seat counts per client network, in memory ([`SessionIndex`]), rebuilt from those records
//! when the state machine opens or installs a snapshot. A new viewer is one sled key, not four, and
//! no sled read at all.
//!
//! Writes of the entries being applied go to an overlay, visible to later entries of the same
//! apply call, and reach sled together with `last_applied`, all or nothing (`frozen`). The index changes
//! in place under the state machine's write lock, which is held until that batch has landed.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::keys;
use crate::fleet::sessions::Sessions;
use crate::fleet::{Millis, Session};

/// What the index keeps of one session. Ids are shared (`Arc<str>`) between the maps, and a
/// broadcast's or a stage's id is the one its map key holds: a new session costs two small
/// allocations here (its id and its user id), not one per map.
#[derive(Debug)]
struct Indexed {
    broadcast_id: Arc<str>,
    user_id: Arc<str>,
    stage_id: Arc<str>,
    lease_until: Millis,
    client: Option<String>,
}

/// Session ids are drawn by the nodes (`ivs::token::session_id`), never chosen by a client, so
/// the maps keyed by them hash fast; a user id is a client's choice, so those maps keep the std
/// hasher (SipHash, seeded per process) against crafted collisions.
type Fast = foldhash::fast::RandomState;

/// Every lookup of sessions other than by id, in memory.
#[derive(Debug, Default)]
pub struct SessionIndex {
    by_id: HashMap<Arc<str>, Indexed, Fast>,
    /// broadcast → user → session (nested, so a lookup by `&str` allocates nothing).
    by_user: HashMap<Arc<str>, HashMap<Arc<str>, Arc<str>>>,
    /// Unordered (O(1) to add a viewer to a big stage); [`Self::on_stage`] sorts, so every node
    /// applies the same transitions in the same order.
    by_stage: HashMap<Arc<str>, HashSet<Arc<str>, Fast>>,
    by_lease: BTreeSet<(Millis, Arc<str>)>,
    /// broadcast → client network → sessions naming it (no zero counts kept).
    by_client: HashMap<String, HashMap<String, u32>>,
}

/// `key` as `map` already holds it (no allocation), or a new one.
fn shared_key<V, S: std::hash::BuildHasher>(map: &HashMap<Arc<str>, V, S>, key: &str) -> Arc<str> {
    map.get_key_value(key).map_or_else(|| key.into(), |(k, _)| k.clone())
}

impl SessionIndex {
    /// Rebuild from the session records in `tree`.
    pub fn load(tree: &sled::Tree) -> sled::Result<Self> {
        let mut index = Self::default();
        for r in tree.scan_prefix(keys::SESSION) {
            let (_, v) = r?;
            if let Some(s) = decode(&v) {
                index.insert(&s);
            }
        }
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn id_by_user(&self, broadcast_id: &str, user_id: &str) -> Option<&str> {
        self.by_user.get(broadcast_id)?.get(user_id).map(|id| &**id)
    }

    /// Sorted by id.
    pub fn on_stage(&self, stage_id: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .by_stage
            .get(stage_id)
            .map(|ids| ids.iter().map(|id| id.to_string()).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Sessions whose lease ended before `now`, oldest first, at most `limit`.
    pub fn expired(&self, now: Millis, limit: usize) -> Vec<String> {
        crate::fleet::sessions::lapsed(&self.by_lease, now, limit)
    }

    pub fn client_seats(&self, broadcast_id: &str, client: &str) -> u32 {
        self.by_client
            .get(broadcast_id)
            .and_then(|clients| clients.get(client))
            .copied()
            .unwrap_or(0)
    }

    fn insert(&mut self, s: &Session) {
        // A renewal changes the lease alone: move it in the lease order and leave the rest.
        if let Some((id, old)) = self.by_id.get_key_value(s.id.as_str())
            && *old.broadcast_id == *s.broadcast_id
            && *old.user_id == *s.user_id
            && *old.stage_id == *s.stage_id
            && old.client == s.client
        {
            if old.lease_until != s.lease_until {
                let moved = (old.lease_until, id.clone());
                self.by_lease.remove(&moved);
                if let Some(old) = self.by_id.get_mut(&moved.1) {
                    old.lease_until = s.lease_until;
                }
                self.by_lease.insert((s.lease_until, moved.1));
            }
            return;
        }
        self.remove(&s.id);
        let id: Arc<str> = s.id.as_str().into();
        let user_id: Arc<str> = s.user_id.as_str().into();
        let broadcast_id = shared_key(&self.by_user, &s.broadcast_id);
        self.by_user
            .entry(broadcast_id.clone())
            .or_default()
            .insert(user_id.clone(), id.clone());
        let stage_id = shared_key(&self.by_stage, &s.stage_id);
        self.by_stage.entry(stage_id.clone()).or_default().insert(id.clone());
        self.by_lease.insert((s.lease_until, id.clone()));
        if let Some(client) = &s.client {
            *self
                .by_client
                .entry(s.broadcast_id.clone())
                .or_default()
                .entry(client.clone())
                .or_default() += 1;
        }
        self.by_id.insert(
            id,
            Indexed {
                broadcast_id,
                user_id,
                stage_id,
                lease_until: s.lease_until,
                client: s.client.clone(),
            },
        );
    }

    fn remove(&mut self, id: &str) {
        let Some((id, old)) = self.by_id.remove_entry(id) else {
            return;
        };
        if let Some(users) = self.by_user.get_mut(&old.broadcast_id) {
            if users.get(&old.user_id).is_some_and(|v| *v == id) {
                users.remove(&old.user_id);
            }
            if users.is_empty() {
                self.by_user.remove(&old.broadcast_id);
            }
        }
        if let Some(ids) = self.by_stage.get_mut(&old.stage_id) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_stage.remove(&old.stage_id);
            }
        }
        self.by_lease.remove(&(old.lease_until, id));
        if let (Some(client), Some(clients)) = (&old.client, self.by_client.get_mut(&*old.broadcast_id)) {
            if let Some(n) = clients.get_mut(client) {
                *n -= 1;
                if *n == 0 {
                    clients.remove(client);
                }
            }
            if clients.is_empty() {
                self.by_client.remove(&*old.broadcast_id);
            }
        }
    }
}

pub struct SledSessions<'t> {
    tree: &'t sled::Tree,
    index: &'t mut SessionIndex,
    /// id → new value (`None` = removed) for sessions touched in this apply call.
    overlay: HashMap<String, Option<Session>>,
    pub batch: super::frozen::Writes,
    /// First I/O error met; the state machine fails the apply if set.
    error: RefCell<Option<sled::Error>>,
}

impl<'t> SledSessions<'t> {
    pub fn new(tree: &'t sled::Tree, index: &'t mut SessionIndex) -> Self {
        Self {
            tree,
            index,
            overlay: HashMap::new(),
            batch: super::frozen::Writes::default(),
            error: RefCell::new(None),
        }
    }

    pub fn take_error(&self) -> Option<sled::Error> {
        self.error.borrow_mut().take()
    }

    /// Visible value of a session: overlay first, then sled (only for ids the index knows).
    fn current(&self, id: &str) -> Option<Session> {
        match self.overlay.get(id) {
            Some(v) => v.clone(),
            None if self.index.contains(id) => match stored(self.tree, id) {
                Ok(s) => s,
                Err(e) => {
                    self.error.borrow_mut().get_or_insert(e);
                    None
                }
            },
            None => None,
        }
    }
}

/// The session record `id` as last applied.
pub fn stored(tree: &sled::Tree, id: &str) -> sled::Result<Option<Session>> {
    Ok(tree.get(keys::session(id))?.and_then(|b| decode(&b)))
}

pub fn decode(bytes: &[u8]) -> Option<Session> {
    serde_json::from_slice(bytes).ok()
}

impl Sessions for SledSessions<'_> {
    fn get(&self, id: &str) -> Option<Session> {
        self.current(id)
    }

    fn by_user(&self, broadcast_id: &str, user_id: &str) -> Option<Session> {
        let id = self.index.id_by_user(broadcast_id, user_id)?;
        self.current(id)
    }

    fn put(&mut self, session: Session) {
        self.batch.insert(
            keys::session(&session.id),
            serde_json::to_vec(&session).expect("session json"),
        );
        self.index.insert(&session);
        self.overlay.insert(session.id.clone(), Some(session));
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let old = self.current(id)?;
        self.batch.remove(keys::session(id));
        self.index.remove(id);
        self.overlay.insert(id.to_string(), None);
        Some(old)
    }

    fn on_stage(&self, stage_id: &str) -> Vec<String> {
        self.index.on_stage(stage_id)
    }

    fn expired(&self, now: Millis, limit: usize) -> Vec<String> {
        self.index.expired(now, limit)
    }

    fn client_seats(&self, broadcast_id: &str, client: &str) -> u32 {
        self.index.client_seats(broadcast_id, client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_sessions_keep_their_indexes_in_step_before_and_after_the_batch_lands() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        let mut index = SessionIndex::default();
        // within one apply call (overlay only)
        let mut s = SledSessions::new(&tree, &mut index);
        crate::fleet::sessions::check_sessions_contract(&mut s);
        // across apply calls: what one call wrote, the next reads from sled
        let batch = std::mem::take(&mut s.batch);
        tree.apply_batch(batch.into_batch()).unwrap();
        let check = |index: &mut SessionIndex| {
            let s2 = SledSessions::new(&tree, index);
            assert_eq!(s2.by_user("b", "bob").unwrap().stage_id, "b:1");
            assert!(s2.by_user("b", "alice").is_none());
            assert_eq!(s2.on_stage("b:1"), ["2", "3", "4", "9"]);
            assert!(s2.on_stage("b:0").is_empty());
            assert_eq!(s2.expired(450, 10), ["3", "2"], "oldest lease first");
            assert_eq!(s2.expired(1_000, 10).len(), 4);
            assert_eq!(s2.client_seats("b", "10.0.0.0"), 1);
            assert_eq!(s2.client_seats("b2", "10.0.0.0"), 1);
            assert_eq!(s2.client_seats("b", "10.0.1.0"), 0, "a removed session frees its count");
        };
        check(&mut index);
        // and an index rebuilt from the records alone (a restart) answers the same
        let mut rebuilt = SessionIndex::load(&tree).unwrap();
        assert_eq!(rebuilt.len(), index.len());
        check(&mut rebuilt);
    }

    #[test]
    fn a_new_session_is_one_sled_key() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        let mut index = SessionIndex::default();
        let mut s = SledSessions::new(&tree, &mut index);
        s.put(Session {
            id: "s1".into(),
            broadcast_id: "b".into(),
            user_id: "u".into(),
            stage_id: "b:0".into(),
            participant_id: "p".into(),
            attributes: Default::default(),
            joined_at: 0,
            last_seen: 0,
            lease_until: 10,
            client: None,
        });
        let batch = std::mem::take(&mut s.batch);
        tree.apply_batch(batch.into_batch()).unwrap();
        assert_eq!(tree.len(), 1);
        assert!(stored(&tree, "s1").unwrap().is_some());
    }
}
