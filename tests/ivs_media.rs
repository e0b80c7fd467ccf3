//! The built-in emulator's media plane without a browser: the stage events socket as the IVS Web
//! SDK speaks it (token as subprotocol, STAGE_STATE, PING, SET_STATE, JOIN_ERROR, DISCONNECT),
//! WHIP publish/subscribe/DELETE with CORS, and real media forwarded through the SFU between
//! WebRTC clients of our own (str0m), replicas included. IVS calls go through the real
//! aws-sdk-ivsrealtime client; tokens are self-signed like stagefleet's.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stagefleet::ivs::aws::{AwsBackend, AwsConfig};
use stagefleet::ivs::backend::{ParticipantFilter, ParticipantState};
use stagefleet::ivs::emulator::media::{MediaConfig, MediaSettings};
use stagefleet::ivs::emulator::{self, EmulatorConfig, EmulatorHandle};
use stagefleet::ivs::token::{Claims, SigningKey, TokenCapabilities};
use stagefleet::ivs::{StageBackend, StageInfo};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use common::webrtc::{WhipPublisher, WhipRefused, WhipSubscriber};

const WAIT: Duration = Duration::from_secs(10);

// --- helpers -------------------------------------------------------------------------------

struct Rig {
    emu: EmulatorHandle,
    ivs: AwsBackend,
    key: SigningKey,
}

async fn rig() -> Rig {
    rig_with(MediaSettings {
        sfu: Some(MediaConfig::default()),
        ..MediaSettings::default()
    })
    .await
}

async fn rig_with(media: MediaSettings) -> Rig {
    let emu = emulator::start(EmulatorConfig {
        enforce_tps: false,
        media,
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let ivs = AwsBackend::new(AwsConfig {
        endpoint_url: Some(emu.endpoint_url()),
        static_credentials: Some(("AKIDTEST".into(), "secret".into())),
        max_attempts: 1,
        ..Default::default()
    })
    .await
    .expect("backend");
    let key = SigningKey::from_der(&SigningKey::generate_pkcs8(), "").unwrap();
    let info = ivs
        .import_public_key("signer", &key.public_key_pem(), &BTreeMap::new())
        .await
        .unwrap();
    let key = key.with_kid(info.arn);
    Rig { emu, ivs, key }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

impl Rig {
    async fn stage(&self, name: &str) -> StageInfo {
        self.ivs.create_stage(name, &BTreeMap::new()).await.unwrap()
    }

    fn token(&self, stage: &StageInfo, jti: &str, caps: TokenCapabilities) -> String {
        sign(&self.key, stage, jti, caps)
    }

    /// (participant id, published) of everyone connected to `stage` now, as ListParticipants says.
    async fn connected(&self, stage: &StageInfo) -> Vec<(String, bool)> {
        let session = self.ivs.get_stage(&stage.arn).await.unwrap().active_session_id;
        if session.is_empty() {
            return vec![];
        }
        let mut list: Vec<(String, bool)> = self
            .ivs
            .list_participants(&stage.arn, &session, ParticipantFilter::All)
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.state == ParticipantState::Connected)
            .map(|p| (p.participant_id, p.published))
            .collect();
        list.sort();
        list
    }

    fn whip(&self, stage: &StageInfo) -> String {
        stage.endpoints.clone().unwrap().whip
    }
}

fn sign(key: &SigningKey, stage: &StageInfo, jti: &str, caps: TokenCapabilities) -> String {
    let endpoints = stage.endpoints.clone().unwrap_or_default();
    key.sign(&Claims {
        exp: now() + 3600,
        iat: now() - 60,
        jti: jti.into(),
        user_id: Some(format!("user-{jti}")),
        resource: stage.arn.clone(),
        topic: stage.id().into(),
        events_url: endpoints.events,
        whip_url: endpoints.whip,
        capabilities: caps,
        attributes: BTreeMap::new(),
        version: "1.0".into(),
    })
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page's events socket, opened the way the SDK opens it.
struct Events {
    socket: Socket,
    /// The subprotocol the server selected.
    selected: Option<String>,
}

impl Events {
    async fn open(stage: &StageInfo, token: &str) -> Events {
        let base = stage.endpoints.clone().unwrap().events;
        let url = format!(
            "{base}?error_over_ws=1&topic={}/publishers&traceid=1-00000000-000000000000000000000000",
            stage.id()
        );
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", token.parse().unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("events socket opens");
        let selected = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_string());
        Events { socket, selected }
    }

    /// The next JSON frame, or None when the server closed the socket.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame within the deadline");
            match message {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next STAGE_STATE whose participants satisfy `f` (earlier ones are skipped), checking
    /// that sequence numbers only rise.
    async fn state_until(&mut self, what: &str, f: impl Fn(&[Value]) -> bool) -> Value {
        let mut last = 0;
        loop {
            let frame = self
                .next()
                .await
                .unwrap_or_else(|| panic!("socket closed waiting for {what}"));
            assert_eq!(frame["type"], "aws:ivs:STAGE_STATE", "{frame}");
            let seq = frame["payload"]["sequenceNumber"].as_u64().unwrap();
            assert!(seq > last, "sequence numbers rise: {seq} after {last}");
            last = seq;
            if f(frame["payload"]["participants"].as_array().unwrap()) {
                return frame;
            }
        }
    }

    /// The next frame that is not a STAGE_STATE (a reply, a refusal, a goodbye).
    async fn next_not_state(&mut self) -> Option<Value> {
        loop {
            let frame = self.next().await?;
            if frame["type"] != "aws:ivs:STAGE_STATE" {
                return Some(frame);
            }
        }
    }

    async fn send(&mut self, v: Value) {
        self.socket.send(Message::Text(v.to_string().into())).await.unwrap();
    }
}

fn ids(participants: &[Value]) -> Vec<&str> {
    let mut ids: Vec<&str> = participants.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort();
    ids
}

fn entry<'a>(participants: &'a [Value], id: &str) -> Option<&'a Value> {
    participants.iter().find(|p| p["id"] == id)
}

// --- the events socket ---------------------------------------------------------------------

#[tokio::test]
async fn an_events_socket_is_a_joined_participant_and_every_socket_sees_the_stage_change() {
    let rig = rig().await;
    let stage = rig.stage("show").await;
    let host_token = rig.token(&stage, "host1", TokenCapabilities::HOST);

    // --- 1. the host's page connects: its token is echoed, and the first frame is the stage
    let mut host = Events::open(&stage, &host_token).await;
    assert_eq!(
        host.selected.as_deref(),
        Some(host_token.as_str()),
        "token echoed as the subprotocol"
    );
    let first = host.state_until("the host itself", |p| ids(p) == ["host1"]).await;
    assert_eq!(
        first["payload"]["serverFeatures"],
        json!([]),
        "HTTP WHIP, not SDP over the socket"
    );
    let me = &first["payload"]["participants"][0];
    assert_eq!(me["userId"], "user-host1");
    assert_eq!(me["isPublishing"], false);
    assert_eq!(rig.connected(&stage).await, vec![("host1".to_string(), false)]);

    // --- 2. a viewer joins: both sockets see both, with one rising sequence per stage
    let mut viewer = Events::open(&stage, &rig.token(&stage, "viewer1", TokenCapabilities::VIEWER)).await;
    let seen_by_viewer = viewer.state_until("both", |p| ids(p) == ["host1", "viewer1"]).await;
    let seen_by_host = host.state_until("both", |p| ids(p) == ["host1", "viewer1"]).await;
    assert_eq!(
        seen_by_host["payload"]["sequenceNumber"], seen_by_viewer["payload"]["sequenceNumber"],
        "one sequence number per stage"
    );

    // --- 3. keep-alive and mute flags
    viewer.send(json!({"type": "PING"})).await;
    assert_eq!(viewer.next().await.unwrap(), json!({"type": "PONG"}));
    host.send(json!({"audioMuted": true, "type": "SET_STATE", "version": "0", "videoStopped": false}))
        .await;
    let muted = viewer
        .state_until("the host muted", |p| {
            entry(p, "host1").is_some_and(|h| h["audioMuted"] == true)
        })
        .await;
    assert_eq!(
        entry(muted["payload"]["participants"].as_array().unwrap(), "host1").unwrap()["videoStopped"],
        false
    );
    host.send(json!({"type": "SOMETHING_NEW", "payload": {}})).await;
    host.send(json!({"type": "PING"})).await;
    assert_eq!(
        host.next_not_state().await.unwrap(),
        json!({"type": "PONG"}),
        "an unknown message type is ignored, the socket lives on"
    );

    // --- 4. the viewer closes its page: it leaves the stage
    viewer.socket.close(None).await.unwrap();
    host.state_until("the viewer gone", |p| ids(p) == ["host1"]).await;
    assert_eq!(rig.connected(&stage).await, vec![("host1".to_string(), false)]);
    rig.emu.shutdown().await;
}

#[tokio::test]
async fn a_forged_or_wrong_token_gets_join_error_and_joins_nobody() {
    let rig = rig().await;
    let stage = rig.stage("show").await;
    let other = rig.stage("other").await;

    // --- a token signed by a key IVS never saw, under the imported key's id
    let forger = SigningKey::from_der(&SigningKey::generate_pkcs8(), "")
        .unwrap()
        .with_kid(rig.key.kid().to_string());
    let forged = sign(&forger, &stage, "mallory", TokenCapabilities::HOST);
    let mut page = Events::open(&stage, &forged).await;
    assert_eq!(
        page.selected.as_deref(),
        Some(forged.as_str()),
        "echoed even when refused"
    );
    let refused = page.next().await.unwrap();
    assert_eq!(refused["type"], "aws:ivs:JOIN_ERROR", "{refused}");
    assert_eq!(refused["payload"]["code"], "TOKEN_INVALID_SIGNATURE");
    assert!(page.next().await.is_none(), "then the socket closes");

    // --- a token for a stage that was deleted
    let gone = rig.token(&other, "late", TokenCapabilities::VIEWER);
    rig.ivs.delete_stage(&other.arn).await.unwrap();
    let mut page = Events::open(&other, &gone).await;
    assert_eq!(page.next().await.unwrap()["payload"]["code"], "STAGE_DELETED");

    // --- garbage
    let mut page = Events::open(&stage, "not-a-token").await;
    assert_eq!(page.next().await.unwrap()["payload"]["code"], "TOKEN_INVALID");

    assert!(rig.connected(&stage).await.is_empty(), "nobody joined");
    rig.emu.shutdown().await;
}

#[tokio::test]
async fn disconnect_participant_and_delete_stage_tell_the_page_why() {
    let rig = rig().await;
    let stage = rig.stage("show").await;
    let mut host = Events::open(&stage, &rig.token(&stage, "host1", TokenCapabilities::HOST)).await;
    let mut viewer = Events::open(&stage, &rig.token(&stage, "viewer1", TokenCapabilities::VIEWER)).await;
    host.state_until("both", |p| p.len() == 2).await;

    // --- 1. the viewer is kicked through the IVS API
    rig.ivs
        .disconnect_participant(&stage.arn, "viewer1", "test")
        .await
        .unwrap();
    let kicked = viewer.next_not_state().await.expect("a DISCONNECT before the close");
    assert_eq!(kicked["type"], "aws:ivs:DISCONNECT");
    assert_eq!(kicked["payload"]["code"], "PARTICIPANT_DISCONNECTED");
    assert!(viewer.next().await.is_none(), "then the socket closes");
    host.state_until("the viewer gone", |p| ids(p) == ["host1"]).await;

    // --- 2. the same token on a second socket replaces the first
    let host_token = rig.token(&stage, "host1", TokenCapabilities::HOST);
    let mut again = Events::open(&stage, &host_token).await;
    again.state_until("the host", |p| ids(p) == ["host1"]).await;
    let replaced = host.next_not_state().await.expect("a DISCONNECT before the close");
    assert_eq!(replaced["payload"]["code"], "TOKEN_REUSED");
    assert_eq!(
        rig.connected(&stage).await,
        vec![("host1".to_string(), false)],
        "the old socket closing does not take the new one's seat"
    );

    // --- 3. the stage is deleted under the page
    rig.ivs.delete_stage(&stage.arn).await.unwrap();
    let deleted = again.next_not_state().await.expect("a DISCONNECT before the close");
    assert_eq!(deleted["payload"]["code"], "STAGE_DELETED");
    rig.emu.shutdown().await;
}

// --- WHIP and media ------------------------------------------------------------------------

/// Frames forwarded over a stretch of `n` sent frames: (sent, received) deltas once the
/// subscriber is receiving.
async fn forwarded(publisher: &WhipPublisher, subscriber: &WhipSubscriber, n: u64) -> (u64, u64) {
    subscriber.wait_frames(1, WAIT).await.expect("the first frame arrives");
    let (sent0, received0) = (publisher.frames_sent(), subscriber.frames_received());
    publisher
        .peer()
        .wait_for("frames to go out", WAIT, |p| p.frames_sent() >= sent0 + n)
        .await
        .unwrap();
    let sent = publisher.frames_sent() - sent0;
    // What was sent has a moment to arrive; a lost frame shows as a shortfall, not a hang.
    let _ = subscriber.wait_frames(received0 + sent, Duration::from_secs(2)).await;
    (sent, subscriber.frames_received() - received0)
}

#[tokio::test]
async fn a_whip_publish_shows_in_the_stage_and_its_frames_reach_a_subscriber() {
    let rig = rig().await;
    let stage = rig.stage("show").await;
    let whip = rig.whip(&stage);
    let host_token = rig.token(&stage, "host1", TokenCapabilities::HOST);
    let viewer_token = rig.token(&stage, "viewer1", TokenCapabilities::VIEWER);
    let mut host = Events::open(&stage, &host_token).await;
    let mut viewer = Events::open(&stage, &viewer_token).await;
    host.state_until("both", |p| p.len() == 2).await;

    // --- 1. the host publishes over WHIP: every page sees isPublishing, and so does the IVS API
    let publisher = WhipPublisher::start(&format!("{whip}/publish/host1"), &host_token)
        .await
        .expect("publish accepted");
    viewer
        .state_until("the host publishing", |p| {
            entry(p, "host1").is_some_and(|h| h["isPublishing"] == true)
        })
        .await;
    assert_eq!(
        rig.connected(&stage).await,
        vec![("host1".to_string(), true), ("viewer1".to_string(), false)]
    );

    // --- 2. the viewer subscribes and gets the host's frames
    let subscriber = WhipSubscriber::start(&format!("{whip}/subscribe/host1"), &viewer_token)
        .await
        .expect("subscribe accepted");
    let (sent, received) = forwarded(&publisher, &subscriber, 60).await;
    assert!(
        received * 10 >= sent * 9 && received <= sent + 1,
        "{received} of {sent} frames forwarded"
    );
    assert!(subscriber.peer().audio_frames_received() > 0, "audio is forwarded too");
    assert!(
        publisher.peer().keyframe_requests() > 0,
        "a new subscriber asks the publisher for a key frame"
    );

    // --- 3. the host stops (WHIP DELETE): it stays in the stage, no longer publishing
    assert_eq!(publisher.stop().await, Some(reqwest::StatusCode::OK));
    viewer
        .state_until("the host not publishing", |p| {
            entry(p, "host1").is_some_and(|h| h["isPublishing"] == false)
        })
        .await;
    assert_eq!(
        rig.connected(&stage).await,
        vec![("host1".to_string(), false), ("viewer1".to_string(), false)]
    );
    let refused = WhipSubscriber::start(&format!("{whip}/subscribe/host1"), &viewer_token)
        .await
        .err()
        .expect("nothing to subscribe to");
    assert_eq!(refused.downcast_ref::<WhipRefused>().unwrap().status, 404);
    subscriber.stop().await;
    rig.emu.shutdown().await;
}

#[tokio::test]
async fn whip_refuses_what_a_token_does_not_allow_and_answers_cors() {
    let rig = rig().await;
    let stage = rig.stage("show").await;
    let whip = rig.whip(&stage);
    let host_token = rig.token(&stage, "host1", TokenCapabilities::HOST);
    let viewer_token = rig.token(&stage, "viewer1", TokenCapabilities::VIEWER);
    let status = |r: anyhow::Result<WhipPublisher>| r.err().unwrap().downcast_ref::<WhipRefused>().unwrap().status;

    // --- publishing needs a joined participant, its own id, the PUBLISH capability, a token
    let not_joined = WhipPublisher::start(&format!("{whip}/publish/host1"), &host_token).await;
    assert_eq!(status(not_joined), 404, "the events socket comes first");
    let _host = Events::open(&stage, &host_token).await;
    let _viewer = Events::open(&stage, &viewer_token).await;
    let someone_else = WhipPublisher::start(&format!("{whip}/publish/viewer1"), &host_token).await;
    assert_eq!(status(someone_else), 403);
    let viewer_publishes = WhipPublisher::start(&format!("{whip}/publish/viewer1"), &viewer_token).await;
    assert_eq!(status(viewer_publishes), 403);
    let no_token = common::webrtc::post_offer(&format!("{whip}/publish/host1"), "", "v=0")
        .await
        .unwrap();
    assert_eq!(no_token.status, 401);
    let garbage = common::webrtc::post_offer(&format!("{whip}/publish/host1"), &host_token, "not sdp")
        .await
        .unwrap();
    assert_eq!(garbage.status, 400, "{}", garbage.body);

    // --- a token for another stage cannot watch this one's host
    let publisher = WhipPublisher::start(&format!("{whip}/publish/host1"), &host_token)
        .await
        .unwrap();
    let other = rig.stage("other").await;
    let outsider = rig.token(&other, "outsider", TokenCapabilities::VIEWER);
    let watch = WhipSubscriber::start(&format!("{whip}/subscribe/host1"), &outsider).await;
    assert_eq!(watch.err().unwrap().downcast_ref::<WhipRefused>().unwrap().status, 404);

    // --- the browser's preflight from another origin is allowed, Location readable
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{whip}/publish/host1"))
        .header("Origin", "http://127.0.0.1:8080")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type,x-stages-sdk",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "http://127.0.0.1:8080");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("DELETE"));
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-stages-sdk")
    );
    assert!(
        h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("Location")
    );
    publisher.stop().await;
    rig.emu.shutdown().await;
}

#[tokio::test]
async fn a_replica_shows_in_the_destination_stage_and_its_viewers_get_the_source_publishers_frames() {
    let rig = rig().await;
    let origin = rig.stage("origin").await;
    let replica = rig.stage("replica").await;
    let host_token = rig.token(&origin, "host1", TokenCapabilities::HOST);
    let _host = Events::open(&origin, &host_token).await;
    let publisher = WhipPublisher::start(&format!("{}/publish/host1", rig.whip(&origin)), &host_token)
        .await
        .unwrap();
    let viewer_token = rig.token(&replica, "far-viewer", TokenCapabilities::VIEWER);
    let mut viewer = Events::open(&replica, &viewer_token).await;
    viewer
        .state_until("just the viewer", |p| ids(p) == ["far-viewer"])
        .await;

    // --- 1. the host is replicated: the replica stage's pages see it publishing there
    rig.ivs
        .start_participant_replication(&origin.arn, &replica.arn, "host1", 0, &BTreeMap::new())
        .await
        .unwrap();
    viewer
        .state_until("the replica publishing", |p| {
            entry(p, "host1").is_some_and(|h| h["isPublishing"] == true)
        })
        .await;

    // --- 2. subscribing to it in the replica stage is served from the origin's publisher
    let subscriber = WhipSubscriber::start(&format!("{}/subscribe/host1", rig.whip(&replica)), &viewer_token)
        .await
        .expect("subscribe to the replica");
    let (sent, received) = forwarded(&publisher, &subscriber, 30).await;
    assert!(
        received * 10 >= sent * 9,
        "{received} of {sent} frames through the replica"
    );

    // --- 3. the host stops publishing: the replica goes with it
    publisher.stop().await;
    viewer
        .state_until("the replica gone", |p| {
            entry(p, "host1").is_none_or(|h| h["isPublishing"] == false)
        })
        .await;
    subscriber.stop().await;
    rig.emu.shutdown().await;
}

#[tokio::test]
async fn sockets_past_the_cap_are_refused_with_join_error_and_a_freed_slot_is_reused() {
    let rig = rig_with(MediaSettings {
        sfu: None,
        max_sockets: 1,
    })
    .await;
    let stage = rig.stage("show").await;
    let mut first = Events::open(&stage, &rig.token(&stage, "one", TokenCapabilities::VIEWER)).await;
    first.state_until("the first", |p| ids(p) == ["one"]).await;

    // --- a second socket finds no room, and joins nobody
    let mut second = Events::open(&stage, &rig.token(&stage, "two", TokenCapabilities::VIEWER)).await;
    let refused = second.next().await.unwrap();
    assert_eq!(refused["type"], "aws:ivs:JOIN_ERROR", "{refused}");
    assert!(
        refused["payload"]["message"].as_str().unwrap().contains("maximum of 1"),
        "{refused}"
    );
    assert_eq!(rig.connected(&stage).await, vec![("one".to_string(), false)]);

    // --- the first leaves: its slot takes the next page
    first.socket.close(None).await.unwrap();
    common::eventually(WAIT, "the first to leave", || async {
        rig.connected(&stage).await.is_empty().then_some(())
    })
    .await;
    let mut third = Events::open(&stage, &rig.token(&stage, "three", TokenCapabilities::VIEWER)).await;
    third.state_until("the third", |p| ids(p) == ["three"]).await;
    rig.emu.shutdown().await;
}
