//! Counts over the fleet, computed in one place from one applied state: GraphQL's `stats` and a
//! broadcast's `viewers`/`capacity`, `/metrics`, and (next) the `stats` subscription all read
//! these, so two of them never disagree about the same applied index.

use super::model::{BroadcastState, Fleet, StageState};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub broadcasts_live: u64,
    /// Stages by state.
    pub stages_creating: u64,
    pub stages_active: u64,
    pub stages_deleting: u64,
    /// Viewers seated now (on stages in any state).
    pub viewers: u64,
    /// Seats on active stages.
    pub capacity: u64,
    /// Viewers admitted over the broadcasts' lives.
    pub admitted_total: u64,
}

impl Stats {
    pub fn stages(&self) -> u64 {
        self.stages_creating + self.stages_active + self.stages_deleting
    }
}

/// The whole fleet's counts (`None`) or one broadcast's.
pub fn of(fleet: &Fleet, broadcast_id: Option<&str>) -> Stats {
    let mine = |b: &str| broadcast_id.is_none_or(|id| id == b);
    let mut s = Stats::default();
    match broadcast_id {
        Some(id) => count_broadcast(&mut s, fleet.broadcasts.get(id).map(|b| (b.state, b.admitted_total))),
        None => fleet
            .broadcasts
            .values()
            .for_each(|b| count_broadcast(&mut s, Some((b.state, b.admitted_total)))),
    }
    for stage in fleet.stages.values().filter(|st| mine(&st.broadcast_id)) {
        s.viewers += u64::from(stage.viewers);
        match stage.state {
            StageState::Creating => s.stages_creating += 1,
            StageState::Active => {
                s.stages_active += 1;
                s.capacity += u64::from(stage.capacity);
            }
            StageState::Deleting => s.stages_deleting += 1,
        }
    }
    s
}

fn count_broadcast(s: &mut Stats, b: Option<(BroadcastState, u64)>) {
    if let Some((state, admitted)) = b {
        s.broadcasts_live += u64::from(state == BroadcastState::Live);
        s.admitted_total += admitted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Broadcast, Stage, StageRole};

    fn stage(b: &str, slot: u32, state: StageState, viewers: u32) -> Stage {
        Stage {
            id: Stage::key(b, slot),
            broadcast_id: b.into(),
            slot,
            role: StageRole::Replica,
            state,
            capacity: 100,
            viewers,
            arn: None,
            endpoints: None,
            intent_term: 1,
            created_at: 0,
            draining: false,
            media: Default::default(),
        }
    }

    fn broadcast(id: &str, state: BroadcastState, admitted_total: u64) -> Broadcast {
        Broadcast {
            id: id.into(),
            name: id.into(),
            state,
            created_at: 0,
            ended_at: None,
            next_slot: 0,
            hosts: Default::default(),
            admitted_total,
            max_seats_per_client: None,
            fanout: Default::default(),
        }
    }

    #[test]
    fn counts_split_by_broadcast_and_add_up_to_the_fleet() {
        let mut f = Fleet::default();
        for b in [
            broadcast("a", BroadcastState::Live, 7),
            broadcast("b", BroadcastState::Ending, 3),
        ] {
            f.broadcasts.insert(b.id.clone(), b);
        }
        for s in [
            stage("a", 0, StageState::Active, 5),
            stage("a", 1, StageState::Creating, 0),
            stage("b", 0, StageState::Deleting, 2),
        ] {
            f.stages.insert(s.id.clone(), s);
        }
        let a = of(&f, Some("a"));
        assert_eq!(
            a,
            Stats {
                broadcasts_live: 1,
                stages_creating: 1,
                stages_active: 1,
                stages_deleting: 0,
                viewers: 5,
                capacity: 100,
                admitted_total: 7,
            }
        );
        let b = of(&f, Some("b"));
        assert_eq!((b.broadcasts_live, b.viewers, b.capacity, b.stages()), (0, 2, 0, 1));
        let all = of(&f, None);
        assert_eq!(all.viewers, a.viewers + b.viewers);
        assert_eq!(all.admitted_total, 10);
        assert_eq!(all.stages(), 3);
        assert_eq!(of(&f, Some("missing")), Stats::default());
    }
}
