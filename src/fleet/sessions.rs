//! Where sessions live, as the transitions see it. The state machine implements [`Sessions`] on
//! sled (with an overlay for the entry being applied); [`MemorySessions`] is the twin the property
//! tests use. Both must behave the same: that is what the shared tests below check.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Millis, Session};

pub trait Sessions {
    fn get(&self, id: &str) -> Option<Session>;
    fn by_user(&self, broadcast_id: &str, user_id: &str) -> Option<Session>;
    /// Insert or replace, keeping every index in step.
    fn put(&mut self, session: Session);
    fn remove(&mut self, id: &str) -> Option<Session>;
    /// Ids of the sessions seated on `stage_id`, sorted (transitions must not depend on hashing).
    fn on_stage(&self, stage_id: &str) -> Vec<String>;
    /// Ids of the sessions whose lease ended before `now`, at most `limit`.
    fn expired(&self, now: Millis, limit: usize) -> Vec<String>;
    /// Sessions in `broadcast_id` whose record names `client` (see [`Session::client`]).
    fn client_seats(&self, broadcast_id: &str, client: &str) -> u32;
}

#[derive(Clone, Debug, Default)]
pub struct MemorySessions {
    by_id: BTreeMap<String, Session>,
    by_user: BTreeMap<(String, String), String>,
    by_stage: BTreeSet<(String, String)>,
    by_lease: BTreeSet<(Millis, String)>,
    /// (broadcast, client) → sessions naming that client; no zero entries.
    by_client: BTreeMap<(String, String), u32>,
}

impl MemorySessions {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn all(&self) -> impl Iterator<Item = &Session> {
        self.by_id.values()
    }
}

impl Sessions for MemorySessions {
    fn get(&self, id: &str) -> Option<Session> {
        self.by_id.get(id).cloned()
    }

    fn by_user(&self, broadcast_id: &str, user_id: &str) -> Option<Session> {
        let id = self.by_user.get(&(broadcast_id.to_string(), user_id.to_string()))?;
        self.get(id)
    }

    fn put(&mut self, session: Session) {
        self.remove(&session.id);
        self.by_user.insert(
            (session.broadcast_id.clone(), session.user_id.clone()),
            session.id.clone(),
        );
        self.by_stage.insert((session.stage_id.clone(), session.id.clone()));
        self.by_lease.insert((session.lease_until, session.id.clone()));
        if let Some(client) = &session.client {
            *self
                .by_client
                .entry((session.broadcast_id.clone(), client.clone()))
                .or_default() += 1;
        }
        self.by_id.insert(session.id.clone(), session);
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let s = self.by_id.remove(id)?;
        self.by_user.remove(&(s.broadcast_id.clone(), s.user_id.clone()));
        self.by_stage.remove(&(s.stage_id.clone(), s.id.clone()));
        self.by_lease.remove(&(s.lease_until, s.id.clone()));
        if let Some(client) = &s.client {
            let key = (s.broadcast_id.clone(), client.clone());
            if let Some(n) = self.by_client.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.by_client.remove(&key);
                }
            }
        }
        Some(s)
    }

    fn on_stage(&self, stage_id: &str) -> Vec<String> {
        self.by_stage
            .iter()
            .filter(|(st, _)| st == stage_id)
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn expired(&self, now: Millis, limit: usize) -> Vec<String> {
        lapsed(&self.by_lease, now, limit)
    }

    fn client_seats(&self, broadcast_id: &str, client: &str) -> u32 {
        self.by_client
            .get(&(broadcast_id.to_string(), client.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// From a (lease end, session id) index: the ids whose lease ended before `now`, oldest first, at
/// most `limit`.
pub fn lapsed<Id: AsRef<str>>(by_lease: &BTreeSet<(Millis, Id)>, now: Millis, limit: usize) -> Vec<String> {
    by_lease
        .iter()
        .take_while(|(t, _)| *t < now)
        .take(limit)
        .map(|(_, id)| id.as_ref().to_string())
        .collect()
}

/// Behaviour every [`Sessions`] implementation must show; run against each twin.
#[cfg(test)]
pub fn check_sessions_contract(store: &mut dyn Sessions) {
    let s = |id: &str, user: &str, stage: &str, lease: Millis| Session {
        id: id.into(),
        broadcast_id: "b".into(),
        user_id: user.into(),
        stage_id: stage.into(),
        participant_id: format!("p{id}"),
        attributes: Default::default(),
        joined_at: 0,
        last_seen: 0,
        lease_until: lease,
        client: None,
    };
    store.put(s("1", "alice", "b:0", 100));
    store.put(s("2", "bob", "b:0", 200));
    store.put(s("3", "carol", "b:1", 300));
    assert_eq!(store.by_user("b", "bob").unwrap().id, "2");
    assert!(store.by_user("other", "bob").is_none());
    let mut on0 = store.on_stage("b:0");
    on0.sort();
    assert_eq!(on0, ["1", "2"]);
    assert_eq!(store.expired(250, 10), ["1", "2"]);
    assert_eq!(store.expired(250, 1).len(), 1);
    // moving a session re-indexes it
    store.put(s("2", "bob", "b:1", 400));
    assert_eq!(store.on_stage("b:0"), ["1"]);
    assert_eq!(store.expired(250, 10), ["1"]);
    // a renewal (the lease alone changes) moves it in the lease order, and only there
    store.put(s("1", "alice", "b:0", 600));
    assert!(store.expired(250, 10).is_empty());
    assert_eq!(store.expired(650, 10), ["3", "2", "1"]);
    assert_eq!(store.on_stage("b:0"), ["1"]);
    assert_eq!(store.by_user("b", "alice").unwrap().lease_until, 600);
    assert_eq!(store.remove("1").unwrap().user_id, "alice");
    assert!(store.by_user("b", "alice").is_none());
    assert!(store.get("1").is_none());
    assert!(store.on_stage("b:0").is_empty());
    store.put(s("9", "dave", "b:1", 500));
    store.put(s("4", "erin", "b:1", 500));
    assert_eq!(store.on_stage("b:1"), ["2", "3", "4", "9"], "sorted by id");
    // seats per (broadcast, client network): only sessions that name a client count
    let seat = |id: &str, broadcast: &str, client: Option<&str>| Session {
        broadcast_id: broadcast.into(),
        client: client.map(Into::into),
        ..s(id, &format!("user-{id}"), "b:2", 2_000)
    };
    store.put(seat("c1", "b", Some("10.0.0.0")));
    store.put(seat("c2", "b", Some("10.0.0.0")));
    store.put(seat("c3", "b", Some("10.0.1.0")));
    store.put(seat("c4", "b2", Some("10.0.0.0")));
    store.put(seat("c5", "b", None));
    assert_eq!(store.client_seats("b", "10.0.0.0"), 2);
    assert_eq!(store.client_seats("b", "10.0.1.0"), 1);
    assert_eq!(store.client_seats("b2", "10.0.0.0"), 1, "counted per broadcast");
    assert_eq!(store.client_seats("b", "10.0.2.0"), 0);
    // replacing a record (a renewal) does not count it twice; removing it frees the count
    store.put(Session {
        lease_until: 3_000,
        ..seat("c1", "b", Some("10.0.0.0"))
    });
    assert_eq!(store.client_seats("b", "10.0.0.0"), 2);
    assert_eq!(store.remove("c2").unwrap().client.as_deref(), Some("10.0.0.0"));
    assert_eq!(store.client_seats("b", "10.0.0.0"), 1);
    assert_eq!(store.remove("c3").unwrap().id, "c3");
    assert_eq!(store.client_seats("b", "10.0.1.0"), 0);
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_sessions_keep_their_indexes_in_step() {
        super::check_sessions_contract(&mut super::MemorySessions::default());
    }
}
