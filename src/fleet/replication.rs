//! The replicator's decisions, pure: from the fleet and `now`, which replications to start, which
//! to check for media, which to give up on and start again. The leader's replicator loop
//! (`control::replicator`) performs them and reports each outcome through the log, where
//! `transition` keeps each replica's per-host status and its READY flag.
//!
//! Desired state: every host publishing on an origin is replicated into every replica that origin
//! feeds (`Stage::media.fed_by`). The transitions already list one entry per (replica, host) to
//! carry; this module only says what to do about each entry now.

use super::model::{Fanout, Fleet, Millis, ReplicationState, Stage, StageRole, StageState};

/// One thing to do for one host into one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub kind: JobKind,
    pub replica_id: String,
    pub replica_arn: String,
    pub origin_arn: String,
    /// The host's participant id on the origin.
    pub participant_id: String,
    /// Viewers are waiting on this replica (it is part of the headroom): do it first.
    pub urgent: bool,
    /// When the replication entered its current state (for a check: when it was started).
    pub since: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Call StartParticipantReplication.
    Start,
    /// Started: see whether the host's media shows in the replica yet.
    Check,
    /// Started too long ago without media: report it failed (it is started again after backoff).
    GiveUp,
}

/// How the replicator paces retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// First retry after a failure; doubles per attempt.
    pub backoff_ms: i64,
    pub max_backoff_ms: i64,
    /// A started replication whose media is not seen after this long is failed and restarted.
    pub active_timeout_ms: i64,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            backoff_ms: 500,
            max_backoff_ms: 30_000,
            active_timeout_ms: 30_000,
        }
    }
}

impl Pacing {
    /// When a replication that failed `attempts` times may be tried again.
    pub fn retry_at(&self, since: Millis, attempts: u32) -> Millis {
        let shift = attempts.saturating_sub(1).min(16);
        since + (self.backoff_ms << shift).min(self.max_backoff_ms)
    }
}

/// What to do now, urgent work first (replicas with no viewers yet that the crowd waits for),
/// then in stage order.
pub fn jobs(fleet: &Fleet, now: Millis, pacing: &Pacing) -> Vec<Job> {
    let mut out = Vec::new();
    for replica in fleet.stages.values() {
        let Some(origin) = origin_of(fleet, replica) else {
            continue;
        };
        let (Some(replica_arn), Some(origin_arn)) = (&replica.arn, &origin.arn) else {
            continue;
        };
        for (pid, r) in &replica.media.replication {
            let kind = match (r.state, r.attempts) {
                (ReplicationState::Active, _) => continue,
                (ReplicationState::Pending, 0) => JobKind::Start,
                (ReplicationState::Pending, _) if now - r.since >= pacing.active_timeout_ms => JobKind::GiveUp,
                (ReplicationState::Pending, _) => JobKind::Check,
                (ReplicationState::Failed, n) if now >= pacing.retry_at(r.since, n) => JobKind::Start,
                (ReplicationState::Failed, _) => continue,
            };
            out.push(Job {
                kind,
                replica_id: replica.id.clone(),
                replica_arn: replica_arn.clone(),
                origin_arn: origin_arn.clone(),
                participant_id: pid.clone(),
                urgent: replica.viewers == 0 && !replica.draining,
                since: r.since,
            });
        }
    }
    // Stable: within each group, stage order.
    out.sort_by_key(|j| !j.urgent);
    out
}

/// Whether a started replication is due for another look at the replica (two IVS calls): at
/// least `min_gap_ms` after the last look, and at least a quarter of the time it has been
/// waiting, so the looks come every interval while IVS is as quick as usual (about ½ s) and thin
/// out geometrically when it is slow, instead of costing two calls per interval (or per wake-up)
/// for as long as IVS takes.
pub fn check_due(since: Millis, last_checked: Option<Millis>, now: Millis, min_gap_ms: i64) -> bool {
    let waited = now - since;
    let gap = match last_checked {
        Some(last) if last >= since => now - last,
        // Never looked since this start: the first look waits only the minimum gap.
        _ => waited,
    };
    gap >= min_gap_ms.max(waited / 4)
}

/// The origin feeding an active replica of a live, replicated broadcast.
fn origin_of<'a>(fleet: &'a Fleet, replica: &Stage) -> Option<&'a Stage> {
    if replica.role != StageRole::Replica || replica.state != StageState::Active {
        return None;
    }
    let b = fleet.broadcasts.get(&replica.broadcast_id)?;
    if b.fanout != Fanout::Replication {
        return None;
    }
    let origin = fleet
        .stages
        .get(&Stage::key(&replica.broadcast_id, replica.media.fed_by?))?;
    (origin.state == StageState::Active).then_some(origin)
}

/// Stages whose publishers the replicator samples from IVS: those hosts publish to directly
/// (origins; every stage with client fan-out), active, of live broadcasts that have hosts (nobody
/// publishes without a host token).
pub fn stages_to_sample(fleet: &Fleet) -> Vec<&Stage> {
    fleet
        .stages
        .values()
        .filter(|s| s.state == StageState::Active && s.arn.is_some())
        .filter(|s| {
            fleet.broadcasts.get(&s.broadcast_id).is_some_and(|b| {
                let direct = s.role == StageRole::Origin || b.fanout == Fanout::Client;
                direct && b.state == super::BroadcastState::Live && !b.hosts.is_empty()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::fleet::admission::FleetPolicy;
    use crate::fleet::sessions::MemorySessions;
    use crate::fleet::transition::{Dirty, ReplicationReport, World, host_participant};
    use crate::fleet::{StageUrls, event::Change, event::StageStep};

    struct T {
        fleet: Fleet,
        policy: FleetPolicy,
        sessions: MemorySessions,
        dirty: Dirty,
    }

    impl T {
        fn new() -> Self {
            T {
                fleet: Fleet::default(),
                policy: FleetPolicy::default(),
                sessions: MemorySessions::default(),
                dirty: Dirty::default(),
            }
        }
        fn w(&mut self) -> World<'_, MemorySessions> {
            World {
                fleet: &mut self.fleet,
                policy: &mut self.policy,
                sessions: &mut self.sessions,
                dirty: &mut self.dirty,
            }
        }
        fn create(&mut self, id: &str) {
            let arn = format!("arn:{id}");
            self.w().stage_created(id, 1, arn, StageUrls::default(), 0).unwrap();
        }
    }

    /// A live broadcast with one host whose participant on the origin is `h-s0`, and `n` replicas.
    fn broadcast(n: u32) -> T {
        let mut t = T::new();
        let origin = t.w().start_broadcast("b", "", None, Fanout::Replication, 0, 1).unwrap();
        t.create(&origin.id);
        t.w().add_host("b", "alice", "h", Default::default(), 0).unwrap();
        for _ in 0..n {
            let s = t.w().add_stage("b", StageRole::Replica, 0, 1).unwrap();
            t.create(&s.id);
        }
        t
    }

    fn steps(t: &T, id: &str) -> Vec<StageStep> {
        t.dirty
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Stage { id: s, step, .. } if s == id => Some(step.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replica_takes_viewers_only_once_every_publishing_host_is_replicated_into_it() {
        let mut t = broadcast(1);
        assert!(
            t.fleet.stages["b:1"].is_ready(),
            "nobody publishes yet: nothing to wait for"
        );
        // --- the host starts publishing on the origin: the replica must carry it before viewers
        let mut pubs = BTreeSet::from(["h-s0".to_string()]);
        t.w().set_publishers("b:0", pubs.clone(), 10).unwrap();
        assert!(!t.fleet.stages["b:1"].is_ready());
        assert_eq!(steps(&t, "b:1").last(), Some(&StageStep::Waiting));
        let jobs = jobs(&t.fleet, 10, &Pacing::default());
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].kind, jobs[0].origin_arn.as_str(), jobs[0].replica_arn.as_str()),
            (JobKind::Start, "arn:b:0", "arn:b:1")
        );
        // A join now goes to the origin, never to the waiting replica.
        let out = t.w().admit(&[join("v1")], 11);
        assert_eq!(out[0].as_ref().unwrap().stage.id, "b:0");
        // --- started, then media seen: READY
        t.w()
            .replication_report("b:1", "h-s0", ReplicationReport::Started, 20)
            .unwrap();
        assert_eq!(jobs_of(&t, 30)[0].kind, JobKind::Check);
        t.w()
            .replication_report("b:1", "h-s0", ReplicationReport::Active, 40)
            .unwrap();
        assert!(t.fleet.stages["b:1"].is_ready());
        assert_eq!(steps(&t, "b:1").last(), Some(&StageStep::Ready));
        assert!(jobs_of(&t, 50).is_empty());
        // --- a second host publishes: the replica waits again, for that host only
        pubs.insert("g-s0".to_string());
        t.w().set_publishers("b:0", pubs, 60).unwrap();
        assert!(!t.fleet.stages["b:1"].is_ready());
        let j = jobs_of(&t, 60);
        assert_eq!((j.len(), j[0].participant_id.as_str()), (1, "g-s0"));
        // --- both stop publishing: nothing left to carry, READY again
        t.w().set_publishers("b:0", BTreeSet::new(), 70).unwrap();
        assert!(t.fleet.stages["b:1"].is_ready());
        assert!(t.fleet.stages["b:1"].media.replication.is_empty());
    }

    #[test]
    fn a_failed_replication_is_retried_with_backoff_and_a_silent_one_is_given_up() {
        let mut t = broadcast(1);
        t.w()
            .set_publishers("b:0", BTreeSet::from(["h-s0".to_string()]), 0)
            .unwrap();
        t.w()
            .replication_report("b:1", "h-s0", ReplicationReport::Failed("not publishing".into()), 1_000)
            .unwrap();
        let r = &t.fleet.stages["b:1"].media.replication["h-s0"];
        assert_eq!(
            (r.state, r.attempts, r.error.as_deref()),
            (ReplicationState::Failed, 1, Some("not publishing"))
        );
        assert!(jobs_of(&t, 1_400).is_empty(), "first retry after 500 ms");
        assert_eq!(jobs_of(&t, 1_500)[0].kind, JobKind::Start);
        t.w()
            .replication_report("b:1", "h-s0", ReplicationReport::Failed("again".into()), 2_000)
            .unwrap();
        assert!(jobs_of(&t, 2_900).is_empty(), "the second waits 1 s");
        assert_eq!(jobs_of(&t, 3_000)[0].kind, JobKind::Start);
        t.w()
            .replication_report("b:1", "h-s0", ReplicationReport::Started, 3_000)
            .unwrap();
        assert_eq!(jobs_of(&t, 32_999)[0].kind, JobKind::Check);
        assert_eq!(jobs_of(&t, 33_000)[0].kind, JobKind::GiveUp);
    }

    #[test]
    fn replicas_are_spread_over_origins_five_each() {
        let mut t = broadcast(5);
        let second = t.w().add_stage("b", StageRole::Origin, 0, 1).unwrap();
        t.create(&second.id);
        let more: Vec<_> = (0..3)
            .map(|_| t.w().add_stage("b", StageRole::Replica, 0, 1).unwrap())
            .collect();
        assert!(more.iter().all(|s| s.media.fed_by == Some(second.slot)), "{more:?}");
        let fed_by_first = t.fleet.stages.values().filter(|s| s.media.fed_by == Some(0)).count();
        assert_eq!(fed_by_first, 5);
    }

    #[test]
    fn with_client_fanout_a_stage_waits_for_every_live_host_to_publish_there() {
        let mut t = T::new();
        let origin = t.w().start_broadcast("c", "", None, Fanout::Client, 0, 1).unwrap();
        t.create(&origin.id);
        let (_, stages) = t.w().add_host("c", "alice", "h", Default::default(), 0).unwrap();
        assert_eq!(stages.len(), 1);
        let s = t.w().add_stage("c", StageRole::Replica, 0, 1).unwrap();
        t.create(&s.id);
        assert!(
            t.fleet.stages["c:1"].is_ready(),
            "nobody is live yet: viewers wait anywhere"
        );
        t.w().host_publishing("c", "h-s0", true, 5).unwrap();
        assert!(t.fleet.stages["c:0"].is_ready());
        assert!(
            !t.fleet.stages["c:1"].is_ready(),
            "the live host does not publish on c:1 yet"
        );
        assert!(jobs_of(&t, 5).is_empty(), "no replication with client fan-out");
        t.w().host_publishing("c", "h-s1", true, 6).unwrap();
        assert!(t.fleet.stages["c:1"].is_ready());
        assert_eq!(
            t.w().host_publishing("c", "x-s1", true, 7),
            Err(crate::fleet::Refusal::UnknownParticipant("c".into(), "x-s1".into()))
        );
    }

    #[test]
    fn a_second_origin_and_its_replicas_wait_until_the_hosts_publish_there_too() {
        let mut t = broadcast(5);
        t.w()
            .set_publishers("b:0", BTreeSet::from(["h-s0".to_string()]), 0)
            .unwrap();
        let second = t.w().add_stage("b", StageRole::Origin, 0, 1).unwrap();
        t.create(&second.id);
        let replica = t.w().add_stage("b", StageRole::Replica, 0, 1).unwrap();
        t.create(&replica.id);
        assert_eq!(replica.media.fed_by, Some(second.slot));
        assert!(
            !t.fleet.stages[&second.id].is_ready(),
            "the host does not publish on it yet"
        );
        assert!(!t.fleet.stages[&replica.id].is_ready());
        let want = host_participant("h", second.slot);
        assert!(
            t.fleet.stages[&replica.id].media.replication.contains_key(&want),
            "replicated from its own origin"
        );
        t.w()
            .set_publishers(&second.id, BTreeSet::from([want.clone()]), 1)
            .unwrap();
        assert!(t.fleet.stages[&second.id].is_ready());
        t.w()
            .replication_report(&replica.id, &want, ReplicationReport::Active, 2)
            .unwrap();
        assert!(t.fleet.stages[&replica.id].is_ready());
    }

    fn jobs_of(t: &T, now: Millis) -> Vec<Job> {
        jobs(&t.fleet, now, &Pacing::default())
    }

    fn join(user: &str) -> crate::fleet::transition::JoinRequest {
        crate::fleet::transition::JoinRequest {
            broadcast_id: "b".into(),
            user_id: user.into(),
            attributes: Default::default(),
            session_id: format!("s-{user}"),
            participant_id: format!("p-{user}"),
            client: None,
        }
    }

    #[test]
    fn checks_thin_out_geometrically_while_the_media_does_not_show() {
        let gap = 250;
        // Not before the minimum gap after the start.
        assert!(!check_due(1_000, None, 1_200, gap));
        assert!(check_due(1_000, None, 1_250, gap));
        // Then at least a quarter of the time waited since the last look.
        let mut looks = Vec::new();
        let mut last = None;
        for now in (1_000..=9_000).step_by(50) {
            if check_due(1_000, last, now, gap) {
                looks.push(now - 1_000);
                last = Some(now);
            }
        }
        assert_eq!(
            looks,
            vec![250, 500, 750, 1_000, 1_350, 1_800, 2_400, 3_200, 4_300, 5_750, 7_700]
        );
        // A look from before a restart of the replication does not count.
        assert!(check_due(5_000, Some(4_900), 5_300, gap));
    }
}
