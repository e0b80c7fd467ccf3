//! The scaler's scale-up decisions, pure: the fleet, the policy, what the scaler measured (join
//! rate, how long a stage takes to become ready) in; the stages to add, each with its reason, out.
//! Nothing here calls IVS or reads a clock; the leader's scaler loop (issue 12, not wired yet)
//! turns a plan into stage intents.
//!
//! Per live broadcast, free *ready* seats plus seats already being created must cover
//! `headroom = max(headroom_floor, join_rate × (ready_time + tick) × safety)`: the viewers expected
//! while a stage the scaler asks for now gets ready, plus until it looks again (`tick`). A warm pool keeps that many ready, empty stages besides. IVS lets one
//! participant be replicated into at most [`ScalePolicy::replicas_per_origin`] stages, so when the
//! replicas would outgrow what the origins can feed the next stage is an origin. Every stage added
//! counts against `max_stages`, the region's stage quota and its concurrent-subscriptions quota
//! (total seats), shared by all broadcasts; when one of them stops the plan, it says which.

use std::collections::BTreeMap;

use super::admission::FleetPolicy;
use super::model::{BroadcastState, Fleet, StageRole, StageState};

/// The scaler's settings (replicated policy of the autoscaling issue; defaults here).
#[derive(Clone, Debug, PartialEq)]
pub struct ScalePolicy {
    /// Free ready seats kept per live broadcast whatever the join rate.
    pub headroom_floor: u32,
    /// Multiplies the seats expected while a stage gets ready.
    pub safety: f64,
    /// Ready, empty stages kept per live broadcast (a launch can pre-warm).
    pub warm_pool: u32,
    /// Replica stages one origin can feed (IVS: 5 replications per participant).
    pub replicas_per_origin: u32,
    /// Stages the region allows (IVS quota).
    pub region_stage_quota: u32,
    /// How often the scaler plans (ms): viewers keep coming until it looks again.
    pub tick_ms: u32,
    /// A replica with fewer viewers than this for `cool_down_ms` is drained (0: never).
    pub drain_below: u32,
    pub cool_down_ms: i64,
    /// Move a drained stage's viewers to stages with room at once (else they stay until they leave).
    pub consolidate: bool,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        ScalePolicy {
            headroom_floor: 100,
            safety: 2.0,
            warm_pool: 0,
            replicas_per_origin: 5,
            region_stage_quota: 1_000,
            tick_ms: 1_000,
            drain_below: 0,
            cool_down_ms: 60_000,
            consolidate: false,
        }
    }
}

/// What the scaler measured for one broadcast.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    /// Admitted joins per second (e.g. an EWMA over the last seconds).
    pub join_rate: f64,
    /// How long a new stage took to become ready, recently (ms).
    pub ready_time_ms: f64,
}

/// Why a stage is added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Free ready seats plus seats being created fell short of the headroom.
    Headroom { free: u64, pending: u64, headroom: u64 },
    /// Fewer ready, empty stages than the warm pool asks for.
    WarmPool { empty: u32, want: u32 },
}

/// What stopped a plan short of what it wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    MaxStages,
    RegionStages,
    RegionSubscriptions,
}

impl Limit {
    /// The setting that sets this limit.
    pub fn setting(self) -> &'static str {
        match self {
            Limit::MaxStages => "max_stages",
            Limit::RegionStages => "region_stage_quota",
            Limit::RegionSubscriptions => "region_subscription_quota",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Add {
    pub role: StageRole,
    pub reason: Reason,
}

/// A replica to drain: its audience stayed low and the others have room to spare without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drain {
    pub stage_id: String,
    pub viewers: u32,
    /// Since when it has had fewer than `drain_below` viewers.
    pub low_since: super::Millis,
}

/// One broadcast's plan, with its inputs, so an operator can see why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub add: Vec<Add>,
    /// Draining stages taken back (cheaper and faster than new ones) because headroom fell short.
    pub undrain: Vec<String>,
    /// At most one replica drained per look.
    pub drain: Option<Drain>,
    /// Set when a limit left the plan short.
    pub limited_by: Option<Limit>,
    pub free_ready: u64,
    pub pending: u64,
    pub headroom: u64,
}

/// One plan with what it was made from, as the scaler leaves it for operators.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub at_ms: super::Millis,
    pub signals: Signals,
    pub plan: Plan,
}

/// The scaler's last decision per broadcast, shared by the leader's scaler (writes) and the API.
pub type Decisions = std::sync::Mutex<BTreeMap<String, Decision>>;

/// Fleet-wide totals the limits apply to, consumed as stages are planned.
struct Budget {
    stages: u64,
    seats: u64,
    max_stages: u64,
    region_stages: u64,
    region_seats: u64,
}

impl Budget {
    fn take(&mut self, seats: u64) -> Result<(), Limit> {
        if self.stages >= self.max_stages {
            return Err(Limit::MaxStages);
        }
        if self.stages >= self.region_stages {
            return Err(Limit::RegionStages);
        }
        if self.seats + seats > self.region_seats {
            return Err(Limit::RegionSubscriptions);
        }
        self.stages += 1;
        self.seats += seats;
        Ok(())
    }
}

/// Plans for every live broadcast, in id order (the limits are shared: an earlier broadcast may
/// leave a later one short). `signals` missing for a broadcast count as no joins. `low_since`:
/// since when each stage has had fewer than `drain_below` viewers (the scaler keeps it).
pub fn plan(
    fleet: &Fleet,
    policy: &FleetPolicy,
    scale: &ScalePolicy,
    signals: &BTreeMap<String, Signals>,
    low_since: &BTreeMap<String, super::Millis>,
    now: super::Millis,
) -> BTreeMap<String, Plan> {
    let mut budget = Budget {
        stages: fleet.managed_stage_count() as u64,
        seats: fleet.stages.values().map(|s| u64::from(s.capacity) * s.streams()).sum(),
        max_stages: policy.max_stages.into(),
        region_stages: scale.region_stage_quota.into(),
        region_seats: match policy.region_subscription_quota {
            0 => u64::MAX,
            q => q,
        },
    };
    fleet
        .broadcasts
        .values()
        .filter(|b| b.state == BroadcastState::Live)
        .map(|b| {
            let s = signals.get(&b.id).copied().unwrap_or_default();
            let mut p = plan_one(fleet, policy, scale, &b.id, s, &mut budget);
            if p.add.is_empty() && p.undrain.is_empty() {
                p.drain = drain_one(fleet, scale, &b.id, &p, low_since, now);
            }
            (b.id.clone(), p)
        })
        .collect()
}

fn plan_one(
    fleet: &Fleet,
    policy: &FleetPolicy,
    scale: &ScalePolicy,
    broadcast_id: &str,
    signals: Signals,
    budget: &mut Budget,
) -> Plan {
    let (mut free, mut pending, mut empty, mut creating) = (0u64, 0u64, 0u32, 0u32);
    let (mut origins, mut replicas) = (0u32, 0u32);
    let mut draining: Vec<(u32, u32, &str)> = Vec::new();
    for s in fleet.stages_of(broadcast_id) {
        match s.state {
            StageState::Active if s.draining => {
                draining.push((s.capacity.saturating_sub(s.viewers), s.slot, &s.id));
            }
            StageState::Active if s.is_ready() => {
                free += u64::from(s.capacity.saturating_sub(s.viewers));
                empty += u32::from(s.viewers == 0);
            }
            // Created, the hosts' media on its way: seats soon, like a stage being created.
            StageState::Active => {
                pending += u64::from(s.capacity.saturating_sub(s.viewers));
                creating += u32::from(s.viewers == 0);
            }
            StageState::Creating => {
                pending += u64::from(s.capacity);
                creating += 1;
            }
            StageState::Deleting => continue,
        }
        match s.role {
            StageRole::Origin => origins += 1,
            StageRole::Replica => replicas += 1,
        }
    }
    let lead_ms = signals.ready_time_ms.max(0.0) + f64::from(scale.tick_ms);
    let expected = signals.join_rate.max(0.0) * lead_ms / 1000.0 * scale.safety.max(1.0);
    let headroom = u64::from(scale.headroom_floor).max(expected.ceil() as u64);
    let seats = u64::from(policy.seats_per_stage.max(1));
    let mut plan = Plan {
        free_ready: free,
        pending,
        headroom,
        ..Plan::default()
    };
    let mut want: Vec<Reason> = Vec::new();
    let mut short = headroom.saturating_sub(free + pending);
    // Take draining stages back first, the roomiest first: they are ready now, at no IVS call.
    draining.sort_by_key(|&(room, slot, _)| (std::cmp::Reverse(room), slot));
    for (room, _, id) in draining {
        if short == 0 {
            break;
        }
        plan.undrain.push(id.to_string());
        short = short.saturating_sub(u64::from(room));
    }
    let reason = Reason::Headroom {
        free,
        pending,
        headroom,
    };
    want.extend(std::iter::repeat_n(reason, short.div_ceil(seats) as usize));
    // Stages being created become ready and empty: they count towards the pool.
    let pooled = empty + creating + want.len() as u32;
    let pool = Reason::WarmPool {
        empty: empty + creating,
        want: scale.warm_pool,
    };
    want.extend(std::iter::repeat_n(
        pool,
        scale.warm_pool.saturating_sub(pooled) as usize,
    ));
    for reason in want {
        // An origin feeds a bounded number of replicas: past that, the next stage is an origin.
        let role = if replicas >= origins.max(1) * scale.replicas_per_origin.max(1) {
            StageRole::Origin
        } else {
            StageRole::Replica
        };
        if let Err(limit) = budget.take(seats * streams(fleet, broadcast_id)) {
            plan.limited_by = Some(limit);
            break;
        }
        match role {
            StageRole::Origin => origins += 1,
            StageRole::Replica => replicas += 1,
        }
        plan.add.push(Add { role, reason });
    }
    plan
}

/// Host streams a viewer of this broadcast uses (its origins' publishers; at least one).
fn streams(fleet: &Fleet, broadcast_id: &str) -> u64 {
    fleet
        .stages_of(broadcast_id)
        .filter(|s| s.role == StageRole::Origin)
        .map(|s| s.streams())
        .max()
        .unwrap_or(1)
}

/// The replica to drain now, if any: below `drain_below` viewers for `cool_down_ms`, and the
/// other ready stages keep the headroom without it (and, when its viewers are moved, with them).
/// The emptiest goes first (ties: the newest). Origins are never drained.
fn drain_one(
    fleet: &Fleet,
    scale: &ScalePolicy,
    broadcast_id: &str,
    plan: &Plan,
    low_since: &BTreeMap<String, super::Millis>,
    now: super::Millis,
) -> Option<Drain> {
    if scale.drain_below == 0 {
        return None;
    }
    fleet
        .stages_of(broadcast_id)
        .filter(|s| s.role == StageRole::Replica && s.is_ready() && s.viewers < scale.drain_below)
        .filter_map(|s| {
            let since = *low_since.get(&s.id)?;
            (now - since >= scale.cool_down_ms).then_some((s, since))
        })
        .filter(|(s, _)| {
            let without = plan
                .free_ready
                .saturating_sub(u64::from(s.capacity - s.viewers.min(s.capacity)));
            let moved = if scale.consolidate { u64::from(s.viewers) } else { 0 };
            without.saturating_sub(moved) >= plan.headroom
        })
        .min_by_key(|(s, _)| (s.viewers, std::cmp::Reverse(s.slot)))
        .map(|(s, since)| Drain {
            stage_id: s.id.clone(),
            viewers: s.viewers,
            low_since: since,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults with the safety factor these numbers were worked out with.
    fn scale_policy() -> ScalePolicy {
        ScalePolicy {
            safety: 1.5,
            ..ScalePolicy::default()
        }
    }
    use crate::fleet::placement::{self, Placement};
    use crate::fleet::{Broadcast, Stage};

    fn fleet_with(stages: &[(StageRole, StageState, u32, u32)]) -> Fleet {
        let mut f = Fleet::default();
        f.broadcasts.insert(
            "b".into(),
            Broadcast {
                id: "b".into(),
                name: "b".into(),
                state: BroadcastState::Live,
                created_at: 0,
                ended_at: None,
                next_slot: stages.len() as u32,
                hosts: Default::default(),
                admitted_total: 0,
                max_seats_per_client: None,
                fanout: Default::default(),
            },
        );
        for (slot, (role, state, capacity, viewers)) in stages.iter().enumerate() {
            let s = stage(slot as u32, *role, *state, *capacity, *viewers);
            f.stages.insert(s.id.clone(), s);
        }
        f
    }

    fn stage(slot: u32, role: StageRole, state: StageState, capacity: u32, viewers: u32) -> Stage {
        Stage {
            id: Stage::key("b", slot),
            broadcast_id: "b".into(),
            slot,
            role,
            state,
            capacity,
            viewers,
            arn: None,
            endpoints: None,
            intent_term: 1,
            created_at: 0,
            draining: false,
            media: Default::default(),
        }
    }

    fn none() -> BTreeMap<String, crate::fleet::Millis> {
        BTreeMap::new()
    }

    fn policy(seats: u32) -> FleetPolicy {
        FleetPolicy {
            seats_per_stage: seats,
            ..FleetPolicy::DEFAULT
        }
    }

    fn signals(rate: f64, ready_ms: f64) -> BTreeMap<String, Signals> {
        BTreeMap::from([(
            "b".to_string(),
            Signals {
                join_rate: rate,
                ready_time_ms: ready_ms,
            },
        )])
    }

    use StageRole::{Origin, Replica};
    use StageState::{Active, Creating};

    #[test]
    fn headroom_follows_the_join_rate_and_counts_stages_being_created() {
        let f = fleet_with(&[(Origin, Active, 1000, 900)]);
        // 200 joins/s, 3 s to get a stage ready and 1 s until the next look, safety 1.5: 1,200
        // seats expected meanwhile.
        let scale = scale_policy();
        let p = &plan(&f, &policy(1000), &scale, &signals(200.0, 3000.0), &none(), 0)["b"];
        assert_eq!((p.free_ready, p.pending, p.headroom), (100, 0, 1200));
        assert_eq!(p.add.len(), 2, "1,100 seats short: two stages of 1,000");
        assert_eq!(p.add[0].role, Replica);
        // Once that stage is being created, nothing more is needed.
        let f = fleet_with(&[
            (Origin, Active, 1000, 900),
            (Replica, Creating, 1000, 0),
            (Replica, Creating, 1000, 0),
        ]);
        let p = &plan(&f, &policy(1000), &scale, &signals(200.0, 3000.0), &none(), 0)["b"];
        assert!(p.add.is_empty(), "{p:?}");
        // A quiet broadcast keeps the floor only.
        let f = fleet_with(&[(Origin, Active, 1000, 950)]);
        let p = &plan(&f, &policy(1000), &scale_policy(), &signals(0.0, 3000.0), &none(), 0)["b"];
        assert_eq!((p.headroom, p.add.len()), (100, 1));
    }

    #[test]
    fn past_five_replicas_per_origin_the_next_stage_is_an_origin() {
        let mut stages = vec![(Origin, Active, 100, 100)];
        stages.extend(std::iter::repeat_n((Replica, Active, 100, 100), 5));
        let p = &plan(
            &fleet_with(&stages),
            &policy(100),
            &scale_policy(),
            &signals(100.0, 3000.0),
            &none(),
            0,
        )["b"];
        let roles: Vec<StageRole> = p.add.iter().map(|a| a.role).collect();
        assert_eq!(
            roles,
            vec![Origin, Replica, Replica, Replica, Replica, Replica],
            "600 seats (100/s over 3 s + 1 s, ×1.5): six stages, the first an origin"
        );
    }

    #[test]
    fn the_limits_stop_the_plan_and_say_which() {
        let f = fleet_with(&[(Origin, Active, 1000, 1000)]);
        let quota = FleetPolicy {
            region_subscription_quota: 2_500,
            ..policy(1000)
        };
        let p = &plan(&f, &quota, &scale_policy(), &signals(1000.0, 3000.0), &none(), 0)["b"];
        assert_eq!(p.add.len(), 1, "a second stage would pass 2,500 seats in the region");
        assert_eq!(p.limited_by, Some(Limit::RegionSubscriptions));
        let few = FleetPolicy {
            max_stages: 2,
            ..policy(1000)
        };
        let p = &plan(&f, &few, &scale_policy(), &signals(1000.0, 3000.0), &none(), 0)["b"];
        assert_eq!((p.add.len(), p.limited_by), (1, Some(Limit::MaxStages)));
    }

    #[test]
    fn a_warm_pool_keeps_ready_empty_stages_besides_the_headroom() {
        let f = fleet_with(&[(Origin, Active, 1000, 0)]);
        let scale = ScalePolicy {
            warm_pool: 3,
            ..scale_policy()
        };
        let p = &plan(&f, &policy(1000), &scale, &signals(0.0, 3000.0), &none(), 0)["b"];
        assert_eq!(p.add.len(), 2, "the empty origin is one of the three");
        assert!(p.add.iter().all(|a| a.reason == Reason::WarmPool { empty: 1, want: 3 }));
    }

    #[test]
    fn a_quiet_replica_is_drained_after_the_cool_down_only_if_the_rest_keep_the_headroom() {
        let scale = ScalePolicy {
            drain_below: 50,
            cool_down_ms: 60_000,
            ..scale_policy()
        };
        let quiet = || BTreeMap::from([("b:2".to_string(), 0), ("b:1".to_string(), 0)]);
        // Origin half full, b:1 busy, b:2 nearly empty: 1,000 + 1,000 − 980 free, headroom 100.
        let f = fleet_with(&[
            (Origin, Active, 1000, 500),
            (Replica, Active, 1000, 900),
            (Replica, Active, 1000, 20),
        ]);
        let p = &plan(&f, &policy(1000), &scale, &signals(0.0, 3000.0), &quiet(), 59_999)["b"];
        assert_eq!(p.drain, None, "not before the cool-down");
        let p = &plan(&f, &policy(1000), &scale, &signals(0.0, 3000.0), &quiet(), 60_000)["b"];
        assert_eq!(
            p.drain.as_ref().map(|d| (d.stage_id.as_str(), d.viewers)),
            Some(("b:2", 20))
        );
        // A crowd is coming (headroom 900): draining b:2 would leave 600 free — keep it.
        let p = &plan(&f, &policy(1000), &scale, &signals(200.0, 2000.0), &quiet(), 60_000)["b"];
        assert_eq!(p.drain, None, "{p:?}");
        // Origins are never drained, however quiet.
        let f = fleet_with(&[(Origin, Active, 1000, 0), (Origin, Active, 1000, 0)]);
        let quiet = BTreeMap::from([("b:0".to_string(), 0), ("b:1".to_string(), 0)]);
        let p = &plan(&f, &policy(1000), &scale, &signals(0.0, 3000.0), &quiet, 60_000)["b"];
        assert_eq!(p.drain, None);
    }

    #[test]
    fn a_draining_stage_is_taken_back_before_a_new_one_is_created() {
        let mut f = fleet_with(&[(Origin, Active, 1000, 1000), (Replica, Active, 1000, 400)]);
        f.stages.get_mut("b:1").unwrap().draining = true;
        let p = &plan(&f, &policy(1000), &scale_policy(), &signals(100.0, 3000.0), &none(), 0)["b"];
        assert_eq!(p.undrain, vec!["b:1".to_string()]);
        assert!(p.add.is_empty(), "its 600 free seats cover the 600 of headroom: {p:?}");
    }

    /// A flash crowd, simulated in 100 ms steps with no I/O: the join rate ramps to 1,000/s over
    /// 20 s and holds for 40 s; a stage takes 2 s to become ready; the scaler plans once a second
    /// from an EWMA of the admitted rate. While the quotas allow, no viewer is refused, and the
    /// scaler never asks for more than 5 stages a second (IVS's CreateStage budget).
    #[test]
    fn a_flash_crowd_never_runs_out_of_ready_seats_within_the_create_budget() {
        let policy = FleetPolicy {
            region_subscription_quota: 100_000,
            ..policy(1000)
        };
        let scale = ScalePolicy {
            region_stage_quota: 200,
            ..scale_policy()
        };
        let ready_ms = 2_000i64;
        let mut fleet = fleet_with(&[(Origin, Active, 1000, 0)]);
        let mut ready_at: BTreeMap<String, i64> = BTreeMap::new();
        let (mut ewma, mut carry, mut admitted, mut refused) = (0.0f64, 0.0f64, 0u64, 0u64);
        let mut creates_per_second: BTreeMap<i64, u32> = BTreeMap::new();
        for step in 0..600i64 {
            let now = step * 100;
            // Stages whose creation finished become ready.
            for (id, at) in &ready_at {
                if *at <= now {
                    fleet.stages.get_mut(id).unwrap().state = Active;
                }
            }
            let rate = if now < 20_000 { now as f64 / 20.0 } else { 1000.0 };
            carry += rate / 10.0;
            let arriving = carry.floor() as u64;
            carry -= arriving as f64;
            let mut this_step = 0u64;
            for _ in 0..arriving {
                let id = placement::choose(fleet.stages.values(), Placement::Pack).map(|s| s.id.clone());
                match id {
                    Some(id) => {
                        fleet.stages.get_mut(&id).unwrap().viewers += 1;
                        this_step += 1;
                    }
                    None => refused += 1,
                }
            }
            admitted += this_step;
            ewma = 0.8 * ewma + 0.2 * (this_step as f64 * 10.0);
            if step % 10 == 0 {
                let plans = plan(&fleet, &policy, &scale, &signals(ewma, ready_ms as f64), &none(), now);
                for add in &plans["b"].add {
                    let b = fleet.broadcasts.get_mut("b").unwrap();
                    let slot = b.next_slot;
                    b.next_slot += 1;
                    let s = stage(slot, add.role, Creating, policy.seats_per_stage, 0);
                    ready_at.insert(s.id.clone(), now + ready_ms);
                    fleet.stages.insert(s.id.clone(), s);
                    *creates_per_second.entry(now / 1000).or_default() += 1;
                }
            }
        }
        assert_eq!(refused, 0, "{admitted} admitted, {refused} refused");
        assert!(admitted > 45_000, "the crowd came: {admitted}");
        let busiest = creates_per_second.values().max().copied().unwrap_or(0);
        assert!(busiest <= 5, "at most 5 CreateStage a second, saw {busiest}");
        let origins = fleet.stages.values().filter(|s| s.role == Origin).count();
        let replicas = fleet.stages.len() - origins;
        assert!(replicas <= origins * 5, "{replicas} replicas for {origins} origins");
    }
}
