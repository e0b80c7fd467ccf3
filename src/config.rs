//! Every setting in one place, layered file < environment < flags. Each setting is declared once
//! in the `settings!` table below (name, type, default, environment variable, doc); the macro
//! derives the CLI flags, the config-file keys, the resolved [`Config`], and the table the
//! README documents (a test checks the README against [`settings_table`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fleet::admission::{FleetPolicy, InputError};
use crate::fleet::placement::Placement;

mod validate;

macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, $env:literal; )*) => {
        /// One layer of settings: flags + environment (via clap) or a config file (via serde).
        #[derive(Debug, Default, Clone, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ConfigArgs {
            $( $(#[doc = $doc])+ #[arg(long, env = $env, hide_env_values = true)] pub $name: Option<$ty>, )*
        }

        /// The resolved settings of one node.
        #[derive(Debug, Clone, Serialize)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )* }
            }
        }

        impl Config {
            /// Flags and environment win over the file; the file wins over defaults.
            pub fn layered(flags_env: ConfigArgs, file: ConfigArgs) -> Self {
                let d = Config::default();
                Config { $( $name: flags_env.$name.or(file.$name).unwrap_or(d.$name), )* }
            }
        }

        /// (name, environment variable, doc) of every setting, in declaration order.
        const SETTINGS: &[(&str, &str, &str)] = &[ $( (stringify!($name), $env, concat!($($doc, " "),+)), )* ];
    };
}

settings! {
    /// Directory for the sled database, Raft log, snapshots and the built-in emulator's state.
    data_dir: PathBuf = PathBuf::from("stagefleet-data"), "STAGEFLEET_DATA_DIR";
    /// Address the HTTP server (GraphQL, web pages, health, metrics) listens on.
    http_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), "STAGEFLEET_HTTP_ADDR";
    /// Base URL users reach this node at (printed at start). Empty: http://<http_addr>.
    public_url: String = String::new(), "STAGEFLEET_PUBLIC_URL";
    /// This node's Raft id. Stable across restarts; unique within a cluster.
    node_id: u64 = 1, "STAGEFLEET_NODE_ID";
    /// Address this node's internode Raft RPC listens on, a port of its own (e.g. `0.0.0.0:7000`). Empty: a single node, no cluster port.
    raft_addr: String = String::new(), "STAGEFLEET_RAFT_ADDR";
    /// Address the other nodes reach this node's Raft RPC at (stored in the membership: keep it stable). Empty: `raft_addr`.
    raft_advertise_addr: String = String::new(), "STAGEFLEET_RAFT_ADVERTISE_ADDR";
    /// Nodes that form the cluster on first start: each is given the others' Raft addresses in `join`, and the one with the lowest `node_id` initialises the cluster once it has heard from all. 1: a single node. A no-op once the cluster exists.
    bootstrap_expect: u32 = 1, "STAGEFLEET_BOOTSTRAP_EXPECT";
    /// Comma-separated Raft addresses of other members (e.g. `10.0.0.1:7000,10.0.0.2:7000`). A node that is not a member asks them to add it; a no-op once it is one.
    join: String = String::new(), "STAGEFLEET_JOIN";
    /// Shared secret every internode request carries (at least 16 characters; the same on every node). Required with `raft_addr`. Prefer the environment variable to a flag.
    cluster_secret: String = String::new(), "STAGEFLEET_CLUSTER_SECRET";
    /// Fleet name written into every managed stage's tags; stages of other fleets are never touched.
    fleet_id: String = "stagefleet".into(), "STAGEFLEET_FLEET_ID";
    /// `emulator` (built-in, in-process), `aws` (real IVS), or `auto` (aws when a region is configured, else emulator).
    ivs_backend: IvsBackend = IvsBackend::Auto, "STAGEFLEET_IVS_BACKEND";
    /// AWS region for real IVS. Empty: AWS_REGION / AWS_DEFAULT_REGION.
    ivs_region: String = String::new(), "STAGEFLEET_IVS_REGION";
    /// Send IVS API calls here instead of AWS (e.g. a standalone `stagefleet ivs-emulator`). Empty: AWS's endpoint.
    ivs_endpoint_url: String = String::new(), "STAGEFLEET_IVS_ENDPOINT_URL";
    /// Attempts per IVS call (retries use jittered exponential backoff on throttling and 5xx).
    ivs_max_attempts: u32 = 4, "STAGEFLEET_IVS_MAX_ATTEMPTS";
    /// The first retry's wait after a throttled or failed IVS call, in milliseconds (doubling per attempt, jittered).
    ivs_retry_backoff_ms: u64 = 200, "STAGEFLEET_IVS_RETRY_BACKOFF_MS";
    /// Upper bound on one IVS call including retries, in seconds.
    ivs_timeout_secs: u64 = 30, "STAGEFLEET_IVS_TIMEOUT_SECS";
    /// Client-side calls/s per IVS operation, overriding the IVS quotas, as `Op=rate,Op=rate` (e.g. `CreateStage=2`).
    ivs_tps: String = String::new(), "STAGEFLEET_IVS_TPS";
    /// Listen address of the in-process emulator (port 0 = any free port).
    emulator_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0)), "STAGEFLEET_EMULATOR_ADDR";
    /// Whether the emulator enforces IVS's per-operation call rates.
    emulator_enforce_tps: bool = true, "STAGEFLEET_EMULATOR_ENFORCE_TPS";
    /// How long the built-in emulator takes to answer CreateStage, in milliseconds (AWS takes a few hundred; 0 keeps the demo fast). Changeable at runtime with `POST /_emulator/faults`.
    emulator_create_stage_ms: u64 = 0, "STAGEFLEET_EMULATOR_CREATE_STAGE_MS";
    /// How long after StartParticipantReplication the built-in emulator shows the host's media in the replica stage, in milliseconds (0 = at once). Changeable at runtime with `POST /_emulator/faults`.
    emulator_replication_active_ms: u64 = 0, "STAGEFLEET_EMULATOR_REPLICATION_ACTIVE_MS";
    /// Whether the built-in emulator serves media: the stage events socket, WHIP and a small SFU, so the real IVS Web SDK publishes and plays video locally. A demo plane, not a production SFU; never used with real IVS.
    emulator_media: bool = true, "STAGEFLEET_EMULATOR_MEDIA";
    /// UDP address of the emulator's SFU (one socket for every WebRTC session; port 0 = any free port).
    media_bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0)), "STAGEFLEET_MEDIA_BIND";
    /// IP the SFU puts in its ICE candidate, which browsers send media to. Empty: the bind IP. For a demo across machines bind `0.0.0.0:PORT` and set this host's LAN address.
    media_advertise_ip: String = String::new(), "STAGEFLEET_MEDIA_ADVERTISE_IP";
    /// Most WebRTC sessions (publish and subscribe together) the SFU holds; more are refused with 503.
    media_max_sessions: u32 = 256, "STAGEFLEET_MEDIA_MAX_SESSIONS";
    /// Most stage events sockets (browser participants) the emulator holds open; more are refused with `aws:ivs:JOIN_ERROR`.
    media_max_sockets: u32 = 1_000, "STAGEFLEET_MEDIA_MAX_SOCKETS";
    /// Most incoming video+audio a publish session may send, in kbit/s; a publisher over it for several seconds is disconnected. 0: no cap.
    media_max_bitrate_kbps: u64 = 8_000, "STAGEFLEET_MEDIA_MAX_BITRATE_KBPS";
    /// Viewer seats per stage (IVS allows 10,000 subscribers by default; small values make local demos scale).
    seats_per_stage: u32 = FleetPolicy::DEFAULT.seats_per_stage, "STAGEFLEET_SEATS_PER_STAGE";
    /// Most stages the fleet manages at once in the region (IVS default quota: 1,000).
    max_stages: u32 = FleetPolicy::DEFAULT.max_stages, "STAGEFLEET_MAX_STAGES";
    /// Viewer placement: `pack` (fullest stage with room) or `spread` (least loaded).
    placement: Placement = FleetPolicy::DEFAULT.placement, "STAGEFLEET_PLACEMENT";
    /// Participant token lifetime in minutes (IVS: 1 to 20160).
    token_ttl_minutes: u32 = 720, "STAGEFLEET_TOKEN_TTL_MINUTES";
    /// A viewer session not renewed (heartbeat or open subscription) for this long ends and frees its seat.
    session_lease_secs: u64 = (FleetPolicy::DEFAULT.session_lease_ms / 1000) as u64, "STAGEFLEET_SESSION_LEASE_SECS";
    /// How often this node writes the renewals it collected, and the leader expires lapsed sessions.
    presence_interval_secs: u64 = 5, "STAGEFLEET_PRESENCE_INTERVAL_SECS";
    /// How often the leader's stage loop looks for stage intents nobody is driving (after a crash or a change of leader) and retries failed deletions. New intents are driven at once, not on this interval.
    reconcile_interval_secs: u64 = 15, "STAGEFLEET_RECONCILE_INTERVAL_SECS";
    /// Subscriptions that follow a changing value (`stats`, `broadcast`, `node`) send at most one message per this many milliseconds, and only when the value changed.
    stats_interval_ms: u64 = 1000, "STAGEFLEET_STATS_INTERVAL_MS";
    /// Add stages ahead of the crowd and drain quiet ones (`drain_below`) on the leader (the scaler). Off: stages come only from `createStage` and go only by `drainStage`/`deleteStage`.
    autoscale: bool = true, "STAGEFLEET_AUTOSCALE";
    /// How often the scaler plans, in milliseconds.
    scaler_interval_ms: u32 = 1000, "STAGEFLEET_SCALER_INTERVAL_MS";
    /// Free ready seats the scaler keeps per live broadcast whatever the join rate.
    headroom_floor: u32 = 100, "STAGEFLEET_HEADROOM_FLOOR";
    /// The scaler keeps free seats for join rate × (stage ready time + scaler interval) × this.
    headroom_safety: f64 = 2.0, "STAGEFLEET_HEADROOM_SAFETY";
    /// Ready, empty stages the scaler keeps per live broadcast besides the headroom (pre-warm a launch).
    warm_pool: u32 = 0, "STAGEFLEET_WARM_POOL";
    /// Stages the IVS region allows (your account's quota); the scaler never plans past it.
    region_stage_quota: u32 = 1000, "STAGEFLEET_REGION_STAGE_QUOTA";
    /// Concurrent subscriptions (publisher-to-viewer connections) the IVS region allows (default quota 20,000; accounts raise it); 0 = no limit. Joins past it are refused with `REGION_FULL` and the scaler plans no seats past it. Seeds the replicated policy.
    region_subscription_quota: u64 = 20000, "STAGEFLEET_REGION_SUBSCRIPTION_QUOTA";
    /// The scaler's first guess of how long a new stage takes to become ready, in milliseconds, until it has measured some.
    stage_ready_ms: u64 = 3000, "STAGEFLEET_STAGE_READY_MS";
    /// Scale-down: a replica stage with fewer viewers than this for `cool_down_secs` is drained (no new viewers, deleted once empty) when the others keep the headroom without it; 0 = never (the default: IVS bills participants, not idle stages, so an empty stage costs only a slot of the stage quota).
    drain_below: u32 = 0, "STAGEFLEET_DRAIN_BELOW";
    /// How long a replica's audience must stay under `drain_below` before it is drained, in seconds.
    cool_down_secs: u64 = 60, "STAGEFLEET_COOL_DOWN_SECS";
    /// Move a drained stage's viewers to stages with room at once (each gets a `MOVED` assignment with a new token), so it is deleted without waiting for them to leave.
    consolidate: bool = false, "STAGEFLEET_CONSOLIDATE";
    /// How often the replicator looks at pending replications (start, check the media shows), in milliseconds.
    replicator_interval_ms: u64 = 250, "STAGEFLEET_REPLICATOR_INTERVAL_MS";
    /// How often the replicator asks IVS (ListParticipants) who publishes on each origin stage, in seconds; the broadcaster page's `hostPublishing` tells it at once.
    publisher_poll_secs: u64 = 15, "STAGEFLEET_PUBLISHER_POLL_SECS";
    /// A replication whose media does not show in the replica within this many seconds is stopped and started again.
    replication_timeout_secs: u64 = 30, "STAGEFLEET_REPLICATION_TIMEOUT_SECS";
    /// `reconnectWindowSeconds` of every replication (0 to 300): a host who drops and comes back within it stays replicated.
    replication_reconnect_window_secs: u32 = 30, "STAGEFLEET_REPLICATION_RECONNECT_WINDOW_SECS";
    /// How often the leader's reaper lists this fleet's stages in IVS (ListStages by the fleet tag) looking for ones the state does not know, in seconds.
    reaper_interval_secs: u64 = 60, "STAGEFLEET_REAPER_INTERVAL_SECS";
    /// How often the leader's drift reconciler samples stages (GetStage + ListParticipants, spare budget only) to compare IVS with the ledger, in seconds.
    drift_interval_secs: u64 = 30, "STAGEFLEET_DRIFT_INTERVAL_SECS";
    /// Stages sampled per drift sweep (round robin over all stages).
    drift_stages_per_sweep: usize = 10, "STAGEFLEET_DRIFT_STAGES_PER_SWEEP";
    /// A seat whose viewer has not joined IVS within this many seconds counts as drift (`never_connected`).
    connect_grace_secs: u64 = 60, "STAGEFLEET_CONNECT_GRACE_SECS";
    /// Release seats whose viewer never joined IVS within `connect_grace_secs` (their `assignment` ends with `UNUSED`). Off: they are only reported.
    release_unused_seats: bool = false, "STAGEFLEET_RELEASE_UNUSED_SEATS";
    /// A stage with this fleet's tag that the state does not know is deleted once it has stayed unknown this long, in seconds (stages of other fleets are never touched).
    reaper_grace_secs: u64 = 300, "STAGEFLEET_REAPER_GRACE_SECS";
    /// Most operations (subscriptions, queries) one WebSocket may have open at once; one more is refused with `SUBSCRIPTION_LIMIT`.
    max_subscriptions_per_connection: usize = 100, "STAGEFLEET_MAX_SUBSCRIPTIONS_PER_CONNECTION";
    /// A WebSocket must send `connection_init` within this many seconds, else it is closed (4408).
    ws_init_timeout_secs: u64 = 5, "STAGEFLEET_WS_INIT_TIMEOUT_SECS";
    /// A WebSocket that sends nothing (not even a pong) for this many seconds is closed (4000); the node pings every third of it.
    ws_idle_timeout_secs: u64 = 60, "STAGEFLEET_WS_IDLE_TIMEOUT_SECS";
    /// How long `startBroadcast`, `createStage` and `deleteStage` wait for IVS to answer the leader's call before answering `STILL_PENDING` (the call goes on in the background); `endBroadcast` answers the broadcast still `ENDING` then.
    stage_outcome_timeout_secs: u64 = 120, "STAGEFLEET_STAGE_OUTCOME_TIMEOUT_SECS";
    /// Who may join as a viewer: `open` (anyone) or `keyed` (an API key with the viewer, host or admin role).
    viewer_join: ViewerJoin = ViewerJoin::Open, "STAGEFLEET_VIEWER_JOIN";
    /// Joins per second allowed from one client without a key or with a viewer key (burst: 2x). A client is one network: see `join_subnet_v4_prefix` and `join_subnet_v6_prefix`. 0 = unlimited.
    join_rate_per_ip: u32 = 20, "STAGEFLEET_JOIN_RATE_PER_IP";
    /// Request header a proxy in front of the node writes the client's address into (e.g. `x-forwarded-for`), for per-client join limits. Empty: the TCP peer. The address taken is the one the trusted proxies added (see `trusted_proxies`, `trusted_proxy_cidrs`), never the client-supplied first entry.
    client_ip_header: String = String::new(), "STAGEFLEET_CLIENT_IP_HEADER";
    /// How many proxies in front of the node append to `client_ip_header`: the client is the entry this many places from the right (1 = the last entry, as nginx's `$proxy_add_x_forwarded_for` or one AWS ALB writes it). Ignored when `trusted_proxy_cidrs` is set.
    trusted_proxies: u32 = 1, "STAGEFLEET_TRUSTED_PROXIES";
    /// Comma-separated CIDRs of your proxies (e.g. `10.0.0.0/8,fd00::/8`). When set, the client is the rightmost entry of `client_ip_header` that is not in these ranges, and the header is only believed when the TCP peer is in them. Empty: use `trusted_proxies`.
    trusted_proxy_cidrs: String = String::new(), "STAGEFLEET_TRUSTED_PROXY_CIDRS";
    /// Most seats one client — one network, see `join_subnet_v4_prefix`/`join_subnet_v6_prefix` — may hold in one broadcast. 0 = no cap. `startBroadcast(maxSeatsPerClient:)` sets it per broadcast.
    max_seats_per_client: u32 = FleetPolicy::DEFAULT.max_seats_per_client, "STAGEFLEET_MAX_SEATS_PER_CLIENT";
    /// Per-client join limits and seat caps count IPv4 clients by this prefix length (24: one /24 network is one client).
    join_subnet_v4_prefix: u8 = 24, "STAGEFLEET_JOIN_SUBNET_V4_PREFIX";
    /// Per-client join limits and seat caps count IPv6 clients by this prefix length (64: one /64 network is one client).
    join_subnet_v6_prefix: u8 = 64, "STAGEFLEET_JOIN_SUBNET_V6_PREFIX";
    /// Joins per second allowed per host or admin API key (burst: 2x). 0 = unlimited.
    join_rate_per_key: u32 = 0, "STAGEFLEET_JOIN_RATE_PER_KEY";
    /// Joins per second allowed per viewer API key (burst: 2x), on top of the per-client limit that viewer keys also pass. 0 = unlimited.
    join_rate_per_viewer_key: u32 = 200, "STAGEFLEET_JOIN_RATE_PER_VIEWER_KEY";
    /// PEM file with the P-384 private key to sign tokens with. Empty: generate one at first start.
    signing_key_file: PathBuf = PathBuf::new(), "STAGEFLEET_SIGNING_KEY_FILE";
    /// Public-key ARN of `signing_key_file` if it is already imported into IVS. Empty: import it.
    signing_key_arn: String = String::new(), "STAGEFLEET_SIGNING_KEY_ARN";
    /// File holding the key-encryption key (32 random bytes, base64) that seals the token signing key in the replicated log and snapshots. Empty: `<data_dir>/key-encryption-key`, generated (mode 0600) at first start. Every node of a cluster needs the same one.
    key_encryption_key_file: PathBuf = PathBuf::new(), "STAGEFLEET_KEY_ENCRYPTION_KEY_FILE";
    /// The previous key-encryption key's file, while rotating: the node opens the signing key with it and seals it again under `key_encryption_key_file` (README: rotating the key-encryption key).
    previous_key_encryption_key_file: PathBuf = PathBuf::new(), "STAGEFLEET_PREVIOUS_KEY_ENCRYPTION_KEY_FILE";
    /// Most joins in one Raft log entry (group commit).
    group_commit_max_batch: usize = 1024, "STAGEFLEET_GROUP_COMMIT_MAX_BATCH";
    /// Group-commit proposals in flight at once; further joins queue into the next batch.
    group_commit_in_flight: usize = 2, "STAGEFLEET_GROUP_COMMIT_IN_FLIGHT";
    /// Under load (the last batch held 16 requests or more), batches are proposed one at a time and each stays open this many microseconds at least: fewer, larger log entries. A lightly loaded node never waits. 0 = never.
    group_commit_linger_us: u64 = 5_000, "STAGEFLEET_GROUP_COMMIT_LINGER_US";
    /// Threads that sign tokens. 0 = one per core.
    signer_threads: usize = 0, "STAGEFLEET_SIGNER_THREADS";
    /// Threads of the async runtime (HTTP, GraphQL, Raft, sled writes). 0 = one per core. Fewer leaves more CPU to the signer threads in a join storm, at a cost in the tail latency of everything else (BENCHMARKS.md).
    runtime_threads: usize = 0, "STAGEFLEET_RUNTIME_THREADS";
    /// Deepest GraphQL query accepted (14 or more keeps GraphiQL's introspection working).
    graphql_max_depth: usize = 16, "STAGEFLEET_GRAPHQL_MAX_DEPTH";
    /// Most complex GraphQL query accepted (200 or more keeps GraphiQL's introspection working).
    graphql_max_complexity: usize = 500, "STAGEFLEET_GRAPHQL_MAX_COMPLEXITY";
    /// Front gate: deepest nesting of selections, lists, objects and parentheses in a GraphQL document, checked before it is parsed.
    graphql_max_nesting: usize = 32, "STAGEFLEET_GRAPHQL_MAX_NESTING";
    /// Front gate: most lexical tokens in a GraphQL document.
    graphql_max_tokens: usize = 5_000, "STAGEFLEET_GRAPHQL_MAX_TOKENS";
    /// Front gate: most fragment definitions in a GraphQL document.
    graphql_max_fragments: usize = 64, "STAGEFLEET_GRAPHQL_MAX_FRAGMENTS";
    /// Front gate: most fragment spreads once every spread is expanded (counted over the fragment graph, in linear time).
    graphql_max_spreads: usize = 1_000, "STAGEFLEET_GRAPHQL_MAX_SPREADS";
    /// Most open TCP connections, WebSockets included; further connections are answered 503 and closed. Lowered at start to fit the open-files limit (minus 512 kept for the node's own files).
    max_connections: usize = 25_000, "STAGEFLEET_MAX_CONNECTIONS";
    /// Most open GraphQL WebSockets (at most `max_connections`); further upgrades are refused with 503 and `extensions.code` UNAVAILABLE.
    max_websockets: usize = 20_000, "STAGEFLEET_MAX_WEBSOCKETS";
    /// Listen backlog of the HTTP socket (the kernel caps it at net.core.somaxconn): room for connection storms.
    listen_backlog: u32 = 4_096, "STAGEFLEET_LISTEN_BACKLOG";
    /// Seconds a client has to send a request's headers, and most seconds an idle keep-alive connection stays open.
    header_read_timeout_secs: u64 = 10, "STAGEFLEET_HEADER_READ_TIMEOUT_SECS";
    /// Seconds a client has to send a request's body once its headers arrived.
    body_read_timeout_secs: u64 = 10, "STAGEFLEET_BODY_READ_TIMEOUT_SECS";
    /// On SIGTERM or Ctrl-C: seconds open requests and WebSockets get to finish before the node closes them and exits.
    shutdown_drain_secs: u64 = 10, "STAGEFLEET_SHUTDOWN_DRAIN_SECS";
    /// Comma-separated origins (e.g. `https://example.com`) whose pages may call the API from a browser (CORS). Empty: CORS off, only same-origin pages.
    cors_allowed_origins: String = String::new(), "STAGEFLEET_CORS_ALLOWED_ORIGINS";
    /// Where the web pages load the IVS Web Broadcast SDK from: an `https://` URL (its origin is added to the pages' Content-Security-Policy) or a path on this node. Empty: AWS's CDN build of the version the pages are tested with, or `/sdk/amazon-ivs-web-broadcast.js` when `sdk_dir` is set.
    sdk_url: String = String::new(), "STAGEFLEET_SDK_URL";
    /// A directory served at `/sdk/` to self-host the SDK (e.g. the npm package `amazon-ivs-web-broadcast`'s `dist/`). Empty: nothing served there.
    sdk_dir: PathBuf = PathBuf::new(), "STAGEFLEET_SDK_DIR";
    /// Log format: `text` or `json`.
    log_format: LogFormat = LogFormat::Text, "STAGEFLEET_LOG_FORMAT";
    /// Log filter in tracing's EnvFilter syntax (RUST_LOG wins when set).
    log_level: String = "info,openraft=warn".into(), "STAGEFLEET_LOG_LEVEL";
    /// Snapshot the state (and purge the Raft log before it) every this many log entries.
    snapshot_every: u64 = 100_000, "STAGEFLEET_SNAPSHOT_EVERY";
    /// sled page cache size in MiB.
    sled_cache_mb: u64 = 64, "STAGEFLEET_SLED_CACHE_MB";
}

macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$variant),)+
                    other => Err(format!("unknown value {other:?}; expected one of: {}", [$($s),+].join(", "))),
                }
            }
        }
    };
}

str_enum!(
    /// Which IVS the node drives.
    IvsBackend { Auto = "auto", Emulator = "emulator", Aws = "aws" }
);
str_enum!(
    /// Whether viewers need an API key to join.
    ViewerJoin { Open = "open", Keyed = "keyed" }
);
str_enum!(
    LogFormat { Text = "text", Json = "json" }
);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting {name}: {why}")]
    Invalid { name: &'static str, why: String },
}

impl Config {
    /// Resolve from flags/env and an optional TOML file whose keys are the setting names.
    pub fn load(flags_env: ConfigArgs, file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let file_layer = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })?
            }
            None => ConfigArgs::default(),
        };
        let cfg = Config::layered(flags_env, file_layer);
        cfg.validate()?;
        Ok(cfg)
    }

    /// This node is (or is to become) a member of a multi-node cluster.
    pub fn is_clustered(&self) -> bool {
        !self.raft_addr.is_empty() || self.bootstrap_expect > 1 || !self.join.trim().is_empty()
    }

    /// `join`, split and trimmed.
    pub fn join_addrs(&self) -> Vec<String> {
        self.join
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The Raft address stored in the membership for this node.
    pub fn raft_advertised(&self) -> String {
        if self.raft_advertise_addr.is_empty() {
            self.raft_addr.clone()
        } else {
            self.raft_advertise_addr.clone()
        }
    }

    /// `ivs_tps` parsed as operation → calls/s.
    pub fn ivs_rate_overrides(&self) -> Result<std::collections::BTreeMap<String, f64>, ConfigError> {
        let mut out = std::collections::BTreeMap::new();
        for part in self.ivs_tps.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || ConfigError::Invalid {
                name: "ivs_tps",
                why: format!("{part:?} is not Op=rate"),
            };
            let (op, rate) = part.split_once('=').ok_or_else(bad)?;
            let rate: f64 = rate.trim().parse().map_err(|_| bad())?;
            if rate <= 0.0 {
                return Err(bad());
            }
            out.insert(op.trim().to_string(), rate);
        }
        Ok(out)
    }

    /// `runtime_threads`, with 0 resolved against this machine's cores.
    pub fn runtime_worker_threads(&self) -> usize {
        match self.runtime_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// The fleet policy these settings describe. It seeds the replicated policy once, when the
    /// cluster first forms; after that the replicated policy (`setPolicy`) owns it.
    pub fn policy_seed(&self) -> FleetPolicy {
        FleetPolicy {
            placement: self.placement,
            seats_per_stage: self.seats_per_stage,
            max_stages: self.max_stages,
            session_lease_ms: self.session_lease_secs as i64 * 1000,
            max_seats_per_client: self.max_seats_per_client,
            region_subscription_quota: self.region_subscription_quota,
        }
    }

    /// The shortest session lease this node can keep alive: two of its renewal intervals.
    pub fn min_lease_ms(&self) -> i64 {
        2 * self.presence_interval_secs.max(1) as i64 * 1000
    }

    pub fn public_url(&self) -> String {
        if self.public_url.is_empty() {
            format!("http://{}", self.http_addr)
        } else {
            self.public_url.clone()
        }
    }

    /// The AWS region in use for the `aws` backend, if any.
    pub fn aws_region(&self) -> Option<String> {
        let env = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        Some(self.ivs_region.clone())
            .filter(|r| !r.is_empty())
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
    }

    /// The SDK URL the pages use (`sdk_url` with its default filled in).
    pub fn sdk_url_effective(&self) -> String {
        match self.sdk_url.trim() {
            "" if !self.sdk_dir.as_os_str().is_empty() => "/sdk/amazon-ivs-web-broadcast.js".to_string(),
            "" => DEFAULT_SDK_URL.to_string(),
            url => url.to_string(),
        }
    }

    /// The origin pages load the SDK from when it is not this node (for the pages' CSP).
    pub fn sdk_origin(&self) -> Option<String> {
        let url = self.sdk_url_effective();
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
        let host = rest.split('/').next().unwrap_or_default();
        let scheme = &url[..url.len() - rest.len()];
        Some(format!("{scheme}{host}"))
    }

    /// `auto` resolved: real IVS when a region is configured.
    pub fn use_aws(&self) -> bool {
        match self.ivs_backend {
            IvsBackend::Aws => true,
            IvsBackend::Emulator => false,
            IvsBackend::Auto => self.aws_region().is_some(),
        }
    }
}

/// One row per setting: (name, flag, environment variable, default, doc). The README's table is
/// checked against this.
pub fn settings_table() -> Vec<(String, String, String, String, String)> {
    let defaults = serde_json::to_value(Config::default()).expect("config serializes");
    SETTINGS
        .iter()
        .map(|(name, env, doc)| {
            let d = match &defaults[name] {
                serde_json::Value::String(s) if s.is_empty() => "(empty)".to_string(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (
                name.to_string(),
                format!("--{}", name.replace('_', "-")),
                env.to_string(),
                d,
                doc.trim().to_string(),
            )
        })
        .collect()
}

/// The settings table as Markdown (`stagefleet config --markdown`).
pub fn settings_markdown() -> String {
    let mut out =
        String::from("| setting (file key) | flag | environment | default | meaning |\n|---|---|---|---|---|\n");
    for (name, flag, env, default, doc) in settings_table() {
        out.push_str(&format!("| `{name}` | `{flag}` | `{env}` | `{default}` | {doc} |\n"));
    }
    out
}

/// The IVS Web Broadcast SDK the pages are tested with (tests/browser/package.json pins the same
/// version), from AWS's CDN.
pub const DEFAULT_SDK_URL: &str = "https://web-broadcast.live-video.net/1.41.0/amazon-ivs-web-broadcast.js";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file: ConfigArgs = toml::from_str("seats_per_stage = 50\nplacement = \"spread\"\nnode_id = 3").unwrap();
        let flags = ConfigArgs {
            seats_per_stage: Some(7),
            ..Default::default()
        };
        let cfg = Config::layered(flags, file);
        assert_eq!(cfg.seats_per_stage, 7);
        assert_eq!(cfg.placement, Placement::Spread);
        assert_eq!(cfg.node_id, 3);
        assert_eq!(cfg.token_ttl_minutes, 720);
    }

    #[test]
    fn runtime_threads_zero_means_one_per_core() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(Config::default().runtime_worker_threads(), cores);
        let cfg = Config::layered(
            ConfigArgs {
                runtime_threads: Some(3),
                ..Default::default()
            },
            ConfigArgs::default(),
        );
        assert_eq!(cfg.runtime_worker_threads(), 3);
    }

    #[test]
    fn unknown_file_keys_and_out_of_range_values_are_refused() {
        assert!(toml::from_str::<ConfigArgs>("seats_per_stag = 5").is_err());
        let cfg = Config {
            token_ttl_minutes: 20_161,
            ..Config::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Invalid {
                name: "token_ttl_minutes",
                ..
            })
        ));
        let cfg = Config {
            ivs_tps: "CreateStage=fast".into(),
            ..Config::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Invalid { name: "ivs_tps", .. })
        ));
        let cfg = Config {
            ivs_tps: "CreateStage=2, GetStage=1.5".into(),
            ..Config::default()
        };
        assert_eq!(cfg.ivs_rate_overrides().unwrap()["GetStage"], 1.5);
    }

    #[test]
    fn the_readme_documents_every_setting_with_its_flag_env_and_default() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        for (name, flag, env, default, _) in settings_table() {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("README has no row for setting {name}; run `stagefleet config --markdown`"));
            for part in [&flag, &env, &default] {
                assert!(
                    row.contains(&format!("`{part}`")),
                    "README row for {name} lacks {part}: {row}"
                );
            }
        }
    }
}
