//! `assignment(sessionId)`: a viewer's seat, its moves and its end, as the node follows them from
//! the applied log (`Live` routes each session's notices to its open assignments).

use std::sync::{Arc, Mutex};

use futures_util::stream;
use tokio::sync::Notify;

use super::{BoxStream, Live};
use crate::clock::now_ms;
use crate::fleet::event::EndReason;
use crate::fleet::{Session, Stage};
use crate::ivs::token::TokenCapabilities;
use crate::metrics::label;
use crate::node::join::claims;
use crate::node::{Node, NodeError};

/// What `assignment` sends (the large variant is the common one: no boxing).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum AssignmentUpdate {
    /// Where the session sits, with a fresh token for it (the first message).
    Seated {
        session: Session,
        stage: Stage,
        token: String,
        expires_at: i64,
    },
    /// The session was moved to another stage (its own was drained): a fresh token for it.
    Moved {
        session: Session,
        stage: Stage,
        token: String,
        expires_at: i64,
    },
    /// The session ended; the subscription completes after this.
    Ended {
        session: Session,
        reason: Option<EndReason>,
    },
}

/// What an open assignment hears about its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Notice {
    /// It may sit elsewhere now: look again.
    Moved,
    /// It ended (`None`: this node did not see why).
    Ended(Option<EndReason>),
}

/// What an open assignment was told and has not read yet. Moves coalesce (each one reads the
/// session anew, so one pending move stands for many); an end wins over a pending move and is
/// never dropped. Some 80 bytes a subscriber, where a tokio channel took ~600.
#[derive(Default)]
pub(super) struct Notices {
    pending: Mutex<Pending>,
    wake: Notify,
}

#[derive(Default)]
struct Pending {
    moved: bool,
    ended: Option<Option<EndReason>>,
    /// The subscriber is gone: nothing reads these any more.
    closed: bool,
}

impl Notices {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("notices lock")
    }

    pub(super) fn moved(&self) {
        self.pending().moved = true;
        self.wake.notify_one();
    }

    /// The session ended; the first reason told is the one read.
    pub(super) fn end(&self, reason: Option<EndReason>) {
        self.pending().ended.get_or_insert(reason);
        self.wake.notify_one();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.pending().closed
    }

    /// The next notice without waiting: the end first, then a pending move.
    pub(super) fn try_recv(&self) -> Option<Notice> {
        let mut p = self.pending();
        if let Some(reason) = p.ended {
            return Some(Notice::Ended(reason));
        }
        std::mem::take(&mut p.moved).then_some(Notice::Moved)
    }

    pub(super) async fn recv(&self) -> Notice {
        loop {
            let told = self.wake.notified();
            if let Some(n) = self.try_recv() {
                return n;
            }
            told.await;
        }
    }
}

/// An open assignment: hears its session's moves and end; deregisters when dropped (the
/// subscriber completed, left, or its socket closed).
pub(super) struct OpenAssignment {
    pub(super) notices: Arc<Notices>,
    pub(super) live: Arc<Live>,
    pub(super) session_id: String,
}

impl Drop for OpenAssignment {
    fn drop(&mut self) {
        self.notices.pending().closed = true;
        self.live.close_assignment(&self.session_id);
    }
}

impl Node {
    /// `assignment(sessionId)`: the session's seat with a fresh token at once, then a fresh token
    /// each time it is moved to another stage, then its end (with the reason), after which the
    /// stream ends. While it is open the session is renewed.
    pub async fn assignment(self: &Arc<Self>, session_id: &str) -> Result<BoxStream<AssignmentUpdate>, NodeError> {
        // Register before looking, so an end or a move applied in between is not missed.
        let open = self.live.open_assignment(session_id);
        let session = self.current_session(session_id).await?;
        let (stage, token, expires_at) = self.seat_token(&session).await?;
        // The seat is renewed with the next batch: opening the subscription counts as being seen.
        self.presence.touch(session_id);
        let seated = AssignmentUpdate::Seated {
            session: session.clone(),
            stage,
            token,
            expires_at,
        };
        let state = Following {
            first: Some(seated),
            node: self.clone(),
            session,
            open: Some(open),
        };
        Ok(Box::pin(stream::unfold(state, |mut f| async move {
            if let Some(first) = f.first.take() {
                return Some((first, f));
            }
            let open = f.open.take()?;
            loop {
                match open.notices.recv().await {
                    Notice::Moved => {
                        let Some(now) = f.node.store.view().session(&f.session.id) else {
                            continue; // it ended too: its notice follows
                        };
                        if now.stage_id == f.session.stage_id {
                            continue;
                        }
                        f.session = now.clone();
                        // Boxed: a future held only while a move is signed, not inline in every open
                        // subscriber's state (it is most of its size).
                        match Box::pin(f.node.seat_token(&now)).await {
                            Ok((stage, token, expires_at)) => {
                                f.open = Some(open);
                                let moved = AssignmentUpdate::Moved {
                                    session: now,
                                    stage,
                                    token,
                                    expires_at,
                                };
                                return Some((moved, f));
                            }
                            Err(e) => {
                                tracing::warn!(session = %now.id, error = %e, "no token for a moved session");
                                continue;
                            }
                        }
                    }
                    Notice::Ended(reason) => {
                        drop(open);
                        let ended = AssignmentUpdate::Ended {
                            session: f.session.clone(),
                            reason,
                        };
                        // `open` stays taken: the next poll completes the stream.
                        return Some((ended, f));
                    }
                }
            }
        })))
    }

    /// The session's stage and a fresh subscribe-only token for it.
    async fn seat_token(&self, session: &Session) -> Result<(Stage, String, i64), NodeError> {
        let stage = self
            .store
            .view()
            .fleet
            .stages
            .get(&session.stage_id)
            .cloned()
            .ok_or_else(|| NodeError::internal("a session's stage is missing"))?;
        let key = self.signing_key()?;
        let c = claims(
            &stage,
            &session.participant_id,
            &session.user_id,
            &session.attributes,
            TokenCapabilities::VIEWER,
            self.cfg.token_ttl_minutes,
            now_ms(),
        )?;
        let expires_at = c.exp;
        let token = self.signer.sign(key, c).await;
        self.metrics
            .tokens_minted
            .get_or_create(&label("kind", "assignment"))
            .inc();
        Ok((stage, token, expires_at))
    }
}

/// An `assignment` stream's state between messages.
struct Following {
    first: Option<AssignmentUpdate>,
    node: Arc<Node>,
    session: Session,
    /// `None` once ended.
    open: Option<OpenAssignment>,
}
