//! The real IVS Web Broadcast SDK (npm `amazon-ivs-web-broadcast`, pinned in
//! tests/browser/package.json) in real headless Chromium, against a stagefleet node and its
//! built-in emulator on 127.0.0.1: the host page publishes Chromium's fake camera with a host
//! token from `hostTokens`; viewer pages join with tokens from `joinBroadcast` — one on the
//! origin stage, one on a replica stage fed by IVS participant replication — and each must
//! really play the host's video; then the host leaves and each viewer sees it go.
//!
//! The browser side is tests/browser/media.mjs (see its README). Prerequisites come from
//! `bash tests/browser/setup.sh`; without them the test says so and passes, unless
//! STAGEFLEET_BROWSER_TESTS is set (as `.ci/run` does), where their absence fails it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::browser::{HERE, browser_available};
use common::{TestNode, eventually, node};
use serde_json::{Value, json};

async fn host_token(n: &TestNode, broadcast: &str) -> (String, String) {
    let tokens = n.host_tokens(broadcast, "host").await;
    assert_eq!(tokens.len(), 1, "one origin stage: {tokens:?}");
    let t = &tokens[0];
    (
        t["participantId"].as_str().unwrap().into(),
        t["token"].as_str().unwrap().into(),
    )
}

async fn stage(n: &TestNode, id: &str) -> Value {
    let q = "query($id: ID!) { stage(id: $id) { id ready viewers replication { participantId state } } }";
    n.admin(q, json!({"id": id})).await["stage"].clone()
}

/// The harness running one scenario; it writes `ready` when the host publishes and waits for
/// viewer tokens in `tokens`.
struct Harness {
    child: tokio::process::Child,
    ready: PathBuf,
    tokens: PathBuf,
    artifacts: PathBuf,
}

impl Harness {
    fn start(name: &str, host_token: &str) -> Harness {
        let artifacts = common::browser::artifacts(name);
        let ready = artifacts.join("host-published");
        let tokens = artifacts.join("viewer-tokens");
        let child = tokio::process::Command::new("node")
            .arg(Path::new(HERE).join("tests/browser/media.mjs"))
            .args(["--host-token", host_token])
            .arg("--ready-file")
            .arg(&ready)
            .arg("--viewer-tokens-file")
            .arg(&tokens)
            .arg("--artifacts")
            .arg(&artifacts)
            .args(["--timeout-ms", "120000"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs tests/browser/media.mjs");
        Harness {
            child,
            ready,
            tokens,
            artifacts,
        }
    }

    /// Wait until the host page publishes (or the harness gave up: then its report).
    async fn host_published(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !self.ready.exists() {
            if let Ok(Some(_)) = self.child.try_wait() {
                panic!(
                    "the harness ended before the host published: {}",
                    self.report_text().await
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the host page did not publish within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Hand the viewer tokens over (written whole, then renamed into place).
    fn viewers(&self, tokens: &[String]) {
        let tmp = self.tokens.with_extension("tmp");
        std::fs::write(&tmp, tokens.join("\n")).unwrap();
        std::fs::rename(tmp, &self.tokens).unwrap();
    }

    async fn report_text(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out).await;
        }
        out
    }

    /// The harness's one JSON line, once it has finished.
    async fn report(mut self) -> Value {
        let out = tokio::time::timeout(Duration::from_secs(150), self.report_text())
            .await
            .expect("the harness finishes");
        let _ = self.child.wait().await;
        let line = out.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|_| panic!("the harness printed no report: {out:?}"))
    }
}

#[tokio::test]
async fn viewer_pages_on_the_origin_and_on_a_replica_play_the_host_camera_through_the_built_in_emulator() {
    if !browser_available("media_browser") {
        return;
    }
    // One seat per stage: the second viewer lands on the replica.
    let (_dir, n) = node(&["--seats-per-stage", "1", "--join-rate-per-ip", "0"]);
    n.start_broadcast("b").await;
    let (host_id, host_token) = host_token(&n, "b").await;

    // --- 1. the host page joins the origin stage and publishes its camera over WHIP
    let mut harness = Harness::start("origin-and-replica", &host_token);
    harness.host_published().await;
    let q = "mutation($p: String!) { hostPublishing(broadcastId: \"b\", participantId: $p) { id } }";
    n.admin(q, json!({"p": host_id})).await;

    // --- 2. a replica stage: stagefleet replicates the publishing host into it
    let q = "mutation { createStage(broadcastId: \"b\") { id } }";
    let replica = n.admin(q, json!({})).await["createStage"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(Duration::from_secs(30), "the replica to take viewers", || async {
        stage(&n, &replica).await["ready"]
            .as_bool()
            .unwrap_or(false)
            .then_some(())
    })
    .await;

    // --- 3. two viewers join through stagefleet with no key: one seat on each stage
    let mut tokens = vec![];
    let mut stages = vec![];
    for user in ["ann", "bob"] {
        let seat = n.join("b", user).await.expect("a seat");
        stages.push(seat["session"]["stageId"].as_str().unwrap().to_string());
        tokens.push(seat["token"].as_str().unwrap().to_string());
    }
    assert_eq!(stages, vec!["b:0".to_string(), replica.clone()], "one viewer per stage");
    harness.viewers(&tokens);

    // --- 4. each viewer page plays the host's camera, then sees the host leave
    let artifacts = harness.artifacts.clone();
    let report = harness.report().await;
    assert_eq!(
        report["ok"],
        true,
        "the browser run failed (artifacts in {}): {report:#}",
        artifacts.display()
    );
    let viewers = report["viewers"].as_array().unwrap();
    assert_eq!(viewers.len(), 2);
    for (v, stage) in viewers.iter().zip(&stages) {
        let who = format!("the viewer on {stage}: {v}");
        assert_eq!(
            (v["videoWidth"].as_u64(), v["videoHeight"].as_u64()),
            (Some(640), Some(360)),
            "{who}"
        );
        assert!(
            v["advancedSeconds"].as_f64().unwrap() >= 2.0,
            "playback advances: {who}"
        );
        assert_eq!(v["framesGrew"], true, "{who}");
        assert!(v["lumaStd"].as_f64().unwrap() > 5.0, "not a black picture: {who}");
        assert_eq!(v["changed"], true, "a moving picture: {who}");
        assert_eq!(v["sawHostLeave"], true, "{who}");
        eprintln!("{stage}: first frame {} ms after join()", v["firstFrameMs"]);
    }
    assert!(artifacts.join("viewer1-1-playing.png").exists(), "screenshots are kept");
}
