//! Transitions of viewers: seating them (or giving a seated user the same seat back), leaving,
//! lease renewal and expiry, and releasing seats never used. Same rules as the rest of
//! `transition`: each fully applies or refuses and changes nothing; placement itself is
//! `placement`'s, admission rules `admission`'s.

use std::collections::BTreeMap;

use super::super::admission::{self, Admission};
use super::super::event::{Change, EndReason};
use super::super::model::*;
use super::super::sessions::Sessions;
use super::{JoinRequest, Seated, World};

impl<S: Sessions + ?Sized> World<'_, S> {
    /// Seat each viewer (or give a seated user the same seat back), in order.
    pub fn admit(&mut self, requests: &[JoinRequest], now: Millis) -> Vec<Result<Seated, Refusal>> {
        let mut in_use = admission::subscriptions_in_use(self.fleet);
        let results: Vec<_> = requests.iter().map(|r| self.admit_one(r, now, &mut in_use)).collect();
        // One change per stage that took new viewers, in stage order.
        let mut seated: BTreeMap<&str, (&str, u32)> = BTreeMap::new();
        let mut refused: BTreeMap<(&str, &'static str), u32> = BTreeMap::new();
        for (r, out) in requests.iter().zip(&results) {
            match out {
                Ok(s) if !s.rejoined => seated.entry(&s.stage.id).or_insert((&s.stage.broadcast_id, 0)).1 += 1,
                Ok(_) => {}
                Err(refusal) => *refused.entry((&r.broadcast_id, refusal.label())).or_default() += 1,
            }
        }
        let mut changes: Vec<Change> = seated
            .into_iter()
            .map(|(stage_id, (broadcast_id, count))| Change::Seated {
                broadcast_id: broadcast_id.to_string(),
                stage_id: stage_id.to_string(),
                count,
            })
            .collect();
        changes.extend(
            refused
                .into_iter()
                .map(|((broadcast_id, reason), count)| Change::Refused {
                    broadcast_id: broadcast_id.to_string(),
                    reason,
                    count,
                }),
        );
        self.dirty.changes.extend(changes);
        results
    }

    fn admit_one(&mut self, r: &JoinRequest, now: Millis, in_use: &mut u64) -> Result<Seated, Refusal> {
        let existing = self.sessions.by_user(&r.broadcast_id, &r.user_id);
        let client_seats = r
            .client
            .as_deref()
            .map(|c| self.sessions.client_seats(&r.broadcast_id, c));
        match admission::admit(
            self.fleet,
            self.policy,
            &r.broadcast_id,
            existing.as_ref(),
            client_seats,
        )? {
            Admission::Rejoin => {
                let mut session = existing.expect("rejoin implies a session");
                session.last_seen = now;
                session.lease_until = now + self.policy.session_lease_ms;
                self.sessions.put(session.clone());
                let stage = self.fleet.stages[&session.stage_id].clone();
                Ok(Seated {
                    session,
                    stage,
                    rejoined: true,
                })
            }
            Admission::Seat(stage_id) => {
                let streams = self.fleet.stages[&stage_id].streams();
                let quota = self.policy.region_subscription_quota;
                if quota > 0 && *in_use + streams > quota {
                    return Err(Refusal::RegionFull(quota));
                }
                *in_use += streams;
                let session = Session {
                    id: r.session_id.clone(),
                    broadcast_id: r.broadcast_id.clone(),
                    user_id: r.user_id.clone(),
                    stage_id: stage_id.clone(),
                    participant_id: r.participant_id.clone(),
                    attributes: r.attributes.clone(),
                    joined_at: now,
                    last_seen: now,
                    lease_until: now + self.policy.session_lease_ms,
                    client: r.client.clone(),
                };
                self.sessions.put(session.clone());
                let stage = self
                    .fleet
                    .stages
                    .get_mut(&stage_id)
                    .expect("placement picks existing stages");
                stage.viewers += 1;
                let stage = stage.clone();
                self.touch_stage(&stage_id);
                if let Some(b) = self.fleet.broadcasts.get_mut(&r.broadcast_id) {
                    b.admitted_total += 1;
                }
                self.touch_broadcast(&r.broadcast_id);
                Ok(Seated {
                    session,
                    stage,
                    rejoined: false,
                })
            }
        }
    }

    /// End sessions now, freeing their seats.
    pub fn leave(&mut self, session_ids: &[String]) -> Vec<Result<Session, Refusal>> {
        session_ids
            .iter()
            .map(|id| self.end_session(id, EndReason::Left))
            .collect()
    }

    fn end_session(&mut self, id: &str, reason: EndReason) -> Result<Session, Refusal> {
        let session = self
            .sessions
            .remove(id)
            .ok_or_else(|| Refusal::UnknownSession(id.to_string()))?;
        if let Some(stage) = self.fleet.stages.get_mut(&session.stage_id) {
            stage.viewers = stage.viewers.saturating_sub(1);
        }
        self.touch_stage(&session.stage_id);
        self.emit_ended(&session, reason);
        Ok(session)
    }

    /// Release seats whose viewer never connected to IVS (the drift reconciler's finding); ids
    /// already ended are skipped. Answers how many were released.
    pub fn release_unused(&mut self, session_ids: &[String]) -> u32 {
        session_ids
            .iter()
            .filter(|id| self.end_session(id, EndReason::Unused).is_ok())
            .count() as u32
    }

    /// Extend the leases of sessions seen alive; unknown ids (already ended) are skipped.
    pub fn renew(&mut self, session_ids: &[String], now: Millis) -> usize {
        let mut renewed = 0;
        for id in session_ids {
            if let Some(mut s) = self.sessions.get(id) {
                s.last_seen = now;
                s.lease_until = now + self.policy.session_lease_ms;
                self.sessions.put(s);
                renewed += 1;
            }
        }
        if renewed > 0 {
            self.emit(Change::Renewed { count: renewed as u32 });
        }
        renewed
    }

    /// End up to `limit` sessions whose lease ran out before `now`.
    pub fn expire(&mut self, now: Millis, limit: usize) -> Vec<Session> {
        let ids = self.sessions.expired(now, limit);
        ids.iter()
            .filter_map(|id| self.end_session(id, EndReason::Expired).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::admission::FleetPolicy;
    use crate::fleet::transition::TestParts;

    fn join(broadcast: &str, user: &str, client: Option<&str>) -> JoinRequest {
        JoinRequest {
            broadcast_id: broadcast.into(),
            user_id: user.into(),
            attributes: BTreeMap::new(),
            session_id: format!("s-{broadcast}-{user}"),
            participant_id: format!("p-{broadcast}-{user}"),
            client: client.map(Into::into),
        }
    }

    #[test]
    fn a_client_network_holds_at_most_its_cap_of_seats_and_a_rejoin_is_never_refused() {
        let mut parts = TestParts::new(FleetPolicy {
            max_seats_per_client: 2,
            ..FleetPolicy::default()
        });
        let mut w = parts.world();
        for (id, cap) in [("capped", None), ("open", Some(0)), ("three", Some(3))] {
            w.live_for_test(id, cap);
        }
        let (home, office) = (Some("198.51.100.0"), Some("203.0.113.0"));
        // --- 1. one network takes two seats (the policy's cap), the third is refused
        let out = w.admit(
            &[
                join("capped", "a", home),
                join("capped", "b", home),
                join("capped", "c", home),
            ],
            10,
        );
        assert!(out[0].is_ok() && out[1].is_ok());
        assert_eq!(out[2], Err(Refusal::ClientSeatLimit("capped".into(), 2)));
        assert_eq!(
            out[2].as_ref().unwrap_err().to_string(),
            "this client already holds 2 seats in broadcast capped, the most one client may hold"
        );
        assert_eq!(w.fleet.stages["capped:0"].viewers, 2, "the refusal took no seat");
        assert!(w.sessions.by_user("capped", "c").is_none());
        // --- 2. a seated user joining again gets the same seat back, even at the cap
        let again = w.admit(&[join("capped", "a", home)], 20).remove(0).unwrap();
        assert!(again.rejoined);
        assert_eq!(w.sessions.client_seats("capped", "198.51.100.0"), 2);
        // --- 3. another network has seats of its own
        assert!(w.admit(&[join("capped", "d", office)], 20)[0].is_ok());
        // --- 4. leaving frees the client's count; so does lease expiry
        let a = w.sessions.by_user("capped", "a").unwrap();
        assert!(w.leave(&[a.id])[0].is_ok());
        assert_eq!(w.sessions.client_seats("capped", "198.51.100.0"), 1);
        assert!(w.admit(&[join("capped", "c", home)], 30)[0].is_ok());
        let lease = w.policy.session_lease_ms;
        assert_eq!(w.expire(30 + lease + 1, usize::MAX).len(), 3);
        assert_eq!(w.sessions.client_seats("capped", "198.51.100.0"), 0);
        assert!(w.admit(&[join("capped", "e", home)], 40)[0].is_ok());
        // --- 5. a broadcast's own cap wins over the policy's: 0 is no cap, 3 is three
        let many: Vec<_> = (0..5).map(|i| join("open", &format!("u{i}"), home)).collect();
        assert!(w.admit(&many, 50).iter().all(Result::is_ok));
        let many: Vec<_> = (0..4).map(|i| join("three", &format!("u{i}"), home)).collect();
        let out = w.admit(&many, 50);
        assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 3);
        assert_eq!(out[3], Err(Refusal::ClientSeatLimit("three".into(), 3)));
        // --- 6. a request that names no client is not counted (the node names it whenever the cap is on)
        assert!(w.admit(&[join("capped", "f", None)], 60)[0].is_ok());
        assert_eq!(w.sessions.by_user("capped", "f").unwrap().client, None);
    }
}
