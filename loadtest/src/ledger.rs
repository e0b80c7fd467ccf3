//! The ledger: every join the server acknowledged (session, user, stage, token, the stage as
//! reported), every leave the scenario made, and what went wrong on the way. After the run
//! [`check`] compares it with the server's state; each disagreement is a [`Violation`].
//!
//! Pure: the server's state comes in as a [`ServerView`] that `verify.rs` fetched.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::api::{BroadcastCounts, Join, SessionInfo, StageCount, StageInfo};

#[derive(Clone, Debug)]
pub struct Entry {
    pub session: SessionInfo,
    pub stage: StageInfo,
    pub token: String,
    /// The scenario itself ended this session with `leave`.
    pub left: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// An acknowledged session the server no longer knows.
    LostJoin {
        session: String,
        user: String,
    },
    /// The server's session differs from what the join answered.
    SessionChanged {
        session: String,
        field: String,
        acked: String,
        server: String,
    },
    /// One user holds two live sessions (a join was not idempotent).
    DuplicateSession {
        user: String,
        first: String,
        second: String,
    },
    /// A join answered `rejoined: true` but with another session than the user's.
    RejoinMismatch {
        user: String,
        expected: String,
        got: String,
    },
    /// A session the scenario left still exists.
    LeaveNotApplied {
        session: String,
    },
    OverCapacity {
        stage: String,
        viewers: u32,
        capacity: u32,
    },
    /// Per-stage or broadcast counts disagree with the ledger (the tool was the only writer).
    CountMismatch {
        what: String,
        server: u64,
        ledger: u64,
    },
    /// The token the join answered with is not valid for its stage.
    BadToken {
        session: String,
        reason: String,
    },
}

#[derive(Default)]
pub struct Ledger {
    pub entries: Vec<Entry>,
    /// user → index of the user's live entry.
    live: HashMap<String, usize>,
    /// Found while recording, before any server query.
    pub early: Vec<Violation>,
}

impl Ledger {
    /// Record an acknowledged join. A second, different live session for the same user is a
    /// duplicate; the same session again is an idempotent rejoin and is recorded once.
    pub fn record(&mut self, join: &Join) {
        let user = &join.session.user_id;
        if let Some(&i) = self.live.get(user) {
            let first = &self.entries[i].session.id;
            if *first == join.session.id {
                return;
            }
            let v = if join.rejoined {
                Violation::RejoinMismatch {
                    user: user.clone(),
                    expected: first.clone(),
                    got: join.session.id.clone(),
                }
            } else {
                Violation::DuplicateSession {
                    user: user.clone(),
                    first: first.clone(),
                    second: join.session.id.clone(),
                }
            };
            self.early.push(v);
        }
        self.live.insert(user.clone(), self.entries.len());
        self.entries.push(Entry {
            session: join.session.clone(),
            stage: join.stage.clone(),
            token: join.token.clone(),
            left: false,
        });
    }

    /// The scenario left this session (the server acknowledged the leave).
    pub fn record_leave(&mut self, session_id: &str) {
        if let Some(i) = self.entries.iter().rposition(|e| e.session.id == session_id) {
            self.entries[i].left = true;
            let user = &self.entries[i].session.user_id;
            if self.live.get(user) == Some(&i) {
                self.live.remove(user);
            }
        }
    }

    /// The live session of a user, if the ledger has one.
    pub fn live_session(&self, user: &str) -> Option<&SessionInfo> {
        self.live.get(user).map(|&i| &self.entries[i].session)
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}

/// The server's state after the run.
#[derive(Clone, Debug, Default)]
pub struct ServerView {
    /// `session(id)` for every session id in the ledger.
    pub sessions: HashMap<String, Option<SessionInfo>>,
    pub stages: Vec<StageCount>,
    pub broadcast: Option<BroadcastCounts>,
}

/// Compare ledger and server. `exclusive`: the scenario was the broadcast's only writer, so
/// counts must match exactly.
pub fn check(ledger: &Ledger, view: &ServerView, exclusive: bool) -> Vec<Violation> {
    let mut out = ledger.early.clone();
    for e in &ledger.entries {
        let id = &e.session.id;
        match (view.sessions.get(id).cloned().flatten(), e.left) {
            (None, false) => out.push(Violation::LostJoin {
                session: id.clone(),
                user: e.session.user_id.clone(),
            }),
            (Some(_), true) => out.push(Violation::LeaveNotApplied { session: id.clone() }),
            (Some(s), false) => {
                for (field, acked, server) in [
                    ("userId", &e.session.user_id, &s.user_id),
                    ("stageId", &e.session.stage_id, &s.stage_id),
                    ("participantId", &e.session.participant_id, &s.participant_id),
                ] {
                    if acked != server {
                        out.push(Violation::SessionChanged {
                            session: id.clone(),
                            field: field.into(),
                            acked: acked.clone(),
                            server: server.clone(),
                        });
                    }
                }
            }
            (None, true) => {}
        }
    }
    for s in &view.stages {
        if s.viewers > s.capacity {
            out.push(Violation::OverCapacity {
                stage: s.id.clone(),
                viewers: s.viewers,
                capacity: s.capacity,
            });
        }
    }
    if exclusive {
        out.extend(count_mismatches(ledger, view));
    }
    out
}

fn count_mismatches(ledger: &Ledger, view: &ServerView) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut per_stage: BTreeMap<&str, u64> = BTreeMap::new();
    for e in ledger.entries.iter().filter(|e| !e.left) {
        *per_stage.entry(e.session.stage_id.as_str()).or_default() += 1;
    }
    for s in &view.stages {
        let ledger_n = per_stage.remove(s.id.as_str()).unwrap_or(0);
        if u64::from(s.viewers) != ledger_n {
            out.push(Violation::CountMismatch {
                what: format!("viewers on stage {}", s.id),
                server: s.viewers.into(),
                ledger: ledger_n,
            });
        }
    }
    for (stage, n) in per_stage {
        out.push(Violation::CountMismatch {
            what: format!("viewers on stage {stage} (not listed by the server)"),
            server: 0,
            ledger: n,
        });
    }
    if let Some(b) = &view.broadcast {
        let live = ledger.live_count() as u64;
        if b.viewers != live {
            out.push(Violation::CountMismatch {
                what: "broadcast viewers".into(),
                server: b.viewers,
                ledger: live,
            });
        }
        // A user who left and joined again may or may not count twice; anything outside
        // [distinct users, distinct sessions] is wrong either way.
        let users: HashSet<&str> = ledger.entries.iter().map(|e| e.session.user_id.as_str()).collect();
        let (lo, hi) = (users.len() as u64, ledger.entries.len() as u64);
        if b.admitted_total < lo || b.admitted_total > hi {
            out.push(Violation::CountMismatch {
                what: format!("broadcast admittedTotal (ledger allows {lo}..={hi})"),
                server: b.admitted_total,
                ledger: lo,
            });
        }
    }
    out
}
