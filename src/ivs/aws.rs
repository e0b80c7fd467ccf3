//! TEMPORARY compile stand-in; replaced by the ivs branch.
use super::backend::*;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;
#[derive(Clone, Debug)]
pub struct AwsConfig {
    pub region: String,
    pub endpoint_url: Option<String>,
    pub static_credentials: Option<(String, String)>,
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    pub rates: BTreeMap<String, f64>,
}
impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            endpoint_url: None,
            static_credentials: None,
            max_attempts: 4,
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            rates: BTreeMap::new(),
        }
    }
}
pub struct AwsBackend;
impl AwsBackend {
    pub async fn new(_c: AwsConfig) -> anyhow::Result<Self> {
        Ok(Self)
    }
}
#[async_trait]
impl StageBackend for AwsBackend {
    async fn create_stage(
        &self,
        _name: &str,
        _tags: &BTreeMap<String, String>,
    ) -> BackendResult<StageInfo> {
        unimplemented!()
    }
    async fn get_stage(&self, _arn: &str) -> BackendResult<StageInfo> {
        unimplemented!()
    }
    async fn list_stages(&self, _t: &BTreeMap<String, String>) -> BackendResult<Vec<StageInfo>> {
        unimplemented!()
    }
    async fn delete_stage(&self, _arn: &str) -> BackendResult<()> {
        unimplemented!()
    }
    async fn import_public_key(
        &self,
        _n: &str,
        _p: &str,
        _t: &BTreeMap<String, String>,
    ) -> BackendResult<PublicKeyInfo> {
        unimplemented!()
    }
    async fn delete_public_key(&self, _arn: &str) -> BackendResult<()> {
        unimplemented!()
    }
    async fn create_participant_token(
        &self,
        _s: &str,
        _r: &TokenRequest,
    ) -> BackendResult<IssuedToken> {
        unimplemented!()
    }
    async fn start_participant_replication(
        &self,
        _a: &str,
        _b: &str,
        _c: &str,
        _d: u32,
        _e: &BTreeMap<String, String>,
    ) -> BackendResult<()> {
        unimplemented!()
    }
    async fn stop_participant_replication(
        &self,
        _a: &str,
        _b: &str,
        _c: &str,
    ) -> BackendResult<()> {
        unimplemented!()
    }
    async fn list_participant_replicas(
        &self,
        _a: &str,
        _b: &str,
    ) -> BackendResult<Vec<ReplicaInfo>> {
        unimplemented!()
    }
    async fn list_participants(
        &self,
        _a: &str,
        _b: &str,
        _f: ParticipantFilter,
    ) -> BackendResult<Vec<ParticipantInfo>> {
        unimplemented!()
    }
    async fn disconnect_participant(&self, _a: &str, _b: &str, _c: &str) -> BackendResult<()> {
        unimplemented!()
    }
}
