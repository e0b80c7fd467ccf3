//! `front-door`: what the node's front gate costs an attacker and what it costs the node.
//!
//! 1. Adversarial GraphQL documents (deep nesting of every bracket, fragment doubling chains,
//!    cycles and fan-out, token soup, long strings, comments, depth hidden behind a long prefix,
//!    random mutations of all of these), each at most 64 KiB as a body, sent one at a time over
//!    one keep-alive connection: the worst-case time to refuse one, per kind and overall.
//! 2. `--stalled` WebSockets, each stopped inside a frame whose header announces almost the
//!    64 KiB limit: the node's RSS while it holds them, against as many sockets that only
//!    completed the upgrade, and whether a header announcing more than the limit is closed.
//!
//! Needs no broadcast, no key and no ledger: it speaks to `/graphql`, `/livez` and `/metrics`.

mod docs;
mod send;
mod stall;
pub mod summary;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use self::stall::Stall;
use self::summary::{FrontDoorSummary, SocketPhase};
use crate::cli::FrontDoorArgs;
use crate::conn::ConnPool;
use crate::driver::progress_bar;
use crate::procstat::{SAMPLE_EVERY, Sampler, rss_kib};
use crate::report::Report;
use crate::setup::{Started, start_node};
use crate::target::{Targets, wait_ready};

/// A header announcing this much is past the node's 64 KiB frame limit: it must close the socket.
const OVERSIZED_FRAME: u64 = 1 << 20;
const OVERSIZED_WAIT: Duration = Duration::from_secs(5);
/// How long the node gets to let go of one phase's sockets before the next phase measures.
const SETTLE_WITHIN: Duration = Duration::from_secs(15);

pub async fn run(args: &FrontDoorArgs) -> anyhow::Result<Report> {
    args.node.single_node_only("front-door")?;
    let files = stall::raise_open_files_limit().context("raising the open-files limit")?;
    if (files as usize) < args.stalled + 64 {
        eprintln!(
            "warning: this process may open {files} files, fewer than --stalled {} needs; sockets past it fail to open",
            args.stalled
        );
    }
    let Started {
        urls,
        mut node,
        tmp: _tmp,
        ..
    } = start_node(&args.node, false).await?;
    let targets = Targets::new(&urls)?;
    let base = targets.all()[0].clone();
    let authority = base
        .strip_prefix("http://")
        .context("only http:// targets")?
        .to_string();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    wait_ready(&http, &base, Duration::from_secs(60)).await?;
    let pid = node.as_ref().map(|n| n.pid.clone());

    // --- 1. adversarial documents, one at a time (the first request opens the connection)
    let pool = ConnPool::new(&base, 1)?;
    let _ = pool.post_graphql(None, docs::body("{ __typename }")).await;
    let documents = send::run(&pool, args.rounds, args.seed).await;
    drop(pool);

    // --- 2. held sockets: upgraded and idle, then stalled mid-frame; then one oversized header
    let mut sockets = Vec::new();
    let mut oversized = None;
    let mut other_failures = Vec::new();
    if args.stalled > 0 && livez(&http, &base).await {
        let phases = [
            (!args.no_idle).then_some(("upgraded, idle", Stall::Idle)),
            Some((
                "stalled mid-frame",
                Stall::MidFrame {
                    announce: u64::from(args.frame_bytes),
                    sent: args.sent_bytes,
                },
            )),
        ];
        for (name, stall) in phases.into_iter().flatten() {
            sockets.push(hold_phase(args, &http, &base, &authority, pid.as_ref(), name, stall).await);
        }
        match stall::probe_oversized(&authority, OVERSIZED_FRAME, OVERSIZED_WAIT).await {
            Ok(closed) => {
                if closed.is_none() {
                    other_failures.push(format!(
                        "a frame header announcing {OVERSIZED_FRAME} bytes: the node kept the socket open for {OVERSIZED_WAIT:?}"
                    ));
                }
                oversized = Some(closed.map(|d| d.as_secs_f64()));
            }
            Err(e) => other_failures.push(format!("the oversized-frame probe could not upgrade: {e}")),
        }
    }

    // --- 3. the node must still be alive
    let summary = FrontDoorSummary {
        documents,
        sockets,
        oversized_frame_closed_after_secs: oversized,
        node_up_at_end: livez(&http, &base).await,
        other_failures,
    };
    if let Some(n) = node.as_mut() {
        n.stop().await?;
    }
    Ok(Report {
        scenario: "front-door".into(),
        targets: urls,
        front_door: Some(summary),
        ..Report::default()
    })
}

/// Open `--stalled` sockets that stop as `stall` says, hold them `--hold-secs` while sampling
/// the node's RSS, count those the node closed, then close the rest.
async fn hold_phase(
    args: &FrontDoorArgs,
    http: &reqwest::Client,
    base: &str,
    authority: &str,
    pid: Option<&Arc<AtomicU32>>,
    name: &str,
    stall: Stall,
) -> SocketPhase {
    settle(http, base).await;
    let rss_before = pid.and_then(|p| rss_mib(p.load(Ordering::Relaxed)));
    let mut sampler = pid.map(|p| Sampler::start(p.clone(), SAMPLE_EVERY));
    let label = format!("front-door: {name}");
    let (mut open, open_errors, took) =
        stall::open_all(authority, stall, args.stalled, args.connect_concurrency, &label).await;
    let opened = open.len();
    let mut closed = 0;
    let bar = progress_bar(args.hold_secs.ceil() as u64, &format!("front-door: hold {name}"));
    let deadline = Instant::now() + Duration::from_secs_f64(args.hold_secs);
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        closed += stall::sweep(&mut open);
        bar.inc(1);
        bar.set_message(format!("held {} closed by the node {closed}", open.len()));
    }
    closed += stall::sweep(&mut open);
    bar.finish_and_clear();
    let node_open_websockets = open_websockets(http, base).await;
    let rss_peak = sampler.as_mut().map(|s| {
        s.freeze();
        s.usage().rss_peak_mib.max(rss_before.unwrap_or(0.0))
    });
    let held_at_end = open.len();
    drop(open);
    settle(http, base).await;
    let (frame_announced, frame_sent) = match stall {
        Stall::Idle => (None, None),
        Stall::MidFrame { announce, sent } => (Some(announce), Some(sent)),
    };
    SocketPhase {
        name: name.to_string(),
        frame_announced,
        frame_sent,
        wanted: args.stalled,
        opened,
        open_errors,
        open_secs: took.as_secs_f64(),
        held_at_end,
        closed_by_node: closed,
        node_open_websockets,
        rss_before_mib: rss_before,
        rss_peak_mib: rss_peak,
        rss_after_close_mib: pid.and_then(|p| rss_mib(p.load(Ordering::Relaxed))),
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(rss_kib(&status)? as f64 / 1024.0)
}

async fn livez(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/livez"))
        .send()
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
}

/// The value of the gauge named `name` (with or without a prefix) in Prometheus text.
pub fn gauge(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (metric, value) = l.split_once(' ')?;
        let metric = metric.split('{').next()?;
        let named = metric == name || metric.strip_suffix(name).is_some_and(|p| p.ends_with('_'));
        named
            .then(|| value.trim().parse::<f64>().ok())
            .flatten()
            .map(|v| v as u64)
    })
}

async fn open_websockets(http: &reqwest::Client, base: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    gauge(&text, "open_websockets")
}

/// Wait until the node holds no WebSocket (its gauge reads 0), so one phase's sockets are gone
/// before the next measures; without `/metrics`, give it a second.
async fn settle(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        match open_websockets(http, base).await {
            Some(0) => return,
            None => return tokio::time::sleep(Duration::from_secs(1)).await,
            Some(_) if Instant::now() > deadline => return,
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await, // poll, bounded by the deadline
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_gauge_is_found_with_or_without_a_prefix() {
        let text = "# HELP stagefleet_open_websockets Open GraphQL WebSockets.\n\
                    # TYPE stagefleet_open_websockets gauge\nstagefleet_open_websockets 9998\n\
                    stagefleet_open_connections 10001\n";
        assert_eq!(gauge(text, "open_websockets"), Some(9998));
        assert_eq!(gauge("open_websockets 3\n", "open_websockets"), Some(3));
        assert_eq!(gauge("max_reopen_websockets 3\n", "open_websockets"), None);
        assert_eq!(gauge("", "open_websockets"), None);
    }
}
