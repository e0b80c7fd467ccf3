//! The real aws-sdk-ivsrealtime client, through `AwsBackend` (and raw where the backend hides
//! something), against the built-in emulator over HTTP on 127.0.0.1: every operation's success
//! path and its errors, quotas, throttling, faults, participant joins, and the state file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_ivsrealtime::config::retry::RetryConfig;
use aws_sdk_ivsrealtime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ivsrealtime::error::ProvideErrorMetadata;
use serde_json::{Value, json};
use stagefleet::ivs::aws::{AwsBackend, AwsConfig};
use stagefleet::ivs::backend::{
    Capabilities, ParticipantFilter, ParticipantState, ReplicationState, ReplicationType, TokenRequest,
};
use stagefleet::ivs::emulator::{self, EmulatorConfig, EmulatorHandle, Faults};
use stagefleet::ivs::token::{Claims, SigningKey, TokenCapabilities};
use stagefleet::ivs::{BackendError, StageBackend, StageInfo};

// --- helpers -------------------------------------------------------------------------------

/// An emulator without TPS quotas unless a test wants them: most tests are about behaviour.
async fn emulator_with(cfg: EmulatorConfig) -> EmulatorHandle {
    emulator::start(cfg).await.expect("emulator starts")
}

async fn emulator() -> EmulatorHandle {
    emulator_with(EmulatorConfig {
        enforce_tps: false,
        ..Default::default()
    })
    .await
}

fn backend_config(emu: &EmulatorHandle) -> AwsConfig {
    AwsConfig {
        endpoint_url: Some(emu.endpoint_url()),
        static_credentials: Some(("AKIDTEST".into(), "secret".into())),
        max_attempts: 2,
        rates: BTreeMap::new(),
        ..Default::default()
    }
}

async fn backend(emu: &EmulatorHandle) -> AwsBackend {
    AwsBackend::new(backend_config(emu)).await.expect("backend")
}

/// The SDK client with retries off, to see exactly what the emulator answers.
fn raw_client(emu: &EmulatorHandle) -> aws_sdk_ivsrealtime::Client {
    let conf = aws_sdk_ivsrealtime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(emu.endpoint_url())
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_ivsrealtime::Client::from_conf(conf)
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A fresh P-384 key imported into the emulator, ready to sign with its ARN as `kid`.
async fn imported_key(ivs: &AwsBackend, name: &str) -> SigningKey {
    let key = SigningKey::from_der(&SigningKey::generate_pkcs8(), "").unwrap();
    let info = ivs
        .import_public_key(name, &key.public_key_pem(), &BTreeMap::new())
        .await
        .unwrap();
    key.with_kid(info.arn)
}

fn claims(stage: &StageInfo, jti: &str, caps: TokenCapabilities, exp: i64) -> Claims {
    let endpoints = stage.endpoints.clone().unwrap_or_default();
    Claims {
        exp,
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
    }
}

async fn post(emu: &EmulatorHandle, path: &str, body: Value) -> (u16, Value) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(format!("{}{path}", emu.endpoint_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn join(emu: &EmulatorHandle, token: &str, publish: bool) -> (u16, Value) {
    post(emu, "/_emulator/join", json!({"token": token, "publish": publish})).await
}

async fn emulator_state(emu: &EmulatorHandle) -> Value {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/_emulator/state", emu.endpoint_url());
    http.get(url).send().await.unwrap().json().await.unwrap()
}

// --- stages --------------------------------------------------------------------------------

#[tokio::test]
async fn stages_are_created_read_listed_and_deleted() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;

    // --- 1. create a tagged stage: ARN, idle session, endpoints from the emulator's address
    let stage = ivs
        .create_stage("pool-1", &tags(&[("fleet", "a"), ("slot", "1")]))
        .await
        .unwrap();
    assert!(stage.arn.starts_with("arn:aws:ivs:us-east-1:123456789012:stage/"));
    assert_eq!(stage.id().len(), 12);
    assert_eq!(stage.active_session_id, "");
    let endpoints = stage.endpoints.clone().unwrap();
    assert_eq!(endpoints.events, format!("ws://{}/events", emu.addr));
    assert_eq!(endpoints.whip, format!("http://{}/whip", emu.addr));
    assert_eq!(endpoints.rtmps, format!("rtmps://{}/app/", emu.addr));

    // --- 2. read it back; list by tag (summaries carry tags, not endpoints)
    assert_eq!(ivs.get_stage(&stage.arn).await.unwrap(), stage);
    ivs.create_stage("pool-2", &tags(&[("fleet", "b")])).await.unwrap();
    let fleet_a = ivs.list_stages(&tags(&[("fleet", "a")])).await.unwrap();
    assert_eq!(
        fleet_a.iter().map(|s| s.arn.as_str()).collect::<Vec<_>>(),
        vec![stage.arn.as_str()]
    );
    assert_eq!(fleet_a[0].endpoints, None);
    assert_eq!(ivs.list_stages(&BTreeMap::new()).await.unwrap().len(), 2);

    // --- 3. delete it; it is gone for good
    ivs.delete_stage(&stage.arn).await.unwrap();
    assert!(matches!(
        ivs.get_stage(&stage.arn).await,
        Err(BackendError::NotFound(_))
    ));
    assert!(matches!(
        ivs.delete_stage(&stage.arn).await,
        Err(BackendError::NotFound(_))
    ));

    // --- 4. invalid input is refused by the service, as the SDK checks nothing itself
    let bad_name = ivs.create_stage("no spaces allowed", &BTreeMap::new()).await;
    assert!(matches!(bad_name, Err(BackendError::Validation(_))), "{bad_name:?}");
    let many: BTreeMap<String, String> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
    assert!(matches!(
        ivs.create_stage("t", &many).await,
        Err(BackendError::Validation(_))
    ));
    assert!(matches!(
        ivs.get_stage("not-an-arn").await,
        Err(BackendError::Validation(_))
    ));
    emu.shutdown().await;
}

#[tokio::test]
async fn the_stage_quota_is_answered_with_quota_exceeded() {
    let emu = emulator_with(EmulatorConfig {
        enforce_tps: false,
        max_stages: 2,
        ..Default::default()
    })
    .await;
    let ivs = backend(&emu).await;
    ivs.create_stage("a", &BTreeMap::new()).await.unwrap();
    ivs.create_stage("b", &BTreeMap::new()).await.unwrap();
    let third = ivs.create_stage("c", &BTreeMap::new()).await;
    assert!(matches!(third, Err(BackendError::QuotaExceeded(_))), "{third:?}");
}

#[tokio::test]
async fn list_stages_pages_through_more_than_a_hundred_stages() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;
    for i in 0..105 {
        let parity = if i % 2 == 0 { "even" } else { "odd" };
        ivs.create_stage(&format!("s{i}"), &tags(&[("parity", parity)]))
            .await
            .unwrap();
    }
    // The raw API pages at 100 and hands out a token; the backend follows it to the end.
    let raw = raw_client(&emu);
    let first = raw.list_stages().max_results(100).send().await.unwrap();
    assert_eq!(first.stages().len(), 100);
    let token = first.next_token().expect("a second page").to_string();
    let second = raw
        .list_stages()
        .max_results(100)
        .next_token(token)
        .send()
        .await
        .unwrap();
    assert_eq!((second.stages().len(), second.next_token()), (5, None));
    assert_eq!(ivs.list_stages(&BTreeMap::new()).await.unwrap().len(), 105);
    assert_eq!(ivs.list_stages(&tags(&[("parity", "even")])).await.unwrap().len(), 53);
    let err = raw.list_stages().max_results(101).send().await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"));
}

// --- public keys ---------------------------------------------------------------------------

#[tokio::test]
async fn public_keys_are_imported_listed_and_deleted_within_their_quota() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;
    let raw = raw_client(&emu);

    // --- 1. import: ARN, colon-hex SHA-256 fingerprint, material kept
    let key = SigningKey::from_der(&SigningKey::generate_pkcs8(), "").unwrap();
    let info = ivs
        .import_public_key("signer-1", &key.public_key_pem(), &tags(&[("o", "1")]))
        .await
        .unwrap();
    assert!(info.arn.starts_with("arn:aws:ivs:us-east-1:123456789012:public-key/"));
    assert_eq!(
        (
            info.name.as_str(),
            info.fingerprint.len(),
            info.fingerprint.matches(':').count()
        ),
        ("signer-1", 95, 31)
    );
    let got = raw.get_public_key().arn(&info.arn).send().await.unwrap();
    assert_eq!(
        got.public_key().unwrap().public_key_material(),
        Some(key.public_key_pem().as_str())
    );

    // --- 2. the same material twice is a conflict; non-P-384 material is invalid
    let again = ivs
        .import_public_key("copy", &key.public_key_pem(), &BTreeMap::new())
        .await;
    assert!(matches!(again, Err(BackendError::Conflict(_))), "{again:?}");
    let p256 = aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING);
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;
    let p256_pem = stagefleet::ivs::token::to_pem("PUBLIC KEY", p256.unwrap().public_key().as_der().unwrap().as_ref());
    let wrong_curve = ivs.import_public_key("p256", &p256_pem, &BTreeMap::new()).await;
    assert!(
        matches!(wrong_curve, Err(BackendError::Validation(_))),
        "{wrong_curve:?}"
    );
    let garbage = ivs.import_public_key("junk", "not a pem", &BTreeMap::new()).await;
    assert!(matches!(garbage, Err(BackendError::Validation(_))));

    // --- 3. three keys per region, the fourth is over quota
    imported_key(&ivs, "signer-2").await;
    imported_key(&ivs, "signer-3").await;
    let fourth = ivs
        .import_public_key(
            "signer-4",
            &SigningKey::from_der(&SigningKey::generate_pkcs8(), "")
                .unwrap()
                .public_key_pem(),
            &BTreeMap::new(),
        )
        .await;
    assert!(matches!(fourth, Err(BackendError::QuotaExceeded(_))), "{fourth:?}");
    assert_eq!(raw.list_public_keys().send().await.unwrap().public_keys().len(), 3);

    // --- 4. delete frees the slot; the key is gone
    ivs.delete_public_key(&info.arn).await.unwrap();
    let gone = raw.get_public_key().arn(&info.arn).send().await.unwrap_err();
    assert_eq!(gone.code(), Some("ResourceNotFoundException"));
    assert!(matches!(
        ivs.delete_public_key(&info.arn).await,
        Err(BackendError::NotFound(_))
    ));
    assert_eq!(raw.list_public_keys().send().await.unwrap().public_keys().len(), 2);
}

// --- participant tokens and joins -----------------------------------------------------------

#[tokio::test]
async fn api_tokens_have_bounded_durations_and_admit_their_holder() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;
    let stage = ivs.create_stage("tokens", &BTreeMap::new()).await.unwrap();
    let viewer = TokenRequest {
        user_id: "viewer-1".into(),
        attributes: tags(&[("seat", "7")]),
        capabilities: Capabilities {
            publish: false,
            subscribe: true,
        },
        duration_minutes: 720,
    };

    // --- 1. a token: 12-character participant id, expiry 12 h out
    let issued = ivs.create_participant_token(&stage.arn, &viewer).await.unwrap();
    assert_eq!(issued.participant_id.len(), 12);
    assert!(
        (issued.expires_at - (now() + 720 * 60)).abs() <= 5,
        "expires {}",
        issued.expires_at
    );

    // --- 2. durations outside 1..20160 minutes and unknown stages are refused
    for minutes in [0, 20_161] {
        let bad = ivs
            .create_participant_token(
                &stage.arn,
                &TokenRequest {
                    duration_minutes: minutes,
                    ..viewer.clone()
                },
            )
            .await;
        assert!(matches!(bad, Err(BackendError::Validation(_))), "{minutes}: {bad:?}");
    }
    let missing = stage.arn.replace(stage.id(), "AAAAAAAAAAAA");
    assert!(matches!(
        ivs.create_participant_token(&missing, &viewer).await,
        Err(BackendError::NotFound(_))
    ));

    // --- 3. the token joins as a subscriber, but may not publish
    let (status, body) = join(&emu, &issued.token, true).await;
    assert_eq!((status, body["__type"].as_str()), (403, Some("AccessDeniedException")));
    let (status, body) = join(&emu, &issued.token, false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["participantId"], issued.participant_id.as_str());
    let session = ivs.get_stage(&stage.arn).await.unwrap().active_session_id;
    assert_eq!(session, body["sessionId"].as_str().unwrap());
    let listed = ivs
        .list_participants(&stage.arn, &session, ParticipantFilter::Connected)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|p| p.user_id.as_str()).collect::<Vec<_>>(),
        vec!["viewer-1"]
    );
}

#[tokio::test]
async fn self_signed_tokens_join_only_when_everything_checks_out() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;
    let stage = ivs.create_stage("main", &BTreeMap::new()).await.unwrap();
    let other = ivs.create_stage("other", &BTreeMap::new()).await.unwrap();
    let key = imported_key(&ivs, "signer").await;
    let later = now() + 3600;

    // --- 1. a viewer and a host join; the host appears as a published participant
    let (status, body) = join(
        &emu,
        &key.sign(&claims(&stage, "viewer-1", TokenCapabilities::VIEWER, later)),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let host = key.sign(&claims(&stage, "host-1", TokenCapabilities::HOST, later));
    assert_eq!(join(&emu, &host, true).await.0, 200);
    assert_eq!(
        join(&emu, &host, true).await.0,
        200,
        "rejoining with one token replaces the connection"
    );
    let session = body["sessionId"].as_str().unwrap();
    let published = ivs
        .list_participants(&stage.arn, session, ParticipantFilter::Published)
        .await
        .unwrap();
    assert_eq!(
        published.iter().map(|p| p.participant_id.as_str()).collect::<Vec<_>>(),
        vec!["host-1"]
    );
    let summary = emulator_state(&emu).await;
    let main = summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["arn"] == stage.arn.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (main["publishers"].as_u64(), main["subscribers"].as_u64()),
        (Some(1), Some(1))
    );

    // --- 2. refused: unknown key, expired, wrong stage, viewer publishing
    let stranger = SigningKey::from_der(&SigningKey::generate_pkcs8(), key.kid()).unwrap();
    let refusals = [
        (
            "non-imported key",
            stranger.sign(&claims(&stage, "x1", TokenCapabilities::HOST, later)),
            false,
            403,
        ),
        (
            "expired",
            key.sign(&claims(&stage, "x2", TokenCapabilities::HOST, now() - 1)),
            false,
            403,
        ),
        (
            "viewer publishing",
            key.sign(&claims(&stage, "x3", TokenCapabilities::VIEWER, later)),
            true,
            403,
        ),
    ];
    for (why, token, publish, want) in refusals {
        let (status, body) = join(&emu, &token, publish).await;
        assert_eq!(status, want, "{why}: {body}");
    }
    let mut crossed = claims(&stage, "x4", TokenCapabilities::VIEWER, later);
    crossed.topic = other.id().into();
    assert_eq!(
        join(&emu, &key.sign(&crossed), false).await.0,
        403,
        "topic of another stage"
    );
    let for_main = key.sign(&claims(&stage, "x5", TokenCapabilities::VIEWER, later));
    let (status, _) = post(
        &emu,
        "/_emulator/join",
        json!({"token": for_main, "stageArn": other.arn}),
    )
    .await;
    assert_eq!(status, 403, "token for another stage");

    // --- 3. twelve publishers fit; the thirteenth is over the stage quota
    for i in 2..=12 {
        let token = key.sign(&claims(&stage, &format!("host-{i}"), TokenCapabilities::HOST, later));
        assert_eq!(join(&emu, &token, true).await.0, 200, "publisher {i}");
    }
    let thirteenth = key.sign(&claims(&stage, "host-13", TokenCapabilities::HOST, later));
    let (status, body) = join(&emu, &thirteenth, true).await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (402, Some("ServiceQuotaExceededException"))
    );
    assert!(body["message"].as_str().unwrap().contains("12 publishers"));

    // --- 4. deleting the key stops future joins with its tokens
    ivs.delete_public_key(key.kid()).await.unwrap();
    let late = key.sign(&claims(&stage, "late", TokenCapabilities::VIEWER, later));
    assert_eq!(join(&emu, &late, false).await.0, 403);
}

#[tokio::test]
async fn disconnected_participants_stay_listed_as_disconnected_in_their_session() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;
    let stage = ivs.create_stage("kick", &BTreeMap::new()).await.unwrap();
    let key = imported_key(&ivs, "signer").await;
    let later = now() + 3600;
    for jti in ["stays", "kicked"] {
        assert_eq!(
            join(
                &emu,
                &key.sign(&claims(&stage, jti, TokenCapabilities::VIEWER, later)),
                false
            )
            .await
            .0,
            200
        );
    }
    let session = ivs.get_stage(&stage.arn).await.unwrap().active_session_id;

    ivs.disconnect_participant(&stage.arn, "kicked", "moderation")
        .await
        .unwrap();
    let all = ivs
        .list_participants(&stage.arn, &session, ParticipantFilter::All)
        .await
        .unwrap();
    let states: BTreeMap<_, _> = all.iter().map(|p| (p.participant_id.as_str(), p.state)).collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("stays", ParticipantState::Connected),
            ("kicked", ParticipantState::Disconnected)
        ])
    );
    let raw = raw_client(&emu);
    let gone = raw
        .list_participants()
        .stage_arn(&stage.arn)
        .session_id(&session)
        .filter_by_state(aws_sdk_ivsrealtime::types::ParticipantState::Disconnected)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.participants().len(), 1);
    let again = ivs.disconnect_participant(&stage.arn, "kicked", "twice").await;
    assert!(matches!(again, Err(BackendError::NotFound(_))), "{again:?}");

    // The last one leaving ends the session; the stage is idle again.
    let (status, _) = post(
        &emu,
        "/_emulator/leave",
        json!({"stageArn": stage.arn, "participantId": "stays"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ivs.get_stage(&stage.arn).await.unwrap().active_session_id, "");
}

#[tokio::test]
async fn list_participants_needs_a_session_of_that_stage() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;
    let stage = ivs.create_stage("sessions", &BTreeMap::new()).await.unwrap();
    let unknown = ivs
        .list_participants(&stage.arn, "st-AAAAAAAAAAAAA", ParticipantFilter::All)
        .await;
    assert!(matches!(unknown, Err(BackendError::NotFound(_))), "{unknown:?}");
    let malformed = ivs
        .list_participants(&stage.arn, "session-1", ParticipantFilter::All)
        .await;
    assert!(matches!(malformed, Err(BackendError::Validation(_))), "{malformed:?}");
}

// --- replication ---------------------------------------------------------------------------

#[tokio::test]
async fn a_publisher_replicates_into_at_most_five_stages() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;
    let key = imported_key(&ivs, "signer").await;
    let later = now() + 3600;
    let source = ivs.create_stage("origin", &BTreeMap::new()).await.unwrap();
    let mut destinations = vec![];
    for i in 0..6 {
        destinations.push(ivs.create_stage(&format!("edge-{i}"), &BTreeMap::new()).await.unwrap());
    }
    let no_attrs = BTreeMap::new();

    // --- 1. a participant that is connected but not publishing cannot be replicated (409)
    let viewer = key.sign(&claims(&source, "watcher", TokenCapabilities::HOST, later));
    assert_eq!(join(&emu, &viewer, false).await.0, 200);
    let not_publishing = ivs
        .start_participant_replication(&source.arn, &destinations[0].arn, "watcher", 0, &no_attrs)
        .await;
    assert!(
        matches!(&not_publishing, Err(BackendError::Conflict(m)) if m.contains("watcher is not publishing")),
        "{not_publishing:?}"
    );
    let absent = ivs
        .start_participant_replication(&source.arn, &destinations[0].arn, "nobody", 0, &no_attrs)
        .await;
    assert!(matches!(absent, Err(BackendError::NotFound(_))), "{absent:?}");

    // --- 2. the host publishes and is replicated into five stages; a sixth is over quota
    let host = key.sign(&claims(&source, "host", TokenCapabilities::HOST, later));
    assert_eq!(join(&emu, &host, true).await.0, 200);
    for dest in &destinations[..5] {
        ivs.start_participant_replication(&source.arn, &dest.arn, "host", 30, &tags(&[("via", "origin")]))
            .await
            .unwrap();
    }
    let sixth = ivs
        .start_participant_replication(&source.arn, &destinations[5].arn, "host", 0, &no_attrs)
        .await;
    assert!(matches!(sixth, Err(BackendError::QuotaExceeded(_))), "{sixth:?}");
    let window = ivs
        .start_participant_replication(&source.arn, &destinations[5].arn, "host", 301, &no_attrs)
        .await;
    assert!(matches!(window, Err(BackendError::Validation(_))), "{window:?}");

    // --- 3. the replica shows up in a destination as a published REPLICA
    let edge = ivs.get_stage(&destinations[0].arn).await.unwrap();
    let there = ivs
        .list_participants(&edge.arn, &edge.active_session_id, ParticipantFilter::Connected)
        .await
        .unwrap();
    assert_eq!(there.len(), 1);
    assert_eq!((there[0].participant_id.as_str(), there[0].published), ("host", true));
    assert_eq!(there[0].replication_type, ReplicationType::Replica);
    let origin = ivs.get_stage(&source.arn).await.unwrap();
    let here = ivs
        .list_participants(&origin.arn, &origin.active_session_id, ParticipantFilter::Published)
        .await
        .unwrap();
    assert_eq!(here[0].replication_type, ReplicationType::Source);
    let replicas = ivs.list_participant_replicas(&source.arn, "host").await.unwrap();
    assert_eq!(replicas.len(), 5);
    assert!(replicas.iter().all(|r| r.state == ReplicationState::Active));

    // --- 4. stopping one removes its replica and frees a slot; a repeat stop is not found
    ivs.stop_participant_replication(&source.arn, &destinations[0].arn, "host")
        .await
        .unwrap();
    assert_eq!(
        ivs.get_stage(&destinations[0].arn).await.unwrap().active_session_id,
        "",
        "replica gone, stage idle"
    );
    let again = ivs
        .stop_participant_replication(&source.arn, &destinations[0].arn, "host")
        .await;
    assert!(matches!(again, Err(BackendError::NotFound(_))), "{again:?}");
    ivs.start_participant_replication(&source.arn, &destinations[5].arn, "host", 0, &no_attrs)
        .await
        .unwrap();

    // --- 5. deleting a destination stops its replication; disconnecting the host stops the rest
    ivs.delete_stage(&destinations[1].arn).await.unwrap();
    let states = |rs: Vec<stagefleet::ivs::backend::ReplicaInfo>| {
        rs.iter().filter(|r| r.state == ReplicationState::Active).count()
    };
    assert_eq!(
        states(ivs.list_participant_replicas(&source.arn, "host").await.unwrap()),
        4
    );
    ivs.disconnect_participant(&source.arn, "host", "end of show")
        .await
        .unwrap();
    assert_eq!(
        states(ivs.list_participant_replicas(&source.arn, "host").await.unwrap()),
        0
    );
    let idle = ivs.get_stage(&destinations[5].arn).await.unwrap();
    assert_eq!(idle.active_session_id, "");
    let raw = raw_client(&emu);
    let bad_page = raw
        .list_participant_replicas()
        .source_stage_arn(&source.arn)
        .participant_id("host")
        .max_results(51)
        .send()
        .await;
    assert_eq!(bad_page.unwrap_err().code(), Some("ValidationException"));
}

// --- quotas, throttling and faults --------------------------------------------------------

#[tokio::test]
async fn a_burst_is_throttled_raw_but_paced_through_the_backend() {
    // --- 1. raw SDK, retries off: a burst of 8 CreateStage gets exactly the 5 TPS bucket
    let emu = emulator_with(EmulatorConfig::default()).await;
    let raw = raw_client(&emu);
    let burst = (0..8).map(|i| raw.create_stage().name(format!("raw-{i}")).send());
    let results = futures_util::future::join_all(burst).await;
    let throttled: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.code())
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    assert_eq!(throttled, vec![Some("ThrottlingException"); 3]);

    // --- 2. the backend, also without retries, waits for its own bucket: all 8 succeed.
    // Its rate is set a little under the server's so request jitter cannot outrun the quota.
    let emu = emulator_with(EmulatorConfig::default()).await;
    let rates = BTreeMap::from([("CreateStage".to_string(), 4.0)]);
    let ivs = AwsBackend::new(AwsConfig {
        max_attempts: 1,
        rates,
        ..backend_config(&emu)
    })
    .await
    .unwrap();
    let started = Instant::now();
    let burst = (0..8).map(|i| {
        let ivs = &ivs;
        async move { ivs.create_stage(&format!("paced-{i}"), &BTreeMap::new()).await }
    });
    let results = futures_util::future::join_all(burst).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the limiter spaced the calls"
    );
}

#[tokio::test]
async fn injected_faults_surface_after_the_sdk_retries() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;
    let stage = ivs.create_stage("faulty", &BTreeMap::new()).await.unwrap();

    emu.set_faults(Faults {
        error_rate: 1.0,
        ..Default::default()
    });
    let err = ivs.get_stage(&stage.arn).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unavailable(m) if m.contains("InternalServerException")),
        "{err:?}"
    );

    emu.set_faults(Faults {
        throttle_rate: 1.0,
        ..Default::default()
    });
    assert!(matches!(
        ivs.get_stage(&stage.arn).await,
        Err(BackendError::Throttled(_))
    ));

    emu.set_faults(Faults::default());
    assert_eq!(ivs.get_stage(&stage.arn).await.unwrap().arn, stage.arn, "healthy again");
}

#[tokio::test]
async fn injected_latency_makes_calls_slower() {
    let emu = emulator().await;
    let ivs = backend(&emu).await;
    let stage = ivs.create_stage("slow", &BTreeMap::new()).await.unwrap();
    let timed = || async {
        let t = Instant::now();
        ivs.get_stage(&stage.arn).await.unwrap();
        t.elapsed()
    };
    let fast = timed().await;
    emu.set_faults(Faults {
        latency_ms: 300,
        ..Default::default()
    });
    let slow = timed().await;
    assert!(slow >= Duration::from_millis(300), "{slow:?}");
    assert!(slow > fast, "{slow:?} vs {fast:?}");
}

// --- credentials ---------------------------------------------------------------------------

/// Runs [`child_without_credentials`] in a fresh process with no AWS environment, so the
/// credential chain is exercised without mutating this process's environment.
#[test]
fn without_credentials_a_call_fails_fast_as_unavailable() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "child_without_credentials",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        child.env_remove(name);
    }
    let dir = tempfile::tempdir().unwrap();
    child
        .env("STAGEFLEET_NO_CREDENTIALS_CHILD", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.path().join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("credentials"));
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "the child test did not run:\n{stdout}");
}

#[tokio::test]
#[ignore = "run by without_credentials_a_call_fails_fast_as_unavailable in a clean environment"]
async fn child_without_credentials() {
    if std::env::var("STAGEFLEET_NO_CREDENTIALS_CHILD").as_deref() != Ok("1") {
        return; // only meaningful in the clean environment the parent test sets up
    }
    let emu = emulator().await;
    let cfg = AwsConfig {
        static_credentials: None,
        max_attempts: 1,
        ..backend_config(&emu)
    };
    let ivs = AwsBackend::new(cfg).await.unwrap();
    let started = Instant::now();
    let err = ivs.list_stages(&BTreeMap::new()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    println!("no-credentials error: {err}");
    assert!(
        matches!(&err, BackendError::Unavailable(m) if m.contains("credentials")),
        "{err:?}"
    );
}

// --- persistence ---------------------------------------------------------------------------

#[tokio::test]
async fn a_restarted_emulator_finds_its_stages_and_keys_in_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmulatorConfig {
        enforce_tps: false,
        state_file: Some(dir.path().join("ivs.json")),
        ..Default::default()
    };

    // --- 1. first life: a stage and a key
    let emu = emulator_with(cfg.clone()).await;
    let ivs = backend(&emu).await;
    let stage = ivs.create_stage("durable", &tags(&[("keep", "yes")])).await.unwrap();
    let key = imported_key(&ivs, "durable-key").await;
    emu.shutdown().await;

    // --- 2. second life on another port: same stage, same key, and the key still admits tokens
    let emu = emulator_with(cfg).await;
    let ivs = backend(&emu).await;
    let again = ivs.get_stage(&stage.arn).await.unwrap();
    assert_eq!(
        (again.name.as_str(), again.tags.clone()),
        ("durable", tags(&[("keep", "yes")]))
    );
    let keys = raw_client(&emu).list_public_keys().send().await.unwrap();
    assert_eq!(
        keys.public_keys().iter().filter_map(|k| k.arn()).collect::<Vec<_>>(),
        vec![key.kid()]
    );
    let token = key.sign(&claims(&again, "back", TokenCapabilities::VIEWER, now() + 600));
    assert_eq!(join(&emu, &token, false).await.0, 200);
}

// --- wire format ---------------------------------------------------------------------------

#[tokio::test]
async fn answers_use_the_aws_rest_json_envelope() {
    let emu = emulator().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = |op: &str, body: Value| {
        // SigV4-style headers are accepted and not checked.
        http.post(format!("{}/{op}", emu.endpoint_url()))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/ivs/aws4_request",
            )
            .header("x-amz-date", "20260101T000000Z")
            .json(&body)
            .send()
    };

    // --- 1. success: 200, JSON, a request id; CreateStage also mints the configured tokens
    let configs = json!([{"userId": "host", "capabilities": ["PUBLISH", "SUBSCRIBE"]}, {"duration": 60}]);
    let r = call(
        "CreateStage",
        json!({"name": "wire", "participantTokenConfigurations": configs}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(r.headers().contains_key("x-amzn-requestid"));
    let body: Value = r.json().await.unwrap();
    let tokens = body["participantTokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        (tokens[0]["duration"].as_i64(), tokens[1]["duration"].as_i64()),
        (Some(720), Some(60))
    );
    assert!(tokens[0]["expirationTime"].as_str().unwrap().ends_with('Z'));

    // --- 2. errors: status by code, the code in x-amzn-ErrorType, message in the body
    let missing = body["stage"]["arn"]
        .as_str()
        .unwrap()
        .replace(char::is_alphanumeric, "A");
    let missing = format!(
        "arn:aws:ivs:us-east-1:123456789012:stage/{}",
        &missing[missing.len() - 12..]
    );
    let r = call("GetStage", json!({"arn": missing})).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["x-amzn-errortype"], "ResourceNotFoundException");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["__type"], "ResourceNotFoundException");
    assert!(body["exceptionMessage"].as_str().unwrap().contains("not found"));
    assert_eq!(body["message"], body["exceptionMessage"]);
    let r = call(
        "CreateStage",
        json!({"participantTokenConfigurations": vec![json!({}); 13]}),
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["x-amzn-errortype"].to_str().unwrap()),
        (400, "ValidationException")
    );
    let r = call("CreateChannel", json!({})).await.unwrap();
    assert_eq!(r.headers()["x-amzn-errortype"], "UnknownOperationException");
}
