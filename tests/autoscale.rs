//! The scaler (`autoscale = true`) adds stages ahead of the crowd on the leader: a fresh broadcast
//! gets its headroom of free ready seats without any `createStage`, joins that eat into it bring
//! more stages, every decision is counted with its reason, and `scaler` shows the last one.
//! (The planner's own guarantees — no refusal in a flash crowd, CreateStage within budget — are
//! proven by the deterministic simulation in `fleet::scaling`.)

mod common;

use std::time::Duration;

use common::{TestNode, eventually, node};
use serde_json::{Value, json};

const FLAGS: &[&str] = &[
    "--autoscale",
    "true",
    "--seats-per-stage",
    "10",
    "--headroom-floor",
    "25",
    "--scaler-interval-ms",
    "100",
    "--max-stages",
    "12",
    "--join-rate-per-ip",
    "0",
];

async fn stats(n: &TestNode) -> Value {
    n.ok(
        "{ stats(broadcastId: \"b\") { viewers capacity stagesActive } }",
        json!({}),
        None,
    )
    .await["stats"]
        .clone()
}

fn free(s: &Value) -> u64 {
    s["capacity"].as_u64().unwrap() - s["viewers"].as_u64().unwrap()
}

#[tokio::test]
async fn the_scaler_keeps_free_ready_seats_ahead_of_the_joins_within_max_stages() {
    let (_dir, n) = node(FLAGS);
    n.start_broadcast("b").await;
    // The origin's 10 seats are short of the floor of 25: two more stages come unasked.
    let s = eventually(Duration::from_secs(20), "the headroom of 25 free seats", || async {
        let s = stats(&n).await;
        (free(&s) >= 25).then_some(s)
    })
    .await;
    assert_eq!(s["stagesActive"], 3, "{s}");

    // Viewers take seats; the scaler keeps adding stages, up to max_stages (12 = 120 seats).
    let mut admitted = 0;
    for i in 0..60 {
        match n.join("b", &format!("v{i}")).await {
            Ok(_) => admitted += 1,
            Err(code) => assert_eq!(code, "CAPACITY_EXHAUSTED", "the only refusal a full fleet gives"),
        }
    }
    assert!(
        admitted >= 30,
        "the scaler kept up with most of the joins: {admitted} of 60"
    );
    let s = eventually(Duration::from_secs(20), "the headroom back after the joins", || async {
        let s = stats(&n).await;
        (free(&s) >= 25).then_some(s)
    })
    .await;
    assert!(s["stagesActive"].as_u64().unwrap() <= 12, "never past max_stages: {s}");
    let stages = n.ok("{ stages { viewers capacity } }", json!({}), None).await;
    for st in stages["stages"].as_array().unwrap() {
        assert!(st["viewers"].as_u64() <= st["capacity"].as_u64(), "{st}");
    }

    // Why: counted, and the last decision with its inputs.
    let (_, metrics) = n.get("/metrics").await;
    assert!(
        metrics.contains("stagefleet_scaler_decisions_total{action=\"add_replica\",reason=\"headroom\"}"),
        "decisions are counted by action and reason"
    );
    let q = "{ scaler { broadcastId headroom freeReadySeats pendingSeats joinRate readyTimeMs added limitedBy } }";
    let d = n.admin(q, json!({})).await["scaler"][0].clone();
    assert_eq!(d["broadcastId"], "b");
    assert!(d["headroom"].as_u64() >= Some(25), "{d}");
    assert!(d["readyTimeMs"].as_f64().unwrap() > 0.0, "{d}");
}

#[tokio::test]
async fn without_autoscale_no_stage_appears_unasked() {
    let (_dir, n) = node(&["--seats-per-stage", "10", "--headroom-floor", "25"]);
    n.start_broadcast("b").await;
    for i in 0..10 {
        n.join("b", &format!("v{i}")).await.unwrap();
    }
    assert_eq!(n.join("b", "one-too-many").await.unwrap_err(), "CAPACITY_EXHAUSTED");
    assert_eq!(stats(&n).await["stagesActive"], 1);
    assert_eq!(
        n.admin("{ scaler { broadcastId } }", json!({})).await["scaler"],
        json!([])
    );
}
