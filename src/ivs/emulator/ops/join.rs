//! The emulator-only join/leave calls: how a participant "arrives" without WebRTC. Admission does
//! what IVS does at join time: verify the token (ES384 against imported keys, or one this emulator
//! issued), check it names an existing stage, check capabilities, then check stage capacity.

use serde::Deserialize;
use serde_json::{Value, json};

use super::lookup::{disconnect, not_found};
use super::{Ctx, validate};
use crate::ivs::backend::stage_id_from_arn;
use crate::ivs::emulator::error::{ApiError, ApiResult};
use crate::ivs::emulator::state::{PState, Participant, ReplType, State};
use crate::ivs::token::{self, TokenError};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub token: String,
    #[serde(default)]
    pub publish: bool,
    /// The stage the client means to join; when given, a token for another stage is refused.
    pub stage_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveRequest {
    pub stage_arn: String,
    pub participant_id: String,
}

/// Who a token admits, whichever way it was minted.
pub(super) struct Admission {
    pub stage_arn: String,
    pub topic: String,
    pub participant_id: String,
    pub user_id: String,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub publish: bool,
    pub subscribe: bool,
}

/// A token refused: the `JOIN_ERROR` code the events socket sends (the SDK's names) and why.
#[derive(Debug)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        ApiError::AccessDenied(r.message)
    }
}

fn refused(e: TokenError) -> Refused {
    let code = match e {
        TokenError::Expired => "TOKEN_EXPIRED",
        TokenError::BadSignature | TokenError::UnknownKey(_) => "TOKEN_INVALID_SIGNATURE",
        _ => "TOKEN_INVALID",
    };
    Refused {
        code,
        message: format!("participant token refused: {e}"),
    }
}

pub(super) fn admission(ctx: &Ctx<'_>, token: &str) -> Result<Admission, Refused> {
    if let Some(t) = ctx.state.issued.get(token) {
        if t.expires_at <= ctx.now {
            return Err(refused(TokenError::Expired));
        }
        return Ok(Admission {
            stage_arn: t.stage_arn.clone(),
            topic: stage_id_from_arn(&t.stage_arn).to_string(),
            participant_id: t.participant_id.clone(),
            user_id: t.user_id.clone(),
            attributes: t.attributes.clone(),
            publish: t.publish,
            subscribe: t.subscribe,
        });
    }
    let claims = token::verify(token, &ctx.state.key_pems(), ctx.now).map_err(refused)?;
    let jti_ok = !claims.jti.is_empty() && validate::name("jti", &claims.jti).is_ok() && claims.jti.len() <= 64;
    if !jti_ok {
        return Err(Refused {
            code: "TOKEN_INVALID",
            message: format!("token jti {:?} is not 1..64 of [A-Za-z0-9_-]", claims.jti),
        });
    }
    if claims.exp - claims.iat > 20_160 * 60 {
        return Err(Refused {
            code: "TOKEN_INVALID",
            message: "token lifetime exceeds 14 days".into(),
        });
    }
    Ok(Admission {
        stage_arn: claims.resource,
        topic: claims.topic,
        participant_id: claims.jti,
        user_id: claims.user_id.unwrap_or_default(),
        attributes: claims.attributes,
        publish: claims.capabilities.allow_publish,
        subscribe: claims.capabilities.allow_subscribe,
    })
}

pub fn join(ctx: Ctx<'_>, req: JoinRequest) -> ApiResult<Value> {
    let a = admission(&ctx, &req.token)?;
    if let Some(wanted) = &req.stage_arn
        && wanted != &a.stage_arn
    {
        return Err(ApiError::AccessDenied(format!(
            "token is for stage {}, not {wanted}",
            a.stage_arn
        )));
    }
    let stage = ctx
        .state
        .stage_by_arn(&a.stage_arn)
        .ok_or_else(|| not_found(&a.stage_arn))?;
    if a.topic != stage_id_from_arn(&stage.arn) {
        return Err(ApiError::AccessDenied(format!(
            "token topic {} does not match stage {}",
            a.topic, stage.arn
        )));
    }
    if req.publish && !a.publish {
        return Err(ApiError::AccessDenied("token does not allow publishing".into()));
    }
    if !req.publish && !a.subscribe {
        return Err(ApiError::AccessDenied("token does not allow subscribing".into()));
    }
    // A rejoin with the same jti replaces the old connection, so it must not count against itself.
    let (mut publishers, mut subscribers) = stage.counts();
    if let Some(old) = stage.connected(&a.participant_id) {
        if old.published {
            publishers -= 1
        } else {
            subscribers -= 1
        }
    }
    let s = ctx.settings;
    if req.publish && publishers >= s.publishers_per_stage {
        let msg = format!(
            "stage {} already has the maximum of {} publishers",
            stage.arn, s.publishers_per_stage
        );
        return Err(ApiError::QuotaExceeded(msg));
    }
    if !req.publish && subscribers >= s.subscribers_per_stage {
        let msg = format!(
            "stage {} already has the maximum of {} subscribers",
            stage.arn, s.subscribers_per_stage
        );
        return Err(ApiError::QuotaExceeded(msg));
    }
    let (participant_id, stage_arn) = (a.participant_id.clone(), a.stage_arn.clone());
    let session_id = connect(ctx.state, ctx.now, a, req.publish);
    Ok(json!({"participantId": participant_id, "stageArn": stage_arn, "sessionId": session_id}))
}

/// Connect the participant `a` admits to its stage (which exists), replacing an earlier
/// connection of the same token; one that published and now does not takes its replicas with it
/// (they have nothing left to show). Returns the stage session id.
pub(super) fn connect(state: &mut State, now: i64, a: Admission, publish: bool) -> String {
    let stage = state
        .stage_by_arn_mut(&a.stage_arn)
        .expect("admitted to an existing stage");
    let was_publishing = stage.connected(&a.participant_id).is_some_and(|p| p.published);
    let session_id = stage.connect(Participant {
        id: a.participant_id.clone(),
        user_id: a.user_id,
        attributes: a.attributes,
        state: PState::Connected,
        published: publish,
        first_join_time: now,
        replication: ReplType::None,
        source: None,
        publishes_at: None,
        audio_muted: false,
        video_stopped: false,
    });
    if was_publishing && !publish {
        stop_replicas_of(state, &a.stage_arn, &a.participant_id);
    }
    session_id
}

/// Stop every replication of `participant_id` out of `stage_arn`.
pub(super) fn stop_replicas_of(state: &mut State, stage_arn: &str, participant_id: &str) {
    state.stop_replications(|r| r.source_stage_arn == stage_arn && r.participant_id == participant_id);
}

pub fn leave(ctx: Ctx<'_>, req: LeaveRequest) -> ApiResult<Value> {
    disconnect(ctx.state, &req.stage_arn, &req.participant_id)?;
    Ok(json!({}))
}
