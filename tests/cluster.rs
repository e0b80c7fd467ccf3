//! A three-node cluster of real processes on loopback: it forms from three identical configs,
//! every node answers joins (a follower forwards them and signs the tokens itself), losing the
//! leader loses no acknowledged join and writes resume, and a wrong cluster secret is refused.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, SECRET};
use common::{decode_jwt, eventually};
use serde_json::json;

async fn viewers(c: &Cluster, i: usize, broadcast: &str) -> u64 {
    c.node(i)
        .admin("query($b: ID!) { stats(broadcastId: $b) { viewers } }", json!({"b": broadcast}))
        .await["stats"]["viewers"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_form_one_cluster_and_every_node_answers_joins() {
    let c = Cluster::start(&[]).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let term = c.status(leader).await["term"].as_u64().unwrap();
    for i in 0..3 {
        let s = c.status(i).await;
        assert_eq!(s["leaderId"].as_u64(), Some(c.members[leader].id), "node {i}: {s}");
        assert_eq!(s["isLeader"].as_bool(), Some(i == leader), "node {i}: {s}");
        assert_eq!(s["term"].as_u64(), Some(term), "node {i}: {s}");
    }

    // An admin write through a follower reaches the leader, whose loop creates the stage in IVS.
    let b = c.node(follower).start_broadcast("show").await;
    assert_eq!(b["state"], "LIVE", "{b}");

    // Every node seats viewers; each answer is a token for the seat, signed by that node.
    let mut sessions = Vec::new();
    for i in 0..3 {
        for v in 0..4 {
            let user = format!("viewer-{i}-{v}");
            let joined = c.node(i).join("show", &user).await.unwrap_or_else(|e| panic!("join on node {i}: {e}"));
            let (_, claims) = decode_jwt(joined["token"].as_str().unwrap());
            assert_eq!(claims["user_id"], user.as_str(), "{claims}");
            sessions.push(joined["session"]["id"].as_str().unwrap().to_string());
        }
    }
    // Every node has applied every seat.
    for i in 0..3 {
        eventually(Duration::from_secs(10), "each node counts the 12 viewers", || async {
            (viewers(&c, i, "show").await == 12).then_some(())
        })
        .await;
        for s in &sessions {
            let found = c.node(i).admin("query($s: ID!) { session(id: $s) { id } }", json!({"s": s})).await;
            assert_eq!(found["session"]["id"], s.as_str(), "node {i} knows session {s}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_raft_port_refuses_a_wrong_or_missing_cluster_secret() {
    let c = Cluster::start(&[]).await;
    let http = reqwest::Client::new();
    let hello = json!({"node_id": 9, "addr": "127.0.0.1:1"});
    for (secret, expected) in [(None, 401), (Some("not-the-cluster-secret-at-all"), 401), (Some(SECRET), 200)] {
        let mut req = http.post(format!("http://{}/raft/hello", c.members[0].raft_addr)).json(&hello);
        if let Some(s) = secret {
            req = req.header("x-stagefleet-cluster-secret", s);
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert_eq!(status, expected, "secret {secret:?}");
    }
    // A forged vote for a higher term is refused before Raft sees it: the leader stays.
    let leader = c.leader().await;
    let term = c.status(leader).await["term"].as_u64().unwrap();
    let forged = json!({"vote": {"leader_id": {"term": term + 5, "node_id": 9}, "committed": false}, "last_log_id": null});
    let status = http
        .post(format!("http://{}/raft/vote", c.members[leader].raft_addr))
        .header("x-stagefleet-cluster-secret", "wrong-secret-wrong-secret")
        .json(&forged)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
    assert_eq!(c.status(leader).await["term"].as_u64(), Some(term));
    let metrics = c.node(0).get("/metrics").await.1;
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stagefleet_raft_rpc_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the refusals are counted in /metrics");
    assert!(refused >= 2.0, "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_loses_no_acknowledged_join_and_writes_resume() {
    let mut c = Cluster::start(&["--seats-per-stage", "1000"]).await;
    let first = c.leader().await;
    c.node(first).start_broadcast("show").await;
    let mut acknowledged = Vec::new();
    for k in 0..30 {
        let i = k % 3;
        let joined = c.node(i).join("show", &format!("before-{k}")).await.expect("join before the kill");
        acknowledged.push(joined["session"]["id"].as_str().unwrap().to_string());
    }

    c.kill9(first);
    let killed = Instant::now();
    let survivor = (first + 1) % 3;
    // Writes resume through a survivor once the other two elect a leader.
    let joined = eventually(Duration::from_secs(20), "a join is accepted after the leader died", || async {
        c.node(survivor).join("show", "after-the-kill").await.ok()
    })
    .await;
    let stalled = killed.elapsed();
    acknowledged.push(joined["session"]["id"].as_str().unwrap().to_string());
    let second = c.leader().await;
    assert_ne!(second, first, "a survivor leads");
    eprintln!("writes resumed {stalled:?} after the leader was killed");

    // Nothing acknowledged is lost, on either survivor.
    for (i, n) in c.running() {
        for s in &acknowledged {
            let found = n.admin("query($s: ID!) { session(id: $s) { id } }", json!({"s": s})).await;
            assert_eq!(found["session"]["id"], s.as_str(), "node {i} lost session {s}");
        }
    }

    // The killed node comes back as a follower and catches up.
    c.restart(first);
    eventually(Duration::from_secs(20), "the restarted node has every seat", || async {
        (viewers(&c, first, "show").await == acknowledged.len() as u64).then_some(())
    })
    .await;
    assert_eq!(c.leader().await, second, "a returning node does not take over");
}
