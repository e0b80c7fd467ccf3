//! GraphQL subscriptions against the real binary over graphql-transport-ws, as a console, a
//! broadcaster page and a viewer page use them: the first message is the current state, updates
//! follow the applied log, a viewer's own seat ends with the right reason, an open subscription
//! keeps its session alive, and the socket's bounds refuse cleanly.

mod common;

use std::time::Duration;

use common::ws::Ws;
use common::{TestNode, eventually, node};
use serde_json::{Value, json};

const FAST: &[&str] = &["--stats-interval-ms", "50", "--join-rate-per-ip", "0"];

const STATS: &str = "subscription($b: ID!) { stats(broadcastId: $b) { viewers capacity stagesActive admittedTotal joinsPerSecond refusals { reason count } appliedIndex changedAtMs } }";
const ASSIGNMENT: &str =
    "subscription($s: ID!) { assignment(sessionId: $s) { kind reason token session { id stageId } stage { id } } }";

async fn join(n: &TestNode, b: &str, user: &str) -> Value {
    n.join(b, user)
        .await
        .unwrap_or_else(|code| panic!("join refused: {code}"))
}

async fn metric(n: &TestNode, name: &str) -> u64 {
    let (_, text) = n.get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("stagefleet_{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn stats_start_with_the_current_value_and_follow_joins_and_leaves() {
    let (_dir, n) = node(FAST);
    n.start_broadcast("b").await;
    join(&n, "b", "u1").await;
    let u2 = join(&n, "b", "u2").await;

    let mut ws = Ws::connect(&n, None).await;
    ws.subscribe("s", STATS, json!({"b": "b"})).await;
    let first = ws.data("s", "stats").await;
    assert_eq!(
        (first["viewers"].clone(), first["admittedTotal"].clone()),
        (json!(2), json!(2))
    );
    assert!(first["joinsPerSecond"].as_f64().unwrap() > 0.0, "{first}");
    assert!(first["capacity"].as_u64().unwrap() >= 2);

    join(&n, "b", "u3").await;
    let after_join = ws.data_until("s", "stats", |s| s["viewers"] == 3).await;
    assert_eq!(after_join["admittedTotal"], 3);
    assert!(after_join["appliedIndex"].as_u64() > first["appliedIndex"].as_u64());

    let leave = "mutation($s: ID!) { leave(sessionId: $s) { id } }";
    n.ok(leave, json!({"s": u2["session"]["id"]}), None).await;
    let after_leave = ws.data_until("s", "stats", |s| s["viewers"] == 2).await;
    assert_eq!(after_leave["admittedTotal"], 3, "admitted counts joins, not seats");
    let delay = common_now_ms() - after_leave["changedAtMs"].as_i64().unwrap();
    assert!(
        (0..20_000).contains(&delay),
        "changedAtMs is the leave's time: {delay} ms ago"
    );
}

fn common_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn refusals_show_in_stats_by_reason() {
    let (_dir, n) = node(&[
        "--stats-interval-ms",
        "50",
        "--join-rate-per-ip",
        "0",
        "--seats-per-stage",
        "1",
    ]);
    n.start_broadcast("b").await;
    join(&n, "b", "u1").await;
    assert_eq!(n.join("b", "u2").await.unwrap_err(), "CAPACITY_EXHAUSTED");
    let mut ws = Ws::connect(&n, None).await;
    ws.subscribe("s", STATS, json!({"b": "b"})).await;
    let s = ws.data("s", "stats").await;
    assert_eq!(
        s["refusals"],
        json!([{"reason": "CAPACITY_EXHAUSTED", "count": 1}]),
        "{s}"
    );
}

#[tokio::test]
async fn identical_stats_subscriptions_share_one_payload_per_update() {
    let (_dir, n) = node(FAST);
    n.start_broadcast("b").await;
    let (p0, f0) = (
        metric(&n, "subscription_payloads_total").await,
        metric(&n, "subscription_frames_total").await,
    );
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = Ws::connect(&n, None).await;
        ws.subscribe("s", STATS, json!({"b": "b"})).await;
        assert_eq!(ws.data("s", "stats").await["viewers"], 0, "the first message at once");
        sockets.push(ws);
    }
    join(&n, "b", "u1").await;
    for ws in &mut sockets {
        ws.data_until("s", "stats", |s| s["viewers"] == 1).await;
    }
    let (p1, f1) = (
        metric(&n, "subscription_payloads_total").await,
        metric(&n, "subscription_frames_total").await,
    );
    let (payloads, frames) = (p1 - p0, f1 - f0);
    assert!(payloads >= 2, "the current value and one update at least: {payloads}");
    assert_eq!(frames, 3 * payloads, "each payload is built once and sent to all three");
}

#[tokio::test]
async fn an_assignment_starts_with_the_seat_and_ends_with_why() {
    // One seat per stage: two viewers sit on two stages.
    let (_dir, n) = node(&[
        "--stats-interval-ms",
        "50",
        "--join-rate-per-ip",
        "0",
        "--seats-per-stage",
        "1",
    ]);
    let admin = n.admin_key.clone().unwrap();
    n.start_broadcast("b").await;
    n.admin("mutation { createStage(broadcastId: \"b\") { id } }", json!({}))
        .await;
    let mut ws = Ws::connect(&n, None).await;

    // --- left
    let j = join(&n, "b", "leaver").await;
    let sid = j["session"]["id"].as_str().unwrap().to_string();
    ws.subscribe("a1", ASSIGNMENT, json!({"s": sid})).await;
    let seated = ws.data("a1", "assignment").await;
    assert_eq!(seated["kind"], "SEATED");
    assert_eq!(seated["session"]["stageId"], j["session"]["stageId"]);
    assert_eq!(seated["stage"]["id"], j["session"]["stageId"]);
    let token = seated["token"].as_str().unwrap();
    assert_eq!(
        n.emulator_join(token, false).await.0,
        200,
        "the fresh token takes the seat in IVS"
    );
    n.ok(
        "mutation($s: ID!) { leave(sessionId: $s) { id } }",
        json!({"s": sid}),
        None,
    )
    .await;
    let ended = ws.data("a1", "assignment").await;
    assert_eq!(
        (ended["kind"].clone(), ended["reason"].clone()),
        (json!("ENDED"), json!("LEFT"))
    );
    let done = ws.next_of("a1").await;
    assert_eq!(
        (done["type"].clone(), done["id"].clone()),
        (json!("complete"), json!("a1"))
    );

    // --- evicted: its stage deleted with force
    let (x, y) = (join(&n, "b", "x").await, join(&n, "b", "y").await);
    let (on_replica, on_origin) = if x["session"]["stageId"] == "b:1" {
        (x, y)
    } else {
        (y, x)
    };
    assert_eq!(on_replica["session"]["stageId"], "b:1");
    ws.subscribe("a2", ASSIGNMENT, json!({"s": on_replica["session"]["id"]}))
        .await;
    assert_eq!(ws.data("a2", "assignment").await["kind"], "SEATED");
    n.ok(
        "mutation { deleteStage(id: \"b:1\", force: true) { sessionsEnded } }",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(ws.data("a2", "assignment").await["reason"], "EVICTED");

    // --- broadcast ended
    ws.subscribe("a3", ASSIGNMENT, json!({"s": on_origin["session"]["id"]}))
        .await;
    assert_eq!(ws.data("a3", "assignment").await["kind"], "SEATED");
    n.admin("mutation { endBroadcast(id: \"b\") { state } }", json!({}))
        .await;
    assert_eq!(ws.data("a3", "assignment").await["reason"], "BROADCAST_ENDED");

    // --- a session that does not exist
    ws.subscribe("a4", ASSIGNMENT, json!({"s": "nope"})).await;
    assert_eq!(ws.error_code("a4").await, "SESSION_NOT_FOUND");
}

#[tokio::test]
async fn an_open_assignment_keeps_its_session_past_the_lease_and_a_closed_one_expires() {
    let flags = [
        "--session-lease-secs",
        "2",
        "--presence-interval-secs",
        "1",
        "--join-rate-per-ip",
        "0",
    ];
    let (_dir, n) = node(&flags);
    n.start_broadcast("b").await;
    let kept = join(&n, "b", "kept").await["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dropped = join(&n, "b", "dropped").await["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = Ws::connect(&n, None).await;
    ws.subscribe("a", ASSIGNMENT, json!({"s": kept})).await;
    assert_eq!(ws.data("a", "assignment").await["kind"], "SEATED");

    let session = |id: String| {
        let n = &n;
        async move {
            let q = "query($s: ID!) { session(id: $s) { id } }";
            n.ok(q, json!({"s": id}), None).await["session"].clone()
        }
    };
    eventually(Duration::from_secs(20), "the unwatched session to expire", || async {
        session(dropped.clone()).await.is_null().then_some(())
    })
    .await;
    // The dropped one's lease (2 s) ran out; the watched one's renewals carried it past that.
    assert!(
        !session(kept.clone()).await.is_null(),
        "an open assignment keeps its session"
    );

    drop(ws);
    eventually(
        Duration::from_secs(20),
        "the session to expire once its subscription closed",
        || async { session(kept.clone()).await.is_null().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn stage_events_broadcast_and_node_follow_the_fleet() {
    let (_dir, n) = node(FAST);
    let admin = n.admin_key.clone().unwrap();
    n.start_broadcast("b").await;
    let mut ws = Ws::connect(&n, Some(&admin)).await;
    let events = "subscription { stageEvents(broadcastId: \"b\") { stageId step current reason stage { state } } }";
    ws.subscribe("e", events, json!({})).await;
    let current = ws.data("e", "stageEvents").await;
    assert_eq!(
        (
            current["stageId"].clone(),
            current["step"].clone(),
            current["current"].clone()
        ),
        (json!("b:0"), json!("READY"), json!(true))
    );
    ws.subscribe("b", "subscription { broadcast(id: \"b\") { id state } }", json!({}))
        .await;
    ws.subscribe("n", "subscription { node { isLeader term subscribers } }", json!({}))
        .await;

    n.admin("mutation { createStage(broadcastId: \"b\") { id } }", json!({}))
        .await;
    let creating = ws.data_until("e", "stageEvents", |e| e["stageId"] == "b:1").await;
    assert_eq!(
        (creating["step"].clone(), creating["current"].clone()),
        (json!("CREATING"), json!(false))
    );
    assert_eq!(ws.data("e", "stageEvents").await["step"], "READY");

    n.admin("mutation { deleteStage(id: \"b:1\") { id } }", json!({})).await;
    assert_eq!(ws.data("e", "stageEvents").await["step"], "DELETING");
    let deleted = ws.data("e", "stageEvents").await;
    assert_eq!(
        (deleted["step"].clone(), deleted["stage"].clone()),
        (json!("DELETED"), Value::Null)
    );

    let b = ws.data("b", "broadcast").await;
    assert_eq!(b["state"], "LIVE", "the broadcast as it is");
    let node_status = ws
        .data_until("n", "node", |s| s["subscribers"].as_u64() >= Some(3))
        .await;
    assert_eq!(node_status["isLeader"], true, "{node_status}");

    n.admin("mutation { endBroadcast(id: \"b\") { state } }", json!({}))
        .await;
    ws.data_until("b", "broadcast", |b| b["state"] == "ENDED").await;
}

#[tokio::test]
async fn broadcast_subscription_follows_its_stages_and_their_seats() {
    let (_dir, n) = node(FAST);
    let admin = n.admin_key.clone().unwrap();
    n.start_broadcast("b").await;
    let mut ws = Ws::connect(&n, Some(&admin)).await;
    let q = "subscription { broadcast(id: \"b\") { viewers stages { id status viewers } } }";
    ws.subscribe("b", q, json!({})).await;
    let first = ws.data("b", "broadcast").await;
    assert_eq!(first["stages"], json!([{"id": "b:0", "status": "READY", "viewers": 0}]));
    // a stage added: the broadcast's own record is unchanged, the message is not
    n.admin("mutation { createStage(broadcastId: \"b\") { id } }", json!({}))
        .await;
    ws.data_until("b", "broadcast", |b| {
        b["stages"].as_array().is_some_and(|s| s.len() == 2)
    })
    .await;
    // a seat taken shows on its stage
    n.join("b", "ann").await.unwrap();
    ws.data_until("b", "broadcast", |b| {
        b["stages"][0]["viewers"] == 1 || b["stages"][1]["viewers"] == 1
    })
    .await;
    // a stage deleted leaves the list
    n.admin("mutation { deleteStage(id: \"b:1\", force: true) { id } }", json!({}))
        .await;
    let after = ws
        .data_until("b", "broadcast", |b| {
            b["stages"].as_array().is_some_and(|s| s.len() == 1)
        })
        .await;
    assert_eq!(after["stages"][0]["id"], "b:0");
}

#[tokio::test]
async fn assignment_answers_any_valid_selection_and_refuses_a_wrong_one_as_the_schema_does() {
    let (_dir, n) = node(FAST);
    n.start_broadcast("b").await;
    let joined = n.join("b", "ann").await.unwrap();
    let s = joined["session"]["id"].as_str().unwrap().to_string();
    let mut ws = Ws::connect(&n, None).await;
    // aliases, a fragment, a variable and __typename, as a client library writes them
    let q = "subscription Seat($s: ID!) { seat: assignment(sessionId: $s) { __typename kind ...Where } }
             fragment Where on Assignment { place: stage { id } session { userId } }";
    ws.subscribe("a", q, json!({"s": s})).await;
    let m = ws.next_of("a").await;
    assert_eq!(
        m["payload"]["data"],
        json!({"seat": {"__typename": "Assignment", "kind": "SEATED", "place": {"id": "b:0"}, "session": {"userId": "ann"}}}),
        "{m}"
    );
    // a field the type does not have: refused by validation, nothing opened
    ws.subscribe(
        "b",
        "subscription($s: ID!) { assignment(sessionId: $s) { kind seatNumber } }",
        json!({"s": s}),
    )
    .await;
    let m = ws.next_of("b").await;
    let msg = m["payload"]["errors"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{m}"));
    assert!(msg.contains("seatNumber"), "{m}");
    assert_eq!(ws.next_of("b").await["type"], "complete");
    // a missing variable, and a session that does not exist
    ws.subscribe(
        "c",
        "subscription($s: ID!) { assignment(sessionId: $s) { kind } }",
        json!({}),
    )
    .await;
    assert!(ws.next_of("c").await["payload"]["errors"][0]["message"].is_string());
    assert_eq!(ws.next_of("c").await["type"], "complete");
    ws.subscribe(
        "d",
        "subscription { assignment(sessionId: \"nope\") { kind } }",
        json!({}),
    )
    .await;
    assert_eq!(ws.error_code("d").await, "SESSION_NOT_FOUND");
    // the first one is still open and ends with the reason when the viewer leaves
    n.ok(
        "mutation($s: ID!) { leave(sessionId: $s) { id } }",
        json!({"s": s}),
        None,
    )
    .await;
    let ended = ws.data("a", "seat").await;
    assert_eq!(ended["kind"], "ENDED", "{ended}");
    assert_eq!(ws.next_of("a").await["type"], "complete");
}

#[tokio::test]
async fn who_may_subscribe_to_what() {
    let (_dir, n) = node(FAST);
    let admin = n.admin_key.clone().unwrap();
    n.start_broadcast("b").await;
    let viewer = n
        .admin(
            "mutation { createApiKey(name: \"v\", role: VIEWER) { key } }",
            json!({}),
        )
        .await["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let events = "subscription { stageEvents(broadcastId: \"b\") { step } }";
    let mut anon = Ws::connect(&n, None).await;
    anon.subscribe("1", events, json!({})).await;
    assert_eq!(anon.error_code("1").await, "UNAUTHENTICATED");
    anon.subscribe("2", "subscription { node { term } }", json!({})).await;
    assert_eq!(anon.error_code("2").await, "UNAUTHENTICATED");
    anon.subscribe("3", STATS, json!({"b": "nope"})).await;
    assert_eq!(anon.error_code("3").await, "BROADCAST_NOT_FOUND");

    let mut v = Ws::connect(&n, Some(&viewer)).await;
    v.subscribe("1", events, json!({})).await;
    assert_eq!(v.error_code("1").await, "FORBIDDEN");
    v.subscribe("2", STATS, json!({"b": "b"})).await;
    assert_eq!(
        v.data("2", "stats").await["viewers"],
        0,
        "viewers may watch a live broadcast's stats"
    );

    // Once the broadcast is over, its stats are for hosts and admins.
    n.admin("mutation { endBroadcast(id: \"b\") { state } }", json!({}))
        .await;
    anon.subscribe("4", STATS, json!({"b": "b"})).await;
    assert_eq!(anon.error_code("4").await, "UNAUTHENTICATED");
    let mut a = Ws::connect(&n, Some(&admin)).await;
    a.subscribe("1", STATS, json!({"b": "b"})).await;
    assert_eq!(a.data("1", "stats").await["viewers"], 0);
}

#[tokio::test]
async fn the_socket_bounds_refuse_cleanly() {
    let (_dir, n) = node(&[
        "--stats-interval-ms",
        "50",
        "--max-subscriptions-per-connection",
        "2",
        "--ws-init-timeout-secs",
        "1",
    ]);
    n.start_broadcast("b").await;

    // --- one operation past the cap is refused; the socket and its operations live on
    let mut ws = Ws::connect(&n, None).await;
    ws.subscribe("1", STATS, json!({"b": "b"})).await;
    ws.data("1", "stats").await;
    ws.subscribe("2", STATS, json!({"b": "b"})).await;
    ws.data("2", "stats").await;
    ws.subscribe("3", STATS, json!({"b": "b"})).await;
    assert_eq!(ws.error_code("3").await, "SUBSCRIPTION_LIMIT");
    ws.send(json!({"id": "2", "type": "complete"})).await;
    ws.subscribe("4", "{ broadcasts { id } }", json!({})).await;
    assert_eq!(
        ws.data("4", "broadcasts").await,
        json!([{"id": "b"}]),
        "a freed place is usable"
    );

    // --- a reused id of an open operation closes the socket (protocol rule)
    ws.subscribe("1", STATS, json!({"b": "b"})).await;
    let close = ws.closed().await.expect("a close frame");
    assert_eq!(close.0, 4409, "{close:?}");

    // --- connection_init must come in time
    let mut silent = Ws::open(&n).await;
    let close = silent.closed().await.expect("a close frame");
    assert_eq!(close, (4408, "Connection initialisation timeout".to_string()));

    // --- an operation before connection_init is refused
    let mut early = Ws::open(&n).await;
    early.subscribe("1", STATS, json!({"b": "b"})).await;
    assert_eq!(early.closed().await.map(|c| c.0), Some(4401));
    assert_eq!(n.get("/livez").await.0, 200);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_off_and_the_others_keep_receiving() {
    let (_dir, n) = node(&[
        "--stats-interval-ms",
        "50",
        "--join-rate-per-ip",
        "0",
        "--max-subscriptions-per-connection",
        "1000",
    ]);
    n.start_broadcast("b").await;
    let mut reader = Ws::connect(&n, None).await;
    reader.subscribe("s", STATS, json!({"b": "b"})).await;
    reader.data("s", "stats").await;

    // The stalled client has a small receive buffer, asks for answers of about 150 KB and never
    // reads them: the node's send buffer fills, then its queue for that socket, and the node cuts
    // the socket off.
    let mut stalled = Ws::connect_small_buffer(&n, 8 * 1024).await;
    let mut big = String::from("{");
    for i in 0..20 {
        big.push_str(&format!(
            " a{i}: __schema {{ types {{ name description fields {{ name description }} }} }}"
        ));
    }
    big.push('}');
    for i in 0..200 {
        stalled.subscribe(&format!("q{i}"), &big, json!({})).await;
    }
    eventually(Duration::from_secs(60), "the stalled socket to be cut off", || async {
        let (_, text) = n.get("/metrics").await;
        text.lines()
            .any(|l| l.starts_with("stagefleet_front_door_refusals_total{kind=\"slow_subscriber\"}"))
            .then_some(())
    })
    .await;
    join(&n, "b", "after").await;
    reader.data_until("s", "stats", |s| s["viewers"] == 1).await;
    assert_eq!(n.get("/livez").await.0, 200);
}

#[tokio::test]
async fn shutdown_ends_every_subscription_with_a_reason_then_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = TestNode::start(dir.path(), FAST);
    n.start_broadcast("b").await;
    let mut ws = Ws::connect(&n, None).await;
    ws.subscribe("s", STATS, json!({"b": "b"})).await;
    ws.data("s", "stats").await;
    let stop = tokio::task::spawn_blocking(move || n.terminate());
    let ended = loop {
        let m = ws.next().await;
        if m["payload"]["errors"].is_array() {
            break m;
        }
    };
    assert_eq!(
        ended["payload"]["errors"][0]["extensions"]["code"], "UNAVAILABLE",
        "{ended}"
    );
    assert_eq!(ws.next().await["type"], "complete");
    assert_eq!(ws.closed().await.map(|c| c.0), Some(1001));
    assert!(stop.await.unwrap(), "the node exits cleanly");
}
