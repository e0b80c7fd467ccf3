//! A single node, black box: the real binary, its built-in IVS emulator, GraphQL over HTTP and
//! WebSocket. Each test starts its own node in its own data dir.

mod common;

use std::time::Duration;

use common::{TestNode, decode_jwt, eventually, node};
use serde_json::{Value, json};

async fn stats(n: &TestNode) -> Value {
    n.ok(
        "{ stats { broadcastsLive stages stagesActive viewers capacity admittedTotal } }",
        json!({}),
        None,
    )
    .await["stats"]
        .clone()
}

async fn applied_index(n: &TestNode) -> u64 {
    n.ok("{ node { lastAppliedIndex } }", json!({}), None).await["node"]["lastAppliedIndex"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_viewer_gets_a_seat_and_a_token_that_ivs_accepts_for_that_stage() {
    let (_dir, n) = node(&[]);
    assert!(
        n.admin_key.as_deref().is_some_and(|k| k.starts_with("sf_")),
        "first start prints an admin key"
    );

    // --- 1. start a broadcast: its origin stage is created in IVS
    let b = n.start_broadcast("show").await;
    assert_eq!(b["state"], "LIVE");
    let origin = &b["stages"][0];
    assert!(origin["arn"].as_str().unwrap().starts_with("arn:aws:ivs:us-east-1:"));

    // --- 2. a viewer joins and gets a token for that stage
    let j = n.join("show", "alice").await.unwrap();
    assert_eq!(j["stage"]["arn"], origin["arn"]);
    assert_eq!(j["rejoined"], false);
    let (header, claims) = decode_jwt(j["token"].as_str().unwrap());
    assert_eq!(header["alg"], "ES384");
    assert!(
        header["kid"].as_str().unwrap().contains(":public-key/"),
        "kid is the imported key's ARN: {header}"
    );
    assert_eq!(claims["resource"], j["stage"]["arn"]);
    assert_eq!(claims["topic"], j["stage"]["ivsStageId"]);
    assert_eq!(claims["events_url"], j["stage"]["eventsUrl"]);
    assert_eq!(claims["whip_url"], j["stage"]["whipUrl"]);
    assert_eq!(claims["jti"], j["session"]["participantId"]);
    assert_eq!(claims["user_id"], "alice");
    assert_eq!(claims["version"], "1.0");
    assert_eq!(
        claims["capabilities"],
        json!({"allow_subscribe": true}),
        "viewers may not publish"
    );
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 720 * 60, "the default lifetime is 12 h, in seconds");

    // --- 3. IVS (the emulator) verifies the signature against the imported public key
    let token = j["token"].as_str().unwrap();
    let (status, body) = n.emulator_join(token, false).await;
    assert_eq!(status, 200, "emulator refused a viewer token: {body}");
    let (status, _) = n.emulator_join(token, true).await;
    assert_ne!(status, 200, "a subscribe-only token must not publish");

    // --- 4. a host gets a publish token for the origin stage
    let q = "mutation { hostTokens(broadcastId: \"show\", userId: \"host-1\") { token participantId stage { arn } } }";
    let hosts = n.admin(q, json!({})).await["hostTokens"].clone();
    assert_eq!(hosts.as_array().unwrap().len(), 1);
    let (_, hc) = decode_jwt(hosts[0]["token"].as_str().unwrap());
    assert_eq!(
        hc["capabilities"],
        json!({"allow_publish": true, "allow_subscribe": true})
    );
    assert_eq!(hc["resource"], origin["arn"]);
    let (status, body) = n.emulator_join(hosts[0]["token"].as_str().unwrap(), true).await;
    assert_eq!(status, 200, "emulator refused the host token: {body}");

    let s = stats(&n).await;
    assert_eq!((s["viewers"].as_u64(), s["admittedTotal"].as_u64()), (Some(1), Some(1)));
}

#[tokio::test]
async fn token_lifetime_is_configured_in_minutes_and_bad_settings_stop_the_node() {
    let (_dir, n) = node(&["--token-ttl-minutes", "60"]);
    n.start_broadcast("b").await;
    let (_, claims) = decode_jwt(n.join("b", "u").await.unwrap()["token"].as_str().unwrap());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::binary())
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--token-ttl-minutes",
            "20161",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("token_ttl_minutes"),
        "the error names the setting: {stderr}"
    );
}

#[tokio::test]
async fn the_same_user_joining_again_or_concurrently_keeps_one_seat() {
    let (_dir, n) = node(&["--join-rate-per-ip", "0"]);
    n.start_broadcast("b").await;
    let first = n.join("b", "bob").await.unwrap();
    let again = n.join("b", "bob").await.unwrap();
    assert_eq!(again["rejoined"], true);
    assert_eq!(again["session"]["id"], first["session"]["id"]);
    assert_eq!(again["session"]["stageId"], first["session"]["stageId"]);
    assert_eq!(again["session"]["participantId"], first["session"]["participantId"]);

    let joins = (0..20).map(|_| n.join("b", "carol"));
    let results = futures_util::future::join_all(joins).await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|r| r.as_ref().unwrap()["session"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "20 concurrent joins of one user made {} sessions",
        ids.len()
    );
    let s = stats(&n).await;
    assert_eq!(s["viewers"], 2);
    assert_eq!(s["admittedTotal"], 2);
}

#[tokio::test]
async fn full_stages_refuse_viewers_until_a_stage_is_added_and_deleting_a_busy_stage_needs_force() {
    let (_dir, n) = node(&["--seats-per-stage", "2", "--join-rate-per-ip", "0"]);
    n.start_broadcast("b").await;
    n.join("b", "u1").await.unwrap();
    n.join("b", "u2").await.unwrap();
    assert_eq!(n.join("b", "u3").await.unwrap_err(), "CAPACITY_EXHAUSTED");

    // --- a second stage adds room
    let q = "mutation { createStage(broadcastId: \"b\") { id role state arn capacity } }";
    let stage = n.admin(q, json!({})).await["createStage"].clone();
    assert_eq!(
        (stage["role"].as_str(), stage["state"].as_str()),
        (Some("REPLICA"), Some("ACTIVE"))
    );
    let j = n.join("b", "u3").await.unwrap();
    assert_eq!(j["stage"]["id"], stage["id"]);
    let s = stats(&n).await;
    assert_eq!(
        (
            s["viewers"].as_u64(),
            s["capacity"].as_u64(),
            s["stagesActive"].as_u64()
        ),
        (Some(3), Some(4), Some(2))
    );

    // --- deleting it is refused while it seats a viewer, then forced
    let del = "mutation($id: ID!, $f: Boolean!) { deleteStage(id: $id, force: $f) { id sessionsEnded } }";
    let vars = json!({"id": stage["id"], "f": false});
    assert_eq!(n.err(del, vars, n.admin_key.as_deref()).await, "STAGE_HAS_VIEWERS");
    let r = n.admin(del, json!({"id": stage["id"], "f": true})).await;
    assert_eq!(r["deleteStage"]["sessionsEnded"], 1);
    let gone = n
        .ok(
            "query($id: ID!) { session(id: $id) { id } }",
            json!({"id": j["session"]["id"]}),
            None,
        )
        .await;
    assert!(gone["session"].is_null(), "the forced stage's viewer session ended");
    assert_eq!(stats(&n).await["viewers"], 2);

    // --- the origin of a live broadcast cannot be deleted
    let origin = json!({"id": "b:0", "f": true});
    assert_eq!(n.err(del, origin, n.admin_key.as_deref()).await, "ORIGIN_STAGE");
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_and_changes_nothing() {
    let (_dir, n) = node(&["--join-rate-per-ip", "0"]);
    n.start_broadcast("b").await;
    n.start_broadcast("over").await;
    n.admin("mutation { endBroadcast(id: \"over\") { state } }", json!({}))
        .await;
    n.join("b", "seated").await.unwrap();
    let before = (stats(&n).await, applied_index(&n).await);

    let join = "mutation($b: ID!, $u: String!, $a: [AttributeInput!]) { joinBroadcast(broadcastId: $b, userId: $u, attributes: $a) { token } }";
    let cases = [
        (json!({"b": "b", "u": ""}), "INVALID_INPUT"),
        (json!({"b": "b", "u": "x".repeat(129)}), "INVALID_INPUT"),
        (
            json!({"b": "b", "u": "big", "a": [{"key": "k", "value": "v".repeat(1024)}]}),
            "INVALID_INPUT",
        ),
        (json!({"b": "nope", "u": "u"}), "BROADCAST_NOT_FOUND"),
        (json!({"b": "bad id!", "u": "u"}), "INVALID_INPUT"),
        (json!({"b": "over", "u": "u"}), "BROADCAST_NOT_LIVE"),
    ];
    for (vars, code) in cases {
        assert_eq!(n.err(join, vars.clone(), None).await, code, "join with {vars}");
    }
    // Variables of the wrong type. The document passed validation above, so the node no longer
    // re-validates it: these must still be refused before anything runs.
    let wrong_types = [
        json!({"b": "b", "u": 5}),
        json!({"b": "b", "u": null}),
        json!({"b": "b"}),
        json!({"b": ["b"], "u": "u"}),
        json!({"b": "b", "u": "u", "a": [{"key": "k"}]}),
        json!({"b": "b", "u": "u", "a": "not a list of attributes"}),
    ];
    for vars in wrong_types {
        assert_eq!(n.err(join, vars.clone(), None).await, "BAD_REQUEST", "join with {vars}");
    }
    // malformed GraphQL, malformed JSON, too deep, wrong key, missing key
    assert_eq!(n.err("mutation { joinBroadcast(", json!({}), None).await, "BAD_REQUEST");
    let too_deep = format!(
        "{{ {}__typename{} }}",
        "__schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name ",
        "} } } } } } } } } } } } } }"
    );
    assert_eq!(n.err(&too_deep, json!({}), None).await, "BAD_REQUEST");
    let resp = n
        .http()
        .post(format!("{}/graphql", n.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    let (status, body) = n.post("{ stats { viewers } }", json!({}), Some("sf_wrong_key")).await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let start = "mutation { startBroadcast(id: \"x\") { id } }";
    assert_eq!(n.err(start, json!({}), None).await, "UNAUTHENTICATED");
    let leave = "mutation { leave(sessionId: \"no-such-session\") { id } }";
    assert_eq!(n.err(leave, json!({}), None).await, "SESSION_NOT_FOUND");
    let hb = "mutation { heartbeat(sessionId: \"no-such-session\") { id } }";
    assert_eq!(n.err(hb, json!({}), None).await, "SESSION_NOT_FOUND");
    let dup = "mutation { startBroadcast(id: \"b\") { id } }";
    assert_eq!(n.err(dup, json!({}), n.admin_key.as_deref()).await, "BROADCAST_EXISTS");

    let after = (stats(&n).await, applied_index(&n).await);
    assert_eq!(before.0, after.0, "counts changed");
    // Refused writes that reached the log (duplicate broadcast, unknown session) are applied as no-ops;
    // everything else was refused before the log.
    assert!(
        after.1 <= before.1 + 2,
        "bad input wrote {} log entries",
        after.1 - before.1
    );
}

#[tokio::test]
async fn roles_decide_what_a_key_may_do_and_revoked_keys_stop_working() {
    let (_dir, n) = node(&["--viewer-join", "keyed"]);
    let admin = n.admin_key.clone();
    n.start_broadcast("b").await;
    let mk = "mutation($n: String!, $r: Role!) { createApiKey(name: $n, role: $r) { key apiKey { id role } } }";
    let host = n.admin(mk, json!({"n": "studio", "r": "HOST"})).await["createApiKey"].clone();
    let viewer = n.admin(mk, json!({"n": "site", "r": "VIEWER"})).await["createApiKey"].clone();
    let (hk, vk) = (host["key"].as_str().unwrap(), viewer["key"].as_str().unwrap());

    assert_eq!(
        n.err("mutation { startBroadcast(id: \"h\") { id } }", json!({}), Some(hk))
            .await,
        "FORBIDDEN"
    );
    let ht = "mutation { hostTokens(broadcastId: \"b\", userId: \"h1\") { token } }";
    n.ok(ht, json!({}), Some(hk)).await;
    assert_eq!(n.err(ht, json!({}), Some(vk)).await, "FORBIDDEN");
    assert_eq!(n.err("{ apiKeys { id } }", json!({}), Some(hk)).await, "FORBIDDEN");
    assert_eq!(
        n.ok("{ apiKeys { id } }", json!({}), admin.as_deref()).await["apiKeys"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // keyed viewer joins: no key is refused, a viewer key is enough
    let join = "mutation { joinBroadcast(broadcastId: \"b\", userId: \"v\") { token } }";
    assert_eq!(n.err(join, json!({}), None).await, "UNAUTHENTICATED");
    n.ok(join, json!({}), Some(vk)).await;

    let revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }";
    n.admin(revoke, json!({"id": host["apiKey"]["id"]})).await;
    let (status, body) = n.post(ht, json!({}), Some(hk)).await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
}

#[tokio::test]
async fn leaving_frees_a_seat_at_once_and_a_lapsed_lease_frees_it_later() {
    let (_dir, n) = node(&[
        "--session-lease-secs",
        "2",
        "--presence-interval-secs",
        "1",
        "--join-rate-per-ip",
        "0",
    ]);
    n.start_broadcast("b").await;
    let a = n.join("b", "a").await.unwrap();
    let b = n.join("b", "b").await.unwrap();
    let leave = "mutation($s: ID!) { leave(sessionId: $s) { userId } }";
    let left = n.ok(leave, json!({"s": a["session"]["id"]}), None).await;
    assert_eq!(left["leave"]["userId"], "a");
    assert_eq!(stats(&n).await["viewers"], 1);

    // heartbeats keep b seated past its original lease
    let original = b["session"]["leaseUntil"].as_str().unwrap().to_string();
    let hb = "mutation($s: ID!) { heartbeat(sessionId: $s) { leaseUntil } }";
    let lease_of = "query($s: ID!) { session(id: $s) { leaseUntil } }";
    let renewed = eventually(
        Duration::from_secs(10),
        "a heartbeat renews the stored lease",
        || async {
            n.ok(hb, json!({"s": b["session"]["id"]}), None).await;
            let now = n.ok(lease_of, json!({"s": b["session"]["id"]}), None).await;
            let lease = now["session"]["leaseUntil"].as_str()?.to_string();
            (lease > original).then_some(lease)
        },
    )
    .await;
    assert!(renewed > original);

    // without heartbeats the lease lapses and the seat is freed
    eventually(Duration::from_secs(15), "b's lease to lapse", || async {
        let s = n
            .ok(
                "query($s: ID!) { session(id: $s) { id } }",
                json!({"s": b["session"]["id"]}),
                None,
            )
            .await;
        s["session"].is_null().then_some(())
    })
    .await;
    assert_eq!(stats(&n).await["viewers"], 0);
}

#[tokio::test]
async fn ending_a_broadcast_deletes_its_stages_in_ivs_and_refuses_new_viewers() {
    let (_dir, n) = node(&[]);
    let b = n.start_broadcast("b").await;
    let arn = b["stages"][0]["arn"].as_str().unwrap().to_string();
    n.join("b", "v").await.unwrap();
    let ended = n
        .admin(
            "mutation { endBroadcast(id: \"b\") { state viewers stages { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(ended["endBroadcast"]["state"], "ENDED");
    assert_eq!(ended["endBroadcast"]["viewers"], 0);
    assert!(ended["endBroadcast"]["stages"].as_array().unwrap().is_empty());
    assert_eq!(n.join("b", "late").await.unwrap_err(), "BROADCAST_NOT_LIVE");
    let state = n
        .http()
        .get(format!("{}/_emulator/state", n.emulator_url.as_ref().unwrap()))
        .send()
        .await
        .unwrap();
    let state = state.text().await.unwrap();
    assert!(!state.contains(&arn), "the stage still exists in IVS: {state}");
}

#[tokio::test]
async fn health_and_metrics_tell_the_same_story_as_graphql() {
    let (_dir, n) = node(&[]);
    assert_eq!(n.get("/livez").await.0, 200);
    let (status, ready) = n.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert!(
        ready.contains("store: ok") && ready.contains("signing_key: ok"),
        "{ready}"
    );
    n.start_broadcast("b").await;
    n.join("b", "x").await.unwrap();
    n.join("b", "y").await.unwrap();
    assert_eq!(n.join("b", "").await.unwrap_err(), "INVALID_INPUT");
    let (_, m) = n.get("/metrics").await;
    assert!(m.contains("stagefleet_joins_total{outcome=\"admitted\"} 2"), "{m}");
    assert!(
        m.contains("stagefleet_join_refusals_total{reason=\"bad_input\"} 1"),
        "{m}"
    );
    assert!(m.contains("stagefleet_tokens_minted_total{kind=\"viewer\"} 2"), "{m}");
    assert!(m.contains("stagefleet_state{name=\"viewers\"} 2"), "{m}");
    assert!(m.contains("stagefleet_state{name=\"raft_is_leader\"} 1"), "{m}");
    assert!(m.contains("stagefleet_join_duration_seconds_count 2"), "{m}");
}

#[tokio::test]
async fn graphiql_and_the_landing_page_are_served() {
    let (_dir, n) = node(&[]);
    let (status, page) = n.get("/graphql").await;
    assert_eq!(status, 200);
    assert!(page.to_lowercase().contains("graphiql"));
    let (status, page) = n.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("stagefleet"));
    assert_eq!(n.get("/no-such-page.txt").await.0, 404);
}

#[tokio::test]
async fn the_websocket_checks_the_key_in_connection_init() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let (_dir, n) = node(&[]);
    let ws_url = format!("{}/graphql", n.url.replacen("http", "ws", 1));
    let connect = || async {
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap().0
    };
    // a wrong key: the server closes the socket
    let mut ws = connect().await;
    ws.send(Message::text(
        json!({"type": "connection_init", "payload": {"token": "sf_bad_key"}}).to_string(),
    ))
    .await
    .unwrap();
    let closed = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert!(
        closed.is_some_and(|f| f.reason.contains("not valid")),
        "a bad key closes with a reason"
    );

    // the admin key: acknowledged, and a mutation runs over the socket
    let mut ws = connect().await;
    let init = json!({"type": "connection_init", "payload": {"token": n.admin_key}});
    ws.send(Message::text(init.to_string())).await.unwrap();
    let ack: Value = serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(ack["type"], "connection_ack");
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": "mutation { startBroadcast(id: \"ws\") { state } }"}});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let next: Value = serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(next["payload"]["data"]["startBroadcast"]["state"], "LIVE", "{next}");
}

#[tokio::test]
async fn joins_beyond_the_per_address_rate_are_refused() {
    let (_dir, n) = node(&["--join-rate-per-ip", "1"]);
    n.start_broadcast("b").await;
    // burst allowance is twice the rate
    n.join("b", "r1").await.unwrap();
    n.join("b", "r2").await.unwrap();
    assert_eq!(n.join("b", "r3").await.unwrap_err(), "RATE_LIMITED");
}

#[tokio::test]
async fn state_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = TestNode::start(dir.path(), &[]);
    n.start_broadcast("b").await;
    let first = n.join("b", "keeper").await.unwrap();
    let admin = n.admin_key.clone();
    assert!(n.terminate(), "SIGTERM shuts the node down cleanly");

    let n = TestNode::start(dir.path(), &[]);
    assert!(n.admin_key.is_none(), "the admin key is printed only once");
    let again = n.join("b", "keeper").await.unwrap();
    assert_eq!(again["session"]["id"], first["session"]["id"]);
    assert_eq!(again["rejoined"], true);
    n.ok("{ apiKeys { id } }", json!({}), admin.as_deref()).await;
    let (status, body) = n.emulator_join(again["token"].as_str().unwrap(), false).await;
    assert_eq!(
        status, 200,
        "after restart the emulator still knows the key and stage: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_are_group_committed_into_few_log_entries() {
    let (_dir, n) = node(&["--join-rate-per-ip", "0"]);
    n.start_broadcast("b").await;
    let before = applied_index(&n).await;
    let joins = (0..300).map(|i| {
        let n = &n;
        async move { n.join("b", &format!("v{i}")).await.unwrap() }
    });
    futures_util::future::join_all(joins).await;
    let entries = applied_index(&n).await - before;
    assert_eq!(stats(&n).await["viewers"], 300);
    assert!(
        entries < 150,
        "300 concurrent joins took {entries} log entries: no group commit"
    );
}
