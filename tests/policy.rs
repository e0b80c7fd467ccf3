//! The fleet policy has one owner: the config seeds it when the cluster first forms, `setPolicy`
//! changes it for the whole cluster, and the change outlives a restart whose config disagrees.
//! Capacity changes apply to stages created afterwards.

mod common;

use common::TestNode;
use serde_json::{Value, json};

const POLICY: &str = "{ fleetPolicy { placement seatsPerStage maxStages sessionLeaseSecs maxSeatsPerClient } }";

async fn policy(n: &TestNode) -> Value {
    n.ok(POLICY, json!({}), None).await["fleetPolicy"].clone()
}

async fn capacity(n: &TestNode, stage: &str) -> Value {
    let q = "query($id: ID!) { stage(id: $id) { capacity } }";
    n.ok(q, json!({"id": stage}), None).await["stage"]["capacity"].clone()
}

#[tokio::test]
async fn set_policy_changes_new_stages_and_outlives_a_restart_whose_config_disagrees() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--seats-per-stage", "3", "--max-stages", "50"];
    let mut n = TestNode::start(dir.path(), &flags);
    let admin = n.admin_key.clone().unwrap();
    assert_eq!(
        policy(&n).await,
        json!({"placement": "PACK", "seatsPerStage": 3, "maxStages": 50, "sessionLeaseSecs": 90, "maxSeatsPerClient": 0}),
        "the config seeds the policy at first start"
    );
    n.start_broadcast("a").await;
    assert_eq!(capacity(&n, "a:0").await, 3);

    let set = "mutation { setPolicy(seatsPerStage: 5, placement: SPREAD) { placement seatsPerStage maxStages } }";
    let changed = n.ok(set, json!({}), Some(&admin)).await;
    assert_eq!(
        changed["setPolicy"],
        json!({"placement": "SPREAD", "seatsPerStage": 5, "maxStages": 50}),
        "only the fields given change"
    );
    let added = "mutation { createStage(broadcastId: \"a\") { id capacity } }";
    assert_eq!(
        n.ok(added, json!({}), Some(&admin)).await["createStage"],
        json!({"id": "a:1", "capacity": 5})
    );
    assert_eq!(
        capacity(&n, "a:0").await,
        3,
        "a stage keeps the capacity it was created with"
    );

    // --- restart with the same (now outdated) config: the replicated policy wins
    n.kill9();
    let n = TestNode::start(dir.path(), &flags);
    let after = policy(&n).await;
    assert_eq!(
        (after["seatsPerStage"].clone(), after["placement"].clone()),
        (json!(5), json!("SPREAD"))
    );
    assert_eq!(capacity(&n, "a:1").await, 5);
}

#[tokio::test]
async fn a_policy_out_of_range_or_from_a_non_admin_is_refused_and_changes_nothing() {
    let (_dir, n) = common::node(&[]);
    let admin = n.admin_key.clone().unwrap();
    let before = policy(&n).await;
    for (args, why) in [
        ("seatsPerStage: 0", "a stage seats at least one viewer"),
        ("maxStages: 0", "at least one stage"),
        (
            "sessionLeaseSecs: 3",
            "shorter than two renewal intervals (presence_interval_secs 5)",
        ),
        ("sessionLeaseSecs: 100000", "more than a day"),
        ("maxSeatsPerClient: -1", "negative"),
        (
            "seatsPerStage: 5, maxSeatsPerClient: 2000000",
            "one bad field refuses the whole change",
        ),
    ] {
        let q = format!("mutation {{ setPolicy({args}) {{ seatsPerStage }} }}");
        assert_eq!(n.err(&q, json!({}), Some(&admin)).await, "INVALID_INPUT", "{why}");
    }
    let q = "mutation { setPolicy(placement: SPREAD) { placement } }";
    assert_eq!(n.err(q, json!({}), None).await, "UNAUTHENTICATED");
    let host = n
        .ok(
            "mutation { createApiKey(name: \"h\", role: HOST) { key } }",
            json!({}),
            Some(&admin),
        )
        .await["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(n.err(q, json!({}), Some(&host)).await, "FORBIDDEN");
    assert_eq!(policy(&n).await, before, "nothing changed");
}
