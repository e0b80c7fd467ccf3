//! The wall clock, read in one place. Only proposers read it: commands carry the time they were
//! proposed at, so applying them is deterministic (`fleet/` never reads a clock).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::fleet::Millis;

/// Wall clock in Unix milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
