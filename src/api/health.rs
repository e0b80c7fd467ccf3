//! Liveness, readiness by layer, and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The process answers.
pub async fn livez() -> &'static str {
    "ok\n"
}

/// Ready when the store answers, a leader is known, and the signing key is in place and opens with
/// this node's key-encryption key (a node that cannot sign would fail every join).
pub async fn readyz(State(app): State<AppState>) -> Response {
    let c = app.node.store.cluster_status();
    let store_ok = c.running;
    let leader = c.leader;
    let key = match app.node.signing_key() {
        Ok(_) => Ok(()),
        Err(crate::node::NodeError::NoSigningKey) => Err("missing"),
        Err(_) => Err("does not open with key_encryption_key_file (see the log)"),
    };
    let member = app.node.store.not_a_member();
    let ready = store_ok && leader.is_some() && key.is_ok() && member.is_none();
    let body = format!(
        "store: {}\nmember: {}\nleader: {}\nsigning_key: {}\n",
        if store_ok { "ok" } else { "failed" },
        member.unwrap_or("ok"),
        leader.map_or("none".to_string(), |l| format!("node {l}")),
        key.err().unwrap_or("ok"),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    let node = &app.node;
    let m = &node.metrics;
    {
        let view = node.store.view();
        let s = crate::fleet::stats::of(&view.fleet, None);
        m.set("broadcasts_live", None, s.broadcasts_live as i64);
        for (n, label) in [
            (s.stages_creating, "creating"),
            (s.stages_active, "active"),
            (s.stages_deleting, "deleting"),
        ] {
            m.set("stages", Some(("state", label.to_string())), n as i64);
        }
        m.set("viewers", None, s.viewers as i64);
        m.set("api_keys", None, view.fleet.api_keys.len() as i64);
    }
    let c = node.store.cluster_status();
    let index = |i: Option<u64>| i.map_or(-1, |i| i as i64);
    m.set("raft_term", None, c.term as i64);
    m.set("raft_is_leader", None, i64::from(c.is_leader()));
    m.set("raft_last_log_index", None, index(c.last_log_index));
    m.set("raft_last_applied_index", None, index(c.last_applied_index));
    m.set("raft_snapshot_index", None, index(c.snapshot_index));
    m.set("raft_leader_id", None, c.leader.map_or(-1, |l| l as i64));
    m.set("raft_voters", None, c.voters.len() as i64);
    if c.is_leader() {
        for member in c.members.iter().filter(|x| x.node_id != c.node_id) {
            let lag = member.lag(c.last_log_index).map_or(-1, |l| l as i64);
            m.set(
                "raft_follower_lag_entries",
                Some(("node", member.node_id.to_string())),
                lag,
            );
        }
        let ack = c.millis_since_quorum_ack.map_or(-1, |a| a as i64);
        m.set("raft_millis_since_quorum_ack", None, ack);
    }
    m.set("store_bytes_on_disk", None, node.store.size_on_disk() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
