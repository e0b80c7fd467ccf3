//! The emulator's pure in-memory model: stages with their sessions and participants, public keys,
//! tokens it issued, and replications. No I/O, no clock: callers pass `now` (Unix seconds).
//!
//! Only stages, keys and issued tokens are persisted; sessions, participants and replications are
//! live connections, which a restarted IVS would not have either.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ivs::token::random_id;

/// Ended sessions kept per stage so ListParticipants can still answer for them.
const PAST_SESSIONS: usize = 5;
/// Stopped replications kept for ListParticipantReplicas before the oldest are forgotten.
const STOPPED_REPLICATIONS: usize = 1_000;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// By stage id (the ARN's last segment): ListStages pages in this order.
    pub stages: BTreeMap<String, Stage>,
    /// By key id.
    pub keys: BTreeMap<String, PublicKey>,
    /// Tokens from CreateParticipantToken/CreateStage, by token text.
    pub issued: BTreeMap<String, IssuedToken>,
    #[serde(skip)]
    pub replications: Vec<Replication>,
    /// The earliest moment a replica's media starts flowing (`settle` has work only from then).
    #[serde(skip)]
    pub settle_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    pub arn: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub active: Option<Session>,
    #[serde(skip)]
    pub past: VecDeque<Session>,
}

#[derive(Debug, Clone, Default)]
pub struct Session {
    pub id: String,
    /// In join order, never removed while the session lives (left ones turn DISCONNECTED).
    pub participants: Vec<Participant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PState {
    Connected,
    Disconnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplType {
    None,
    Source,
    Replica,
}

#[derive(Debug, Clone)]
pub struct Participant {
    pub id: String,
    pub user_id: String,
    pub attributes: BTreeMap<String, String>,
    pub state: PState,
    pub published: bool,
    pub first_join_time: i64,
    pub replication: ReplType,
    /// For replicas: where the original publishes.
    pub source: Option<(String, String)>,
    /// For a replica whose media is not flowing yet: when it starts to (Unix ms; then `published`).
    pub publishes_at: Option<i64>,
    /// What the participant's page says of its own media (`SET_STATE` on the events socket).
    pub audio_muted: bool,
    pub video_stopped: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicKey {
    pub arn: String,
    pub name: String,
    pub pem: String,
    pub fingerprint: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    pub stage_arn: String,
    pub participant_id: String,
    pub user_id: String,
    pub attributes: BTreeMap<String, String>,
    pub publish: bool,
    pub subscribe: bool,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplState {
    Active,
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    pub source_stage_arn: String,
    pub destination_stage_arn: String,
    pub participant_id: String,
    pub source_session_id: String,
    pub destination_session_id: String,
    pub replication_state: ReplState,
}

impl Stage {
    pub fn new(arn: String, name: String, tags: BTreeMap<String, String>) -> Self {
        Self {
            arn,
            name,
            tags,
            active: None,
            past: VecDeque::new(),
        }
    }

    /// Replicas whose media's time has come start publishing.
    fn settle(&mut self, now: i64) {
        if let Some(session) = self.active.as_mut() {
            for p in &mut session.participants {
                if p.publishes_at.is_some_and(|at| at <= now) {
                    p.publishes_at = None;
                    p.published = p.state == PState::Connected;
                }
            }
        }
    }

    pub fn active_session_id(&self) -> &str {
        self.active.as_ref().map_or("", |s| s.id.as_str())
    }

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.active.iter().chain(self.past.iter()).find(|s| s.id == id)
    }

    /// The participant `id` if it is connected now.
    pub fn connected(&self, id: &str) -> Option<&Participant> {
        let session = self.active.as_ref()?;
        session
            .participants
            .iter()
            .find(|p| p.id == id && p.state == PState::Connected)
    }

    /// (publishers, subscribers) connected now; a participant counts as one or the other.
    pub fn counts(&self) -> (u32, u32) {
        let Some(session) = &self.active else {
            return (0, 0);
        };
        let live = session.participants.iter().filter(|p| p.state == PState::Connected);
        live.fold(
            (0, 0),
            |(publ, sub), p| {
                if p.published { (publ + 1, sub) } else { (publ, sub + 1) }
            },
        )
    }

    /// Connect `p`, starting a session if the stage was idle. A participant id that is already in
    /// the session is replaced in place: one token, one seat.
    pub fn connect(&mut self, p: Participant) -> String {
        let session = self.active.get_or_insert_with(|| Session {
            id: new_session_id(),
            participants: vec![],
        });
        match session.participants.iter_mut().find(|old| old.id == p.id) {
            Some(old) => {
                // A reconnecting source keeps its role: its replications outlive the reconnect.
                let replication = if old.replication == ReplType::Source {
                    ReplType::Source
                } else {
                    p.replication
                };
                *old = Participant {
                    first_join_time: old.first_join_time,
                    replication,
                    ..p
                };
            }
            None => session.participants.push(p),
        }
        session.id.clone()
    }

    /// Mark `id` disconnected; ends the session when nobody is left. False if `id` was not connected.
    pub fn disconnect(&mut self, id: &str) -> bool {
        let Some(session) = self.active.as_mut() else {
            return false;
        };
        let Some(p) = session
            .participants
            .iter_mut()
            .find(|p| p.id == id && p.state == PState::Connected)
        else {
            return false;
        };
        p.state = PState::Disconnected;
        p.published = false;
        if session.participants.iter().all(|p| p.state == PState::Disconnected) {
            let ended = self.active.take().expect("checked above");
            self.past.push_front(ended);
            self.past.truncate(PAST_SESSIONS);
        }
        true
    }
}

impl State {
    /// Bring time-driven state up to `now` (Unix ms: replicas whose media starts flowing). Every
    /// call settles first, so what any call sees is as of its own time.
    pub fn settle(&mut self, now: i64) {
        if self.settle_at.is_none_or(|at| now < at) {
            return;
        }
        self.settle_at = None;
        for stage in self.stages.values_mut() {
            stage.settle(now);
            let next = stage
                .active
                .iter()
                .flat_map(|s| &s.participants)
                .filter_map(|p| p.publishes_at)
                .min();
            self.settle_at = match (self.settle_at, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    pub fn stage_by_arn(&self, arn: &str) -> Option<&Stage> {
        self.stages
            .get(crate::ivs::backend::stage_id_from_arn(arn))
            .filter(|s| s.arn == arn)
    }

    pub fn stage_by_arn_mut(&mut self, arn: &str) -> Option<&mut Stage> {
        self.stages
            .get_mut(crate::ivs::backend::stage_id_from_arn(arn))
            .filter(|s| s.arn == arn)
    }

    /// Public keys as `token::verify` wants them: ARN → PEM.
    pub fn key_pems(&self) -> BTreeMap<String, String> {
        self.keys.values().map(|k| (k.arn.clone(), k.pem.clone())).collect()
    }

    pub fn active_replications_of(&self, participant_id: &str) -> usize {
        self.replications
            .iter()
            .filter(|r| r.participant_id == participant_id && r.replication_state == ReplState::Active)
            .count()
    }

    /// Disconnect a participant and everything that depends on it: replicas of it elsewhere, and
    /// the replication that put it here if it is itself a replica.
    pub fn disconnect(&mut self, stage_arn: &str, participant_id: &str) -> bool {
        let Some(stage) = self.stage_by_arn_mut(stage_arn) else {
            return false;
        };
        if !stage.disconnect(participant_id) {
            return false;
        }
        self.stop_replications(|r| {
            r.participant_id == participant_id
                && (r.source_stage_arn == stage_arn || r.destination_stage_arn == stage_arn)
        });
        true
    }

    /// Stop every active replication matching `pred`, removing its replica from the destination.
    /// Returns how many were stopped.
    pub fn stop_replications(&mut self, pred: impl Fn(&Replication) -> bool) -> usize {
        let mut stopped = vec![];
        for r in self.replications.iter_mut() {
            if r.replication_state == ReplState::Active && pred(r) {
                r.replication_state = ReplState::Stopped;
                stopped.push((r.destination_stage_arn.clone(), r.participant_id.clone()));
            }
        }
        for (dest, pid) in &stopped {
            if let Some(stage) = self.stage_by_arn_mut(dest) {
                stage.disconnect(pid);
            }
        }
        let excess = self
            .replications
            .iter()
            .filter(|r| r.replication_state == ReplState::Stopped)
            .count();
        let mut excess = excess.saturating_sub(STOPPED_REPLICATIONS);
        self.replications.retain(|r| {
            let drop = excess > 0 && r.replication_state == ReplState::Stopped;
            excess -= usize::from(drop);
            !drop
        });
        stopped.len()
    }

    /// Forget tokens that can no longer join, so the map stays bounded by live tokens.
    pub fn prune_issued(&mut self, now: i64) {
        self.issued.retain(|_, t| t.expires_at > now);
    }
}

/// `st-` + 13 alphanumerics, the 16-character shape IVS uses.
pub fn new_session_id() -> String {
    format!("st-{}", random_id(13))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(id: &str) -> Participant {
        Participant {
            id: id.into(),
            user_id: String::new(),
            attributes: BTreeMap::new(),
            state: PState::Connected,
            published: false,
            first_join_time: 0,
            replication: ReplType::None,
            source: None,
            publishes_at: None,
            audio_muted: false,
            video_stopped: false,
        }
    }

    #[test]
    fn a_session_starts_with_the_first_participant_and_ends_with_the_last() {
        let mut stage = Stage::new("arn:aws:ivs:r:1:stage/abc".into(), "s".into(), BTreeMap::new());
        assert_eq!(stage.active_session_id(), "");
        let session = stage.connect(viewer("a"));
        assert!(session.starts_with("st-") && session.len() == 16);
        assert_eq!(
            stage.connect(Participant {
                published: true,
                ..viewer("a")
            }),
            session,
            "same jti, same seat"
        );
        assert_eq!(stage.counts(), (1, 0));
        assert!(stage.disconnect("a"));
        assert!(!stage.disconnect("a"), "already gone");
        assert_eq!(stage.active_session_id(), "");
        assert_eq!(
            stage.session(&session).unwrap().participants[0].state,
            PState::Disconnected
        );
    }
}
