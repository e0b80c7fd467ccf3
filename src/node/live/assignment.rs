//! `assignment(sessionId)`: a viewer's seat, its moves and its end, as the node follows them from
//! the applied log (`Live` routes each session's notices to its open assignments).

use std::sync::Arc;

use futures_util::stream;
use tokio::sync::mpsc;

use super::{BoxStream, Live};
use crate::clock::now_ms;
use crate::fleet::event::EndReason;
use crate::fleet::{Refusal, Session, Stage};
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

/// An open assignment: hears its session's moves and end; deregisters when dropped (the
/// subscriber completed, left, or its socket closed).
pub(super) struct OpenAssignment {
    pub(super) ended: Option<mpsc::Receiver<Notice>>,
    pub(super) live: Arc<Live>,
    pub(super) session_id: String,
}

impl Drop for OpenAssignment {
    fn drop(&mut self) {
        drop(self.ended.take());
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
        let Some(session) = self.store.view().session(session_id) else {
            return Err(Refusal::UnknownSession(session_id.into()).into());
        };
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
            let mut open = f.open.take()?;
            loop {
                let notice = open.ended.as_mut().expect("taken only on drop").recv().await;
                match notice {
                    Some(Notice::Moved) => {
                        let Some(now) = f.node.store.view().session(&f.session.id) else {
                            continue; // it ended too: its notice follows
                        };
                        if now.stage_id == f.session.stage_id {
                            continue;
                        }
                        f.session = now.clone();
                        match f.node.seat_token(&now).await {
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
                    // A closed channel (the registration was dropped by a reset that found the
                    // session gone) is an end without a known reason.
                    notice => {
                        let reason = match notice {
                            Some(Notice::Ended(reason)) => reason,
                            _ => None,
                        };
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
