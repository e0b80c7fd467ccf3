//! The emulator's local media plane, so the real IVS Web Broadcast SDK publishes and plays on
//! 127.0.0.1 with no AWS account: the stage events socket (`events`), WHIP (`whip`) and a small
//! SFU on one UDP socket (`sfu`). The protocol is the one observed in
//! `ivs-local-media.md` (shared design folder). This file owns what the three share: the SFU
//! handle, the change signal every socket waits on, each stage's STAGE_STATE sequence, and the
//! socket registry that tells a kicked or replaced socket apart from one that left.
//!
//! It does not touch stagefleet's join path: it serves only what a browser holding a token needs.

pub mod events;
pub mod sfu;
pub mod whip;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde_json::Value;
use tokio::sync::watch;

use super::ops::media::Seat;

pub use sfu::{MediaConfig, Sfu, SfuEvent};

/// The media plane's settings beside the SFU's own.
#[derive(Clone, Debug)]
pub struct MediaSettings {
    /// None: no SFU (WHIP answers 503); the events socket still works.
    pub sfu: Option<MediaConfig>,
    /// Open events sockets at most; more are refused with `MAX_CONCURRENT_CONNECTIONS`.
    pub max_sockets: usize,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            sfu: None,
            max_sockets: 1_000,
        }
    }
}

pub struct Media {
    pub sfu: Option<Sfu>,
    max_sockets: usize,
    /// Bumped after anything that may change what a stage's sockets are shown.
    changed: watch::Sender<u64>,
    /// Set once at shutdown: every socket says goodbye and closes.
    closing: watch::Sender<bool>,
    rosters: Mutex<HashMap<String, Roster>>,
    /// Which socket holds each seat now: a newer socket with the same token replaces an older one.
    holders: Mutex<HashMap<Seat, u64>>,
    next_socket: AtomicU64,
    open: AtomicUsize,
    /// Each publishing participant's current WHIP session: the end of an older, replaced one
    /// must not turn `isPublishing` off.
    sessions: Mutex<HashMap<String, String>>,
    /// Sessions that ended lately (oldest first, bounded): the SDK often DELETEs a session the
    /// SFU already closed (its socket closed first), and that DELETE is answered as done.
    ended: Mutex<std::collections::VecDeque<String>>,
}

/// How many ended sessions [`Media`] remembers for late DELETEs.
const ENDED_REMEMBERED: usize = 4_096;

/// What a stage's sockets were last shown, and its sequence number (the SDK ignores a
/// STAGE_STATE whose number is not greater than the last it saw).
#[derive(Default)]
struct Roster {
    seq: u64,
    shown: Vec<Value>,
}

impl Media {
    pub fn new(sfu: Option<Sfu>, max_sockets: usize) -> Self {
        Self {
            sfu,
            max_sockets,
            changed: watch::Sender::new(0),
            closing: watch::Sender::new(false),
            rosters: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            sessions: Mutex::new(HashMap::new()),
            ended: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Something changed: every socket looks at its stage again.
    pub fn touch(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// The stage's sequence number for `participants`: the same list keeps its number, a
    /// different one gets the next.
    fn sequence(&self, stage_arn: &str, participants: Vec<Value>) -> (u64, Vec<Value>) {
        let mut rosters = self.rosters.lock().expect("rosters lock");
        let roster = rosters.entry(stage_arn.to_string()).or_default();
        if roster.seq == 0 || roster.shown != participants {
            roster.seq += 1;
            roster.shown = participants;
        }
        (roster.seq, roster.shown.clone())
    }

    fn forget_stage(&self, stage_arn: &str) {
        self.rosters.lock().expect("rosters lock").remove(stage_arn);
    }

    /// Take a socket slot, or None when the cap is reached.
    fn open_socket(&self) -> Option<SocketSlot<'_>> {
        let n = self.open.fetch_add(1, Ordering::SeqCst);
        if n >= self.max_sockets {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(SocketSlot(self))
    }

    /// Register a socket as the holder of `seat`; returns its id.
    fn hold(&self, seat: &Seat) -> u64 {
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        self.holders.lock().expect("holders lock").insert(seat.clone(), id);
        id
    }

    fn holds(&self, seat: &Seat, socket: u64) -> bool {
        self.holders.lock().expect("holders lock").get(seat) == Some(&socket)
    }

    /// Release `seat` if `socket` still holds it; true if it did.
    fn release(&self, seat: &Seat, socket: u64) -> bool {
        let mut holders = self.holders.lock().expect("holders lock");
        if holders.get(seat) == Some(&socket) {
            holders.remove(seat);
            true
        } else {
            false
        }
    }

    /// `participant` publishes through WHIP session `session` now.
    pub fn publishing(&self, participant: &str, session: &str) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        sessions.insert(participant.to_string(), session.to_string());
    }

    /// A publish session ended: true if it was the participant's current one.
    fn publish_ended(&self, participant: &str, session: &str) -> bool {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.get(participant).is_some_and(|s| s == session) {
            sessions.remove(participant);
            true
        } else {
            false
        }
    }

    fn session_ended(&self, session: &str) {
        let mut ended = self.ended.lock().expect("ended lock");
        if ended.len() >= ENDED_REMEMBERED {
            ended.pop_front();
        }
        ended.push_back(session.to_string());
    }

    /// Whether `session` ended lately (a DELETE of it has nothing left to do).
    pub fn recently_ended(&self, session: &str) -> bool {
        self.ended.lock().expect("ended lock").iter().any(|s| s == session)
    }

    pub fn open_sockets(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// One open socket's place under the cap, given back when dropped.
struct SocketSlot<'a>(&'a Media);

impl Drop for SocketSlot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Follow the SFU: when a participant's current publish session ends (DELETE, ICE timeout, over
/// its bitrate), it stops publishing in its stage and every socket there is told.
pub async fn follow_sfu(
    shared: std::sync::Arc<super::server::Shared>,
    mut events: tokio::sync::mpsc::Receiver<SfuEvent>,
) {
    use super::ops::media as model;
    while let Some(event) = events.recv().await {
        let (participant, session, reason) = match event {
            SfuEvent::PublishEnded {
                participant,
                session,
                reason,
            } => (participant, session, reason),
            SfuEvent::SubscribeEnded { session, .. } => {
                shared.media.session_ended(&session);
                continue;
            }
            SfuEvent::Connected { .. } => continue,
        };
        shared.media.session_ended(&session);
        tracing::debug!(participant, session, reason, "publish session ended");
        // A replaced session's participant publishes on through the new one.
        if reason == "replaced" || !shared.media.publish_ended(&participant, &session) {
            continue;
        }
        shared.with_state(|state| {
            if let Some(seat) = model::publisher_seat(state, &participant) {
                model::set_publishing(state, &seat, false);
            }
        });
        shared.media.touch();
    }
}
