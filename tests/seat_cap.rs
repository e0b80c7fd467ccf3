//! The per-client seat cap (`max_seats_per_client`, `startBroadcast(maxSeatsPerClient:)`), seen
//! from outside: one client network filling a broadcast with made-up user ids gets
//! CLIENT_SEAT_LIMIT once it holds its cap, while seated users keep rejoining, integrators' keys
//! are not counted, a leave gives the seat back, a broadcast may lift the cap, and the count
//! outlives a restart.

mod common;

use common::TestNode;
use serde_json::{Value, json};

const CAPPED: &[&str] = &["--max-seats-per-client", "2", "--join-rate-per-ip", "0"];

fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

async fn leave(n: &TestNode, session_id: &str) {
    let q = "mutation($s: ID!) { leave(sessionId: $s) { id } }";
    n.ok(q, json!({"s": session_id}), None).await;
}

async fn cap_of(n: &TestNode, broadcast: &str) -> Value {
    let q = "query($b: ID!) { broadcast(id: $b) { maxSeatsPerClient viewers } }";
    n.ok(q, json!({"b": broadcast}), None).await["broadcast"].clone()
}

#[tokio::test]
async fn one_client_holds_at_most_its_cap_of_seats_until_one_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = TestNode::start(dir.path(), CAPPED);
    n.start_broadcast("b").await;
    assert_eq!(
        cap_of(&n, "b").await["maxSeatsPerClient"],
        Value::Null,
        "follows the node"
    );

    // --- 1. loopback is one /24: two seats, then the cap
    let first = n.join("b", "u1").await.expect("first seat");
    n.join("b", "u2").await.expect("second seat");
    assert_eq!(n.join("b", "u3").await.unwrap_err(), "CLIENT_SEAT_LIMIT");
    assert_eq!(cap_of(&n, "b").await["viewers"], 2, "the refused join took no seat");
    // an integrator's back end (host or admin key) seats users from one network: not counted
    let q = "mutation { joinBroadcast(broadcastId: \"b\", userId: \"via-backend\") { rejoined } }";
    n.admin(q, json!({})).await;

    // --- 2. the refusal names the cap, and a new document (the executor) and a known one (the
    //        compiled plan) refuse byte for byte alike
    let doc = "mutation($u: String!) { joinBroadcast(broadcastId: \"b\", userId: $u) { rejoined } }";
    let before = n.compiled_answers().await;
    let (_, executed) = n.post(doc, json!({"u": "u4"}), None).await;
    let (_, planned) = n.post(doc, json!({"u": "u4"}), None).await;
    assert_eq!(
        n.compiled_answers().await,
        before + 1,
        "the second answer came from the plan"
    );
    assert_eq!(code(&executed), Some("CLIENT_SEAT_LIMIT"), "{executed}");
    assert!(
        executed["errors"][0]["message"].as_str().unwrap().contains("2 seats"),
        "{executed}"
    );
    assert_eq!(executed, planned);

    // --- 3. a seated user joining again keeps the seat, cap or not
    let again = n.join("b", "u1").await.expect("a rejoin is never capped");
    assert_eq!(again["rejoined"], true);
    assert_eq!(again["session"]["id"], first["session"]["id"]);

    // --- 4. leaving frees the client's seat for someone else
    leave(&n, first["session"]["id"].as_str().unwrap()).await;
    let u3 = n.join("b", "u3").await.expect("a seat after the leave");
    assert_eq!(u3["rejoined"], false);
    assert_eq!(n.join("b", "u5").await.unwrap_err(), "CLIENT_SEAT_LIMIT");

    // --- 5. a broadcast started with maxSeatsPerClient: 0 has no cap
    let q = "mutation { startBroadcast(id: \"open\", maxSeatsPerClient: 0) { maxSeatsPerClient } }";
    assert_eq!(n.admin(q, json!({})).await["startBroadcast"]["maxSeatsPerClient"], 0);
    for i in 0..5 {
        n.join("open", &format!("o{i}"))
            .await
            .expect("no cap on this broadcast");
    }

    // --- 6. out-of-range caps are refused with a typed error and start nothing
    for bad in [-1, 1_000_001] {
        let q = "mutation($c: Int) { startBroadcast(id: \"bad\", maxSeatsPerClient: $c) { id } }";
        let err = n.err(q, json!({"c": bad}), n.admin_key.as_deref()).await;
        assert_eq!(err, "INVALID_INPUT", "maxSeatsPerClient: {bad}");
    }
    let q = "{ broadcast(id: \"bad\") { id } }";
    assert_eq!(n.ok(q, json!({}), None).await["broadcast"], Value::Null);

    // --- 7. after a restart the count is rebuilt from the session records
    assert!(n.terminate(), "clean exit");
    let n = TestNode::start(dir.path(), CAPPED);
    assert_eq!(n.join("b", "u6").await.unwrap_err(), "CLIENT_SEAT_LIMIT");
    assert_eq!(n.join("b", "u2").await.expect("still seated")["rejoined"], true);
}

#[tokio::test]
async fn behind_a_proxy_each_client_network_gets_its_own_seats() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = CAPPED.to_vec();
    flags.extend(["--client-ip-header", "x-forwarded-for"]);
    let n = TestNode::start(dir.path(), &flags);
    n.start_broadcast("b").await;
    // --- two seats per network; other addresses of one /24 (or /64) are the same client
    for (net, [a, b, c]) in [
        ["198.51.100.7", "198.51.100.8", "198.51.100.200"],
        ["203.0.113.1", "203.0.113.2", "203.0.113.3"],
        ["2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1:ffff::9"],
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            n.join_forwarded(a, "b", &format!("n{net}-1")).await,
            None,
            "{a}: first seat"
        );
        assert_eq!(
            n.join_forwarded(b, "b", &format!("n{net}-2")).await,
            None,
            "{b}: second seat"
        );
        assert_eq!(
            n.join_forwarded(c, "b", &format!("n{net}-3")).await.as_deref(),
            Some("CLIENT_SEAT_LIMIT"),
            "{c} is the same network as {a}"
        );
    }
    assert_eq!(cap_of(&n, "b").await["viewers"], 6);
}
