//! The embedded web pages in real headless Chromium against a real node and its built-in emulator,
//! with the real IVS Web Broadcast SDK served by the node itself from the npm package (`sdk_dir`):
//! the operator console and the broadcaster page refuse a wrong key with a clear message and sign
//! in with the right one; the host goes live from the broadcaster page; the console adds a replica
//! stage; three viewer pages join with no key and each plays the host's fake camera; the
//! console's audience count follows live; the console drains the replica with "move viewers"
//! and each of its viewers follows to another stage without a reload and plays again. The viewer
//! page's HTML and scripts hold no key. Screenshots: target/browser-artifacts/pages/.
//!
//! The browser side is the `pages` scenario of tests/browser/media.mjs (tests/browser/README.md).

mod common;

use std::time::Duration;

use common::browser::{artifacts, browser_available, run_scenario, sdk_dist};
use common::node;
use serde_json::{Value, json};

fn playback_ok(v: &Value, who: &str) {
    assert!(
        v["videoWidth"].as_u64().unwrap_or(0) > 0,
        "{who}: a decoded picture: {v}"
    );
    assert!(
        v["advancedSeconds"].as_f64().unwrap_or(0.0) >= 2.0,
        "{who}: time advances: {v}"
    );
    assert_eq!(v["framesGrew"], true, "{who}: frames keep coming: {v}");
    assert!(v["lumaStd"].as_f64().unwrap_or(0.0) > 5.0, "{who}: not black: {v}");
    assert_eq!(v["changed"], true, "{who}: a moving picture: {v}");
}

#[tokio::test]
async fn console_broadcaster_and_viewer_pages_run_a_broadcast_and_a_drain_moves_viewers_without_a_reload() {
    if !browser_available("pages_browser") {
        return;
    }
    let _one = CHROMIUM.lock().await;
    let sdk = sdk_dist();
    // Two seats per stage: three viewers need the origin and a replica. A short lease: the run
    // outlasts it several times, so the viewer pages must keep their seats by their subscriptions.
    let (_dir, n) = node(&[
        "--session-lease-secs",
        "4",
        "--presence-interval-secs",
        "2",
        "--seats-per-stage",
        "2",
        "--join-rate-per-ip",
        "0",
        "--sdk-dir",
        sdk.to_str().unwrap(),
    ]);
    let q = "mutation { createApiKey(name: \"studio\", role: HOST) { key } }";
    let host_key = n.admin(q, json!({})).await["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    n.admin(
        "mutation { startBroadcast(id: \"show\", name: \"The show\") { id } }",
        json!({}),
    )
    .await;

    let dir = artifacts("pages");
    let admin_key = n.admin_key.clone().unwrap();
    let args = [
        "--url",
        n.url.as_str(),
        "--admin-key",
        admin_key.as_str(),
        "--host-key",
        host_key.as_str(),
        "--broadcast",
        "show",
    ];
    let report = run_scenario("pages", &args, &dir, Duration::from_secs(180)).await;
    assert_eq!(
        report["ok"],
        true,
        "the browser run failed (artifacts in {}): {report:#}",
        dir.display()
    );

    // --- wrong keys were refused in words a user understands
    for page in ["console", "host"] {
        let msg = report[page]["wrongKeyMessage"].as_str().unwrap();
        assert!(msg.contains("not valid"), "{page}: {msg}");
    }
    // --- the viewer page carried no key (the harness crawled its HTML, scripts and styles)
    let files = report["viewerPage"]["files"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f == "/watch/watch.js") && files.iter().any(|f| f == "/js/gql.js"),
        "{files:?}"
    );
    // --- every viewer played the host; the console showed all three through its subscriptions
    let viewers = report["viewers"].as_array().unwrap();
    assert_eq!(viewers.len(), 3);
    for v in viewers {
        playback_ok(&v["playback"], v["name"].as_str().unwrap());
    }
    assert_eq!(report["console"]["audienceShown"], 3);
    // --- the drained replica's viewers moved to another stage of the show and play there
    let drained = report["replica1"].as_str().unwrap();
    let moved: Vec<&Value> = viewers.iter().filter(|v| v["stage"] == drained).collect();
    assert!(!moved.is_empty(), "someone sat on the drained replica: {viewers:?}");
    for v in &moved {
        let who = v["name"].as_str().unwrap();
        let after = v["stageAfterMove"].as_str().unwrap();
        assert!(after != drained && after.starts_with("show:"), "{who} moved to {after}");
        assert_eq!(v["reloaded"], false, "{who} moved without a reload");
        playback_ok(&v["playbackAfterMove"], &format!("{who} after the move"));
    }
    let stage = n
        .admin("query($id: ID!) { stage(id: $id) { status } }", json!({"id": drained}))
        .await;
    assert!(
        stage["stage"].is_null() || stage["stage"]["status"] != "READY",
        "the drained replica takes no viewers: {stage}"
    );
    // --- a viewer before the host was told to wait; the next one after the last seat, that it was full
    assert!(
        report["earlyViewerStatus"]
            .as_str()
            .unwrap()
            .contains("Waiting for the host"),
        "{report}"
    );
    assert!(
        report["fullStatus"].as_str().unwrap().contains("audience is full"),
        "{report}"
    );
    // --- presence by subscription: the same three sessions from first playing to the end, across
    // several leases; a network drop showed "reconnecting" and kept the seat
    assert_eq!(report["sessionsAtStart"], report["sessionsAtEnd"], "{report}");
    assert!(
        report["elapsedMs"].as_u64().unwrap() > 3 * 4_000,
        "the run outlasts several leases"
    );
    assert!(
        report["reconnectingStatus"].as_str().unwrap().contains("reconnecting"),
        "{report}"
    );
    assert_eq!(report["sessionAfterReconnect"], report["sessionsAtStart"][1]);
    // --- "End" on the broadcaster page told the fleet the host stopped; ending the show reached every viewer
    for origin in report["origins"].as_array().unwrap() {
        assert_eq!(origin["publishers"], json!([]), "the host stopped publishing: {origin}");
    }
    assert!(report["endedStatus"].as_str().unwrap().contains("ended"), "{report}");
    let show = n.ok("{ broadcast(id: \"show\") { state } }", json!({}), None).await;
    assert!(
        matches!(show["broadcast"]["state"].as_str(), Some("ENDING" | "ENDED")),
        "{show}"
    );
    for shot in [
        "console-1-playing.png",
        "host-1-playing.png",
        "viewer1-1-playing.png",
        "viewer1-2-after-move.png",
        "viewer1-3-ended.png",
        "phone-watch.png",
    ] {
        assert!(dir.join(shot).exists(), "screenshot {shot} kept");
    }
}

/// One Chromium run at a time in this binary: two at once on a 2-core machine make timing flaky.
static CHROMIUM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn with_client_fanout_the_broadcaster_page_publishes_to_a_stage_added_while_live() {
    if !browser_available("pages_browser") {
        return;
    }
    let _one = CHROMIUM.lock().await;
    let sdk = sdk_dist();
    let (_dir, n) = node(&[
        "--seats-per-stage",
        "1",
        "--join-rate-per-ip",
        "0",
        "--sdk-dir",
        sdk.to_str().unwrap(),
    ]);
    let q = "mutation { createApiKey(name: \"studio\", role: HOST) { key } }";
    let host_key = n.admin(q, json!({})).await["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    n.admin(
        "mutation { startBroadcast(id: \"cf\", fanout: CLIENT) { id } }",
        json!({}),
    )
    .await;
    let dir = artifacts("fanout-client");
    let admin_key = n.admin_key.clone().unwrap();
    let args = [
        "--url",
        &n.url,
        "--admin-key",
        &admin_key,
        "--host-key",
        &host_key,
        "--broadcast",
        "cf",
    ];
    let report = run_scenario("fanout-client", &args, &dir, Duration::from_secs(120)).await;
    assert_eq!(
        report["ok"],
        true,
        "the browser run failed (artifacts in {}): {report:#}",
        dir.display()
    );
    let added = report["added"].as_str().unwrap();
    assert_eq!(
        report["host"]["stages"].as_object().unwrap().len(),
        2,
        "the origin and the added stage: {report}"
    );
    assert_eq!(report["host"]["stages"][added], "published");
    assert_eq!(
        report["addedPublishers"], 1,
        "the fleet saw the host publish on {added}"
    );
    assert_eq!(report["viewerStage"], added);
    playback_ok(&report["playback"], "the viewer on the added stage");
    // OBS: per stage, the stage's WHIP endpoint and a token for it
    let stages = n
        .admin("{ broadcast(id: \"cf\") { stages { ivsStageId whipUrl } } }", json!({}))
        .await;
    for pair in report["obs"].as_array().unwrap() {
        let (server, token) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let (_, claims) = common::decode_jwt(token);
        let stage = stages["broadcast"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["ivsStageId"] == claims["topic"])
            .unwrap_or_else(|| panic!("the token is for a stage of cf: {claims}"));
        assert_eq!(
            stage["whipUrl"], server,
            "the server shown is that stage's WHIP endpoint"
        );
        assert!(
            claims["capabilities"]["allow_publish"] == true,
            "a publish token: {claims}"
        );
    }
}

#[tokio::test]
async fn the_console_shows_three_nodes_and_follows_a_leader_change_without_a_reload() {
    if !browser_available("pages_browser") {
        return;
    }
    let _one = CHROMIUM.lock().await;
    let mut c = common::cluster::Cluster::start(&[]).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let dir = artifacts("console-cluster");
    let ready = dir.join("leader-shown");
    let url = c.node(follower).url.clone();
    let args = [
        "--url",
        &url,
        "--admin-key",
        &c.admin_key,
        "--ready-file",
        ready.to_str().unwrap(),
    ];
    let mut run = common::browser::Scenario::spawn("console-cluster", &args, &dir, Duration::from_secs(90));
    let shown = run.wait_for_file(&ready).await;
    assert_eq!(
        shown,
        c.members[leader].id.to_string(),
        "the console names the leader the nodes agree on"
    );
    c.kill9(leader);
    let report = run.report().await;
    assert_eq!(
        report["ok"],
        true,
        "the browser run failed (artifacts in {}): {report:#}",
        dir.display()
    );
    let now = c.leader().await;
    assert_eq!(report["after"]["leaders"], json!([c.members[now].id]), "{report}");
    eprintln!(
        "the console showed the new leader {} ms after the old one was shown",
        report["newLeaderShownMs"]
    );
}

#[tokio::test]
async fn the_console_starts_a_broadcast_adds_and_deletes_a_stage_sets_the_policy_and_manages_keys() {
    if !browser_available("pages_browser") {
        return;
    }
    let _one = CHROMIUM.lock().await;
    let (_dir, n) = node(&[]);
    let q = "mutation { createApiKey(name: \"to-revoke\", role: VIEWER) { key } }";
    let doomed = n.admin(q, json!({})).await["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = artifacts("console-actions");
    let admin_key = n.admin_key.clone().unwrap();
    let report = run_scenario(
        "console-actions",
        &["--url", &n.url, "--admin-key", &admin_key],
        &dir,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        report["ok"],
        true,
        "the browser run failed (artifacts in {}): {report:#}",
        dir.display()
    );

    let b = n
        .ok("{ broadcast(id: \"from-console\") { name state } }", json!({}), None)
        .await;
    assert_eq!(
        b["broadcast"],
        json!({"name": "Started in the console", "state": "LIVE"})
    );
    let replica = report["replica"].as_str().unwrap();
    let s = n
        .admin("query($id: ID!) { stage(id: $id) { status } }", json!({"id": replica}))
        .await;
    assert!(
        s["stage"].is_null() || s["stage"]["status"] == "DELETING",
        "{replica} deleted: {s}"
    );
    assert!(
        report["policyRefused"].as_str().unwrap().contains("maxStages"),
        "{report}"
    );
    let policy = n
        .ok("{ fleetPolicy { seatsPerStage maxStages } }", json!({}), None)
        .await;
    assert_eq!(policy["fleetPolicy"]["seatsPerStage"], 777, "saved from the console");
    assert!(
        policy["fleetPolicy"]["maxStages"].as_u64().unwrap() > 0,
        "the refused value changed nothing"
    );
    let made = n.ok("{ me { role } }", json!({}), report["newKey"].as_str()).await;
    assert_eq!(made["me"]["role"], "HOST", "the key the console showed works");
    assert_eq!(
        n.err("{ me { role } }", json!({}), Some(&doomed)).await,
        "UNAUTHENTICATED",
        "the revoked key is refused"
    );
}
