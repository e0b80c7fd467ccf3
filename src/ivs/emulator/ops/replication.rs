//! StartParticipantReplication, StopParticipantReplication, ListParticipantReplicas.
//!
//! Choices where AWS documents nothing (`ivs-realtime.md` §3, §9 in the shared design folder):
//! replicating a participant that is connected but not publishing is a 409 ConflictException
//! "`<id>` is not publishing" (one that is not connected at all is a 404); a replica cannot be
//! replicated again (400); replicas count as publishers of the destination stage;
//! `reconnectWindowSeconds` is validated but not simulated.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use super::lookup::not_found;
use super::{Ctx, Outcome, validate};
use crate::ivs::emulator::error::{ApiError, ApiResult};
use crate::ivs::emulator::state::{PState, Participant, ReplState, ReplType, Replication};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartReq {
    source_stage_arn: String,
    destination_stage_arn: String,
    participant_id: String,
    reconnect_window_seconds: Option<i64>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopReq {
    source_stage_arn: String,
    destination_stage_arn: String,
    participant_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListReq {
    source_stage_arn: String,
    participant_id: String,
    next_token: Option<String>,
    max_results: Option<i64>,
}

fn check_stages(ctx: &Ctx<'_>, source: &str, destination: &str) -> ApiResult<()> {
    validate::arn("stage", source)?;
    validate::arn("stage", destination)?;
    for arn in [source, destination] {
        if ctx.state.stage_by_arn(arn).is_none() {
            return Err(not_found(arn));
        }
    }
    Ok(())
}

pub fn start(ctx: Ctx<'_>, req: StartReq) -> ApiResult<Outcome> {
    let (src, dst, pid) = (
        req.source_stage_arn.as_str(),
        req.destination_stage_arn.as_str(),
        req.participant_id.as_str(),
    );
    if let Some(w) = req.reconnect_window_seconds.filter(|w| !(0..=300).contains(w)) {
        return Err(ApiError::Validation(format!(
            "reconnectWindowSeconds must be 0..300, got {w}"
        )));
    }
    validate::attributes(&req.attributes)?;
    check_stages(&ctx, src, dst)?;
    if src == dst {
        return Err(ApiError::Validation("source and destination stage must differ".into()));
    }
    let source = ctx.state.stage_by_arn(src).expect("checked");
    let original = source
        .connected(pid)
        .ok_or_else(|| ApiError::NotFound(format!("participant {pid} is not connected to stage {src}")))?;
    if original.replication == ReplType::Replica {
        return Err(ApiError::Validation(format!(
            "{pid} is a replica; replicate the original participant"
        )));
    }
    if !original.published {
        return Err(ApiError::Conflict(format!("{pid} is not publishing")));
    }
    let active = |r: &&Replication| r.replication_state == ReplState::Active;
    let duplicate =
        |r: &&Replication| r.source_stage_arn == src && r.destination_stage_arn == dst && r.participant_id == pid;
    if ctx.state.replications.iter().filter(active).any(|r| duplicate(&r)) {
        return Err(ApiError::Conflict(format!(
            "{pid} is already replicated from {src} to {dst}"
        )));
    }
    let max = ctx.settings.max_replications_per_participant;
    if ctx.state.active_replications_of(pid) >= max as usize {
        return Err(ApiError::QuotaExceeded(format!(
            "{pid} already has the maximum of {max} active replications"
        )));
    }
    let destination = ctx.state.stage_by_arn(dst).expect("checked");
    if destination.connected(pid).is_some() {
        return Err(ApiError::Conflict(format!("{pid} is already connected to {dst}")));
    }
    let cap = ctx.settings.publishers_per_stage;
    if destination.counts().0 >= cap {
        return Err(ApiError::QuotaExceeded(format!(
            "stage {dst} already has the maximum of {cap} publishers"
        )));
    }
    let mut attributes = original.attributes.clone();
    attributes.extend(req.attributes);
    let source_session = source.active_session_id().to_string();
    let replica = Participant {
        attributes,
        first_join_time: ctx.now,
        replication: ReplType::Replica,
        source: Some((src.to_string(), source_session.clone())),
        // Media takes a moment to flow into the destination (`Faults::replication_active_ms`).
        published: ctx.replication_active_ms <= 0,
        publishes_at: (ctx.replication_active_ms > 0).then_some(ctx.now_ms + ctx.replication_active_ms),
        ..original.clone()
    };
    if let Some(at) = replica.publishes_at {
        ctx.state.settle_at = Some(ctx.state.settle_at.map_or(at, |t| t.min(at)));
    }
    let destination_session = ctx.state.stage_by_arn_mut(dst).expect("checked").connect(replica);
    let source = ctx.state.stage_by_arn_mut(src).expect("checked");
    if let Some(session) = source.active.as_mut()
        && let Some(p) = session
            .participants
            .iter_mut()
            .find(|p| p.id == pid && p.state == PState::Connected)
    {
        p.replication = ReplType::Source;
    }
    ctx.state.replications.push(Replication {
        source_stage_arn: src.to_string(),
        destination_stage_arn: dst.to_string(),
        participant_id: pid.to_string(),
        source_session_id: source_session,
        destination_session_id: destination_session,
        replication_state: ReplState::Active,
    });
    // The real response has no JSON members (its outputs are headers); `{}` is what the SDK expects.
    Outcome::wrote(json!({}))
}

pub fn stop(ctx: Ctx<'_>, req: StopReq) -> ApiResult<Outcome> {
    let (src, dst, pid) = (
        req.source_stage_arn.as_str(),
        req.destination_stage_arn.as_str(),
        req.participant_id.as_str(),
    );
    check_stages(&ctx, src, dst)?;
    let stopped = ctx
        .state
        .stop_replications(|r| r.source_stage_arn == src && r.destination_stage_arn == dst && r.participant_id == pid);
    if stopped == 0 {
        return Err(ApiError::NotFound(format!(
            "no active replication of {pid} from {src} to {dst}"
        )));
    }
    Outcome::wrote(json!({}))
}

pub fn list(ctx: Ctx<'_>, req: ListReq) -> ApiResult<Outcome> {
    validate::arn("stage", &req.source_stage_arn)?;
    let max = validate::max_results(req.max_results, 50)?;
    if ctx.state.stage_by_arn(&req.source_stage_arn).is_none() {
        return Err(not_found(&req.source_stage_arn));
    }
    let items = ctx
        .state
        .replications
        .iter()
        .filter(|r| r.source_stage_arn == req.source_stage_arn && r.participant_id == req.participant_id)
        .enumerate()
        .map(|(i, r)| (validate::index_key(i), json!(r)))
        .collect();
    let (replicas, next) = validate::page(items, req.next_token.as_deref(), max)?;
    Outcome::read(json!({"replicas": replicas, "nextToken": next}))
}
