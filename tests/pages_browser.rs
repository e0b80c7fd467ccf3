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
    assert!(v["videoWidth"].as_u64().unwrap_or(0) > 0, "{who}: a decoded picture: {v}");
    assert!(v["advancedSeconds"].as_f64().unwrap_or(0.0) >= 2.0, "{who}: time advances: {v}");
    assert_eq!(v["framesGrew"], true, "{who}: frames keep coming: {v}");
    assert!(v["lumaStd"].as_f64().unwrap_or(0.0) > 5.0, "{who}: not black: {v}");
    assert_eq!(v["changed"], true, "{who}: a moving picture: {v}");
}

#[tokio::test]
async fn console_broadcaster_and_viewer_pages_run_a_broadcast_and_a_drain_moves_viewers_without_a_reload() {
    if !browser_available("pages_browser") {
        return;
    }
    let sdk = sdk_dist();
    // Two seats per stage: three viewers need the origin and a replica.
    let (_dir, n) = node(&[
        "--seats-per-stage",
        "2",
        "--join-rate-per-ip",
        "0",
        "--sdk-dir",
        sdk.to_str().unwrap(),
    ]);
    let q = "mutation { createApiKey(name: \"studio\", role: HOST) { key } }";
    let host_key = n.admin(q, json!({})).await["createApiKey"]["key"].as_str().unwrap().to_string();
    n.admin("mutation { startBroadcast(id: \"show\", name: \"The show\") { id } }", json!({}))
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
    assert_eq!(report["ok"], true, "the browser run failed (artifacts in {}): {report:#}", dir.display());

    // --- wrong keys were refused in words a user understands
    for page in ["console", "host"] {
        let msg = report[page]["wrongKeyMessage"].as_str().unwrap();
        assert!(msg.contains("not valid"), "{page}: {msg}");
    }
    // --- the viewer page carried no key (the harness crawled its HTML, scripts and styles)
    let files = report["viewerPage"]["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f == "/watch/watch.js") && files.iter().any(|f| f == "/js/gql.js"), "{files:?}");
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
    assert!(report["earlyViewerStatus"].as_str().unwrap().contains("Waiting for the host"), "{report}");
    assert!(report["fullStatus"].as_str().unwrap().contains("audience is full"), "{report}");
    // --- "End" on the broadcaster page told the fleet the host stopped; ending the show reached every viewer
    for origin in report["origins"].as_array().unwrap() {
        assert_eq!(origin["publishers"], json!([]), "the host stopped publishing: {origin}");
    }
    assert!(report["endedStatus"].as_str().unwrap().contains("ended"), "{report}");
    let show = n.ok("{ broadcast(id: \"show\") { state } }", json!({}), None).await;
    assert!(matches!(show["broadcast"]["state"].as_str(), Some("ENDING" | "ENDED")), "{show}");
    for shot in ["console-1-playing.png", "host-1-playing.png", "viewer1-1-playing.png", "viewer1-2-after-move.png", "viewer1-3-ended.png", "phone-watch.png"] {
        assert!(dir.join(shot).exists(), "screenshot {shot} kept");
    }
}
