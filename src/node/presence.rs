//! Renewals: heartbeats (and, later, open subscriptions) mark sessions alive on the node that sees
//! them; every interval the node writes its renewals in commands of up to [`RENEW_CHUNK`]
//! sessions, so Raft entries grow with nodes (and thousands of viewers), not with each viewer.
//! Every node does this; ending lapsed sessions is the leader's
//! (`crate::control::expiry`).

use std::collections::HashSet;
use std::sync::Mutex;

use super::Node;
use crate::clock::now_ms;
use crate::state::proposal;

/// Sessions renewed per command. Applying a renewal rewrites the session's record (~10–15 µs
/// each), and apply is one at a time: 10,000 renewals in one command held every join committed
/// behind it, and the `stats` update it makes, for 100–160 ms. In commands of this size, one
/// after another, a join waits behind one of them at most (~10–15 ms).
const RENEW_CHUNK: usize = 1_000;

#[derive(Default)]
pub struct Presence {
    seen: Mutex<HashSet<String>>,
}

impl Presence {
    pub fn touch(&self, session_id: &str) {
        self.seen.lock().expect("presence set").insert(session_id.to_string());
    }

    fn drain(&self) -> Vec<String> {
        self.seen.lock().expect("presence set").drain().collect()
    }
}

impl Node {
    /// Write the renewals seen since the last call, [`RENEW_CHUNK`] sessions per command, each
    /// applied before the next is proposed (so writes that come meanwhile go in between).
    pub async fn flush_renewals(&self) {
        let mut renewals = self.presence.drain();
        // An open assignment subscription keeps its session alive, like a heartbeat each interval.
        renewals.extend(self.live.open_sessions());
        for session_ids in in_chunks(renewals) {
            let renew = proposal::Renew {
                session_ids,
                now: now_ms(),
            };
            if let Err(e) = self.store.propose(renew).await {
                tracing::warn!(error = %e, "writing session renewals failed");
                return;
            }
        }
    }
}

/// Each session once, sorted, in commands of at most [`RENEW_CHUNK`].
fn in_chunks(mut ids: Vec<String>) -> Vec<Vec<String>> {
    ids.sort_unstable();
    ids.dedup();
    ids.chunks(RENEW_CHUNK).map(<[String]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_go_once_each_in_commands_of_at_most_a_chunk() {
        assert!(in_chunks(Vec::new()).is_empty(), "nothing to renew, no command");
        let ids: Vec<String> = (0..2 * RENEW_CHUNK + 7).rev().map(|i| format!("s{i:05}")).collect();
        let mut twice = ids.clone();
        twice.extend(ids[..10].iter().cloned());
        let chunks = in_chunks(twice);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [RENEW_CHUNK, RENEW_CHUNK, 7]
        );
        let all: Vec<String> = chunks.concat();
        let mut want = ids;
        want.sort();
        assert_eq!(all, want, "every session once, in order, none left behind");
    }
}
