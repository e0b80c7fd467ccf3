//! A node against IVS set up in other ways: a standalone emulator (with injected failures), real
//! AWS without credentials, a signing key supplied by config, and settings from a file and the
//! environment.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestNode, decode_jwt, eventually};
use serde_json::json;

struct Emulator {
    child: Child,
    url: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stagefleet ivs-emulator` on a free loopback port, once it accepts connections.
async fn standalone_emulator() -> Emulator {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(common::binary())
        .args(["ivs-emulator", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(10), "the standalone emulator to listen", || async {
        http.get(format!("{url}/_emulator/state"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    Emulator { child, url }
}

async fn set_faults(em: &Emulator, error_rate: f64) {
    let r = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", em.url))
        .json(&json!({"errorRate": error_rate}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test]
async fn a_failing_ivs_call_is_a_typed_error_and_leaves_no_trace() {
    let em = standalone_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start(dir.path(), &["--ivs-endpoint-url", &em.url, "--ivs-max-attempts", "2"]);
    assert!(
        n.emulator_url.is_none(),
        "no in-process emulator when an endpoint is given"
    );
    let status = n.ok("{ node { ivsBackend } }", json!({}), None).await;
    assert!(status["node"]["ivsBackend"].as_str().unwrap().contains(&em.url));

    // --- IVS fails every call: starting a broadcast is refused with IVS_ERROR and leaves nothing behind
    set_faults(&em, 1.0).await;
    let start = "mutation { startBroadcast(id: \"b\") { state } }";
    assert_eq!(n.err(start, json!({}), n.admin_key.as_deref()).await, "IVS_ERROR");
    let after = n.ok("{ broadcasts { id } stages { id } }", json!({}), None).await;
    assert_eq!(
        after,
        json!({"broadcasts": [], "stages": []}),
        "a failed start leaves no broadcast or stage"
    );

    // --- IVS recovers: the same start is a plain retry
    set_faults(&em, 0.0).await;
    let b = n.admin(start, json!({})).await;
    assert_eq!(b["startBroadcast"]["state"], "LIVE");
    let j = n.join("b", "v").await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/_emulator/join", em.url))
        .json(&json!({"token": j["token"], "publish": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the standalone emulator accepts the node's token");

    // --- a replica stage that IVS refuses to create leaves the broadcast as it was
    set_faults(&em, 1.0).await;
    let add = "mutation { createStage(broadcastId: \"b\") { id } }";
    assert_eq!(n.err(add, json!({}), n.admin_key.as_deref()).await, "IVS_ERROR");
    let stages = n.ok("{ stages { id state } }", json!({}), None).await;
    assert_eq!(stages["stages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn real_aws_without_credentials_fails_fast_with_a_clear_message_and_the_data_dir_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(common::binary())
        .args(["--data-dir", dir.path().to_str().unwrap(), "--http-addr", "127.0.0.1:0"])
        .args([
            "--ivs-backend",
            "aws",
            "--ivs-region",
            "us-east-1",
            "--ivs-endpoint-url",
            "http://127.0.0.1:9",
        ])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", dir.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it took {:?} to give up",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ImportPublicKey"),
        "the error says what failed: {stderr}"
    );
    // The failed first start had already seeded the policy, with no signing key yet: the same
    // data dir starts once IVS answers (here the built-in emulator) and serves joins.
    let n = TestNode::start(dir.path(), &[]);
    n.start_broadcast("b").await;
    let j = n.join("b", "v").await.expect("a join after the failed first start");
    assert_eq!(n.emulator_join(j["token"].as_str().unwrap(), false).await.0, 200);
}

#[tokio::test]
async fn a_signing_key_from_config_signs_the_tokens() {
    use stagefleet::ivs::token::{SigningKey, to_pem};
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_der(&SigningKey::generate_pkcs8(), "").unwrap();
    let pem_path = dir.path().join("signing.pem");
    std::fs::write(&pem_path, to_pem("PRIVATE KEY", key.pkcs8())).unwrap();
    let n = TestNode::start(
        &dir.path().join("node"),
        &["--signing-key-file", pem_path.to_str().unwrap()],
    );
    n.start_broadcast("b").await;
    let j = n.join("b", "v").await.unwrap();
    let token = j["token"].as_str().unwrap();
    // verify with the configured key's public half
    let (header, _) = decode_jwt(token);
    let keys = std::collections::BTreeMap::from([(header["kid"].as_str().unwrap().to_string(), key.public_key_pem())]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    stagefleet::ivs::token::verify(token, &keys, now).expect("signed by the configured key");
    assert_eq!(n.emulator_join(token, false).await.0, 200);
}

#[tokio::test]
async fn settings_come_from_a_file_overridden_by_the_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stagefleet.toml");
    std::fs::write(
        &file,
        "seats_per_stage = 1\nplacement = \"spread\"\ntoken_ttl_minutes = 30\n",
    )
    .unwrap();
    let out = Command::new(common::binary())
        .args([
            "config",
            "--config",
            file.to_str().unwrap(),
            "--token-ttl-minutes",
            "45",
        ])
        .env("STAGEFLEET_SEATS_PER_STAGE", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resolved: toml::Value = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(
        resolved["seats_per_stage"].as_integer(),
        Some(3),
        "environment beats the file"
    );
    assert_eq!(
        resolved["token_ttl_minutes"].as_integer(),
        Some(45),
        "flags beat the file"
    );
    assert_eq!(
        resolved["placement"].as_str(),
        Some("spread"),
        "the file beats defaults"
    );

    std::fs::write(&file, "seats_per_stag = 1\n").unwrap();
    let out = Command::new(common::binary())
        .args(["config", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("seats_per_stag"),
        "unknown keys are named"
    );
}

#[tokio::test]
async fn a_node_killed_while_creating_a_stage_finishes_it_after_restart_without_a_second_stage() {
    let em = standalone_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--ivs-endpoint-url", em.url.as_str()];
    let mut n = TestNode::start(dir.path(), &flags);
    let admin = n.admin_key.clone().unwrap();

    // --- IVS answers slowly: startBroadcast's CreateStage is in flight when the node dies
    let slow = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", em.url))
        .json(&json!({"latencyMs": 1500}));
    assert!(slow.send().await.unwrap().status().is_success());
    let (url, key) = (n.url.clone(), admin.clone());
    let start = tokio::spawn(async move {
        let q = json!({"query": "mutation { startBroadcast(id: \"b\") { state } }"});
        let _ = reqwest::Client::new()
            .post(format!("{url}/graphql"))
            .bearer_auth(key)
            .json(&q)
            .send()
            .await;
    });
    eventually(Duration::from_secs(10), "the stage intent to be committed", || async {
        let b = n.ok("{ broadcast(id: \"b\") { state } }", json!({}), None).await;
        (b["broadcast"]["state"] == "STARTING").then_some(())
    })
    .await;
    n.kill9();
    let _ = start.await;

    // --- restarted, the node finishes the intent: the broadcast goes live on exactly one stage
    let n = TestNode::start(dir.path(), &flags);
    let b = eventually(
        Duration::from_secs(20),
        "the broadcast to go live after restart",
        || async {
            let b = n
                .ok("{ broadcast(id: \"b\") { state stages { arn } } }", json!({}), None)
                .await;
            (b["broadcast"]["state"] == "LIVE").then_some(b)
        },
    )
    .await;
    let arn = b["broadcast"]["stages"][0]["arn"].as_str().unwrap().to_string();
    let state: serde_json::Value = reqwest::get(format!("{}/_emulator/state", em.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tagged: Vec<_> = state["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["tags"]["stagefleet:broadcast"] == "b" && s["tags"]["stagefleet:slot"] == "0")
        .collect();
    assert_eq!(tagged.len(), 1, "one IVS stage for slot 0, not two: {state}");
    assert_eq!(tagged[0]["arn"], arn.as_str());
    assert_eq!(n.join("b", "v").await.unwrap()["stage"]["arn"], arn.as_str());
}

#[tokio::test]
async fn a_slow_ivs_answers_still_pending_and_the_broadcast_goes_live_in_the_background() {
    let em = standalone_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--ivs-endpoint-url",
        em.url.as_str(),
        "--stage-outcome-timeout-secs",
        "1",
    ];
    let n = TestNode::start(dir.path(), &flags);
    let slow = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", em.url))
        .json(&json!({"latencyMs": 3000}));
    assert!(slow.send().await.unwrap().status().is_success());

    let start = "mutation { startBroadcast(id: \"b\") { state } }";
    assert_eq!(
        n.err(start, json!({}), n.admin_key.as_deref()).await,
        "STILL_PENDING",
        "the operation says IVS has not answered yet instead of hanging"
    );
    let b = n.ok("{ broadcast(id: \"b\") { state } }", json!({}), None).await;
    assert_eq!(b["broadcast"]["state"], "STARTING", "the intent is in the log");
    eventually(
        Duration::from_secs(20),
        "the leader's stage loop to finish the creation",
        || async {
            let b = n
                .ok("{ broadcast(id: \"b\") { state stages { state } } }", json!({}), None)
                .await;
            (b["broadcast"]["state"] == "LIVE").then_some(())
        },
    )
    .await;
    let stages = n.ok("{ stages { id state } }", json!({}), None).await;
    assert_eq!(stages["stages"], json!([{"id": "b:0", "state": "ACTIVE"}]));
}

#[tokio::test]
async fn a_failed_deletion_answers_ivs_error_and_the_leader_retries_it_until_the_stage_is_gone() {
    let em = standalone_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--ivs-endpoint-url",
        em.url.as_str(),
        "--ivs-max-attempts",
        "1",
        "--reconcile-interval-secs",
        "1",
    ];
    let n = TestNode::start(dir.path(), &flags);
    n.admin("mutation { startBroadcast(id: \"b\") { state } }", json!({}))
        .await;
    let added = n
        .admin("mutation { createStage(broadcastId: \"b\") { id state } }", json!({}))
        .await;
    assert_eq!(added["createStage"], json!({"id": "b:1", "state": "ACTIVE"}));

    set_faults(&em, 1.0).await;
    let delete = "mutation { deleteStage(id: \"b:1\") { sessionsEnded } }";
    assert_eq!(n.err(delete, json!({}), n.admin_key.as_deref()).await, "IVS_ERROR");
    let s = n.ok("{ stage(id: \"b:1\") { state } }", json!({}), None).await;
    assert_eq!(s["stage"]["state"], "DELETING", "the intent stays for the retry");

    set_faults(&em, 0.0).await;
    eventually(
        Duration::from_secs(20),
        "the retried deletion to remove the stage",
        || async {
            let s = n.ok("{ stage(id: \"b:1\") { state } }", json!({}), None).await;
            s["stage"].is_null().then_some(())
        },
    )
    .await;
    let ivs: serde_json::Value = reqwest::get(format!("{}/_emulator/state", em.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = ivs["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "IVS holds the origin stage only: {names:?}");
}
