//! One suite, two twins: the same user-facing scenarios against a single node and against a
//! three-node cluster, where each step goes to another node (a write through a follower, a
//! subscription on one node following writes made through another).

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::ws::Ws;
use common::{TestNode, eventually};
use serde_json::{Value, json};

const FLAGS: &[&str] = &["--stats-interval-ms", "50", "--join-rate-per-ip", "0"];
const ASSIGNMENT: &str =
    "subscription($s: ID!) { assignment(sessionId: $s) { kind reason token session { id stageId } } }";
const STATS: &str = "subscription($b: ID!) { stats(broadcastId: $b) { viewers admittedTotal } }";

enum Deployment {
    Single {
        /// Removed when the deployment is dropped.
        _dir: tempfile::TempDir,
        node: TestNode,
    },
    Cluster(Cluster),
}

impl Deployment {
    async fn single(extra: &[&str]) -> Self {
        let flags: Vec<&str> = FLAGS.iter().chain(extra).copied().collect();
        let (dir, node) = common::node(&flags);
        Deployment::Single { _dir: dir, node }
    }

    async fn cluster(extra: &[&str]) -> Self {
        let flags: Vec<&str> = FLAGS.iter().chain(extra).copied().collect();
        Deployment::Cluster(Cluster::start(&flags).await)
    }

    /// The node for step `k`: the same one alone, the next one in a cluster.
    fn at(&self, k: usize) -> &TestNode {
        match self {
            Deployment::Single { node, .. } => node,
            Deployment::Cluster(c) => c.node(k % 3),
        }
    }
}

async fn session(n: &TestNode, id: &str) -> Value {
    n.ok(
        "query($s: ID!) { session(id: $s) { id userId } }",
        json!({"s": id}),
        None,
    )
    .await["session"]
        .clone()
}

/// Join, join again through another node (the same seat back), leave through a third.
async fn a_viewer_joins_rejoins_and_leaves(d: Deployment) {
    d.at(0).start_broadcast("show").await;
    let first = d.at(1).join("show", "alice").await.expect("join");
    let id = first["session"]["id"].as_str().unwrap().to_string();
    let again = d.at(2).join("show", "alice").await.expect("join again");
    assert_eq!(again["session"]["id"], id.as_str(), "a rejoin returns the same seat");
    assert_eq!(again["rejoined"], true);
    assert_eq!(session(d.at(0), &id).await["userId"], "alice");
    d.at(0)
        .ok(
            "mutation($s: ID!) { leave(sessionId: $s) { id } }",
            json!({"s": id}),
            None,
        )
        .await;
    assert!(session(d.at(1), &id).await.is_null(), "gone everywhere once left");
    assert!(session(d.at(2), &id).await.is_null());
}

/// A page's subscriptions on one node follow writes made through the others.
async fn subscriptions_follow_writes_made_through_any_node(d: Deployment) {
    d.at(0).start_broadcast("show").await;
    // A console opens the broadcast's live views through another node at once: it knows the
    // broadcast even before it has applied the start.
    let mut console = Ws::connect(d.at(1), d.at(1).admin_key.as_deref()).await;
    console
        .subscribe(
            "e",
            "subscription { stageEvents(broadcastId: \"show\") { stageId current } }",
            json!({}),
        )
        .await;
    console
        .subscribe("b", "subscription { broadcast(id: \"show\") { id state } }", json!({}))
        .await;
    assert_eq!(console.data("e", "stageEvents").await["stageId"], "show:0");
    assert_eq!(console.data("b", "broadcast").await["state"], "LIVE");
    let mut ws = Ws::connect(d.at(1), None).await;
    ws.subscribe("s", STATS, json!({"b": "show"})).await;
    assert_eq!(ws.data("s", "stats").await["viewers"], 0);
    let joined = d.at(2).join("show", "bob").await.expect("join");
    // The page opens its seat at once through another node (behind a load balancer), which may
    // not have applied the seat yet: it is found all the same.
    let id = joined["session"]["id"].as_str().unwrap().to_string();
    ws.subscribe("a", ASSIGNMENT, json!({"s": id})).await;
    let seated = ws.data("a", "assignment").await;
    assert_eq!(seated["kind"], "SEATED");
    assert_eq!(seated["session"]["stageId"], joined["session"]["stageId"]);
    ws.data_until("s", "stats", |s| s["viewers"] == 1).await;
    d.at(0)
        .ok(
            "mutation($s: ID!) { leave(sessionId: $s) { id } }",
            json!({"s": id}),
            None,
        )
        .await;
    let ended = ws.data("a", "assignment").await;
    assert_eq!(
        (ended["kind"].clone(), ended["reason"].clone()),
        (json!("ENDED"), json!("LEFT"))
    );
    ws.data_until("s", "stats", |s| s["viewers"] == 0).await;
}

/// An open `assignment` keeps its session past the lease, wherever the socket is; once it
/// closes, the lease runs out.
async fn an_open_assignment_keeps_its_seat_on_any_node(d: Deployment) {
    d.at(0).start_broadcast("show").await;
    let kept = d.at(1).join("show", "kept").await.unwrap()["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dropped = d.at(2).join("show", "dropped").await.unwrap()["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = Ws::connect(d.at(2), None).await;
    ws.subscribe("a", ASSIGNMENT, json!({"s": kept})).await;
    assert_eq!(ws.data("a", "assignment").await["kind"], "SEATED");
    eventually(Duration::from_secs(20), "the unwatched session expires", || async {
        session(d.at(0), &dropped).await.is_null().then_some(())
    })
    .await;
    assert!(!session(d.at(1), &kept).await.is_null(), "the watched one is kept");
    drop(ws);
    eventually(Duration::from_secs(20), "it expires once its socket closed", || async {
        session(d.at(0), &kept).await.is_null().then_some(())
    })
    .await;
}

/// An operator creates a stage through one node and drains and deletes stages through others at
/// once: each node checks against current state, not a copy a few entries behind.
async fn an_operator_acts_on_a_stage_through_any_node(d: Deployment) {
    d.at(0).start_broadcast("show").await;
    let created = d
        .at(1)
        .admin(
            "mutation { createStage(broadcastId: \"show\") { id state } }",
            json!({}),
        )
        .await["createStage"]
        .clone();
    assert_eq!(created["state"], "ACTIVE", "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let drained = d
        .at(2)
        .admin(
            "mutation($id: ID!) { drainStage(id: $id) { stage { id draining } } }",
            json!({"id": id}),
        )
        .await["drainStage"]
        .clone();
    assert_eq!(drained["stage"]["draining"], true, "{drained}");
    // An empty drained stage is deleted; the next one is deleted through a third node.
    let second = d
        .at(0)
        .admin("mutation { createStage(broadcastId: \"show\") { id } }", json!({}))
        .await["createStage"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.at(1)
        .admin(
            "mutation($id: ID!) { deleteStage(id: $id) { id } }",
            json!({"id": second}),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_node_an_operator_acts_on_a_stage() {
    an_operator_acts_on_a_stage_through_any_node(Deployment::single(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_an_operator_acts_on_a_stage_through_any_node() {
    an_operator_acts_on_a_stage_through_any_node(Deployment::cluster(&[]).await).await;
}

const LEASE: &[&str] = &["--session-lease-secs", "2", "--presence-interval-secs", "1"];

#[tokio::test(flavor = "multi_thread")]
async fn single_node_a_viewer_joins_rejoins_and_leaves() {
    a_viewer_joins_rejoins_and_leaves(Deployment::single(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_a_viewer_joins_rejoins_and_leaves() {
    a_viewer_joins_rejoins_and_leaves(Deployment::cluster(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_node_subscriptions_follow_writes() {
    subscriptions_follow_writes_made_through_any_node(Deployment::single(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_subscriptions_follow_writes_made_through_any_node() {
    subscriptions_follow_writes_made_through_any_node(Deployment::cluster(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_node_an_open_assignment_keeps_its_seat() {
    an_open_assignment_keeps_its_seat_on_any_node(Deployment::single(LEASE).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_an_open_assignment_keeps_its_seat_on_any_node() {
    an_open_assignment_keeps_its_seat_on_any_node(Deployment::cluster(LEASE).await).await;
}
