//! Where load goes: one or more node URLs taken in turn, and — when the tool starts the node
//! itself — that local process (its PID for CPU/RSS, SIGKILL and restart for `crash`).
//! `cluster.rs` starts several of them as one Raft cluster.
//!
//! Does not measure anything; `procstat.rs` reads `/proc` for the PID this module publishes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Base URLs (`http://host:port`, no `/graphql`), handed out round-robin, skipping any marked
/// down (a node the tool itself has killed).
#[derive(Debug)]
pub struct Targets {
    urls: Vec<String>,
    next: AtomicUsize,
    /// One per URL: true while that node is known to be down.
    down: Vec<AtomicBool>,
}

impl Targets {
    /// Accepts `http://h:p`, `http://h:p/` or `http://h:p/graphql`.
    pub fn new(urls: &[String]) -> anyhow::Result<Self> {
        if urls.is_empty() {
            bail!("no target URL: pass --target URL or --server-bin");
        }
        let urls: Vec<String> = urls
            .iter()
            .map(|u| {
                let u = u.trim_end_matches('/');
                u.strip_suffix("/graphql").unwrap_or(u).to_string()
            })
            .collect();
        Ok(Self {
            down: urls.iter().map(|_| AtomicBool::new(false)).collect(),
            urls,
            next: AtomicUsize::new(0),
        })
    }

    pub fn pick(&self) -> &str {
        &self.urls[self.pick_index()]
    }

    /// Index into [`Self::all`] of the next target in turn. Targets marked down are skipped, so
    /// the others share the load evenly; if every one is down, the next in turn all the same.
    pub fn pick_index(&self) -> usize {
        let n = self.urls.len();
        let mut i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for _ in 0..n {
            if !self.down[i].load(Ordering::Relaxed) {
                break;
            }
            i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        }
        i
    }

    /// Mark target `i` down (no requests go to it) or up again.
    pub fn set_down(&self, i: usize, down: bool) {
        self.down[i].store(down, Ordering::Relaxed);
    }

    pub fn all(&self) -> &[String] {
        &self.urls
    }
}

/// What the node printed when it started.
#[derive(Clone, Debug, Default)]
pub struct Banner {
    pub base_url: String,
    pub admin_key: Option<String>,
    pub emulator_url: Option<String>,
}

/// Pull the URLs and the admin key out of the node's start-up lines.
pub fn parse_banner_line(line: &str, banner: &mut Banner) {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("GraphQL")
        && let Some(url) = rest.split_whitespace().find(|w| w.starts_with("http"))
    {
        banner.base_url = url.trim_end_matches("/graphql").to_string();
    } else if let Some(key) = line.split("keep it):").nth(1) {
        banner.admin_key = Some(key.trim().to_string());
    } else if line.starts_with("IVS")
        && let Some(url) = line.split_whitespace().find(|w| w.starts_with("http"))
    {
        banner.emulator_url = Some(url.trim_end_matches('/').to_string());
    }
}

/// A `stagefleet` node this tool runs: same data dir and address across restarts.
pub struct LocalNode {
    bin: PathBuf,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    pub banner: Banner,
    /// The running node's PID (0 while down), read by the CPU/RSS sampler.
    pub pid: Arc<AtomicU32>,
}

impl LocalNode {
    /// Start the node on a free loopback port; its log goes to `<data_dir>.log`.
    pub async fn start(bin: &Path, data_dir: &Path, extra_args: &[String]) -> anyhow::Result<Self> {
        Self::start_at(bin, data_dir, "127.0.0.1:0", extra_args).await
    }

    /// Start the node with its HTTP listener on `addr` (`ip:port`); its log goes to
    /// `<data_dir>.log`.
    pub async fn start_at(bin: &Path, data_dir: &Path, addr: &str, extra_args: &[String]) -> anyhow::Result<Self> {
        let mut node = Self {
            bin: bin.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.to_vec(),
            log: data_dir.with_extension("log"),
            child: None,
            banner: Banner::default(),
            pid: Arc::new(AtomicU32::new(0)),
        };
        node.spawn(addr).await?;
        Ok(node)
    }

    async fn spawn(&mut self, addr: &str) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut child = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--http-addr", addr])
            // Every viewer of a load test comes from this one address.
            .args(["--join-rate-per-ip", "0"])
            // A benchmark measures the join path unless it asks for more: no scaler
            // creating stages behind its back, no region quota refusing a 40,000-viewer
            // storm. Flags (e.g. the crowd scenario's) override these.
            .env("STAGEFLEET_AUTOSCALE", "false")
            .env("STAGEFLEET_REGION_SUBSCRIPTION_QUOTA", "0")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("node stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Banner {
            // The admin key is printed on a data dir's first start only; keep the one we have.
            admin_key: self.banner.admin_key.clone(),
            ..Banner::default()
        };
        // The banner ends with the `data` line; older builds printed the admin key after it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .context("the node printed no start-up banner within 60 s")??
                .with_context(|| format!("the node exited during start-up; see {}", self.log.display()))?;
            parse_banner_line(&line, &mut banner);
            if line.trim_start().starts_with("data") {
                break;
            }
        }
        let first_start = self.banner.base_url.is_empty();
        if first_start
            && banner.admin_key.is_none()
            && let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            parse_banner_line(&line, &mut banner);
        }
        if banner.base_url.is_empty() {
            bail!("the node's banner had no GraphQL URL; see {}", self.log.display());
        }
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
        self.child = Some(child);
        self.banner = banner;
        Ok(())
    }

    /// SIGKILL: no shutdown hook runs, as in a power cut.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.pid.store(0, Ordering::Relaxed);
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Start again on the same address and data dir.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let addr = self.banner.base_url.trim_start_matches("http://").to_string();
        self.spawn(&addr).await
    }

    /// SIGTERM and wait, so the node flushes its store.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.pid.store(0, Ordering::Relaxed);
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(20)).await?;
        }
        Ok(())
    }

    /// Whether the process runs (it has not been killed or stopped).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// SIGTERM `child` and wait up to `grace` for it to exit, then SIGKILL it.
pub async fn terminate(child: &mut Child, grace: Duration) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        // std and tokio only send SIGKILL; `kill` avoids unsafe libc for SIGTERM.
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        child.start_kill()?;
        child.wait().await?;
    }
    Ok(())
}

/// Poll `GET /readyz` until it answers 200, or fail after `within`.
pub async fn wait_ready(http: &reqwest::Client, base: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{base}/readyz did not answer 200 within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval, bounded by the deadline
    }
}
