//! What the media plane asks of the model: a participant arriving on the events socket and
//! leaving when it closes, the stage state every socket of a stage is sent, mute flags, and the
//! checks behind WHIP publish and subscribe. Pure functions of the state like the operations;
//! sockets, HTTP and the SFU are `crate::ivs::emulator::media`'s business.

use serde_json::{Value, json};

use super::Ctx;
use super::join::{Refused, admission, connect, stop_replicas_of};
use crate::ivs::backend::stage_id_from_arn;
use crate::ivs::emulator::error::ApiError;
use crate::ivs::emulator::state::{PState, Participant, ReplType, State};

/// Where a participant sits: one events socket, one seat.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Seat {
    pub stage_arn: String,
    pub participant_id: String,
}

/// Admit the events socket's token and connect its participant (not publishing: that is a WHIP
/// publish). A refusal carries the `JOIN_ERROR` code the SDK knows.
pub fn socket_join(ctx: Ctx<'_>, token: &str) -> Result<Seat, Refused> {
    let a = admission(&ctx, token)?;
    let Some(stage) = ctx.state.stage_by_arn(&a.stage_arn) else {
        return Err(Refused {
            code: "STAGE_DELETED",
            message: format!("stage {} does not exist", a.stage_arn),
        });
    };
    if a.topic != stage_id_from_arn(&stage.arn) {
        return Err(Refused {
            code: "TOKEN_INVALID",
            message: format!("token topic {} does not match stage {}", a.topic, stage.arn),
        });
    }
    // A participant that only listens counts as a subscriber, one that may publish too until it
    // does; a rejoin with the same token takes its own seat back.
    let (_, mut subscribers) = stage.counts();
    if stage.connected(&a.participant_id).is_some_and(|p| !p.published) {
        subscribers -= 1;
    }
    if subscribers >= ctx.settings.subscribers_per_stage {
        return Err(Refused {
            code: "BAD_REQUEST",
            message: format!(
                "stage {} already has the maximum of {} subscribers",
                stage.arn, ctx.settings.subscribers_per_stage
            ),
        });
    }
    let seat = Seat {
        stage_arn: a.stage_arn.clone(),
        participant_id: a.participant_id.clone(),
    };
    connect(ctx.state, ctx.now, a, false);
    Ok(seat)
}

/// The socket closed: its participant leaves (false if it had already gone, e.g. kicked).
pub fn socket_leave(state: &mut State, seat: &Seat) -> bool {
    state.disconnect(&seat.stage_arn, &seat.participant_id)
}

/// Why a socket's participant is no longer in its stage, as the SDK's `DISCONNECT` codes.
pub fn gone(state: &State, seat: &Seat) -> Option<&'static str> {
    match state.stage_by_arn(&seat.stage_arn) {
        None => Some("STAGE_DELETED"),
        Some(stage) if stage.connected(&seat.participant_id).is_none() => Some("PARTICIPANT_DISCONNECTED"),
        Some(_) => None,
    }
}

/// The `participants` of a stage's `aws:ivs:STAGE_STATE`: everyone connected, replicas included
/// (a replica publishes when its media flows and its source still publishes). None: no stage.
pub fn stage_participants(state: &State, stage_arn: &str) -> Option<Vec<Value>> {
    let stage = state.stage_by_arn(stage_arn)?;
    let list = stage.active.iter().flat_map(|s| &s.participants);
    Some(
        list.filter(|p| p.state == PState::Connected)
            .map(|p| {
                json!({
                    "id": p.id,
                    "userId": p.user_id,
                    "attributes": p.attributes,
                    "isPublishing": publishing(state, p),
                    "audioMuted": p.audio_muted,
                    "videoStopped": p.video_stopped,
                })
            })
            .collect(),
    )
}

fn publishing(state: &State, p: &Participant) -> bool {
    match (&p.source, p.replication) {
        (Some((source_arn, _)), ReplType::Replica) => {
            p.published
                && state
                    .stage_by_arn(source_arn)
                    .and_then(|s| s.connected(&p.id))
                    .is_some_and(|source| source.published)
        }
        _ => p.published,
    }
}

/// `SET_STATE` from the participant's page.
pub fn set_mute(state: &mut State, seat: &Seat, audio_muted: bool, video_stopped: bool) -> bool {
    let Some(p) = connected_mut(state, seat) else {
        return false;
    };
    let changed = p.audio_muted != audio_muted || p.video_stopped != video_stopped;
    p.audio_muted = audio_muted;
    p.video_stopped = video_stopped;
    changed
}

/// A WHIP publish may go ahead: the token allows publishing and names `participant_id`, which
/// is connected to its stage (its events socket is open), and the stage has a publisher seat.
pub fn publish_check(ctx: Ctx<'_>, token: &str, participant_id: &str) -> Result<Seat, ApiError> {
    let a = admission(&ctx, token)?;
    if a.participant_id != participant_id {
        return Err(ApiError::AccessDenied(format!(
            "the token is for participant {}, not {participant_id}",
            a.participant_id
        )));
    }
    if !a.publish {
        return Err(ApiError::AccessDenied("token does not allow publishing".into()));
    }
    let stage = ctx
        .state
        .stage_by_arn(&a.stage_arn)
        .ok_or_else(|| ApiError::NotFound(format!("stage {} not found", a.stage_arn)))?;
    let me = stage.connected(participant_id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "participant {participant_id} has not joined stage {} (open the events socket first)",
            stage.arn
        ))
    })?;
    let cap = ctx.settings.publishers_per_stage;
    if !me.published && stage.counts().0 >= cap {
        return Err(ApiError::QuotaExceeded(format!(
            "stage {} already has the maximum of {cap} publishers",
            stage.arn
        )));
    }
    Ok(Seat {
        stage_arn: a.stage_arn,
        participant_id: a.participant_id,
    })
}

/// A WHIP subscribe may go ahead: the token allows subscribing and `target` publishes in (or is
/// replicated into) the token's stage. Returns whose media to send: the same participant id,
/// served from wherever it really publishes.
pub fn subscribe_check(ctx: Ctx<'_>, token: &str, target: &str) -> Result<String, ApiError> {
    let a = admission(&ctx, token)?;
    if !a.subscribe {
        return Err(ApiError::AccessDenied("token does not allow subscribing".into()));
    }
    let stage = ctx
        .state
        .stage_by_arn(&a.stage_arn)
        .ok_or_else(|| ApiError::NotFound(format!("stage {} not found", a.stage_arn)))?;
    match stage.connected(target) {
        Some(p) if publishing(ctx.state, p) => Ok(target.to_string()),
        Some(_) => Err(ApiError::NotFound(format!("participant {target} is not publishing"))),
        None => Err(ApiError::NotFound(format!(
            "participant {target} is not in stage {}",
            stage.arn
        ))),
    }
}

/// Whether `token` is one this emulator admits at all (WHIP DELETE asks no more).
pub fn token_ok(ctx: Ctx<'_>, token: &str) -> Result<(), ApiError> {
    admission(&ctx, token).map(|_| ()).map_err(ApiError::from)
}

/// A publish session started or ended. Ending one stops the replicas of the participant (they
/// have nothing left to show), as a rejoin without publishing does. False if it is not connected.
pub fn set_publishing(state: &mut State, seat: &Seat, on: bool) -> bool {
    let Some(p) = connected_mut(state, seat) else {
        return false;
    };
    let was = std::mem::replace(&mut p.published, on);
    if was && !on {
        stop_replicas_of(state, &seat.stage_arn, &seat.participant_id);
    }
    true
}

/// The stage where `participant_id` publishes in person (not as a replica), if any.
pub fn publisher_seat(state: &State, participant_id: &str) -> Option<Seat> {
    state.stages.values().find_map(|stage| {
        let p = stage.connected(participant_id)?;
        (p.published && p.replication != ReplType::Replica).then(|| Seat {
            stage_arn: stage.arn.clone(),
            participant_id: participant_id.to_string(),
        })
    })
}

fn connected_mut<'a>(state: &'a mut State, seat: &Seat) -> Option<&'a mut Participant> {
    let stage = state.stage_by_arn_mut(&seat.stage_arn)?;
    let session = stage.active.as_mut()?;
    session
        .participants
        .iter_mut()
        .find(|p| p.id == seat.participant_id && p.state == PState::Connected)
}
