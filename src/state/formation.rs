//! How an uninitialised node becomes a cluster member: formed with its peers on first start
//! (`bootstrap_expect`), or added to a cluster that exists (`join`).

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::BasicNode;

use super::NodeId;
use super::rpc::{self, Hello, HelloAnswer, JoinRequest, RpcState};

/// Bring an uninitialised cluster member in: hello every address in `join`; once one of them
/// is in a cluster, ask it to add this node; with `bootstrap_expect` above 1 and no cluster yet,
/// the lowest node id of the `bootstrap_expect` nodes heard from initialises the cluster. Runs
/// until this node is a member, saying every few seconds what it waits for.
pub async fn form_or_join(s: RpcState, expect: u32, join: Vec<String>) {
    let mut said = tokio::time::Instant::now();
    loop {
        if s.raft.is_initialized().await.unwrap_or(false) {
            tracing::info!(node = s.node_id, "member of the cluster");
            return;
        }
        let me = HelloAnswer {
            node_id: s.node_id,
            addr: s.addr.clone(),
            initialized: false,
            leader: None,
            leader_addr: None,
        };
        let mut heard = BTreeMap::from([(s.node_id, me.clone())]);
        let mut silent = Vec::new();
        for addr in join.iter().filter(|a| **a != s.addr) {
            let hello = Hello {
                node_id: s.node_id,
                addr: s.addr.clone(),
            };
            match s
                .peers
                .call::<_, HelloAnswer>(addr, "/raft/hello", &hello, Duration::from_secs(2))
                .await
            {
                Ok(h) => {
                    heard.insert(h.node_id, h);
                }
                Err(e) => silent.push(format!("{addr} ({e})")),
            }
        }
        let waiting_for = if let Some(member) = heard.values().find(|h| h.initialized).cloned() {
            let req = JoinRequest {
                node_id: s.node_id,
                addr: s.addr.clone(),
            };
            match s
                .peers
                .call::<_, Result<(), String>>(&member.addr, "/raft/join", &req, rpc::JOIN_TIMEOUT)
                .await
            {
                Ok(Ok(())) => {
                    tracing::info!(via = %member.addr, "added to the cluster");
                    continue;
                }
                Ok(Err(why)) => format!("the cluster to add this node ({why})"),
                Err(e) => format!("the cluster to add this node ({e})"),
            }
        } else if expect > 1 && heard.len() >= expect as usize {
            if heard.keys().next() == Some(&s.node_id) {
                let members: BTreeMap<NodeId, BasicNode> = heard
                    .iter()
                    .map(|(id, h)| (*id, BasicNode { addr: h.addr.clone() }))
                    .collect();
                tracing::info!(?members, "forming the cluster");
                match s.raft.initialize(members).await {
                    Ok(()) => continue,
                    Err(e) => format!("the cluster to form ({e})"),
                }
            } else {
                format!(
                    "node {} (the lowest id) to form the cluster",
                    heard.keys().next().unwrap_or(&0)
                )
            }
        } else {
            format!(
                "{} of {} nodes to answer (heard from nodes {:?})",
                (expect as usize).max(2).saturating_sub(heard.len()),
                expect.max(2),
                heard.keys().collect::<Vec<_>>()
            )
        };
        if said.elapsed() >= Duration::from_secs(5) {
            tracing::info!(%waiting_for, silent = ?silent, "not a cluster member yet; waiting for {waiting_for}");
            said = tokio::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(300..500))).await;
    }
}
