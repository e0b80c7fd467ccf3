//! Deterministic state transitions: what each command does to the fleet and its sessions.
//! The state machine calls these with the entry's term and the command's `now`; same inputs,
//! same outputs, on every node. Each transition either fully applies or refuses and changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::admission::{self, FleetPolicy, MAX_HOSTS, PolicyPatch};
use super::event::{Change, EndReason, StageStep};
use super::model::*;
use super::sessions::Sessions;

mod fanout;
mod viewers;
pub use fanout::{REPLICAS_PER_ORIGIN, ReplicationReport, host_participant};

/// What transitions did: the records they touched (so the store persists only those) and the
/// changes they caused, in order (so the store can publish them).
#[derive(Debug, Default)]
pub struct Dirty {
    pub broadcasts: BTreeSet<String>,
    pub stages: BTreeSet<String>,
    pub meta: bool,
    /// The policy was set (a `meta` change too).
    pub policy: bool,
    pub changes: Vec<Change>,
}

pub struct World<'a, S: Sessions + ?Sized> {
    pub fleet: &'a mut Fleet,
    pub policy: &'a mut FleetPolicy,
    pub sessions: &'a mut S,
    pub dirty: &'a mut Dirty,
}

/// One viewer asking to join; ids are drawn by the proposing node so apply stays deterministic.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinRequest {
    pub broadcast_id: String,
    pub user_id: String,
    pub attributes: BTreeMap<String, String>,
    pub session_id: String,
    pub participant_id: String,
    /// The asking client's network, sent only when the broadcast caps seats per client: the
    /// common path writes nothing more to the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seated {
    pub session: Session,
    pub stage: Stage,
    pub rejoined: bool,
}

impl<S: Sessions + ?Sized> World<'_, S> {
    fn touch_stage(&mut self, id: &str) {
        self.dirty.stages.insert(id.to_string());
    }

    fn touch_broadcast(&mut self, id: &str) {
        self.dirty.broadcasts.insert(id.to_string());
    }

    fn emit(&mut self, change: Change) {
        self.dirty.changes.push(change);
    }

    fn touch_meta(&mut self) {
        self.dirty.meta = true;
        self.emit(Change::Meta);
    }

    fn emit_broadcast(&mut self, id: &str) {
        let state = self.fleet.broadcasts.get(id).map(|b| b.state);
        self.emit(Change::Broadcast {
            id: id.to_string(),
            state,
        });
    }

    fn emit_stage(&mut self, id: &str, broadcast_id: &str, step: StageStep) {
        self.emit(Change::Stage {
            id: id.to_string(),
            broadcast_id: broadcast_id.to_string(),
            step,
        });
    }

    fn emit_ended(&mut self, session: &Session, reason: EndReason) {
        self.emit(Change::SessionEnded {
            session_id: session.id.clone(),
            broadcast_id: session.broadcast_id.clone(),
            stage_id: session.stage_id.clone(),
            reason,
        });
    }

    pub fn set_policy(&mut self, policy: FleetPolicy) {
        *self.policy = policy;
        self.dirty.policy = true;
        self.touch_meta();
    }

    /// Change some of the policy's fields (validated by the proposer: every rule is a range per
    /// field, so a patch valid against one policy is valid against any).
    pub fn patch_policy(&mut self, patch: &PolicyPatch) -> FleetPolicy {
        let policy = patch.apply(self.policy);
        self.set_policy(policy.clone());
        policy
    }

    pub fn set_signing_key(&mut self, key: SigningKeyRecord) {
        self.fleet.signing_key = Some(key);
        self.touch_meta();
    }

    pub fn create_api_key(&mut self, key: ApiKeyRecord) -> ApiKeyRecord {
        self.fleet.api_keys.insert(key.id.clone(), key.clone());
        self.touch_meta();
        key
    }

    pub fn revoke_api_key(&mut self, id: &str) -> Result<ApiKeyRecord, Refusal> {
        let key = self
            .fleet
            .api_keys
            .remove(id)
            .ok_or_else(|| Refusal::UnknownApiKey(id.to_string()))?;
        self.touch_meta();
        Ok(key)
    }

    /// A new broadcast and the intent to create its origin stage (slot 0). `max_seats_per_client`
    /// overrides the policy's cap for this broadcast (`Some(0)`: no cap).
    pub fn start_broadcast(
        &mut self,
        id: &str,
        name: &str,
        max_seats_per_client: Option<u32>,
        fanout: Fanout,
        now: Millis,
        term: u64,
    ) -> Result<Stage, Refusal> {
        if self.fleet.broadcasts.contains_key(id) {
            return Err(Refusal::BroadcastExists(id.to_string()));
        }
        admission::can_add_stage(self.fleet, self.policy)?;
        let broadcast = Broadcast {
            id: id.to_string(),
            name: name.to_string(),
            state: BroadcastState::Starting,
            created_at: now,
            ended_at: None,
            next_slot: 0,
            hosts: BTreeMap::new(),
            admitted_total: 0,
            max_seats_per_client,
            fanout,
        };
        self.fleet.broadcasts.insert(id.to_string(), broadcast);
        self.touch_broadcast(id);
        self.emit_broadcast(id);
        Ok(self.new_stage_intent(id, StageRole::Origin, now, term))
    }

    /// The intent to create one more stage for a live broadcast.
    pub fn add_stage(&mut self, broadcast_id: &str, role: StageRole, now: Millis, term: u64) -> Result<Stage, Refusal> {
        let b = self
            .fleet
            .broadcasts
            .get(broadcast_id)
            .ok_or_else(|| Refusal::UnknownBroadcast(broadcast_id.to_string()))?;
        if b.state != BroadcastState::Live {
            return Err(Refusal::BroadcastNotLive(broadcast_id.to_string()));
        }
        admission::can_add_stage(self.fleet, self.policy)?;
        Ok(self.new_stage_intent(broadcast_id, role, now, term))
    }

    fn new_stage_intent(&mut self, broadcast_id: &str, role: StageRole, now: Millis, term: u64) -> Stage {
        let b = self
            .fleet
            .broadcasts
            .get_mut(broadcast_id)
            .expect("caller checked the broadcast");
        let slot = b.next_slot;
        b.next_slot += 1;
        let fed_by = match (role, b.fanout) {
            (StageRole::Replica, Fanout::Replication) => self.pick_origin(broadcast_id),
            _ => None,
        };
        let stage = Stage {
            id: Stage::key(broadcast_id, slot),
            broadcast_id: broadcast_id.to_string(),
            slot,
            role,
            state: StageState::Creating,
            capacity: self.policy.seats_per_stage,
            viewers: 0,
            arn: None,
            endpoints: None,
            intent_term: term,
            created_at: now,
            draining: false,
            media: Media {
                fed_by,
                ..Media::default()
            },
        };
        self.fleet.stages.insert(stage.id.clone(), stage.clone());
        self.touch_broadcast(broadcast_id);
        self.touch_stage(&stage.id);
        self.emit_stage(&stage.id, broadcast_id, StageStep::Creating);
        stage
    }

    fn owned_intent(&mut self, stage_id: &str, intent_term: u64, want: StageState) -> Result<&mut Stage, Refusal> {
        let stage = self
            .fleet
            .stages
            .get_mut(stage_id)
            .ok_or_else(|| Refusal::UnknownStage(stage_id.to_string()))?;
        if stage.state != want || stage.intent_term != intent_term {
            return Err(Refusal::Fenced(stage_id.to_string()));
        }
        Ok(stage)
    }

    /// CreateStage answered: the stage exists, and takes viewers once the hosts' media reaches
    /// it (READY); an origin makes its broadcast live.
    pub fn stage_created(
        &mut self,
        stage_id: &str,
        intent_term: u64,
        arn: String,
        endpoints: StageUrls,
        now: Millis,
    ) -> Result<Stage, Refusal> {
        let broadcast_id = self
            .owned_intent(stage_id, intent_term, StageState::Creating)?
            .broadcast_id
            .clone();
        // Work out what media it waits for while still Creating (no step is announced then).
        self.refresh_media(&broadcast_id, now);
        let stage = self.fleet.stages.get_mut(stage_id).expect("owned above");
        stage.state = StageState::Active;
        stage.arn = Some(arn);
        stage.endpoints = Some(endpoints);
        let stage = stage.clone();
        self.touch_stage(stage_id);
        let step = if stage.is_ready() {
            StageStep::Ready
        } else {
            StageStep::Created
        };
        self.emit_stage(stage_id, &stage.broadcast_id, step);
        if stage.role == StageRole::Origin {
            if let Some(b) = self.fleet.broadcasts.get_mut(&stage.broadcast_id)
                && b.state == BroadcastState::Starting
            {
                b.state = BroadcastState::Live;
                self.emit_broadcast(&stage.broadcast_id);
            }
            self.touch_broadcast(&stage.broadcast_id);
        }
        Ok(stage)
    }

    /// CreateStage failed for good: forget the intent. A broadcast whose origin could not be
    /// created never went live: it is forgotten too, so starting it again is a plain retry.
    pub fn stage_create_failed(
        &mut self,
        stage_id: &str,
        intent_term: u64,
        failure: Option<StageFailure>,
    ) -> Result<(), Refusal> {
        self.owned_intent(stage_id, intent_term, StageState::Creating)?;
        let stage = self.fleet.stages.remove(stage_id).expect("checked above");
        self.touch_stage(stage_id);
        self.emit_stage(stage_id, &stage.broadcast_id, StageStep::CreateFailed(failure));
        let starting = self
            .fleet
            .broadcasts
            .get(&stage.broadcast_id)
            .is_some_and(|b| b.state == BroadcastState::Starting);
        if stage.role == StageRole::Origin && starting {
            self.fleet.broadcasts.remove(&stage.broadcast_id);
            self.emit_broadcast(&stage.broadcast_id);
        }
        self.touch_broadcast(&stage.broadcast_id);
        Ok(())
    }

    /// A DeleteStage attempt failed: the intent stays (the stage loop retries it); the failure
    /// is published so whoever awaits the deletion can answer.
    pub fn stage_delete_failed(
        &mut self,
        stage_id: &str,
        intent_term: u64,
        failure: StageFailure,
    ) -> Result<(), Refusal> {
        let broadcast_id = self
            .owned_intent(stage_id, intent_term, StageState::Deleting)?
            .broadcast_id
            .clone();
        self.emit_stage(stage_id, &broadcast_id, StageStep::DeleteFailed(failure));
        Ok(())
    }

    /// A new leader takes over a pending intent, fencing any late result of the old one.
    pub fn reclaim_intent(&mut self, stage_id: &str, term: u64) -> Result<Stage, Refusal> {
        let stage = self
            .fleet
            .stages
            .get_mut(stage_id)
            .ok_or_else(|| Refusal::UnknownStage(stage_id.to_string()))?;
        stage.intent_term = term;
        let stage = stage.clone();
        self.touch_stage(stage_id);
        self.emit_stage(stage_id, &stage.broadcast_id, StageStep::Reclaimed);
        Ok(stage)
    }

    /// The intent to delete a stage. Refused while it seats viewers unless `force`, which ends
    /// their sessions.
    pub fn delete_stage(&mut self, stage_id: &str, force: bool, term: u64) -> Result<(Stage, u32), Refusal> {
        let stage = self
            .fleet
            .stages
            .get(stage_id)
            .ok_or_else(|| Refusal::UnknownStage(stage_id.to_string()))?;
        let live = self
            .fleet
            .broadcasts
            .get(&stage.broadcast_id)
            .is_some_and(|b| matches!(b.state, BroadcastState::Live | BroadcastState::Starting));
        if stage.role == StageRole::Origin && live {
            return Err(Refusal::OriginStage(stage_id.to_string()));
        }
        if stage.viewers > 0 && !force {
            return Err(Refusal::StageHasViewers(stage_id.to_string(), stage.viewers));
        }
        let evicted = self.evict_stage(stage_id, EndReason::Evicted);
        let stage = self.fleet.stages.get_mut(stage_id).expect("checked above");
        stage.state = StageState::Deleting;
        stage.intent_term = term;
        let stage = stage.clone();
        self.touch_stage(stage_id);
        self.emit_stage(stage_id, &stage.broadcast_id, StageStep::Deleting);
        Ok((stage, evicted))
    }

    fn evict_stage(&mut self, stage_id: &str, reason: EndReason) -> u32 {
        let ids = self.sessions.on_stage(stage_id);
        for id in &ids {
            if let Some(session) = self.sessions.remove(id) {
                self.emit_ended(&session, reason);
            }
        }
        if let Some(stage) = self.fleet.stages.get_mut(stage_id) {
            stage.viewers = 0;
        }
        self.touch_stage(stage_id);
        ids.len() as u32
    }

    /// DeleteStage answered (or the stage was already gone): forget it; the last stage of an
    /// ending broadcast ends it.
    pub fn stage_deleted(&mut self, stage_id: &str, intent_term: u64, now: Millis) -> Result<(), Refusal> {
        self.owned_intent(stage_id, intent_term, StageState::Deleting)?;
        let stage = self.fleet.stages.remove(stage_id).expect("checked above");
        self.touch_stage(stage_id);
        self.emit_stage(stage_id, &stage.broadcast_id, StageStep::Deleted);
        let remaining = self.fleet.stages_of(&stage.broadcast_id).count();
        if let Some(b) = self.fleet.broadcasts.get_mut(&stage.broadcast_id)
            && b.state == BroadcastState::Ending
            && remaining == 0
        {
            b.state = BroadcastState::Ended;
            b.ended_at = Some(now);
            self.emit_broadcast(&stage.broadcast_id);
        }
        self.touch_broadcast(&stage.broadcast_id);
        Ok(())
    }

    /// End a broadcast: every viewer leaves and every stage gets a delete intent. Idempotent.
    pub fn end_broadcast(&mut self, id: &str, now: Millis, term: u64) -> Result<(Broadcast, Vec<Stage>), Refusal> {
        let b = self
            .fleet
            .broadcasts
            .get(id)
            .ok_or_else(|| Refusal::UnknownBroadcast(id.to_string()))?;
        if b.state == BroadcastState::Ended {
            return Ok((b.clone(), Vec::new()));
        }
        let stage_ids: Vec<String> = self.fleet.stages_of(id).map(|s| s.id.clone()).collect();
        let mut deleting = Vec::new();
        for sid in &stage_ids {
            self.evict_stage(sid, EndReason::BroadcastEnded);
            let stage = self.fleet.stages.get_mut(sid).expect("listed above");
            stage.state = StageState::Deleting;
            stage.intent_term = term;
            deleting.push(stage.clone());
            self.emit_stage(sid, id, StageStep::Deleting);
        }
        let b = self.fleet.broadcasts.get_mut(id).expect("checked above");
        b.state = if stage_ids.is_empty() {
            BroadcastState::Ended
        } else {
            BroadcastState::Ending
        };
        b.ended_at = Some(now);
        let b = b.clone();
        self.touch_broadcast(id);
        self.emit_broadcast(id);
        Ok((b, deleting))
    }

    /// Register a host of a broadcast (idempotent per user), within the 12-publisher limit.
    pub fn add_host(
        &mut self,
        broadcast_id: &str,
        user_id: &str,
        participant_base: &str,
        attributes: BTreeMap<String, String>,
        now: Millis,
    ) -> Result<(Host, Vec<Stage>), Refusal> {
        let b = self
            .fleet
            .broadcasts
            .get_mut(broadcast_id)
            .ok_or_else(|| Refusal::UnknownBroadcast(broadcast_id.to_string()))?;
        if b.state != BroadcastState::Live {
            return Err(Refusal::BroadcastNotLive(broadcast_id.to_string()));
        }
        if !b.hosts.contains_key(user_id) && b.hosts.len() as u32 >= MAX_HOSTS {
            return Err(Refusal::HostLimit(broadcast_id.to_string(), MAX_HOSTS));
        }
        let host = b
            .hosts
            .entry(user_id.to_string())
            .or_insert_with(|| Host {
                user_id: user_id.to_string(),
                participant_base: participant_base.to_string(),
                attributes,
            })
            .clone();
        self.touch_broadcast(broadcast_id);
        self.emit(Change::HostAdded {
            broadcast_id: broadcast_id.to_string(),
            user_id: user_id.to_string(),
        });
        // With client fan-out a new host must publish on every stage before it takes viewers.
        self.refresh_media(broadcast_id, now);
        // The stages the host publishes to: the origins, or every stage with client fan-out.
        let client = self.fleet.broadcasts[broadcast_id].fanout == Fanout::Client;
        let origins = self
            .fleet
            .stages_of(broadcast_id)
            .filter(|s| (client || s.role == StageRole::Origin) && s.state == StageState::Active)
            .cloned()
            .collect();
        Ok((host, origins))
    }
}

/// What a [`World`] borrows, owned: the transitions' tests start from one of these.
#[cfg(test)]
pub(crate) struct TestParts {
    fleet: Fleet,
    policy: FleetPolicy,
    sessions: crate::fleet::sessions::MemorySessions,
    dirty: Dirty,
}

#[cfg(test)]
impl TestParts {
    pub(crate) fn new(policy: FleetPolicy) -> Self {
        TestParts {
            fleet: Fleet::default(),
            policy,
            sessions: Default::default(),
            dirty: Dirty::default(),
        }
    }

    pub(crate) fn world(&mut self) -> World<'_, crate::fleet::sessions::MemorySessions> {
        World {
            fleet: &mut self.fleet,
            policy: &mut self.policy,
            sessions: &mut self.sessions,
            dirty: &mut self.dirty,
        }
    }
}

#[cfg(test)]
impl<S: Sessions + ?Sized> World<'_, S> {
    /// Broadcast `id` started (term 1) and its origin stage created as `arn:<id>`: live, taking
    /// viewers.
    pub(crate) fn live_for_test(&mut self, id: &str, max_seats_per_client: Option<u32>) -> Stage {
        let origin = self
            .start_broadcast(id, "", max_seats_per_client, Fanout::Replication, 0, 1)
            .unwrap();
        self.stage_created(&origin.id, 1, format!("arn:{id}"), StageUrls::default(), 0)
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_from_a_deposed_leader_is_fenced_and_changes_nothing() {
        let mut parts = TestParts::new(FleetPolicy::default());
        let mut w = parts.world();
        // --- leader of term 3 writes the intent, then loses leadership before IVS answers
        let intent = w.start_broadcast("b", "show", None, Fanout::Replication, 0, 3).unwrap();
        // --- the leader of term 4 takes the intent over
        assert_eq!(w.reclaim_intent(&intent.id, 4).unwrap().intent_term, 4);
        // --- the old leader's late answer is refused and the stage stays as it was
        let late = w.stage_created(&intent.id, 3, "arn:old".into(), StageUrls::default(), 0);
        assert_eq!(late, Err(Refusal::Fenced(intent.id.clone())));
        assert_eq!(w.fleet.stages[&intent.id].state, StageState::Creating);
        assert_eq!(w.fleet.broadcasts["b"].state, BroadcastState::Starting);
        assert_eq!(
            w.stage_create_failed(&intent.id, 3, None),
            Err(Refusal::Fenced(intent.id.clone()))
        );
        // --- the new owner's answer goes through
        let stage = w
            .stage_created(&intent.id, 4, "arn:new".into(), StageUrls::default(), 0)
            .unwrap();
        assert_eq!(stage.arn.as_deref(), Some("arn:new"));
        assert_eq!(w.fleet.broadcasts["b"].state, BroadcastState::Live);
    }

    #[test]
    fn the_stage_quota_refuses_new_broadcasts_and_stages_beyond_the_maximum() {
        let mut parts = TestParts::new(FleetPolicy {
            max_stages: 2,
            ..FleetPolicy::default()
        });
        let mut w = parts.world();
        w.live_for_test("a", None);
        w.add_stage("a", StageRole::Replica, 0, 1).unwrap();
        assert_eq!(
            w.add_stage("a", StageRole::Replica, 0, 1),
            Err(Refusal::StageQuotaExceeded(2))
        );
        assert_eq!(
            w.start_broadcast("b", "", None, Fanout::Replication, 0, 1),
            Err(Refusal::StageQuotaExceeded(2))
        );
        assert!(
            !w.fleet.broadcasts.contains_key("b"),
            "a refused start leaves no broadcast"
        );
    }
}
