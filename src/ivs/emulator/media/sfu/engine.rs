//! The media task: one loop over the UDP socket, the command channel and the earliest str0m
//! timeout, and the sessions' lifecycle (create, time out, police, end). What happens between
//! sessions once an input is in — forwarding, key frame requests — is in `forward`.
//!
//! Nothing here blocks on a peer: datagrams go out with `try_send_to` and events with `try_send`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::forward::{Action, Io, drain, tell_cap};
use super::session::{self, Role, Session, Setup};
use super::{Answer, Command, MediaConfig, SfuError, SfuEvent, SfuStats};

/// Larger than any datagram a WebRTC peer sends (they stay under the path MTU).
const RECV_BUFFER: usize = 2048;
/// Timeouts, bitrate windows and key frame retries are looked at this often.
const TICK: Duration = Duration::from_millis(250);

pub(super) struct Engine {
    cfg: MediaConfig,
    pub(super) io: Io,
    pub(super) sessions: HashMap<String, Session>,
    /// Participant → its publish session.
    publishers: HashMap<String, String>,
    events: mpsc::Sender<SfuEvent>,
}

impl Engine {
    pub(super) fn new(
        cfg: MediaConfig,
        socket: UdpSocket,
        candidate_addr: SocketAddr,
        events: mpsc::Sender<SfuEvent>,
    ) -> io::Result<Engine> {
        let candidate = Candidate::host(candidate_addr, "udp").map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("host candidate {candidate_addr}: {e:?}"),
            )
        })?;
        let io = Io {
            socket,
            candidate,
            candidate_addr,
            stats: SfuStats::default(),
            actions: VecDeque::new(),
        };
        Ok(Engine {
            cfg,
            io,
            sessions: HashMap::new(),
            publishers: HashMap::new(),
            events,
        })
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wake = self.sessions.values().map(|s| s.timeout).fold(next_tick, Instant::min);
            tokio::select! {
                received = self.io.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.on_datagram(&buf[..n], from),
                    Err(e) => tracing::debug!(error = %e, "media socket receive failed"),
                },
                command = commands.recv() => match command {
                    Some(command) => {
                        if !self.on_command(command) {
                            return;
                        }
                    }
                    None => return self.shutdown(),
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    self.on_timeouts(now);
                    if now >= next_tick {
                        self.housekeeping(now);
                        next_tick = now + TICK;
                    }
                }
            }
            self.run_actions();
            self.reap();
        }
    }

    /// False once the task must end.
    fn on_command(&mut self, command: Command) -> bool {
        match command {
            Command::Publish {
                participant,
                offer,
                reply,
            } => {
                let _ = reply.send(self.publish(&participant, &offer));
            }
            Command::Subscribe { source, offer, reply } => {
                let _ = reply.send(self.subscribe(&source, &offer));
            }
            Command::Close { session, reply } => {
                let _ = reply.send(self.end(&session, "deleted"));
            }
            Command::ClosePublisher { participant, reply } => {
                let session = self.publishers.get(&participant).cloned();
                let _ = reply.send(session.is_some_and(|id| self.end(&id, "deleted")));
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Shutdown { reply } => {
                self.shutdown();
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    fn setup(&self) -> Setup<'_> {
        Setup {
            candidate: &self.io.candidate,
            max_bitrate_bps: self.cfg.max_bitrate_bps,
            now: Instant::now(),
        }
    }

    fn publish(&mut self, participant: &str, offer: &str) -> Result<Answer, SfuError> {
        let replacing = self.publishers.get(participant).cloned();
        if self.sessions.len() - usize::from(replacing.is_some()) >= self.cfg.max_sessions {
            return Err(SfuError::TooManySessions(self.cfg.max_sessions));
        }
        let id = new_id();
        let (mut s, sdp) = session::publish(id.clone(), participant, offer, &self.setup())?;
        // Only now that the new offer is good: a bad republish leaves the old session running.
        if let Some(old) = replacing {
            // The stage still shows the participant publishing, so its viewers will not
            // subscribe again: they move to the new session.
            self.adopt_viewers(&old, &s);
            self.end(&old, "replaced");
        }
        drain(&mut self.io, &mut s);
        tracing::info!(session = %id, participant, "publish session created");
        self.publishers.insert(participant.to_owned(), id.clone());
        self.sessions.insert(id.clone(), s);
        Ok(Answer { session: id, sdp })
    }

    fn subscribe(&mut self, source: &str, offer: &str) -> Result<Answer, SfuError> {
        let Some(publisher) = self.publishers.get(source).and_then(|id| self.sessions.get(id)) else {
            return Err(SfuError::NotPublishing(source.to_owned()));
        };
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(SfuError::TooManySessions(self.cfg.max_sessions));
        }
        let id = new_id();
        let (mut s, sdp) = session::subscribe(id.clone(), publisher, offer, &self.setup())?;
        drain(&mut self.io, &mut s);
        tracing::info!(session = %id, source, "subscribe session created");
        self.sessions.insert(id.clone(), s);
        Ok(Answer { session: id, sdp })
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let now = Instant::now();
        self.io.stats.bytes_in += data.len() as u64;
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.io.candidate_addr, data) else {
            return;
        };
        let input = Input::Receive(now, receive);
        let Some(s) = self.sessions.values_mut().find(|s| s.rtc.accepts(&input)) else {
            tracing::trace!(%from, "datagram for no session");
            return;
        };
        s.last_rx = now;
        if let Role::Publish(p) = &mut s.role {
            p.meter.add(data.len());
        }
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = %s.id, error = %e, "media input refused");
        }
        drain(&mut self.io, s);
    }

    fn on_timeouts(&mut self, now: Instant) {
        for s in self.sessions.values_mut().filter(|s| s.timeout <= now) {
            if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(session = %s.id, error = %e, "media timeout failed");
            }
            drain(&mut self.io, s);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let cap = self.cfg.max_bitrate_bps;
        for s in self.sessions.values_mut() {
            let since = if s.connected { s.last_rx } else { s.created };
            if now.saturating_duration_since(since) >= self.cfg.ice_timeout {
                s.ended.get_or_insert("ice-timeout");
                continue;
            }
            match &mut s.role {
                Role::Publish(p) => match p.meter.tick(now) {
                    Some(w) if w.exceeded => {
                        tracing::warn!(session = %s.id, participant = %s.participant, bps = w.bps, cap,
                            "publisher over the bitrate cap; closing");
                        s.ended.get_or_insert("bitrate");
                    }
                    Some(_) if cap > 0 && s.connected => tell_cap(&mut self.io, s, cap),
                    _ => {}
                },
                Role::Subscribe(sub) => {
                    // The first request may have crossed a publisher that was not sending yet.
                    if let Some(layer) = sub.follower.awaiting().filter(|_| s.connected) {
                        let publisher = sub.source.clone();
                        self.io.actions.push_back(Action::Keyframe { publisher, layer });
                    }
                }
            }
        }
    }

    /// Removes a session, telling its browser (RTCP BYE, DTLS close_notify); a publisher's
    /// subscribers end with it. False when unknown.
    fn end(&mut self, id: &str, reason: &'static str) -> bool {
        let Some(mut s) = self.sessions.remove(id) else {
            return false;
        };
        if s.rtc.close().is_ok() {
            drain(&mut self.io, &mut s);
        }
        tracing::info!(session = %id, participant = %s.participant, reason, "media session ended");
        match s.role {
            Role::Publish(_) => {
                if self.publishers.get(&s.participant).is_some_and(|p| p == id) {
                    self.publishers.remove(&s.participant);
                }
                let (participant, session) = (s.participant, s.id);
                self.emit(SfuEvent::PublishEnded {
                    participant,
                    session,
                    reason,
                });
                let subscribers: Vec<String> = self
                    .sessions
                    .values()
                    .filter(|x| matches!(&x.role, Role::Subscribe(sub) if sub.source == id))
                    .map(|x| x.id.clone())
                    .collect();
                for sub in subscribers {
                    self.end(&sub, "source-ended");
                }
            }
            Role::Subscribe(_) => {
                let (source, session) = (s.participant, s.id);
                self.emit(SfuEvent::SubscribeEnded {
                    source,
                    session,
                    reason,
                });
            }
        }
        true
    }

    fn reap(&mut self) {
        let ended: Vec<(String, &'static str)> = self
            .sessions
            .values()
            .filter_map(|s| Some((s.id.clone(), s.ended?)))
            .collect();
        for (id, reason) in ended {
            self.end(&id, reason);
        }
    }

    fn shutdown(&mut self) {
        // Subscribers first, so they end as "shutdown" rather than "source-ended".
        let mut ids: Vec<(bool, String)> = self
            .sessions
            .values()
            .map(|s| (matches!(s.role, Role::Publish(_)), s.id.clone()))
            .collect();
        ids.sort();
        for (_, id) in ids {
            self.end(&id, "shutdown");
        }
        tracing::info!("media plane stopped");
    }

    fn stats(&self) -> SfuStats {
        let publishers = self.publishers.len();
        SfuStats {
            sessions: self.sessions.len(),
            publishers,
            subscribers: self.sessions.len() - publishers,
            ..self.io.stats
        }
    }

    pub(super) fn emit(&self, event: SfuEvent) {
        if let Err(TrySendError::Full(event)) = self.events.try_send(event) {
            tracing::warn!(?event, "media event queue full; event dropped");
        }
    }
}

/// A resource id for the WHIP Location: 128 random bits, hex (URL-safe).
fn new_id() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .fold(String::with_capacity(32), |mut id, b| {
            let _ = write!(id, "{b:02x}");
            id
        })
}
