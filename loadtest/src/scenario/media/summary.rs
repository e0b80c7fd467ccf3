//! What `media` reports: the stream part (CPU per forwarded stream), the fan-out ramp (one row per
//! step, the ceiling) and join to first frame; as text and as JSON. Builds text from numbers;
//! measures nothing itself.

use serde::Serialize;

use crate::percentiles::Percentiles;

/// Other processes using this much of a core during a window make its numbers suspect.
const OTHERS_WARN_PCT: f64 = 15.0;

/// CPU over one measured window, in percent of one core (100 = one core busy).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct WindowCpu {
    pub wall_secs: f64,
    /// The emulator's process (`None`: not sampled, e.g. an emulator given by URL without a PID).
    pub server_pct: Option<f64>,
    /// This process: the publisher and every subscriber peer.
    pub loadgen_pct: Option<f64>,
    /// The whole machine (`cores` × 100 when every core is busy).
    pub machine_pct: Option<f64>,
    pub cores: usize,
}

impl WindowCpu {
    /// The machine's busy time not spent by the server or this process: others disturbing the
    /// measurement (or the kernel's softirq work for the loopback traffic, a few %).
    pub fn others_pct(&self) -> Option<f64> {
        let (m, s, l) = (self.machine_pct?, self.server_pct?, self.loadgen_pct?);
        Some((m - s - l).max(0.0))
    }
}

/// The video a publisher sends.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct StreamShape {
    pub fps: f64,
    /// Frame payload, averaged over a key frame interval (RTP, SRTP and audio come on top).
    pub kbps: f64,
    pub delta_frame_bytes: usize,
    pub keyframe_bytes: usize,
    pub keyframe_every: u64,
}

impl StreamShape {
    fn text(&self) -> String {
        format!(
            "H.264-like {:.0} fps, {:.2} Mbit/s of frames (delta {} B, key {} B every {} frames) + Opus",
            self.fps,
            self.kbps / 1000.0,
            self.delta_frame_bytes,
            self.keyframe_bytes,
            self.keyframe_every
        )
    }
}

/// Part 1: one publisher, then one subscriber.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamPart {
    pub stream: StreamShape,
    /// The publisher alone, connected and sending (what ingest costs).
    pub publisher_alone: WindowCpu,
    /// With one subscriber playing.
    pub with_subscriber: WindowCpu,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_lost: u64,
    pub lost_pct: f64,
    /// The publisher's pictures per second over the window (below `fps`: this process was late).
    pub publisher_fps: f64,
    pub join_to_first_frame_ms: f64,
    /// The server's CPU with the subscriber minus without: what forwarding one stream costs, in
    /// percent of one core (= 10 ms of CPU per second per 1 %).
    pub forward_cpu_pct: Option<f64>,
    /// With the subscriber: the server's CPU seconds per second.
    pub server_cpu_secs_per_sec: Option<f64>,
    /// Datagrams dropped in the window (and its grace) because a UDP receive buffer was full: at
    /// the SFU's socket (`None`: its port is not known), at every other socket of the machine
    /// (the peers').
    pub sfu_socket_drops: Option<u64>,
    pub other_socket_drops: Option<u64>,
}

/// One step of the fan-out ramp.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FanoutStep {
    pub subscribers: usize,
    /// Subscribers that joined and got a first frame (this step's new ones and the earlier).
    pub playing: usize,
    /// New subscribers that failed to join or got no first frame, and why (the first few).
    pub join_failures: usize,
    pub join_errors: Vec<String>,
    /// This step's new subscribers, WHIP POST to first frame.
    pub join_to_first_frame_ms: Percentiles,
    pub joins_secs: f64,
    /// Pictures the publisher sent in the window.
    pub frames_expected: u64,
    pub publisher_fps: f64,
    /// Per subscriber 1 − received/expected, in percent: the worst and the mean; how many lost any.
    pub lost_pct_worst: f64,
    pub lost_pct_mean: f64,
    pub subscribers_with_loss: usize,
    /// Subscribers the SFU closed (DTLS close, or its `Rtc` died).
    pub closed: usize,
    pub cpu: WindowCpu,
    pub server_rss_mib: Option<f64>,
    /// As in [`StreamPart`]: UDP receive-buffer drops at the SFU's socket, at all others.
    pub sfu_socket_drops: Option<u64>,
    pub other_socket_drops: Option<u64>,
    /// Worst subscriber below the goal and every subscriber playing.
    pub held: bool,
}

/// Part 2: one publisher, subscribers added step by step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FanoutPart {
    pub stream: StreamShape,
    pub step_secs: f64,
    pub loss_goal_pct: f64,
    pub steps: Vec<FanoutStep>,
    /// The largest step that held (`None`: not even the first).
    pub ceiling: Option<usize>,
    /// Whether the ramp stopped at a step that did not hold (else it reached its last step).
    pub stopped_by_loss: bool,
    /// One publisher alone, before any subscriber.
    pub publisher_alone: WindowCpu,
    /// The slope of the server's CPU over the held steps: percent of one core per subscriber.
    pub server_cpu_pct_per_subscriber: Option<f64>,
    pub loadgen_cpu_pct_per_subscriber: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MediaSummary {
    pub emulator: String,
    /// The SFU's UDP address, when the tool started the emulator.
    pub media_addr: Option<String>,
    pub cores: usize,
    pub stream: Option<StreamPart>,
    pub fanout: Option<FanoutPart>,
    /// Every join of the run (the stream part's and the ramp's), WHIP POST to first frame.
    pub join_to_first_frame_ms: Percentiles,
    pub failures: Vec<String>,
}

impl MediaSummary {
    /// Fill in `failures`: a single forwarded stream losing frames, or a ramp whose first step did
    /// not hold, is broken; reaching the ceiling is what the ramp is for.
    pub fn judged(mut self, goal_pct: f64) -> Self {
        let mut f = Vec::new();
        if let Some(s) = &self.stream
            && s.lost_pct >= goal_pct
        {
            f.push(format!(
                "one subscriber of one 720p publisher lost {:.2} % of the frames",
                s.lost_pct
            ));
        }
        if let Some(fo) = &self.fanout
            && fo.steps.first().is_none_or(|s| !s.held)
        {
            f.push("the fan-out's first step (one subscriber) did not hold".into());
        }
        self.failures = f;
        self
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn text(&self) -> String {
        let mut s = format!("media: the emulator's SFU at {}", self.emulator);
        if let Some(addr) = &self.media_addr {
            s += &format!(" (UDP {addr})");
        }
        s += &format!("; {} cores, CPU in % of one core\n", self.cores);
        if let Some(p) = &self.stream {
            s += &stream_text(p);
        }
        if let Some(p) = &self.fanout {
            s += &fanout_text(p);
        }
        let j = &self.join_to_first_frame_ms;
        s += &format!(
            "join to first frame (WHIP POST to the first video frame), {} joins: p50 {:.0} ms p99 {:.0} max {:.0}\n",
            j.count, j.p50, j.p99, j.max
        );
        if self.failures.is_empty() {
            s += "media verdict: OK\n";
        } else {
            s += &format!("media verdict: FAILED: {}\n", self.failures.join("; "));
        }
        s
    }
}

fn count(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// A percentage: one decimal below 10, whole above.
fn pct(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 9.95 => format!("{v:.1} %"),
        Some(v) => format!("{v:.0} %"),
    }
}

fn cpu_text(c: &WindowCpu) -> String {
    format!(
        "SFU process {}, loadtest {}, machine {} of {} % ({:.1} s){}",
        pct(c.server_pct),
        pct(c.loadgen_pct),
        pct(c.machine_pct),
        c.cores * 100,
        c.wall_secs,
        c.others_pct()
            .filter(|o| *o >= OTHERS_WARN_PCT)
            .map_or(String::new(), |o| format!(" [other processes used {o:.0} %]"))
    )
}

fn stream_text(p: &StreamPart) -> String {
    let mut s = format!("stream: 1 publisher, {}\n", p.stream.text());
    s += &format!("  publisher alone: {}\n", cpu_text(&p.publisher_alone));
    s += &format!("  with 1 subscriber: {}\n", cpu_text(&p.with_subscriber));
    s += &format!(
        "  frames sent {}, received {}, lost {} ({:.2} %); publisher at {:.1} fps; join to first frame {:.0} ms; UDP datagrams dropped for a full buffer: SFU {}, peers {}\n",
        p.frames_sent,
        p.frames_received,
        p.frames_lost,
        p.lost_pct,
        p.publisher_fps,
        p.join_to_first_frame_ms,
        count(p.sfu_socket_drops),
        count(p.other_socket_drops)
    );
    match (p.server_cpu_secs_per_sec, p.forward_cpu_pct) {
        (Some(total), Some(forward)) => {
            // Below the ticks' resolution the difference may come out a hair under zero.
            let forward = if forward.abs() < 0.05 { 0.0 } else { forward };
            s += &format!(
                "  SFU CPU with 1 publisher + 1 subscriber: {total:.3} CPU s/s; CPU per forwarded 720p stream (with minus without the subscriber): {forward:.1} % of a core ({:.0} ms CPU per second)\n",
                forward * 10.0
            )
        }
        _ => s += "  SFU CPU not sampled (no PID)\n",
    }
    s
}

fn fanout_text(p: &FanoutPart) -> String {
    let mut s = format!(
        "fan-out: 1 publisher, {}; {:.0} s windows; a step holds with every subscriber under {} % lost\n",
        p.stream.text(),
        p.step_secs,
        p.loss_goal_pct
    );
    s += &format!("  publisher alone: {}\n", cpu_text(&p.publisher_alone));
    s += "   subs playing  join ms p50/p99/max  pub fps  lost % worst/mean (subs losing)  SFU %  loadtest %  machine %  SFU RSS MiB  UDP drops SFU/peers\n";
    for st in &p.steps {
        let j = &st.join_to_first_frame_ms;
        let row = format!(
            "  {:>5} {:>7}  {:>6.0}/{:>5.0}/{:>5.0}    {:>5.1}  {:>8.2}/{:<6.2} ({:>3})            {:>5}  {:>10}  {:>9}  {:>11}  {:>9}/{:<9}{}",
            st.subscribers,
            st.playing,
            j.p50,
            j.p99,
            j.max,
            st.publisher_fps,
            st.lost_pct_worst,
            st.lost_pct_mean,
            st.subscribers_with_loss,
            pct(st.cpu.server_pct),
            pct(st.cpu.loadgen_pct),
            pct(st.cpu.machine_pct),
            st.server_rss_mib.map_or("-".into(), |r| format!("{r:.1}")),
            count(st.sfu_socket_drops),
            count(st.other_socket_drops),
            if st.held { "" } else { "  <- did not hold" }
        );
        s += row.trim_end();
        s += "\n";
        if let Some(o) = st.cpu.others_pct().filter(|o| *o >= OTHERS_WARN_PCT) {
            s += &format!("        other processes used {o:.0} % of a core in this window\n");
        }
        if st.join_failures > 0 || st.closed > 0 {
            s += &format!(
                "        {} join(s) failed, {} closed by the SFU{}\n",
                st.join_failures,
                st.closed,
                st.join_errors
                    .first()
                    .map_or(String::new(), |e| format!("; first error: {e}"))
            );
        }
    }
    match p.ceiling {
        Some(n) => s += &format!("  fan-out ceiling: {n} subscribers with < {} % lost", p.loss_goal_pct),
        None => {
            s += &format!(
                "  fan-out ceiling: none (1 subscriber lost {} % or more)",
                p.loss_goal_pct
            )
        }
    }
    s += if p.stopped_by_loss {
        " (the next step did not hold)\n"
    } else {
        " (the ramp's last step; not a limit)\n"
    };
    if let Some(cpu) = p.server_cpu_pct_per_subscriber {
        s += &format!(
            "  per added subscriber (slope over the held steps): SFU {cpu:.2} % of a core, loadtest {}\n",
            p.loadgen_cpu_pct_per_subscriber
                .map_or("-".into(), |v| format!("{v:.2} %"))
        );
    }
    s
}

/// Least-squares slope of y over x; `None` with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (mx, my) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_and_of_too_few_points() {
        let s = slope(&[(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]).unwrap();
        assert!((s - 2.0).abs() < 1e-9, "{s}");
        assert_eq!(slope(&[(1.0, 3.0)]), None);
        assert_eq!(slope(&[(2.0, 3.0), (2.0, 5.0)]), None);
    }

    #[test]
    fn reaching_the_ceiling_is_not_a_failure_but_a_lossy_single_stream_is() {
        let held = |n, held| FanoutStep {
            subscribers: n,
            held,
            ..FanoutStep::default()
        };
        let summary = MediaSummary {
            fanout: Some(FanoutPart {
                steps: vec![held(1, true), held(2, true), held(4, false)],
                ceiling: Some(2),
                stopped_by_loss: true,
                ..FanoutPart::default()
            }),
            ..MediaSummary::default()
        }
        .judged(1.0);
        assert!(summary.ok(), "{:?}", summary.failures);
        assert!(summary.text().contains("fan-out ceiling: 2 subscribers"));
        let lossy = MediaSummary {
            stream: Some(StreamPart {
                lost_pct: 2.0,
                ..StreamPart::default()
            }),
            ..MediaSummary::default()
        }
        .judged(1.0);
        assert!(!lossy.ok());
    }
}
