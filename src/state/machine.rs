//! The deterministic state machine: applies committed [`Command`]s through
//! `crate::fleet::transition` and persists the result in one sled tree. Each `apply` call writes
//! its changes and `last_applied` all or nothing (`frozen`; the entries themselves are already flushed
//! in the log), so a crash never leaves half an entry and a restart re-applies only what the
//! state had not yet written.

use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError};
use tokio::sync::broadcast;

use super::bus::{self, Applied, Event};
use super::command::{Command, Response};
use super::sled_sessions::{SessionIndex, SledSessions};
use super::snapshot::SnapshotStore;
use super::{LogId, NodeId, StoredMembership, TypeConfig, keys};
use crate::fleet::admission::FleetPolicy;
use crate::fleet::sessions::Sessions;
use crate::fleet::transition::{Dirty, World};
use crate::fleet::{Fleet, Session};

/// The in-memory part of the applied state: small, read by every query.
#[derive(Clone, Debug, Default)]
pub struct Core {
    pub fleet: Fleet,
    pub policy: FleetPolicy,
    /// A policy was ever set (the cluster's first start seeds it from the config; `setPolicy`
    /// changes it). Until then `policy` holds the defaults.
    pub policy_set: bool,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Read side of the applied state: the in-memory core (swapped whole after each apply), the
/// sessions in sled, the event bus. Outside `state/` it is read only through [`View`]s.
pub struct Shared {
    core: RwLock<Arc<Core>>,
    pub(super) tree: sled::Tree,
    /// The last apply's redo record (`frozen`), in a tree of its own.
    redo: sled::Tree,
    /// Sessions by user, stage and lease; written only while applying (see `sled_sessions`).
    index: RwLock<SessionIndex>,
    pub(super) events: broadcast::Sender<Applied>,
    /// Bumped after every apply that changed API keys, the signing key or the policy (and after a
    /// snapshot install). Cheap to watch from many WebSockets: a join storm never wakes them.
    pub(super) meta_version: tokio::sync::watch::Sender<u64>,
    /// Held across an apply call (and a snapshot install); a snapshot takes it only to mark its
    /// point in time, so it never sees half of an apply.
    apply_lock: tokio::sync::Mutex<()>,
    /// Keeps what a snapshot being read needs while apply goes on (see `frozen`).
    freezer: super::frozen::Freezer,
    /// One snapshot build or install at a time.
    snapshot_lock: tokio::sync::Mutex<()>,
    /// This node's id: which entries' answers it keeps (see [`Shared::take_answer`]).
    node_id: NodeId,
    /// Answers of the join batches this node forwarded to another leader, by log index, from its
    /// own apply of them, until the forwarding caller takes them (at most [`KEPT_ANSWERS`]).
    answers: std::sync::Mutex<std::collections::BTreeMap<u64, (LogId, Response)>>,
}

/// Forwarded batches whose answers are kept at most; the oldest go first. A caller takes its
/// answer right after this node applied the entry, so only batches whose caller gave up (the
/// leader died before it answered) are ever left over; a node has few batches in flight.
const KEPT_ANSWERS: usize = 256;

impl Shared {
    fn core(&self) -> Arc<Core> {
        self.core.read().expect("state lock poisoned").clone()
    }

    /// The applied state as of now; it does not change under the holder.
    pub fn view(self: &Arc<Self>) -> View {
        View {
            core: self.core(),
            shared: self.clone(),
        }
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, SessionIndex> {
        self.index.read().expect("session index lock poisoned")
    }

    /// The answer this node's apply computed for the join batch it forwarded and another node
    /// appended as `log_id` (`AdmitViewers` with this node as `origin`), once: the same answer
    /// the leader computed (apply is deterministic), without it crossing the network. `None` if
    /// this node has not applied that entry, got past it by a snapshot, or it is not one of them.
    pub fn take_answer(&self, log_id: &LogId) -> Option<Response> {
        let mut answers = self.answers.lock().expect("answers lock poisoned");
        match answers.remove(&log_id.index) {
            Some((id, answer)) if id == *log_id => Some(answer),
            _ => None,
        }
    }

    fn keep_answers(&self, kept: Vec<(LogId, Response)>) {
        if kept.is_empty() {
            return;
        }
        let mut answers = self.answers.lock().expect("answers lock poisoned");
        for (log_id, answer) in kept {
            answers.insert(log_id.index, (log_id, answer));
        }
        while answers.len() > KEPT_ANSWERS {
            answers.pop_first();
        }
    }
}

/// An immutable snapshot of the applied state, taken once per request: every field a query reads
/// from it (broadcasts, stages, keys, policy, counts) is of the same applied index. Sessions live
/// in sled, not in memory; [`View::session`] reads the stored one at the moment it is called.
#[derive(Clone)]
pub struct View {
    core: Arc<Core>,
    shared: Arc<Shared>,
}

impl std::ops::Deref for View {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl View {
    pub fn session(&self, id: &str) -> Option<Session> {
        super::sled_sessions::stored(&self.shared.tree, id).ok().flatten()
    }

    pub fn sessions_on_stage(&self, stage_id: &str) -> Vec<Session> {
        let ids = self.shared.index().on_stage(stage_id);
        ids.iter().filter_map(|id| self.session(id)).collect()
    }

    /// Whether any session's lease ended before `now`.
    pub fn any_expired(&self, now: crate::fleet::Millis) -> bool {
        !self.shared.index().expired(now, 1).is_empty()
    }

    /// Every stored session (for audits and tests; walks the whole key range).
    pub fn all_sessions(&self) -> impl Iterator<Item = Session> + '_ {
        self.shared
            .tree
            .scan_prefix(keys::SESSION)
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| super::sled_sessions::decode(&v))
    }
}

#[derive(Clone)]
pub struct StateMachine {
    db: sled::Db,
    shared: Arc<Shared>,
    snapshots: SnapshotStore,
}

fn read_json<T: serde::de::DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, StorageError<NodeId>> {
    let Some(bytes) = tree.get(key).map_err(|e| StorageIOError::read_state_machine(&e))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StorageIOError::read_state_machine(&e).into())
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

/// Rebuild the in-memory core from the tree (at open and after installing a snapshot).
pub(crate) fn load_core(tree: &sled::Tree) -> Result<Core, StorageError<NodeId>> {
    let mut core = Core {
        last_applied: read_json(tree, keys::APPLIED)?,
        membership: read_json(tree, keys::MEMBERSHIP)?.unwrap_or_default(),
        policy_set: tree
            .contains_key(keys::POLICY)
            .map_err(|e| StorageIOError::read_state_machine(&e))?,
        policy: read_json(tree, keys::POLICY)?.unwrap_or_default(),
        ..Core::default()
    };
    // Written as `null` by any meta change before the first key (the policy is seeded first).
    core.fleet.signing_key = read_json::<Option<_>>(tree, keys::SIGNING_KEY)?.flatten();
    core.fleet.api_keys = read_json(tree, keys::API_KEYS)?.unwrap_or_default();
    for r in tree.scan_prefix(keys::BROADCAST) {
        let (_, v) = r.map_err(|e| StorageIOError::read_state_machine(&e))?;
        let b: crate::fleet::Broadcast =
            serde_json::from_slice(&v).map_err(|e| StorageIOError::read_state_machine(&e))?;
        core.fleet.broadcasts.insert(b.id.clone(), b);
    }
    for r in tree.scan_prefix(keys::STAGE) {
        let (_, v) = r.map_err(|e| StorageIOError::read_state_machine(&e))?;
        let s: crate::fleet::Stage = serde_json::from_slice(&v).map_err(|e| StorageIOError::read_state_machine(&e))?;
        core.fleet.stages.insert(s.id.clone(), s);
    }
    Ok(core)
}

/// Route one command to its transition. `term` is the entry's term: intents belong to it.
fn apply_command<S: Sessions + ?Sized>(w: &mut World<'_, S>, cmd: Command, term: u64) -> Response {
    match cmd {
        Command::Fenced {
            term: proposed,
            command,
        } => {
            if proposed == term {
                apply_command(w, *command, term)
            } else {
                Response::Refused(crate::fleet::Refusal::StaleLeader(proposed, term))
            }
        }
        Command::SetPolicy(p) => {
            w.set_policy(p);
            Ok::<_, crate::fleet::Refusal>(()).into()
        }
        Command::PatchPolicy(p) => Response::Policy(w.patch_policy(&p)),
        Command::SetSigningKey(k) => {
            w.set_signing_key(k);
            Ok::<_, crate::fleet::Refusal>(()).into()
        }
        Command::CreateApiKey(k) => Response::ApiKey(w.create_api_key(k)),
        Command::RevokeApiKey { id } => w.revoke_api_key(&id).into(),
        Command::StartBroadcast {
            id,
            name,
            now,
            max_seats_per_client,
            fanout,
        } => w
            .start_broadcast(&id, &name, max_seats_per_client, fanout, now, term)
            .into(),
        Command::AddStage {
            broadcast_id,
            role,
            now,
        } => w.add_stage(&broadcast_id, role, now, term).into(),
        Command::StageCreated {
            stage_id,
            intent_term,
            arn,
            endpoints,
            now,
        } => w.stage_created(&stage_id, intent_term, arn, endpoints, now).into(),
        Command::StageCreateFailed {
            stage_id,
            intent_term,
            failure,
        } => w.stage_create_failed(&stage_id, intent_term, failure).into(),
        Command::StageDeleteFailed {
            stage_id,
            intent_term,
            failure,
        } => w.stage_delete_failed(&stage_id, intent_term, failure).into(),
        Command::ReclaimIntent { stage_id } => w.reclaim_intent(&stage_id, term).into(),
        Command::DeleteStage { stage_id, force } => match w.delete_stage(&stage_id, force, term) {
            Ok((stage, evicted)) => Response::StageDeleting { stage, evicted },
            Err(e) => Response::Refused(e),
        },
        Command::StageDeleted {
            stage_id,
            intent_term,
            now,
        } => w.stage_deleted(&stage_id, intent_term, now).into(),
        Command::EndBroadcast { id, now } => match w.end_broadcast(&id, now, term) {
            Ok((broadcast, deleting)) => Response::Broadcast { broadcast, deleting },
            Err(e) => Response::Refused(e),
        },
        Command::AdmitViewers { now, requests, .. } => Response::Admitted(w.admit(&requests, now)),
        Command::Leave { session_ids } => {
            let left = w.leave(&session_ids);
            w.retire_drained_touched(term);
            Response::Left(left)
        }
        Command::Renew { session_ids, now } => Response::Renewed(w.renew(&session_ids, now)),
        Command::Expire { now, limit } => {
            let expired = w.expire(now, limit);
            w.retire_drained_touched(term);
            Response::Expired(expired)
        }
        Command::AddHost {
            broadcast_id,
            user_id,
            participant_base,
            attributes,
            now,
        } => match w.add_host(&broadcast_id, &user_id, &participant_base, attributes, now) {
            Ok((host, origins)) => Response::Host { host, origins },
            Err(e) => Response::Refused(e),
        },
        Command::SetPublishers {
            stage_id,
            publishers,
            now,
        } => w.set_publishers(&stage_id, publishers, now).into(),
        Command::HostPublishing {
            broadcast_id,
            participant_id,
            publishing,
            now,
        } => w
            .host_publishing(&broadcast_id, &participant_id, publishing, now)
            .into(),
        Command::ReplicationReport {
            stage_id,
            participant_id,
            report,
            now,
        } => w.replication_report(&stage_id, &participant_id, report, now).into(),
        Command::DrainStage { stage_id } => w.drain_stage(&stage_id, term).into(),
        Command::UndrainStage { stage_id } => w.undrain_stage(&stage_id).into(),
        Command::ReleaseUnused { session_ids } => {
            let n = w.release_unused(&session_ids);
            w.retire_drained_touched(term);
            Response::Released(n)
        }
        Command::MoveViewers { stage_id, limit } => match w.move_viewers(&stage_id, limit, term) {
            Ok(n) => Response::Moved(n),
            Err(e) => Response::Refused(e),
        },
    }
}

impl StateMachine {
    /// Open the state machine of node `node_id` on `db`.
    pub fn open(
        db: &sled::Db,
        snapshot_dir: std::path::PathBuf,
        node_id: NodeId,
    ) -> Result<Self, StorageError<NodeId>> {
        let tree = db.open_tree("sm").map_err(|e| StorageIOError::read_state_machine(&e))?;
        let redo = db
            .open_tree("sm_redo")
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        super::frozen::recover(&tree, &redo).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let core = load_core(&tree)?;
        let index = SessionIndex::load(&tree).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let events = bus::channel();
        let shared = Arc::new(Shared {
            core: RwLock::new(Arc::new(core)),
            index: RwLock::new(index),
            tree,
            redo,
            events,
            meta_version: tokio::sync::watch::Sender::new(0),
            apply_lock: tokio::sync::Mutex::new(()),
            freezer: super::frozen::Freezer::default(),
            snapshot_lock: tokio::sync::Mutex::new(()),
            node_id,
            answers: Default::default(),
        });
        let snapshots = SnapshotStore::new(snapshot_dir).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Self {
            db: db.clone(),
            shared,
            snapshots,
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Apply `entries` to a copy of the core and collect their writes into one batch. Working on
    /// a copy keeps the lock readers need free while a large batch applies; the copy is swapped
    /// in once its writes are durable.
    fn apply_in_memory(
        &self,
        index: &mut SessionIndex,
        entries: impl IntoIterator<Item = openraft::Entry<TypeConfig>>,
    ) -> Result<Applying, StorageError<NodeId>> {
        let mut core = (*self.shared.core()).clone();
        let mut sessions = SledSessions::new(&self.shared.tree, index);
        let mut dirty = Dirty::default();
        let mut events = Vec::new();
        let mut responses = Vec::new();
        let mut kept = Vec::new();
        for entry in entries {
            core.last_applied = Some(entry.log_id);
            let index = entry.log_id.index;
            let response = match entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(m) => {
                    core.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::None
                }
                EntryPayload::Normal(cmd) => {
                    let at_ms = cmd.proposed_at().unwrap_or_else(crate::clock::now_ms);
                    // A batch this node forwarded, appended by another leader: nobody waits for it
                    // through this node's Raft, its forwarding caller takes the answer from here.
                    let me = self.shared.node_id;
                    let forwarded_from_here = cmd.origin() == Some(me) && entry.log_id.leader_id.node_id != me;
                    let Core { fleet, policy, .. } = &mut core;
                    let mut w = World {
                        fleet,
                        policy,
                        sessions: &mut sessions,
                        dirty: &mut dirty,
                    };
                    let r = apply_command(&mut w, cmd, entry.log_id.leader_id.term);
                    events.extend(dirty.changes.drain(..).map(|change| Event { index, at_ms, change }));
                    if forwarded_from_here {
                        kept.push((entry.log_id, r));
                        Response::None
                    } else {
                        r
                    }
                }
            };
            responses.push(response);
        }
        if let Some(e) = sessions.take_error() {
            return Err(StorageIOError::read_state_machine(&e).into());
        }
        let mut batch = std::mem::take(&mut sessions.batch);
        for id in &dirty.broadcasts {
            match core.fleet.broadcasts.get(id) {
                Some(b) => batch.insert(keys::broadcast(id), to_json(b)),
                None => batch.remove(keys::broadcast(id)),
            }
        }
        for id in &dirty.stages {
            match core.fleet.stages.get(id) {
                Some(s) => batch.insert(keys::stage(id), to_json(s)),
                None => batch.remove(keys::stage(id)),
            }
        }
        if dirty.policy {
            core.policy_set = true;
            batch.insert(keys::POLICY, to_json(&core.policy));
        }
        if dirty.meta {
            batch.insert(keys::SIGNING_KEY, to_json(&core.fleet.signing_key));
            batch.insert(keys::API_KEYS, to_json(&core.fleet.api_keys));
        }
        batch.insert(keys::APPLIED, to_json(&core.last_applied));
        batch.insert(keys::MEMBERSHIP, to_json(&core.membership));
        Ok(Applying {
            responses,
            kept,
            batch,
            events,
            meta: dirty.meta,
            core,
        })
    }
}

/// What one apply call computed, before it is written.
struct Applying {
    responses: Vec<Response>,
    /// Answers of the batches this node forwarded (see [`Shared::take_answer`]).
    kept: Vec<(LogId, Response)>,
    batch: super::frozen::Writes,
    /// The changes to publish once the batch is written.
    events: Vec<Event>,
    /// API keys, the signing key or the policy changed.
    meta: bool,
    core: Core,
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("state records serialize")
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let core = self.shared.core();
        Ok((core.last_applied, core.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let _guard = self.shared.apply_lock.lock().await;
        // The index changes in place: readers wait until the batch below has landed. (A failed
        // apply stops Raft; the index is rebuilt from sled at the next start.)
        let mut index = self.shared.index.write().expect("session index lock poisoned");
        let Applying {
            responses,
            kept,
            batch,
            events,
            meta,
            core,
        } = self.apply_in_memory(&mut index, entries)?;
        // All or nothing through the redo record (`frozen`), not flushed here: every applied entry
        // is already durable in the log (flushed at append), and data and `last_applied` land
        // together, so after a crash the state is exactly "as of last_applied" and openraft
        // re-applies the rest from the log.
        // Snapshots flush first, so the log is never purged past what the state has on disk.
        self.shared
            .freezer
            .apply(&self.shared.tree, &self.shared.redo, batch)
            .map_err(sm_write_err)?;
        *self.shared.core.write().expect("state lock poisoned") = Arc::new(core);
        drop(index);
        // Before openraft counts these entries applied, which is what the forwarding caller waits for.
        self.shared.keep_answers(kept);
        // Only now is the change durable: tell subscribers.
        if meta {
            self.shared.meta_version.send_modify(|v| *v += 1);
        }
        if !events.is_empty() {
            let _ = self.shared.events.send(Applied::Changes(events.into()));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let file = self
            .snapshots
            .receiving()
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        use tokio::io::AsyncWriteExt;
        let read_err = |e: &std::io::Error| StorageIOError::read_snapshot(Some(meta.signature()), e);
        let mut snapshot = *snapshot;
        snapshot.flush().await.map_err(|e| read_err(&e))?;
        let mut file = snapshot.into_std().await;
        let _building = self.shared.snapshot_lock.lock().await;
        let _guard = self.shared.apply_lock.lock().await;
        // The file is read pair by pair into one sled batch: the old state is replaced whole or
        // not at all. Blocking file and tree work runs off the async workers.
        let (tree, redo) = (self.shared.tree.clone(), self.shared.redo.clone());
        let snapshots = self.snapshots.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
            use std::io::Seek;
            file.rewind().map_err(|e| e.to_string())?;
            // The last apply's redo record first: written again over the installed state at the
            // next start, it would undo part of it.
            redo.clear().map_err(|e| e.to_string())?;
            let mut batch = sled::Batch::default();
            for k in tree.iter().keys() {
                batch.remove(k.map_err(|e| e.to_string())?);
            }
            super::snapshot::read_file(&mut file, |k, v| batch.insert(k, v)).map_err(|e| e.to_string())?;
            tree.apply_batch(batch).map_err(|e| e.to_string())?;
            snapshots.adopt(&mut file).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| read_err(&std::io::Error::other(e)))?;
        done.map_err(|e| read_err(&std::io::Error::other(e)))?;
        super::flush(&self.db).await.map_err(sm_write_err)?;
        let core = load_core(&self.shared.tree)?;
        let index = SessionIndex::load(&self.shared.tree).map_err(|e| StorageIOError::read_state_machine(&e))?;
        *self.shared.index.write().expect("session index lock poisoned") = index;
        *self.shared.core.write().expect("state lock poisoned") = Arc::new(core);
        self.shared.meta_version.send_modify(|v| *v += 1);
        let _ = self.shared.events.send(Applied::Reset { lagged: false });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self
            .snapshots
            .open()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Apply pauses only to mark the snapshot's point in time; the tree is then read as of
        // that point while apply goes on (`frozen`), and written to the file off the async
        // workers. No flush is needed: reading sees what apply wrote, durable or not, and the
        // snapshot file is synced on its own.
        let _building = self.shared.snapshot_lock.lock().await;
        let (core, held) = {
            let _guard = self.shared.apply_lock.lock().await;
            let started = std::time::Instant::now();
            self.shared.freezer.freeze();
            (self.shared.core(), started.elapsed())
        };
        let last = core.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: core.membership.clone(),
            snapshot_id: match last {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, crate::clock::now_ms()),
                None => format!("none-{}", crate::clock::now_ms()),
            },
        };
        let snapshots = self.snapshots.clone();
        let file_meta = meta.clone();
        let shared = self.shared.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, u64, std::fs::File)> {
            let mut failed = None;
            let mut count = 0u64;
            let pairs = shared.freezer.read(&shared.tree).map_while(|p| match p {
                Ok(pair) => {
                    count += 1;
                    Some(pair)
                }
                Err(e) => {
                    failed = Some(e);
                    None
                }
            });
            let saved = snapshots.save(&file_meta, pairs);
            shared.freezer.thaw();
            if let Some(e) = failed {
                return Err(std::io::Error::other(e));
            }
            let bytes = saved?;
            let (_, file) = snapshots
                .open()?
                .ok_or_else(|| std::io::Error::other("snapshot file vanished"))?;
            Ok((bytes, count, file))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let (bytes, count, file) = written;
        tracing::info!(
            index = last.map(|l| l.index),
            pairs = count,
            bytes,
            apply_paused_us = held.as_micros() as u64,
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    use super::*;
    use crate::fleet::admission::FleetPolicy;

    /// A first start seeds the policy before it has a signing key (which needs IVS): a node that
    /// stops in between, or fails to import the key, must open its data again.
    #[tokio::test]
    async fn a_state_without_a_signing_key_opens_again_after_a_meta_change() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
            StateMachine::open(&db, dir.path().join("snapshots"), 1).expect("the state opens")
        };
        let mut sm = open();
        let policy = FleetPolicy {
            seats_per_stage: 7,
            ..FleetPolicy::DEFAULT
        };
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Command::SetPolicy(policy.clone())),
        };
        sm.apply(vec![entry]).await.unwrap();
        drop(sm);
        let reopened = open();
        let view = reopened.shared().view();
        assert_eq!(
            (view.policy.seats_per_stage, view.fleet.signing_key.is_none()),
            (7, true)
        );
        assert_eq!(view.last_applied.map(|l| l.index), Some(1));
    }
}
