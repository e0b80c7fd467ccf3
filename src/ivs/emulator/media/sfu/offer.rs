//! The facts the SFU needs from an offer before str0m sees it: which m-sections carry the audio
//! and the video, and which video codec family to answer with. str0m parses the SDP properly but
//! does not expose the offered codecs, and its answer keeps the offer's codec order (Chromium
//! lists VP8 first), so choosing H.264 the way IVS does means configuring the `Rtc` for it up front.

use str0m::media::Mid;

/// Chromium's offers are 5–15 KiB; anything far larger is not a browser's.
const MAX_OFFER_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VideoCodec {
    H264,
    Vp8,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct OfferFacts {
    /// The first audio and the first video m-section; the SDK sends one of each.
    pub audio_mid: Option<Mid>,
    pub video_mid: Option<Mid>,
    pub h264: bool,
    pub vp8: bool,
}

impl OfferFacts {
    /// The publisher's codec: H.264 when offered (as IVS), else VP8; None for audio-only offers.
    pub fn publish_codec(&self) -> Result<Option<VideoCodec>, String> {
        match (self.video_mid, self.h264, self.vp8) {
            (None, ..) => Ok(None),
            (Some(_), true, _) => Ok(Some(VideoCodec::H264)),
            (Some(_), false, true) => Ok(Some(VideoCodec::Vp8)),
            (Some(_), false, false) => Err("the video offers neither H264 nor VP8".into()),
        }
    }
}

pub(super) fn inspect(sdp: &str) -> Result<OfferFacts, String> {
    if sdp.len() > MAX_OFFER_BYTES {
        return Err(format!("offer larger than {MAX_OFFER_BYTES} bytes"));
    }
    #[derive(PartialEq)]
    enum Section {
        Session,
        Audio,
        Video,
        Other,
    }
    let mut facts = OfferFacts::default();
    let mut section = Section::Session;
    // Only the first video section's codecs count: that is the one we forward.
    let mut first_video = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            section = match media.split(' ').next() {
                Some("audio") => Section::Audio,
                Some("video") => Section::Video,
                _ => Section::Other,
            };
            first_video = section == Section::Video && facts.video_mid.is_none();
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            let slot = match section {
                Section::Audio => &mut facts.audio_mid,
                Section::Video => &mut facts.video_mid,
                _ => continue,
            };
            slot.get_or_insert(Mid::from(mid));
        } else if let Some(rtpmap) = line.strip_prefix("a=rtpmap:")
            && first_video
        {
            let codec = rtpmap.split(' ').nth(1).unwrap_or("").to_ascii_uppercase();
            facts.h264 |= codec.starts_with("H264/");
            facts.vp8 |= codec.starts_with("VP8/");
        }
    }
    if facts.audio_mid.is_none() && facts.video_mid.is_none() {
        return Err("no audio or video m-section with a mid".into());
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROMIUM_PUBLISH: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
        a=rtpmap:111 opus/48000/2\r\na=rtpmap:63 red/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendrecv\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=rtpmap:102 H264/90000\r\n";

    #[test]
    fn a_chromium_publish_offer_is_answered_with_h264() {
        let facts = inspect(CHROMIUM_PUBLISH).unwrap();
        assert_eq!(facts.audio_mid, Some(Mid::from("0")));
        assert_eq!(facts.video_mid, Some(Mid::from("1")));
        assert!(facts.h264 && facts.vp8);
        assert_eq!(facts.publish_codec(), Ok(Some(VideoCodec::H264)));
    }

    #[test]
    fn vp8_is_the_fallback_and_other_codecs_are_refused() {
        let vp8_only = CHROMIUM_PUBLISH.replace("a=rtpmap:102 H264/90000\r\n", "");
        assert_eq!(inspect(&vp8_only).unwrap().publish_codec(), Ok(Some(VideoCodec::Vp8)));
        let av1_only = vp8_only.replace("VP8/90000", "AV1/90000");
        assert!(inspect(&av1_only).unwrap().publish_codec().is_err());
    }

    #[test]
    fn audio_only_offers_have_no_video_codec() {
        let audio_only = CHROMIUM_PUBLISH.split("m=video").next().unwrap();
        let facts = inspect(audio_only).unwrap();
        assert_eq!((facts.video_mid, facts.publish_codec()), (None, Ok(None)));
    }

    #[test]
    fn garbage_and_huge_offers_are_refused() {
        assert!(inspect("hello").is_err());
        assert!(inspect(&"a".repeat(MAX_OFFER_BYTES + 1)).is_err());
    }
}
