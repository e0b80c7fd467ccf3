//! A flash crowd against the real binary and its built-in emulator with AWS-like timings
//! (CreateStage 300 ms, a replica's media 500 ms after StartParticipantReplication) and IVS's
//! real call-rate quotas: 2,000 viewers at 100/s onto 100-seat stages, which needs four origins
//! at five replicas each. The host publishes on every origin as its page would. While the crowd
//! comes, nobody is refused, no stage is over-filled, no viewer sits on a replica whose media is
//! not flowing, and ready seats never run out. With 30 % of IVS calls throttled, every viewer is
//! seated in the end (asking again when told the audience is full, as the watch page does), and the
//! fleet catches up. (Scaled down ×15 from the 30,000 in 30 s so it runs in the suite on a
//! debug build; `loadtest crowd` runs the full size.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{TestNode, eventually, eventually_showing, node};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const RATE: u64 = 100;
const VIEWERS: u64 = 2_000;

fn flags() -> Vec<&'static str> {
    vec![
        "--autoscale",
        "true",
        "--seats-per-stage",
        "100",
        "--headroom-floor",
        "300",
        "--scaler-interval-ms",
        "250",
        "--emulator-create-stage-ms",
        "300",
        "--emulator-replication-active-ms",
        "500",
        "--region-subscription-quota",
        "0",
        "--join-rate-per-ip",
        "0",
    ]
}

/// The broadcaster page's part: publish on every origin `hostTokens` names, and say so.
async fn publish_everywhere(n: &TestNode, done: &Mutex<Vec<String>>) {
    let q = "mutation { hostTokens(broadcastId: \"b\", userId: \"host\") { participantId token } }";
    let (_, body) = n.post(q, json!({}), n.admin_key.as_deref()).await;
    let Some(tokens) = body["data"]["hostTokens"].as_array() else {
        return;
    };
    for t in tokens {
        let pid = t["participantId"].as_str().unwrap().to_string();
        if done.lock().await.contains(&pid) {
            continue;
        }
        if n.emulator_join(t["token"].as_str().unwrap(), true).await.0 != 200 {
            continue;
        }
        let said = "mutation($p: String!) { hostPublishing(broadcastId: \"b\", participantId: $p) { id } }";
        let (_, r) = n.post(said, json!({"p": pid}), n.admin_key.as_deref()).await;
        if r["errors"].is_null() {
            done.lock().await.push(pid);
        }
    }
}

struct Outcome {
    /// Viewers seated (in the end, when they retried).
    admitted: u64,
    /// Refusals answered, retries included.
    refused: u64,
    min_free_ready: u64,
    /// Host participants the page published (one per origin `hostTokens` named).
    published: usize,
    /// The broadcaster page, still publishing on every new origin, as it does for the whole
    /// broadcast: the fleet may still grow after the crowd.
    page: (Arc<AtomicBool>, tokio::task::JoinHandle<()>),
}

impl Outcome {
    async fn close_page(self) {
        self.page.0.store(true, Ordering::Relaxed);
        self.page.1.await.unwrap();
    }
}

const STAGES: &str = "{ stages { id role ready viewers capacity replication { state } } }";

fn free_ready(stages: &Value) -> u64 {
    stages
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ready"] == true)
        .map(|s| s["capacity"].as_u64().unwrap() - s["viewers"].as_u64().unwrap())
        .sum()
}

/// Start broadcast "b" as an operator would while IVS throttles: a refused start changed nothing
/// and says "retry later", so retry it (a few times; each attempt already had the SDK's retries).
async fn start_retrying(n: &TestNode) {
    let q = "mutation { startBroadcast(id: \"b\", name: \"crowd\") { id state } }";
    for _ in 0..10 {
        let (_, body) = n.post(q, json!({}), n.admin_key.as_deref()).await;
        match body["errors"][0]["extensions"]["code"].as_str() {
            None => {
                assert_eq!(body["data"]["startBroadcast"]["state"], "LIVE", "{body}");
                return;
            }
            Some("IVS_ERROR") => continue,
            Some(_) => panic!("startBroadcast refused: {body}"),
        }
    }
    panic!("startBroadcast refused with IVS_ERROR ten times in a row");
}

/// How long the watch page waits before it asks again after `CAPACITY_EXHAUSTED`
/// (assets/watch/watch.js), and how many times a viewer here asks again at most.
const FULL_RETRY: Duration = Duration::from_secs(5);
const FULL_RETRIES: u32 = 12;

/// Start the broadcast, warm it to its headroom, send the crowd, watch the fleet while it comes.
/// With `retry_full`, a viewer told the audience is full asks again as the watch page does.
async fn crowd(n: Arc<TestNode>, retry_full: bool) -> Outcome {
    start_retrying(&n).await;
    let published = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let page_closed = Arc::new(AtomicBool::new(false));
    let page = {
        let (n, published, closed) = (n.clone(), published.clone(), page_closed.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(300));
            while !closed.load(Ordering::Relaxed) {
                every.tick().await;
                publish_everywhere(&n, &published).await;
            }
        })
    };
    eventually(
        Duration::from_secs(30),
        "the broadcast warmed to its headroom",
        || async {
            let s = n.admin(STAGES, json!({})).await;
            (free_ready(&s["stages"]) >= 300).then_some(())
        },
    )
    .await;

    let (admitted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let watcher = {
        let (n, stop) = (n.clone(), stop.clone());
        tokio::spawn(async move {
            let mut min = u64::MAX;
            let mut every = tokio::time::interval(Duration::from_millis(200));
            while !stop.load(Ordering::Relaxed) {
                every.tick().await;
                let s = n.admin(STAGES, json!({})).await;
                min = min.min(free_ready(&s["stages"]));
            }
            min
        })
    };
    let mut joins = tokio::task::JoinSet::new();
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for i in 0..VIEWERS {
        pace.tick().await;
        let (n, admitted, refused) = (n.clone(), admitted.clone(), refused.clone());
        joins.spawn(async move {
            let mut attempts = 0;
            loop {
                attempts += 1;
                match n.join("b", &format!("v{i}")).await {
                    Ok(_) => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(code) => {
                        eprintln!("refused: {code}");
                        refused.fetch_add(1, Ordering::Relaxed);
                        if !(retry_full && code == "CAPACITY_EXHAUSTED" && attempts < FULL_RETRIES) {
                            return;
                        }
                    }
                }
                tokio::time::sleep(FULL_RETRY).await;
            }
        });
    }
    while joins.join_next().await.is_some() {}
    stop.store(true, Ordering::Relaxed);
    let min_free_ready = watcher.await.unwrap();
    Outcome {
        admitted: admitted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        min_free_ready,
        published: published.lock().await.len(),
        page: (page_closed, page),
    }
}

/// What must hold of any fleet at any time: capacity holds, and every replica seating viewers
/// carries the host's media.
async fn check_fleet(n: &TestNode) -> Vec<Value> {
    let s = n.admin(STAGES, json!({})).await;
    let stages = s["stages"].as_array().unwrap().clone();
    for st in &stages {
        assert!(st["viewers"].as_u64() <= st["capacity"].as_u64(), "over-filled: {st}");
        if st["role"] == "REPLICA" && st["viewers"].as_u64() > Some(0) {
            let reps = st["replication"].as_array().unwrap();
            assert!(
                !reps.is_empty() && reps.iter().all(|r| r["state"] == "ACTIVE"),
                "viewers on a replica without the host's media: {st}"
            );
        }
    }
    stages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_crowd_is_seated_without_refusals_on_stages_whose_media_flows() {
    let (_dir, n) = node(&flags());
    let n = Arc::new(n);
    let out = crowd(n.clone(), false).await;
    assert_eq!(
        (out.admitted, out.refused),
        (VIEWERS, 0),
        "every viewer of the crowd seated"
    );
    assert!(out.min_free_ready > 0, "ready seats never ran out");
    let stages = check_fleet(&n).await;
    let origins = stages.iter().filter(|s| s["role"] == "ORIGIN").count();
    assert!(
        origins >= 4,
        "2,000 seats of 100 need four origins at five replicas each: {origins}"
    );
    assert_eq!(
        out.published, origins,
        "hostTokens gave the host a token for every origin"
    );
    out.close_page().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_third_of_ivs_calls_throttled_the_fleet_survives_and_catches_up() {
    let (_dir, n) = node(&flags());
    let faults = format!("{}/_emulator/faults", n.emulator_url.as_ref().unwrap());
    let set = json!({"throttleRate": 0.3, "createStageMs": 300, "replicationActiveMs": 500});
    let resp = reqwest::Client::new().post(faults).json(&set).send().await.unwrap();
    assert!(resp.status().is_success());
    let n = Arc::new(n);
    // How many are told "full" first depends on how fast this machine is next to the throttled
    // IVS; a viewer on the watch page asks again until seated, and so every one of them is.
    let out = crowd(n.clone(), true).await;
    eprintln!(
        "refusals while the throttled fleet grew (each asked again): {}",
        out.refused
    );
    assert_eq!(
        out.admitted, VIEWERS,
        "every viewer seated in the end, asking again when told the audience is full"
    );
    // Caught up: the headroom is back on READY stages (the page still publishing on any new
    // origin), and the invariants held throughout. On a timeout, say what the fleet looked like.
    eventually_showing(Duration::from_secs(60), "the fleet caught up", || async {
        let s = n.admin(STAGES, json!({})).await;
        if free_ready(&s["stages"]) >= 300 {
            Ok(())
        } else {
            Err(format!("; last seen: {}", s["stages"]))
        }
    })
    .await;
    check_fleet(&n).await;
    out.close_page().await;
}
