//! The viewer path: join (group-committed, then signed off the reactor), leave, heartbeat, and
//! host tokens. No AWS call happens here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::signing::SigningKeys;
use super::{Node, NodeError};
use crate::clock::now_ms;
use crate::fleet::admission::{client_seat_cap, validate_attributes, validate_id, validate_user_id};
use crate::fleet::transition::{JoinRequest, Seated};
use crate::fleet::{BroadcastState, Millis, Refusal, Session, Stage};
use crate::ivs::signer::{Deliver, Signer};
use crate::ivs::token::{Claims, TokenCapabilities, random_id, session_id};
use crate::metrics::label;
use crate::state::batcher::{BatchKind, Reply, answer_each};
use crate::state::{ProposalError, View, proposal};

/// Joins: one `AdmitViewers` entry per batch; once it is applied, the batch's tokens are signed
/// together on the signer threads, and each viewer is answered by its own token.
pub struct JoinKind {
    pub signer: Signer,
    pub keys: Arc<SigningKeys>,
    pub token_ttl_minutes: u32,
}

impl BatchKind for JoinKind {
    type Req = JoinRequest;
    type Out = Result<Joined, NodeError>;
    type Proposal = proposal::AdmitViewers;

    fn proposal(&self, requests: Vec<JoinRequest>) -> proposal::AdmitViewers {
        proposal::AdmitViewers {
            now: now_ms(),
            requests,
        }
    }

    fn answer(&self, output: Result<Vec<Result<Seated, Refusal>>, ProposalError>, replies: Vec<Reply<Self::Out>>) {
        let seated = match output.and_then(|v| one_each(v, replies.len())) {
            Ok(v) => v,
            Err(e) => return answer_each(Err(e), replies),
        };
        let key = match self.keys.current() {
            Ok(k) => k,
            Err(e) => {
                let outs = (0..replies.len()).map(|_| Err(NodeError::internal(&e))).collect();
                return answer_each(Ok(outs), replies);
            }
        };
        let now = now_ms();
        let mut tokens = Vec::with_capacity(seated.len());
        for (reply, seated) in replies.into_iter().zip(seated) {
            let seated = match seated {
                Ok(s) => s,
                Err(refusal) => {
                    let _ = reply.send(Ok(Err(refusal.into())));
                    continue;
                }
            };
            let s = &seated.session;
            let claims = match claims(
                &seated.stage,
                &s.participant_id,
                &s.user_id,
                &s.attributes,
                TokenCapabilities::VIEWER,
                self.token_ttl_minutes,
                now,
            ) {
                Ok(c) => c,
                Err(e) => {
                    let _ = reply.send(Ok(Err(e)));
                    continue;
                }
            };
            let expires_at = claims.exp;
            let deliver: Deliver = Box::new(move |token| {
                let joined = Joined {
                    session: seated.session,
                    stage: seated.stage,
                    token,
                    expires_at,
                    rejoined: seated.rejoined,
                };
                let _ = reply.send(Ok(Ok(joined)));
            });
            tokens.push((claims, deliver));
        }
        self.signer.sign_each(key, tokens);
    }
}

pub struct LeaveKind;

impl BatchKind for LeaveKind {
    type Req = String;
    type Out = Result<Session, Refusal>;
    type Proposal = proposal::Leave;

    fn proposal(&self, session_ids: Vec<String>) -> proposal::Leave {
        proposal::Leave { session_ids }
    }

    fn answer(&self, output: Result<Vec<Result<Session, Refusal>>, ProposalError>, replies: Vec<Reply<Self::Out>>) {
        answer_each(output.and_then(|v| one_each(v, replies.len())), replies);
    }
}

/// A batch's answer has one entry per request; anything else cannot happen with a consistent
/// state machine, and every caller is answered rather than left hanging.
fn one_each<T>(outs: Vec<T>, n: usize) -> Result<Vec<T>, ProposalError> {
    if outs.len() == n {
        return Ok(outs);
    }
    tracing::error!(
        answers = outs.len(),
        requests = n,
        "the state machine answered a batch with the wrong length"
    );
    Err(ProposalError::WrongAnswer {
        command: "batch",
        response: "wrong length",
    })
}

/// The IVS stage id a token names as its `topic`, once the stage exists. `fleet` keeps the ARN
/// opaque; reading IVS's id out of it is done here, where tokens are built, and the API shows the
/// same value so what a client sees matches what its token says.
pub fn ivs_stage_id(stage: &Stage) -> Option<&str> {
    stage.arn.as_deref().map(crate::ivs::backend::stage_id_from_arn)
}

/// The IVS token claims for one participant on `stage`, issued at `now`.
pub(super) fn claims(
    stage: &Stage,
    participant_id: &str,
    user_id: &str,
    attributes: &BTreeMap<String, String>,
    capabilities: TokenCapabilities,
    ttl_minutes: u32,
    now: Millis,
) -> Result<Claims, NodeError> {
    let (Some(arn), Some(topic), Some(endpoints)) = (&stage.arn, ivs_stage_id(stage), &stage.endpoints) else {
        return Err(NodeError::internal(format!("stage {} has no ARN yet", stage.id)));
    };
    let iat = now / 1000;
    Ok(Claims {
        exp: iat + i64::from(ttl_minutes) * 60,
        iat,
        jti: participant_id.to_string(),
        user_id: Some(user_id.to_string()),
        resource: arn.clone(),
        topic: topic.to_string(),
        events_url: endpoints.events.clone(),
        whip_url: endpoints.whip.clone(),
        capabilities,
        attributes: attributes.clone(),
        version: "1.0".into(),
    })
}

/// A viewer's answer: where to sit and the token to get there.
#[derive(Clone, Debug)]
pub struct Joined {
    pub session: Session,
    pub stage: Stage,
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub rejoined: bool,
}

#[derive(Clone, Debug)]
pub struct HostToken {
    pub stage: Stage,
    pub participant_id: String,
    pub token: String,
    pub expires_at: i64,
}

impl Node {
    /// Seat `user_id` in a live broadcast. `client` is the asking client's network, counted
    /// against the broadcast's per-client seat cap when it has one; `None` (a trusted integrator,
    /// see `api::auth::Principal::seat_client`) is not counted.
    pub async fn join(
        &self,
        broadcast_id: &str,
        user_id: &str,
        attributes: &[(String, String)],
        client: Option<IpAddr>,
    ) -> Result<Joined, NodeError> {
        let started = Instant::now();
        let result = self.join_inner(broadcast_id, user_id, attributes, client).await;
        match &result {
            Ok(j) => {
                let outcome = if j.rejoined {
                    &self.metrics.joins_rejoined
                } else {
                    &self.metrics.joins_admitted
                };
                outcome.inc();
                self.metrics.join_seconds.observe(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                let reason = match e {
                    NodeError::Refused(r) => r.label(),
                    NodeError::Input(_) => "bad_input",
                    _ => "unavailable",
                };
                self.metrics.join_refusals.get_or_create(&label("reason", reason)).inc();
            }
        }
        result
    }

    async fn join_inner(
        &self,
        broadcast_id: &str,
        user_id: &str,
        attributes: &[(String, String)],
        client: Option<IpAddr>,
    ) -> Result<Joined, NodeError> {
        validate_id("broadcastId", broadcast_id)?;
        validate_user_id(user_id)?;
        let attributes = validate_attributes(attributes)?;
        // Refuse what is certain to be refused without writing a log entry. Only the leader is
        // certain, and only once it has applied everything committed: a follower's state may be a
        // few entries behind (a broadcast that went live a moment ago), and so may the leader's
        // own apply behind its commit (a follower can apply an entry first). So a refusal seen
        // in local state is checked again after a read barrier; a follower leaves it to the
        // state machine.
        let view = self
            .store
            .view_where(|v| self.precheck(v, broadcast_id).is_ok())
            .await?;
        let capped = self.precheck(&view, broadcast_id)?;
        // Fail fast (and write nothing) while the node has no key to sign with.
        self.signing_key()?;
        let request = JoinRequest {
            broadcast_id: broadcast_id.to_string(),
            user_id: user_id.to_string(),
            attributes,
            session_id: session_id(crate::clock::now_ms()),
            participant_id: random_id(16),
            // Apply counts seats per client only for requests that name one; without a cap the
            // log entry stays as small as before.
            client: client.filter(|_| capped).map(|c| c.to_string()),
        };
        let joined = self.joins.submit(request).await??;
        self.metrics.viewer_tokens.inc();
        Ok(joined)
    }

    /// What local state says of a join to `broadcast_id`: whether to name the client (its seats
    /// may be capped), or the refusal that is certain on the leader.
    fn precheck(&self, view: &View, broadcast_id: &str) -> Result<bool, Refusal> {
        let current = self.store.is_leader();
        match view.fleet.broadcasts.get(broadcast_id) {
            None if current => Err(Refusal::UnknownBroadcast(broadcast_id.into())),
            Some(b) if current && b.state != BroadcastState::Live => {
                Err(Refusal::BroadcastNotLive(broadcast_id.into()))
            }
            Some(b) => Ok(client_seat_cap(b, &view.policy) > 0),
            // Not known here yet: name the client, in case its seats are capped.
            None => Ok(true),
        }
    }

    /// End a session at once and free its seat.
    pub async fn leave(&self, session_id: &str) -> Result<Session, NodeError> {
        if session_id.is_empty() || session_id.len() > 64 {
            return Err(Refusal::UnknownSession(session_id.into()).into());
        }
        Ok(self.leaves.submit(session_id.to_string()).await??)
    }

    /// Mark a session alive; the renewal is written with the next presence batch.
    pub async fn heartbeat(&self, session_id: &str) -> Result<Session, NodeError> {
        let mut session = self.current_session(session_id).await?;
        self.presence.touch(session_id);
        let now = now_ms();
        session.last_seen = now;
        session.lease_until = now + self.store.view().policy.session_lease_ms;
        Ok(session)
    }

    /// A session as this node knows it, or — when it knows none by that id — as of every write
    /// committed before now: in a cluster, a viewer seated through one node may come back through
    /// another (behind a load balancer) before that node has applied the seat.
    pub async fn current_session(&self, session_id: &str) -> Result<Session, NodeError> {
        self.store
            .view_where(|v| v.session(session_id).is_some())
            .await?
            .session(session_id)
            .ok_or_else(|| Refusal::UnknownSession(session_id.into()).into())
    }

    /// Publish+subscribe tokens for a host, one per origin stage (idempotent per user id).
    pub async fn host_tokens(
        &self,
        broadcast_id: &str,
        user_id: &str,
        attributes: &[(String, String)],
    ) -> Result<Vec<HostToken>, NodeError> {
        validate_id("broadcastId", broadcast_id)?;
        validate_user_id(user_id)?;
        let attributes = validate_attributes(attributes)?;
        let key = self.signing_key()?;
        let add = proposal::AddHost {
            broadcast_id: broadcast_id.into(),
            user_id: user_id.into(),
            participant_base: random_id(12),
            attributes,
            now: now_ms(),
        };
        let (host, origins) = self.store.propose(add).await?;
        let mut out = Vec::new();
        for stage in origins {
            let participant_id = crate::fleet::transition::host_participant(&host.participant_base, stage.slot);
            let claims = claims(
                &stage,
                &participant_id,
                &host.user_id,
                &host.attributes,
                TokenCapabilities::HOST,
                self.cfg.token_ttl_minutes,
                now_ms(),
            )?;
            let expires_at = claims.exp;
            let token = self.signer.sign(key.clone(), claims).await;
            self.metrics.tokens_minted.get_or_create(&label("kind", "host")).inc();
            out.push(HostToken {
                stage,
                participant_id,
                token,
                expires_at,
            });
        }
        Ok(out)
    }
}
