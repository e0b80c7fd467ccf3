//! `loadtest <scenario>`: runs one scenario, prints the summary, exits 1 on any ledger violation
//! (2 when the run itself could not be carried out).

use clap::Parser;

use loadtest::cli::{Cli, Scenario};
use loadtest::report::Report;
use loadtest::scenario::{churn, crash, crowd, failover, front_door, hold, join_storm, media, subscribers};
use loadtest::setup::publish;
use loadtest::{calibrate, cli};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let mut runtime = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if cli.threads > 1 {
        runtime.worker_threads(cli.threads);
    }
    let runtime = runtime.enable_all().build().expect("starting the tokio runtime");
    let code = match runtime.block_on(run(cli.scenario)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

async fn run(scenario: Scenario) -> anyhow::Result<i32> {
    let (report, json) = match scenario {
        Scenario::JoinStorm(a) => (join_storm::run(&a).await?, a.common.json),
        Scenario::Hold(a) => (hold::run(&a).await?, a.common.json),
        Scenario::Churn(a) => (churn::run(&a).await?, a.common.json),
        Scenario::Crash(a) => (crash::run(&a).await?, a.common.json),
        Scenario::Failover(a) => (failover::run(&a).await?, a.common.json),
        Scenario::Subscribers(a) => (subscribers::run(&a).await?, a.common.json),
        Scenario::FrontDoor(a) => (front_door::run(&a).await?, a.json),
        Scenario::Crowd(a) => (crowd::run(&a).await?, a.json),
        Scenario::Media(a) => (media::run(&a).await?, a.json),
        Scenario::Calibrate(cli::CalibrateArgs { secs, json }) => {
            let c = tokio::task::spawn_blocking(move || calibrate::run(secs)).await?;
            let report = Report {
                scenario: "calibrate".into(),
                calibration: Some(c),
                ..Report::default()
            };
            (report, json)
        }
    };
    publish(&report, json.as_deref())
}
