//! `join-storm`: N viewers join once each, at a fixed rate or open loop; the headline numbers
//! are admitted joins per second and join latency.

use std::sync::{Arc, Mutex};

use crate::api::Api;
use crate::calibrate;
use crate::cli::JoinStormArgs;
use crate::driver::{Load, Outcome, drive};
use crate::ledger::Ledger;
use crate::report::{Phase, Report};
use crate::setup::Setup;

pub async fn run(args: &JoinStormArgs) -> anyhow::Result<Report> {
    // Calibrate before any load so the signing threads have the machine to themselves.
    let calibration = args.calibrate.then(|| {
        eprintln!("calibrating ES384 signing for {}s x 2 ...", args.calibrate_secs);
        calibrate::run(args.calibrate_secs)
    });
    let mut setup = Setup::new(&args.common, false).await?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let load = Load {
        total: args.viewers,
        rate: args.rate,
        concurrency: args.common.concurrency,
        label: "join-storm".into(),
    };
    setup.load_begins();
    let outcome = storm(&setup.api, &setup.broadcast, &args.common.user_prefix, &load, &ledger).await;
    setup.load_ends();
    // Again after the load (nothing else runs now): the ratio uses the better of the two.
    let calibration = calibration.map(|before| {
        eprintln!("calibrating ES384 signing again after the load ...");
        let after = calibrate::run(args.calibrate_secs);
        eprint!("before the load: {}after the load:  {}", before.text(), after.text());
        before.best(&after)
    });
    let mut report = setup.report("join-storm");
    let phase = Phase::from_outcome("joins", &outcome);
    report.signing_ratio = calibration
        .as_ref()
        .map(|c| phase.ok_per_sec / c.signs_per_sec_2_threads);
    report.calibration = calibration;
    report.phases.push(phase);
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    report.verdict = setup.verify(&ledger).await?;
    setup.finish(&mut report).await?;
    Ok(report)
}

/// The storm itself: `load.total` users `<prefix>-<n>` join `broadcast` once each, at `load`'s
/// rate and concurrency; every acknowledged join goes into `ledger`. Also run by `subscribers`,
/// with and without subscribers attached.
pub async fn storm(api: &Api, broadcast: &str, prefix: &str, load: &Load, ledger: &Arc<Mutex<Ledger>>) -> Outcome {
    let (api, broadcast, prefix, l) = (api.clone(), broadcast.to_string(), prefix.to_string(), ledger.clone());
    drive(load, move |i| {
        let (api, broadcast, l) = (api.clone(), broadcast.clone(), l.clone());
        let user = super::user_id(&prefix, i);
        async move {
            let join = api.join(&broadcast, &user).await?;
            l.lock().expect("ledger").record(&join);
            Ok(())
        }
    })
    .await
}
