//! The `stagefleet` binary: `serve` (default), `ivs-emulator`, `sdl`, `config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

// glibc's malloc spent a quarter of the join path's CPU in its arenas under many threads
// (perf, BENCHMARKS.md); mimalloc is built for this allocation pattern.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use stagefleet::config::{Config, ConfigArgs, LogFormat};
use stagefleet::ivs::emulator::{self, EmulatorConfig, Faults};

#[derive(Parser)]
#[command(
    version,
    about = "Run live broadcasts for very large audiences on a fleet of AWS IVS Real-Time stages"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Clone, Default)]
struct ServeArgs {
    /// TOML file with settings (keys = setting names); flags and environment override it.
    #[arg(long, env = "STAGEFLEET_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ConfigArgs,
}

#[derive(clap::Args)]
struct ClusterArgs {
    #[command(subcommand)]
    action: ClusterAction,
    /// The node to ask (its public HTTP address).
    #[arg(long, global = true, env = "STAGEFLEET_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin API key.
    #[arg(long, global = true, env = "STAGEFLEET_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
}

#[derive(Subcommand, Clone, Copy)]
enum ClusterAction {
    /// The node's view: leader, term, log indexes, members and how far each is behind.
    Status,
    /// Take the node at --url out of the cluster (it then serves no writes; stop it afterwards).
    Leave,
    /// Take member --node out of the cluster through the node at --url: for a node that is gone for good.
    Remove {
        #[arg(long)]
        node: u64,
    },
    /// Hand leadership to another voter (--to, or the most caught-up one), e.g. before upgrading the leader.
    TransferLeader {
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Run only the built-in IVS Real-Time emulator, for other tools or other nodes.
    IvsEmulator {
        #[arg(long, default_value = "127.0.0.1:4566")]
        listen: SocketAddr,
        /// Answer every call regardless of IVS's per-operation rate quotas.
        #[arg(long)]
        no_enforce_tps: bool,
        /// Keep stages and keys in this file across restarts.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Fault injection: milliseconds added to every IVS call.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Fault injection: share (0..1) of IVS calls answered 500 InternalServerException.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Fault injection: share (0..1) of IVS calls answered 429 ThrottlingException.
        #[arg(long, default_value_t = 0.0)]
        throttle_rate: f64,
        /// Serve no media (no SFU: WHIP answers 503; the events socket still works).
        #[arg(long)]
        no_media: bool,
        /// UDP address of the SFU.
        #[arg(long, default_value = "127.0.0.1:0")]
        media_bind: SocketAddr,
        /// IP put in the SFU's ICE candidate (default: the bind IP); a LAN address for a demo across machines.
        #[arg(long)]
        media_advertise_ip: Option<std::net::IpAddr>,
        /// Most WebRTC sessions (publish and subscribe together) the SFU holds.
        #[arg(long, default_value_t = 256)]
        media_max_sessions: usize,
    },
    /// Ask a running node about its cluster, or act on it (admin key).
    Cluster(ClusterArgs),
    /// Save a consistent snapshot of a running node's state to a file (admin key).
    Backup {
        /// Where to write it (created with mode 0600: it holds API key hashes and the sealed signing key).
        #[arg(long)]
        out: PathBuf,
        /// The node to ask (its public HTTP address).
        #[arg(long, env = "STAGEFLEET_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An admin API key.
        #[arg(long, env = "STAGEFLEET_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
    },
    /// Start a new data dir from a backup (offline): its first start forms a new cluster holding
    /// the backup's state (the same key-encryption key must open its signing key).
    Restore {
        /// The file `stagefleet backup` wrote.
        #[arg(long)]
        from: PathBuf,
        /// A new data dir (it must not hold a database yet).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print the GraphQL schema (SDL) this build serves.
    Sdl,
    /// Print the resolved settings as TOML, or the settings table as Markdown.
    Config {
        #[arg(long)]
        markdown: bool,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Transparent huge pages off for this process. The allocator's regions got 2 MiB pages, so a
/// WebSocket whose frame header reserved 64 KiB but sent 8 bytes cost the node 64 KiB of RSS
/// instead of the few KiB it touched: 10,000 such sockets took RSS past 700 MiB
/// (`loadtest front-door`; BENCHMARKS.md compares join storms with and without).
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with an integer option and no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        eprintln!(
            "note: could not turn transparent huge pages off: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn main() -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => {
            let cfg = Config::load(args.settings, args.config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cfg.runtime_worker_threads())
                .enable_all()
                .build()?;
            runtime.block_on(serve(cfg))
        }
        Command::IvsEmulator {
            listen,
            no_enforce_tps,
            state_file,
            latency_ms,
            error_rate,
            throttle_rate,
            no_media,
            media_bind,
            media_advertise_ip,
            media_max_sessions,
        } => {
            init_logging(LogFormat::Text, "info");
            let faults = Faults {
                latency_ms,
                error_rate,
                throttle_rate,
                ..Faults::default()
            };
            let enforce_tps = !no_enforce_tps;
            let media = emulator::media::MediaSettings {
                sfu: (!no_media).then(|| emulator::media::MediaConfig {
                    bind: media_bind,
                    advertise: media_advertise_ip,
                    max_sessions: media_max_sessions,
                    ..emulator::media::MediaConfig::default()
                }),
                ..emulator::media::MediaSettings::default()
            };
            let cfg = EmulatorConfig {
                listen,
                enforce_tps,
                state_file,
                faults,
                media,
                ..EmulatorConfig::default()
            };
            tokio::runtime::Runtime::new()?.block_on(emulator::run_standalone(cfg))
        }
        Command::Cluster(args) => tokio::runtime::Runtime::new()?.block_on(cluster_command(args)),
        Command::Backup { out, url, admin_key } => {
            tokio::runtime::Runtime::new()?.block_on(backup_command(&out, &url, admin_key))
        }
        Command::Restore { from, data_dir } => {
            let meta = stagefleet::state::snapshot::restore(&from, &data_dir)?;
            let through = meta.last_log_id.map_or(0, |l| l.index);
            println!(
                "restored the state of {} (through log index {through}) into {}; start a node on it",
                from.display(),
                data_dir.display()
            );
            Ok(())
        }
        Command::Sdl => {
            let d = Config::default();
            print!(
                "{}",
                stagefleet::api::schema::sdl_schema(d.graphql_max_depth, d.graphql_max_complexity).sdl()
            );
            Ok(())
        }
        Command::Config { markdown, serve } => {
            if markdown {
                print!("{}", stagefleet::config::settings_markdown());
            } else {
                let mut cfg = Config::load(serve.settings, serve.config.as_deref())?;
                if !cfg.cluster_secret.is_empty() {
                    // Printed settings end up in tickets and chats: never the secret itself.
                    cfg.cluster_secret = "(set; not shown)".into();
                }
                print!("{}", toml::to_string(&cfg)?);
            }
            Ok(())
        }
    }
}

/// `stagefleet cluster …`: one call to the node's `/v1/cluster/*`, its answer printed as JSON.
async fn cluster_command(args: ClusterArgs) -> anyhow::Result<()> {
    let key = args
        .admin_key
        .context("an admin key is needed: --admin-key or STAGEFLEET_ADMIN_KEY")?;
    let base = args.url.trim_end_matches('/').trim_end_matches("/graphql");
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(70))
        .build()?;
    let request = match args.action {
        ClusterAction::Status => http.get(format!("{base}/v1/cluster/status")),
        ClusterAction::Leave => http.post(format!("{base}/v1/cluster/leave")),
        ClusterAction::Remove { node } => http
            .post(format!("{base}/v1/cluster/remove"))
            .json(&serde_json::json!({ "node": node })),
        ClusterAction::TransferLeader { to } => http
            .post(format!("{base}/v1/cluster/transfer-leader"))
            .json(&serde_json::json!({ "to": to })),
    };
    let response = request
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("asking {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("reading the node's answer")?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    anyhow::ensure!(status.is_success(), "the node answered HTTP {status}");
    Ok(())
}

/// `stagefleet backup`: GET /v1/cluster/backup into a new private file.
async fn backup_command(out: &std::path::Path, url: &str, admin_key: Option<String>) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = admin_key.context("an admin key is needed: --admin-key or STAGEFLEET_ADMIN_KEY")?;
    let base = url.trim_end_matches('/').trim_end_matches("/graphql");
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()?
        .get(format!("{base}/v1/cluster/backup"))
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("asking {base}"))?;
    let status = response.status();
    if !status.is_success() {
        let why = response.text().await.unwrap_or_default();
        anyhow::bail!("the node answered HTTP {status}: {why}");
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {} (it must not exist yet)", out.display()))?;
    // Streamed to disk chunk by chunk; an interrupted download leaves no file claiming to be a
    // backup.
    let mut written = 0u64;
    let mut response = response;
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = response.chunk().await.context("reading the backup")? {
            file.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        file.sync_all()?;
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    println!("wrote {written} bytes to {}", out.display());
    Ok(())
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    init_logging(cfg.log_format, &cfg.log_level);
    let open_files = stagefleet::api::server::raise_open_files_limit();
    let mut cfg = cfg;
    (cfg.max_connections, cfg.max_websockets) =
        stagefleet::api::server::fit_caps(cfg.max_connections, cfg.max_websockets, open_files);
    let listener = stagefleet::api::server::bind(cfg.http_addr, cfg.listen_backlog)
        .with_context(|| format!("binding http_addr {} (is another process using it?)", cfg.http_addr))?;
    let addr = listener.local_addr()?;
    cfg.http_addr = addr;
    let app = stagefleet::app::App::start(cfg).await?;
    let node = app.node.clone();
    let url = node.cfg.public_url();
    println!(
        "stagefleet {} node {} ready",
        env!("CARGO_PKG_VERSION"),
        node.cfg.node_id
    );
    println!("  GraphQL (GraphiQL in a browser)  {url}/graphql");
    println!("  watch (viewers, no sign-in)      {url}/watch/");
    println!("  broadcast (hosts)                {url}/broadcast/");
    println!("  console (operators)              {url}/console/");
    println!("  pages load the IVS Web SDK from  {}", node.cfg.sdk_url_effective());
    println!("  health, metrics                  {url}/readyz  {url}/metrics");
    println!("  IVS                              {}", node.backend_label);
    if let Some(udp) = app.media_addr() {
        println!("  local media (WebRTC)             events socket + WHIP on the emulator, SFU on UDP {udp}");
    }
    if let Some(key) = &node.first_admin_key {
        println!("  admin key (shown once; keep it): {key}");
    }
    // Last banner line: tools read up to here.
    println!("  data                             {}", node.cfg.data_dir.display());
    let edge = stagefleet::api::router(node.clone());
    let opts = stagefleet::api::server::ServerOptions {
        max_connections: node.cfg.max_connections,
        header_read_timeout: Duration::from_secs(node.cfg.header_read_timeout_secs.max(1)),
        shutdown_drain: Duration::from_secs(node.cfg.shutdown_drain_secs),
        websockets: (edge.websockets, node.cfg.max_websockets),
    };
    let metrics = node.metrics.clone();
    stagefleet::api::server::serve(listener, edge.router, metrics, opts, shutdown_signal(), edge.closing).await;
    tracing::info!("shutting down");
    // The store flushes and Raft stops; bounded, so a stuck component cannot keep the process alive.
    drop(node);
    if tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the control loops and the store did not stop within 10 s; exiting anyway");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
