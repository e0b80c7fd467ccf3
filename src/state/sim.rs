//! A seeded fault simulation of the replicated store, in one process: three nodes' real Raft
//! cores, sled log stores and state machines, wired by an in-memory network that delays messages,
//! loses requests and answers, and cuts links one way or both; nodes stopped and started again
//! from their data directories (a clean stop: a kill that loses what sled had not flushed is the
//! real-process tests' SIGKILL, `tests/cluster.rs`); a follower replaced by an empty node (removed
//! from the membership, wiped, added back as a learner, then a voter); viewers joining and leaving through whichever node leads, some
//! batches named as forwarded by a follower (which then answers them from its own apply).
//!
//! What crosses the simulated wire is the JSON the real Raft port carries. Snapshots are small
//! and frequent, and the log is purged behind them, so a node that was away catches up by a
//! snapshot sent in many chunks over the same lossy wire.
//!
//! The seed fixes the workload and the fault schedule, not the threads' interleaving (sled writes
//! on threads of its own and time is real), so a failing seed replays the same faults, not
//! necessarily the same run. `STAGEFLEET_SIM_SEEDS=N` runs N seeds from `STAGEFLEET_SIM_SEED`.
//!
//! Checked once every fault is healed and every node has applied the last write:
//! - every node holds the same sessions and stages (apply is deterministic, snapshots included);
//! - no stage holds more viewers than its capacity, and its count is its sessions;
//! - no viewer holds two seats;
//! - every acknowledged seat is there, on the stage its answer named, unless the viewer's
//!   acknowledged leave removed it; an acknowledged leave is never undone (checked for viewers
//!   whose every join attempt was answered: one that timed out may take effect at any later time);
//! - a follower's kept answer to a batch it forwarded is the leader's answer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::RaftError;
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::log_store::LogStore;
use super::machine::{Shared, StateMachine};
use super::{Command, LogId, NodeId, Raft, Response};
use crate::fleet::admission::FleetPolicy;
use crate::fleet::transition::JoinRequest;
use crate::fleet::{Refusal, StageRole, StageUrls};

mod wire;

use wire::{Running, SimNetwork, Wire};

const NODES: [NodeId; 3] = [1, 2, 3];
/// Seats per stage; two stages, more viewers than seats: some are refused, and seats freed by
/// leaves are taken again.
const CAPACITY: u32 = 12;
const VIEWERS: usize = 36;
/// How long faults are injected; the viewers' work spreads over about this long.
const FAULTS_FOR: Duration = Duration::from_secs(3);
/// A write not answered within this is an unknown outcome (it may still take effect).
const WRITE_WITHIN: Duration = Duration::from_secs(3);
/// How long after the faults end a viewer keeps asking before it gives up on an operation.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);
const BROADCAST: &str = "b";
/// Raft's election time-out, upper bound: also how recently a quorum must have acknowledged a
/// leader for clients to write through it.
const ELECTION_TIMEOUT_MAX_MS: u64 = 500;

fn raft_config() -> Arc<openraft::Config> {
    Arc::new(
        openraft::Config {
            cluster_name: "sim".into(),
            heartbeat_interval: 50,
            election_timeout_min: 250,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            install_snapshot_timeout: 1_000,
            // Many chunks per snapshot, each of which the wire may lose.
            snapshot_max_chunk_size: 2_048,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(25),
            // Purge everything a snapshot holds: a node that was away needs the snapshot.
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        }
        .validate()
        .expect("a valid Raft config"),
    )
}

struct Cluster {
    wire: Arc<Wire>,
    dirs: BTreeMap<NodeId, PathBuf>,
    restarts: AtomicU64,
}

/// Open the node's sled database; the same node stopped a moment ago may still hold its lock
/// while its last tasks wind down.
async fn open_db(dir: &Path) -> sled::Db {
    let mut last = None;
    for _ in 0..500 {
        match sled::Config::new().path(dir.join("db")).open() {
            Ok(db) => return db,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("sled in {} did not open within 5 s: {last:?}", dir.display());
}

impl Cluster {
    async fn start(&self, id: NodeId) {
        let dir = &self.dirs[&id];
        let db = open_db(dir).await;
        let log = LogStore::open(&db).expect("log store opens");
        let sm = StateMachine::open(&db, dir.join("snapshots"), id).expect("state machine opens");
        let shared = sm.shared();
        let network = SimNetwork {
            from: id,
            wire: self.wire.clone(),
        };
        let raft = Raft::new(id, raft_config(), network, log, sm)
            .await
            .expect("raft starts");
        self.wire.up.lock().unwrap().insert(id, Running { raft, shared });
    }

    async fn stop(&self, id: NodeId) {
        let running = self.wire.up.lock().unwrap().remove(&id);
        if let Some(running) = running {
            running.raft.shutdown().await.expect("raft stops");
        }
    }

    /// What an operator does for a lost disk: remove the node from the membership, wipe its data,
    /// start it empty, add it back as a learner (it catches up by snapshot) and then as a voter;
    /// each step asked of the leader of the moment until it is done, faults or not.
    async fn replace(&self, id: NodeId) {
        let others: BTreeSet<NodeId> = NODES.into_iter().filter(|n| *n != id).collect();
        self.until_done("remove the node", |raft| {
            let others = others.clone();
            async move { raft.change_membership(others, false).await.map(|_| ()) }
        })
        .await;
        self.stop(id).await;
        // The stopped node's last tasks (a snapshot being written, sled's flusher) may still write
        // there: once its database opens here, they have let go of it.
        drop(open_db(&self.dirs[&id]).await);
        std::fs::remove_dir_all(&self.dirs[&id]).expect("the node's data is wiped");
        self.start(id).await;
        self.until_done("add it as a learner", |raft| async move {
            raft.add_learner(
                id,
                BasicNode {
                    addr: format!("sim-{id}"),
                },
                true,
            )
            .await
            .map(|_| ())
        })
        .await;
        self.until_done("make it a voter", |raft| async move {
            raft.change_membership(BTreeSet::from(NODES), false).await.map(|_| ())
        })
        .await;
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Ask the leader of the moment to do `what` until it answers done (membership changes,
    /// setup and the final barrier: nothing else is in doubt then).
    async fn until_done<T, E, F, Fut>(&self, what: &str, step: F) -> T
    where
        F: Fn(Raft) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        for _ in 0..400 {
            if let Some((_, raft)) = self.leader()
                && let Ok(Ok(done)) = tokio::time::timeout(WRITE_WITHIN, step(raft)).await
            {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not {what} within 400 attempts");
    }

    fn raft(&self, id: NodeId) -> Option<Raft> {
        self.wire.up.lock().unwrap().get(&id).map(|n| n.raft.clone())
    }

    fn shared(&self, id: NodeId) -> Option<Arc<Shared>> {
        self.wire.up.lock().unwrap().get(&id).map(|n| n.shared.clone())
    }

    /// The node that leads in the highest term, as its own metrics say, and that a quorum
    /// acknowledged within an election time-out (a leader cut off from the others does not know
    /// it was replaced; the real nodes' leader lease is the same test).
    fn leader(&self) -> Option<(NodeId, Raft)> {
        let nodes = self.wire.up.lock().unwrap();
        nodes
            .iter()
            .filter_map(|(id, n)| {
                let m = n.raft.metrics().borrow().clone();
                let acked = m.millis_since_quorum_ack.is_some_and(|ms| ms < ELECTION_TIMEOUT_MAX_MS);
                (m.state == ServerState::Leader && acked).then(|| (m.current_term, *id, n.raft.clone()))
            })
            .max_by_key(|(term, id, _)| (*term, *id))
            .map(|(_, id, raft)| (id, raft))
    }

    /// One attempt at a write through the leader: the answer and its log id, a definite "not
    /// taken" (no leader, or the leader refused it before or dropped it from its log), or an
    /// unknown outcome (no answer in time).
    async fn write(&self, command: Command) -> Attempt {
        let Some((_, raft)) = self.leader() else {
            return Attempt::NotTaken;
        };
        match tokio::time::timeout(WRITE_WITHIN, raft.client_write(command)).await {
            Ok(Ok(written)) => Attempt::Answered(written.log_id, Box::new(written.data)),
            Ok(Err(RaftError::APIError(_))) => Attempt::NotTaken,
            Ok(Err(RaftError::Fatal(_))) | Err(_) => Attempt::Unknown,
        }
    }

    /// Write until answered.
    async fn write_surely(&self, command: Command) -> (LogId, Response) {
        let written = self
            .until_done(&format!("write {command:?}"), |raft| {
                let command = command.clone();
                async move { raft.client_write(command).await }
            })
            .await;
        (written.log_id, written.data)
    }

    /// What the emulator's CreateStage would report for the stage intent `intent` logged.
    async fn create_stage(&self, stage_id: String, intent: LogId) {
        let created = Command::StageCreated {
            arn: format!("arn:aws:ivs:us-east-1:1:stage/{stage_id}"),
            stage_id,
            intent_term: intent.leader_id.term,
            endpoints: StageUrls::default(),
            now: 1_000,
        };
        let (_, answer) = self.write_surely(created).await;
        assert!(matches!(answer, Response::Stage(_)), "a stage created: {answer:?}");
    }
}

enum Attempt {
    Answered(LogId, Box<Response>),
    NotTaken,
    Unknown,
}

/// What one viewer did and was told.
#[derive(Debug, Default)]
struct Ledger {
    user: String,
    /// The seat of the last answered join: session id and stage.
    seated: Option<(String, String)>,
    /// The leave of that seat was answered.
    left: bool,
    /// A join attempt went unanswered: it may take effect at any later time.
    in_doubt: bool,
    /// Forwarded batches whose answer the follower kept, and compared with the leader's.
    kept_answers_checked: u32,
}

fn join_request(user: &str) -> JoinRequest {
    JoinRequest {
        broadcast_id: BROADCAST.into(),
        user_id: user.into(),
        attributes: BTreeMap::new(),
        session_id: format!("s-{user}"),
        participant_id: format!("p-{user}"),
        client: None,
    }
}

/// The follower's kept answer to a batch it was named the origin of, once it applied it: it must
/// be the leader's. `None` if it did not keep one (it restarted, or got past it by a snapshot).
async fn kept_answer(cluster: &Cluster, origin: NodeId, log_id: LogId) -> Option<Response> {
    let raft = cluster.raft(origin)?;
    let shared = cluster.shared(origin)?;
    raft.wait(Some(Duration::from_secs(2)))
        .applied_index_at_least(Some(log_id.index), "the forwarded batch applied")
        .await
        .ok()?;
    shared.take_answer(&log_id)
}

async fn viewer(cluster: Arc<Cluster>, user: String, seed: u64) -> Ledger {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ledger = Ledger {
        user: user.clone(),
        ..Ledger::default()
    };
    tokio::time::sleep(Duration::from_millis(
        rng.random_range(0..FAULTS_FOR.as_millis() as u64 / 2),
    ))
    .await;
    // Join until seated, asking again a few times while every stage is full.
    let mut full = 0;
    let give_up = tokio::time::Instant::now() + FAULTS_FOR + GIVE_UP_AFTER;
    while tokio::time::Instant::now() < give_up {
        // Half the batches are named as forwarded by a follower.
        let leader = cluster.leader().map(|(id, _)| id);
        let origin = rng
            .random_bool(0.5)
            .then(|| NODES[rng.random_range(0..NODES.len())])
            .filter(|o| Some(*o) != leader);
        let join = Command::AdmitViewers {
            now: 1_000,
            requests: vec![join_request(&user)],
            origin,
        };
        match cluster.write(join).await {
            Attempt::Answered(log_id, answer) => {
                let Response::Admitted(seats) = &*answer else {
                    panic!("{user}: a join answered {answer:?}");
                };
                if let Some(origin) = origin
                    && let Some(kept) = kept_answer(&cluster, origin, log_id).await
                {
                    assert_eq!(kept, *answer, "node {origin}'s kept answer to {log_id} is the leader's");
                    ledger.kept_answers_checked += 1;
                }
                match &seats[..] {
                    [Ok(seat)] => {
                        assert!(seat.stage.viewers <= seat.stage.capacity, "{user}: {seat:?}");
                        ledger.seated = Some((seat.session.id.clone(), seat.stage.id.clone()));
                        break;
                    }
                    [Err(Refusal::CapacityExhausted(_))] => {
                        full += 1;
                        if full == 4 {
                            return ledger;
                        }
                        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
                    }
                    other => panic!("{user}: a join answered {other:?}"),
                }
            }
            Attempt::NotTaken => tokio::time::sleep(Duration::from_millis(30)).await,
            Attempt::Unknown => ledger.in_doubt = true,
        }
    }
    let Some((session_id, _)) = ledger.seated.clone() else {
        return ledger;
    };
    if !rng.random_bool(0.5) {
        return ledger;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..600))).await;
    let leave = Command::Leave {
        session_ids: vec![session_id.clone()],
    };
    let mut maybe_left = false;
    while tokio::time::Instant::now() < give_up {
        match cluster.write(leave.clone()).await {
            Attempt::Answered(_, answer) => {
                let Response::Left(results) = *answer else {
                    panic!("{user}: a leave answered {answer:?}");
                };
                match &results[..] {
                    [Ok(session)] => assert_eq!(session.id, session_id),
                    // An earlier attempt that went unanswered took effect.
                    [Err(Refusal::UnknownSession(_))] if maybe_left => {}
                    other => panic!("{user}: a leave answered {other:?}"),
                }
                ledger.left = true;
                break;
            }
            Attempt::NotTaken => tokio::time::sleep(Duration::from_millis(30)).await,
            Attempt::Unknown => maybe_left = true,
        }
    }
    ledger
}

/// Faults for [`FAULTS_FOR`], each starting 50–250 ms after the last began and lasting
/// 150–900 ms, so they overlap: a node cut off, a link cut one way, a node stopped and started
/// again, a burst of lost messages. Half of them strike the leader of the moment. Returns what
/// was done, for the report; every fault is healed when it returns.
async fn inject_faults(cluster: Arc<Cluster>, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let down = Arc::new(Mutex::new(BTreeSet::new()));
    let replacing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut faults = Vec::new();
    let until = tokio::time::Instant::now() + FAULTS_FOR;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
        let leader = cluster.leader().map(|(id, _)| id);
        let node = match leader {
            Some(id) if rng.random_bool(0.5) => id,
            _ => NODES[rng.random_range(0..NODES.len())],
        };
        let who = if Some(node) == leader {
            format!("{node} (leader)")
        } else {
            node.to_string()
        };
        let lasts = Duration::from_millis(rng.random_range(150..900));
        let other = NODES
            .into_iter()
            .filter(|n| *n != node)
            .nth(rng.random_range(0..2))
            .unwrap();
        let kind = rng.random_range(0..5);
        // A node is replaced only while it follows, and one at a time (one membership change).
        let replaced = if Some(node) == leader { other } else { node };
        let cluster = cluster.clone();
        let down = down.clone();
        let replacing = replacing.clone();
        faults.push(tokio::spawn(async move {
            match kind {
                0 => {
                    let links = Wire::links_of(node);
                    cluster.wire.cut(&links, true);
                    tokio::time::sleep(lasts).await;
                    cluster.wire.cut(&links, false);
                    format!("isolated {who} for {lasts:?}")
                }
                1 => {
                    cluster.wire.cut(&[(node, other)], true);
                    tokio::time::sleep(lasts).await;
                    cluster.wire.cut(&[(node, other)], false);
                    format!("cut {who} -> {other} for {lasts:?}")
                }
                2 if down.lock().unwrap().insert(node) => {
                    cluster.stop(node).await;
                    tokio::time::sleep(lasts).await;
                    cluster.start(node).await;
                    cluster.restarts.fetch_add(1, Ordering::Relaxed);
                    down.lock().unwrap().remove(&node);
                    format!("stopped {who} for {lasts:?}")
                }
                4 if !replacing.swap(true, Ordering::SeqCst) && down.lock().unwrap().insert(replaced) => {
                    cluster.replace(replaced).await;
                    down.lock().unwrap().remove(&replaced);
                    replacing.store(false, Ordering::SeqCst);
                    format!("replaced {replaced} by an empty node")
                }
                _ => {
                    cluster.wire.loss_permille.fetch_add(300, Ordering::Relaxed);
                    tokio::time::sleep(lasts).await;
                    cluster.wire.loss_permille.fetch_sub(300, Ordering::Relaxed);
                    format!("lost 30 % more messages for {lasts:?}")
                }
            }
        }));
    }
    let mut done = Vec::new();
    for fault in faults {
        done.push(fault.await.expect("a fault runs to its end"));
    }
    done
}

/// What a node holds, compared across nodes: sessions (id, user, stage) and stages (id,
/// viewers, capacity).
type Holding = (Vec<(String, String, String)>, Vec<(String, u32, u32)>);

fn holding(shared: &Arc<Shared>) -> Holding {
    let view = shared.view();
    let mut sessions: Vec<_> = view.all_sessions().map(|s| (s.id, s.user_id, s.stage_id)).collect();
    sessions.sort();
    let stages = view
        .fleet
        .stages
        .values()
        .map(|s| (s.id.clone(), s.viewers, s.capacity))
        .collect();
    (sessions, stages)
}

async fn simulate(seed: u64) {
    let root = tempfile::tempdir().unwrap();
    let dirs: BTreeMap<NodeId, PathBuf> = NODES
        .into_iter()
        .map(|id| (id, root.path().join(format!("n{id}"))))
        .collect();
    let cluster = Arc::new(Cluster {
        wire: Arc::new(Wire::new(seed)),
        dirs,
        restarts: AtomicU64::new(0),
    });
    for id in NODES {
        cluster.start(id).await;
    }
    let members: BTreeMap<NodeId, BasicNode> = NODES
        .into_iter()
        .map(|id| {
            (
                id,
                BasicNode {
                    addr: format!("sim-{id}"),
                },
            )
        })
        .collect();
    cluster
        .raft(1)
        .unwrap()
        .initialize(members)
        .await
        .expect("the cluster forms");

    // A live broadcast with two stages of CAPACITY seats.
    let policy = FleetPolicy {
        seats_per_stage: CAPACITY,
        ..FleetPolicy::DEFAULT
    };
    cluster.write_surely(Command::SetPolicy(policy)).await;
    let start = Command::StartBroadcast {
        id: BROADCAST.into(),
        name: BROADCAST.into(),
        now: 1_000,
        max_seats_per_client: None,
        fanout: Default::default(),
    };
    let (started, _) = cluster.write_surely(start).await;
    cluster.create_stage(format!("{BROADCAST}:0"), started).await;
    let add = Command::AddStage {
        broadcast_id: BROADCAST.into(),
        role: StageRole::Replica,
        now: 1_000,
    };
    let (added, answer) = cluster.write_surely(add).await;
    let Response::Stage(replica) = answer else {
        panic!("a stage added: {answer:?}");
    };
    cluster.create_stage(replica.id, added).await;

    let faults = tokio::spawn(inject_faults(cluster.clone(), seed ^ 0xfa17));
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|i| {
            tokio::spawn(viewer(
                cluster.clone(),
                format!("u{i}"),
                seed.wrapping_mul(1_000).wrapping_add(i as u64),
            ))
        })
        .collect();
    let faults = faults.await.unwrap();
    // Healed: every link up, every node running, no loss.
    cluster.wire.loss_permille.store(0, Ordering::Relaxed);
    cluster.wire.cut.lock().unwrap().clear();
    let mut ledgers = Vec::new();
    for v in viewers {
        ledgers.push(v.await.unwrap());
    }
    // A last write; once every node applied it, every node applied everything before it.
    let (barrier, _) = cluster
        .write_surely(Command::Renew {
            session_ids: vec![],
            now: 1_000,
        })
        .await;
    for id in NODES {
        let raft = cluster.raft(id).unwrap();
        raft.wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(Some(barrier.index), "the last write applied")
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: node {id} did not catch up: {e}"));
    }

    let held: BTreeMap<NodeId, Holding> = NODES
        .into_iter()
        .map(|id| (id, holding(&cluster.shared(id).unwrap())))
        .collect();
    let (sessions, stages) = &held[&1];
    for id in [2, 3] {
        assert_eq!(held[&id], held[&1], "seed {seed}: node {id} holds what node 1 holds");
    }
    assert_eq!(stages.len(), 2, "seed {seed}: {stages:?}");
    for (stage, viewers, capacity) in stages {
        assert!(viewers <= capacity, "seed {seed}: stage {stage} over capacity");
        let seated = sessions.iter().filter(|s| s.2 == *stage).count();
        assert_eq!(
            *viewers as usize, seated,
            "seed {seed}: stage {stage}'s count is its sessions"
        );
    }
    let users: BTreeSet<&String> = sessions.iter().map(|s| &s.1).collect();
    assert_eq!(users.len(), sessions.len(), "seed {seed}: no viewer holds two seats");
    let mut exact = 0;
    for ledger in &ledgers {
        let found = sessions.iter().find(|s| s.1 == ledger.user);
        match (&ledger.seated, ledger.left) {
            (Some((id, stage)), false) => {
                assert_eq!(
                    found.map(|s| (&s.0, &s.2)),
                    Some((id, stage)),
                    "seed {seed}: {}'s acknowledged seat is kept",
                    ledger.user
                );
                exact += 1;
            }
            (Some(_), true) if !ledger.in_doubt => {
                assert_eq!(found, None, "seed {seed}: {}'s acknowledged leave is kept", ledger.user);
                exact += 1;
            }
            (None, _) if !ledger.in_doubt => {
                assert_eq!(found, None, "seed {seed}: {} was never seated", ledger.user);
                exact += 1;
            }
            _ => {}
        }
    }
    let w = &cluster.wire;
    eprintln!(
        "sim seed {seed}: {} seated, {} left, {} refused or gave up, {} in doubt, {exact} checked exactly; {} kept answers checked; \
         messages {} delivered, {} lost, {} snapshot chunks; {} restarts; faults: {}",
        sessions.len(),
        ledgers.iter().filter(|l| l.left).count(),
        ledgers.iter().filter(|l| l.seated.is_none()).count(),
        ledgers.iter().filter(|l| l.in_doubt).count(),
        ledgers.iter().map(|l| l.kept_answers_checked).sum::<u32>(),
        w.delivered.load(Ordering::Relaxed),
        w.lost.load(Ordering::Relaxed),
        w.snapshot_chunks.load(Ordering::Relaxed),
        cluster.restarts.load(Ordering::Relaxed),
        faults.join(", "),
    );
    for id in NODES {
        cluster.stop(id).await;
    }
}

fn seeds(first_default: u64, count_default: u64) -> std::ops::Range<u64> {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
            .unwrap_or(default)
    };
    let first = env("STAGEFLEET_SIM_SEED", first_default);
    first..first + env("STAGEFLEET_SIM_SEEDS", count_default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_store_under_lost_messages_cut_links_restarts_and_a_replaced_node_keeps_every_acknowledged_write()
{
    for seed in seeds(1, 2) {
        simulate(seed).await;
    }
}
