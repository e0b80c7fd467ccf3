//! WebRTC test peers built on str0m, each running its own `Rtc` on its own loopback UDP socket in
//! a tokio task. A publishing peer offers what the IVS SDK offers (audio sendonly, video
//! sendrecv, optionally simulcast low/mid/hi) and sends synthetic H.264 or VP8 frames at ~30 fps
//! plus Opus every 20 ms; a subscribing peer offers recvonly and counts what arrives.
//!
//! [`WhipPublisher`] and [`WhipSubscriber`] do the offer/answer over WHIP (HTTP, Bearer token,
//! 201 + Location, DELETE). [`PendingPeer`]/[`Peer`] take any exchange, which is how the SFU's
//! unit tests drive them without HTTP (they include this file by path).
//!
//! The frames are not decodable video: they only have to look like key and delta frames to the
//! depacketizer. Each frame's last byte names its simulcast layer, so a receiver can tell which
//! layer it was given; the eight bytes before it carry the picture's number, so a receiver can
//! count exactly which of a range of pictures it got ([`Peer::count_pictures`]). Their rate and
//! sizes are the publisher's [`Stream`] (by default ~30 fps of a few hundred bytes).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{StatusCode, Url};
use str0m::bwe::BweKind;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// The simulcast layers, lowest first, as the SDK names them.
pub const LAYERS: [&str; 3] = ["low", "mid", "hi"];
/// The tag ending frames of a publisher without simulcast.
const NO_LAYER_TAG: u8 = b'n';

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Video {
    H264,
    Vp8,
}

#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// Sends `frames` video frames once connected (`u64::MAX`: until stopped; more with
    /// [`Peer::send_frames`]).
    Publish { video: Video, simulcast: bool, frames: u64 },
    /// Receives; offers only `only` when set, else H.264 and VP8 as Chromium does.
    Subscribe { only: Option<Video> },
}

/// What a publisher's video looks like: its frame rate and frame sizes. Each simulcast layer `i`
/// (0 = low) sends `(i + 1)` times the sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    /// Time between pictures.
    pub interval: Duration,
    /// Bytes of a delta frame (at least the 8 of the picture number).
    pub frame_bytes: usize,
    /// Bytes of a key frame.
    pub keyframe_bytes: usize,
    /// A real encoder's periodic key frame, every this many pictures, besides the ones asked for.
    pub keyframe_every: u64,
}

impl Default for Stream {
    /// ~30 fps of 600-byte delta and 2,400-byte key frames, a key frame every 60 pictures.
    fn default() -> Self {
        Stream {
            interval: Duration::from_millis(33),
            frame_bytes: 600,
            keyframe_bytes: 2_400,
            keyframe_every: 60,
        }
    }
}

impl Stream {
    /// `fps` pictures a second averaging `kbps` kbit/s of frame payload, with a key frame
    /// `keyframe_ratio` times the size of a delta frame every `keyframe_every` pictures.
    pub fn at(fps: f64, kbps: f64, keyframe_ratio: f64, keyframe_every: u64) -> Stream {
        let per_picture = kbps * 1000.0 / 8.0 / fps;
        let n = keyframe_every.max(1) as f64;
        // (n - 1) deltas and one key frame of `ratio` deltas make n pictures of `per_picture`.
        let delta = per_picture * n / (n - 1.0 + keyframe_ratio);
        Stream {
            interval: Duration::from_secs_f64(1.0 / fps),
            frame_bytes: (delta as usize).max(PICTURE_TAG_BYTES),
            keyframe_bytes: ((delta * keyframe_ratio) as usize).max(PICTURE_TAG_BYTES),
            keyframe_every: keyframe_every.max(1),
        }
    }

    /// RTP (90 kHz) ticks between pictures, at the whole frame rate nearest the interval's.
    fn ticks_per_picture(&self) -> u64 {
        let fps = (1.0 / self.interval.as_secs_f64()).round().max(1.0);
        (90_000.0 / fps).round() as u64
    }

    /// Frame payload bits per second this stream averages (one layer).
    pub fn bitrate_bps(&self) -> f64 {
        let n = self.keyframe_every as f64;
        let bytes = ((n - 1.0) * self.frame_bytes as f64 + self.keyframe_bytes as f64) / n;
        bytes * 8.0 / self.interval.as_secs_f64()
    }
}

/// The picture number's bytes, before the layer tag: one nibble each, as `0x10 | nibble`, so
/// they can never form an H.264 start code.
const PICTURE_TAG_BYTES: usize = 8;

/// An `Rtc` that has made its offer and waits for the answer.
pub struct PendingPeer {
    rtc: Rtc,
    pending: SdpPendingOffer,
    socket: UdpSocket,
    role: Role,
    audio: Mid,
    video: Mid,
    stream: Stream,
    pub offer: String,
}

impl PendingPeer {
    pub async fn new(role: Role) -> anyhow::Result<PendingPeer> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let mut config = RtcConfig::new().clear_codecs().enable_opus(true, false);
        config = match role {
            Role::Publish { video: Video::H264, .. }
            | Role::Subscribe {
                only: Some(Video::H264),
            } => config.enable_h264(true),
            Role::Publish { video: Video::Vp8, .. } | Role::Subscribe { only: Some(Video::Vp8) } => {
                config.enable_vp8(true)
            }
            Role::Subscribe { only: None } => config.enable_h264(true).enable_vp8(true),
        };
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(socket.local_addr()?, "udp")?);
        let mut sdp = rtc.sdp_api();
        let (audio, video) = match role {
            Role::Publish { simulcast, .. } => {
                let layers = simulcast.then(|| {
                    let mut s = Simulcast::new();
                    LAYERS.iter().for_each(|rid| s.add_send_layer(SimulcastLayer::new(rid)));
                    s
                });
                let audio = sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                (
                    audio,
                    sdp.add_media(MediaKind::Video, Direction::SendRecv, None, None, layers),
                )
            }
            Role::Subscribe { .. } => {
                let audio = sdp.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
                (
                    audio,
                    sdp.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None),
                )
            }
        };
        let (offer, pending) = sdp.apply().context("an offer with two m-sections")?;
        Ok(PendingPeer {
            rtc,
            pending,
            socket,
            role,
            audio,
            video,
            stream: Stream::default(),
            offer: offer.to_sdp_string(),
        })
    }

    /// A publisher sends this stream instead of the default one.
    pub fn with_stream(mut self, stream: Stream) -> PendingPeer {
        self.stream = stream;
        self
    }

    /// Applies the answer and starts the peer's task.
    pub fn accept(mut self, answer_sdp: &str) -> anyhow::Result<Peer> {
        let answer = SdpAnswer::from_sdp_string(answer_sdp)?;
        self.rtc.sdp_api().accept_answer(self.pending, answer)?;
        let budget = match self.role {
            Role::Publish { frames, .. } => frames,
            Role::Subscribe { .. } => 0,
        };
        let shared = Arc::new(Shared {
            budget: AtomicU64::new(budget),
            ..Shared::default()
        });
        let (stop, stopped) = oneshot::channel();
        let driver = Driver {
            local: self.socket.local_addr()?,
            rtc: self.rtc,
            socket: self.socket,
            role: self.role,
            audio: self.audio,
            video: self.video,
            shared: shared.clone(),
            stream: self.stream,
            force_keyframe: true,
            pictures: 0,
            audio_frames: 0,
        };
        let task = tokio::spawn(driver.run(stopped));
        Ok(Peer {
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

#[derive(Default)]
struct Shared {
    connected: AtomicBool,
    closed: AtomicBool,
    budget: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    audio_received: AtomicU64,
    /// Video frames received per layer tag: none, low, mid, hi.
    layers: [AtomicU64; 4],
    keyframe_requests: AtomicU64,
    remb_bps: AtomicU64,
    /// When the first video frame arrived.
    first_frame_at: OnceLock<Instant>,
    /// Pictures numbered in [lo, hi) are counted in `counted`.
    count_lo: AtomicU64,
    count_hi: AtomicU64,
    counted: AtomicU64,
    changed: Notify,
}

/// A running peer. Dropping it stops the task without telling the other side.
pub struct Peer {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Peer {
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// The other side closed (DTLS close_notify) or the `Rtc` died.
    pub fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Pictures sent; with simulcast each went out once per layer.
    pub fn frames_sent(&self) -> u64 {
        self.shared.frames_sent.load(Ordering::Relaxed)
    }

    pub fn frames_received(&self) -> u64 {
        self.shared.frames_received.load(Ordering::Relaxed)
    }

    pub fn audio_frames_received(&self) -> u64 {
        self.shared.audio_received.load(Ordering::Relaxed)
    }

    /// Video frames received of a simulcast layer (`None`: a publisher without simulcast).
    pub fn layer_frames(&self, layer: Option<&str>) -> u64 {
        let i = layer.map_or(0, |l| 1 + LAYERS.iter().position(|x| *x == l).expect("a known layer"));
        self.shared.layers[i].load(Ordering::Relaxed)
    }

    pub fn keyframe_requests(&self) -> u64 {
        self.shared.keyframe_requests.load(Ordering::Relaxed)
    }

    /// When the first video frame arrived, if one has.
    pub fn first_frame_at(&self) -> Option<Instant> {
        self.shared.first_frame_at.get().copied()
    }

    /// From now on, count the video frames received whose picture number is in `range` (the
    /// publisher's `frames_sent()` before it sent them), starting from 0; [`Peer::counted`] says
    /// how many. A picture received twice counts twice (the SFU does not repeat frames).
    pub fn count_pictures(&self, range: std::ops::Range<u64>) {
        let s = &self.shared;
        s.count_hi.store(0, Ordering::Relaxed);
        s.counted.store(0, Ordering::Relaxed);
        s.count_lo.store(range.start, Ordering::Relaxed);
        s.count_hi.store(range.end, Ordering::Relaxed);
    }

    /// Frames received in the range given to [`Peer::count_pictures`] so far.
    pub fn counted(&self) -> u64 {
        self.shared.counted.load(Ordering::Relaxed)
    }

    /// The last REMB the publisher was sent, if any.
    pub fn remb_bps(&self) -> Option<u64> {
        Some(self.shared.remb_bps.load(Ordering::Relaxed)).filter(|b| *b > 0)
    }

    /// Sends `n` more video frames, starting with a key frame.
    pub fn send_frames(&self, n: u64) {
        self.shared.budget.fetch_add(n, Ordering::Relaxed);
    }

    pub async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&Peer) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Created before the check, so a change between the check and the wait is not lost.
            let changed = self.shared.changed.notified();
            if done(self) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!("timed out after {within:?} waiting for {what}");
            }
        }
    }

    pub async fn wait_connected(&self, within: Duration) -> anyhow::Result<()> {
        self.wait_for("the peer to connect", within, Peer::connected).await
    }

    pub async fn wait_frames(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        let what = format!("{n} video frames");
        self.wait_for(&what, within, |p| p.frames_received() >= n).await
    }

    /// Closes the `Rtc` (the other side gets DTLS close_notify) and ends the task.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

struct Driver {
    rtc: Rtc,
    socket: UdpSocket,
    local: std::net::SocketAddr,
    role: Role,
    audio: Mid,
    video: Mid,
    shared: Arc<Shared>,
    stream: Stream,
    force_keyframe: bool,
    pictures: u64,
    audio_frames: u64,
}

impl Driver {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut buf = vec![0u8; 2048];
        let (mut next_video, mut next_audio) = (Instant::now(), Instant::now());
        let publishes = matches!(self.role, Role::Publish { .. });
        let frame_interval = self.stream.interval;
        while let Some(timeout) = self.drain() {
            let sending = publishes && self.shared.connected.load(Ordering::Relaxed);
            let wake = if sending {
                timeout.min(next_video).min(next_audio)
            } else {
                timeout
            };
            tokio::select! {
                _ = &mut stop => {
                    let _ = self.rtc.close();
                    self.drain();
                    break;
                }
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    let Ok(receive) = Receive::new(Protocol::Udp, from, self.local, &buf[..n]) else { continue };
                    let _ = self.rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if sending && now >= next_video {
                        // After a stall, carry on from now rather than catching up in a burst.
                        next_video = (next_video + frame_interval).max(now - frame_interval);
                        self.send_picture(now);
                    } else if sending && now >= next_audio {
                        next_audio = (next_audio + AUDIO_INTERVAL).max(now - AUDIO_INTERVAL);
                        self.send_audio(now);
                    } else {
                        let _ = self.rtc.handle_input(Input::Timeout(now));
                    }
                }
            }
        }
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.changed.notify_waiters();
    }

    /// Polls the `Rtc` to its next timeout; None once it is dead.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            if !self.rtc.is_alive() {
                return None;
            }
            match self.rtc.poll_output().ok()? {
                Output::Timeout(at) => return Some(at),
                Output::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let s = &self.shared;
        match event {
            Event::Connected => s.connected.store(true, Ordering::Relaxed),
            Event::MediaData(d) if d.mid == self.video => {
                let i = match d.data.last() {
                    Some(b'l') => 1,
                    Some(b'm') => 2,
                    Some(b'h') => 3,
                    _ => 0,
                };
                s.layers[i].fetch_add(1, Ordering::Relaxed);
                s.frames_received.fetch_add(1, Ordering::Relaxed);
                if s.first_frame_at.get().is_none() {
                    let _ = s.first_frame_at.set(Instant::now());
                }
                if let Some(picture) = picture_number(&d.data)
                    && (s.count_lo.load(Ordering::Relaxed)..s.count_hi.load(Ordering::Relaxed)).contains(&picture)
                {
                    s.counted.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::MediaData(d) if d.mid == self.audio => {
                s.audio_received.fetch_add(1, Ordering::Relaxed);
            }
            Event::KeyframeRequest(_) => {
                s.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                self.force_keyframe = true;
            }
            Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                s.remb_bps.store(estimate.as_u64(), Ordering::Relaxed);
            }
            Event::Closed => s.closed.store(true, Ordering::Relaxed),
            _ => return,
        }
        s.changed.notify_waiters();
    }

    /// One picture: a frame per simulcast layer (or one without), each write drained on its own.
    fn send_picture(&mut self, now: Instant) {
        let Role::Publish { video, simulcast, .. } = self.role else {
            return;
        };
        let budget = &self.shared.budget;
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_err()
        {
            self.force_keyframe = true; // the next burst starts decodable
            return;
        }
        let key = std::mem::take(&mut self.force_keyframe) || self.pictures.is_multiple_of(self.stream.keyframe_every);
        let time = MediaTime::from_90khz(self.pictures * self.stream.ticks_per_picture());
        let layers: &[&str] = if simulcast { &LAYERS } else { &[""] };
        for (i, layer) in layers.iter().enumerate() {
            let tag = layer.bytes().next().unwrap_or(NO_LAYER_TAG);
            let size = if key {
                self.stream.keyframe_bytes
            } else {
                self.stream.frame_bytes
            };
            let data = synthetic_frame(video, key, size * (i + 1), self.pictures, tag);
            let Some(writer) = self.rtc.writer(self.video) else {
                return;
            };
            let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
                return;
            };
            let writer = if simulcast {
                writer.rid(Rid::from(*layer))
            } else {
                writer
            };
            if writer.write(pt, now, time, data).is_ok() {
                self.drain();
            }
        }
        self.pictures += 1;
        self.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.shared.changed.notify_waiters();
    }

    fn send_audio(&mut self, now: Instant) {
        let Some(writer) = self.rtc.writer(self.audio) else {
            return;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
        else {
            return;
        };
        let time = MediaTime::new(self.audio_frames * 960, Frequency::FORTY_EIGHT_KHZ);
        self.audio_frames += 1;
        // An Opus packet of 20 ms of silence (TOC 0xf8: CELT FB 20 ms, one frame).
        if writer.write(pt, now, time, vec![0xf8, 0xff, 0xfe]).is_ok() {
            self.drain();
        }
    }
}

/// A frame the depacketizers accept: an H.264 access unit (SPS, PPS and IDR for a key frame, a
/// non-IDR slice otherwise) or a VP8 frame header with the key-frame bit, filler that cannot form
/// a start code up to `size` bytes, the picture number (8 bytes) and the layer tag as the last byte.
fn synthetic_frame(video: Video, key: bool, size: usize, picture: u64, tag: u8) -> Vec<u8> {
    let mut frame = match (video, key) {
        (Video::H264, true) => vec![
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40, // SPS
            0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, // PPS
            0, 0, 0, 1, 0x65, 0x88, 0x84, // IDR slice
        ],
        (Video::H264, false) => vec![0, 0, 0, 1, 0x41, 0x9a],
        // Frame tag with P=0, then the key frame start code and 640x360.
        (Video::Vp8, true) => vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01],
        (Video::Vp8, false) => vec![0x11, 0x02, 0x00],
    };
    let filler = size.saturating_sub(PICTURE_TAG_BYTES);
    frame.extend((0..filler).map(|i| 0x10 | (i % 0xe0) as u8));
    frame.extend(
        (0..PICTURE_TAG_BYTES)
            .rev()
            .map(|k| 0x10 | ((picture >> (4 * k)) & 0xf) as u8),
    );
    frame.push(tag);
    frame
}

/// The picture number a [`synthetic_frame`] carries before its layer tag.
fn picture_number(frame: &[u8]) -> Option<u64> {
    let end = frame.len().checked_sub(1)?;
    let bytes = frame.get(end.checked_sub(PICTURE_TAG_BYTES)?..end)?;
    bytes
        .iter()
        .try_fold(0u64, |n, b| (b & 0xf0 == 0x10).then(|| n << 4 | u64::from(b & 0x0f)))
}

/// A WHIP POST's outcome, for tests that expect a refusal.
#[derive(Debug)]
pub struct WhipResponse {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

/// The error `WhipPublisher::start`/`WhipSubscriber::start` return for anything but 201;
/// `err.downcast_ref::<WhipRefused>()` gives the status.
#[derive(Debug, thiserror::Error)]
#[error("WHIP POST {url} answered {status}: {body}")]
pub struct WhipRefused {
    pub url: String,
    pub status: StatusCode,
    pub body: String,
}

pub async fn post_offer(url: &str, token: &str, offer_sdp: &str) -> anyhow::Result<WhipResponse> {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(offer_sdp.to_owned())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await?;
    Ok(WhipResponse { status, location, body })
}

/// A peer whose session lives at a WHIP resource.
struct WhipSession {
    peer: Peer,
    location: Url,
    token: String,
}

impl WhipSession {
    async fn open(url: &str, token: &str, role: Role, stream: Stream) -> anyhow::Result<WhipSession> {
        let pending = PendingPeer::new(role).await?.with_stream(stream);
        let response = post_offer(url, token, &pending.offer).await?;
        if response.status != StatusCode::CREATED {
            let (url, status, body) = (url.to_owned(), response.status, response.body);
            return Err(WhipRefused { url, status, body }.into());
        }
        let location = response.location.context("201 without a Location")?;
        let location = Url::parse(url)?.join(&location)?;
        let peer = pending.accept(&response.body)?;
        Ok(WhipSession {
            peer,
            location,
            token: token.to_owned(),
        })
    }

    /// DELETEs the resource, then closes the peer; the DELETE's status when it was answered.
    async fn stop(self) -> Option<StatusCode> {
        let response = reqwest::Client::new()
            .delete(self.location.clone())
            .bearer_auth(&self.token)
            .send()
            .await;
        self.peer.close().await;
        response.ok().map(|r| r.status())
    }
}

/// Publishes synthetic H.264 video (no simulcast) and Opus over WHIP until stopped.
pub struct WhipPublisher(WhipSession);

impl WhipPublisher {
    /// `publish_url` e.g. `http://127.0.0.1:PORT/whip/publish/<participantId>`.
    pub async fn start(publish_url: &str, token: &str) -> anyhow::Result<Self> {
        Self::start_with(publish_url, token, Stream::default()).await
    }

    /// As [`WhipPublisher::start`], sending `stream`.
    pub async fn start_with(publish_url: &str, token: &str, stream: Stream) -> anyhow::Result<Self> {
        let role = Role::Publish {
            video: Video::H264,
            simulcast: false,
            frames: u64::MAX,
        };
        Ok(WhipPublisher(
            WhipSession::open(publish_url, token, role, stream).await?,
        ))
    }

    pub fn frames_sent(&self) -> u64 {
        self.0.peer.frames_sent()
    }

    /// The session's resource (the resolved Location).
    pub fn location(&self) -> &Url {
        &self.0.location
    }

    pub fn peer(&self) -> &Peer {
        &self.0.peer
    }

    /// DELETEs the session; returns the DELETE's status when it was answered.
    pub async fn stop(self) -> Option<StatusCode> {
        self.0.stop().await
    }
}

/// Subscribes over WHIP and counts the frames that arrive.
pub struct WhipSubscriber(WhipSession);

impl WhipSubscriber {
    /// `subscribe_url` e.g. `http://127.0.0.1:PORT/whip/subscribe/<publisherId>`.
    pub async fn start(subscribe_url: &str, token: &str) -> anyhow::Result<Self> {
        let role = Role::Subscribe { only: None };
        Ok(WhipSubscriber(
            WhipSession::open(subscribe_url, token, role, Stream::default()).await?,
        ))
    }

    pub fn frames_received(&self) -> u64 {
        self.0.peer.frames_received()
    }

    pub async fn wait_frames(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        self.0.peer.wait_frames(n, within).await
    }

    pub fn location(&self) -> &Url {
        &self.0.location
    }

    pub fn peer(&self) -> &Peer {
        &self.0.peer
    }

    pub async fn stop(self) -> Option<StatusCode> {
        self.0.stop().await
    }
}
