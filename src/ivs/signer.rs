//! A small pool of OS threads that sign tokens, so ~0.1 ms of ECDSA per viewer never runs on the
//! async reactor (where it would stall every connection sharing the worker). Jobs queue on an
//! unbounded channel; the join path upstream is bounded (batcher queue), so this is too.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::token::{Claims, SigningKey};

type Job = (Arc<SigningKey>, Claims, oneshot::Sender<String>);

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
                        let Ok((key, claims, reply)) = job else {
                            return;
                        };
                        let _ = reply.send(key.sign(&claims));
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
        self.tx
            .send((key, claims, reply))
            .expect("signer threads live as long as the process");
        rx.await.expect("a signer thread answers every job")
    }
}
