//! Durability: SIGKILL the node in the middle of a join storm, restart it on the same data dir,
//! and check that every join answered with a token is still there and nothing is counted twice.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::TestNode;
use serde_json::json;
use tokio::sync::Notify;

/// user id → (session id, stage id) of every join the node answered with a token.
type Ledger = Arc<Mutex<BTreeMap<String, (String, String)>>>;

/// Join `users` from `workers` concurrent tasks until the node goes away; record acknowledged joins.
async fn storm(
    url: String,
    users: Vec<String>,
    workers: usize,
    ledger: Ledger,
    reached: Arc<Notify>,
    kill_after: usize,
) {
    let client = reqwest::Client::new();
    let queue = Arc::new(Mutex::new(users));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, url, queue, ledger, reached) = (
            client.clone(),
            url.clone(),
            queue.clone(),
            ledger.clone(),
            reached.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(user) = queue.lock().unwrap().pop() else { return };
                let q = "mutation($u: String!) { joinBroadcast(broadcastId: \"b\", userId: $u) { session { id stageId } } }";
                let Ok(resp) = client.post(format!("{url}/graphql")).json(&json!({"query": q, "variables": {"u": user}})).send().await
                else {
                    return; // the node is gone: this join was never acknowledged
                };
                let Ok(body) = resp.json::<serde_json::Value>().await else { return };
                let s = &body["data"]["joinBroadcast"]["session"];
                if let (Some(id), Some(stage)) = (s["id"].as_str(), s["stageId"].as_str()) {
                    let mut l = ledger.lock().unwrap();
                    l.insert(user, (id.to_string(), stage.to_string()));
                    if l.len() >= kill_after {
                        reached.notify_one();
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_joins_survive_sigkill_mid_storm_and_nothing_counts_twice() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--join-rate-per-ip", "0", "--seats-per-stage", "1100"];
    let mut n = TestNode::start(dir.path(), &flags);
    let admin = n.admin_key.clone().unwrap();
    n.start_broadcast("b").await;
    n.admin("mutation { createStage(broadcastId: \"b\") { id } }", json!({}))
        .await;

    let ledger: Ledger = Arc::default();
    let mut everyone = Vec::new();
    for round in 0..2 {
        // --- a storm of 1,000 new users; SIGKILL once 300 of them have their token
        let users: Vec<String> = (0..1000).map(|i| format!("r{round}-u{i}")).collect();
        everyone.extend(users.clone());
        let acked_before = ledger.lock().unwrap().len();
        let reached = Arc::new(Notify::new());
        let storm = tokio::spawn(storm(
            n.url.clone(),
            users,
            32,
            ledger.clone(),
            reached.clone(),
            acked_before + 300,
        ));
        reached.notified().await;
        n.kill9();
        storm.await.unwrap();
        let acked = ledger.lock().unwrap().len() - acked_before;
        assert!(
            acked >= 300,
            "round {round}: {acked} joins acknowledged before the kill"
        );

        // --- restart on the same data dir
        n = TestNode::start(dir.path(), &flags);
        assert!(n.admin_key.is_none());
    }

    // --- every acknowledged join is still there, on the same stage
    let ledger = ledger.lock().unwrap().clone();
    for (user, (session, stage)) in &ledger {
        let s = n
            .ok(
                "query($id: ID!) { session(id: $id) { userId stageId } }",
                json!({"id": session}),
                None,
            )
            .await;
        assert_eq!(
            s["session"]["userId"],
            user.as_str(),
            "acknowledged join of {user} was lost"
        );
        assert_eq!(s["session"]["stageId"], stage.as_str());
    }

    // --- joining again gives every acknowledged user the same seat; the rest get one seat each
    for user in &everyone {
        let j = n.join("b", user).await.unwrap();
        if let Some((session, _)) = ledger.get(user) {
            assert_eq!(j["session"]["id"], session.as_str(), "{user} got a second session");
            assert_eq!(j["rejoined"], true);
        }
    }
    let stages = n
        .ok(
            "{ stages(broadcastId: \"b\") { viewers capacity } }",
            json!({}),
            Some(&admin),
        )
        .await;
    let stages = stages["stages"].as_array().unwrap();
    let seated: u64 = stages.iter().map(|s| s["viewers"].as_u64().unwrap()).sum();
    assert_eq!(seated, everyone.len() as u64, "viewers counted = distinct users joined");
    for s in stages {
        assert!(
            s["viewers"].as_u64() <= s["capacity"].as_u64(),
            "a stage is over capacity: {s}"
        );
    }
    let b = n
        .ok("{ broadcast(id: \"b\") { admittedTotal } }", json!({}), None)
        .await;
    assert_eq!(
        b["broadcast"]["admittedTotal"],
        everyone.len() as u64,
        "no join was admitted twice"
    );
}
