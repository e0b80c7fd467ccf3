//! Which stage a new viewer sits on.

use serde::{Deserialize, Serialize};

use super::model::Stage;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Fill the fullest stage that still has room: fewest stages in use, lowest cost, and empty
    /// stages become easy to retire.
    #[default]
    Pack,
    /// Least-loaded stage first: spreads viewers (and the blast radius of one stage's trouble).
    Spread,
}

impl std::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pack" => Ok(Placement::Pack),
            "spread" => Ok(Placement::Spread),
            other => Err(format!("unknown placement {other:?}: expected pack or spread")),
        }
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Placement::Pack => "pack",
            Placement::Spread => "spread",
        })
    }
}

/// The stage to seat one viewer on, among `stages` (any order), or `None` when none has room.
/// Ties go to the lowest slot so every replica picks the same stage.
pub fn choose<'a>(stages: impl IntoIterator<Item = &'a Stage>, policy: Placement) -> Option<&'a Stage> {
    let open = stages.into_iter().filter(|s| s.has_room());
    match policy {
        Placement::Pack => open.max_by(|a, b| a.viewers.cmp(&b.viewers).then(b.slot.cmp(&a.slot))),
        Placement::Spread => open.min_by(|a, b| a.viewers.cmp(&b.viewers).then(a.slot.cmp(&b.slot))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::{StageRole, StageState};

    fn stage(slot: u32, viewers: u32, capacity: u32) -> Stage {
        Stage {
            id: Stage::key("b", slot),
            broadcast_id: "b".into(),
            slot,
            role: if slot == 0 {
                StageRole::Origin
            } else {
                StageRole::Replica
            },
            state: StageState::Active,
            capacity,
            viewers,
            arn: None,
            endpoints: None,
            intent_term: 0,
            created_at: 0,
            draining: false,
            media: Default::default(),
        }
    }

    #[test]
    fn pack_fills_the_fullest_stage_with_room() {
        let stages = [stage(0, 5, 10), stage(1, 9, 10), stage(2, 10, 10)];
        assert_eq!(choose(&stages, Placement::Pack).unwrap().slot, 1);
    }

    #[test]
    fn spread_picks_the_least_loaded_stage() {
        let stages = [stage(0, 5, 10), stage(1, 2, 10), stage(2, 2, 10)];
        assert_eq!(choose(&stages, Placement::Spread).unwrap().slot, 1);
    }

    #[test]
    fn ties_go_to_the_lowest_slot_under_both_policies() {
        let stages = [stage(3, 4, 10), stage(1, 4, 10), stage(2, 4, 10)];
        assert_eq!(choose(&stages, Placement::Pack).unwrap().slot, 1);
        assert_eq!(choose(&stages, Placement::Spread).unwrap().slot, 1);
    }

    #[test]
    fn full_or_inactive_stages_are_never_chosen() {
        let mut creating = stage(1, 0, 10);
        creating.state = StageState::Creating;
        let stages = [stage(0, 10, 10), creating];
        assert!(choose(&stages, Placement::Pack).is_none());
        assert!(choose(&stages, Placement::Spread).is_none());
    }
}
