//! The orphan reaper's decision, pure: which of the stages IVS lists under this fleet's tag the
//! state does not account for. The leader's reaper (`control::reaper`) lists them, waits a grace
//! period (a stage being created right now is not yet recorded) and deletes what stays unknown.
//! Stages of other fleets never reach here: the listing filters on this fleet's tag.

use super::model::{Fleet, Stage, StageState};

/// A stage IVS lists with this fleet's tag: its ARN and the broadcast and slot its tags name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tagged {
    pub arn: String,
    pub broadcast_id: Option<String>,
    pub slot: Option<u32>,
}

/// The ARNs of `listed` that no stage of the fleet owns: no stage at that (broadcast, slot), or
/// one recorded with another ARN (a second stage created for one slot). A stage whose creation
/// is still pending (no ARN recorded yet) owns whatever carries its tags: the stage loop adopts it.
pub fn orphans<'a>(fleet: &Fleet, listed: &'a [Tagged]) -> Vec<&'a str> {
    listed
        .iter()
        .filter(|t| {
            let owner = match (&t.broadcast_id, t.slot) {
                (Some(b), Some(slot)) => fleet.stages.get(&Stage::key(b, slot)),
                _ => None,
            };
            match owner {
                Some(s) if s.arn.as_deref() == Some(t.arn.as_str()) => false,
                Some(s) if s.arn.is_none() && s.state != StageState::Active => false,
                _ => true,
            }
        })
        .map(|t| t.arn.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Media, StageRole};

    fn stage(slot: u32, arn: Option<&str>, state: StageState) -> Stage {
        Stage {
            id: Stage::key("b", slot),
            broadcast_id: "b".into(),
            slot,
            role: StageRole::Replica,
            state,
            capacity: 10,
            viewers: 0,
            arn: arn.map(Into::into),
            endpoints: None,
            intent_term: 1,
            created_at: 0,
            draining: false,
            media: Media::default(),
        }
    }

    fn tagged(arn: &str, b: Option<&str>, slot: Option<u32>) -> Tagged {
        Tagged {
            arn: arn.into(),
            broadcast_id: b.map(Into::into),
            slot,
        }
    }

    #[test]
    fn what_no_stage_owns_is_an_orphan_and_a_pending_creation_owns_its_slot() {
        let mut fleet = Fleet::default();
        for s in [
            stage(0, Some("arn:0"), StageState::Active),
            stage(1, None, StageState::Creating),
            stage(2, Some("arn:2"), StageState::Deleting),
        ] {
            fleet.stages.insert(s.id.clone(), s);
        }
        let listed = [
            tagged("arn:0", Some("b"), Some(0)),    // known
            tagged("arn:1", Some("b"), Some(1)),    // being created: the stage loop adopts it
            tagged("arn:2", Some("b"), Some(2)),    // being deleted: the stage loop's
            tagged("arn:0bis", Some("b"), Some(0)), // a second stage for slot 0
            tagged("arn:9", Some("b"), Some(9)),    // a slot the state never had (or forgot)
            tagged("arn:x", Some("gone"), Some(0)), // a broadcast the state does not have
            tagged("arn:?", None, None),            // this fleet's tag, nothing else
        ];
        assert_eq!(orphans(&fleet, &listed), vec!["arn:0bis", "arn:9", "arn:x", "arn:?"]);
    }
}
