//! CreateParticipantToken, ListParticipants, DisconnectParticipant, and the tokens the emulator
//! issues itself (JWT-shaped like IVS's `alg: KMS` tokens, remembered so they can join).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::lookup::{self, not_found};
use super::{Ctx, Outcome, Settings, iso8601, validate};
use crate::ivs::emulator::error::{ApiError, ApiResult};
use crate::ivs::emulator::state::{IssuedToken, PState, Participant, ReplType, State};
use crate::ivs::token::{Claims, TokenCapabilities, random_id};

/// One token's settings, as in CreateParticipantToken and CreateStage's
/// `participantTokenConfigurations`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    duration: Option<i64>,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    capabilities: Option<Vec<String>>,
}

impl TokenSpec {
    pub fn validate(&self) -> ApiResult<()> {
        let duration = self.duration.unwrap_or(720);
        if !(1..=20_160).contains(&duration) {
            return Err(ApiError::Validation(format!(
                "duration must be 1..20160 minutes, got {duration}"
            )));
        }
        validate::user_id(&self.user_id)?;
        validate::attributes(&self.attributes)?;
        let caps = self.capabilities.as_deref().unwrap_or_default();
        if caps.len() > 2 || caps.iter().any(|c| c != "PUBLISH" && c != "SUBSCRIBE") {
            return Err(ApiError::Validation(format!(
                "capabilities must be PUBLISH and/or SUBSCRIBE, got {caps:?}"
            )));
        }
        Ok(())
    }

    fn can(&self, capability: &str) -> bool {
        self.capabilities
            .as_ref()
            .is_none_or(|caps| caps.iter().any(|c| c == capability))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTokenReq {
    stage_arn: String,
    #[serde(flatten)]
    spec: TokenSpec,
}

/// Mint a token for `stage_arn` (which must exist) and remember it; returns ParticipantToken JSON.
pub fn issue_token(
    state: &mut State,
    settings: &Settings,
    stage_arn: &str,
    spec: &TokenSpec,
    now: i64,
) -> ApiResult<Value> {
    spec.validate()?;
    let duration = spec.duration.unwrap_or(720);
    let stage = state.stage_by_arn(stage_arn).ok_or_else(|| not_found(stage_arn))?;
    let ends = settings.endpoints();
    let participant_id = random_id(12);
    let claims = Claims {
        exp: now + duration * 60,
        iat: now,
        jti: participant_id.clone(),
        user_id: Some(spec.user_id.clone()).filter(|u| !u.is_empty()),
        resource: stage.arn.clone(),
        topic: crate::ivs::backend::stage_id_from_arn(&stage.arn).to_string(),
        events_url: ends["events"].as_str().unwrap_or_default().to_string(),
        whip_url: ends["whip"].as_str().unwrap_or_default().to_string(),
        capabilities: TokenCapabilities {
            allow_publish: spec.can("PUBLISH"),
            allow_subscribe: spec.can("SUBSCRIBE"),
        },
        attributes: spec.attributes.clone(),
        version: "1.0".into(),
    };
    // IVS's own tokens are JWTs signed by KMS; clients must treat them as opaque. The signature
    // here is random: only this emulator, which remembers the token, can admit it.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"KMS","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims json"));
    let token = format!("{header}.{payload}.{}", random_id(96));
    state.prune_issued(now);
    state.issued.insert(
        token.clone(),
        IssuedToken {
            stage_arn: stage_arn.to_string(),
            participant_id: participant_id.clone(),
            user_id: spec.user_id.clone(),
            attributes: spec.attributes.clone(),
            publish: claims.capabilities.allow_publish,
            subscribe: claims.capabilities.allow_subscribe,
            expires_at: claims.exp,
        },
    );
    let caps: Vec<&str> = ["PUBLISH", "SUBSCRIBE"].into_iter().filter(|c| spec.can(c)).collect();
    Ok(json!({
        "participantId": participant_id,
        "token": token,
        "userId": spec.user_id,
        "attributes": spec.attributes,
        "duration": duration,
        "capabilities": caps,
        "expirationTime": iso8601(claims.exp),
    }))
}

pub fn create_token(ctx: Ctx<'_>, req: CreateTokenReq) -> ApiResult<Outcome> {
    validate::arn("stage", &req.stage_arn)?;
    let token = issue_token(ctx.state, ctx.settings, &req.stage_arn, &req.spec, ctx.now)?;
    Outcome::wrote(json!({"participantToken": token}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListReq {
    stage_arn: String,
    session_id: String,
    filter_by_user_id: Option<String>,
    filter_by_published: Option<bool>,
    filter_by_state: Option<String>,
    filter_by_recording_state: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

fn summary_json(p: &Participant) -> Value {
    let mut v = json!({
        "participantId": p.id,
        "userId": p.user_id,
        "state": p.state,
        "firstJoinTime": iso8601(p.first_join_time),
        "published": p.published,
        "recordingState": "DISABLED",
        "replicationType": p.replication,
    });
    if p.replication != ReplType::None {
        v["replicationState"] = json!(if p.state == PState::Connected {
            "ACTIVE"
        } else {
            "STOPPED"
        });
    }
    if let Some((arn, session)) = &p.source {
        v["sourceStageArn"] = json!(arn);
        v["sourceSessionId"] = json!(session);
    }
    v
}

pub fn list(ctx: Ctx<'_>, req: ListReq) -> ApiResult<Outcome> {
    validate::arn("stage", &req.stage_arn)?;
    let max = validate::max_results(req.max_results, 100)?;
    let filters = [
        req.filter_by_user_id.is_some(),
        req.filter_by_published.is_some(),
        req.filter_by_state.is_some(),
        req.filter_by_recording_state.is_some(),
    ];
    if filters.iter().filter(|f| **f).count() > 1 {
        return Err(ApiError::Validation("only one filterBy* field may be given".into()));
    }
    let state_filter = match req.filter_by_state.as_deref() {
        None => None,
        Some("CONNECTED") => Some(PState::Connected),
        Some("DISCONNECTED") => Some(PState::Disconnected),
        Some(other) => {
            return Err(ApiError::Validation(format!("unknown filterByState {other:?}")));
        }
    };
    let sid = req.session_id.as_str();
    if sid.len() != 16 || !sid.starts_with("st-") || !sid[3..].chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::Validation(format!(
            "sessionId {sid:?} is not st- followed by 13 alphanumerics"
        )));
    }
    let stage = ctx
        .state
        .stage_by_arn(&req.stage_arn)
        .ok_or_else(|| not_found(&req.stage_arn))?;
    let session = stage
        .session(sid)
        .ok_or_else(|| ApiError::NotFound(format!("session {sid} not found in stage {}", stage.arn)))?;
    let items = session
        .participants
        .iter()
        .enumerate()
        .filter(|(_, p)| req.filter_by_user_id.as_ref().is_none_or(|u| &p.user_id == u))
        .filter(|(_, p)| req.filter_by_published.is_none_or(|b| p.published == b))
        .filter(|(_, p)| state_filter.is_none_or(|s| p.state == s))
        .map(|(i, p)| (validate::index_key(i), summary_json(p)))
        .collect();
    let (participants, next) = validate::page(items, req.next_token.as_deref(), max)?;
    Outcome::read(json!({"participants": participants, "nextToken": next}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectReq {
    stage_arn: String,
    participant_id: String,
    #[serde(default)]
    reason: String,
}

pub fn disconnect(ctx: Ctx<'_>, req: DisconnectReq) -> ApiResult<Outcome> {
    validate::arn("stage", &req.stage_arn)?;
    if req.reason.chars().count() > 128 {
        return Err(ApiError::Validation("reason must be at most 128 characters".into()));
    }
    lookup::disconnect(ctx.state, &req.stage_arn, &req.participant_id)?;
    Outcome::wrote(json!({}))
}
