//! `crash`: a join storm while the node this tool started is SIGKILLed and restarted (same data
//! dir, same address) --cycles times, evenly spread over the storm. A join in flight at a kill
//! may fail; it is retried with the same user id once `/readyz` answers again, and a user whose
//! join had in fact been committed must get the same session back. After each restart a sample
//! of acknowledged users joins again and must get their session back too. The ledger check at
//! the end must find no lost and no duplicated join.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::watch;

use crate::api::Api;
use crate::cli::CrashArgs;
use crate::driver::{Load, drive_in_background};
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::report::{Phase, Report};
use crate::setup::Setup;
use crate::target::{LocalNode, wait_ready};

/// Attempts per user before the join counts as failed (restarts take a few attempts each).
const MAX_ATTEMPTS: u32 = 50;

struct Storm {
    api: Api,
    broadcast: String,
    prefix: String,
    ledger: Mutex<Ledger>,
    /// Acknowledged joins so far; the killer waits on it to spread kills over the storm.
    acked: watch::Sender<u64>,
    /// False from just before a kill until `/readyz` is 200 again.
    up: watch::Sender<bool>,
    retries: Mutex<BTreeMap<String, u64>>,
}

impl Storm {
    async fn join(&self, i: u64) -> Result<(), ApiError> {
        let user = super::user_id(&self.prefix, i);
        let mut up = self.up.subscribe();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Wait out a restart instead of hammering a dead port.
            let _ = up.wait_for(|u| *u).await;
            match self.api.join(&self.broadcast, &user).await {
                Ok(join) => {
                    self.ledger.lock().expect("ledger").record(&join);
                    self.acked.send_modify(|n| *n += 1);
                    return Ok(());
                }
                Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => {
                    *self.retries.lock().expect("retries").entry(e.code()).or_default() += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Acknowledged users join again: each must get its own session back, marked rejoined.
    async fn rejoin_sample(&self, n: usize) -> Result<u64, ApiError> {
        let users: Vec<String> = {
            let l = self.ledger.lock().expect("ledger");
            let step = (l.entries.len() / n.max(1)).max(1);
            l.entries
                .iter()
                .step_by(step)
                .take(n)
                .map(|e| e.session.user_id.clone())
                .collect()
        };
        for user in &users {
            let join = self.api.join(&self.broadcast, user).await?;
            let mut l = self.ledger.lock().expect("ledger");
            if !join.rejoined {
                l.early.push(crate::ledger::Violation::RejoinMismatch {
                    user: user.clone(),
                    expected: "rejoined: true after restart".into(),
                    got: "rejoined: false".into(),
                });
            }
            l.record(&join);
        }
        Ok(users.len() as u64)
    }
}

pub async fn run(args: &CrashArgs) -> anyhow::Result<Report> {
    args.common.node.single_node_only("crash (for a cluster: failover)")?;
    let mut setup = Setup::new(&args.common, true).await?;
    setup.load_begins();
    let mut node: LocalNode = setup.node.take().context("crash starts its own node")?;
    let storm = Arc::new(Storm {
        api: setup.api.clone(),
        broadcast: setup.broadcast.clone(),
        prefix: args.common.user_prefix.clone(),
        ledger: Mutex::new(Ledger::default()),
        acked: watch::Sender::new(0),
        up: watch::Sender::new(true),
        retries: Mutex::new(BTreeMap::new()),
    });
    let load = Load {
        total: args.viewers,
        rate: args.rate,
        concurrency: args.common.concurrency,
        label: "crash".into(),
    };
    let s = storm.clone();
    let (storm_task, mut done) = drive_in_background(load, move |i| {
        let s = s.clone();
        async move { s.join(i).await }
    });

    let mut restarts = Vec::new();
    let mut rejoined = 0;
    let mut acked = storm.acked.subscribe();
    let ready_within = Duration::from_secs_f64(args.ready_timeout_secs);
    for cycle in 1..=u64::from(args.cycles) {
        let at = args.viewers * cycle / (u64::from(args.cycles) + 1);
        // A storm that ends early (too many failed joins) leaves the remaining cycles undone.
        // Biased: a storm that reached the mark and ended while the previous restart was being
        // checked still gets its cycle (an unbiased pick skipped it half the time).
        tokio::select! {
            biased;
            _ = acked.wait_for(|n| *n >= at) => {}
            _ = done.wait_for(|d| *d) => break,
        }
        storm.up.send_replace(false);
        node.kill().await?;
        let killed = Instant::now();
        node.restart().await?;
        wait_ready(setup.api.http(), &node.banner.base_url, ready_within).await?;
        restarts.push(killed.elapsed().as_secs_f64());
        storm.up.send_replace(true);
        rejoined += storm.rejoin_sample(args.rejoin_sample).await.unwrap_or(0);
    }
    let outcome = storm_task.await?;
    setup.load_ends();
    setup.node = Some(node);

    let mut report = setup.report("crash");
    report
        .phases
        .push(Phase::from_outcome("joins (with retries)", &outcome));
    let retries = storm.retries.lock().expect("retries").clone();
    report.facts.extend([
        ("kill_restart_cycles".into(), json!(restarts.len())),
        ("restart_to_ready_secs".into(), json!(restarts)),
        ("join_retries_by_code".into(), json!(retries)),
        ("rejoins_after_restart_checked".into(), json!(rejoined)),
    ]);
    let ledger = std::mem::take(&mut *storm.ledger.lock().expect("ledger"));
    report.verdict = setup.verify(&ledger).await?;
    setup.finish(&mut report).await?;
    Ok(report)
}
