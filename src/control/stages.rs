//! Stage side effects as intent → IVS call → result. The intent (a `Creating` or `Deleting`
//! stage) is in the log before the call; the result is proposed with the intent's term, so a
//! deposed leader's late answer is fenced. The reconciler finishes intents nobody is driving —
//! after a crash, a restart or a change of leader — finding half-created stages by their tags.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::now_ms;
use crate::fleet::{Stage, StageState, StageUrls};
use crate::ivs::naming;
use crate::ivs::{BackendError, StageEndpoints, StageInfo};
use crate::metrics::Labels;
use crate::node::{Node, NodeError};
use crate::state::{ProposalError, proposal};

/// Tags every managed stage carries: how a new leader finds its own stages and no one else's.
pub fn stage_tags(fleet_id: &str, stage: &Stage) -> BTreeMap<String, String> {
    naming::stage_tags(fleet_id, &stage.broadcast_id, stage.slot)
}

fn stage_name(stage: &Stage) -> String {
    naming::stage_name(&stage.broadcast_id, stage.slot)
}

/// The adapter's endpoints become the domain's record here, at the edge that called IVS, so the
/// log and `fleet` never hold an `ivs` type.
fn stage_urls(e: &StageEndpoints) -> StageUrls {
    StageUrls {
        events: e.events.clone(),
        whip: e.whip.clone(),
        rtmp: e.rtmp.clone(),
        rtmps: e.rtmps.clone(),
    }
}

/// Stage ids whose side effect is being driven right now, so the reconciler leaves them alone.
#[derive(Default)]
pub struct StageDriver {
    busy: Mutex<HashSet<String>>,
}

struct Busy<'a>(&'a StageDriver, String);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.lock().expect("busy set").remove(&self.1);
    }
}

impl StageDriver {
    fn claim(&self, id: &str) -> Option<Busy<'_>> {
        self.busy
            .lock()
            .expect("busy set")
            .insert(id.to_string())
            .then(|| Busy(self, id.to_string()))
    }

    /// Create `intent` in IVS and record it. With `adopt`, first look for the stage an earlier
    /// attempt may have created (by its tags); a fresh intent's slot was never used, so it skips
    /// that ListStages walk.
    pub async fn create(&self, node: &Node, intent: Stage, adopt: bool) -> Result<Stage, NodeError> {
        let _busy = self.claim(&intent.id);
        let tags = stage_tags(&node.cfg.fleet_id, &intent);
        let found = if adopt {
            find_tagged(node, &tags).await
        } else {
            Ok(None)
        };
        let created = match found {
            Ok(Some(info)) => node.backend.get_stage(&info.arn).await,
            Ok(None) => node.backend.create_stage(&stage_name(&intent), &tags).await,
            Err(e) => Err(e),
        };
        count(node, "CreateStage", &created);
        match created {
            Ok(info) => {
                let created = proposal::StageCreated {
                    stage_id: intent.id.clone(),
                    intent_term: intent.intent_term,
                    endpoints: info.endpoints.as_ref().map(stage_urls).unwrap_or_default(),
                    arn: info.arn,
                };
                Ok(node.store.propose(created).await?)
            }
            Err(e) => {
                let failed = proposal::StageCreateFailed {
                    stage_id: intent.id.clone(),
                    intent_term: intent.intent_term,
                };
                // A refusal (the intent was fenced) changes nothing; the IVS error is the answer.
                match node.store.propose(failed).await {
                    Ok(()) | Err(ProposalError::Refused(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                Err(e.into())
            }
        }
    }

    /// Delete `intent` in IVS (a stage already gone counts as deleted) and forget it.
    pub async fn delete(&self, node: &Node, intent: Stage) -> Result<(), NodeError> {
        let _busy = self.claim(&intent.id);
        let arn = match &intent.arn {
            Some(arn) => Some(arn.clone()),
            None => find_tagged(node, &stage_tags(&node.cfg.fleet_id, &intent))
                .await?
                .map(|s| s.arn),
        };
        if let Some(arn) = arn {
            let r = node.backend.delete_stage(&arn).await;
            count(node, "DeleteStage", &r);
            match r {
                Ok(()) | Err(BackendError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let deleted = proposal::StageDeleted {
            stage_id: intent.id.clone(),
            intent_term: intent.intent_term,
            now: now_ms(),
        };
        Ok(node.store.propose(deleted).await?)
    }
}

fn count<T>(node: &Node, op: &'static str, r: &Result<T, BackendError>) {
    let result = match r {
        Ok(_) => "ok".to_string(),
        Err(e) => e.kind().to_string(),
    };
    let labels: Labels = vec![("op", op.to_string()), ("result", result)];
    node.metrics.ivs_calls.get_or_create(&labels).inc();
}

async fn find_tagged(node: &Node, tags: &BTreeMap<String, String>) -> Result<Option<StageInfo>, BackendError> {
    Ok(node.backend.list_stages(tags).await?.into_iter().next())
}

/// Finish every pending intent nobody is driving. Runs on the leader only.
pub async fn reconcile_once(node: &Node) {
    if !node.store.is_leader() {
        return;
    }
    let term = node.store.current_term();
    let pending: Vec<Stage> = node
        .store
        .shared
        .read()
        .fleet
        .stages
        .values()
        .filter(|s| s.state != StageState::Active)
        .cloned()
        .collect();
    for stage in pending {
        if node.control.busy.lock().expect("busy set").contains(&stage.id) {
            continue;
        }
        // Take the intent over first, so a late result from its old owner is fenced.
        let stage = if stage.intent_term != term {
            let reclaim = proposal::ReclaimIntent {
                stage_id: stage.id.clone(),
            };
            match node.store.propose(reclaim).await {
                Ok(s) => s,
                Err(_) => continue,
            }
        } else {
            stage
        };
        tracing::info!(stage = %stage.id, state = ?stage.state, "reconciling a pending stage intent");
        let r = match stage.state {
            StageState::Creating => node.control.create(node, stage.clone(), true).await.map(|_| ()),
            StageState::Deleting => node.control.delete(node, stage.clone()).await,
            StageState::Active => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(stage = %stage.id, error = %e, "reconciling failed; will retry");
        }
    }
}

pub async fn reconcile_loop(node: Arc<Node>, every: Duration) {
    loop {
        reconcile_once(&node).await;
        tokio::time::sleep(every).await;
    }
}
