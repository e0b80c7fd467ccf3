//! What every scenario needs before it starts and after it ends: the targets, optionally a node
//! this tool runs, a live broadcast (given, or started here and ended at the end), a CPU/RSS
//! sampler for a local node, and the post-run ledger check.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::api::Api;
use crate::cli::{Common, NodeArgs};
use crate::ledger::Ledger;
use crate::procstat::{SAMPLE_EVERY, Sampler};
use crate::report::Report;
use crate::target::{LocalNode, Targets, wait_ready};
use crate::verify::{self, Verdict};

pub struct Setup {
    pub common: Common,
    pub api: Api,
    pub node: Option<LocalNode>,
    pub broadcast: String,
    owns_broadcast: bool,
    server: Option<Sampler>,
    loadgen: Sampler,
    // Held so the temporary data dir lives as long as the node.
    _tmp: Option<tempfile::TempDir>,
}

impl Setup {
    /// `own_node`: start a node even if --target is given (crash needs a process to kill).
    pub async fn new(common: &Common, own_node: bool) -> anyhow::Result<Self> {
        let Started { urls, node, tmp } = start_node(&common.node, own_node).await?;
        let targets = Arc::new(Targets::new(&urls)?);
        let admin_key = common
            .admin_key
            .clone()
            .or_else(|| node.as_ref().and_then(|n| n.banner.admin_key.clone()));
        let api = Api::new(targets, common.concurrency, admin_key, common.viewer_key.clone())?;
        for url in api.targets.all() {
            wait_ready(api.http(), url, Duration::from_secs(60)).await?;
        }
        let (broadcast, owns_broadcast) = match &common.broadcast_id {
            Some(id) => (id.clone(), false),
            None => {
                let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                let id = format!("loadtest-{secs}-{}", std::process::id());
                api.start_broadcast(&id, "loadtest")
                    .await
                    .context("startBroadcast (needs --admin-key for a node this tool did not start)")?;
                for _ in 0..common.extra_stages {
                    api.create_stage(&id).await.context("createStage")?;
                }
                (id, true)
            }
        };
        let server = node.as_ref().map(|n| Sampler::start(n.pid.clone(), SAMPLE_EVERY));
        Ok(Self {
            common: common.clone(),
            api,
            node,
            broadcast,
            owns_broadcast,
            server,
            loadgen: Sampler::own(),
            _tmp: tmp,
        })
    }

    /// The load starts now: CPU and RSS are measured from here (not during setup).
    pub fn load_begins(&mut self) {
        self.server = self.node.as_ref().map(|n| Sampler::start(n.pid.clone(), SAMPLE_EVERY));
        self.loadgen = Sampler::own();
    }

    /// The load is over: keep CPU and RSS as measured so far (not the ledger check that follows).
    pub fn load_ends(&mut self) {
        if let Some(s) = self.server.as_mut() {
            s.freeze();
        }
        self.loadgen.freeze();
    }

    /// Counts can be compared exactly when nobody else writes to the broadcast.
    pub fn exclusive(&self) -> bool {
        self.owns_broadcast || self.common.exclusive
    }

    pub fn report(&self, scenario: &str) -> Report {
        Report {
            scenario: scenario.into(),
            targets: self.api.targets.all().to_vec(),
            ..Report::default()
        }
    }

    /// The post-run check, unless --no-verify.
    pub async fn verify(&self, ledger: &Ledger) -> anyhow::Result<Option<Verdict>> {
        if self.common.no_verify {
            return Ok(None);
        }
        let mut keys = verify::keys_from_files(&self.common.public_keys)?;
        let emulator = self
            .node
            .as_ref()
            .and_then(|n| n.banner.emulator_url.clone())
            .or_else(|| self.common.emulator_url.clone());
        if let Some(emu) = &emulator {
            verify::emulator_keys(self.api.http(), emu, &mut keys).await;
        }
        let v = verify::run(
            &self.api,
            &self.broadcast,
            ledger,
            &keys,
            emulator.as_deref(),
            self.exclusive(),
            self.common.concurrency,
        )
        .await?;
        Ok(Some(v))
    }

    /// Fill in CPU/RSS, end the broadcast we started, stop the node we started.
    pub async fn finish(mut self, report: &mut Report) -> anyhow::Result<()> {
        report.server = self.server.as_ref().map(Sampler::usage);
        report.loadgen = Some(self.loadgen.usage());
        if self.owns_broadcast
            && let Err(e) = self.api.end_broadcast(&self.broadcast).await
        {
            eprintln!("endBroadcast {} failed: {e}", self.broadcast);
        }
        if let Some(n) = self.node.as_mut() {
            n.stop().await?;
        }
        Ok(())
    }
}

/// The node URLs to load and, when this tool runs the node, that node.
pub struct Started {
    pub urls: Vec<String>,
    pub node: Option<LocalNode>,
    /// The node's temporary data dir: hold it as long as the node runs.
    pub tmp: Option<tempfile::TempDir>,
}

/// Start a node from `--server-bin` when `own_node` is set or no `--target` is given.
pub async fn start_node(args: &NodeArgs, own_node: bool) -> anyhow::Result<Started> {
    if !own_node && !args.targets.is_empty() {
        return Ok(Started {
            urls: args.targets.clone(),
            node: None,
            tmp: None,
        });
    }
    let bin = args
        .server_bin
        .as_ref()
        .context("this needs --server-bin PATH (or STAGEFLEET_BIN) to start a node, or --target URL")?;
    let (data_dir, tmp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("loadtest-").tempdir()?;
            (t.path().join("data"), Some(t))
        }
    };
    let n = LocalNode::start(bin, &data_dir, &args.server_args).await?;
    eprintln!(
        "started {} (pid {}) at {}, log {}",
        bin.display(),
        n.pid.load(std::sync::atomic::Ordering::Relaxed),
        n.banner.base_url,
        n.log_path().display()
    );
    Ok(Started {
        urls: vec![n.banner.base_url.clone()],
        node: Some(n),
        tmp,
    })
}

/// Print the report, write `--json`, and give the process exit code (1 on any violation).
pub fn publish(report: &Report, json: Option<&std::path::Path>) -> anyhow::Result<i32> {
    print!("{}", report.text());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.ok() { 0 } else { 1 })
}
