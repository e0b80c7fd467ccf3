//! [`Sessions`] on the state machine's sled tree, with an overlay: the writes of the entries being
//! applied are visible to later entries of the same apply call, and reach sled together in one
//! atomic batch with `last_applied`.

use std::cell::RefCell;
use std::collections::HashMap;

use super::keys;
use crate::fleet::sessions::Sessions;
use crate::fleet::{Millis, Session};

pub struct SledSessions<'t> {
    tree: &'t sled::Tree,
    /// id → new value (`None` = removed) for sessions touched in this apply call.
    overlay: HashMap<String, Option<Session>>,
    /// (broadcast, user) → session id (`None` = removed).
    users: HashMap<(String, String), Option<String>>,
    pub batch: sled::Batch,
    /// First I/O error met; the state machine fails the apply if set.
    error: RefCell<Option<sled::Error>>,
}

impl<'t> SledSessions<'t> {
    pub fn new(tree: &'t sled::Tree) -> Self {
        Self {
            tree,
            overlay: HashMap::new(),
            users: HashMap::new(),
            batch: sled::Batch::default(),
            error: RefCell::new(None),
        }
    }

    pub fn take_error(&self) -> Option<sled::Error> {
        self.error.borrow_mut().take()
    }

    fn note<T>(&self, r: sled::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn stored(&self, id: &str) -> Option<Session> {
        let bytes = self.note(self.tree.get(keys::session(id)))??;
        decode(&bytes)
    }

    /// Visible value of a session: overlay first, then sled.
    fn current(&self, id: &str) -> Option<Session> {
        match self.overlay.get(id) {
            Some(v) => v.clone(),
            None => self.stored(id),
        }
    }

    fn unindex(&mut self, s: &Session) {
        self.batch.remove(keys::session_by_stage(&s.stage_id, &s.id));
        self.batch.remove(keys::session_by_lease(s.lease_until, &s.id));
    }

    /// Ids from an index scan, corrected by the overlay: drop those whose overlay value no longer
    /// matches `still`, add overlay sessions that now match.
    fn merge_index(&self, scanned: Vec<String>, still: impl Fn(&Session) -> bool) -> Vec<String> {
        let mut ids: Vec<String> = scanned
            .into_iter()
            .filter(|id| match self.overlay.get(id) {
                Some(v) => v.as_ref().is_some_and(&still),
                None => true,
            })
            .collect();
        for (id, v) in &self.overlay {
            if v.as_ref().is_some_and(&still) && !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids
    }
}

pub fn decode(bytes: &[u8]) -> Option<Session> {
    serde_json::from_slice(bytes).ok()
}

impl Sessions for SledSessions<'_> {
    fn get(&self, id: &str) -> Option<Session> {
        self.current(id)
    }

    fn by_user(&self, broadcast_id: &str, user_id: &str) -> Option<Session> {
        let key = (broadcast_id.to_string(), user_id.to_string());
        let id = match self.users.get(&key) {
            Some(v) => v.clone()?,
            None => {
                let raw = self.note(self.tree.get(keys::session_by_user(broadcast_id, user_id)))??;
                String::from_utf8(raw.to_vec()).ok()?
            }
        };
        self.current(&id)
    }

    fn put(&mut self, session: Session) {
        if let Some(old) = self.current(&session.id) {
            self.unindex(&old);
        }
        let id = session.id.clone();
        self.batch
            .insert(keys::session(&id), serde_json::to_vec(&session).expect("session json"));
        self.batch.insert(
            keys::session_by_user(&session.broadcast_id, &session.user_id),
            id.as_bytes(),
        );
        self.batch
            .insert(keys::session_by_stage(&session.stage_id, &id), &[][..]);
        self.batch
            .insert(keys::session_by_lease(session.lease_until, &id), &[][..]);
        self.users.insert(
            (session.broadcast_id.clone(), session.user_id.clone()),
            Some(id.clone()),
        );
        self.overlay.insert(id, Some(session));
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let old = self.current(id)?;
        self.unindex(&old);
        self.batch.remove(keys::session(id));
        self.batch
            .remove(keys::session_by_user(&old.broadcast_id, &old.user_id));
        self.users.insert((old.broadcast_id.clone(), old.user_id.clone()), None);
        self.overlay.insert(id.to_string(), None);
        Some(old)
    }

    fn on_stage(&self, stage_id: &str) -> Vec<String> {
        let prefix = keys::stage_sessions_prefix(stage_id);
        let scanned = self
            .tree
            .scan_prefix(&prefix)
            .filter_map(|r| self.note(r))
            .filter_map(|(k, _)| String::from_utf8(k[prefix.len()..].to_vec()).ok())
            .collect();
        self.merge_index(scanned, |s| s.stage_id == stage_id)
    }

    fn expired(&self, now: Millis, limit: usize) -> Vec<String> {
        let start = keys::SESSION_BY_LEASE.to_vec();
        let end = keys::lease_bound(now);
        let scanned = self
            .tree
            .range(start..end)
            .filter_map(|r| self.note(r))
            .filter_map(|(k, _)| String::from_utf8(k[keys::SESSION_BY_LEASE.len() + 8..].to_vec()).ok())
            .take(limit.saturating_add(self.overlay.len()))
            .collect();
        let mut ids = self.merge_index(scanned, |s| s.lease_until < now);
        let lease = |id: &String| self.current(id).map(|s| s.lease_until).unwrap_or(Millis::MAX);
        ids.sort_by_key(|id| (lease(id), id.clone()));
        ids.truncate(limit);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_sessions_keep_their_indexes_in_step_before_and_after_the_batch_lands() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        // within one apply call (overlay only)
        let mut s = SledSessions::new(&tree);
        crate::fleet::sessions::check_sessions_contract(&mut s);
        // across apply calls: what one call wrote, the next reads from sled
        let batch = std::mem::take(&mut s.batch);
        tree.apply_batch(batch).unwrap();
        let s2 = SledSessions::new(&tree);
        assert_eq!(s2.by_user("b", "bob").unwrap().stage_id, "b:1");
        assert!(s2.by_user("b", "alice").is_none());
        assert_eq!(s2.on_stage("b:1").len(), 2);
        assert!(s2.on_stage("b:0").is_empty());
        assert_eq!(s2.expired(1_000, 10).len(), 2);
    }
}
