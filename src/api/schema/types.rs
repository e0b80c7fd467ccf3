//! GraphQL views of the domain. Wrappers hold a copy of the record they show; live numbers (such
//! as a broadcast's viewers) are read from the applied state when asked.

use std::sync::{Arc, Mutex};

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use crate::fleet;
use crate::node::Node;
use crate::node::join;
use crate::state::View;

pub fn node<'a>(ctx: &Context<'a>) -> &'a Arc<Node> {
    ctx.data_unchecked::<Arc<Node>>()
}

/// The applied state one request reads: taken at its first read and kept, so every field of a
/// query sees the same applied index. A mutation drops it once it has written, so what the
/// mutation returns (and any field after it) is read from a state that includes its change.
#[derive(Default)]
pub struct RequestView(Mutex<Option<View>>);

pub fn view(ctx: &Context<'_>) -> View {
    match ctx.data_opt::<RequestView>() {
        Some(cell) => cell
            .0
            .lock()
            .expect("request view lock")
            .get_or_insert_with(|| node(ctx).store.view())
            .clone(),
        None => node(ctx).store.view(),
    }
}

/// After a mutation's write: the next read takes a new view.
pub fn wrote(ctx: &Context<'_>) {
    if let Some(cell) = ctx.data_opt::<RequestView>() {
        *cell.0.lock().expect("request view lock") = None;
    }
}

/// Unix milliseconds as RFC 3339 UTC (`2026-11-25T12:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "fleet::BroadcastState")]
pub enum BroadcastState {
    Starting,
    Live,
    Ending,
    Ended,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "fleet::StageRole")]
pub enum StageRole {
    Origin,
    Replica,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "fleet::StageState")]
pub enum StageState {
    Creating,
    Active,
    Deleting,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "fleet::Role")]
pub enum Role {
    Admin,
    Host,
    Viewer,
}

/// One scaler decision: what it saw and what it added.
#[derive(SimpleObject)]
pub struct ScalerDecision {
    pub broadcast_id: ID,
    pub at: String,
    /// Admitted joins per second, as the scaler measured them.
    pub join_rate: f64,
    /// How long a new stage takes to become ready, as the scaler learned it (ms).
    pub ready_time_ms: f64,
    /// Free seats on ready stages, and seats on stages being created.
    pub free_ready_seats: u64,
    pub pending_seats: u64,
    /// The seats it keeps free: max(headroom_floor, join rate × (ready time + interval) × safety).
    pub headroom: u64,
    /// Stages it added, by role (`ORIGIN` when the origins feed as many replicas as IVS allows).
    pub added: Vec<StageRole>,
    /// What held it back, if anything: `max_stages`, `region_stage_quota`, `region_subscription_quota`.
    pub limited_by: Option<String>,
    /// Draining stages it took back because the headroom fell short.
    pub undrained: Vec<ID>,
    /// The quiet replica it drained (fewer than `drain_below` viewers for `cool_down_secs`).
    pub drained: Option<ID>,
}

impl ScalerDecision {
    pub fn new(broadcast_id: String, d: fleet::scaling::Decision) -> Self {
        ScalerDecision {
            broadcast_id: ID(broadcast_id),
            at: rfc3339(d.at_ms),
            join_rate: d.signals.join_rate,
            ready_time_ms: d.signals.ready_time_ms,
            free_ready_seats: d.plan.free_ready,
            pending_seats: d.plan.pending,
            headroom: d.plan.headroom,
            added: d.plan.add.iter().map(|a| a.role.into()).collect(),
            limited_by: d.plan.limited_by.map(|l| l.setting().to_string()),
            undrained: d.plan.undrain.iter().cloned().map(ID).collect(),
            drained: d.plan.drain.as_ref().map(|d| ID(d.stage_id.clone())),
        }
    }
}

/// Where new viewers are seated.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "fleet::placement::Placement")]
pub enum Placement {
    /// The fullest stage that still has room: fewest stages in use.
    Pack,
    /// The least-loaded stage.
    Spread,
}

/// The fleet policy, replicated: every node decides with these numbers. The config seeds it when
/// the cluster first forms; `setPolicy` changes it.
#[derive(SimpleObject)]
pub struct Policy {
    pub placement: Placement,
    /// Seats of a stage created from now on (stages keep the capacity they were created with).
    pub seats_per_stage: u32,
    /// Most stages the fleet manages at once.
    pub max_stages: u32,
    /// A viewer session not renewed for this long ends and frees its seat.
    pub session_lease_secs: i64,
    /// Most seats one client network may hold in a broadcast that sets no cap of its own; 0 = no cap.
    pub max_seats_per_client: u32,
    /// Publisher-to-viewer connections the IVS region allows at once (a viewer uses one per host
    /// stream on its stage); joins past it get `REGION_FULL`. 0 = no limit.
    pub region_subscription_quota: u64,
}

impl From<fleet::admission::FleetPolicy> for Policy {
    fn from(p: fleet::admission::FleetPolicy) -> Self {
        Policy {
            placement: p.placement.into(),
            seats_per_stage: p.seats_per_stage,
            max_stages: p.max_stages,
            session_lease_secs: p.session_lease_ms / 1000,
            max_seats_per_client: p.max_seats_per_client,
            region_subscription_quota: p.region_subscription_quota,
        }
    }
}

#[derive(SimpleObject, Clone)]
pub struct Attribute {
    pub key: String,
    pub value: String,
}

#[derive(InputObject, Clone)]
pub struct AttributeInput {
    pub key: String,
    pub value: String,
}

pub fn attribute_pairs(input: Option<Vec<AttributeInput>>) -> Vec<(String, String)> {
    input
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.key, a.value))
        .collect()
}

fn attributes(map: &std::collections::BTreeMap<String, String>) -> Vec<Attribute> {
    map.iter()
        .map(|(k, v)| Attribute {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

pub struct Broadcast(pub fleet::Broadcast);

#[Object]
impl Broadcast {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn state(&self) -> BroadcastState {
        self.0.state.into()
    }
    async fn created_at(&self) -> String {
        rfc3339(self.0.created_at)
    }
    async fn ended_at(&self) -> Option<String> {
        self.0.ended_at.map(rfc3339)
    }
    /// Viewers seated right now, across all stages.
    async fn viewers(&self, ctx: &Context<'_>) -> u64 {
        fleet::stats::of(&view(ctx).fleet, Some(&self.0.id)).viewers
    }
    /// Seats across all active stages.
    async fn capacity(&self, ctx: &Context<'_>) -> u64 {
        fleet::stats::of(&view(ctx).fleet, Some(&self.0.id)).capacity
    }
    /// Viewers admitted over the broadcast's life (a user joining again is not counted twice).
    async fn admitted_total(&self) -> u64 {
        self.0.admitted_total
    }
    /// Most seats one client network may hold in this broadcast (0 = no cap); null = the node's
    /// `max_seats_per_client`.
    async fn max_seats_per_client(&self) -> Option<u32> {
        self.0.max_seats_per_client
    }
    async fn hosts(&self) -> Vec<String> {
        self.0.hosts.keys().cloned().collect()
    }
    /// How the hosts' media reaches every stage.
    async fn fanout(&self) -> Fanout {
        self.0.fanout.into()
    }
    #[graphql(complexity = "5 * child_complexity")]
    async fn stages(&self, ctx: &Context<'_>) -> Vec<Stage> {
        let core = view(ctx);
        let mut stages: Vec<_> = core.fleet.stages_of(&self.0.id).cloned().map(Stage).collect();
        stages.sort_by_key(|s| s.0.slot);
        stages
    }
}

pub struct Stage(pub fleet::Stage);

#[Object]
impl Stage {
    /// `<broadcast id>:<slot>`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn broadcast_id(&self) -> ID {
        ID(self.0.broadcast_id.clone())
    }
    async fn slot(&self) -> u32 {
        self.0.slot
    }
    async fn role(&self) -> StageRole {
        self.0.role.into()
    }
    async fn state(&self) -> StageState {
        self.0.state.into()
    }
    async fn capacity(&self) -> u32 {
        self.0.capacity
    }
    /// Viewers seated on this stage now.
    async fn viewers(&self, ctx: &Context<'_>) -> u32 {
        stage_viewers(&view(ctx), &self.0)
    }
    async fn arn(&self) -> Option<&str> {
        self.0.arn.as_deref()
    }
    /// The IVS stage id (the token's `topic`).
    async fn ivs_stage_id(&self) -> Option<&str> {
        join::ivs_stage_id(&self.0)
    }
    async fn events_url(&self) -> Option<&str> {
        stage_events_url(&self.0)
    }
    async fn whip_url(&self) -> Option<&str> {
        stage_whip_url(&self.0)
    }
    async fn created_at(&self) -> String {
        rfc3339(self.0.created_at)
    }
    /// Where the stage is in its life, as one value: `CREATING`, `WAITING` (created, the hosts'
    /// media not flowing yet), `READY` (takes viewers), `DRAINING`, `DELETING`.
    async fn status(&self, ctx: &Context<'_>) -> StageStatus {
        let s = current(ctx, &self.0);
        match s.state {
            fleet::StageState::Creating => StageStatus::Creating,
            fleet::StageState::Deleting => StageStatus::Deleting,
            fleet::StageState::Active if s.draining => StageStatus::Draining,
            fleet::StageState::Active if s.is_ready() => StageStatus::Ready,
            fleet::StageState::Active => StageStatus::Waiting,
        }
    }
    /// READY: created, not draining, and every publishing host's media reaches it; only READY
    /// stages take new viewers.
    async fn ready(&self, ctx: &Context<'_>) -> bool {
        current(ctx, &self.0).is_ready()
    }
    /// Takes no new viewers; deleted once empty.
    async fn draining(&self, ctx: &Context<'_>) -> bool {
        current(ctx, &self.0).draining
    }
    /// For a replica: the slot of the origin stage whose hosts are replicated into it.
    async fn fed_by(&self) -> Option<u32> {
        self.0.media.fed_by
    }
    /// Host participant ids seen publishing on this stage (origins; every stage with client fan-out).
    async fn publishers(&self, ctx: &Context<'_>) -> Vec<String> {
        current(ctx, &self.0).media.publishers.iter().cloned().collect()
    }
    /// The leader's last comparison of this stage with IVS (ListParticipants sampled by the drift
    /// reconciler); null before the first sample, and on nodes that do not lead.
    async fn drift(&self, ctx: &Context<'_>) -> Option<StageDrift> {
        let reports = node(ctx).drift.lock().expect("drift lock");
        reports.get(&self.0.id).map(|d| StageDrift {
            never_connected: d.never_connected.len() as u32,
            unknown_participants: d.unknown,
            sampled_at: rfc3339(d.sampled_at),
        })
    }
    /// For a replica: each publishing host's replication into it.
    async fn replication(&self, ctx: &Context<'_>) -> Vec<HostReplication> {
        current(ctx, &self.0)
            .media
            .replication
            .iter()
            .map(|(pid, r)| HostReplication {
                participant_id: pid.clone(),
                state: r.state.into(),
                attempts: r.attempts,
                last_error: r.error.clone(),
                since: rfc3339(r.since),
            })
            .collect()
    }
}

/// The stage as the request's view holds it (the record may be a copy taken earlier).
fn current<'a>(ctx: &Context<'a>, stage: &'a fleet::Stage) -> std::borrow::Cow<'a, fleet::Stage> {
    match view(ctx).fleet.stages.get(&stage.id) {
        Some(s) => std::borrow::Cow::Owned(s.clone()),
        None => std::borrow::Cow::Borrowed(stage),
    }
}

/// A stage's place in its life.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum StageStatus {
    /// CreateStage not answered yet.
    Creating,
    /// Created; a live host's media does not reach it yet, so it takes no viewers.
    Waiting,
    /// Takes new viewers.
    Ready,
    /// Takes no new viewers; deleted once empty.
    Draining,
    /// DeleteStage under way.
    Deleting,
}

/// How the hosts' media gets into every stage of a broadcast.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "fleet::Fanout")]
pub enum Fanout {
    /// Hosts publish to the origin stages; IVS participant replication copies them into replicas
    /// (5 replicas per origin; more stages add origins).
    Replication,
    /// Hosts publish to every stage themselves (`hostTokens` returns a token per stage); a stage
    /// takes viewers once every host publishes there.
    Client,
}

/// A stage's ledger compared with IVS.
#[derive(SimpleObject)]
pub struct StageDrift {
    /// Seats whose viewer has not joined IVS within `connect_grace_secs`.
    pub never_connected: u32,
    /// Viewers connected in IVS that hold no seat on this stage.
    pub unknown_participants: u32,
    pub sampled_at: String,
}

/// One host replicated into one replica stage.
#[derive(SimpleObject)]
pub struct HostReplication {
    /// The host's participant id on the origin.
    pub participant_id: String,
    pub state: ReplicationState,
    /// Attempts since it was last active.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When it was last reported on.
    pub since: String,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "fleet::ReplicationState")]
pub enum ReplicationState {
    /// Started or about to be; the host's media is not seen in the stage yet.
    Pending,
    /// The host's media flows into the stage.
    Active,
    /// The last attempt failed; retried with backoff.
    Failed,
}

/// A stage's viewers in `view` (the record may be a copy taken earlier). Shared with the
/// compiled join (`api::compiled`), as are the two below.
pub fn stage_viewers(view: &View, stage: &fleet::Stage) -> u32 {
    view.fleet.stages.get(&stage.id).map_or(stage.viewers, |s| s.viewers)
}

pub fn stage_events_url(stage: &fleet::Stage) -> Option<&str> {
    stage.endpoints.as_ref().map(|e| e.events.as_str())
}

pub fn stage_whip_url(stage: &fleet::Stage) -> Option<&str> {
    stage.endpoints.as_ref().map(|e| e.whip.as_str())
}

pub struct Session(pub fleet::Session);

#[Object]
impl Session {
    /// Also the credential for `leave` and `heartbeat`: keep it private to the viewer.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn broadcast_id(&self) -> ID {
        ID(self.0.broadcast_id.clone())
    }
    async fn user_id(&self) -> &str {
        &self.0.user_id
    }
    async fn stage_id(&self) -> ID {
        ID(self.0.stage_id.clone())
    }
    /// The IVS participant id (the token's `jti`).
    async fn participant_id(&self) -> &str {
        &self.0.participant_id
    }
    async fn attributes(&self) -> Vec<Attribute> {
        attributes(&self.0.attributes)
    }
    async fn joined_at(&self) -> String {
        rfc3339(self.0.joined_at)
    }
    async fn last_seen(&self) -> String {
        rfc3339(self.0.last_seen)
    }
    /// The seat is freed if the session is not renewed (heartbeat) before this.
    async fn lease_until(&self) -> String {
        rfc3339(self.0.lease_until)
    }
}

/// A viewer's seat and the token to take it.
#[derive(SimpleObject)]
pub struct Join {
    pub session: Session,
    pub stage: Stage,
    /// Subscribe-only IVS participant token (ES384, self-signed) for `stage`.
    pub token: String,
    pub token_expires_at: String,
    /// True when this user already had a seat and got the same one back.
    pub rejoined: bool,
}

#[derive(SimpleObject)]
pub struct HostToken {
    pub stage: Stage,
    pub participant_id: String,
    /// Publish+subscribe IVS participant token for `stage`.
    pub token: String,
    pub token_expires_at: String,
}

#[derive(SimpleObject)]
pub struct Stats {
    pub broadcasts_live: u64,
    pub stages: u64,
    pub stages_active: u64,
    pub viewers: u64,
    pub capacity: u64,
    pub admitted_total: u64,
}

#[derive(SimpleObject, Clone, PartialEq)]
pub struct NodeStatus {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub is_leader: bool,
    pub term: u64,
    pub last_applied_index: Option<u64>,
    /// Which IVS this node drives.
    pub ivs_backend: String,
    /// Subscriptions open on this node.
    pub subscribers: u64,
    /// The cluster's members as this node knows them (one on a single node).
    pub members: Vec<ClusterMember>,
}

/// A member of the Raft cluster.
#[derive(SimpleObject, Clone, PartialEq)]
pub struct ClusterMember {
    pub node_id: u64,
    /// Where the other nodes reach its Raft RPC.
    pub raft_addr: String,
    /// Votes (a learner catching up does not).
    pub voter: bool,
    /// Entries it is behind the leader's log; known only when this node leads.
    pub lag: Option<u64>,
}

#[derive(SimpleObject)]
pub struct ApiKey {
    pub id: ID,
    pub name: String,
    pub role: Role,
    pub created_at: String,
}

impl From<fleet::ApiKeyRecord> for ApiKey {
    fn from(r: fleet::ApiKeyRecord) -> Self {
        Self {
            id: ID(r.id),
            name: r.name,
            role: r.role.into(),
            created_at: rfc3339(r.created_at),
        }
    }
}

#[derive(SimpleObject)]
pub struct NewApiKey {
    pub api_key: ApiKey,
    /// The full key. Shown only now: store it safely.
    pub key: String,
}

#[derive(SimpleObject)]
pub struct DeletedStage {
    pub id: ID,
    /// Viewer sessions ended because `force` was set.
    pub sessions_ended: u32,
}

#[derive(SimpleObject)]
pub struct DrainedStage {
    /// The stage after: draining, or already being deleted if it was (or became) empty.
    pub stage: Stage,
    /// Viewers moved to other stages (`moveViewers`).
    pub viewers_moved: u32,
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_764_072_000_123), "2025-11-25T12:00:00.123Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}

/// What the web pages need to know about this node.
#[derive(SimpleObject)]
pub struct Site {
    /// stagefleet's version.
    pub version: String,
    /// Where pages load the IVS Web Broadcast SDK from (`sdk_url`, or `/sdk/…` with `sdk_dir`).
    pub sdk_url: String,
    /// Which IVS this node drives, in words.
    pub ivs: String,
    /// True when that is the built-in emulator (no AWS account; media stays on this machine).
    pub emulator: bool,
}

/// Who is asking.
#[derive(SimpleObject)]
pub struct Me {
    /// The role of the API key presented; null without a key. (A key that is not valid fails the
    /// whole request with `UNAUTHENTICATED`.)
    pub role: Option<Role>,
    /// The key's id (see `apiKeys`); null without a key.
    pub key_id: Option<ID>,
}
