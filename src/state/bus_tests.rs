//! The bus against the real state machine: events come in log order with their entry's index and
//! time, a slow subscriber is told to start over, and a snapshot install resets every subscriber.
//! Also what apply keeps for a node that forwarded a join batch: its own answer, the leader's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload};

use super::bus::{Applied, Event, Subscription};
use super::machine::StateMachine;
use super::{Command, LogId};
use crate::fleet::event::{Change, EndReason, StageStep};
use crate::fleet::transition::JoinRequest;
use crate::fleet::{BroadcastState, StageUrls};

const TERM: u64 = 3;

struct Machine {
    _dir: tempfile::TempDir,
    sm: StateMachine,
    next: u64,
}

impl Machine {
    fn open() -> Self {
        Self::open_as(1)
    }

    /// The state machine of node `node_id`.
    fn open_as(node_id: super::NodeId) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        let sm = StateMachine::open(&db, dir.path().join("snapshots"), node_id).unwrap();
        Machine { _dir: dir, sm, next: 1 }
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.sm.shared().events.subscribe())
    }

    /// Apply `cmds` as consecutive entries of one apply call.
    async fn apply(&mut self, cmds: Vec<Command>) {
        self.apply_led_by(1, cmds).await;
    }

    /// Apply `cmds` as consecutive entries appended by node `leader`: what openraft is answered.
    async fn apply_led_by(&mut self, leader: super::NodeId, cmds: Vec<Command>) -> Vec<super::Response> {
        let entries: Vec<Entry<super::TypeConfig>> = cmds
            .into_iter()
            .map(|cmd| {
                let index = self.next;
                self.next += 1;
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(TERM, leader), index),
                    payload: EntryPayload::Normal(cmd),
                }
            })
            .collect();
        self.sm.apply(entries).await.unwrap()
    }
}

async fn next(sub: &mut Subscription) -> Applied {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("the bus answers within 5 s")
        .expect("the bus is open")
}

async fn changes(sub: &mut Subscription) -> Arc<[Event]> {
    match next(sub).await {
        Applied::Changes(e) => e,
        reset => panic!("expected changes, got {reset:?}"),
    }
}

fn join(user: &str) -> JoinRequest {
    JoinRequest {
        broadcast_id: "b".into(),
        user_id: user.into(),
        attributes: BTreeMap::new(),
        session_id: format!("s-{user}"),
        participant_id: format!("p-{user}"),
        client: None,
    }
}

fn start() -> Command {
    Command::StartBroadcast {
        id: "b".into(),
        name: "b".into(),
        now: 1_000,
        max_seats_per_client: None,
        fanout: Default::default(),
    }
}

fn created() -> Command {
    Command::StageCreated {
        stage_id: "b:0".into(),
        intent_term: TERM,
        arn: "arn:aws:ivs:us-east-1:1:stage/x".into(),
        endpoints: StageUrls::default(),
        now: 1_000,
    }
}

#[tokio::test]
async fn events_come_in_log_order_with_their_index_and_time() {
    let mut m = Machine::open();
    let mut sub = m.subscribe();
    m.apply(vec![start()]).await;
    // Two entries in one apply call: one message, both entries' changes in order.
    m.apply(vec![
        created(),
        Command::AdmitViewers {
            now: 2_000,
            requests: vec![join("u1"), join("u2"), join("u1")],
            origin: None,
        },
    ])
    .await;
    m.apply(vec![Command::Leave {
        session_ids: vec!["s-u2".into(), "s-unknown".into()],
    }])
    .await;

    let first = changes(&mut sub).await;
    let stage = |step| Change::Stage {
        id: "b:0".into(),
        broadcast_id: "b".into(),
        step,
    };
    let broadcast = |state| Change::Broadcast {
        id: "b".into(),
        state: Some(state),
    };
    assert_eq!(
        first
            .iter()
            .map(|e| (e.index, e.at_ms, e.change.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1, 1_000, broadcast(BroadcastState::Starting)),
            (1, 1_000, stage(StageStep::Creating)),
        ]
    );
    let second = changes(&mut sub).await;
    let got: Vec<(u64, Change)> = second.iter().map(|e| (e.index, e.change.clone())).collect();
    assert_eq!(
        got,
        vec![
            (2, stage(StageStep::Ready)),
            (2, broadcast(BroadcastState::Live)),
            // u1 joined twice in the batch: one seat, then a re-join (not a seat).
            (
                3,
                Change::Seated {
                    broadcast_id: "b".into(),
                    stage_id: "b:0".into(),
                    count: 2
                }
            ),
        ]
    );
    assert_eq!(second[2].at_ms, 2_000, "a join batch carries its proposer's clock");
    let third = changes(&mut sub).await;
    assert_eq!(
        third.iter().map(|e| (e.index, e.change.clone())).collect::<Vec<_>>(),
        vec![(
            4,
            Change::SessionEnded {
                session_id: "s-u2".into(),
                broadcast_id: "b".into(),
                stage_id: "b:0".into(),
                reason: EndReason::Left,
            }
        )],
        "an unknown session changes nothing and says nothing"
    );
}

#[tokio::test]
async fn an_entry_that_changes_nothing_publishes_nothing() {
    let mut m = Machine::open();
    let mut sub = m.subscribe();
    m.apply(vec![Command::Renew {
        session_ids: vec!["nobody".into()],
        now: 5,
    }])
    .await;
    m.apply(vec![start()]).await;
    let e = changes(&mut sub).await;
    assert_eq!(e[0].index, 2, "the first message is the start, not the empty renewal");
}

#[tokio::test]
async fn a_snapshot_install_resets_every_subscriber_and_the_view_holds_the_new_state() {
    let mut source = Machine::open();
    source.apply(vec![start(), created()]).await;
    let snapshot = source.sm.build_snapshot().await.unwrap();

    let mut target = Machine::open();
    let mut sub = target.subscribe();
    let before = target.sm.shared().view();
    assert!(before.fleet.broadcasts.is_empty());
    target
        .sm
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert!(matches!(next(&mut sub).await, Applied::Reset { lagged: false }));
    let after = target.sm.shared().view();
    assert_eq!(after.fleet.broadcasts["b"].state, BroadcastState::Live);
    assert!(
        before.fleet.broadcasts.is_empty(),
        "a view taken earlier does not change under its holder"
    );
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_to_start_over() {
    let (tx, rx) = tokio::sync::broadcast::channel(2);
    let mut sub = Subscription::new(rx);
    for _ in 0..3 {
        tx.send(Applied::Reset { lagged: false }).unwrap();
    }
    assert!(
        matches!(next(&mut sub).await, Applied::Reset { lagged: true }),
        "the bus is bounded: the oldest message is dropped and the subscriber is told"
    );
    // Then it goes on with what is still buffered.
    assert!(matches!(next(&mut sub).await, Applied::Reset { lagged: false }));
}

#[tokio::test]
async fn a_deposed_leaders_command_logged_in_a_later_term_changes_nothing() {
    let mut m = Machine::open();
    let start = |id: &str| Command::StartBroadcast {
        id: id.into(),
        name: id.into(),
        now: 1_000,
        max_seats_per_client: None,
        fanout: Default::default(),
    };
    let entry = |index: u64, cmd: Command| Entry {
        log_id: LogId::new(CommittedLeaderId::new(TERM, 1), index),
        payload: EntryPayload::Normal(cmd),
    };
    let answers =
        m.sm.apply(vec![
            entry(
                1,
                Command::Fenced {
                    term: TERM,
                    command: Box::new(start("current")),
                },
            ),
            entry(
                2,
                Command::Fenced {
                    term: TERM - 1,
                    command: Box::new(start("stale")),
                },
            ),
        ])
        .await
        .unwrap();
    assert!(
        matches!(answers[0], super::Response::Stage(_)),
        "the origin's intent: {:?}",
        answers[0]
    );
    assert_eq!(
        answers[1],
        super::Response::Refused(crate::fleet::Refusal::StaleLeader(TERM - 1, TERM))
    );
    let view = m.sm.shared().view();
    assert!(view.fleet.broadcasts.contains_key("current"));
    assert!(
        !view.fleet.broadcasts.contains_key("stale"),
        "the stale command changed nothing"
    );
}

#[tokio::test]
async fn a_follower_keeps_the_answer_to_the_join_batch_it_forwarded_and_it_is_the_leaders() {
    let admit = |origin, users: &[&str]| Command::AdmitViewers {
        now: 2_000,
        requests: users.iter().map(|u| join(u)).collect(),
        origin,
    };
    let batches = || {
        vec![
            start(),
            created(),
            // Forwarded by node 2, then by node 3, then node 2 again with a re-join in it.
            admit(Some(2), &["u1", "u2"]),
            admit(Some(3), &["u3"]),
            admit(Some(2), &["u4", "u1"]),
        ]
    };
    let mut leader = Machine::open_as(1);
    let mut follower = Machine::open_as(2);
    let led = leader.apply_led_by(1, batches()).await;
    let here = follower.apply_led_by(1, batches()).await;
    let shared = follower.sm.shared();
    let log_id = |index| LogId::new(CommittedLeaderId::new(TERM, 1), index);

    // Node 2 hands openraft nothing for its own batches (nobody waits for them there) and keeps
    // them; its answer is the seats the leader computed, taken once.
    for (i, index) in [(2, 3), (4, 5)] {
        assert!(matches!(here[i], super::Response::None), "{:?}", here[i]);
        assert!(matches!(led[i], super::Response::Admitted(_)), "{:?}", led[i]);
        assert_eq!(shared.take_answer(&log_id(index)), Some(led[i].clone()));
        assert_eq!(shared.take_answer(&log_id(index)), None, "an answer is taken once");
    }
    // Node 3's batch is answered as usual, and not kept on node 2.
    assert_eq!(here[3], led[3]);
    assert_eq!(shared.take_answer(&log_id(4)), None);
    // The same index appended by another leader is another entry: not this answer.
    let mut again = Machine::open_as(2);
    again.apply_led_by(1, batches()).await;
    let other_leader = LogId::new(CommittedLeaderId::new(TERM + 1, 3), 3);
    assert_eq!(again.sm.shared().take_answer(&other_leader), None);

    // A batch that names node 2 but that node 2 appended itself (it had become the leader) is
    // answered through its own Raft as usual.
    let mut became_leader = Machine::open_as(2);
    let own = became_leader.apply_led_by(2, batches()).await;
    assert!(matches!(own[2], super::Response::Admitted(_)), "{:?}", own[2]);
    assert_eq!(
        became_leader
            .sm
            .shared()
            .take_answer(&LogId::new(CommittedLeaderId::new(TERM, 2), 3)),
        None
    );
}
