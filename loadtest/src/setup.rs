//! What every scenario needs before it starts and after it ends: the targets, optionally a node
//! (or a cluster of nodes, `--cluster N`) this tool runs, a live broadcast (given, or started
//! here and ended at the end), a CPU/RSS sampler for local nodes, and the post-run ledger check.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::api::Api;
use crate::cli::{Common, NodeArgs};
use crate::cluster::{self, LocalCluster};
use crate::ledger::{Ledger, Violation};
use crate::procstat::{SAMPLE_EVERY, Sampler, SplitProbe};
use crate::report::Report;
use crate::target::{LocalNode, Targets, wait_ready};
use crate::verify::{self, Verdict};

pub struct Setup {
    pub common: Common,
    pub api: Api,
    pub node: Option<LocalNode>,
    /// The nodes this tool runs with `--cluster N` (N > 1); then `node` is `None`.
    pub cluster: Option<LocalCluster>,
    pub broadcast: String,
    owns_broadcast: bool,
    /// The local node's CPU/RSS, or the sum over the cluster's nodes.
    server: Option<Sampler>,
    /// Each cluster node's own, in node order (empty for a single node).
    server_each: Vec<Sampler>,
    loadgen: Sampler,
    /// The server's CPU on signing vs the rest, from the start of the load to its end.
    split: Option<SplitProbe>,
    // Held so the temporary data dir lives as long as the node.
    _tmp: Option<tempfile::TempDir>,
}

impl Setup {
    /// `own_node`: start a node even if --target is given (crash needs a process to kill).
    pub async fn new(common: &Common, own_node: bool) -> anyhow::Result<Self> {
        let Started {
            urls,
            node,
            cluster,
            tmp,
        } = start_node(&common.node, own_node).await?;
        let targets = Arc::new(Targets::new(&urls)?);
        let admin_key = common
            .admin_key
            .clone()
            .or_else(|| node.as_ref().and_then(|n| n.banner.admin_key.clone()))
            .or_else(|| cluster.as_ref().and_then(|c| c.admin_key.clone()));
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
        let mut setup = Self {
            common: common.clone(),
            api,
            node,
            cluster,
            broadcast,
            owns_broadcast,
            server: None,
            server_each: Vec::new(),
            loadgen: Sampler::own(),
            split: None,
            _tmp: tmp,
        };
        setup.load_begins();
        Ok(setup)
    }

    /// The PIDs of the nodes this tool runs (0 while one is down).
    fn server_pids(&self) -> Vec<Arc<std::sync::atomic::AtomicU32>> {
        match (&self.node, &self.cluster) {
            (Some(n), _) => vec![n.pid.clone()],
            (None, Some(c)) => c.pids(),
            (None, None) => Vec::new(),
        }
    }

    /// The load starts now: CPU and RSS are measured from here (not during setup).
    pub fn load_begins(&mut self) {
        let pids = self.server_pids();
        self.server = (!pids.is_empty()).then(|| Sampler::start_all(pids.clone(), SAMPLE_EVERY));
        self.server_each = if pids.len() > 1 {
            pids.into_iter().map(|p| Sampler::start(p, SAMPLE_EVERY)).collect()
        } else {
            Vec::new()
        };
        self.loadgen = Sampler::own();
        let pids = self.server_pids();
        self.split = (!pids.is_empty()).then(|| SplitProbe::begin(pids));
    }

    /// The load is over: keep CPU and RSS as measured so far (not the ledger check that follows).
    pub fn load_ends(&mut self) {
        for s in self.server.iter_mut().chain(self.server_each.iter_mut()) {
            s.freeze();
        }
        self.loadgen.freeze();
        if let Some(p) = self.split.as_mut() {
            p.freeze();
        }
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

    /// The post-run check, unless --no-verify. On a cluster this tool runs, it first waits
    /// until every node has applied all the leader had, reads sessions from all nodes in turn,
    /// and then has every node's broadcast counts compared with the ledger too.
    pub async fn verify(&self, ledger: &Ledger) -> anyhow::Result<Option<Verdict>> {
        if self.common.no_verify {
            return Ok(None);
        }
        if let Some(c) = &self.cluster {
            c.wait_caught_up(self.api.http(), Duration::from_secs(60))
                .await
                .context("waiting for every node to apply the leader's writes before the ledger check")?;
        }
        let mut keys = verify::keys_from_files(&self.common.public_keys)?;
        let emulator = self
            .node
            .as_ref()
            .and_then(|n| n.banner.emulator_url.clone())
            .or_else(|| self.cluster.as_ref().map(|c| c.emulator_url.clone()))
            .or_else(|| self.common.emulator_url.clone());
        if let Some(emu) = &emulator {
            verify::emulator_keys(self.api.http(), emu, &mut keys).await;
        }
        let mut v = verify::run(
            &self.api,
            &self.broadcast,
            ledger,
            &keys,
            emulator.as_deref(),
            self.exclusive(),
            self.common.concurrency,
        )
        .await?;
        if let Some(c) = &self.cluster {
            for violation in self.per_node_counts(c, ledger).await? {
                v.add(violation);
            }
        }
        Ok(Some(v))
    }

    /// When this run was the broadcast's only writer, every node must count its viewers as the
    /// ledger does, and all nodes alike.
    async fn per_node_counts(&self, c: &LocalCluster, ledger: &Ledger) -> anyhow::Result<Vec<Violation>> {
        let mut out = Vec::new();
        if !self.exclusive() {
            return Ok(out);
        }
        let mut first: Option<(usize, u64, u64)> = None;
        for (k, url) in c.urls().iter().enumerate() {
            let key = self.api.admin_key();
            let Some(b) = cluster::broadcast_counts(self.api.http(), url, key, &self.broadcast).await? else {
                out.push(Violation::CountMismatch {
                    what: format!("broadcast {} unknown on node {}", self.broadcast, k + 1),
                    server: 0,
                    ledger: ledger.live_count() as u64,
                });
                continue;
            };
            if b.viewers != ledger.live_count() as u64 {
                out.push(Violation::CountMismatch {
                    what: format!("broadcast viewers on node {}", k + 1),
                    server: b.viewers,
                    ledger: ledger.live_count() as u64,
                });
            }
            match first {
                None => first = Some((k, b.viewers, b.admitted_total)),
                Some((f, viewers, admitted)) if (viewers, admitted) != (b.viewers, b.admitted_total) => {
                    out.push(Violation::CountMismatch {
                        what: format!(
                            "node {} counts viewers/admittedTotal {}/{}, node {} {viewers}/{admitted}",
                            k + 1,
                            b.viewers,
                            b.admitted_total,
                            f + 1
                        ),
                        server: b.viewers,
                        ledger: viewers,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(out)
    }

    /// Fill in CPU/RSS, end the broadcast we started, stop the node(s) we started.
    pub async fn finish(mut self, report: &mut Report) -> anyhow::Result<()> {
        report.server = self.server.as_ref().map(Sampler::usage);
        report.server_per_node = self.server_each.iter().map(Sampler::usage).collect();
        report.loadgen = Some(self.loadgen.usage());
        report.server_signing = self.split.as_ref().and_then(SplitProbe::split);
        if self.owns_broadcast
            && let Err(e) = self.api.end_broadcast(&self.broadcast).await
        {
            eprintln!("endBroadcast {} failed: {e}", self.broadcast);
        }
        if let Some(n) = self.node.as_mut() {
            n.stop().await?;
        }
        if let Some(c) = self.cluster.as_mut() {
            c.stop().await?;
        }
        Ok(())
    }
}

/// The node URLs to load and, when this tool runs the node, that node (or those nodes).
pub struct Started {
    pub urls: Vec<String>,
    pub node: Option<LocalNode>,
    pub cluster: Option<LocalCluster>,
    /// The node's temporary data dir: hold it as long as the node runs.
    pub tmp: Option<tempfile::TempDir>,
}

/// Start a node from `--server-bin` when `own_node` is set or no `--target` is given; with
/// `--cluster N` (N > 1), N nodes as one cluster.
pub async fn start_node(args: &NodeArgs, own_node: bool) -> anyhow::Result<Started> {
    anyhow::ensure!(
        args.cluster <= 1 || args.targets.is_empty(),
        "--cluster starts its nodes from --server-bin; it takes no --target"
    );
    if !own_node && !args.targets.is_empty() {
        return Ok(Started {
            urls: args.targets.clone(),
            node: None,
            cluster: None,
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
            let name = if args.cluster > 1 { "cluster" } else { "data" };
            (t.path().join(name), Some(t))
        }
    };
    if args.cluster > 1 {
        let c = LocalCluster::start(bin, &data_dir, args.cluster as usize, &args.server_args).await?;
        eprintln!(
            "started a cluster of {} from {}: {}; logs in {}",
            args.cluster,
            bin.display(),
            c.describe(),
            c.dir.display()
        );
        return Ok(Started {
            urls: c.urls(),
            node: None,
            cluster: Some(c),
            tmp,
        });
    }
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
        cluster: None,
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
