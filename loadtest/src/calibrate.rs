//! `calibrate`: how many ES384 participant tokens this machine can sign per second, on one thread
//! and on two. The server signs one token per admitted join, so this is the ceiling a join storm
//! is measured against ("admitted joins/s as a share of the signing limit").
//!
//! Signs the same JWS the server does (header + IVS claim set, base64url, ECDSA P-384 SHA-384) with
//! a fresh key, so the cost per token matches; it does not talk to any server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// Median of the 1-thread slices.
    pub signs_per_sec_1_thread: f64,
    /// Median of the 2-thread slices.
    pub signs_per_sec_2_threads: f64,
    pub seconds_each: f64,
    /// Every slice's rate, in the order measured.
    pub slices_1_thread: Vec<f64>,
    pub slices_2_threads: Vec<f64>,
}

/// Length of one measuring slice.
const SLICE: Duration = Duration::from_millis(500);

/// A fresh P-384 key, as the server makes one per deployment.
pub fn fresh_key() -> EcdsaKeyPair {
    EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).expect("P-384 key generation")
}

/// A JWS compact token: base64url(header).base64url(claims).base64url(signature).
pub fn sign_jws(key: &EcdsaKeyPair, kid: &str, claims: &Value) -> String {
    let header = json!({ "alg": "ES384", "typ": "JWT", "kid": kid });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key
        .sign(&SystemRandom::new(), signed.as_bytes())
        .expect("ECDSA signing");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// The claim set of a viewer token, with realistic lengths (ARNs, URLs, 12-char jti).
pub fn viewer_claims(n: u64) -> Value {
    json!({
        "exp": 1_800_043_200i64, "iat": 1_800_000_000i64, "jti": format!("p{n:011}"),
        "user_id": format!("viewer-{n}"),
        "resource": "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEfGhIjKl",
        "topic": "AbCdEfGhIjKl",
        "events_url": "wss://global.events.live-video.net",
        "whip_url": "https://453fdfd2ad24df.global-bm.whip.live-video.net",
        "capabilities": { "allow_subscribe": true },
        "attributes": {},
        "version": "1.0",
    })
}

/// Signs per second with `threads` threads signing for `duration`.
pub fn measure(threads: usize, duration: Duration) -> f64 {
    let key = fresh_key();
    let kid = "arn:aws:ivs:us-east-1:123456789012:public-key/calibrate";
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (key, stop, done) = (&key, &stop, &done);
            s.spawn(move || {
                let mut n = t as u64 * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    // Claims are built per token, as the server builds them per join.
                    std::hint::black_box(sign_jws(key, kid, &viewer_claims(n)));
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(duration); // the measuring window itself, not synchronisation
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// `seconds_each` seconds on 1 thread and as many on 2, in half-second slices that alternate
/// between the two; each rate is the median of its slices. The machines here change speed from
/// one second to the next (one 1 s sample read 2,976/s, the next 4,976/s): a median of
/// interleaved slices is not thrown by a fast or a slow moment, where one long run is.
pub fn run(seconds_each: f64) -> Calibration {
    let n = ((seconds_each / SLICE.as_secs_f64()).round() as usize).max(1);
    let (mut one, mut two) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        one.push(measure(1, SLICE));
        two.push(measure(2, SLICE));
    }
    Calibration {
        signs_per_sec_1_thread: median(&one),
        signs_per_sec_2_threads: median(&two),
        seconds_each,
        slices_1_thread: one,
        slices_2_threads: two,
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Calibration {
    /// The higher rate of two calibrations on each thread count (with that calibration's
    /// slices). The machine's speed drifts while a scenario runs, so a ratio against the better of
    /// a calibration before and one after the load is the honest (harder to meet) one.
    pub fn best(&self, other: &Self) -> Self {
        let faster = |rate: fn(&Self) -> f64| if rate(self) >= rate(other) { self } else { other };
        let one = faster(|c| c.signs_per_sec_1_thread);
        let two = faster(|c| c.signs_per_sec_2_threads);
        Self {
            signs_per_sec_1_thread: one.signs_per_sec_1_thread,
            slices_1_thread: one.slices_1_thread.clone(),
            signs_per_sec_2_threads: two.signs_per_sec_2_threads,
            slices_2_threads: two.slices_2_threads.clone(),
            seconds_each: self.seconds_each,
        }
    }

    pub fn text(&self) -> String {
        let range = |xs: &[f64]| {
            let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = xs.iter().copied().fold(0.0, f64::max);
            format!("{lo:.0}-{hi:.0}")
        };
        format!(
            "ES384 signing on this machine: {:.0}/s on 1 thread, {:.0}/s on 2 threads (medians of {} half-second slices each over {}s; slices {} and {})\n",
            self.signs_per_sec_1_thread,
            self.signs_per_sec_2_threads,
            self.slices_2_threads.len(),
            self.seconds_each,
            range(&self.slices_1_thread),
            range(&self.slices_2_threads),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(one: &[f64], two: &[f64]) -> Calibration {
        Calibration {
            signs_per_sec_1_thread: median(one),
            signs_per_sec_2_threads: median(two),
            seconds_each: 1.0,
            slices_1_thread: one.to_vec(),
            slices_2_threads: two.to_vec(),
        }
    }

    #[test]
    fn a_median_ignores_one_fast_or_slow_moment() {
        assert_eq!(median(&[7000.0, 9400.0, 7100.0]), 7100.0);
        assert_eq!(median(&[3000.0, 7000.0, 7100.0, 7200.0]), 7050.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn the_yardstick_is_the_better_calibration_per_thread_count() {
        let before = cal(&[4000.0], &[7000.0, 7200.0]);
        let after = cal(&[3500.0], &[7600.0, 7800.0]);
        let best = before.best(&after);
        assert_eq!(best.signs_per_sec_1_thread, 4000.0);
        assert_eq!(best.signs_per_sec_2_threads, 7700.0);
        assert_eq!(best.slices_2_threads, [7600.0, 7800.0]);
    }

    #[test]
    fn calibration_signs_in_alternating_slices() {
        let c = run(1.0);
        assert_eq!((c.slices_1_thread.len(), c.slices_2_threads.len()), (2, 2));
        assert!(c.slices_2_threads.iter().all(|&r| r > 0.0), "{c:?}");
        assert!(c.text().contains("medians of 2 half-second slices"));
    }
}
