//! Property tests for DESIGN.md §4 invariants 1 (no stage over capacity) and 3 (one session per
//! broadcast + user), and for the per-client seat cap (no client network holds more seats in a
//! broadcast than its cap, and the count kept equals the sessions naming that client), over random
//! interleavings of joins (batched, with repeats, from a few client networks), leaves, lease
//! expiry, stage additions and forced deletions.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::admission::{self, FleetPolicy};
use super::model::*;
use super::placement::Placement;
use super::sessions::{MemorySessions, Sessions};
use super::transition::{Dirty, JoinRequest, World};

#[derive(Clone, Debug)]
enum Op {
    /// A batch of joins: (broadcast index, user index, client network index), duplicates welcome.
    Join(Vec<(usize, u8, u8)>),
    Leave(u8),
    Tick(i64),
    AddStage(usize),
    ForceDelete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0usize..2, 0u8..40, 0u8..3), 1..25).prop_map(Op::Join),
        2 => any::<u8>().prop_map(Op::Leave),
        1 => (0i64..60_000).prop_map(Op::Tick),
        1 => (0usize..2).prop_map(Op::AddStage),
        1 => any::<u8>().prop_map(Op::ForceDelete),
    ]
}

struct Harness {
    fleet: Fleet,
    policy: FleetPolicy,
    sessions: MemorySessions,
    now: Millis,
    next_id: u64,
}

impl Harness {
    /// Broadcast b0 follows the policy's per-client cap `client_cap`; b1 sets `b1_cap` (if any).
    fn new(placement: Placement, seats: u32, client_cap: u32, b1_cap: Option<u32>) -> Self {
        let policy = FleetPolicy {
            placement,
            seats_per_stage: seats,
            max_stages: 6,
            session_lease_ms: 30_000,
            max_seats_per_client: client_cap,
            region_subscription_quota: 0,
        };
        let mut h = Self {
            fleet: Fleet::default(),
            policy,
            sessions: MemorySessions::default(),
            now: 0,
            next_id: 0,
        };
        for (b, cap) in [("b0", None), ("b1", b1_cap)] {
            let stage = h
                .world(|w| w.start_broadcast(b, b, cap, crate::fleet::Fanout::Replication, 0, 1))
                .unwrap();
            h.create(&stage);
        }
        h
    }

    fn world<T>(&mut self, f: impl FnOnce(&mut World<'_, MemorySessions>) -> T) -> T {
        let mut dirty = Dirty::default();
        let mut w = World {
            fleet: &mut self.fleet,
            policy: &mut self.policy,
            sessions: &mut self.sessions,
            dirty: &mut dirty,
        };
        f(&mut w)
    }

    fn create(&mut self, stage: &Stage) {
        let (id, term) = (stage.id.clone(), stage.intent_term);
        let arn = format!("arn:aws:ivs:us-east-1:1:stage/{}", id.replace(':', "x"));
        self.world(|w| w.stage_created(&id, term, arn, StageUrls::default(), 0))
            .unwrap();
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Join(batch) => {
                let reqs: Vec<JoinRequest> = batch
                    .iter()
                    .map(|(b, u, c)| {
                        self.next_id += 1;
                        let broadcast_id = format!("b{b}");
                        JoinRequest {
                            // as the node does: the client goes along only when the cap is on
                            client: (self.cap(&broadcast_id) > 0).then(|| format!("10.0.{c}.0")),
                            broadcast_id,
                            user_id: format!("u{u}"),
                            attributes: BTreeMap::new(),
                            session_id: format!("s{}", self.next_id),
                            participant_id: format!("p{}", self.next_id),
                        }
                    })
                    .collect();
                let now = self.now;
                let out = self.world(|w| w.admit(&reqs, now));
                for (req, res) in reqs.iter().zip(out) {
                    if let Ok(seated) = res {
                        assert_eq!(seated.session.user_id, req.user_id);
                        assert_eq!(
                            seated.stage.id, seated.session.stage_id,
                            "the answer names the seat taken"
                        );
                    }
                }
            }
            Op::Leave(pick) => {
                let ids: Vec<String> = self.sessions.all().map(|s| s.id.clone()).collect();
                if !ids.is_empty() {
                    let id = ids[*pick as usize % ids.len()].clone();
                    assert!(self.world(|w| w.leave(&[id]))[0].is_ok());
                }
            }
            Op::Tick(dt) => {
                self.now += dt;
                let now = self.now;
                self.world(|w| w.expire(now, usize::MAX));
            }
            Op::AddStage(b) => {
                let now = self.now;
                if let Ok(stage) = self.world(|w| w.add_stage(&format!("b{b}"), StageRole::Replica, now, 1)) {
                    self.create(&stage);
                }
            }
            Op::ForceDelete(pick) => {
                let replicas: Vec<String> = self
                    .fleet
                    .stages
                    .values()
                    .filter(|s| s.role == StageRole::Replica)
                    .map(|s| s.id.clone())
                    .collect();
                if !replicas.is_empty() {
                    let id = replicas[*pick as usize % replicas.len()].clone();
                    let now = self.now;
                    let (stage, _) = self.world(|w| w.delete_stage(&id, true, 2)).unwrap();
                    self.world(|w| w.stage_deleted(&stage.id, 2, now)).unwrap();
                }
            }
        }
    }

    fn cap(&self, broadcast_id: &str) -> u32 {
        admission::client_seat_cap(&self.fleet.broadcasts[broadcast_id], &self.policy)
    }

    fn check_invariants(&self) {
        let mut per_stage: BTreeMap<&str, u32> = BTreeMap::new();
        let mut per_client: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        let mut users = BTreeSet::new();
        for s in self.sessions.all() {
            *per_stage.entry(&s.stage_id).or_default() += 1;
            if let Some(client) = &s.client {
                *per_client.entry((&s.broadcast_id, client)).or_default() += 1;
            }
            assert!(
                users.insert((&s.broadcast_id, &s.user_id)),
                "invariant 3: two sessions for {}",
                s.user_id
            );
            assert!(
                self.fleet.stages.contains_key(&s.stage_id),
                "a session sits on a stage that is gone"
            );
        }
        for stage in self.fleet.stages.values() {
            assert!(
                stage.viewers <= stage.capacity,
                "invariant 1: {} holds {} > {}",
                stage.id,
                stage.viewers,
                stage.capacity
            );
            let seated = per_stage.get(stage.id.as_str()).copied().unwrap_or(0);
            assert_eq!(
                stage.viewers, seated,
                "stage {} counts {} but seats {}",
                stage.id, stage.viewers, seated
            );
        }
        assert!(
            self.fleet.stages.len() <= self.policy.max_stages as usize,
            "invariant 4: stage quota"
        );
        for b in ["b0", "b1"] {
            let cap = self.cap(b);
            for c in 0..3 {
                let client = format!("10.0.{c}.0");
                let seated = per_client.get(&(b, client.as_str())).copied().unwrap_or(0);
                assert_eq!(
                    self.sessions.client_seats(b, &client),
                    seated,
                    "{b}/{client}: the count kept differs from the sessions naming the client"
                );
                assert!(
                    cap == 0 || seated <= cap,
                    "{b}/{client} holds {seated} seats, over its cap of {cap}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_stage_exceeds_capacity_no_user_is_seated_twice_and_no_client_exceeds_its_cap(
        pack in any::<bool>(),
        seats in 1u32..8,
        client_cap in 0u32..4,
        b1_cap in prop::option::of(0u32..4),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let placement = if pack { Placement::Pack } else { Placement::Spread };
        let mut h = Harness::new(placement, seats, client_cap, b1_cap);
        for op in &ops {
            h.apply(op);
            h.check_invariants();
        }
    }

    #[test]
    fn a_user_joining_again_gets_the_same_seat_back(users in prop::collection::vec(0u8..10, 1..50)) {
        // a cap of one seat per client: joining again is a rejoin, never refused by the cap
        let mut h = Harness::new(Placement::Spread, 100, 1, None);
        let mut first_seat: BTreeMap<u8, (String, String)> = BTreeMap::new();
        for u in users {
            h.apply(&Op::Join(vec![(0, u, u)]));
            let s = h.sessions.by_user("b0", &format!("u{u}")).unwrap();
            let seat = (s.id.clone(), s.stage_id.clone());
            prop_assert_eq!(first_seat.entry(u).or_insert_with(|| seat.clone()).clone(), seat);
        }
    }
}
