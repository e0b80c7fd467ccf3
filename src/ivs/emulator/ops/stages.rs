//! CreateStage, GetStage, ListStages, DeleteStage, and the Stage/StageSummary JSON shapes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::lookup::not_found;
use super::participants::{TokenSpec, issue_token};
use super::{ArnReq, Ctx, ListReq, Outcome, Settings, validate};
use crate::ivs::emulator::error::{ApiError, ApiResult};
use crate::ivs::emulator::state::{ReplState, Stage};
use crate::ivs::token::random_id;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateReq {
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    participant_token_configurations: Vec<TokenSpec>,
}

pub fn stage_json(stage: &Stage, settings: &Settings) -> Value {
    json!({
        "arn": stage.arn,
        "name": stage.name,
        "activeSessionId": stage.active_session_id(),
        "tags": stage.tags,
        "endpoints": settings.endpoints(),
    })
}

fn summary_json(stage: &Stage) -> Value {
    json!({"arn": stage.arn, "name": stage.name, "activeSessionId": stage.active_session_id(), "tags": stage.tags})
}

pub fn create(ctx: Ctx<'_>, req: CreateReq) -> ApiResult<Outcome> {
    validate::name("name", &req.name)?;
    validate::tags(&req.tags)?;
    if req.participant_token_configurations.len() > 12 {
        return Err(ApiError::Validation(
            "participantTokenConfigurations allows at most 12 entries".into(),
        ));
    }
    for spec in &req.participant_token_configurations {
        spec.validate()?;
    }
    let max = ctx.settings.max_stages;
    if ctx.state.stages.len() >= max as usize {
        return Err(ApiError::QuotaExceeded(format!(
            "the account already has the maximum of {max} stages"
        )));
    }
    let id = loop {
        let id = random_id(12);
        if !ctx.state.stages.contains_key(&id) {
            break id;
        }
    };
    let arn = format!(
        "arn:aws:ivs:{}:{}:stage/{id}",
        ctx.settings.region, ctx.settings.account_id
    );
    let stage = Stage::new(arn.clone(), req.name, req.tags);
    let body = stage_json(&stage, ctx.settings);
    ctx.state.stages.insert(id, stage);
    let tokens = req
        .participant_token_configurations
        .iter()
        .map(|spec| issue_token(ctx.state, ctx.settings, &arn, spec, ctx.now))
        .collect::<ApiResult<Vec<_>>>()?;
    Outcome::wrote(json!({"stage": body, "participantTokens": tokens}))
}

pub fn get(ctx: Ctx<'_>, req: ArnReq) -> ApiResult<Outcome> {
    validate::arn("stage", &req.arn)?;
    let stage = ctx.state.stage_by_arn(&req.arn).ok_or_else(|| not_found(&req.arn))?;
    Outcome::read(json!({"stage": stage_json(stage, ctx.settings)}))
}

pub fn list(ctx: Ctx<'_>, req: ListReq) -> ApiResult<Outcome> {
    let max = validate::max_results(req.max_results, 100)?;
    let items = ctx
        .state
        .stages
        .iter()
        .map(|(id, s)| (id.clone(), summary_json(s)))
        .collect();
    let (stages, next) = validate::page(items, req.next_token.as_deref(), max)?;
    Outcome::read(json!({"stages": stages, "nextToken": next}))
}

/// Deleting a stage disconnects its participants and stops replications from and into it.
pub fn delete(ctx: Ctx<'_>, req: ArnReq) -> ApiResult<Outcome> {
    validate::arn("stage", &req.arn)?;
    if ctx.state.stage_by_arn(&req.arn).is_none() {
        return Err(not_found(&req.arn));
    }
    let arn = req.arn.as_str();
    ctx.state
        .stop_replications(|r| r.source_stage_arn == arn || r.destination_stage_arn == arn);
    ctx.state.replications.retain(|r| {
        r.replication_state == ReplState::Active || (r.source_stage_arn != arn && r.destination_stage_arn != arn)
    });
    ctx.state.stages.remove(crate::ivs::backend::stage_id_from_arn(arn));
    ctx.state.issued.retain(|_, t| t.stage_arn != arn);
    Outcome::wrote(json!({}))
}
