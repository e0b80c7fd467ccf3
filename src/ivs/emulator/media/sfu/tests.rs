//! The SFU end to end on loopback, with str0m peers (the integration tests' WHIP client, minus
//! HTTP) publishing and subscribing through the handle.

#[path = "../../../../../tests/common/webrtc.rs"]
mod webrtc;

use std::time::Duration;

use tokio::sync::mpsc;

use super::{MediaConfig, SessionKind, Sfu, SfuError, SfuEvent};
use webrtc::{Peer, PendingPeer, Role, Video};

const WAIT: Duration = Duration::from_secs(15);

async fn start(cfg: MediaConfig) -> (Sfu, mpsc::Receiver<SfuEvent>) {
    Sfu::start(cfg).await.expect("a loopback UDP socket")
}

fn publisher(video: Video, simulcast: bool, frames: u64) -> Role {
    Role::Publish {
        video,
        simulcast,
        frames,
    }
}

/// Publishes as `participant` and waits until both ends are connected; returns the session id.
async fn publish(sfu: &Sfu, events: &mut mpsc::Receiver<SfuEvent>, participant: &str, role: Role) -> (Peer, String) {
    let pending = PendingPeer::new(role).await.unwrap();
    let answer = sfu.publish(participant, &pending.offer).await.unwrap();
    let peer = pending.accept(&answer.sdp).unwrap();
    peer.wait_connected(WAIT).await.unwrap();
    connected(events, &answer.session).await;
    (peer, answer.session)
}

async fn subscribe(sfu: &Sfu, events: &mut mpsc::Receiver<SfuEvent>, source: &str) -> (Peer, String) {
    let pending = PendingPeer::new(Role::Subscribe { only: None }).await.unwrap();
    let answer = sfu.subscribe(source, &pending.offer).await.unwrap();
    let peer = pending.accept(&answer.sdp).unwrap();
    peer.wait_connected(WAIT).await.unwrap();
    connected(events, &answer.session).await;
    (peer, answer.session)
}

/// The next event that `pick` accepts; others are skipped.
async fn event<T>(events: &mut mpsc::Receiver<SfuEvent>, mut pick: impl FnMut(SfuEvent) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(found) = pick(events.recv().await.expect("the media task is running")) {
                return found;
            }
        }
    })
    .await
    .expect("the expected media event")
}

async fn connected(events: &mut mpsc::Receiver<SfuEvent>, id: &str) -> SessionKind {
    event(events, |e| match e {
        SfuEvent::Connected { session, kind, .. } if session == id => Some(kind),
        _ => None,
    })
    .await
}

async fn publish_ended(events: &mut mpsc::Receiver<SfuEvent>, id: &str) -> &'static str {
    event(events, |e| match e {
        SfuEvent::PublishEnded { session, reason, .. } if session == id => Some(reason),
        _ => None,
    })
    .await
}

/// 90 frames sent after the subscriber joined: at least 90 % arrive, none twice.
async fn frames_flow(video: Video) {
    let (sfu, mut events) = start(MediaConfig::default()).await;
    // --- the publisher connects but holds its frames until someone watches
    let (host, _) = publish(&sfu, &mut events, "host1", publisher(video, false, 0)).await;
    let (viewer, _) = subscribe(&sfu, &mut events, "host1").await;

    // --- 3 s of video
    host.send_frames(90);
    host.wait_for("90 frames sent", WAIT, |p| p.frames_sent() == 90)
        .await
        .unwrap();
    viewer.wait_frames(81, WAIT).await.unwrap();
    assert!(
        viewer.frames_received() <= 90,
        "{} frames for 90 sent",
        viewer.frames_received()
    );
    assert_eq!(viewer.layer_frames(None), viewer.frames_received());
    viewer
        .wait_for("audio", WAIT, |p| p.audio_frames_received() > 0)
        .await
        .unwrap();

    // --- the viewer's arrival asked the publisher for a key frame
    assert!(host.keyframe_requests() >= 1);
    let stats = sfu.stats().await;
    assert_eq!((stats.sessions, stats.publishers, stats.subscribers), (2, 1, 1));
    assert!(
        stats.frames_out >= 81 && stats.bytes_in > 0 && stats.bytes_out > 0,
        "{stats:?}"
    );
    sfu.shutdown().await;
}

#[tokio::test]
async fn h264_frames_reach_the_subscriber() {
    frames_flow(Video::H264).await;
}

#[tokio::test]
async fn vp8_frames_reach_the_subscriber() {
    frames_flow(Video::Vp8).await;
}

#[tokio::test]
async fn a_subscriber_that_cannot_receive_the_publishers_codec_is_refused() {
    let (sfu, mut events) = start(MediaConfig::default()).await;
    let (_host, _) = publish(&sfu, &mut events, "host1", publisher(Video::Vp8, false, 0)).await;
    let h264_only = PendingPeer::new(Role::Subscribe {
        only: Some(Video::H264),
    })
    .await
    .unwrap();
    let refused = sfu.subscribe("host1", &h264_only.offer).await;
    assert!(matches!(refused, Err(SfuError::BadOffer(_))), "{refused:?}");
}

#[tokio::test]
async fn bad_offers_and_absent_publishers_are_refused() {
    let (sfu, _events) = start(MediaConfig::default()).await;
    let viewer = PendingPeer::new(Role::Subscribe { only: None }).await.unwrap();
    let refused = sfu.subscribe("nobody", &viewer.offer).await;
    assert!(
        matches!(&refused, Err(SfuError::NotPublishing(p)) if p == "nobody"),
        "{refused:?}"
    );
    let refused = sfu.publish("host1", "v=0\r\nnot an offer\r\n").await;
    assert!(matches!(refused, Err(SfuError::BadOffer(_))), "{refused:?}");
    assert_eq!(sfu.stats().await.sessions, 0);
}

#[tokio::test]
async fn closing_a_publisher_ends_it_and_its_subscribers() {
    let (sfu, mut events) = start(MediaConfig::default()).await;
    let (host, host_session) = publish(&sfu, &mut events, "host1", publisher(Video::H264, false, u64::MAX)).await;
    let (viewer, viewer_session) = subscribe(&sfu, &mut events, "host1").await;
    viewer.wait_frames(10, WAIT).await.unwrap();

    // --- WHIP DELETE of the publish session
    assert!(sfu.close(&host_session).await);
    assert_eq!(publish_ended(&mut events, &host_session).await, "deleted");
    let reason = event(&mut events, |e| match e {
        SfuEvent::SubscribeEnded { session, reason, .. } if session == viewer_session => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, "source-ended");
    // --- both browsers are told (DTLS close_notify), and the session is gone
    host.wait_for("the publisher's close", WAIT, Peer::closed)
        .await
        .unwrap();
    viewer.wait_for("the viewer's close", WAIT, Peer::closed).await.unwrap();
    assert!(!sfu.close(&host_session).await);
    assert!(!sfu.close_publisher("host1").await);
    assert_eq!(sfu.stats().await.sessions, 0);
}

#[tokio::test]
async fn max_sessions_refuses_more_but_a_republish_replaces() {
    let cfg = MediaConfig {
        max_sessions: 2,
        ..MediaConfig::default()
    };
    let (sfu, mut events) = start(cfg).await;
    let (_host, first) = publish(&sfu, &mut events, "host1", publisher(Video::H264, false, 0)).await;
    let (_viewer, _) = subscribe(&sfu, &mut events, "host1").await;

    let third = PendingPeer::new(Role::Subscribe { only: None }).await.unwrap();
    let refused = sfu.subscribe("host1", &third.offer).await;
    assert!(matches!(refused, Err(SfuError::TooManySessions(2))), "{refused:?}");
    let other = PendingPeer::new(publisher(Video::H264, false, 0)).await.unwrap();
    let refused = sfu.publish("host2", &other.offer).await;
    assert!(matches!(refused, Err(SfuError::TooManySessions(2))), "{refused:?}");

    // --- the same participant publishing again replaces its session (its viewer moves over)
    let again = PendingPeer::new(publisher(Video::H264, false, 0)).await.unwrap();
    let second = sfu.publish("host1", &again.offer).await.unwrap();
    assert_eq!(publish_ended(&mut events, &first).await, "replaced");
    let stats = sfu.stats().await;
    assert_eq!((stats.sessions, stats.publishers), (2, 1), "{second:?}");
}

#[tokio::test]
async fn a_republish_keeps_its_viewers_watching() {
    let (sfu, mut events) = start(MediaConfig::default()).await;
    let (first, first_session) = publish(&sfu, &mut events, "host1", publisher(Video::H264, false, u64::MAX)).await;
    let (viewer, _) = subscribe(&sfu, &mut events, "host1").await;
    viewer.wait_frames(10, WAIT).await.unwrap();

    // --- host1 publishes again without a DELETE (the stage keeps showing it publishing)
    let pending = PendingPeer::new(publisher(Video::H264, false, 0)).await.unwrap();
    let answer = sfu.publish("host1", &pending.offer).await.unwrap();
    assert_eq!(publish_ended(&mut events, &first_session).await, "replaced");
    let second = pending.accept(&answer.sdp).unwrap();
    second.wait_connected(WAIT).await.unwrap();
    first
        .wait_for("the first publisher's close", WAIT, Peer::closed)
        .await
        .unwrap();

    // --- the same viewer session plays the new publisher
    let before = viewer.frames_received();
    second.send_frames(30);
    viewer.wait_frames(before + 27, WAIT).await.unwrap();
    assert!(!viewer.closed());
    assert_eq!(sfu.stats().await.sessions, 2);
}

#[tokio::test]
async fn a_publisher_that_never_connects_times_out() {
    let cfg = MediaConfig {
        ice_timeout: Duration::from_millis(300),
        ..MediaConfig::default()
    };
    let (sfu, mut events) = start(cfg).await;
    // --- an answer that is never used: no connectivity check ever arrives
    let pending = PendingPeer::new(publisher(Video::H264, false, 0)).await.unwrap();
    let answer = sfu.publish("host1", &pending.offer).await.unwrap();
    assert_eq!(publish_ended(&mut events, &answer.session).await, "ice-timeout");
    assert_eq!(sfu.stats().await.publishers, 0);
}

#[tokio::test]
async fn a_simulcast_subscriber_gets_only_the_lowest_layer() {
    let (sfu, mut events) = start(MediaConfig::default()).await;
    let (host, _) = publish(&sfu, &mut events, "host1", publisher(Video::H264, true, 0)).await;
    let (viewer, _) = subscribe(&sfu, &mut events, "host1").await;
    host.send_frames(60);
    viewer.wait_frames(54, WAIT).await.unwrap();
    assert_eq!(viewer.layer_frames(Some("low")), viewer.frames_received());
    let stats = sfu.stats().await;
    // Three layers came in, one went out.
    assert!(stats.frames_in >= 3 * stats.frames_out / 2, "{stats:?}");
}

#[tokio::test]
async fn a_publisher_over_the_bitrate_cap_is_told_then_closed() {
    let cfg = MediaConfig {
        max_bitrate_bps: 100_000,
        ..MediaConfig::default()
    };
    let (sfu, mut events) = start(cfg).await;
    // ~150 kb/s of video plus audio: over the cap every second.
    let (host, session) = publish(&sfu, &mut events, "host1", publisher(Video::H264, false, u64::MAX)).await;
    host.wait_for("a REMB with the cap", WAIT, |p| p.remb_bps().is_some())
        .await
        .unwrap();
    assert_eq!(host.remb_bps(), Some(90_000));
    assert_eq!(publish_ended(&mut events, &session).await, "bitrate");
}

#[tokio::test]
async fn shutdown_ends_every_session_and_the_handle() {
    let (sfu, mut events) = start(MediaConfig::default()).await;
    let (_host, session) = publish(&sfu, &mut events, "host1", publisher(Video::Vp8, false, 0)).await;
    sfu.shutdown().await;
    assert_eq!(publish_ended(&mut events, &session).await, "shutdown");
    let pending = PendingPeer::new(publisher(Video::Vp8, false, 0)).await.unwrap();
    assert!(matches!(
        sfu.publish("host1", &pending.offer).await,
        Err(SfuError::Stopped)
    ));
    assert_eq!(sfu.stats().await, Default::default());
}

/// An answer's m-sections (audio, video), each with the session part prepended.
fn sections(sdp: &str) -> (String, String) {
    let mut parts = sdp.split("m=");
    let session = parts.next().unwrap();
    let (audio, video) = (parts.next().unwrap(), parts.next().unwrap());
    (format!("{session}m={audio}"), format!("{session}m={video}"))
}

/// The offers in `testdata/` are written to the shape ivs-local-media.md §2.2 describes for
/// Chromium and SDK 1.41 (codec lists, directions, simulcast, extensions), not captured ones; the
/// assertions are the answer properties §2.3 saw Chromium accept.
#[tokio::test]
async fn chromium_offers_get_the_answers_chromium_accepts() {
    let (sfu, _events) = start(MediaConfig::default()).await;
    let candidate = format!("127.0.0.1 {} typ host", sfu.local_addr().port());

    // --- publish: audio sendonly, video sendrecv with simulcast, VP8 offered first
    let offer = include_str!("testdata/chromium_publish_simulcast.sdp");
    let answer = sfu.publish("host1", offer).await.unwrap().sdp;
    let (audio, video) = sections(&answer);
    for section in [&audio, &video] {
        assert!(
            section.contains("a=ice-lite") && section.contains("a=setup:passive"),
            "{answer}"
        );
        assert!(!section.contains("a=setup:active"), "{answer}");
    }
    assert!(audio.contains(&candidate) && audio.contains("a=recvonly") && audio.contains("opus/48000/2"));
    assert!(
        video.contains("H264/90000") && !video.contains("VP8") && !video.contains("VP9"),
        "{video}"
    );
    assert!(video.contains("a=simulcast:recv low;mid;hi"), "{video}");

    // --- subscribe: video recvonly with more codecs; answered with the publisher's H.264 only
    let offer = include_str!("testdata/chromium_subscribe.sdp");
    let answer = sfu.subscribe("host1", offer).await.unwrap().sdp;
    let (audio, video) = sections(&answer);
    assert!(audio.contains(&candidate) && audio.contains("a=sendonly") && audio.contains("a=ice-lite"));
    assert!(
        video.contains("a=sendonly") && video.contains("a=setup:passive"),
        "{video}"
    );
    assert!(
        video.contains("profile-level-id=42001f") && !video.contains("f4001f"),
        "{video}"
    );
    assert!(
        !video.contains("VP8") && !video.contains("VP9") && !video.contains("AV1"),
        "{video}"
    );

    // --- a token without the "1.0" version makes the SDK's subscribe audio sendrecv
    let sendrecv = offer.replacen("a=recvonly", "a=sendrecv", 1);
    let answer = sfu.subscribe("host1", &sendrecv).await.unwrap().sdp;
    assert!(sections(&answer).0.contains("a=sendrecv"), "{answer}");
}
