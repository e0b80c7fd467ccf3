//! The GraphQL schema: queries read the applied state of this node; mutations go through the
//! node's operations (and so through Raft). `schema.graphql` at the repository root is exactly
//! `build_schema(..).sdl()`; a test fails when they differ.

pub mod live;
pub mod types;

use std::sync::Arc;

use async_graphql::{Context, ID, Object, Schema, SchemaBuilder, ValidationMode};

use self::types::*;
use super::auth::{JoinLimits, Principal};
use super::error::{ErrorCode, Gql};
use crate::fleet;
use crate::node::Node;

pub use live::Subscription;

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// The schema with nothing attached, for printing the SDL.
pub fn sdl_schema(max_depth: usize, max_complexity: usize) -> AppSchema {
    builder(max_depth, max_complexity).finish()
}

/// The schema the node serves, in one of two validation modes. `Strict` runs every rule; `Fast`
/// only computes depth and complexity and is used for documents that already passed `Strict`
/// (see `parse_cache`). Both share `node` and the one set of join limits.
pub fn build_schema(
    node: Arc<Node>,
    limits: Arc<JoinLimits>,
    max_depth: usize,
    max_complexity: usize,
    mode: ValidationMode,
) -> AppSchema {
    builder(max_depth, max_complexity)
        .validation_mode(mode)
        .data(node)
        .data(limits)
        .finish()
}

fn builder(max_depth: usize, max_complexity: usize) -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query, Mutation, Subscription)
        .limit_depth(max_depth)
        .limit_complexity(max_complexity)
        .register_output_type::<ErrorCode>()
}

pub(crate) fn principal<'a>(ctx: &Context<'a>) -> &'a Principal {
    ctx.data_unchecked::<Principal>()
}

pub struct Query;

#[Object]
impl Query {
    /// Broadcasts, newest first; optionally only those in one state.
    #[graphql(complexity = "10 * child_complexity")]
    async fn broadcasts(&self, ctx: &Context<'_>, state: Option<BroadcastState>) -> Vec<Broadcast> {
        let core = view(ctx);
        let want: Option<fleet::BroadcastState> = state.map(Into::into);
        let mut out: Vec<_> = core
            .fleet
            .broadcasts
            .values()
            .filter(|b| want.is_none_or(|w| b.state == w))
            .cloned()
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        out.into_iter().map(Broadcast).collect()
    }

    async fn broadcast(&self, ctx: &Context<'_>, id: ID) -> Option<Broadcast> {
        view(ctx).fleet.broadcasts.get(id.as_str()).cloned().map(Broadcast)
    }

    /// Stages with live viewer counts, of one broadcast or of the whole fleet.
    #[graphql(complexity = "10 * child_complexity")]
    async fn stages(&self, ctx: &Context<'_>, broadcast_id: Option<ID>) -> Vec<Stage> {
        let core = view(ctx);
        let mut out: Vec<_> = core
            .fleet
            .stages
            .values()
            .filter(|s| broadcast_id.as_ref().is_none_or(|b| s.broadcast_id == b.as_str()))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.broadcast_id.cmp(&b.broadcast_id).then(a.slot.cmp(&b.slot)));
        out.into_iter().map(Stage).collect()
    }

    async fn stage(&self, ctx: &Context<'_>, id: ID) -> Option<Stage> {
        view(ctx).fleet.stages.get(id.as_str()).cloned().map(Stage)
    }

    /// A viewer session (the session id is its credential).
    /// A session as of now: in a cluster, every write committed before the question is
    /// applied on the node answering first (a seat taken, or ended, through another node shows).
    async fn session(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Session>> {
        let n = node(ctx);
        n.store
            .catch_up()
            .await
            .map_err(|e| ErrorCode::Unavailable.error(e.to_string()))?;
        Ok(n.store.view().session(&id).map(Session))
    }

    /// Fleet totals, or one broadcast's.
    async fn stats(&self, ctx: &Context<'_>, broadcast_id: Option<ID>) -> async_graphql::Result<Stats> {
        let core = view(ctx);
        if let Some(id) = &broadcast_id
            && !core.fleet.broadcasts.contains_key(id.as_str())
        {
            return Err(ErrorCode::BroadcastNotFound.error(format!("no broadcast {}", id.as_str())));
        }
        let s = fleet::stats::of(&core.fleet, broadcast_id.as_ref().map(|id| id.as_str()));
        Ok(Stats {
            broadcasts_live: s.broadcasts_live,
            stages: s.stages(),
            stages_active: s.stages_active,
            viewers: s.viewers,
            capacity: s.capacity,
            admitted_total: s.admitted_total,
        })
    }

    /// The fleet policy in force (`setPolicy` changes it).
    async fn fleet_policy(&self, ctx: &Context<'_>) -> Policy {
        view(ctx).policy.clone().into()
    }

    /// This node and what it knows of the Raft cluster.
    async fn node(&self, ctx: &Context<'_>) -> NodeStatus {
        live::node_status(node(ctx))
    }

    /// The scaler's last decision per live broadcast, with what it was made from: why the fleet
    /// has the stages it has. Empty on a node that does not lead, or with `autoscale` off. Host or admin.
    async fn scaler(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ScalerDecision>> {
        principal(ctx).require(fleet::Role::Host)?;
        let last = node(ctx).scaler_decisions.lock().expect("decisions lock").clone();
        Ok(last.into_iter().map(|(id, d)| ScalerDecision::new(id, d)).collect())
    }

    /// What the web pages need: the SDK's URL and which IVS this node drives. Anyone.
    async fn site(&self, ctx: &Context<'_>) -> Site {
        let n = node(ctx);
        Site {
            version: env!("CARGO_PKG_VERSION").to_string(),
            sdk_url: n.cfg.sdk_url_effective(),
            ivs: n.backend_label.clone(),
            emulator: !n.cfg.use_aws(),
        }
    }

    /// The role of the key this request presents (null without one): pages check a key with it.
    async fn me(&self, ctx: &Context<'_>) -> Me {
        let p = principal(ctx);
        Me {
            role: p.role.map(Into::into),
            key_id: p.key_id.clone().map(ID),
        }
    }

    /// API keys (admin).
    async fn api_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiKey>> {
        principal(ctx).require(fleet::Role::Admin)?;
        Ok(view(ctx).fleet.api_keys.values().cloned().map(ApiKey::from).collect())
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Start a broadcast: creates its origin stage in IVS and answers once it is live. Admin.
    async fn start_broadcast(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Defaults to a generated id; A-Z a-z 0-9 _ - up to 64")] id: Option<ID>,
        #[graphql(default)] name: String,
        #[graphql(
            desc = "Most seats one client network (an IPv4 /24 or IPv6 /64 by default) may hold in this broadcast, 0 to 1,000,000; 0 = no cap. Absent: the node's `max_seats_per_client`. Joins with a host or admin key are not counted."
        )]
        max_seats_per_client: Option<i64>,
        #[graphql(
            default_with = "Fanout::Replication",
            desc = "How hosts' media reaches every stage: REPLICATION (IVS participant replication from origin stages) or CLIENT (hosts publish to every stage)"
        )]
        fanout: Fanout,
    ) -> async_graphql::Result<Broadcast> {
        principal(ctx).require(fleet::Role::Admin)?;
        let b = node(ctx)
            .start_broadcast(
                id.as_ref().map(|i| i.as_str()),
                &name,
                max_seats_per_client,
                fanout.into(),
            )
            .await
            .gql()?;
        wrote(ctx);
        Ok(Broadcast(b))
    }

    /// End a broadcast: every viewer leaves and its stages are deleted in IVS. Admin.
    async fn end_broadcast(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Broadcast> {
        principal(ctx).require(fleet::Role::Admin)?;
        let b = node(ctx).end_broadcast(&id).await.gql()?;
        wrote(ctx);
        Ok(Broadcast(b))
    }

    /// Join a live broadcast as a viewer: a seat on a stage with room and a subscribe-only token.
    /// Joining again with the same user id gives the same seat back.
    async fn join_broadcast(
        &self,
        ctx: &Context<'_>,
        broadcast_id: ID,
        user_id: String,
        attributes: Option<Vec<AttributeInput>>,
    ) -> async_graphql::Result<Join> {
        let who = principal(ctx);
        ctx.data_unchecked::<Arc<JoinLimits>>().check(who)?;
        let j = node(ctx)
            .join(&broadcast_id, &user_id, &attribute_pairs(attributes), who.seat_client())
            .await
            .gql()?;
        wrote(ctx);
        Ok(Join {
            session: Session(j.session),
            stage: Stage(j.stage),
            token: j.token,
            token_expires_at: types::rfc3339(j.expires_at * 1000),
            rejoined: j.rejoined,
        })
    }

    /// Leave now and free the seat.
    async fn leave(&self, ctx: &Context<'_>, session_id: ID) -> async_graphql::Result<Session> {
        let s = node(ctx).leave(&session_id).await.gql()?;
        wrote(ctx);
        Ok(Session(s))
    }

    /// Keep a session alive (extends its lease).
    async fn heartbeat(&self, ctx: &Context<'_>, session_id: ID) -> async_graphql::Result<Session> {
        Ok(Session(node(ctx).heartbeat(&session_id).await.gql()?))
    }

    /// Publish+subscribe tokens for a host, one per origin stage. Host or admin.
    async fn host_tokens(
        &self,
        ctx: &Context<'_>,
        broadcast_id: ID,
        user_id: String,
        attributes: Option<Vec<AttributeInput>>,
    ) -> async_graphql::Result<Vec<HostToken>> {
        principal(ctx).require(fleet::Role::Host)?;
        let tokens = node(ctx)
            .host_tokens(&broadcast_id, &user_id, &attribute_pairs(attributes))
            .await
            .gql()?;
        wrote(ctx);
        Ok(tokens
            .into_iter()
            .map(|t| HostToken {
                stage: Stage(t.stage),
                participant_id: t.participant_id,
                token: t.token,
                token_expires_at: types::rfc3339(t.expires_at * 1000),
            })
            .collect())
    }

    /// Add a stage to a live broadcast (created in IVS before this answers). Admin.
    async fn create_stage(
        &self,
        ctx: &Context<'_>,
        broadcast_id: ID,
        #[graphql(default_with = "StageRole::Replica")] role: StageRole,
    ) -> async_graphql::Result<Stage> {
        principal(ctx).require(fleet::Role::Admin)?;
        let stage = node(ctx).create_stage(&broadcast_id, role.into()).await.gql()?;
        wrote(ctx);
        Ok(Stage(stage))
    }

    /// Delete a stage in IVS. Refused while it seats viewers unless `force`, which ends their
    /// sessions. Admin.
    async fn delete_stage(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] force: bool,
    ) -> async_graphql::Result<DeletedStage> {
        principal(ctx).require(fleet::Role::Admin)?;
        let ended = node(ctx).delete_stage(&id, force).await.gql()?;
        wrote(ctx);
        Ok(DeletedStage {
            id,
            sessions_ended: ended,
        })
    }

    /// Stop placing viewers on a stage; it is deleted once its last viewer leaves (at once when
    /// empty). `moveViewers` moves its viewers now to stages with room: each open `assignment`
    /// subscription gets a `MOVED` message with a token for the new stage. Origins of a live
    /// broadcast cannot be drained. Admin.
    async fn drain_stage(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] move_viewers: bool,
    ) -> async_graphql::Result<DrainedStage> {
        principal(ctx).require(fleet::Role::Admin)?;
        let (stage, moved) = node(ctx).drain_stage(&id, move_viewers).await.gql()?;
        wrote(ctx);
        Ok(DrainedStage {
            stage: Stage(stage),
            viewers_moved: moved,
        })
    }

    /// The broadcaster page reports that a host participant (from `hostTokens`) publishes, or
    /// stopped: with replication its media is replicated into the replicas at once; with client
    /// fan-out a stage takes viewers once every host publishes there. Host or admin.
    async fn host_publishing(
        &self,
        ctx: &Context<'_>,
        broadcast_id: ID,
        participant_id: String,
        #[graphql(default = true)] publishing: bool,
    ) -> async_graphql::Result<Stage> {
        principal(ctx).require(fleet::Role::Host)?;
        let stage = node(ctx)
            .host_publishing(&broadcast_id, &participant_id, publishing)
            .await
            .gql()?;
        wrote(ctx);
        Ok(Stage(stage))
    }

    /// Change the fleet policy for the whole cluster; only the arguments given change. It is
    /// replicated, survives restarts and wins over the config from then on. Capacity changes
    /// apply to stages created afterwards. Admin.
    async fn set_policy(
        &self,
        ctx: &Context<'_>,
        placement: Option<Placement>,
        #[graphql(desc = "1 to 1,000,000 (IVS seats about 10,000 viewers per stage)")] seats_per_stage: Option<i64>,
        #[graphql(desc = "1 to 100,000")] max_stages: Option<i64>,
        #[graphql(desc = "Twice the node's presence_interval_secs up to 86,400")] session_lease_secs: Option<i64>,
        #[graphql(desc = "0 (no cap) to 1,000,000")] max_seats_per_client: Option<i64>,
        #[graphql(desc = "0 (no limit) to 100,000,000: your IVS account's concurrent-subscriptions quota")]
        region_subscription_quota: Option<i64>,
    ) -> async_graphql::Result<Policy> {
        principal(ctx).require(fleet::Role::Admin)?;
        let change = crate::node::ops::PolicyChange {
            placement: placement.map(Into::into),
            seats_per_stage,
            max_stages,
            session_lease_secs,
            max_seats_per_client,
            region_subscription_quota,
        };
        let policy = node(ctx).set_policy(change).await.gql()?;
        wrote(ctx);
        Ok(policy.into())
    }

    /// Create an API key. The key text is returned once. Admin.
    async fn create_api_key(&self, ctx: &Context<'_>, name: String, role: Role) -> async_graphql::Result<NewApiKey> {
        principal(ctx).require(fleet::Role::Admin)?;
        let (record, key) = node(ctx).create_api_key(&name, role.into()).await.gql()?;
        wrote(ctx);
        Ok(NewApiKey {
            api_key: record.into(),
            key,
        })
    }

    /// Revoke an API key at once. Admin.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ApiKey> {
        principal(ctx).require(fleet::Role::Admin)?;
        let key = node(ctx).revoke_api_key(&id).await.gql()?;
        wrote(ctx);
        Ok(key.into())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_graphql_is_what_the_server_serves() {
        let d = crate::config::Config::default();
        let served = super::sdl_schema(d.graphql_max_depth, d.graphql_max_complexity).sdl();
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap_or_default();
        assert!(
            committed == served,
            "schema.graphql is stale: run `cargo run -- sdl > schema.graphql`"
        );
    }
}
