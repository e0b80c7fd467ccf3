//! The operator's cluster actions on a [`Store`]: backup (a consistent snapshot), handing
//! leadership over, removing a member or leaving, compacting the log, and whether this node is a
//! member at all. Writes and reads are `writes`'s.

use super::*;

impl Store {
    /// A consistent backup: a snapshot of this node's state taken now (covering every entry it
    /// had applied when asked), as the snapshot file open at its start (a later snapshot
    /// replaces the file's name, not this open file). `stagefleet restore` starts a new data
    /// dir from it.
    pub async fn backup(&self, timeout: Duration) -> anyhow::Result<std::fs::File> {
        let applied = self.cluster_status().last_applied_index.unwrap_or(0);
        self.snapshot_through(applied, tokio::time::Instant::now() + timeout)
            .await?;
        let current = crate::state::snapshot::SnapshotStore::new(self.snapshot_dir.clone())?.open()?;
        Ok(current.context("no snapshot was written")?.1)
    }

    /// Hand leadership to `to` (or to the most caught-up other voter): that node starts an
    /// election, which it wins with a log as current as the others'. Answers the node asked.
    pub async fn transfer_leader(&self, to: Option<NodeId>) -> Result<NodeId, String> {
        let rpc = self
            .rpc
            .as_ref()
            .ok_or("a single node has no one to hand leadership to")?;
        let status = self.cluster_status();
        let target = match to {
            Some(t) => t,
            None => status
                .members
                .iter()
                .filter(|m| m.voter && Some(m.node_id) != status.leader)
                .max_by_key(|m| (m.matched_index, std::cmp::Reverse(m.node_id)))
                .map(|m| m.node_id)
                .ok_or("no other voter to hand leadership to")?,
        };
        let member = status
            .members
            .iter()
            .find(|m| m.node_id == target && m.voter)
            .ok_or_else(|| format!("node {target} is not a voting member"))?;
        if status.leader == Some(target) {
            return Ok(target);
        }
        let target_addr = member.raft_addr.clone();
        let others: Vec<(NodeId, String)> = status
            .members
            .iter()
            .filter(|m| m.voter && m.node_id != target)
            .map(|m| (m.node_id, m.raft_addr.clone()))
            .collect();
        // Everyone but the target stays quiet: the leader stops its heartbeats and nobody else
        // starts an election, so once the followers' leader lease (election_timeout_max) has run
        // out, the target's election is the only one. Writes pause meanwhile.
        let quiet = Timers {
            heartbeat: Some(false),
            elect: Some(false),
        };
        let outcome = async {
            for (id, addr) in &others {
                self.timers_of(rpc, *id, addr, &quiet).await?;
            }
            tokio::time::sleep(Duration::from_millis(ELECTION_TIMEOUT_MAX_MS + 100)).await;
            if target == self.node_id {
                self.raft.trigger().elect().await.map_err(|e| e.to_string())?;
            } else {
                rpc.peers
                    .call::<_, Result<(), String>>(&target_addr, "/raft/elect", &(), Duration::from_secs(5))
                    .await
                    .map_err(|e| e.to_string())??;
            }
            self.raft
                .wait(Some(Duration::from_secs(5)))
                .metrics(|m| m.current_leader == Some(target), "the target leads")
                .await
                .map_err(|e| format!("node {target} did not take over: {e}"))?;
            Ok::<_, String>(())
        }
        .await;
        // Whatever happened, everyone's timers run again.
        let normal = Timers {
            heartbeat: Some(true),
            elect: Some(true),
        };
        for (id, addr) in &others {
            if let Err(e) = self.timers_of(rpc, *id, addr, &normal).await {
                tracing::warn!(node = id, error = %e, "could not switch a node's Raft timers back on");
            }
        }
        outcome.map(|()| target)
    }

    async fn timers_of(&self, rpc: &RpcState, id: NodeId, addr: &str, t: &Timers) -> Result<(), String> {
        if id == self.node_id {
            rpc::set_timers(&self.raft, t);
            return Ok(());
        }
        rpc.peers
            .call::<_, Result<(), String>>(addr, "/raft/timers", t, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Take another member out of the cluster (through the leader): for a node that is gone.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<(), String> {
        let rpc = self.rpc.as_ref().ok_or("a single node is not in a cluster")?;
        if node_id == self.node_id {
            return self.leave().await;
        }
        rpc::remove_member(rpc, node_id).await
    }

    /// Take this node out of the cluster (through the leader). It then serves no writes.
    pub async fn leave(&self) -> Result<(), String> {
        let rpc = self.rpc.as_ref().ok_or("a single node is not in a cluster")?;
        rpc::remove_member(rpc, self.node_id).await?;
        self.not_member.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!("this node left the cluster: it takes no more writes; stop it");
        Ok(())
    }

    /// `Some(why)` when this cluster node is known not to be a member (it left, was removed,
    /// or has not joined yet): it serves no writes and is not ready.
    pub fn not_a_member(&self) -> Option<&'static str> {
        if self.not_member.load(std::sync::atomic::Ordering::Relaxed) {
            Some("this node left or was removed from the cluster")
        } else if self.removed() {
            Some("this node is not a member of the cluster yet")
        } else {
            None
        }
    }

    /// Whether this cluster member has been removed from the membership it knows.
    fn removed(&self) -> bool {
        self.peers.is_some()
            && !self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .any(|(id, _)| *id == self.node_id)
    }

    /// Snapshot the state now and purge the log through `index`, so what entries up to it said
    /// survives only as the state they produced. For an entry whose payload must not stay on disk
    /// (a signing key in an old form): the snapshot file is replaced too.
    pub async fn compact_through(&self, index: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.snapshot_through(index, deadline).await?;
        self.raft.trigger().purge_log(index).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(left))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= index),
                "the log is purged through the index",
            )
            .await
            .with_context(|| format!("purging the Raft log through index {index}"))?;
        Ok(())
    }

    /// Until a snapshot covers `index`. Openraft builds one snapshot at a time and ignores a
    /// trigger while one runs, hence the retry.
    async fn snapshot_through(&self, index: u64, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        loop {
            self.raft.trigger().snapshot().await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let built = self
                .raft
                .wait(Some(left.min(Duration::from_secs(2))))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= index),
                    "a snapshot covers the index",
                )
                .await;
            if built.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no snapshot through index {index} in time"
            );
        }
    }
}
