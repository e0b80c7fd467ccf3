//! One module per scenario. Each sets up through [`crate::setup::Setup`], drives load through
//! [`crate::driver::drive`], records acknowledged joins in a [`crate::ledger::Ledger`] and
//! returns a [`crate::report::Report`] with the verdict.

pub mod churn;
pub mod crash;
pub mod crowd;
pub mod failover;
pub mod front_door;
pub mod hold;
pub mod join_storm;
pub mod media;
pub mod subscribers;

/// The user id of viewer `n` (stable, so a retried join is the same user).
pub fn user_id(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n}")
}
