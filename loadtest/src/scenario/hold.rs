//! `hold`: K viewers join and each keeps a GraphQL WebSocket open, heartbeating over it, for T
//! seconds. Measures join+connect latency, heartbeat latency, connections held, and the node's
//! RSS with all of them open.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::cli::HoldArgs;
use crate::driver::{Load, drive, progress_bar};
use crate::ledger::Ledger;
use crate::percentiles::percentiles_ms;
use crate::report::{Phase, Report};
use crate::setup::Setup;
use crate::ws::{self, HoldPlan, HoldTally};

pub async fn run(args: &HoldArgs) -> anyhow::Result<Report> {
    let mut setup = Setup::new(&args.common, false).await?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tally = Arc::new(HoldTally::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let holders = Arc::new(Mutex::new(Vec::new()));
    let load = Load {
        total: args.viewers,
        rate: Some(args.rate),
        concurrency: args.common.concurrency,
        label: "hold: join+connect".into(),
    };
    let heartbeat_every = Duration::from_secs_f64(args.heartbeat_secs);
    let ping_every = Duration::from_secs_f64(args.ping_secs);
    let (api, broadcast, prefix) = (
        setup.api.clone(),
        setup.broadcast.clone(),
        args.common.user_prefix.clone(),
    );
    let (l, t, h) = (ledger.clone(), tally.clone(), holders.clone());
    setup.load_begins();
    let outcome = drive(&load, move |i| {
        let (api, broadcast, l, t, h, stop) = (
            api.clone(),
            broadcast.clone(),
            l.clone(),
            t.clone(),
            h.clone(),
            stop_rx.clone(),
        );
        let user = super::user_id(&prefix, i);
        async move {
            let join = api.join(&broadcast, &user).await?;
            l.lock().expect("ledger").record(&join);
            let socket = ws::connect(api.targets.pick(), api.viewer_key()).await?;
            let plan = HoldPlan {
                session_id: join.session.id,
                heartbeat_every,
                ping_every,
                // Spread first beats over one interval by viewer number.
                first_heartbeat_after: heartbeat_every.mul_f64((i % 1000) as f64 / 1000.0),
            };
            let task = tokio::spawn(async move { ws::hold(socket, plan, &t, stop).await });
            h.lock().expect("holders").push(task);
            Ok(())
        }
    })
    .await;

    // Hold for the requested time, showing connections and heartbeats once a second.
    let secs = args.hold_secs.ceil() as u64;
    let bar = progress_bar(secs, "hold");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for _ in 0..secs {
        tick.tick().await;
        bar.inc(1);
        bar.set_message(format!(
            "open {} heartbeats ok {} closes {}",
            tally.open.load(Ordering::Relaxed),
            tally.heartbeats_ok.load(Ordering::Relaxed),
            tally.unexpected_closes.load(Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
    let open_at_end = tally.open.load(Ordering::Relaxed);
    setup.load_ends();
    // Verify while every socket is still open: held sessions must all be alive.
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    let verdict = setup.verify(&ledger).await?;
    stop_tx.send_replace(true);
    let tasks = std::mem::take(&mut *holders.lock().expect("holders"));
    for task in tasks {
        let _ = task.await;
    }

    let mut report = setup.report("hold");
    report.phases.push(Phase::from_outcome("join+connect", &outcome));
    let hb = percentiles_ms(&tally.heartbeat_latency.lock().expect("tally"));
    let errors = tally.heartbeat_errors.lock().expect("tally").clone();
    report.facts.extend([
        ("connections_held_at_end".into(), json!(open_at_end)),
        (
            "connections_peak".into(),
            json!(tally.peak_open.load(Ordering::Relaxed)),
        ),
        (
            "connections_closed_by_server".into(),
            json!(tally.unexpected_closes.load(Ordering::Relaxed)),
        ),
        (
            "heartbeats_ok".into(),
            json!(tally.heartbeats_ok.load(Ordering::Relaxed)),
        ),
        ("heartbeat_errors".into(), json!(errors)),
        ("heartbeat_latency_ms".into(), json!(hb)),
        ("hold_secs".into(), json!(args.hold_secs)),
    ]);
    report.verdict = verdict;
    setup.finish(&mut report).await?;
    Ok(report)
}
