//! Getting the hosts' media into every stage, against the real binary and its built-in emulator:
//! a replica takes viewers only once each publishing host is replicated into it (the replicator
//! retries a host that is not publishing yet), client fan-out waits for the host on each stage,
//! drained stages move their viewers with a fresh token on `assignment`, the autoscaler drains
//! and deletes quiet replicas, and the region's subscription quota refuses with a typed code.

mod common;

use std::time::Duration;

use common::ws::Ws;
use common::{TestNode, decode_jwt, eventually, node};
use serde_json::{Value, json};

const STAGE: &str = "query($id: ID!) { stage(id: $id) { id status ready draining state viewers fedBy publishers
    replication { participantId state attempts lastError } } }";

async fn stage(n: &TestNode, id: &str) -> Value {
    n.admin(STAGE, json!({"id": id})).await["stage"].clone()
}

async fn create_replica(n: &TestNode, broadcast: &str) -> String {
    let q = "mutation($b: ID!) { createStage(broadcastId: $b) { id } }";
    n.admin(q, json!({"b": broadcast})).await["createStage"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_replica_takes_viewers_only_once_the_publishing_host_is_replicated_into_it() {
    // The host's media shows in a replica 300 ms after its replication starts, as in AWS.
    let (_dir, n) = node(&[
        "--seats-per-stage",
        "2",
        "--join-rate-per-ip",
        "0",
        "--emulator-replication-active-ms",
        "300",
    ]);
    n.start_broadcast("b").await;
    let tokens = n.host_tokens("b", "alice").await;
    let host = tokens[0]["participantId"].as_str().unwrap().to_string();
    // The host is in the origin but not publishing yet; its page says it publishes (too early).
    let (status, _) = n.emulator_join(tokens[0]["token"].as_str().unwrap(), false).await;
    assert_eq!(status, 200);
    let q = "mutation($p: String!) { hostPublishing(broadcastId: \"b\", participantId: $p) { publishers } }";
    let origin = n.admin(q, json!({"p": host})).await;
    assert_eq!(origin["hostPublishing"]["publishers"], json!([host]));

    let replica = create_replica(&n, "b").await;
    // IVS refuses to replicate a host that does not publish: the replica waits, and no viewer lands there.
    let s = eventually(Duration::from_secs(20), "a failed replication attempt", || async {
        let s = stage(&n, &replica).await;
        (s["replication"][0]["attempts"].as_u64() >= Some(1) && s["replication"][0]["state"] == "FAILED").then_some(s)
    })
    .await;
    assert_eq!(
        (s["ready"].clone(), s["fedBy"].clone()),
        (json!(false), json!(0)),
        "{s}"
    );
    assert_eq!(s["status"], "WAITING", "{s}");
    assert!(
        s["replication"][0]["lastError"]
            .as_str()
            .unwrap()
            .contains("not publishing"),
        "{s}"
    );
    for u in ["v1", "v2"] {
        assert_eq!(n.join("b", u).await.unwrap()["session"]["stageId"], "b:0");
    }
    assert_eq!(
        n.join("b", "v3").await.unwrap_err(),
        "CAPACITY_EXHAUSTED",
        "the replica has no media yet"
    );

    // The host really publishes: the retry replicates it, the media shows, the replica is READY.
    let (status, _) = n.emulator_join(tokens[0]["token"].as_str().unwrap(), true).await;
    assert_eq!(status, 200);
    let s = eventually(Duration::from_secs(30), "the replica READY", || async {
        let s = stage(&n, &replica).await;
        (s["ready"] == true).then_some(s)
    })
    .await;
    assert_eq!(
        (s["replication"][0]["state"].as_str(), s["status"].as_str()),
        (Some("ACTIVE"), Some("READY")),
        "{s}"
    );
    let seat = n.join("b", "v3").await.unwrap();
    assert_eq!(seat["session"]["stageId"], replica.as_str());
    // What the viewer will see there: the host's replica publishing in IVS.
    let (_, emu) = n.get_emulator("/_emulator/state").await;
    assert!(emu.contains(&host), "the emulator holds the host's replica");
    // The replication's steps are counted as IVS calls of their own.
    let (_, metrics) = n.get("/metrics").await;
    assert!(
        metrics.contains("op=\"StartParticipantReplication\",result=\"ok\""),
        "counted"
    );
}

#[tokio::test]
async fn with_client_fanout_host_tokens_cover_every_stage_and_a_stage_waits_for_the_live_host() {
    let (_dir, n) = node(&["--seats-per-stage", "1", "--join-rate-per-ip", "0"]);
    let q = "mutation { startBroadcast(id: \"c\", fanout: CLIENT) { fanout } }";
    assert_eq!(n.admin(q, json!({})).await["startBroadcast"]["fanout"], "CLIENT");
    let replica = create_replica(&n, "c").await;
    let tokens = n.host_tokens("c", "alice").await;
    let stages: Vec<&str> = tokens.iter().map(|t| t["stage"]["id"].as_str().unwrap()).collect();
    assert_eq!(stages, vec!["c:0", replica.as_str()], "a publish token for every stage");
    let (_, claims) = decode_jwt(tokens[1]["token"].as_str().unwrap());
    assert!(
        claims["capabilities"]["allow_publish"].as_bool().unwrap_or(false),
        "{claims}"
    );
    let q = "mutation($p: String!) { hostPublishing(broadcastId: \"c\", participantId: $p) { id ready } }";
    // The host goes live on the origin: the other stage waits until the host publishes there too.
    let on_origin = n.admin(q, json!({"p": tokens[0]["participantId"]})).await;
    assert_eq!(on_origin["hostPublishing"], json!({"id": "c:0", "ready": true}));
    assert_eq!(
        stage(&n, &replica).await["ready"],
        false,
        "the host does not publish there yet"
    );
    n.join("c", "v1").await.unwrap();
    assert_eq!(n.join("c", "v2").await.unwrap_err(), "CAPACITY_EXHAUSTED");

    let pid = tokens[1]["participantId"].as_str().unwrap();
    let s = n.admin(q, json!({"p": pid})).await;
    assert_eq!(s["hostPublishing"], json!({"id": replica, "ready": true}));
    assert_eq!(n.join("c", "v2").await.unwrap()["session"]["stageId"], replica.as_str());
    // A participant id that is not a host's is refused with its own code, and changes nothing.
    let (_, body) = n.post(q, json!({"p": "nobody-s1"}), n.admin_key.as_deref()).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PARTICIPANT_NOT_FOUND",
        "{body}"
    );
}

#[tokio::test]
async fn draining_with_move_viewers_hands_each_viewer_a_token_for_its_new_stage() {
    let (_dir, n) = node(&["--seats-per-stage", "3", "--join-rate-per-ip", "0"]);
    n.start_broadcast("b").await;
    let replica = create_replica(&n, "b").await;
    let mut sessions = Vec::new();
    for i in 0..4 {
        sessions.push(n.join("b", &format!("v{i}")).await.unwrap()["session"].clone());
    }
    let on_replica: Vec<&Value> = sessions.iter().filter(|s| s["stageId"] == replica.as_str()).collect();
    assert_eq!(on_replica.len(), 1, "pack fills the origin first: {sessions:?}");
    let moved_id = on_replica[0]["id"].as_str().unwrap().to_string();
    // Its viewer follows its seat; a seat frees on the origin for it.
    let mut ws = Ws::connect(&n, None).await;
    let a = "subscription($s: ID!) { assignment(sessionId: $s) { kind token stage { id } session { stageId } } }";
    ws.subscribe("a", a, json!({"s": moved_id})).await;
    assert_eq!(ws.data("a", "assignment").await["kind"], "SEATED");
    let leave = "mutation($s: ID!) { leave(sessionId: $s) { id } }";
    let origin_session = sessions.iter().find(|s| s["stageId"] == "b:0").unwrap()["id"].clone();
    n.post(leave, json!({"s": origin_session}), None).await;

    // The origin cannot be drained; the replica can, and its viewer moves at once.
    let drain = "mutation($id: ID!, $m: Boolean!) { drainStage(id: $id, moveViewers: $m) { viewersMoved stage { state draining } } }";
    let (_, body) = n
        .post(drain, json!({"id": "b:0", "m": true}), n.admin_key.as_deref())
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "ORIGIN_STAGE", "{body}");
    let d = n.admin(drain, json!({"id": replica, "m": true})).await["drainStage"].clone();
    assert_eq!(d["viewersMoved"], 1, "{d}");
    assert_eq!(d["stage"]["state"], "DELETING", "emptied, it is retired: {d}");
    let moved = ws.data("a", "assignment").await;
    assert_eq!(moved["kind"], "MOVED", "{moved}");
    assert_eq!(moved["stage"]["id"], "b:0");
    assert_eq!(moved["session"]["stageId"], "b:0");
    let (_, claims) = decode_jwt(moved["token"].as_str().unwrap());
    let origin_topic = n.admin("{ stage(id: \"b:0\") { ivsStageId } }", json!({})).await["stage"]["ivsStageId"].clone();
    assert_eq!(claims["topic"], origin_topic, "the new token is for the new stage");
    // The stage goes; the viewer keeps its session.
    eventually(Duration::from_secs(20), "the drained stage deleted", || async {
        n.admin(STAGE, json!({"id": replica})).await["stage"]
            .is_null()
            .then_some(())
    })
    .await;
    let q = "query($s: ID!) { session(id: $s) { stageId } }";
    assert_eq!(n.admin(q, json!({"s": moved_id})).await["session"]["stageId"], "b:0");
}

#[tokio::test]
async fn the_autoscaler_drains_quiet_replicas_and_deletes_them_without_losing_a_viewer() {
    let (_dir, n) = node(&[
        "--autoscale",
        "true",
        "--seats-per-stage",
        "10",
        "--headroom-floor",
        "5",
        "--scaler-interval-ms",
        "100",
        "--drain-below",
        "5",
        "--cool-down-secs",
        "1",
        "--consolidate",
        "true",
        "--join-rate-per-ip",
        "0",
    ]);
    n.start_broadcast("b").await;
    // Thirty viewers, each admitted as soon as the scaler has made room.
    let mut sessions = Vec::new();
    for i in 0..30 {
        let j = eventually(Duration::from_secs(20), "a seat for the next viewer", || async {
            n.join("b", &format!("v{i}")).await.ok()
        })
        .await;
        sessions.push(j["session"]["id"].as_str().unwrap().to_string());
    }
    let active = || async {
        n.admin("{ stats(broadcastId: \"b\") { stagesActive viewers } }", json!({}))
            .await["stats"]
            .clone()
    };
    let peak = active().await["stagesActive"].as_u64().unwrap();
    assert!(peak >= 3, "the crowd brought stages: {peak}");
    // Most of the audience leaves; the few left stay seated through the scale-down.
    let leave = "mutation($s: ID!) { leave(sessionId: $s) { id } }";
    let (gone, stay) = sessions.split_at(sessions.len() - 3);
    for s in gone {
        n.post(leave, json!({"s": s}), None).await;
    }
    let s = eventually(
        Duration::from_secs(30),
        "quiet replicas drained and deleted",
        || async {
            let s = active().await;
            (s["stagesActive"].as_u64().unwrap() < peak && s["viewers"] == 3).then_some(s)
        },
    )
    .await;
    assert!(s["stagesActive"].as_u64().unwrap() >= 1, "{s}");
    let q = "query($s: ID!) { session(id: $s) { stageId } }";
    for id in stay {
        assert!(
            !n.admin(q, json!({"s": id})).await["session"].is_null(),
            "session {id} kept"
        );
    }
    let (_, metrics) = n.get("/metrics").await;
    assert!(
        metrics.contains("stagefleet_scaler_decisions_total{action=\"drain\",reason=\"low_audience\"}"),
        "drains are counted with their reason"
    );
}

#[tokio::test]
async fn joins_past_the_region_subscription_quota_are_refused_until_it_is_raised() {
    let (_dir, n) = node(&["--region-subscription-quota", "3", "--join-rate-per-ip", "0"]);
    n.start_broadcast("b").await;
    for u in ["a", "b", "c"] {
        n.join("b", u).await.unwrap();
    }
    assert_eq!(n.join("b", "d").await.unwrap_err(), "REGION_FULL");
    let s = n.admin("{ stats(broadcastId: \"b\") { viewers } }", json!({})).await;
    assert_eq!(s["stats"]["viewers"], 3, "the refusal took no seat");
    let q = "mutation { setPolicy(regionSubscriptionQuota: 10) { regionSubscriptionQuota } }";
    assert_eq!(n.admin(q, json!({})).await["setPolicy"]["regionSubscriptionQuota"], 10);
    n.join("b", "d").await.unwrap();
}

/// Stages in the emulator carrying `fleet`'s tag, as (broadcast, slot).
async fn tagged_stages(n: &TestNode, fleet: &str) -> Vec<(String, String)> {
    let (_, state) = n.get_emulator("/_emulator/state").await;
    let state: Value = serde_json::from_str(&state).unwrap();
    state["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["tags"]["stagefleet:fleet"] == fleet)
        .map(|s| {
            let tag = |k: &str| s["tags"][k].as_str().unwrap_or("").to_string();
            (tag("stagefleet:broadcast"), tag("stagefleet:slot"))
        })
        .collect()
}

async fn emulator_create_stage(n: &TestNode, name: &str, tags: Value) {
    let url = format!("{}/CreateStage", n.emulator_url.as_ref().unwrap());
    let resp = reqwest::Client::new()
        .post(url)
        .json(&json!({"name": name, "tags": tags}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn an_orphan_of_this_fleet_is_deleted_after_the_grace_and_another_fleets_stage_is_not() {
    let (_dir, n) = node(&["--reaper-interval-secs", "1", "--reaper-grace-secs", "1"]);
    n.start_broadcast("b").await;
    // As if a node had crashed between CreateStage and recording it: this fleet's tags, no record.
    let ours = json!({"stagefleet:fleet": "stagefleet", "stagefleet:broadcast": "b", "stagefleet:slot": "7"});
    emulator_create_stage(&n, "orphan", ours).await;
    emulator_create_stage(&n, "theirs", json!({"stagefleet:fleet": "another-fleet"})).await;
    assert_eq!(tagged_stages(&n, "stagefleet").await.len(), 2);
    eventually(Duration::from_secs(20), "the orphan deleted", || async {
        (tagged_stages(&n, "stagefleet").await == vec![("b".to_string(), "0".to_string())]).then_some(())
    })
    .await;
    assert_eq!(
        tagged_stages(&n, "another-fleet").await.len(),
        1,
        "another fleet's stage is never touched"
    );
    let (_, metrics) = n.get("/metrics").await;
    assert!(metrics.contains("stagefleet_orphans_deleted_total 1"), "counted");
    assert_eq!(
        n.admin("{ stage(id: \"b:0\") { state } }", json!({})).await["stage"]["state"],
        "ACTIVE"
    );
}

#[tokio::test]
async fn a_node_killed_mid_scale_up_finishes_it_on_restart_with_one_stage_per_slot() {
    let flags = [
        "--autoscale",
        "true",
        "--seats-per-stage",
        "10",
        "--headroom-floor",
        "45",
        "--scaler-interval-ms",
        "100",
        "--emulator-create-stage-ms",
        "700",
        "--reaper-interval-secs",
        "1",
        "--reaper-grace-secs",
        "2",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut n = TestNode::start(dir.path(), &flags);
    let admin_key = n.admin_key.clone();
    n.start_broadcast("b").await;
    // The scaler wants four more stages; kill the node while some are still being created.
    eventually(Duration::from_secs(20), "a stage being created", || async {
        let s = n.admin("{ stages { state } }", json!({})).await;
        s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["state"] == "CREATING")
            .then_some(())
    })
    .await;
    n.kill9();
    let mut n = TestNode::start(dir.path(), &flags);
    n.admin_key = admin_key;
    let stages = eventually(Duration::from_secs(30), "the scale-up finished", || async {
        let s = n
            .admin(
                "{ stages { id state } stats(broadcastId: \"b\") { capacity viewers } }",
                json!({}),
            )
            .await;
        let all_active = s["stages"].as_array().unwrap().iter().all(|s| s["state"] == "ACTIVE");
        let free = s["stats"]["capacity"].as_u64().unwrap() - s["stats"]["viewers"].as_u64().unwrap();
        (all_active && free >= 45).then_some(s["stages"].as_array().unwrap().len())
    })
    .await;
    // IVS ends up with exactly the fleet's stages: one per slot, no orphan left after the grace.
    eventually(Duration::from_secs(20), "IVS holding one stage per slot", || async {
        let mut tagged = tagged_stages(&n, "stagefleet").await;
        let total = tagged.len();
        tagged.sort();
        tagged.dedup();
        (total == tagged.len() && total == stages).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_drift_reconciler_reports_ivs_against_the_ledger_and_releases_seats_never_used() {
    let (_dir, n) = node(&[
        "--drift-interval-secs",
        "1",
        "--connect-grace-secs",
        "1",
        "--release-unused-seats",
        "true",
        "--join-rate-per-ip",
        "0",
    ]);
    n.start_broadcast("b").await;
    let mut joined = Vec::new();
    for u in ["a", "b", "never", "gone"] {
        joined.push(n.join("b", u).await.unwrap());
    }
    // Three viewers connect to IVS with their tokens; "never" does not; "gone" leaves the ledger
    // but stays connected in IVS.
    for j in [&joined[0], &joined[1], &joined[3]] {
        assert_eq!(n.emulator_join(j["token"].as_str().unwrap(), false).await.0, 200);
    }
    let leave = "mutation($s: ID!) { leave(sessionId: $s) { id } }";
    n.post(leave, json!({"s": joined[3]["session"]["id"]}), None).await;
    let mut ws = Ws::connect(&n, None).await;
    let a = "subscription($s: ID!) { assignment(sessionId: $s) { kind reason } }";
    ws.subscribe("a", a, json!({"s": joined[2]["session"]["id"]})).await;
    assert_eq!(ws.data("a", "assignment").await["kind"], "SEATED");
    // The unused seat is released (its viewer hears why); the others stay.
    let ended = ws.data("a", "assignment").await;
    assert_eq!(
        (ended["kind"].as_str(), ended["reason"].as_str()),
        (Some("ENDED"), Some("UNUSED"))
    );
    let d = eventually(Duration::from_secs(20), "a drift report after the release", || async {
        let s = n
            .admin(
                "{ stage(id: \"b:0\") { viewers drift { neverConnected unknownParticipants } } }",
                json!({}),
            )
            .await;
        (s["stage"]["drift"]["neverConnected"] == 0).then_some(s["stage"].clone())
    })
    .await;
    assert_eq!(d["viewers"], 2, "{d}");
    assert_eq!(
        d["drift"]["unknownParticipants"], 1,
        "the viewer who left the ledger is still in IVS: {d}"
    );
    let (_, metrics) = n.get("/metrics").await;
    assert!(
        metrics.contains("stagefleet_stage_drift{stage=\"b:0\",kind=\"unknown\"} 1"),
        "in /metrics too"
    );
}
