//! A three-node cluster of real processes on loopback: it forms from three identical configs,
//! every node answers joins (a follower forwards them and signs the tokens itself), losing the
//! leader loses no acknowledged join and writes resume, and a wrong cluster secret is refused.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, SECRET};
use common::{decode_jwt, eventually};
use serde_json::{Value, json};

async fn viewers(c: &Cluster, i: usize, broadcast: &str) -> u64 {
    c.node(i)
        .admin(
            "query($b: ID!) { stats(broadcastId: $b) { viewers } }",
            json!({"b": broadcast}),
        )
        .await["stats"]["viewers"]
        .as_u64()
        .unwrap()
}

/// Like [`viewers`], `None` while the node cannot answer (e.g. it has not caught up to the key).
async fn viewers_now(c: &Cluster, i: usize, broadcast: &str) -> Option<u64> {
    let (_, body) = c
        .node(i)
        .post(
            "query($b: ID!) { stats(broadcastId: $b) { viewers } }",
            json!({"b": broadcast}),
            Some(&c.admin_key),
        )
        .await;
    body["data"]["stats"]["viewers"].as_u64()
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
            let joined = c
                .node(i)
                .join("show", &user)
                .await
                .unwrap_or_else(|e| panic!("join on node {i}: {e}"));
            let (_, claims) = decode_jwt(joined["token"].as_str().unwrap());
            assert_eq!(claims["user_id"], user.as_str(), "{claims}");
            let session = joined["session"]["id"].as_str().unwrap().to_string();
            // A session read is current on every node at once: the next node finds it.
            let other = (i + 1 + v % 2) % 3;
            let found = c
                .node(other)
                .admin("query($s: ID!) { session(id: $s) { id } }", json!({"s": session}))
                .await;
            assert_eq!(
                found["session"]["id"],
                session.as_str(),
                "node {other} finds the seat node {i} just took"
            );
            // So does a heartbeat through the third node (a viewer behind a load balancer).
            let third = 3 - i - other;
            let beat = c
                .node(third)
                .admin(
                    "mutation($s: ID!) { heartbeat(sessionId: $s) { id } }",
                    json!({"s": session}),
                )
                .await;
            assert_eq!(
                beat["heartbeat"]["id"],
                session.as_str(),
                "node {third} renews the seat node {i} just took"
            );
            sessions.push(session);
        }
    }
    // Every node has applied every seat.
    for i in 0..3 {
        eventually(Duration::from_secs(10), "each node counts the 12 viewers", || async {
            (viewers(&c, i, "show").await == 12).then_some(())
        })
        .await;
        for s in &sessions {
            let found = c
                .node(i)
                .admin("query($s: ID!) { session(id: $s) { id } }", json!({"s": s}))
                .await;
            assert_eq!(found["session"]["id"], s.as_str(), "node {i} knows session {s}");
        }
    }
}

/// POST a query to node `i`, asking for a current read or not: status, headers, body.
async fn read(c: &Cluster, i: usize, query: &str, current: bool) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = c
        .node(i)
        .http()
        .post(format!("{}/graphql", c.node(i).url))
        .json(&json!({"query": query}));
    if current {
        req = req.header("x-stagefleet-read", "current");
    }
    let resp = req.send().await.expect("POST /graphql");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_current_read_on_a_follower_sees_every_write_committed_before_it() {
    let c = Cluster::start(&[]).await;
    let leader = c.leader().await;
    c.node(leader).start_broadcast("show").await;
    let q = "{ stats(broadcastId: \"show\") { viewers } }";
    for n in 1..=20u64 {
        c.node(leader)
            .join("show", &format!("viewer-{n}"))
            .await
            .expect("a seat");
        // At once, on a follower: the join the leader acknowledged is in the answer, every time.
        let follower = (leader + 1 + (n as usize % 2)) % 3;
        let (status, headers, body) = read(&c, follower, q, true).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["stats"]["viewers"], n, "node {follower}, join {n}");
        assert_eq!(headers["x-stagefleet-read"], "current");
        assert_eq!(
            headers["x-stagefleet-leader"],
            c.members[leader].id.to_string().as_str()
        );
        let applied: u64 = headers["x-stagefleet-applied-index"].to_str().unwrap().parse().unwrap();
        assert!(applied > 0, "{headers:?}");
    }
    // Without the header the answer is local, and says which index it is of.
    let (_, headers, _) = read(&c, (leader + 1) % 3, q, false).await;
    assert_eq!(headers["x-stagefleet-read"], "local");
    assert!(headers.contains_key("x-stagefleet-applied-index"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_raft_port_refuses_a_wrong_or_missing_cluster_secret() {
    let c = Cluster::start(&[]).await;
    let http = reqwest::Client::new();
    let hello = json!({"node_id": 9, "addr": "127.0.0.1:1"});
    for (secret, expected) in [
        (None, 401),
        (Some("not-the-cluster-secret-at-all"), 401),
        (Some(SECRET), 200),
    ] {
        let mut req = http
            .post(format!("http://{}/raft/hello", c.members[0].raft_addr))
            .json(&hello);
        if let Some(s) = secret {
            req = req.header("x-stagefleet-cluster-secret", s);
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert_eq!(status, expected, "secret {secret:?}");
    }
    // A forged vote for a higher term is refused before Raft sees it: the leader stays.
    let leader = c.leader().await;
    let term = c.status(leader).await["term"].as_u64().unwrap();
    let forged =
        json!({"vote": {"leader_id": {"term": term + 5, "node_id": 9}, "committed": false}, "last_log_id": null});
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
        let joined = c
            .node(i)
            .join("show", &format!("before-{k}"))
            .await
            .expect("join before the kill");
        acknowledged.push(joined["session"]["id"].as_str().unwrap().to_string());
    }

    c.kill9(first);
    let killed = Instant::now();
    let survivor = (first + 1) % 3;
    // Writes resume through a survivor once the other two elect a leader.
    let joined = eventually(
        Duration::from_secs(20),
        "a join is accepted after the leader died",
        || async { c.node(survivor).join("show", "after-the-kill").await.ok() },
    )
    .await;
    let stalled = killed.elapsed();
    acknowledged.push(joined["session"]["id"].as_str().unwrap().to_string());
    let second = c.leader().await;
    assert_ne!(second, first, "a survivor leads");
    // The new leader's loops run: a stage asked for through the other survivor is created in IVS.
    let other = 3 - first - second;
    let stage = c
        .node(other)
        .admin(
            "mutation { createStage(broadcastId: \"show\") { id state arn } }",
            json!({}),
        )
        .await["createStage"]
        .clone();
    assert_eq!(stage["state"], "ACTIVE", "{stage}");
    assert!(
        stage["arn"].as_str().is_some_and(|a| a.starts_with("arn:aws:ivs:")),
        "{stage}"
    );
    eprintln!("writes resumed {stalled:?} after the leader was killed");

    // Nothing acknowledged is lost, on either survivor.
    for (i, n) in c.running() {
        for s in &acknowledged {
            let found = n
                .admin("query($s: ID!) { session(id: $s) { id } }", json!({"s": s}))
                .await;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_from_the_majority_refuses_writes_then_heals_and_catches_up() {
    let c = Cluster::start(&[]).await;
    let leader = c.leader().await;
    c.node(leader).start_broadcast("show").await;
    c.node(leader)
        .join("show", "before")
        .await
        .expect("join before the cut");
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for i in &others {
        c.node(*i).freeze();
    }
    // Alone, the old leader cannot commit: a join is refused with a clear reason, not held.
    let asked = Instant::now();
    let (_, body) = c
        .node(leader)
        .post(
            "mutation { joinBroadcast(broadcastId: \"show\", userId: \"during\") { token } }",
            json!({}),
            None,
        )
        .await;
    let waited = asked.elapsed();
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAVAILABLE", "{body}");
    assert!(waited < Duration::from_secs(15), "answered after {waited:?}");
    // Reads still answer from the node's own state, and say so; a current read cannot be had.
    assert_eq!(viewers(&c, leader, "show").await, 1);
    let (status, headers, body) = read(&c, leader, "{ stats(broadcastId: \"show\") { viewers } }", true).await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{body}"
    );
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("current read"),
        "{body} {headers:?}"
    );
    let (_, headers, _) = read(&c, leader, "{ stats(broadcastId: \"show\") { viewers } }", false).await;
    assert_eq!(headers["x-stagefleet-read"], "local");

    for i in &others {
        c.node(*i).thaw();
    }
    let joined = eventually(Duration::from_secs(20), "joins are taken again once healed", || async {
        c.node(leader).join("show", "after").await.ok()
    })
    .await;
    assert!(joined["token"].is_string());
    // Every node ends with the same seats: "before", "after", and "during" only if the entry
    // the cut-off leader had logged was committed after the heal (it was answered UNAVAILABLE,
    // so a client would have retried; the seat is the same user's either way).
    let expected = viewers(&c, c.leader().await, "show").await;
    assert!((2..=3).contains(&expected), "{expected}");
    for i in 0..3 {
        eventually(Duration::from_secs(20), "every node catches up", || async {
            (viewers(&c, i, "show").await == expected).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_cluster_stops_and_starts_with_all_state() {
    let mut c = Cluster::start(&[]).await;
    c.node(0).start_broadcast("show").await;
    let mut sessions = Vec::new();
    for k in 0..9 {
        let joined = c.node(k % 3).join("show", &format!("v{k}")).await.unwrap();
        sessions.push(joined["session"]["id"].as_str().unwrap().to_string());
    }
    for i in 0..3 {
        let mut n = c.nodes[i].take().unwrap();
        assert!(n.terminate(), "node {i} stops cleanly on SIGTERM");
    }
    // Restart all three together (each waits for a leader, which needs the others).
    let starts: Vec<_> = c
        .members
        .iter()
        .cloned()
        .map(|m| std::thread::spawn(move || m.start_again()))
        .collect();
    for (i, t) in starts.into_iter().enumerate() {
        let mut n = t.join().unwrap();
        n.admin_key = Some(c.admin_key.clone());
        c.nodes[i] = Some(n);
    }
    c.leader().await;
    for i in 0..3 {
        assert_eq!(viewers(&c, i, "show").await, 9, "node {i}");
        for s in &sessions {
            let found = c
                .node(i)
                .admin("query($s: ID!) { session(id: $s) { id } }", json!({"s": s}))
                .await;
            assert_eq!(found["session"]["id"], s.as_str());
        }
    }
    c.node(2)
        .join("show", "after-restart")
        .await
        .expect("joins after a full restart");
}

/// `stagefleet cluster <args…>` against node `i`: its exit status and printed JSON.
fn cli(c: &Cluster, i: usize, args: &[&str]) -> (bool, serde_json::Value) {
    let out = std::process::Command::new(common::binary())
        .arg("cluster")
        .args(args)
        .args(["--url", &c.node(i).url, "--admin-key", &c.admin_key])
        .output()
        .unwrap();
    let body = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_hands_leadership_over_and_takes_a_node_out() {
    let c = Cluster::start(&[]).await;
    let leader = c.leader().await;
    let (ok, status) = cli(&c, leader, &["status"]);
    assert!(ok, "{status}");
    assert_eq!(status["voters"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(status["leader"].as_u64(), Some(c.members[leader].id));
    for m in status["members"].as_array().unwrap() {
        assert!(m["matched_index"].is_u64(), "the leader knows each member's log: {m}");
    }
    // A wrong key is refused.
    let (status_code, _) = {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/cluster/status", c.node(0).url))
            .bearer_auth("sf_wrong")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status_code, 401);

    // Hand leadership to a chosen follower.
    let target = (leader + 1) % 3;
    let (ok, answer) = cli(
        &c,
        leader,
        &["transfer-leader", "--to", &c.members[target].id.to_string()],
    );
    assert!(ok, "{answer}");
    eventually(Duration::from_secs(10), "the chosen node leads", || async {
        (c.leader().await == target).then_some(())
    })
    .await;

    // Take the third node out: the others go on as a two-voter cluster, it refuses writes.
    let out = 3 - leader - target;
    let (ok, answer) = cli(&c, out, &["leave"]);
    assert!(ok, "{answer}");
    let (_, status) = cli(&c, target, &["status"]);
    let voters: Vec<u64> = status["voters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(!voters.contains(&c.members[out].id), "{status}");
    c.node(target).start_broadcast("show").await;
    c.node(leader)
        .join("show", "still-a-member")
        .await
        .expect("a member joins");
    let refused = eventually(Duration::from_secs(10), "the removed node refuses writes", || async {
        c.node(out).join("show", "on-the-removed-node").await.err()
    })
    .await;
    assert_eq!(refused, "UNAVAILABLE");
    let (code, body) = c.node(out).get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("member: this node left"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_is_gone_for_good_is_removed_from_another_node() {
    let mut c = Cluster::start(&[]).await;
    let leader = c.leader().await;
    let gone = (leader + 1) % 3;
    let asked = (leader + 2) % 3;
    c.kill9(gone);
    let (ok, answer) = cli(&c, asked, &["remove", "--node", &c.members[gone].id.to_string()]);
    assert!(ok, "{answer}");
    let (_, status) = cli(&c, leader, &["status"]);
    let voters: Vec<u64> = status["voters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert_eq!(voters.len(), 2, "{status}");
    assert!(!voters.contains(&c.members[gone].id), "{status}");
    // The two left are the whole cluster now: writes go on through either.
    c.node(asked).start_broadcast("show").await;
    c.node(leader).join("show", "a").await.expect("join through the leader");
    c.node(asked)
        .join("show", "b")
        .await
        .expect("join through the other member");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_data_is_wiped_rejoins_and_catches_up_by_snapshot_while_joins_go_on() {
    // Snapshots every 50 entries, so the wiped node's entries are long purged from the others' logs.
    let mut c = Cluster::start(&["--snapshot-every", "50", "--join-rate-per-ip", "0"]).await;
    let leader = c.leader().await;
    c.node(leader).start_broadcast("show").await;
    let wiped = (leader + 1) % 3;
    let survivor = (leader + 2) % 3;
    for k in 0..40 {
        c.node(k % 3).join("show", &format!("before-{k}")).await.unwrap();
    }
    c.kill9(wiped);
    std::fs::remove_dir_all(&c.members[wiped].data_dir).unwrap();
    // Joins go on meanwhile; 200 more writes take the log past two snapshots.
    for k in 0..200 {
        let on = if k % 2 == 0 { leader } else { survivor };
        c.node(on).join("show", &format!("meanwhile-{k}")).await.unwrap();
    }
    c.restart(wiped);
    let seated = 240;
    eventually(Duration::from_secs(30), "the wiped node catches up", || async {
        (viewers_now(&c, wiped, "show").await == Some(seated)).then_some(())
    })
    .await;
    // It is a voting member again and takes joins.
    c.node(wiped)
        .join("show", "on-the-rejoined-node")
        .await
        .expect("the rejoined node takes joins");
    for i in 0..3 {
        eventually(Duration::from_secs(10), "every node has every seat", || async {
            (viewers_now(&c, i, "show").await == Some(seated + 1)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_from_a_running_cluster_restores_into_a_new_node() {
    let c = Cluster::start(&[]).await;
    let leader = c.leader().await;
    c.node(leader).start_broadcast("show").await;
    let mut sessions = Vec::new();
    for k in 0..6 {
        let joined = c.node(k % 3).join("show", &format!("v{k}")).await.unwrap();
        sessions.push(joined["session"]["id"].as_str().unwrap().to_string());
    }
    let follower = (leader + 1) % 3;
    let backup = c.dir.path().join("stagefleet.backup");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::binary())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&[
        "backup",
        "--out",
        backup.to_str().unwrap(),
        "--url",
        &c.node(follower).url,
        "--admin-key",
        &c.admin_key,
    ]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    let restored = c.dir.path().join("restored");
    run(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    // Restoring over a database is refused.
    let again = std::process::Command::new(common::binary())
        .args([
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a database"));

    // A new single node on the restored dir: the same IVS and key-encryption key.
    let kek = c.dir.path().join("kek");
    let mut n = common::TestNode::start(
        &restored,
        &[
            "--key-encryption-key-file",
            kek.to_str().unwrap(),
            "--ivs-backend",
            "emulator",
            "--ivs-endpoint-url",
            &c.emulator.url,
        ],
    );
    assert!(n.admin_key.is_none(), "the backup's admin key carries over; no new one");
    n.admin_key = Some(c.admin_key.clone());
    for s in &sessions {
        let found = n
            .admin("query($s: ID!) { session(id: $s) { id } }", json!({"s": s}))
            .await;
        assert_eq!(found["session"]["id"], s.as_str());
    }
    let joined = n
        .join("show", "after-restore")
        .await
        .expect("the restored node seats and signs");
    assert!(joined["token"].is_string());
}

#[test]
fn the_cluster_secret_is_never_printed_by_help_or_config() {
    let secret = "do-not-print-this-secret-0123";
    for args in [&["serve", "--help"][..], &["config"][..]] {
        let out = std::process::Command::new(common::binary())
            .args(args)
            .env("STAGEFLEET_CLUSTER_SECRET", secret)
            .env("STAGEFLEET_RAFT_ADDR", "127.0.0.1:7999")
            .env("STAGEFLEET_KEY_ENCRYPTION_KEY_FILE", "/nonexistent/kek")
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {printed}");
        assert!(!printed.contains(secret), "{args:?} printed the secret");
        assert!(
            printed.contains("STAGEFLEET_CLUSTER_SECRET") || printed.contains("cluster_secret"),
            "{printed}"
        );
    }
}
