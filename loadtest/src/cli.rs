//! Command line: one subcommand per scenario, sharing the target/broadcast/report flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Load stagefleet through its public GraphQL API: admitted joins/s, join latency, and a ledger check that nothing was lost"
)]
pub struct Cli {
    /// Threads that generate load (0 = one per core). On the node's own machine, 1 leaves the
    /// most CPU to the node; the ledger check and `calibrate` use their own threads.
    #[arg(long, global = true, default_value_t = 0, env = "LOADTEST_THREADS")]
    pub threads: usize,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// N viewers join at a fixed rate (--rate) or open loop, at most --concurrency in flight.
    JoinStorm(JoinStormArgs),
    /// K viewers join, keep a WebSocket open and heartbeat over it for --hold-secs.
    Hold(HoldArgs),
    /// A join/leave mix over a pool of users; rejoins must be idempotent.
    Churn(ChurnArgs),
    /// A join storm while the node is SIGKILLed and restarted --cycles times; no join may be lost.
    Crash(CrashArgs),
    /// A join storm across a cluster started here (--cluster 3 or more) while its leader is
    /// SIGKILLed --kills times: how long writes stall after each kill; no join may be lost.
    Failover(FailoverArgs),
    /// ES384 signatures per second on this machine, on 1 and on 2 threads.
    Calibrate(CalibrateArgs),
    /// N subscribers each on its own WebSocket, watching the broadcast's stats and their own
    /// assignment, through a join storm: delivery delay, lost frames, node RSS per subscriber,
    /// and admitted joins/s against the same storm without them.
    Subscribers(SubscribersArgs),
    /// Adversarial GraphQL documents the front gate must refuse (worst-case time to refuse), and
    /// the node's RSS with --stalled WebSockets each stalled mid-frame.
    FrontDoor(FrontDoorArgs),
    /// A steady crowd against one autoscaling node started here, with a host publishing on every
    /// origin: refusals, time to the first READY replica, the fewest free ready seats, and IVS
    /// calls per 1,000 admitted viewers.
    Crowd(CrowdArgs),
    /// The IVS emulator's SFU (a demo media plane): its CPU per forwarded 720p stream, the most
    /// subscribers one 360p publisher reaches with < 1 % frames lost, and join to first frame.
    Media(MediaArgs),
}

/// Which node(s) to load: given by URL, or started here from a binary.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Node URL (http://host:port or …/graphql); repeat to spread requests across nodes.
    #[arg(long = "target", value_name = "URL")]
    pub targets: Vec<String>,
    /// Start a node from this stagefleet binary instead of using --target.
    #[arg(long, env = "STAGEFLEET_BIN", value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Data dir for the node this tool starts (default: a fresh temporary dir); with --cluster,
    /// the directory that gets the nodes' data dirs and logs, the emulator's and the shared key.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Extra flag for the node this tool starts; repeat (e.g. --server-arg=--seats-per-stage=500).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Start this many nodes from --server-bin as one Raft cluster, with a standalone IVS
    /// emulator they share, and spread the load over all of them (1 = a single node). Their
    /// data dirs are <data dir>/node1 …, their logs <data dir>/node1.log ….
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=9))]
    pub cluster: u32,
}

impl NodeArgs {
    /// Refuse `--cluster` above 1 for a scenario that needs exactly one node.
    pub fn single_node_only(&self, scenario: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.cluster <= 1,
            "{scenario} runs against one node; --cluster {} is for join-storm, hold, churn and failover",
            self.cluster
        );
        Ok(())
    }
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Join this existing live broadcast instead of starting one (then counts are not compared
    /// exactly unless --exclusive).
    #[arg(long, value_name = "ID")]
    pub broadcast_id: Option<String>,
    /// Replica stages to add (createStage) before the load starts, for more seats than one
    /// stage holds; only for a broadcast this tool starts.
    #[arg(long, default_value_t = 0)]
    pub extra_stages: u32,
    /// The run is the only writer of --broadcast-id: compare viewer counts exactly.
    #[arg(long)]
    pub exclusive: bool,
    /// Admin API key (start/end broadcasts); read from the node's banner when the tool starts it.
    #[arg(long, env = "LOADTEST_ADMIN_KEY", value_name = "KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Join as viewers with this key (keyed clients skip the per-address join limit).
    #[arg(long, env = "LOADTEST_VIEWER_KEY", value_name = "KEY", hide_env_values = true)]
    pub viewer_key: Option<String>,
    /// Operations in flight at most (also the HTTP connection pool size).
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// User ids are <prefix>-<n>; change it to join as new users on a reused broadcast.
    #[arg(long, default_value = "lt")]
    pub user_prefix: String,
    /// Public key to verify token signatures with, as KEY_ARN=PEM_FILE; repeatable. The built-in
    /// emulator's keys are found without this.
    #[arg(long = "public-key", value_name = "ARN=PEM")]
    pub public_keys: Vec<String>,
    /// The IVS emulator of a --target node (its banner's `IVS … at URL`), to verify token
    /// signatures with; found by itself for a node this tool starts.
    #[arg(long, value_name = "URL")]
    pub emulator_url: Option<String>,
    /// Skip the ledger check against the server after the run.
    #[arg(long)]
    pub no_verify: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct JoinStormArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1000)]
    pub viewers: u64,
    /// Joins offered per second; omit for open loop (as fast as --concurrency allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Run `calibrate` before and after the load and state admitted joins/s as a share of the
    /// better 2-thread signing rate of the two.
    #[arg(long)]
    pub calibrate: bool,
    #[arg(long, default_value_t = 3.0)]
    pub calibrate_secs: f64,
}

#[derive(Args, Debug, Clone)]
pub struct HoldArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1000)]
    pub viewers: u64,
    /// Joins (and WebSocket connects) per second while building up.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// How long to hold every connection once all are open.
    #[arg(long, default_value_t = 30.0)]
    pub hold_secs: f64,
    /// Each viewer sends `heartbeat` over its socket this often.
    #[arg(long, default_value_t = 10.0)]
    pub heartbeat_secs: f64,
    /// Each viewer sends a graphql-transport-ws ping this often (the server closes idle sockets after 60 s).
    #[arg(long, default_value_t = 20.0)]
    pub ping_secs: f64,
}

#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Operations in total (each is a join, a rejoin or a leave of one user).
    #[arg(long, default_value_t = 5000)]
    pub ops: u64,
    /// Size of the user pool the operations pick from.
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// Share of operations on a seated user that leave (the rest rejoin).
    #[arg(long, default_value_t = 0.5)]
    pub leave_ratio: f64,
    /// Operations per second; omit for open loop.
    #[arg(long)]
    pub rate: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct CrashArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 5000)]
    pub viewers: u64,
    /// Joins offered per second; omit for open loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// SIGKILL-and-restart cycles, spread evenly over the storm.
    #[arg(long, default_value_t = 5)]
    pub cycles: u32,
    /// Give up on a restart whose /readyz is not 200 within this.
    #[arg(long, default_value_t = 60.0)]
    pub ready_timeout_secs: f64,
    /// Acknowledged users re-joined after each restart (must get the same session back).
    #[arg(long, default_value_t = 100)]
    pub rejoin_sample: usize,
}

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Needs --cluster 3 or more (and --server-bin): the tool kills and restarts the nodes.
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 20_000)]
    pub viewers: u64,
    /// Joins offered per second; omit for open loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// SIGKILLs of the current leader, spread evenly over the storm; each killed node is
    /// restarted (same flags and addresses) and ready before the next kill.
    #[arg(long, default_value_t = 5)]
    pub kills: u32,
    /// Give up on a restarted node whose /readyz is not 200 within this.
    #[arg(long, default_value_t = 60.0)]
    pub ready_timeout_secs: f64,
    /// The goal the report judges against: every stall (SIGKILL to the first join acknowledged
    /// after it) shorter than this.
    #[arg(long, default_value_t = 3.0)]
    pub stall_goal_secs: f64,
}

#[derive(Args, Debug, Clone)]
pub struct SubscribersArgs {
    #[command(flatten)]
    pub common: Common,
    /// Subscribers to attach: each joins, opens its own WebSocket and subscribes to the
    /// broadcast's `stats` (one document for all) and to its own `assignment`.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: u64,
    /// Joins in each storm (once without subscribers, once with them), --concurrency in flight.
    #[arg(long, default_value_t = 20_000)]
    pub joins: u64,
    /// Joins offered per second in the storms; omit for open loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Subscribers attaching at once (join, connect, both subscriptions answered).
    #[arg(long, default_value_t = 200)]
    pub attach_concurrency: usize,
    /// WebSockets per loopback source address (127.0.0.2, 127.0.0.3, …): each address has its
    /// own ~28,000 ephemeral ports towards the node.
    #[arg(long, default_value_t = 20_000)]
    pub per_source: u64,
    /// After the storm, every subscriber must have seen the node's final stats within this.
    #[arg(long, default_value_t = 10.0)]
    pub catch_up_secs: f64,
    /// Before the storm with subscribers, wait until no stats message has come for this long
    /// (the node's `stats_interval_ms`) and their join rate is 0 (at most 15 s): the
    /// node sends at most one `stats` message per interval, and the rates alone while they decay,
    /// so a storm started right after the attach would have its first update wait behind the
    /// attach's last messages and measure the attach, not the storm. 0 = start at once.
    #[arg(long, default_value_t = 1000)]
    pub quiet_ms: u64,
    /// Skip the storm without subscribers (then there is no join-rate ratio).
    #[arg(long)]
    pub no_baseline: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CalibrateArgs {
    /// Seconds to sign for, per thread count.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct FrontDoorArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Times the whole set of documents is sent (mutants are drawn afresh each round).
    #[arg(long, default_value_t = 20)]
    pub rounds: u32,
    /// Seed of the random byte mutations (the same seed sends the same documents).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// WebSockets to hold, each stalled inside a frame (0 skips the socket part).
    #[arg(long, default_value_t = 10_000)]
    pub stalled: usize,
    /// Bytes each stalled frame's header announces (at most 65535, the 16-bit length form).
    #[arg(long, default_value_t = 60_000)]
    pub frame_bytes: u16,
    /// Payload bytes actually sent after each stalled frame's header.
    #[arg(long, default_value_t = 8)]
    pub sent_bytes: usize,
    /// How long to hold the sockets once all are open, sampling the node's RSS.
    #[arg(long, default_value_t = 10.0)]
    pub hold_secs: f64,
    /// TCP connects and upgrades in flight at once while opening the sockets.
    #[arg(long, default_value_t = 500)]
    pub connect_concurrency: usize,
    /// Skip the comparison run with as many sockets that only completed the upgrade.
    #[arg(long)]
    pub no_idle: bool,
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct CrowdArgs {
    /// Only --server-bin, --data-dir and --server-arg: the crowd needs a node with its own flags
    /// and its built-in IVS emulator, so it always starts one (a --server-arg repeating one of
    /// those flags stops it: the node refuses a flag given twice).
    #[command(flatten)]
    pub node: NodeArgs,
    /// The broadcast to start on that node.
    #[arg(long, default_value = "crowd")]
    pub broadcast_id: String,
    /// New viewers per second, each a join of its own user, paced at this fixed rate (a slow
    /// answer does not hold back the next join).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long new viewers keep coming.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seats per stage (the node's --seats-per-stage): few, so the crowd needs many stages.
    #[arg(long, default_value_t = 50)]
    pub seats: u32,
    /// Free ready seats the scaler keeps whatever the join rate (the node's --headroom-floor).
    #[arg(long, default_value_t = 100)]
    pub headroom_floor: u32,
    /// How long the emulator takes to create a stage, in ms (AWS takes a few hundred).
    #[arg(long, default_value_t = 300)]
    pub create_stage_ms: u64,
    /// How long after StartParticipantReplication the emulator shows the host's media in a
    /// replica, in ms.
    #[arg(long, default_value_t = 500)]
    pub replication_ms: u64,
    /// Concurrent subscriptions the region allows (the node's --region-subscription-quota);
    /// 0 = no limit.
    #[arg(long, default_value_t = 0)]
    pub region_subscription_quota: u64,
    /// Share (0 to 1) of IVS calls the emulator answers with ThrottlingException, from the
    /// node's start on; 0 = none.
    #[arg(long, default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Start the crowd once the broadcast has --headroom-floor free seats on READY stages, live
    /// and warmed; `false` starts it as soon as the host publishes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait_headroom: bool,
    /// Joins in flight at most (also the HTTP keep-alive pool size).
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Fail the run if more than this percentage of the joins is refused (without it refusals
    /// are reported, not judged).
    #[arg(long, value_name = "PCT")]
    pub max_refused_pct: Option<f64>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MediaPart {
    /// Both parts, the stream first.
    All,
    /// One 720p publisher and one subscriber: CPU per forwarded stream.
    Stream,
    /// One 360p publisher and a ramp of subscribers: the fan-out ceiling.
    Fanout,
}

#[derive(Args, Debug, Clone)]
pub struct MediaArgs {
    /// Start `stagefleet ivs-emulator` from this binary on a free loopback port (the standalone
    /// emulator serves WHIP and its SFU by default) and sample its CPU from /proc.
    #[arg(long, env = "STAGEFLEET_BIN", value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// With --server-bin: start a full node (`stagefleet` with its built-in emulator, a fresh
    /// temporary data dir) instead of the standalone emulator, with `--media-max-sessions` set to
    /// the largest step + 1, for ramps past the standalone SFU's 256 sessions. Its CPU includes
    /// the (idle) node's.
    #[arg(long, requires = "server_bin")]
    pub node: bool,
    /// Use this running emulator instead (a standalone one, or a node's built-in one: its
    /// banner's `IVS … at URL`); its CPU is sampled only with --server-pid.
    #[arg(long, value_name = "URL", conflicts_with = "server_bin")]
    pub emulator_url: Option<String>,
    /// The process of --emulator-url, to sample its CPU.
    #[arg(long, value_name = "PID", requires = "emulator_url")]
    pub server_pid: Option<u32>,
    /// Which part to run.
    #[arg(long, value_enum, default_value_t = MediaPart::All)]
    pub part: MediaPart,
    /// Stream part: how long the subscriber watches (the measured window).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Stream part: how long the publisher is measured alone first (the ingest cost).
    #[arg(long, default_value_t = 5.0)]
    pub ingest_secs: f64,
    /// Stream part: the publisher's video bitrate (720p-like).
    #[arg(long, default_value_t = 2500.0)]
    pub stream_kbps: f64,
    /// Fan-out part: the publisher's video bitrate (640x360-like).
    #[arg(long, default_value_t = 800.0)]
    pub fanout_kbps: f64,
    /// Pictures per second of both publishers.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// A key frame is this many times a delta frame's size.
    #[arg(long, default_value_t = 4.0)]
    pub keyframe_ratio: f64,
    /// Seconds between periodic key frames (besides the ones the SFU asks for).
    #[arg(long, default_value_t = 2.0)]
    pub keyframe_secs: f64,
    /// Fan-out part: the last step of the ramp 1, 2, 4, 8, … (and this number itself). The
    /// standalone emulator's SFU holds 256 sessions, the publisher's included; past that, --node.
    #[arg(long, default_value_t = 255)]
    pub max_subscribers: usize,
    /// Fan-out part: these steps instead of the doubling ramp (rising subscriber counts, e.g.
    /// `1,64,256,384,512,640,768`); the last is the maximum.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "N,N,…",
        conflicts_with = "max_subscribers"
    )]
    pub steps: Vec<usize>,
    /// Fan-out part: the measured window at each step, once its subscribers all play.
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,
    /// A step holds when its worst subscriber lost less than this percentage of the frames.
    #[arg(long, default_value_t = 1.0)]
    pub loss_goal_pct: f64,
    /// Fan-out part: subscribers joining at once when a step adds them.
    #[arg(long, default_value_t = 8)]
    pub join_concurrency: usize,
    /// A frame arriving this long after its window's last one was sent counts as lost.
    #[arg(long, default_value_t = 1.0)]
    pub grace_secs: f64,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}
