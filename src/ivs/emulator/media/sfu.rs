//! The emulator's local media plane: a small SFU that lets the IVS Web Broadcast SDK publish and
//! play video on one machine. One tokio task owns one UDP socket and a str0m `Rtc` per WHIP
//! session (ICE-lite, a single host candidate), and forwards each publisher's frames to the
//! sessions subscribed to it.
//!
//! This file owns the public handle, its configuration, events and errors. `engine` runs the task
//! loop and the sessions' lifecycle, `forward` moves frames and key frame requests between them,
//! `session` turns offers into `Rtc`s, `offer` reads the few facts needed from an offer's text,
//! `layers` picks one simulcast layer per subscriber, `meter` polices the publish bitrate.
//!
//! Not here: HTTP (WHIP routes, CORS, Location), tokens, and who may publish or subscribe to whom —
//! the caller decides that, then calls [`Sfu::publish`], [`Sfu::subscribe`] and [`Sfu::close`].

mod engine;
mod forward;
mod layers;
mod meter;
mod offer;
mod session;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// How many requests may wait for the media task; callers beyond that wait their turn.
const COMMAND_QUEUE: usize = 64;
/// Events the caller has not read yet; further events are dropped (and logged), never queued.
const EVENT_QUEUE: usize = 256;

#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// The one UDP socket every session shares.
    pub bind: SocketAddr,
    /// The IP put in the answers' host candidate; `None` means the bind IP, or loopback when
    /// binding to an unspecified address. Chromium accepts 127.0.0.1; a LAN demo needs the host IP.
    pub advertise: Option<IpAddr>,
    /// Publish and subscribe sessions together.
    pub max_sessions: usize,
    /// Incoming bits per second allowed per publish session, measured each second; a publisher
    /// over it for several seconds in a row is closed. 0 turns the cap off.
    pub max_bitrate_bps: u64,
    /// A session that has not connected this long after its offer, or that has received nothing
    /// for this long, is dropped.
    pub ice_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            advertise: None,
            max_sessions: 256,
            // Local default, roomy for the SDK's 720p with simulcast; not an IVS figure.
            max_bitrate_bps: 8_000_000,
            ice_timeout: Duration::from_secs(20),
        }
    }
}

/// A WHIP answer: the new session's resource id (for the Location) and the SDP.
#[derive(Clone, Debug)]
pub struct Answer {
    pub session: String,
    pub sdp: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    Publish,
    Subscribe,
}

/// What the media plane tells its owner. Reasons: "deleted" (closed through the handle),
/// "replaced" (a newer publish by the same participant, which keeps the subscribers), "ice-timeout"
/// (never connected, or went silent), "bitrate" (over the cap), "disconnected" (the peer closed
/// DTLS or its `Rtc` failed), "shutdown"; subscribers also end with "source-ended" when their
/// publisher ends for any other reason than being replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SfuEvent {
    /// ICE and DTLS are up; `participant` is the publisher, or the source of a subscription.
    Connected {
        session: String,
        participant: String,
        kind: SessionKind,
    },
    PublishEnded {
        participant: String,
        session: String,
        reason: &'static str,
    },
    SubscribeEnded {
        source: String,
        session: String,
        reason: &'static str,
    },
}

#[derive(thiserror::Error, Debug)]
pub enum SfuError {
    #[error("participant {0} is not publishing")]
    NotPublishing(String),
    #[error("the media plane is full ({0} sessions)")]
    TooManySessions(usize),
    #[error("unusable SDP offer: {0}")]
    BadOffer(String),
    #[error("the media plane has stopped")]
    Stopped,
}

/// Counters since start; `sessions`, `publishers`, `subscribers` are current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SfuStats {
    pub sessions: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// Frames (audio and video) received from publishers.
    pub frames_in: u64,
    /// Frames written to subscribers.
    pub frames_out: u64,
    /// Frames meant for a subscriber that it did not get: no matching codec, waiting for a key
    /// frame after joining or a layer switch, or a write error. Other simulcast layers don't count.
    pub frames_dropped: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Requests to the media task; each carries its reply channel.
enum Command {
    Publish {
        participant: String,
        offer: String,
        reply: oneshot::Sender<Result<Answer, SfuError>>,
    },
    Subscribe {
        source: String,
        offer: String,
        reply: oneshot::Sender<Result<Answer, SfuError>>,
    },
    Close {
        session: String,
        reply: oneshot::Sender<bool>,
    },
    ClosePublisher {
        participant: String,
        reply: oneshot::Sender<bool>,
    },
    Stats {
        reply: oneshot::Sender<SfuStats>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cheap handle to the media task. The task ends on [`Sfu::shutdown`] or when every handle is
/// dropped.
#[derive(Clone)]
pub struct Sfu {
    commands: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    candidate: SocketAddr,
}

impl Sfu {
    pub async fn start(cfg: MediaConfig) -> io::Result<(Sfu, mpsc::Receiver<SfuEvent>)> {
        let socket = UdpSocket::bind(cfg.bind).await?;
        roomy_buffers(&socket);
        let local_addr = socket.local_addr()?;
        let ip = cfg.advertise.unwrap_or(match local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        });
        let candidate = SocketAddr::new(ip, local_addr.port());
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, event_rx) = mpsc::channel(EVENT_QUEUE);
        let engine = engine::Engine::new(cfg, socket, candidate, events)?;
        tokio::spawn(engine.run(command_rx));
        tracing::info!(%local_addr, %candidate, "media plane listening");
        let sfu = Sfu {
            commands,
            local_addr,
            candidate,
        };
        Ok((sfu, event_rx))
    }

    /// The UDP socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address put in answers as the host candidate.
    pub fn candidate_addr(&self) -> SocketAddr {
        self.candidate
    }

    /// WHIP publish: the offer from the SDK's `POST /publish/{participant}`. A second publish by
    /// the same participant replaces (closes) the first once the new offer is accepted.
    pub async fn publish(&self, participant: &str, offer_sdp: &str) -> Result<Answer, SfuError> {
        let (participant, offer) = (participant.to_owned(), offer_sdp.to_owned());
        self.ask(|reply| Command::Publish {
            participant,
            offer,
            reply,
        })
        .await
        .unwrap_or(Err(SfuError::Stopped))
    }

    /// WHIP subscribe: forward `source`'s publish session to a new session. A replacing publish
    /// by `source` takes the subscription over; any other end of it ends the subscription.
    pub async fn subscribe(&self, source: &str, offer_sdp: &str) -> Result<Answer, SfuError> {
        let (source, offer) = (source.to_owned(), offer_sdp.to_owned());
        self.ask(|reply| Command::Subscribe { source, offer, reply })
            .await
            .unwrap_or(Err(SfuError::Stopped))
    }

    /// WHIP DELETE of a publish or subscribe session; false when unknown.
    pub async fn close(&self, session: &str) -> bool {
        let session = session.to_owned();
        self.ask(|reply| Command::Close { session, reply })
            .await
            .unwrap_or(false)
    }

    /// Close the participant's publish session (and with it its subscribers), e.g. when the
    /// participant leaves or is kicked; false when it was not publishing.
    pub async fn close_publisher(&self, participant: &str) -> bool {
        let participant = participant.to_owned();
        self.ask(|reply| Command::ClosePublisher { participant, reply })
            .await
            .unwrap_or(false)
    }

    pub async fn stats(&self) -> SfuStats {
        self.ask(|reply| Command::Stats { reply }).await.unwrap_or_default()
    }

    /// Close every session (publishers end with "shutdown") and end the task.
    pub async fn shutdown(&self) {
        self.ask(|reply| Command::Shutdown { reply }).await;
    }

    /// None when the task has stopped.
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.ok()?;
        answer.await.ok()
    }
}

/// Every subscriber's feedback and the publishers' packets share one socket, and each frame goes
/// out to every subscriber in one burst: with the kernel's default buffers (~208 KiB) a burst
/// of a few hundred subscribers drops incoming packets (measured with `loadtest media`). Ask
/// for 4 MiB each way; the kernel caps it at `net.core.{r,w}mem_max`, which is fine.
fn roomy_buffers(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    const BYTES: libc::c_int = 4 << 20;
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid socket descriptor, and a c_int option value of the given size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&BYTES as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(
                "media socket buffer size not raised: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
