//! Between sessions: a publisher's frames written to its subscribers (one simulcast layer each,
//! starting on a key frame), key frame requests back to the publisher, and the str0m drain that
//! every `Rtc` mutation must be followed by — whatever a drain produces for other sessions is
//! queued as an [`Action`] and run before the task waits again.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::{KeyframeRequestKind, MediaData, MediaTime, Mid};
use str0m::{Candidate, Event, Output};
use tokio::net::UdpSocket;

use super::engine::Engine;
use super::layers::{Admit, Layer};
use super::session::{self, Role, Session};
use super::{SessionKind, SfuEvent, SfuStats};

/// What a drain needs besides its session, apart from `sessions` so both can be borrowed.
pub(super) struct Io {
    pub socket: UdpSocket,
    pub candidate: Candidate,
    pub candidate_addr: SocketAddr,
    pub stats: SfuStats,
    pub actions: VecDeque<Action>,
}

pub(super) enum Action {
    /// A frame from this publish session for its subscribers.
    Forward {
        publisher: String,
        frame: Box<MediaData>,
    },
    /// Ask this publish session's browser for a key frame of a layer.
    Keyframe {
        publisher: String,
        layer: Layer,
    },
    /// A subscriber's browser lost the picture.
    SubscriberKeyframe {
        subscriber: String,
    },
    Connected {
        session: String,
    },
}

impl Engine {
    pub(super) fn run_actions(&mut self) {
        while let Some(action) = self.io.actions.pop_front() {
            match action {
                Action::Forward { publisher, frame } => self.forward(&publisher, &frame),
                Action::Keyframe { publisher, layer } => self.request_keyframe(&publisher, layer),
                Action::SubscriberKeyframe { subscriber } => {
                    if let Some(Role::Subscribe(sub)) = self.sessions.get(&subscriber).map(|s| &s.role)
                        && let Some(layer) = sub.follower.target()
                    {
                        let publisher = sub.source.clone();
                        self.io.actions.push_back(Action::Keyframe { publisher, layer });
                    }
                }
                Action::Connected { session } => self.on_connected(&session),
            }
        }
    }

    fn on_connected(&mut self, id: &str) {
        let Some(s) = self.sessions.get(id) else { return };
        let kind = match &s.role {
            Role::Publish(_) => SessionKind::Publish,
            Role::Subscribe(_) => SessionKind::Subscribe,
        };
        tracing::info!(session = %id, participant = %s.participant, ?kind, "media session connected");
        let event = SfuEvent::Connected {
            session: id.to_owned(),
            participant: s.participant.clone(),
            kind,
        };
        // A new viewer should not wait for the publisher's next periodic key frame.
        let ask = match &s.role {
            Role::Subscribe(sub) => self.sessions.get(&sub.source).and_then(|p| match &p.role {
                Role::Publish(publ) => Some((p.id.clone(), publ.layers.lowest_active(Instant::now())?)),
                Role::Subscribe(_) => None,
            }),
            Role::Publish(_) => None,
        };
        if let Some((publisher, layer)) = ask {
            self.io.actions.push_back(Action::Keyframe { publisher, layer });
        }
        self.emit(event);
    }

    fn forward(&mut self, from: &str, frame: &MediaData) {
        let now = Instant::now();
        let Some(p) = self.sessions.get_mut(from) else { return };
        let video = p.video_mid == Some(frame.mid);
        if !video && p.audio_mid != Some(frame.mid) {
            return; // further m-sections are not forwarded
        }
        let lowest = match &mut p.role {
            Role::Publish(publ) if video => {
                publ.layers.saw(frame.rid, now);
                publ.layers.lowest_active(now)
            }
            _ => None,
        };
        let keyframe = video && frame.is_keyframe();
        for s in self.sessions.values_mut() {
            let Role::Subscribe(sub) = &mut s.role else { continue };
            if sub.source != from || !s.connected || s.ended.is_some() {
                continue;
            }
            let Some(mid) = (if video { s.video_mid } else { s.audio_mid }) else {
                continue;
            };
            let time = if video {
                let (admit, ask) = sub.follower.admit(frame.rid, keyframe, lowest, frame.time);
                if let Some(layer) = ask {
                    let publisher = from.to_owned();
                    self.io.actions.push_back(Action::Keyframe { publisher, layer });
                }
                match admit {
                    Admit::Forward(time) => time,
                    Admit::WaitKeyframe => {
                        self.io.stats.frames_dropped += 1;
                        continue;
                    }
                    Admit::Skip => continue,
                }
            } else {
                frame.time
            };
            write(&mut self.io, s, mid, frame, time);
        }
    }

    /// Moves the subscribers of publish session `old` that can receive `new`'s video to `new`;
    /// they resume on its first key frame, timestamps continuing where they were.
    pub(super) fn adopt_viewers(&mut self, old: &str, new: &Session) {
        let Role::Publish(publisher) = &new.role else { return };
        let sent = publisher.video.first().copied();
        for s in self.sessions.values_mut() {
            let Role::Subscribe(sub) = &mut s.role else { continue };
            if sub.source == old && sent.is_none_or(|params| session::can_receive(&s.rtc, s.video_mid, params)) {
                sub.source = new.id.clone();
                sub.follower.restart();
            }
        }
    }

    fn request_keyframe(&mut self, publisher: &str, layer: Layer) {
        let Some(p) = self.sessions.get_mut(publisher) else {
            return;
        };
        let (Role::Publish(publ), Some(mid), true) = (&mut p.role, p.video_mid, p.connected) else {
            return;
        };
        if !publ.may_request_keyframe(layer, Instant::now()) {
            return;
        }
        let Some(mut writer) = p.rtc.writer(mid) else { return };
        if let Err(e) = writer.request_keyframe(layer, KeyframeRequestKind::Pli) {
            // E.g. the layer's stream is not known yet; the next frames will set the target again.
            tracing::trace!(session = %publisher, error = %e, "key frame request not sent");
            return;
        }
        drain(&mut self.io, p);
    }
}

/// Polls `s` until str0m has nothing more to say, sending its datagrams and turning its events
/// into actions.
pub(super) fn drain(io: &mut Io, s: &mut Session) {
    loop {
        match s.rtc.poll_output() {
            Ok(Output::Timeout(at)) => {
                s.timeout = at;
                break;
            }
            Ok(Output::Transmit(t)) => match io.socket.try_send_to(&t.contents, t.destination) {
                Ok(n) => io.stats.bytes_out += n as u64,
                Err(e) => tracing::trace!(session = %s.id, error = %e, "datagram not sent"),
            },
            Ok(Output::Event(event)) => on_event(io, s, event),
            Err(e) => {
                tracing::debug!(session = %s.id, error = %e, "media session failed");
                s.ended.get_or_insert("disconnected");
                s.timeout = Instant::now() + Duration::from_secs(3600);
                break;
            }
        }
    }
    if !s.rtc.is_alive() {
        s.ended.get_or_insert("disconnected");
    }
}

fn on_event(io: &mut Io, s: &mut Session, event: Event) {
    match event {
        Event::Connected => {
            s.connected = true;
            io.actions.push_back(Action::Connected { session: s.id.clone() });
        }
        Event::MediaData(frame) if matches!(s.role, Role::Publish(_)) => {
            io.stats.frames_in += 1;
            io.actions.push_back(Action::Forward {
                publisher: s.id.clone(),
                frame: Box::new(frame),
            });
        }
        Event::KeyframeRequest(_) if matches!(s.role, Role::Subscribe(_)) => {
            io.actions.push_back(Action::SubscriberKeyframe {
                subscriber: s.id.clone(),
            });
        }
        // Anything else a subscriber sends (the SDK's silent audio) is not forwarded.
        Event::Closed => {
            s.ended.get_or_insert("disconnected");
        }
        Event::IceConnectionStateChange(state) => {
            // Disconnected can recover in str0m; silence past ice_timeout is what ends a session.
            tracing::debug!(session = %s.id, ?state, "ice state");
        }
        _ => {}
    }
}

/// Writes one frame to a subscriber in the payload type it negotiated for the frame's codec.
fn write(io: &mut Io, s: &mut Session, mid: Mid, frame: &MediaData, time: MediaTime) {
    let pt = s
        .rtc
        .codec_config()
        .match_params(frame.params)
        .map(|p| p.pt())
        .filter(|pt| s.rtc.media(mid).is_some_and(|m| m.remote_pts().contains(pt)));
    let Some((pt, writer)) = pt.zip(s.rtc.writer(mid)) else {
        io.stats.frames_dropped += 1;
        return;
    };
    match writer.write(pt, frame.network_time, time, frame.data.clone()) {
        Ok(()) => io.stats.frames_out += 1,
        Err(e) => {
            tracing::trace!(session = %s.id, error = %e, "frame not written");
            io.stats.frames_dropped += 1;
        }
    }
    drain(io, s);
}

/// Tells the publisher's browser the cap as a REMB on its video streams, leaving room for audio,
/// so a well-behaved encoder stays under it instead of being cut off.
pub(super) fn tell_cap(io: &mut Io, s: &mut Session, cap_bps: u64) {
    let (Some(mid), Role::Publish(p)) = (s.video_mid, &s.role) else {
        return;
    };
    let layers: Vec<Layer> = p.layers.known().collect();
    let mut api = s.rtc.direct_api();
    for layer in layers {
        if let Some(rx) = api.stream_rx_by_mid(mid, layer) {
            rx.request_remb(Bitrate::bps(cap_bps / 10 * 9));
        }
    }
    drain(io, s);
}
