//! The public GraphQL API over HTTP, as any client sees it: POST `/graphql` with
//! `{query, variables}`, optional `Authorization: Bearer`, errors by `extensions.code`.
//! GraphQL requests go over [`ConnPool`] (bare keep-alive HTTP/1.1 connections, as many as the
//! concurrency), each to the next target URL in turn, and answers are decoded straight into typed
//! structs; the `reqwest` client is for everything else (readiness, the emulator).
//!
//! Knows the operations the scenarios use and nothing of the server's code.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::conn::ConnPool;
use crate::error::ApiError;
use crate::target::Targets;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub id: String,
    pub user_id: String,
    pub stage_id: String,
    pub participant_id: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StageInfo {
    pub id: String,
    pub arn: Option<String>,
    pub ivs_stage_id: Option<String>,
    pub events_url: Option<String>,
    pub whip_url: Option<String>,
    pub capacity: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    pub session: SessionInfo,
    pub stage: StageInfo,
    pub token: String,
    pub rejoined: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct StageCount {
    pub id: String,
    pub viewers: u32,
    pub capacity: u32,
    pub arn: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastCounts {
    pub viewers: u64,
    pub admitted_total: u64,
}

/// One of a host's publish tokens (`hostTokens`): one per origin stage.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostToken {
    pub participant_id: String,
    pub token: String,
}

/// A stage as the autoscaler leaves it: whether it takes viewers, and for a replica whether each
/// publishing host's media reaches it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct FleetStage {
    pub id: String,
    /// `ORIGIN` or `REPLICA`.
    pub role: String,
    pub ready: bool,
    pub viewers: u32,
    pub capacity: u32,
    pub replication: Vec<Replication>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Replication {
    /// `PENDING`, `ACTIVE` or `FAILED`.
    pub state: String,
}

const SESSION_FIELDS: &str = "id userId stageId participantId";
const JOIN: &str = "mutation($b: ID!, $u: String!) { joinBroadcast(broadcastId: $b, userId: $u) { \
    session { id userId stageId participantId } \
    stage { id arn ivsStageId eventsUrl whipUrl capacity } token tokenExpiresAt rejoined } }";
/// Sessions looked up per request: aliases keep the query under the server's complexity limit.
pub const SESSIONS_PER_QUERY: usize = 40;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub targets: Arc<Targets>,
    /// One per target, in the same order.
    pools: Arc<Vec<ConnPool>>,
    admin_key: Option<String>,
    viewer_key: Option<String>,
}

impl Api {
    pub fn new(
        targets: Arc<Targets>,
        pool: usize,
        admin_key: Option<String>,
        viewer_key: Option<String>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()?;
        let pools = targets
            .all()
            .iter()
            .map(|url| ConnPool::new(url, pool))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            http,
            pools: Arc::new(pools),
            targets,
            admin_key,
            viewer_key,
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn admin_key(&self) -> Option<&str> {
        self.admin_key.as_deref()
    }

    pub fn viewer_key(&self) -> Option<&str> {
        self.viewer_key.as_deref()
    }

    pub fn set_admin_key(&mut self, key: String) {
        self.admin_key = Some(key);
    }

    /// One GraphQL request, decoded as `{data: T, errors}`: the first error, or `data`.
    async fn request<T: DeserializeOwned>(&self, key: Option<&str>, query: &str, vars: Value) -> Result<T, ApiError> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            query: &'a str,
            variables: Value,
        }
        #[derive(Deserialize)]
        struct Envelope<T> {
            data: Option<T>,
            errors: Option<Vec<GqlError>>,
        }
        #[derive(Deserialize)]
        struct GqlError {
            #[serde(default)]
            message: String,
            extensions: Option<Extensions>,
        }
        #[derive(Deserialize)]
        struct Extensions {
            code: Option<String>,
        }
        let body = serde_json::to_vec(&Body { query, variables: vars }).expect("request JSON");
        let pool = &self.pools[self.targets.pick_index()];
        let (status, bytes) = pool.post_graphql(key, body).await?;
        let envelope: Envelope<T> = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Protocol(format!("HTTP {status}: not the answer asked for: {e}")))?;
        if let Some(err) = envelope.errors.and_then(|e| e.into_iter().next()) {
            return Err(ApiError::Graphql {
                code: err.extensions.and_then(|x| x.code).unwrap_or_else(|| "NO_CODE".into()),
                message: err.message,
            });
        }
        envelope
            .data
            .ok_or_else(|| ApiError::Protocol(format!("HTTP {status}: no data")))
    }

    /// One GraphQL request; returns `data` or the first error.
    pub async fn gql(&self, key: Option<&str>, query: &str, vars: Value) -> Result<Value, ApiError> {
        self.request(key, query, vars).await
    }

    async fn typed<T: DeserializeOwned>(
        &self,
        key: Option<&str>,
        query: &str,
        vars: Value,
        field: &str,
    ) -> Result<T, ApiError> {
        let mut data = self.gql(key, query, vars).await?;
        serde_json::from_value(data[field].take()).map_err(|e| ApiError::Protocol(format!("{field}: {e}")))
    }

    pub async fn join(&self, broadcast: &str, user: &str) -> Result<Join, ApiError> {
        #[derive(Deserialize)]
        struct Data {
            #[serde(rename = "joinBroadcast")]
            join: Join,
        }
        let vars = json!({ "b": broadcast, "u": user });
        let data: Data = self.request(self.viewer_key(), JOIN, vars).await?;
        Ok(data.join)
    }

    pub async fn leave(&self, session: &str) -> Result<SessionInfo, ApiError> {
        let q = format!("mutation($s: ID!) {{ leave(sessionId: $s) {{ {SESSION_FIELDS} }} }}");
        self.typed(self.viewer_key(), &q, json!({ "s": session }), "leave")
            .await
    }

    pub async fn start_broadcast(&self, id: &str, name: &str) -> Result<(), ApiError> {
        let q = "mutation($i: ID, $n: String!) { startBroadcast(id: $i, name: $n) { id state } }";
        let vars = json!({ "i": id, "n": name });
        self.gql(self.admin_key(), q, vars).await.map(drop)
    }

    /// Add a replica stage to a live broadcast (admin); answers once IVS created it.
    pub async fn create_stage(&self, broadcast: &str) -> Result<(), ApiError> {
        let q = "mutation($b: ID!) { createStage(broadcastId: $b) { id } }";
        self.gql(self.admin_key(), q, json!({ "b": broadcast })).await.map(drop)
    }

    pub async fn end_broadcast(&self, id: &str) -> Result<(), ApiError> {
        let q = "mutation($i: ID!) { endBroadcast(id: $i) { id state } }";
        self.gql(self.admin_key(), q, json!({ "i": id })).await.map(drop)
    }

    pub async fn stages(&self, broadcast: &str) -> Result<Vec<StageCount>, ApiError> {
        let q = "query($b: ID) { stages(broadcastId: $b) { id viewers capacity arn } }";
        self.typed(self.admin_key(), q, json!({ "b": broadcast }), "stages")
            .await
    }

    /// A host's publish+subscribe tokens, one per origin (admin).
    pub async fn host_tokens(&self, broadcast: &str, user: &str) -> Result<Vec<HostToken>, ApiError> {
        let q = "mutation($b: ID!, $u: String!) { hostTokens(broadcastId: $b, userId: $u) { participantId token } }";
        self.typed(self.admin_key(), q, json!({ "b": broadcast, "u": user }), "hostTokens")
            .await
    }

    /// Tell the node a host participant publishes, as the broadcaster page does (admin).
    pub async fn host_publishing(&self, broadcast: &str, participant: &str) -> Result<(), ApiError> {
        let q = "mutation($b: ID!, $p: String!) { hostPublishing(broadcastId: $b, participantId: $p) { id } }";
        self.gql(self.admin_key(), q, json!({ "b": broadcast, "p": participant }))
            .await
            .map(drop)
    }

    pub async fn fleet_stages(&self, broadcast: &str) -> Result<Vec<FleetStage>, ApiError> {
        let q = "query($b: ID) { stages(broadcastId: $b) { id role ready viewers capacity replication { state } } }";
        self.typed(self.admin_key(), q, json!({ "b": broadcast }), "stages")
            .await
    }

    /// `GET /metrics` of the first target as text, if it serves it.
    pub async fn metrics(&self) -> Option<String> {
        let url = format!("{}/metrics", self.targets.all()[0]);
        self.http.get(url).send().await.ok()?.text().await.ok()
    }

    pub async fn broadcast(&self, id: &str) -> Result<Option<BroadcastCounts>, ApiError> {
        let q = "query($i: ID!) { broadcast(id: $i) { viewers admittedTotal } }";
        self.typed(self.admin_key(), q, json!({ "i": id }), "broadcast").await
    }

    /// `session(id)` for up to [`SESSIONS_PER_QUERY`] ids in one request, in order.
    pub async fn sessions(&self, ids: &[String]) -> Result<Vec<Option<SessionInfo>>, ApiError> {
        let params: Vec<String> = (0..ids.len()).map(|i| format!("$i{i}: ID!")).collect();
        let fields: Vec<String> = (0..ids.len())
            .map(|i| format!("s{i}: session(id: $i{i}) {{ {SESSION_FIELDS} }}"))
            .collect();
        let q = format!("query({}) {{ {} }}", params.join(", "), fields.join(" "));
        let vars: serde_json::Map<String, Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (format!("i{i}"), json!(id)))
            .collect();
        let mut data = self.gql(self.admin_key(), &q, Value::Object(vars)).await?;
        (0..ids.len())
            .map(|i| {
                serde_json::from_value(data[format!("s{i}")].take())
                    .map_err(|e| ApiError::Protocol(format!("session: {e}")))
            })
            .collect()
    }
}
