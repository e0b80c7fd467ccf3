//! What several operations share about finding a stage and its participants: the stage NotFound
//! error, worded once, and the checked disconnect behind both DisconnectParticipant and
//! `/_emulator/leave`. It owns no operation; it exists so the operation modules need not import
//! each other.

use crate::ivs::emulator::error::{ApiError, ApiResult};
use crate::ivs::emulator::state::State;

pub fn not_found(arn: &str) -> ApiError {
    ApiError::NotFound(format!("stage {arn} not found"))
}

/// Disconnect a participant from a stage: NotFound for an unknown stage or a participant that is
/// not connected.
pub fn disconnect(state: &mut State, stage_arn: &str, participant_id: &str) -> ApiResult<()> {
    if state.stage_by_arn(stage_arn).is_none() {
        return Err(not_found(stage_arn));
    }
    if !state.disconnect(stage_arn, participant_id) {
        let msg = format!("participant {participant_id} is not connected to stage {stage_arn}");
        return Err(ApiError::NotFound(msg));
    }
    Ok(())
}
