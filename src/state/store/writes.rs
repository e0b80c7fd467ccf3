//! Writes and current reads through a [`Store`]: `propose` (here when this node leads, else
//! forwarded to the leader and answered once applied here too), the leader loops' fenced
//! writes, and `catch_up`, the read barrier reads that must be current share.

use super::*;

/// What a forwarding caller waits for (see [`Store::applied_here`]).
const FORWARDED: &str = "a forwarded write is applied here";

impl Store {
    /// Replicate and apply `p`; answers its output once it is committed, applied and flushed.
    pub async fn propose<P: Proposal>(&self, p: P) -> Result<P::Output, ProposalError> {
        Ok(self.propose_logged(p).await?.1)
    }

    /// A leader's loop's write for its `term`: taken only while this node leads in that term
    /// (never forwarded), and applied only if the log takes it in that term (a leader deposed
    /// and re-elected in between does not count) — otherwise refused, and nothing changes.
    pub async fn propose_fenced<P: Proposal>(&self, term: u64, p: P) -> Result<P::Output, ProposalError> {
        let now = *self.leadership.borrow();
        if now.leader != Some(self.node_id) || now.term != term {
            return Err(ProposalError::NotApplied(ProposeError::NotLeader {
                leader: now.leader,
                leader_addr: None,
            }));
        }
        let cmd = Command::Fenced {
            term,
            command: Box::new(p.into_command()),
        };
        let label = cmd.label();
        let (_, response) = self.write_here(cmd).await?;
        proposal::answer::<P>(label, response)
    }

    /// [`Store::propose`], also answering the entry's log id.
    pub async fn propose_logged<P: Proposal>(&self, p: P) -> Result<(LogId, P::Output), ProposalError> {
        let cmd = p.into_command();
        let label = cmd.label();
        let (log_id, response) = self.write(cmd).await?;
        Ok((log_id, proposal::answer::<P>(label, response)?))
    }

    async fn write(&self, cmd: Command) -> Result<(LogId, Response), ProposeError> {
        if self.peers.is_none() || self.is_leader() {
            return self.write_here(cmd).await;
        }
        self.forward(cmd).await
    }

    /// Append through this node's Raft (it leads, or is told who does). In a cluster, a leader
    /// cut off from the majority never commits: the write is answered within a bound instead of
    /// held (the entry may still commit once the cluster heals, so a client retries — joins are
    /// idempotent per user).
    async fn write_here(&self, cmd: Command) -> Result<(LogId, Response), ProposeError> {
        if self.peers.is_none() {
            return self.client_write(cmd).await;
        }
        tokio::time::timeout(COMMIT_WITHIN, self.client_write(cmd))
            .await
            .unwrap_or_else(|_| {
                Err(ProposeError::Unavailable(format!(
                    "not committed within {} s: this node cannot reach a majority of the cluster",
                    COMMIT_WITHIN.as_secs()
                )))
            })
    }

    async fn client_write(&self, cmd: Command) -> Result<(LogId, Response), ProposeError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok((r.log_id, r.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader {
                leader: f.leader_id,
                leader_addr: f.leader_node.map(|n| n.addr),
            }),
            Err(e) => Err(ProposeError::Unavailable(e.to_string())),
        }
    }

    /// The applied state, current where it matters: local when `settled` holds of it, else as
    /// of every write committed before now (after [`Store::catch_up`]). For a lookup whose
    /// answer is usually here already — a session, a broadcast — but which a node that has not
    /// applied a write made through another node a moment ago must not refuse.
    pub async fn view_where(&self, settled: impl Fn(&View) -> bool) -> Result<View, ProposeError> {
        let view = self.view();
        if settled(&view) {
            return Ok(view);
        }
        self.catch_up().await?;
        Ok(self.view())
    }

    /// Wait until this node's state holds every write committed before now (a linearizable
    /// read barrier): for reads that must be current, such as a session looked up on another
    /// node than the one that seated it. Immediate on a single node; on the leader, a quorum
    /// confirms it still leads; on a follower, the leader's read index is applied here first.
    pub async fn catch_up(&self) -> Result<(), ProposeError> {
        if self.peers.is_none() {
            return Ok(());
        }
        // Reads share rounds: once a round that started after this read arrived has completed,
        // it covers this read too (rounds run one at a time, so the second one to complete after
        // arrival started after it). A burst of reads costs a few rounds, not one each.
        let arrived = self.read_rounds.load(std::sync::atomic::Ordering::Acquire);
        let _turn = self.read_turn.lock().await;
        if self.read_rounds.load(std::sync::atomic::Ordering::Acquire) >= arrived + 2 {
            return Ok(());
        }
        let done = self.read_round().await;
        if done.is_ok() {
            self.read_rounds.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        done
    }

    async fn read_round(&self) -> Result<(), ProposeError> {
        // The leader's confirmation round gives each follower one heartbeat interval to answer; a
        // busy moment misses it, so a failed round is tried again before the read is refused.
        let mut last = None;
        for attempt in 0..4u32 {
            match self.catch_up_once().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
        }
        Err(last.expect("tried"))
    }

    async fn catch_up_once(&self) -> Result<(), ProposeError> {
        let Some(peers) = &self.peers else {
            return Ok(());
        };
        let unavailable = |why: String| ProposeError::Unavailable(format!("a current read is not possible now: {why}"));
        if self.is_leader() {
            return rpc::confirmed_read_index(&self.raft)
                .await
                .map(drop)
                .map_err(unavailable);
        }
        let (_, addr) = self
            .leader_addr()
            .ok_or_else(|| unavailable("no leader is known".into()))?;
        let index = peers
            .call::<_, Result<u64, String>>(&addr, "/raft/read-index", &(), FORWARD_TIMEOUT)
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .map_err(unavailable)?;
        self.applied_here(index, "the leader's read index is applied here")
            .await
            .map_err(|e| unavailable(e.to_string()))
    }

    /// A follower's write: sent to the leader (one request per write, so a batch of joins
    /// stays one request), answered once this node has applied it too, so what the caller reads
    /// next here includes it. Waits up to [`LEADER_WITHIN`] for a leader; a write that was sent
    /// but not answered is not sent again (it may have been applied). A batch of joins is
    /// answered with its log id alone: the seats are this node's own apply's.
    async fn forward(&self, mut cmd: Command) -> Result<(LogId, Response), ProposeError> {
        let peers = self.peers.as_ref().expect("only a cluster member forwards");
        if let Some(why) = self.not_a_member() {
            return Err(ProposeError::Unavailable(format!(
                "{why}: it takes no writes; send them to a member"
            )));
        }
        if let Command::AdmitViewers { origin, .. } = &mut cmd {
            *origin = Some(self.node_id);
        }
        let forwarded = rpc::Forwarded {
            from: self.node_id,
            command: &cmd,
        };
        let deadline = tokio::time::Instant::now() + LEADER_WITHIN;
        let mut leadership = self.leadership();
        let mut last_problem = String::from("no leader is known");
        loop {
            let leader_addr = self.leader_addr();
            if let Some((leader, addr)) = leader_addr {
                if leader == self.node_id {
                    // Became the leader meanwhile.
                    return self.write_here(cmd).await;
                }
                match peers
                    .call::<_, ProposeAnswer>(&addr, "/raft/propose", &forwarded, FORWARD_TIMEOUT)
                    .await
                {
                    Ok(ProposeAnswer::Applied { log_id, response }) => {
                        if let Err(e) = self.applied_here(log_id.index, FORWARDED).await {
                            tracing::warn!(index = log_id.index, error = %e, "a write the leader applied is not applied here yet");
                        }
                        return Ok((log_id, response));
                    }
                    Ok(ProposeAnswer::Committed { log_id }) => {
                        let taken = match self.applied_here(log_id.index, FORWARDED).await {
                            Ok(()) => self.shared.take_answer(&log_id).ok_or_else(|| {
                                "this node got past it without applying it itself (a snapshot)".to_string()
                            }),
                            Err(e) => Err(format!("this node has not applied it yet: {e}")),
                        };
                        return match taken {
                            Ok(response) => Ok((log_id, response)),
                            Err(why) => Err(ProposeError::Unavailable(format!(
                                "the write was committed (log index {}), but {why}; it took effect: \
                                 asking again is safe (a viewer joining again keeps the seat)",
                                log_id.index
                            ))),
                        };
                    }
                    Ok(ProposeAnswer::Unavailable(why)) => return Err(ProposeError::Unavailable(why)),
                    Ok(ProposeAnswer::NotMember) => {
                        self.not_member.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            leader,
                            "the leader says this node is not a member of the cluster: it takes no more writes"
                        );
                        return Err(ProposeError::Unavailable(
                            "this node left or was removed from the cluster: it takes no writes; send them to a member"
                                .into(),
                        ));
                    }
                    // The leader changed or died before it took the write: try the next one.
                    Ok(ProposeAnswer::NotLeader { .. }) => last_problem = format!("node {leader} no longer leads"),
                    Err(e @ CallError::Unreachable { .. }) => last_problem = e.to_string(),
                    Err(e) => {
                        return Err(ProposeError::Unavailable(format!(
                            "the leader (node {leader}) did not answer a forwarded write: {e}"
                        )));
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ProposeError::Unavailable(format!(
                    "no leader took the write within {} s ({last_problem}); this node may be cut off from the majority",
                    LEADER_WITHIN.as_secs()
                )));
            }
            // Until the leadership changes, or a moment passes (a dead leader is still named).
            let _ = tokio::time::timeout(Duration::from_millis(100).min(deadline - now), leadership.changed()).await;
        }
    }

    /// Wait until this node has applied the entry at `index` (one the leader has), a bounded time;
    /// `what` names the wait in its error.
    async fn applied_here(&self, index: u64, what: &str) -> Result<(), openraft::metrics::WaitError> {
        self.raft
            .wait(Some(FORWARD_TIMEOUT))
            .applied_index_at_least(Some(index), what)
            .await
            .map(drop)
    }

    /// The leader this node knows of and its Raft address.
    fn leader_addr(&self) -> Option<(NodeId, String)> {
        match rpc::leader_of(&self.raft.metrics().borrow()) {
            (Some(leader), Some(addr)) => Some((leader, addr)),
            _ => None,
        }
    }
}
