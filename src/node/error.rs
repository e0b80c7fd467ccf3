//! The one error type of the node's operations. The API maps it to `extensions.code` in one place
//! (`crate::api::error`); internal details go to the log, not to clients.

use crate::fleet::admission::InputError;
use crate::fleet::{Refusal, StageFailure};
use crate::ivs::BackendError;
use crate::state::{ProposalError, ProposeError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("IVS call failed: {0}")]
    Backend(#[from] BackendError),
    /// The leader's stage loop tried the IVS call for this operation's intent and it failed.
    #[error("IVS call failed: {}", .0.message)]
    StageFailed(StageFailure),
    /// The intent is in the log but its IVS call has not answered within the wait.
    #[error("stage {stage} is still pending after {waited:?}")]
    Pending { stage: String, waited: std::time::Duration },
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error("the signing key is not set up yet")]
    NoSigningKey,
    #[error("internal error: {0}")]
    Internal(String),
}

/// The one place a proposal's failure becomes a node error: a refusal keeps its code, a wrong
/// answer is internal.
impl From<ProposalError> for NodeError {
    fn from(e: ProposalError) -> Self {
        match e {
            ProposalError::NotApplied(e) => NodeError::Propose(e),
            ProposalError::Refused(r) => NodeError::Refused(r),
            wrong @ ProposalError::WrongAnswer { .. } => NodeError::internal(wrong),
        }
    }
}

impl NodeError {
    pub fn internal(what: impl std::fmt::Display) -> Self {
        NodeError::Internal(what.to_string())
    }
}
