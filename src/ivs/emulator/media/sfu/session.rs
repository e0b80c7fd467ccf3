//! One WHIP session: its `Rtc`, built from the offer, and what the forwarding needs to know about
//! it. Both kinds answer as ICE-lite with the single host candidate and `setup:passive` (str0m's
//! answer to `actpass`), which Chromium accepts.
//!
//! Codecs: a publisher is answered with Opus and one video family (H.264 when offered, as IVS;
//! else VP8). A subscriber is configured with exactly the video parameters its publisher
//! negotiated, so its answer can only name a codec the publisher sends; an offer that cannot
//! receive it is refused rather than left to play nothing.

use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::PayloadParams;
use str0m::media::{Mid, Rids};
use str0m::{Candidate, Rtc, RtcConfig};

use super::SfuError;
use super::layers::{Follower, Layer, Layers};
use super::meter::RateMeter;
use super::offer::{self, VideoCodec};

/// Key frame requests to a publisher, per layer, at most this often: many subscribers joining
/// or a lossy viewer must not make the encoder send nothing but key frames.
const PLI_INTERVAL: Duration = Duration::from_millis(300);

pub(super) struct Session {
    pub id: String,
    /// The publisher; for a subscription, the publisher it watches.
    pub participant: String,
    pub rtc: Rtc,
    pub role: Role,
    pub audio_mid: Option<Mid>,
    pub video_mid: Option<Mid>,
    pub created: Instant,
    pub last_rx: Instant,
    pub connected: bool,
    /// str0m's next timeout, from the last drain.
    pub timeout: Instant,
    /// Set when the session must be closed at the next reap.
    pub ended: Option<&'static str>,
}

pub(super) enum Role {
    Publish(Publisher),
    Subscribe(Subscriber),
}

pub(super) struct Publisher {
    /// The negotiated video parameters, the one the browser sends first.
    pub video: Vec<PayloadParams>,
    pub layers: Layers,
    pub meter: RateMeter,
    last_pli: Vec<(Layer, Instant)>,
}

pub(super) struct Subscriber {
    /// The publish session's id; a replacing publish by the same participant takes it over.
    pub source: String,
    pub follower: Follower,
}

impl Publisher {
    /// Whether a key frame request for `layer` may go out now (and records it).
    pub fn may_request_keyframe(&mut self, layer: Layer, now: Instant) -> bool {
        match self.last_pli.iter_mut().find(|(l, _)| *l == layer) {
            Some((_, at)) if now.saturating_duration_since(*at) < PLI_INTERVAL => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                // One entry per layer at most: requests name layers from `Layers`, which is bounded.
                self.last_pli.push((layer, now));
                true
            }
        }
    }
}

/// Settings every session's `Rtc` shares.
pub(super) struct Setup<'a> {
    pub candidate: &'a Candidate,
    pub max_bitrate_bps: u64,
    pub now: Instant,
}

fn base_config() -> RtcConfig {
    RtcConfig::new()
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false)
}

/// Accepts the offer on `rtc`; returns the answer's SDP.
fn answer(rtc: &mut Rtc, setup: &Setup, offer_sdp: &str) -> Result<String, SfuError> {
    rtc.add_local_candidate(setup.candidate.clone());
    let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|e| SfuError::BadOffer(e.to_string()))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| SfuError::BadOffer(e.to_string()))?;
    Ok(answer.to_sdp_string())
}

fn new_session(
    id: String,
    participant: String,
    rtc: Rtc,
    role: Role,
    facts: &offer::OfferFacts,
    now: Instant,
) -> Session {
    Session {
        id,
        participant,
        rtc,
        role,
        audio_mid: facts.audio_mid,
        video_mid: facts.video_mid,
        created: now,
        last_rx: now,
        connected: false,
        timeout: now,
        ended: None,
    }
}

/// The video parameters `rtc` negotiated for `mid`, in the remote's order of preference.
fn negotiated(rtc: &Rtc, mid: Option<Mid>) -> Vec<PayloadParams> {
    let Some(media) = mid.and_then(|mid| rtc.media(mid)) else {
        return Vec::new();
    };
    let params = rtc.codec_config().params();
    media
        .remote_pts()
        .iter()
        .filter_map(|pt| params.iter().find(|p| p.pt() == *pt).copied())
        .collect()
}

/// Whether a subscriber's `Rtc` negotiated, for its video `mid`, a payload type matching `sent`.
pub(super) fn can_receive(rtc: &Rtc, mid: Option<Mid>, sent: PayloadParams) -> bool {
    let local = rtc.codec_config().match_params(sent).map(|p| p.pt());
    local.is_some_and(|pt| negotiated(rtc, mid).iter().any(|r| r.pt() == pt))
}

pub(super) fn publish(
    id: String,
    participant: &str,
    offer_sdp: &str,
    setup: &Setup,
) -> Result<(Session, String), SfuError> {
    let facts = offer::inspect(offer_sdp).map_err(SfuError::BadOffer)?;
    let config = match facts.publish_codec().map_err(SfuError::BadOffer)? {
        Some(VideoCodec::H264) => base_config().enable_h264(true),
        Some(VideoCodec::Vp8) => base_config().enable_vp8(true),
        None => base_config(),
    };
    let mut rtc = config.build(setup.now);
    let sdp = answer(&mut rtc, setup, offer_sdp)?;
    let video = negotiated(&rtc, facts.video_mid);
    if facts.video_mid.is_some() && video.is_empty() {
        return Err(SfuError::BadOffer("no usable video codec".into()));
    }
    let order = match facts.video_mid.and_then(|mid| rtc.media(mid)).map(|m| m.rids_rx()) {
        Some(Rids::Specific(rids)) => rids.clone(),
        _ => Vec::new(),
    };
    let role = Role::Publish(Publisher {
        video,
        layers: Layers::new(order),
        meter: RateMeter::new(setup.max_bitrate_bps, setup.now),
        last_pli: Vec::new(),
    });
    Ok((
        new_session(id, participant.to_owned(), rtc, role, &facts, setup.now),
        sdp,
    ))
}

pub(super) fn subscribe(
    id: String,
    source: &Session,
    offer_sdp: &str,
    setup: &Setup,
) -> Result<(Session, String), SfuError> {
    let Role::Publish(publisher) = &source.role else {
        return Err(SfuError::NotPublishing(source.participant.clone()));
    };
    let facts = offer::inspect(offer_sdp).map_err(SfuError::BadOffer)?;
    let mut config = base_config();
    if publisher.video.is_empty() {
        // An audio-only publisher: any video section gets a valid answer and no frames.
        config = config.enable_h264(true).enable_vp8(true);
    }
    for p in &publisher.video {
        let spec = p.spec();
        config.codec_config().add_config(
            p.pt(),
            p.resend(),
            spec.codec,
            spec.clock_rate,
            spec.channels,
            spec.format,
        );
    }
    let mut rtc = config.build(setup.now);
    let sdp = answer(&mut rtc, setup, offer_sdp)?;
    if let (Some(sent), Some(_)) = (publisher.video.first(), facts.video_mid)
        && !can_receive(&rtc, facts.video_mid, *sent)
    {
        return Err(SfuError::BadOffer(format!(
            "the subscriber cannot receive the publisher's video ({})",
            sent.spec().codec
        )));
    }
    let role = Role::Subscribe(Subscriber {
        source: source.id.clone(),
        follower: Follower::default(),
    });
    Ok((
        new_session(id, source.participant.clone(), rtc, role, &facts, setup.now),
        sdp,
    ))
}
