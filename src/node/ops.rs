//! Operator and integrator operations that change the fleet: broadcasts, stages, API keys. None
//! drives IVS: a stage change is proposed as an intent, the leader's stage loop
//! (`crate::control::stages`) performs the IVS call and proposes the outcome, and the operation
//! answers once that outcome is applied here (see [`outcome`]).

mod outcome;

use super::{Node, NodeError, keys};
use crate::clock::now_ms;
use crate::fleet::admission::{
    FleetPolicy, InputError, PolicyPatch, validate_id, validate_name, validate_policy, validate_seat_cap,
};
use crate::fleet::placement::Placement;
use crate::fleet::{ApiKeyRecord, Broadcast, Fanout, Refusal, Role, Stage, StageRole};
use crate::ivs::token::random_id;
use crate::state::proposal;

use outcome::Want;

impl Node {
    /// Create a broadcast and its origin stage; answers once the stage exists in IVS.
    /// `max_seats_per_client` caps the seats one client network may hold in it (0: no cap;
    /// `None`: the policy's cap).
    pub async fn start_broadcast(
        &self,
        id: Option<&str>,
        name: &str,
        max_seats_per_client: Option<i64>,
        fanout: Fanout,
    ) -> Result<Broadcast, NodeError> {
        let id = match id {
            Some(id) => id.to_string(),
            None => format!("b-{}", random_id(10)),
        };
        validate_id("id", &id)?;
        validate_name(name)?;
        let max_seats_per_client = max_seats_per_client
            .map(|v| validate_seat_cap("maxSeatsPerClient", v))
            .transpose()?;
        let start = proposal::StartBroadcast {
            id: id.clone(),
            name: name.to_string(),
            now: now_ms(),
            max_seats_per_client,
            fanout,
        };
        let mut bus = self.store.subscribe();
        let origin = self.store.propose(start).await?;
        self.await_stage(&mut bus, &origin.id, Want::Created).await?;
        self.broadcast(&id)
            .ok_or_else(|| NodeError::internal("broadcast vanished"))
    }

    pub fn broadcast(&self, id: &str) -> Option<Broadcast> {
        self.store.view().fleet.broadcasts.get(id).cloned()
    }

    /// Every viewer leaves, every stage is deleted in IVS; answers when that is done, or with the
    /// broadcast still `ENDING` when IVS is failing (the stage loop keeps retrying).
    pub async fn end_broadcast(&self, id: &str) -> Result<Broadcast, NodeError> {
        validate_id("id", id)?;
        let end = proposal::EndBroadcast {
            id: id.to_string(),
            now: now_ms(),
        };
        let mut bus = self.store.subscribe();
        let (_, deleting) = self.store.propose(end).await?;
        for stage in deleting {
            if let Err(e) = self.await_stage(&mut bus, &stage.id, Want::Deleted).await {
                tracing::warn!(broadcast = id, stage = %stage.id, error = %e, "stage deletion not done; it is retried");
            }
        }
        self.broadcast(id)
            .ok_or_else(|| NodeError::internal("broadcast vanished"))
    }

    /// One more stage for a live broadcast (replica by default).
    pub async fn create_stage(&self, broadcast_id: &str, role: StageRole) -> Result<Stage, NodeError> {
        validate_id("broadcastId", broadcast_id)?;
        let add = proposal::AddStage {
            broadcast_id: broadcast_id.to_string(),
            role,
            now: now_ms(),
        };
        let mut bus = self.store.subscribe();
        let intent = self.store.propose(add).await?;
        self.await_stage(&mut bus, &intent.id, Want::Created)
            .await?
            .ok_or_else(|| NodeError::internal("created stage vanished"))
    }

    /// Delete a stage; refused while it seats viewers unless `force` (which ends their sessions).
    /// Returns how many sessions were ended.
    pub async fn delete_stage(&self, stage_id: &str, force: bool) -> Result<u32, NodeError> {
        // Checked against current state: in a cluster, a stage created through another node a
        // moment ago is known here first.
        self.store.catch_up().await?;
        if !self.store.view().fleet.stages.contains_key(stage_id) {
            return Err(Refusal::UnknownStage(stage_id.into()).into());
        }
        let delete = proposal::DeleteStage {
            stage_id: stage_id.to_string(),
            force,
        };
        let mut bus = self.store.subscribe();
        let (stage, evicted) = self.store.propose(delete).await?;
        self.await_stage(&mut bus, &stage.id, Want::Deleted).await?;
        Ok(evicted)
    }

    /// Stop placing viewers on a stage; it is deleted once its last viewer leaves (at once when
    /// empty). With `move_viewers`, its viewers are moved now to stages with room (each hears it
    /// on its `assignment` subscription). Origins of a live broadcast cannot be drained.
    pub async fn drain_stage(&self, stage_id: &str, move_viewers: bool) -> Result<(Stage, u32), NodeError> {
        self.store.catch_up().await?;
        if !self.store.view().fleet.stages.contains_key(stage_id) {
            return Err(Refusal::UnknownStage(stage_id.into()).into());
        }
        let stage = self
            .store
            .propose(proposal::DrainStage {
                stage_id: stage_id.to_string(),
            })
            .await?;
        let moved = if move_viewers && stage.viewers > 0 {
            let limit = stage.viewers;
            self.store
                .propose(proposal::MoveViewers {
                    stage_id: stage_id.to_string(),
                    limit,
                })
                .await?
        } else {
            0
        };
        let stage = self.store.view().fleet.stages.get(stage_id).cloned().unwrap_or(stage);
        Ok((stage, moved))
    }

    /// The broadcaster page reports that one of its host participants publishes (or stopped):
    /// with replication, the replicator starts replicating it at once; with client fan-out, a
    /// stage takes viewers once every host publishes there.
    pub async fn host_publishing(
        &self,
        broadcast_id: &str,
        participant_id: &str,
        publishing: bool,
    ) -> Result<Stage, NodeError> {
        validate_id("broadcastId", broadcast_id)?;
        validate_id("participantId", participant_id)?;
        let report = proposal::HostPublishing {
            broadcast_id: broadcast_id.to_string(),
            participant_id: participant_id.to_string(),
            publishing,
            now: now_ms(),
        };
        Ok(self.store.propose(report).await?)
    }

    /// A new API key; the returned text is the only time the secret is seen.
    pub async fn create_api_key(&self, name: &str, role: Role) -> Result<(ApiKeyRecord, String), NodeError> {
        validate_name(name)?;
        let (record, key) = keys::generate(name, role, now_ms());
        let record = self.store.propose(proposal::CreateApiKey(record)).await?;
        Ok((record, key))
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKeyRecord, NodeError> {
        let revoke = proposal::RevokeApiKey { id: id.to_string() };
        Ok(self.store.propose(revoke).await?)
    }
}

/// `setPolicy`'s arguments as the client sent them (GraphQL integers are checked here).
#[derive(Clone, Debug, Default)]
pub struct PolicyChange {
    pub placement: Option<Placement>,
    pub seats_per_stage: Option<i64>,
    pub max_stages: Option<i64>,
    pub session_lease_secs: Option<i64>,
    pub max_seats_per_client: Option<i64>,
    pub region_subscription_quota: Option<i64>,
}

impl Node {
    /// Change the fleet policy for the whole cluster; it survives restarts and wins over the
    /// config from then on. Capacity changes apply to stages created afterwards.
    pub async fn set_policy(&self, change: PolicyChange) -> Result<FleetPolicy, NodeError> {
        let to_u32 = |field, v: i64| {
            u32::try_from(v).map_err(|_| InputError::OutOfRange {
                field,
                value: v,
                min: 0,
                max: u32::MAX.into(),
            })
        };
        let patch = PolicyPatch {
            placement: change.placement,
            seats_per_stage: change.seats_per_stage.map(|v| to_u32("seatsPerStage", v)).transpose()?,
            max_stages: change.max_stages.map(|v| to_u32("maxStages", v)).transpose()?,
            // Beyond a day is refused below; saturating keeps a huge value huge.
            session_lease_ms: change.session_lease_secs.map(|v| v.saturating_mul(1000)),
            max_seats_per_client: change
                .max_seats_per_client
                .map(|v| to_u32("maxSeatsPerClient", v))
                .transpose()?,
            region_subscription_quota: change
                .region_subscription_quota
                .map(|v| {
                    u64::try_from(v).map_err(|_| InputError::OutOfRange {
                        field: "regionSubscriptionQuota",
                        value: v,
                        min: 0,
                        max: crate::fleet::admission::MAX_REGION_SUBSCRIPTIONS,
                    })
                })
                .transpose()?,
        };
        // Validated as applied to the current policy (in a cluster, another node may have changed it).
        self.store.catch_up().await?;
        validate_policy(&patch.apply(&self.store.view().policy), self.cfg.min_lease_ms())?;
        Ok(self.store.propose(proposal::PatchPolicy(patch)).await?)
    }
}
