//! Per-operation call-rate limits for IVS: the quota table (`ivs-realtime.md` §1.1), a pure token
//! bucket, and an async limiter that makes a caller wait for its operation's bucket.
//!
//! Both sides use the same bucket: [`OpLimiter`] keeps `AwsBackend` under the account's TPS quota,
//! and the emulator's quota layer answers ThrottlingException when a client does not.
//! Not a retry policy: retries belong to the SDK.
//!
//! One budget per node, shared by every loop, with two classes of caller. Foreground calls (the
//! stage loop's creates and deletes, replications a replica waits for) reserve their slot in
//! arrival order. Background calls (publisher sampling, the reaper, checks nobody waits for) run
//! inside [`in_background`] and only ever take a spare token — one is always left — so they never
//! delay foreground work. IVS's quotas are per operation, so creates, deletes and replications
//! never compete with each other; sampling shares GetStage, ListParticipants and ListStages with
//! them, which is where the classes matter.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The documented IVS Real-Time call-rate quota (calls/s per account and region) of `op`.
/// Operations missing from the AWS table (replication, RevokeConnectionToken) get 5, like their peers.
pub fn ivs_default_tps(op: &str) -> f64 {
    match op {
        "CreateParticipantToken" => 50.0,
        "ImportPublicKey" | "GetPublicKey" | "ListPublicKeys" | "DeletePublicKey" => 3.0,
        "TagResource" | "UntagResource" | "ListTagsForResource" => 10.0,
        _ => 5.0,
    }
}

/// Every IVS operation stagefleet calls (and the emulator answers).
pub const OPERATIONS: [&str; 14] = [
    "CreateStage",
    "GetStage",
    "ListStages",
    "DeleteStage",
    "ImportPublicKey",
    "GetPublicKey",
    "ListPublicKeys",
    "DeletePublicKey",
    "CreateParticipantToken",
    "StartParticipantReplication",
    "StopParticipantReplication",
    "ListParticipantReplicas",
    "ListParticipants",
    "DisconnectParticipant",
];

/// Every operation with its default rate: the base of `AwsConfig::rates`.
pub fn default_rates() -> BTreeMap<String, f64> {
    OPERATIONS
        .iter()
        .map(|op| (op.to_string(), ivs_default_tps(op)))
        .collect()
}

/// A token bucket holding at most `max(rate, 1)` tokens, refilled at `rate` per second. Pure:
/// every method takes `now`, so tests drive time by hand.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket: a burst of `rate` calls is allowed at once, as IVS allows.
    pub fn new(rate: f64, now: Instant) -> Self {
        let rate = rate.max(f64::MIN_POSITIVE);
        let capacity = rate.max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Take one token if there is one (the server side: refuse rather than wait).
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Take one token only if another stays in the bucket afterwards (background callers leave
    /// the last token to the foreground); otherwise how long until that is so.
    pub fn take_spare(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        let need = self.capacity.min(2.0);
        if self.tokens >= need {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((need - self.tokens) / self.rate))
        }
    }

    /// Take one token now, going into debt if needed, and say how long the caller must wait before
    /// its call is within the rate. Reserving (rather than polling) keeps waiters in arrival order.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

tokio::task_local! {
    static BACKGROUND: bool;
}

/// Run `work` as background IVS work: its calls take only spare tokens of the node's budget.
pub async fn in_background<F: std::future::Future>(work: F) -> F::Output {
    BACKGROUND.scope(true, work).await
}

/// One bucket per operation name; operations without a configured rate are not limited.
#[derive(Debug)]
pub struct OpLimiter {
    buckets: BTreeMap<String, Mutex<TokenBucket>>,
}

impl OpLimiter {
    pub fn new(rates: &BTreeMap<String, f64>) -> Self {
        // tokio's clock (not std's) so paused-time tests and production read the same source.
        let now = tokio::time::Instant::now().into_std();
        let buckets = rates
            .iter()
            .filter(|(_, rate)| rate.is_finite() && **rate > 0.0)
            .map(|(op, rate)| (op.clone(), Mutex::new(TokenBucket::new(*rate, now))))
            .collect();
        Self { buckets }
    }

    /// Wait until `op` may be called. Never fails; cancelling the wait forfeits the reserved slot.
    /// Inside [`in_background`] it waits for a spare token instead of reserving one.
    pub async fn acquire(&self, op: &str) {
        let Some(bucket) = self.buckets.get(op) else {
            return;
        };
        if BACKGROUND.try_with(|b| *b).unwrap_or(false) {
            loop {
                let wait = bucket
                    .lock()
                    .expect("rate bucket poisoned")
                    .take_spare(tokio::time::Instant::now().into_std());
                match wait {
                    None => return,
                    Some(wait) => tokio::time::sleep(wait).await,
                }
            }
        }
        let wait = bucket
            .lock()
            .expect("rate bucket poisoned")
            .reserve(tokio::time::Instant::now().into_std());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_a_burst_of_rate_then_refuses_until_refilled() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(5.0, t0);
        assert!((0..5).all(|_| bucket.try_take(t0)));
        assert!(
            !bucket.try_take(t0),
            "the 6th call within the same instant is throttled"
        );
        assert!(!bucket.try_take(t0 + Duration::from_millis(150)));
        assert!(
            bucket.try_take(t0 + Duration::from_millis(200)),
            "one token back after 1/rate"
        );
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3.0, t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.try_take(later)).count(), 3);
    }

    #[test]
    fn reservations_queue_callers_one_interval_apart() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2.0, t0);
        let waits: Vec<_> = (0..5).map(|_| bucket.reserve(t0)).collect();
        let ms: Vec<u128> = waits.iter().map(|w| w.as_millis()).collect();
        assert_eq!(ms, vec![0, 0, 500, 1000, 1500]);
    }

    #[test]
    fn slow_rates_still_allow_one_call() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0.5, t0);
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0 + Duration::from_secs(1)));
        assert!(bucket.try_take(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn defaults_follow_the_ivs_quota_table() {
        let rates = default_rates();
        assert_eq!(rates["CreateParticipantToken"], 50.0);
        assert_eq!(rates["ImportPublicKey"], 3.0);
        assert_eq!(rates["CreateStage"], 5.0);
        assert_eq!(rates["StartParticipantReplication"], 5.0);
    }

    #[tokio::test]
    async fn the_async_limiter_spaces_calls_of_one_operation_only() {
        let limiter = OpLimiter::new(&BTreeMap::from([("CreateStage".to_string(), 20.0)]));
        let start = std::time::Instant::now();
        for _ in 0..22 {
            limiter.acquire("CreateStage").await;
        }
        let limited = start.elapsed();
        for _ in 0..100 {
            limiter.acquire("GetStage").await;
        }
        // A burst of 20 is free, then two more at 50 ms each; the unlisted op never waits.
        assert!(limited >= Duration::from_millis(95), "waited only {limited:?}");
        assert!(start.elapsed() - limited < Duration::from_millis(50));
    }

    #[test]
    fn background_takes_only_spare_tokens_and_leaves_the_last_to_the_foreground() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, t0);
        assert_eq!((0..4).filter(|_| b.take_spare(t0).is_none()).count(), 4);
        let wait = b.take_spare(t0).expect("the last token is kept");
        assert_eq!(
            wait,
            Duration::from_millis(200),
            "until a second token is in the bucket"
        );
        assert_eq!(
            b.reserve(t0),
            Duration::ZERO,
            "the foreground still finds its token at once"
        );
        assert!(
            b.take_spare(t0 + Duration::from_millis(200)).is_some(),
            "the foreground's debt is paid first"
        );
        assert!(b.take_spare(t0 + Duration::from_millis(400)).is_none());
    }

    #[tokio::test]
    async fn a_foreground_call_is_not_held_up_by_background_callers_waiting() {
        use futures_util::FutureExt;
        let limiter = std::sync::Arc::new(OpLimiter::new(&BTreeMap::from([("GetStage".to_string(), 5.0)])));
        // Background sampling takes what it may and queues for more.
        let mut waiting = Vec::new();
        for _ in 0..20 {
            let l = limiter.clone();
            waiting.push(tokio::spawn(in_background(async move { l.acquire("GetStage").await })));
        }
        tokio::task::yield_now().await;
        let done = waiting.iter().filter(|t| t.is_finished()).count();
        assert_eq!(done, 4, "four spare tokens of five");
        // The kept token serves a foreground call without waiting.
        assert!(limiter.acquire("GetStage").now_or_never().is_some());
        for t in waiting {
            t.abort();
        }
    }
}
