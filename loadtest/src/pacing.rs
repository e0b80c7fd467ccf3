//! Rate pacing: when the i-th request of a fixed-rate run is due. Pure.
//!
//! Requests are scheduled against the start instant (not "sleep 1/rate after the previous one"),
//! so a slow moment does not lower the offered rate for the rest of the run, and latency can be
//! measured from the due time (coordinated-omission corrected).

use std::time::Duration;

/// Offset from the start at which request `i` is due at `rate` per second; `None` rate means
/// open loop (everything due at once, the concurrency limit paces).
pub fn due(i: u64, rate: Option<f64>) -> Duration {
    match rate {
        Some(r) if r > 0.0 => Duration::from_secs_f64(i as f64 / r),
        _ => Duration::ZERO,
    }
}

/// Expected wall time for `n` requests at `rate`.
pub fn planned_duration(n: u64, rate: Option<f64>) -> Option<Duration> {
    rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(n as f64 / r))
}
