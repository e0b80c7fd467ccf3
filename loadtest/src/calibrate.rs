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
    pub signs_per_sec_1_thread: f64,
    pub signs_per_sec_2_threads: f64,
    pub seconds_each: f64,
}

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

pub fn run(seconds_each: f64) -> Calibration {
    let d = Duration::from_secs_f64(seconds_each);
    Calibration {
        signs_per_sec_1_thread: measure(1, d),
        signs_per_sec_2_threads: measure(2, d),
        seconds_each,
    }
}

impl Calibration {
    /// The higher rate of two calibrations on each thread count. The machine's speed drifts while
    /// a scenario runs, so a ratio against the better of a run before and one after the load is
    /// the honest (harder to meet) one.
    pub fn best(&self, other: &Self) -> Self {
        Self {
            signs_per_sec_1_thread: self.signs_per_sec_1_thread.max(other.signs_per_sec_1_thread),
            signs_per_sec_2_threads: self.signs_per_sec_2_threads.max(other.signs_per_sec_2_threads),
            seconds_each: self.seconds_each,
        }
    }

    pub fn text(&self) -> String {
        format!(
            "ES384 signing on this machine: {:.0}/s on 1 thread, {:.0}/s on 2 threads ({}s each)\n",
            self.signs_per_sec_1_thread, self.signs_per_sec_2_threads, self.seconds_each
        )
    }
}
