//! Server-side per-operation TPS quotas: one token bucket per operation (burst = rate), answered
//! with ThrottlingException by the server when empty, the way IVS enforces its account quotas.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::ivs::ratelimit::{TokenBucket, ivs_default_tps};

#[derive(Debug)]
pub struct Quotas {
    enforce: bool,
    overrides: BTreeMap<String, f64>,
    buckets: Mutex<BTreeMap<String, TokenBucket>>,
}

impl Quotas {
    /// `overrides` replace the IVS default for an operation; a rate that is not a positive
    /// finite number means "unlimited".
    pub fn new(enforce: bool, overrides: BTreeMap<String, f64>) -> Self {
        Self {
            enforce,
            overrides,
            buckets: Mutex::new(BTreeMap::new()),
        }
    }

    fn rate(&self, op: &str) -> Option<f64> {
        let rate = self.overrides.get(op).copied().unwrap_or_else(|| ivs_default_tps(op));
        (rate.is_finite() && rate > 0.0).then_some(rate)
    }

    /// Whether a call to `op` (a known operation name) may proceed at `now`.
    pub fn admit(&self, op: &str, now: Instant) -> bool {
        if !self.enforce {
            return true;
        }
        let Some(rate) = self.rate(op) else {
            return true;
        };
        let mut buckets = self.buckets.lock().expect("quota lock poisoned");
        buckets
            .entry(op.to_string())
            .or_insert_with(|| TokenBucket::new(rate, now))
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_has_its_own_bucket_at_the_ivs_rate() {
        let quotas = Quotas::new(true, BTreeMap::new());
        let now = Instant::now();
        assert_eq!((0..10).filter(|_| quotas.admit("CreateStage", now)).count(), 5);
        assert_eq!((0..10).filter(|_| quotas.admit("ImportPublicKey", now)).count(), 3);
        assert_eq!(
            (0..60).filter(|_| quotas.admit("CreateParticipantToken", now)).count(),
            50
        );
    }

    #[test]
    fn overrides_and_the_off_switch_win_over_defaults() {
        let now = Instant::now();
        let quotas = Quotas::new(
            true,
            BTreeMap::from([("CreateStage".into(), 1.0), ("GetStage".into(), 0.0)]),
        );
        assert_eq!((0..10).filter(|_| quotas.admit("CreateStage", now)).count(), 1);
        assert_eq!((0..10).filter(|_| quotas.admit("GetStage", now)).count(), 10);
        let off = Quotas::new(false, BTreeMap::new());
        assert_eq!((0..10).filter(|_| off.admit("CreateStage", now)).count(), 10);
    }
}
