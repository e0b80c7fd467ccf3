//! A small pool of OS threads that sign tokens, so ~0.1 ms of ECDSA per viewer never runs on the
//! async reactor (where it would stall every connection sharing the worker). Jobs queue on an
//! unbounded channel; the join path upstream is bounded (batcher queue), so this is too.
//!
//! A job is a run of tokens, each handed to its own `deliver` as soon as it is signed: a
//! group-committed batch of joins goes to the pool as one job per thread, and every viewer's
//! request task is woken once, by its finished token.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::token::{Claims, SigningKey};

/// What to do with a signed token.
pub type Deliver = Box<dyn FnOnce(String) + Send>;

type Job = (Arc<SigningKey>, Vec<(Claims, Deliver)>);

#[derive(Clone)]
pub struct Signer {
    tx: mpsc::Sender<Job>,
    threads: usize,
}

impl Signer {
    /// `threads == 0` means one per available core.
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("signer-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().expect("signer queue").recv();
                        let Ok((key, tokens)) = job else {
                            return;
                        };
                        for (claims, deliver) in tokens {
                            deliver(key.sign(&claims));
                        }
                    }
                })
                .expect("spawning a signer thread");
        }
        Self { tx, threads }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub async fn sign(&self, key: Arc<SigningKey>, claims: Claims) -> String {
        let (reply, rx) = oneshot::channel();
        let deliver: Deliver = Box::new(move |token| {
            let _ = reply.send(token);
        });
        self.send((key, vec![(claims, deliver)]));
        rx.await.expect("a signer thread answers every job")
    }

    /// Sign every token with `key`, spread over the pool's threads; each `Deliver` is called from
    /// a signer thread as soon as its token is done. Returns at once.
    pub fn sign_each(&self, key: Arc<SigningKey>, mut tokens: Vec<(Claims, Deliver)>) {
        let per_thread = tokens.len().div_ceil(self.threads).max(1);
        while tokens.len() > per_thread {
            let rest = tokens.split_off(per_thread);
            self.send((key.clone(), std::mem::replace(&mut tokens, rest)));
        }
        if !tokens.is_empty() {
            self.send((key, tokens));
        }
    }

    fn send(&self, job: Job) {
        self.tx.send(job).expect("signer threads live as long as the process");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ivs::token::{TokenCapabilities, verify};

    fn claims(jti: &str) -> Claims {
        Claims {
            exp: 2_000_000_000,
            iat: 1_000,
            jti: jti.into(),
            user_id: Some(format!("user-{jti}")),
            resource: "arn:aws:ivs:us-east-1:1:stage/abc".into(),
            topic: "abc".into(),
            events_url: "wss://events".into(),
            whip_url: "https://whip".into(),
            capabilities: TokenCapabilities::VIEWER,
            attributes: BTreeMap::new(),
            version: "1.0".into(),
        }
    }

    #[tokio::test]
    async fn every_token_of_a_run_reaches_its_own_caller() {
        let key = Arc::new(SigningKey::from_der(&SigningKey::generate_pkcs8(), "arn:k").unwrap());
        let keys = BTreeMap::from([("arn:k".to_string(), key.public_key_pem())]);
        let signer = Signer::new(2);
        for n in [1, 2, 5] {
            let mut waiting = Vec::new();
            let tokens = (0..n)
                .map(|i| {
                    let (tx, rx) = oneshot::channel();
                    waiting.push((i, rx));
                    let deliver: Deliver = Box::new(move |t| {
                        let _ = tx.send(t);
                    });
                    (claims(&i.to_string()), deliver)
                })
                .collect();
            signer.sign_each(key.clone(), tokens);
            for (i, rx) in waiting {
                let token = rx.await.expect("delivered");
                assert_eq!(verify(&token, &keys, 1_000).unwrap(), claims(&i.to_string()));
            }
        }
        let single = signer.sign(key, claims("x")).await;
        assert_eq!(verify(&single, &keys, 1_000).unwrap().jti, "x");
    }
}
