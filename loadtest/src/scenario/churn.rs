//! `churn`: a join/leave mix over a pool of users. Operation i works on user i mod U: a user
//! without a seat joins; a seated user leaves (with probability --leave-ratio) or joins again,
//! which must give the same session back with `rejoined: true`. Operations on one user are
//! serialised (a per-user lock), so the ledger knows exactly which sessions should exist.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::api::Api;
use crate::cli::ChurnArgs;
use crate::driver::{Load, drive};
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::report::Report;
use crate::setup::Setup;

/// A deterministic uniform draw in [0, 1) for operation `i` (splitmix64), so a run is repeatable
/// without a random-number dependency.
pub fn draw(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
}

struct Pool {
    api: Api,
    broadcast: String,
    prefix: String,
    users: Vec<tokio::sync::Mutex<()>>,
    ledger: Mutex<Ledger>,
    leave_ratio: f64,
    counts: Mutex<[u64; 3]>, // joins, rejoins, leaves acknowledged
}

impl Pool {
    async fn op(&self, i: u64) -> Result<(), ApiError> {
        let u = i % self.users.len() as u64;
        let _turn = self.users[u as usize].lock().await;
        let user = super::user_id(&self.prefix, u);
        let seated = self
            .ledger
            .lock()
            .expect("ledger")
            .live_session(&user)
            .map(|s| s.id.clone());
        match seated {
            Some(session) if draw(i) < self.leave_ratio => {
                self.api.leave(&session).await?;
                self.ledger.lock().expect("ledger").record_leave(&session);
                self.counts.lock().expect("counts")[2] += 1;
            }
            seated => {
                let join = self.api.join(&self.broadcast, &user).await?;
                let mut ledger = self.ledger.lock().expect("ledger");
                // The ledger flags a rejoin that came back with a different session.
                ledger.record(&join);
                if seated.is_some() && !join.rejoined {
                    ledger.early.push(crate::ledger::Violation::RejoinMismatch {
                        user: user.clone(),
                        expected: "rejoined: true".into(),
                        got: "rejoined: false".into(),
                    });
                }
                self.counts.lock().expect("counts")[usize::from(seated.is_some())] += 1;
            }
        }
        Ok(())
    }
}

pub async fn run(args: &ChurnArgs) -> anyhow::Result<Report> {
    let mut setup = Setup::new(&args.common, false).await?;
    let pool = Arc::new(Pool {
        api: setup.api.clone(),
        broadcast: setup.broadcast.clone(),
        prefix: args.common.user_prefix.clone(),
        users: (0..args.users.max(1)).map(|_| tokio::sync::Mutex::new(())).collect(),
        ledger: Mutex::new(Ledger::default()),
        leave_ratio: args.leave_ratio,
        counts: Mutex::new([0; 3]),
    });
    let load = Load {
        total: args.ops,
        rate: args.rate,
        concurrency: args.common.concurrency,
        label: "churn".into(),
    };
    let p = pool.clone();
    setup.load_begins();
    let outcome = drive(&load, move |i| {
        let p = p.clone();
        async move { p.op(i).await }
    })
    .await;
    setup.load_ends();
    let mut report = setup.report("churn");
    report
        .phases
        .push(crate::report::Phase::from_outcome("join/rejoin/leave", &outcome));
    let [joins, rejoins, leaves] = *pool.counts.lock().expect("counts");
    report.facts.extend([
        ("joins_new".into(), json!(joins)),
        ("joins_again".into(), json!(rejoins)),
        ("leaves".into(), json!(leaves)),
    ]);
    let ledger = std::mem::take(&mut *pool.ledger.lock().expect("ledger"));
    report.verdict = setup.verify(&ledger).await?;
    setup.finish(&mut report).await?;
    Ok(report)
}
