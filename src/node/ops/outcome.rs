//! Awaiting a stage intent's outcome on this node's bus. The caller subscribes before it proposes
//! the intent, so the outcome cannot slip past; whichever node runs the leader's stage loop, the
//! outcome reaches every node through the log.

use std::time::Duration;

use super::super::{Node, NodeError};
use crate::fleet::event::{Change, StageStep};
use crate::fleet::{FailureKind, Stage, StageFailure, StageState};
use crate::state::{Applied, Subscription};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    Created,
    Deleted,
}

/// What the bus (or, after a reset, the state) says of the awaited stage.
enum Seen {
    Done,
    Failed(StageFailure),
    Waiting,
}

fn step_says(step: &StageStep, want: Want) -> Seen {
    match (want, step) {
        (Want::Created, StageStep::Created | StageStep::Ready) | (Want::Deleted, StageStep::Deleted) => Seen::Done,
        (Want::Created, StageStep::CreateFailed(f)) => Seen::Failed(f.clone().unwrap_or_else(|| StageFailure {
            kind: FailureKind::Failed,
            message: "CreateStage failed".into(),
        })),
        (Want::Deleted, StageStep::DeleteFailed(f)) => Seen::Failed(f.clone()),
        _ => Seen::Waiting,
    }
}

/// After a reset the events are gone; the state tells whether the outcome happened.
fn state_says(stage: Option<&Stage>, want: Want) -> Seen {
    match (want, stage.map(|s| s.state)) {
        (Want::Created, Some(StageState::Active)) | (Want::Deleted, None) => Seen::Done,
        (Want::Created, None) => Seen::Failed(StageFailure {
            kind: FailureKind::Failed,
            message: "the stage intent was dropped".into(),
        }),
        _ => Seen::Waiting,
    }
}

impl Node {
    /// Wait until stage `id` is created (answers it) or deleted (answers `None`), or its attempt
    /// failed, within `stage_outcome_timeout_secs`.
    pub(super) async fn await_stage(
        &self,
        bus: &mut Subscription,
        id: &str,
        want: Want,
    ) -> Result<Option<Stage>, NodeError> {
        let timeout = Duration::from_secs(self.cfg.stage_outcome_timeout_secs.max(1));
        let seen = tokio::time::timeout(timeout, async {
            // The state may already hold the outcome (the intent was applied before this wait).
            if let Seen::Done = state_says(self.store.view().fleet.stages.get(id), want) {
                return Ok(Seen::Done);
            }
            loop {
                match bus.recv().await {
                    None => return Err(NodeError::internal("the store stopped")),
                    Some(Applied::Reset { .. }) => match state_says(self.store.view().fleet.stages.get(id), want) {
                        Seen::Waiting => {}
                        seen => return Ok(seen),
                    },
                    Some(Applied::Changes(events)) => {
                        for e in events.iter() {
                            if let Change::Stage { id: sid, step, .. } = &e.change
                                && sid == id
                            {
                                match step_says(step, want) {
                                    Seen::Waiting => {}
                                    seen => return Ok(seen),
                                }
                            }
                        }
                    }
                }
            }
        })
        .await;
        match seen {
            Err(_) => Err(NodeError::Pending {
                stage: id.to_string(),
                waited: timeout,
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Seen::Failed(f))) => Err(NodeError::StageFailed(f)),
            Ok(Ok(_)) => Ok(self.store.view().fleet.stages.get(id).cloned()),
        }
    }
}
