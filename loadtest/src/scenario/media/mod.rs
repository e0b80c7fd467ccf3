//! `media`: what the IVS emulator's SFU (its local demo media plane) can carry on this machine.
//!
//! 1. **Stream.** One publisher sends a 720p-like H.264 stream (default 30 fps, 2.5 Mbit/s: ~10 KB
//!    delta frames, a key frame four times that every 2 s) plus Opus; the emulator's CPU is
//!    measured with the publisher alone, then with one subscriber for `--seconds`: frames sent,
//!    received and lost, and the CPU one forwarded stream adds.
//! 2. **Fan-out.** One publisher sends a 640x360-like stream (0.8 Mbit/s) and subscribers are
//!    added in steps 1, 2, 4, … up to `--max-subscribers`; each step is measured over a window of
//!    `--step-secs` once all its subscribers play: per subscriber, frames received of the pictures
//!    sent in the window (every frame carries its picture number, so the count is exact), the
//!    emulator's CPU, this process's and the machine's. The ramp stops after the first step whose
//!    worst subscriber lost `--loss-goal-pct` or more; the largest step before is the ceiling.
//! 3. **Join to first frame** of every subscriber: WHIP POST to its first video frame.
//!
//! The peers are the integration tests' str0m peers (`tests/common/webrtc.rs`), each a tokio
//! task with its own UDP socket, all in this process: on a small machine they compete with the
//! SFU for CPU, which is why this process's CPU and the machine's are reported beside the SFU's.

mod emulator;
pub mod summary;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;

use self::emulator::{Ivs, Joined, LocalEmulator, Stage, Token};
use self::summary::{FanoutPart, FanoutStep, MediaSummary, StreamPart, StreamShape, WindowCpu, slope};
use crate::cli::{MediaArgs, MediaPart};
use crate::driver::histogram;
use crate::percentiles::percentiles_ms;
use crate::procstat::{SAMPLE_EVERY, Sampler, cpu_secs, machine_cpu_secs, rss_kib, udp_drops};
use crate::report::Report;
use crate::target::LocalNode;
use crate::webrtc::{Peer, Stream, WhipPublisher, WhipSubscriber};

/// A started emulator's SFU holds this many sessions (its default `max_sessions`).
const SFU_SESSIONS: usize = 256;
/// How long a peer may take to connect, and a subscriber to get its first frame.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// Left to a new publisher, or a step's new subscribers, before a window starts.
const SETTLE: Duration = Duration::from_secs(1);
/// Join errors kept per step.
const ERRORS_KEPT: usize = 3;

pub async fn run(args: &MediaArgs) -> anyhow::Result<Report> {
    check(args)?;
    let tmp = tempfile::Builder::new().prefix("loadtest-media-").tempdir()?;
    let mut server = Server::start(args, tmp.path()).await?;
    let url = server.url.clone();
    let ivs = Ivs::new(&url)?;
    let mut server_usage = server.pid.as_ref().map(|p| Sampler::start(p.clone(), SAMPLE_EVERY));
    let mut loadgen = Sampler::own();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let media_addr = server.media_addr();
    let probe = Probe {
        pid: server.pid.as_ref().map(|p| p.load(Ordering::Relaxed)),
        sfu_port: media_addr
            .as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.port()),
        cores,
    };
    let mut joins = histogram();
    let outcome = parts(args, &ivs, &probe, &mut joins).await;
    server_usage.as_mut().map(Sampler::freeze);
    loadgen.freeze();
    if outcome.is_err()
        && let Some(log) = &server.log
    {
        eprint!("{}", log_tail(log, 20));
    }
    server.stop().await?;
    let (stream, fanout) = outcome?;
    let summary = MediaSummary {
        emulator: server.label,
        media_addr,
        cores,
        stream,
        fanout,
        join_to_first_frame_ms: percentiles_ms(&joins),
        failures: Vec::new(),
    }
    .judged(args.loss_goal_pct);
    Ok(Report {
        scenario: "media".into(),
        targets: vec![url],
        server: server_usage.map(|s| s.usage()),
        loadgen: Some(loadgen.usage()),
        media: Some(summary),
        ..Report::default()
    })
}

/// What serves the media: an emulator or a node started here, or one given by URL.
struct Server {
    url: String,
    /// What it is, for the report.
    label: String,
    pid: Option<Arc<AtomicU32>>,
    log: Option<PathBuf>,
    emulator: Option<LocalEmulator>,
    node: Option<LocalNode>,
}

impl Server {
    async fn start(args: &MediaArgs, dir: &Path) -> anyhow::Result<Server> {
        match (&args.server_bin, &args.emulator_url) {
            (Some(bin), _) if args.node => {
                let flags = [
                    format!("--media-max-sessions={}", most_subscribers(args) + 1),
                    "--emulator-enforce-tps=false".to_string(),
                ];
                let node = LocalNode::start(bin, &dir.join("node"), &flags).await?;
                let url = node
                    .banner
                    .emulator_url
                    .clone()
                    .context("the node's banner names no built-in IVS emulator")?;
                Ok(Server {
                    label: format!("{url} (built into a node started here)"),
                    url,
                    pid: Some(node.pid.clone()),
                    log: Some(node.log_path().to_path_buf()),
                    emulator: None,
                    node: Some(node),
                })
            }
            (Some(bin), _) => {
                let emulator = LocalEmulator::start(bin, &dir.join("emulator.log")).await?;
                Ok(Server {
                    url: emulator.url.clone(),
                    label: format!("{} (standalone, started here)", emulator.url),
                    pid: Some(emulator.pid.clone()),
                    log: Some(emulator.log.clone()),
                    emulator: Some(emulator),
                    node: None,
                })
            }
            (None, Some(url)) => Ok(Server {
                url: url.trim_end_matches('/').to_string(),
                label: url.trim_end_matches('/').to_string(),
                pid: args.server_pid.map(|p| Arc::new(AtomicU32::new(p))),
                log: None,
                emulator: None,
                node: None,
            }),
            (None, None) => {
                bail!("media needs --server-bin PATH (or STAGEFLEET_BIN) to start an emulator, or --emulator-url URL")
            }
        }
    }

    /// The SFU's UDP address, from the start-up log line of a server started here.
    fn media_addr(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.log.as_ref()?).ok()?;
        let line = log.lines().find(|l| l.contains("media plane listening"))?;
        let at = line.find("local_addr=")? + "local_addr=".len();
        Some(line[at..].split_whitespace().next()?.to_string())
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(e) = self.emulator.as_mut() {
            e.stop().await?;
        }
        if let Some(n) = self.node.as_mut() {
            n.stop().await?;
        }
        Ok(())
    }
}

fn check(args: &MediaArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.fps > 0.0 && args.fps <= 120.0, "--fps must be in (0, 120]");
    anyhow::ensure!(
        args.seconds > 0.0 && args.step_secs > 0.0,
        "--seconds and --step-secs must be positive"
    );
    anyhow::ensure!(args.ingest_secs > 0.0, "--ingest-secs must be positive");
    anyhow::ensure!(args.max_subscribers >= 1, "--max-subscribers must be at least 1");
    anyhow::ensure!(
        args.steps.first().is_none_or(|n| *n >= 1) && args.steps.windows(2).all(|w| w[0] < w[1]),
        "--steps must rise from 1 or more"
    );
    anyhow::ensure!(args.join_concurrency >= 1, "--join-concurrency must be at least 1");
    anyhow::ensure!(
        args.stream_kbps > 0.0 && args.fanout_kbps > 0.0 && args.keyframe_ratio >= 1.0,
        "bitrates must be positive and --keyframe-ratio at least 1"
    );
    if args.server_bin.is_some() && !args.node && args.part != MediaPart::Stream {
        anyhow::ensure!(
            most_subscribers(args) < SFU_SESSIONS,
            "the standalone emulator's SFU holds {SFU_SESSIONS} media sessions, its publisher's included: {} subscribers are too many (--node starts a node whose SFU holds more)",
            most_subscribers(args)
        );
    }
    Ok(())
}

async fn parts(
    args: &MediaArgs,
    ivs: &Ivs,
    probe: &Probe,
    joins: &mut Histogram<u64>,
) -> anyhow::Result<(Option<StreamPart>, Option<FanoutPart>)> {
    let stream = match args.part {
        MediaPart::All | MediaPart::Stream => Some(stream_part(args, ivs, probe, joins).await.context("stream part")?),
        MediaPart::Fanout => None,
    };
    let fanout = match args.part {
        MediaPart::All | MediaPart::Fanout => Some(fanout_part(args, ivs, probe, joins).await.context("fan-out part")?),
        MediaPart::Stream => None,
    };
    Ok((stream, fanout))
}

fn stream_of(args: &MediaArgs, kbps: f64) -> (Stream, StreamShape) {
    let every = (args.fps * args.keyframe_secs).round().max(1.0) as u64;
    let stream = Stream::at(args.fps, kbps, args.keyframe_ratio, every);
    let shape = StreamShape {
        fps: args.fps,
        kbps: stream.bitrate_bps() / 1000.0,
        delta_frame_bytes: stream.frame_bytes,
        keyframe_bytes: stream.keyframe_bytes,
        keyframe_every: stream.keyframe_every,
    };
    (stream, shape)
}

fn pictures(secs: f64, fps: f64) -> u64 {
    (secs * fps).round().max(1.0) as u64
}

// --- part 1 ----------------------------------------------------------------------------------

async fn stream_part(
    args: &MediaArgs,
    ivs: &Ivs,
    probe: &Probe,
    joins: &mut Histogram<u64>,
) -> anyhow::Result<StreamPart> {
    let (stream, shape) = stream_of(args, args.stream_kbps);
    eprintln!("media: stream part, {:.2} Mbit/s ...", shape.kbps / 1000.0);
    let host = Publishing::start(ivs, "loadtest-media-stream", stream).await?;
    tokio::time::sleep(SETTLE).await;
    let alone = measure(&host, &[], pictures(args.ingest_secs, args.fps), args, probe).await?;

    let token = ivs.token(&host.stage, "viewer-0", false).await?;
    let (viewer, join_ms) = subscribe(&host.subscribe_url(), &token).await?;
    let _ = joins.record((join_ms * 1000.0) as u64);
    tokio::time::sleep(SETTLE).await;
    let watched = measure(&host, &[viewer.peer()], pictures(args.seconds, args.fps), args, probe).await?;
    viewer.stop().await;
    host.stop(ivs).await;

    let received = watched.counted[0];
    let lost = watched.expected.saturating_sub(received);
    let server_pct = watched.cpu.server_pct;
    Ok(StreamPart {
        stream: shape,
        frames_sent: watched.expected,
        frames_received: received,
        frames_lost: lost,
        lost_pct: 100.0 * lost as f64 / watched.expected as f64,
        publisher_fps: watched.publisher_fps,
        join_to_first_frame_ms: join_ms,
        forward_cpu_pct: server_pct.zip(alone.cpu.server_pct).map(|(w, a)| w - a),
        sfu_socket_drops: watched.drops.sfu,
        other_socket_drops: watched.drops.others,
        server_cpu_secs_per_sec: server_pct.map(|p| p / 100.0),
        publisher_alone: alone.cpu,
        with_subscriber: watched.cpu,
    })
}

// --- part 2 ----------------------------------------------------------------------------------

/// The fan-out's steps: `--steps`, or the doubling ramp up to `--max-subscribers`.
fn step_counts(args: &MediaArgs) -> Vec<usize> {
    if args.steps.is_empty() {
        ramp(args.max_subscribers)
    } else {
        args.steps.clone()
    }
}

fn most_subscribers(args: &MediaArgs) -> usize {
    step_counts(args).last().copied().unwrap_or(0)
}

/// 1, 2, 4, … up to `max`, and `max` itself.
pub fn ramp(max: usize) -> Vec<usize> {
    let mut steps: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|n| *n <= max)
        .collect();
    if steps.last() != Some(&max) && max > 0 {
        steps.push(max);
    }
    steps
}

async fn fanout_part(
    args: &MediaArgs,
    ivs: &Ivs,
    probe: &Probe,
    joins: &mut Histogram<u64>,
) -> anyhow::Result<FanoutPart> {
    let (stream, shape) = stream_of(args, args.fanout_kbps);
    eprintln!(
        "media: fan-out part, {:.2} Mbit/s, up to {} subscribers ...",
        shape.kbps / 1000.0,
        most_subscribers(args)
    );
    let host = Publishing::start(ivs, "loadtest-media-fanout", stream).await?;
    tokio::time::sleep(SETTLE).await;
    let per_window = pictures(args.step_secs, args.fps);
    let alone = measure(&host, &[], per_window, args, probe).await?;
    let url = host.subscribe_url();
    let mut viewers: Vec<WhipSubscriber> = Vec::new();
    let mut steps = Vec::new();
    let mut stopped_by_loss = false;
    let mut next_viewer = 0usize;
    for n in step_counts(args) {
        // --- join the step's new subscribers, --join-concurrency at a time
        let mut tokens = Vec::new();
        while viewers.len() + tokens.len() < n {
            tokens.push(ivs.token(&host.stage, &format!("viewer-{next_viewer}"), false).await?);
            next_viewer += 1;
        }
        let started = Instant::now();
        let results: Vec<anyhow::Result<(WhipSubscriber, f64)>> = futures_util::stream::iter(tokens)
            .map(|t| {
                let url = url.clone();
                async move { subscribe(&url, &t).await }
            })
            .buffer_unordered(args.join_concurrency)
            .collect()
            .await;
        let joins_secs = started.elapsed().as_secs_f64();
        let mut step_joins = histogram();
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok((viewer, ms)) => {
                    let _ = step_joins.record((ms * 1000.0) as u64);
                    let _ = joins.record((ms * 1000.0) as u64);
                    viewers.push(viewer);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        tokio::time::sleep(SETTLE).await;

        // --- the window: every subscriber counts the same pictures
        let peers: Vec<&Peer> = viewers.iter().map(WhipSubscriber::peer).collect();
        let m = measure(&host, &peers, per_window, args, probe).await?;
        let losses: Vec<f64> = m
            .counted
            .iter()
            .map(|c| 100.0 * (1.0 - *c as f64 / m.expected as f64).max(0.0))
            .collect();
        let worst = losses.iter().copied().fold(0.0, f64::max);
        let mean = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        let closed = peers.iter().filter(|p| p.closed()).count();
        let held = errors.is_empty() && closed == 0 && viewers.len() == n && worst < args.loss_goal_pct;
        let step = FanoutStep {
            subscribers: n,
            playing: viewers.len() - closed,
            join_failures: errors.len(),
            join_errors: errors.into_iter().take(ERRORS_KEPT).collect(),
            join_to_first_frame_ms: percentiles_ms(&step_joins),
            joins_secs,
            frames_expected: m.expected,
            publisher_fps: m.publisher_fps,
            lost_pct_worst: worst,
            lost_pct_mean: mean,
            subscribers_with_loss: m.counted.iter().filter(|c| **c < m.expected).count(),
            closed,
            server_rss_mib: probe.server_rss_mib(),
            sfu_socket_drops: m.drops.sfu,
            other_socket_drops: m.drops.others,
            cpu: m.cpu,
            held,
        };
        eprintln!(
            "media: {n} subscriber(s): worst lost {:.2} %, mean {:.2} %; SFU {}, loadtest {}",
            step.lost_pct_worst,
            step.lost_pct_mean,
            step.cpu.server_pct.map_or("-".into(), |v| format!("{v:.0} %")),
            step.cpu.loadgen_pct.map_or("-".into(), |v| format!("{v:.0} %")),
        );
        steps.push(step);
        if !held {
            stopped_by_loss = true;
            break;
        }
    }
    // DELETE every subscription, then the publish session.
    futures_util::stream::iter(viewers)
        .for_each_concurrent(16, |v| async move {
            v.stop().await;
        })
        .await;
    host.stop(ivs).await;

    let held: Vec<&FanoutStep> = steps.iter().filter(|s| s.held).collect();
    let line = |f: fn(&WindowCpu) -> Option<f64>| {
        let mut points: Vec<(f64, f64)> = f(&alone.cpu).map(|y| (0.0, y)).into_iter().collect();
        points.extend(held.iter().filter_map(|s| f(&s.cpu).map(|y| (s.subscribers as f64, y))));
        slope(&points)
    };
    Ok(FanoutPart {
        stream: shape,
        step_secs: args.step_secs,
        loss_goal_pct: args.loss_goal_pct,
        ceiling: held.last().map(|s| s.subscribers),
        server_cpu_pct_per_subscriber: line(|c| c.server_pct),
        loadgen_cpu_pct_per_subscriber: line(|c| c.loadgen_pct),
        stopped_by_loss,
        publisher_alone: alone.cpu,
        steps,
    })
}

// --- peers -----------------------------------------------------------------------------------

/// A publisher joined through its events socket and publishing over WHIP.
struct Publishing {
    stage: Stage,
    host: Token,
    publisher: WhipPublisher,
    _joined: Joined,
}

impl Publishing {
    async fn start(ivs: &Ivs, name: &str, stream: Stream) -> anyhow::Result<Publishing> {
        let stage = ivs.create_stage(name).await?;
        let host = ivs.token(&stage, "host", true).await?;
        let joined = emulator::join(&stage, &host)
            .await
            .context("the publisher's events socket")?;
        let url = format!("{}/publish/{}", stage.whip, host.participant_id);
        let publisher = WhipPublisher::start_with(&url, &host.token, stream)
            .await
            .context("WHIP publish")?;
        let peer = publisher.peer();
        peer.wait_connected(CONNECT_WITHIN).await?;
        peer.wait_for("the first frames out", CONNECT_WITHIN, |p| p.frames_sent() >= 2)
            .await?;
        Ok(Publishing {
            stage,
            host,
            publisher,
            _joined: joined,
        })
    }

    fn subscribe_url(&self) -> String {
        format!("{}/subscribe/{}", self.stage.whip, self.host.participant_id)
    }

    /// DELETE the publish session, leave the stage, delete it.
    async fn stop(self, ivs: &Ivs) {
        self.publisher.stop().await;
        drop(self._joined);
        if let Err(e) = ivs.delete_stage(&self.stage).await {
            eprintln!("media: deleting stage {}: {e:#}", self.stage.arn);
        }
    }
}

/// WHIP subscribe and wait for the first video frame: the subscriber and the time from the POST
/// to that frame in ms.
async fn subscribe(url: &str, token: &Token) -> anyhow::Result<(WhipSubscriber, f64)> {
    let posted = Instant::now();
    let viewer = WhipSubscriber::start(url, &token.token).await?;
    let first = viewer
        .peer()
        .wait_for("the first video frame", CONNECT_WITHIN, |p| {
            p.first_frame_at().is_some()
        })
        .await;
    match (first, viewer.peer().first_frame_at()) {
        (Ok(()), Some(at)) => Ok((viewer, at.duration_since(posted).as_secs_f64() * 1000.0)),
        (first, _) => {
            let connected = viewer.peer().connected();
            viewer.stop().await;
            let why = first.err().map_or("no frame".to_string(), |e| format!("{e:#}"));
            bail!("subscribed, connected {connected}, but {why}")
        }
    }
}

// --- measuring -------------------------------------------------------------------------------

/// Where CPU is read from.
struct Probe {
    /// The emulator's PID, when known.
    pid: Option<u32>,
    /// The SFU's UDP port, when known.
    sfu_port: Option<u16>,
    cores: usize,
}

/// CPU counters at one moment.
struct Mark {
    at: Instant,
    server: Option<f64>,
    own: Option<f64>,
    machine: Option<(f64, f64)>,
}

/// UDP receive-buffer drops between two moments: at the SFU's socket, at every other.
#[derive(Clone, Copy, Debug, Default)]
struct Drops {
    sfu: Option<u64>,
    others: Option<u64>,
}

impl Probe {
    fn mark(&self) -> Mark {
        Mark {
            at: Instant::now(),
            server: self.pid.and_then(cpu_secs),
            own: cpu_secs(std::process::id()),
            machine: machine_cpu_secs(),
        }
    }

    fn between(&self, a: &Mark, b: &Mark) -> WindowCpu {
        let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        let pct = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| 100.0 * (y - x) / wall);
        WindowCpu {
            wall_secs: wall,
            server_pct: pct(a.server, b.server),
            loadgen_pct: pct(a.own, b.own),
            machine_pct: a.machine.zip(b.machine).and_then(|((busy0, all0), (busy1, all1))| {
                (all1 > all0).then(|| 100.0 * self.cores as f64 * (busy1 - busy0) / (all1 - all0))
            }),
            cores: self.cores,
        }
    }

    fn udp(&self) -> Option<(u64, u64)> {
        udp_drops(self.sfu_port)
    }

    fn drops(&self, a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Drops {
        let Some(((sfu0, others0), (sfu1, others1))) = a.zip(b) else {
            return Drops::default();
        };
        Drops {
            sfu: self.sfu_port.map(|_| sfu1.saturating_sub(sfu0)),
            others: Some(others1.saturating_sub(others0)),
        }
    }

    fn server_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        Some(rss_kib(&status)? as f64 / 1024.0)
    }
}

/// One measured window.
struct Window {
    /// Pictures the publisher sent in it.
    expected: u64,
    /// Per subscriber, how many of them it received.
    counted: Vec<u64>,
    publisher_fps: f64,
    cpu: WindowCpu,
    drops: Drops,
}

/// Measure over the publisher's next `n` pictures (starting half a second ahead, so none of them
/// is on its way yet): CPU from the moment the first is due to the moment the last went out;
/// then `--grace-secs` for the last to arrive, and each subscriber's count of them.
async fn measure(
    host: &Publishing,
    viewers: &[&Peer],
    n: u64,
    args: &MediaArgs,
    probe: &Probe,
) -> anyhow::Result<Window> {
    let publisher = host.publisher.peer();
    let lead = (args.fps / 2.0).ceil().max(2.0) as u64;
    let lo = publisher.frames_sent() + lead;
    let hi = lo + n;
    for v in viewers {
        v.count_pictures(lo..hi);
    }
    let within = Duration::from_secs_f64((n + lead) as f64 / args.fps * 3.0) + CONNECT_WITHIN;
    publisher
        .wait_for("the window's first picture", within, |p| p.frames_sent() >= lo)
        .await?;
    let (a, udp_a) = (probe.mark(), probe.udp());
    publisher
        .wait_for("the window's last picture", within, |p| p.frames_sent() >= hi)
        .await?;
    let b = probe.mark();
    tokio::time::sleep(Duration::from_secs_f64(args.grace_secs)).await;
    let drops = probe.drops(udp_a, probe.udp());
    let cpu = probe.between(&a, &b);
    Ok(Window {
        expected: n,
        counted: viewers.iter().map(|v| v.counted()).collect(),
        publisher_fps: n as f64 / cpu.wall_secs,
        cpu,
        drops,
    })
}

/// The last `n` lines of the emulator's log, for an error report.
fn log_tail(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    format!("the emulator's log ends:\n{tail}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_doubles_and_ends_on_the_maximum() {
        assert_eq!(ramp(1), [1]);
        assert_eq!(ramp(8), [1, 2, 4, 8]);
        assert_eq!(ramp(100), [1, 2, 4, 8, 16, 32, 64, 100]);
    }
}
