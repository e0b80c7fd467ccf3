//! Drift between the ledger and IVS, pure: from one stage's sessions and the participants IVS
//! lists in its current session, the seats whose viewer never connected within the grace, and the
//! participants IVS has that the ledger does not (hosts and their replicas excepted). The leader's
//! drift loop (`control::drift`) samples stages within the budget's spare calls and keeps the last
//! report per stage for metrics and the API.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Millis, Session};

/// One stage's drift as last sampled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// Sessions seated longer than the grace whose participant IVS never saw join.
    pub never_connected: Vec<String>,
    /// Viewer participants connected in IVS that hold no seat here.
    pub unknown: u32,
    pub sampled_at: Millis,
}

/// The last report per stage, shared by the leader's drift loop (writes) and the API.
pub type Reports = std::sync::Mutex<BTreeMap<String, Drift>>;

/// What IVS lists for a stage's current session.
pub struct Listed {
    /// Every participant id that joined (connected now or not).
    pub joined: BTreeSet<String>,
    /// Participant ids connected now.
    pub connected: BTreeSet<String>,
    /// Participant ids of hosts and replicas (publishers): not viewers, never drift.
    pub publishers: BTreeSet<String>,
}

pub fn compare(sessions: &[Session], listed: &Listed, now: Millis, grace_ms: i64) -> Drift {
    let never_connected = sessions
        .iter()
        .filter(|s| now - s.joined_at >= grace_ms && !listed.joined.contains(&s.participant_id))
        .map(|s| s.id.clone())
        .collect();
    let seated: BTreeSet<&str> = sessions.iter().map(|s| s.participant_id.as_str()).collect();
    let unknown = listed
        .connected
        .iter()
        .filter(|p| !seated.contains(p.as_str()) && !listed.publishers.contains(*p))
        .count() as u32;
    Drift {
        never_connected,
        unknown,
        sampled_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, joined_at: Millis) -> Session {
        Session {
            id: id.into(),
            broadcast_id: "b".into(),
            user_id: id.into(),
            stage_id: "b:0".into(),
            participant_id: format!("p-{id}"),
            attributes: Default::default(),
            joined_at,
            last_seen: joined_at,
            lease_until: joined_at + 90_000,
            client: None,
        }
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn seats_never_used_past_the_grace_and_strangers_in_ivs_are_drift() {
        let sessions = [session("a", 0), session("b", 0), session("late", 9_000)];
        let listed = Listed {
            joined: set(&["p-a", "p-x", "host-s0"]),
            connected: set(&["p-a", "p-x", "host-s0"]),
            publishers: set(&["host-s0"]),
        };
        let d = compare(&sessions, &listed, 10_000, 5_000);
        assert_eq!(
            d.never_connected,
            vec!["b".to_string()],
            "late is still within its grace"
        );
        assert_eq!(d.unknown, 1, "p-x holds no seat; the host is not a viewer");
    }
}
