//! Transitions of the hosts' media and of scale-down: who publishes where, each replication's
//! state, when a stage becomes READY (eligible for viewers), draining, moving viewers off a
//! draining stage, and retiring it once empty. Same rules as the rest of `transition`: fully
//! applies or refuses and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::super::event::{Change, StageStep};
use super::super::model::*;
use super::super::placement;
use super::super::sessions::Sessions;
use super::World;

/// A host's participant id on one stage: `<participant_base>-s<slot>` (the token's `jti`).
pub fn host_participant(base: &str, slot: u32) -> String {
    format!("{base}-s{slot}")
}

/// Most replica stages one origin feeds: IVS replicates one participant into at most 5 stages.
pub const REPLICAS_PER_ORIGIN: u32 = 5;

/// What a replication report says happened.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReplicationReport {
    /// StartParticipantReplication answered; media not seen in the replica yet.
    Started,
    /// The host's media is seen in the replica.
    Active,
    /// An attempt failed (message for operators).
    Failed(String),
}

/// How a stage gets the hosts' media.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// Hosts publish to it themselves.
    Direct,
    /// IVS replicates them in from its origin.
    Replicated,
}

impl<S: Sessions + ?Sized> World<'_, S> {
    /// The origin a new replica of `broadcast_id` is fed by: the one feeding fewest replicas,
    /// lowest slot first (deterministic).
    pub(super) fn pick_origin(&self, broadcast_id: &str) -> Option<u32> {
        let mut fed: BTreeMap<u32, u32> = self
            .fleet
            .stages_of(broadcast_id)
            .filter(|s| s.role == StageRole::Origin && s.state != StageState::Deleting)
            .map(|s| (s.slot, 0))
            .collect();
        for s in self.fleet.stages_of(broadcast_id) {
            if let Some(o) = s.media.fed_by
                && let Some(n) = fed.get_mut(&o)
            {
                *n += 1;
            }
        }
        fed.into_iter().min_by_key(|&(slot, n)| (n, slot)).map(|(slot, _)| slot)
    }

    /// Hosts who are live: publishing on some stage they publish to directly (an origin; any
    /// stage with client fan-out), by participant base.
    fn live_hosts(&self, broadcast_id: &str) -> BTreeSet<String> {
        self.fleet
            .stages_of(broadcast_id)
            .filter(|s| s.state != StageState::Deleting)
            .flat_map(|s| {
                let suffix = format!("-s{}", s.slot);
                s.media
                    .publishers
                    .iter()
                    .filter_map(move |pid| pid.strip_suffix(suffix.as_str()).map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The host participants whose media stage `s` must carry, given the live hosts: on a replica,
    /// each live host's participant on the replica's origin (replicated in); on a stage hosts
    /// publish to directly (every origin, every stage with client fan-out), each live host's
    /// participant there. So a second origin waits until the hosts publish there too, and its
    /// replicas until they are replicated from it.
    fn wanted_media(&self, s: &Stage, live: &BTreeSet<String>) -> (Feed, BTreeSet<String>) {
        let fanout = self
            .fleet
            .broadcasts
            .get(&s.broadcast_id)
            .map(|b| b.fanout)
            .unwrap_or_default();
        let (feed, slot) = match (fanout, s.role, s.media.fed_by) {
            (Fanout::Replication, StageRole::Replica, Some(origin)) => (Feed::Replicated, origin),
            (Fanout::Replication, StageRole::Replica, None) => return (Feed::Direct, BTreeSet::new()),
            _ => (Feed::Direct, s.slot),
        };
        (feed, live.iter().map(|base| host_participant(base, slot)).collect())
    }

    /// Bring every stage of `broadcast_id` in line with who publishes: replicas get a pending
    /// replication per host to carry (and lose those of hosts gone), and each stage's `waiting`
    /// follows; a stage that becomes READY or stops being so says it.
    pub(super) fn refresh_media(&mut self, broadcast_id: &str, now: Millis) {
        let live = self.live_hosts(broadcast_id);
        let ids: Vec<String> = self
            .fleet
            .stages_of(broadcast_id)
            .filter(|s| s.state != StageState::Deleting)
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            let (feed, wanted) = self.wanted_media(&self.fleet.stages[&id], &live);
            let stage = self.fleet.stages.get_mut(&id).expect("listed above");
            let before = (stage.is_ready(), stage.media.clone());
            let waiting = match feed {
                Feed::Direct => !wanted.is_subset(&stage.media.publishers),
                Feed::Replicated => {
                    let r = &mut stage.media.replication;
                    r.retain(|pid, _| wanted.contains(pid));
                    for pid in &wanted {
                        r.entry(pid.clone()).or_insert(Replication {
                            state: ReplicationState::Pending,
                            attempts: 0,
                            error: None,
                            since: now,
                        });
                    }
                    r.values().any(|x| x.state != ReplicationState::Active)
                }
            };
            stage.media.waiting = waiting;
            let (ready, changed) = (stage.is_ready(), stage.media != before.1);
            if changed {
                self.touch_stage(&id);
            }
            if stage_state(self.fleet, &id) == Some(StageState::Active) && ready != before.0 {
                let step = if ready { StageStep::Ready } else { StageStep::Waiting };
                self.emit_stage(&id, broadcast_id, step);
            }
        }
    }

    /// Who is seen publishing on `stage_id` now (from ListParticipants, or the broadcaster's
    /// report): the whole set, so a host who stopped drops out.
    pub fn set_publishers(
        &mut self,
        stage_id: &str,
        publishers: BTreeSet<String>,
        now: Millis,
    ) -> Result<Stage, Refusal> {
        let stage = self
            .fleet
            .stages
            .get_mut(stage_id)
            .ok_or_else(|| Refusal::UnknownStage(stage_id.to_string()))?;
        let broadcast_id = stage.broadcast_id.clone();
        if stage.media.publishers != publishers {
            stage.media.publishers = publishers;
            self.touch_stage(stage_id);
            self.emit(Change::Publishers {
                broadcast_id: broadcast_id.clone(),
                stage_id: stage_id.to_string(),
            });
            self.refresh_media(&broadcast_id, now);
        }
        Ok(self.fleet.stages[stage_id].clone())
    }

    /// `hostPublishing`: the broadcaster page says one of its host participants publishes (or
    /// stopped). The participant id names its stage (`<base>-s<slot>`).
    pub fn host_publishing(
        &mut self,
        broadcast_id: &str,
        participant_id: &str,
        publishing: bool,
        now: Millis,
    ) -> Result<Stage, Refusal> {
        let b = self
            .fleet
            .broadcasts
            .get(broadcast_id)
            .ok_or_else(|| Refusal::UnknownBroadcast(broadcast_id.to_string()))?;
        if b.state != BroadcastState::Live {
            return Err(Refusal::BroadcastNotLive(broadcast_id.to_string()));
        }
        let unknown = || Refusal::UnknownParticipant(broadcast_id.to_string(), participant_id.to_string());
        let (base, slot) = participant_id.rsplit_once("-s").ok_or_else(unknown)?;
        let slot: u32 = slot.parse().map_err(|_| unknown())?;
        if !b.hosts.values().any(|h| h.participant_base == base) {
            return Err(unknown());
        }
        let stage = self
            .fleet
            .stages
            .get(&Stage::key(broadcast_id, slot))
            .filter(|s| s.state == StageState::Active)
            .ok_or_else(unknown)?;
        let mut publishers = stage.media.publishers.clone();
        if publishing {
            publishers.insert(participant_id.to_string());
        } else {
            publishers.remove(participant_id);
        }
        let id = stage.id.clone();
        self.set_publishers(&id, publishers, now)
    }

    /// The replicator's report for one host into one replica.
    pub fn replication_report(
        &mut self,
        stage_id: &str,
        participant_id: &str,
        report: ReplicationReport,
        now: Millis,
    ) -> Result<Stage, Refusal> {
        let stage = self
            .fleet
            .stages
            .get_mut(stage_id)
            .ok_or_else(|| Refusal::UnknownStage(stage_id.to_string()))?;
        if stage.state != StageState::Active {
            return Err(Refusal::StageNotActive(stage_id.to_string()));
        }
        // A report for a host the stage no longer carries (it stopped publishing meanwhile) is stale.
        let r = stage
            .media
            .replication
            .get_mut(participant_id)
            .ok_or_else(|| Refusal::UnknownParticipant(stage.broadcast_id.clone(), participant_id.to_string()))?;
        let state = match &report {
            ReplicationReport::Started => ReplicationState::Pending,
            ReplicationReport::Active => ReplicationState::Active,
            ReplicationReport::Failed(_) => ReplicationState::Failed,
        };
        match report {
            ReplicationReport::Started => r.attempts += 1,
            ReplicationReport::Active => {
                r.attempts = 0;
                r.error = None;
            }
            ReplicationReport::Failed(e) => {
                r.attempts += 1;
                r.error = Some(e);
            }
        }
        r.since = now;
        r.state = state;
        let broadcast_id = stage.broadcast_id.clone();
        self.touch_stage(stage_id);
        self.emit_stage(
            stage_id,
            &broadcast_id,
            StageStep::Replication {
                participant_id: participant_id.to_string(),
                state,
            },
        );
        self.refresh_media(&broadcast_id, now);
        Ok(self.fleet.stages[stage_id].clone())
    }

    /// `drainStage` or the scaler's scale-down: the stage takes no new viewers and is retired once
    /// empty. Origins of a live broadcast are never drained.
    pub fn drain_stage(&mut self, stage_id: &str, term: u64) -> Result<Stage, Refusal> {
        let stage = self
            .fleet
            .stages
            .get(stage_id)
            .ok_or_else(|| Refusal::UnknownStage(stage_id.to_string()))?;
        if stage.state != StageState::Active {
            return Err(Refusal::StageNotActive(stage_id.to_string()));
        }
        let live = self
            .fleet
            .broadcasts
            .get(&stage.broadcast_id)
            .is_some_and(|b| b.state == BroadcastState::Live);
        if stage.role == StageRole::Origin && live {
            return Err(Refusal::OriginStage(stage_id.to_string()));
        }
        if !stage.draining {
            let broadcast_id = stage.broadcast_id.clone();
            self.fleet.stages.get_mut(stage_id).expect("checked").draining = true;
            self.touch_stage(stage_id);
            self.emit_stage(stage_id, &broadcast_id, StageStep::Draining);
        }
        self.retire_drained(stage_id, term);
        Ok(self.fleet.stages[stage_id].clone())
    }

    /// The scaler takes a draining stage back (the crowd came back before it emptied).
    pub fn undrain_stage(&mut self, stage_id: &str) -> Result<Stage, Refusal> {
        let stage = self
            .fleet
            .stages
            .get_mut(stage_id)
            .ok_or_else(|| Refusal::UnknownStage(stage_id.to_string()))?;
        if stage.state != StageState::Active {
            return Err(Refusal::StageNotActive(stage_id.to_string()));
        }
        if stage.draining {
            stage.draining = false;
            let (ready, broadcast_id) = (stage.is_ready(), stage.broadcast_id.clone());
            self.touch_stage(stage_id);
            let step = if ready { StageStep::Ready } else { StageStep::Waiting };
            self.emit_stage(stage_id, &broadcast_id, step);
        }
        Ok(self.fleet.stages[stage_id].clone())
    }

    /// Consolidate: move up to `limit` viewers of a draining stage to READY stages with room of
    /// the same broadcast (placement as for a join). Each move keeps the session (id, user,
    /// lease) and is announced, so its `assignment` subscription hands the viewer a token for
    /// the new stage. Answers how many moved; an emptied stage is retired.
    pub fn move_viewers(&mut self, stage_id: &str, limit: u32, term: u64) -> Result<u32, Refusal> {
        let stage = self
            .fleet
            .stages
            .get(stage_id)
            .ok_or_else(|| Refusal::UnknownStage(stage_id.to_string()))?;
        if stage.state != StageState::Active || !stage.draining {
            return Err(Refusal::StageNotActive(stage_id.to_string()));
        }
        let broadcast_id = stage.broadcast_id.clone();
        let mut moved = 0;
        for id in self.sessions.on_stage(stage_id).into_iter().take(limit as usize) {
            let Some(to) =
                placement::choose(self.fleet.stages_of(&broadcast_id), self.policy.placement).map(|s| s.id.clone())
            else {
                break;
            };
            let Some(mut session) = self.sessions.get(&id) else {
                continue;
            };
            session.stage_id = to.clone();
            self.sessions.put(session);
            if let Some(s) = self.fleet.stages.get_mut(stage_id) {
                s.viewers = s.viewers.saturating_sub(1);
            }
            if let Some(s) = self.fleet.stages.get_mut(&to) {
                s.viewers += 1;
            }
            self.touch_stage(&to);
            self.emit(Change::SessionMoved {
                session_id: id,
                broadcast_id: broadcast_id.clone(),
                from: stage_id.to_string(),
                to,
            });
            moved += 1;
        }
        self.touch_stage(stage_id);
        self.retire_drained(stage_id, term);
        Ok(moved)
    }

    /// A draining stage with no viewer left becomes a delete intent of `term`.
    pub fn retire_drained(&mut self, stage_id: &str, term: u64) {
        let Some(stage) = self.fleet.stages.get_mut(stage_id) else {
            return;
        };
        if stage.draining && stage.viewers == 0 && stage.state == StageState::Active {
            stage.state = StageState::Deleting;
            stage.intent_term = term;
            let broadcast_id = stage.broadcast_id.clone();
            self.touch_stage(stage_id);
            self.emit_stage(stage_id, &broadcast_id, StageStep::Deleting);
        }
    }

    /// Retire every draining stage this apply emptied (after leaves and expiries).
    pub fn retire_drained_touched(&mut self, term: u64) {
        let touched: Vec<String> = self.dirty.stages.iter().cloned().collect();
        for id in touched {
            self.retire_drained(&id, term);
        }
    }
}

fn stage_state(fleet: &Fleet, id: &str) -> Option<StageState> {
    fleet.stages.get(id).map(|s| s.state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::admission::FleetPolicy;
    use crate::fleet::event::EndReason;
    use crate::fleet::transition::{JoinRequest, TestParts};

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

    #[test]
    fn a_drained_stage_takes_no_viewers_moves_its_own_and_is_retired_once_empty() {
        let mut parts = TestParts::new(FleetPolicy {
            seats_per_stage: 3,
            ..FleetPolicy::default()
        });
        let mut w = parts.world();
        w.live_for_test("b", None);
        for _ in 0..2 {
            let s = w.add_stage("b", StageRole::Replica, 0, 1).unwrap();
            w.stage_created(&s.id, 1, format!("arn:{}", s.slot), StageUrls::default(), 0)
                .unwrap();
        }
        let users: Vec<_> = (0..7).map(|i| join(&format!("u{i}"))).collect();
        assert!(w.admit(&users, 1).iter().all(Result::is_ok));
        assert_eq!([0, 1, 2].map(|i| w.fleet.stages[&format!("b:{i}")].viewers), [3, 3, 1]);
        // --- origins of a live broadcast are never drained
        assert_eq!(w.drain_stage("b:0", 2), Err(Refusal::OriginStage("b:0".into())));
        // --- drain b:1: no new viewer lands there
        w.leave(&["s-u0".to_string()]); // a seat frees on the origin
        let drained = w.drain_stage("b:1", 2).unwrap();
        assert!(drained.draining && !drained.is_ready());
        let out = w.admit(&[join("late")], 2);
        assert_ne!(out[0].as_ref().unwrap().stage.id, "b:1");
        // --- consolidate: two of its three fit on b:2 (one seat is taken by `late`... on b:0)
        w.dirty.changes.clear();
        let moved = w.move_viewers("b:1", 10, 3).unwrap();
        assert_eq!(moved, 2, "b:2 had two free seats");
        let moves: Vec<_> = w
            .dirty
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::SessionMoved {
                    session_id, from, to, ..
                } => Some((session_id.clone(), from.clone(), to.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(moves.len(), 2);
        for (sid, from, to) in &moves {
            assert_eq!((from.as_str(), to.as_str()), ("b:1", "b:2"));
            assert_eq!(w.sessions.get(sid).unwrap().stage_id, "b:2", "the session itself moved");
        }
        assert_eq!(w.fleet.stages["b:1"].viewers, 1);
        assert_eq!(w.fleet.stages["b:2"].viewers, 3, "capacity holds");
        assert_eq!(
            w.fleet.stages["b:1"].state,
            StageState::Active,
            "one viewer still there"
        );
        // --- its last viewer leaves: a delete intent of this entry's term
        let last = w.sessions.on_stage("b:1");
        w.leave(&last);
        w.retire_drained_touched(4);
        let s = &w.fleet.stages["b:1"];
        assert_eq!((s.state, s.intent_term), (StageState::Deleting, 4));
        assert!(w.dirty.changes.iter().any(|c| matches!(
            c,
            Change::SessionEnded {
                reason: EndReason::Left,
                ..
            }
        )));
    }

    #[test]
    fn the_region_subscription_quota_refuses_joins_past_it_and_counts_host_streams() {
        let mut parts = TestParts::new(FleetPolicy {
            region_subscription_quota: 5,
            ..FleetPolicy::default()
        });
        let mut w = parts.world();
        w.live_for_test("b", None);
        // Two hosts publish: each viewer takes two of the region's five subscriptions.
        w.set_publishers("b:0", BTreeSet::from(["a-s0".into(), "b-s0".into()]), 0)
            .unwrap();
        let out = w.admit(&[join("u1"), join("u2"), join("u3")], 1);
        assert!(out[0].is_ok() && out[1].is_ok());
        assert_eq!(out[2], Err(Refusal::RegionFull(5)));
        assert_eq!(w.fleet.stages["b:0"].viewers, 2, "the refusal took no seat");
        // A rejoin of a seated user is never refused.
        assert!(w.admit(&[join("u1")], 2)[0].as_ref().unwrap().rejoined);
    }
}
