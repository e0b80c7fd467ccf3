//! A cluster of `stagefleet` nodes this tool runs on loopback (`--cluster N`): one standalone IVS
//! emulator they all use, then N nodes started side by side (each waits for the others before it
//! prints its banner), sharing a random cluster secret and one key-encryption key file. Every
//! node keeps its HTTP and Raft addresses for the whole run, so a killed node comes back with
//! the same identity and flags.
//!
//! Knows the nodes only through their command line, their banner, `/readyz` and the public
//! GraphQL `node { … }` query.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::target::{LocalNode, terminate};

/// How long the emulator may take to listen.
const EMULATOR_WITHIN: Duration = Duration::from_secs(30);
/// One `node { … }` question to one node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The nodes, in order: `nodes[k]` has `--node-id k+1`.
pub struct LocalCluster {
    pub dir: PathBuf,
    pub nodes: Vec<LocalNode>,
    pub emulator_url: String,
    emulator: Option<Child>,
    /// Printed by the node that set the cluster up (the others print none).
    pub admin_key: Option<String>,
}

/// What `{ node { … } }` answers.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub is_leader: bool,
    pub term: u64,
    pub last_applied_index: Option<u64>,
}

impl LocalCluster {
    /// Start the emulator and `n` nodes under `dir` (`dir/nodeK`, their logs `dir/nodeK.log`).
    /// `extra` (the user's `--server-arg`s) goes to every node.
    pub async fn start(bin: &Path, dir: &Path, n: usize, extra: &[String]) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 2, "a cluster has at least 2 nodes");
        if dir.join("node1").exists() {
            bail!(
                "{} already holds a cluster from an earlier run (its members know other addresses and another key-encryption key): give --data-dir a fresh directory",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let kek = dir.join("kek");
        write_private(
            &kek,
            base64::engine::general_purpose::STANDARD
                .encode(random_bytes(32)?)
                .as_bytes(),
        )?;
        // The secret goes to the nodes in a private settings file, not on their command lines
        // (which every user of the machine can read).
        let secret = random_secret(32)?;
        let settings = dir.join("cluster.toml");
        write_private(&settings, format!("cluster_secret = \"{secret}\"\n").as_bytes())?;

        let ports = free_ports(1 + 2 * n)?;
        let emulator_url = format!("http://127.0.0.1:{}", ports[0]);
        let emulator = start_emulator(bin, dir, ports[0]).await?;
        let raft: Vec<String> = ports[1..=n].iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let http: Vec<String> = ports[n + 1..].iter().map(|p| format!("127.0.0.1:{p}")).collect();

        // Each node prints its banner only once the cluster exists, which needs the others.
        let starts = (0..n).map(|k| {
            let mut flags = member_flags(k as u64 + 1, &raft, &settings, &kek, &emulator_url);
            flags.extend(extra.iter().cloned());
            let data_dir = dir.join(format!("node{}", k + 1));
            let addr = http[k].clone();
            async move { LocalNode::start_at(bin, &data_dir, &addr, &flags).await }
        });
        let mut nodes = futures_util::future::try_join_all(starts)
            .await
            .with_context(|| format!("starting the cluster (logs in {})", dir.display()))?;
        let admin_key = nodes.iter().find_map(|n| n.banner.admin_key.clone());
        for node in &mut nodes {
            node.banner.admin_key = admin_key.clone();
            // The banner's IVS line names the standalone emulator already; keep it certain.
            node.banner.emulator_url = Some(emulator_url.clone());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            nodes,
            emulator_url,
            emulator: Some(emulator),
            admin_key,
        })
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.banner.base_url.clone()).collect()
    }

    /// The nodes' PIDs (0 while one is down), for the CPU/RSS sampler.
    pub fn pids(&self) -> Vec<Arc<AtomicU32>> {
        self.nodes.iter().map(|n| n.pid.clone()).collect()
    }

    /// PIDs of the running nodes, as `node K pid P` for the start-up message.
    pub fn describe(&self) -> String {
        let each: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(k, n)| {
                format!(
                    "node {} pid {} at {}",
                    k + 1,
                    n.pid.load(Ordering::Relaxed),
                    n.banner.base_url
                )
            })
            .collect();
        format!("{}; emulator at {}", each.join(", "), self.emulator_url)
    }

    /// `{ node { … } }` of node index `k`.
    pub async fn status(&self, http: &reqwest::Client, k: usize) -> anyhow::Result<NodeStatus> {
        node_status(http, &self.nodes[k].banner.base_url, self.admin_key.as_deref()).await
    }

    /// The index of the node leading now, once every running node names it, it says it leads,
    /// and no node is in a later term. Retries until `within` (an election may be under way, or
    /// a restarted node may still believe in a leadership of its own from before its kill).
    pub async fn leader(&self, http: &reqwest::Client, within: Duration) -> anyhow::Result<(usize, NodeStatus)> {
        let deadline = Instant::now() + within;
        loop {
            let running: Vec<usize> = (0..self.nodes.len()).filter(|&k| self.nodes[k].running()).collect();
            anyhow::ensure!(!running.is_empty(), "no node of the cluster is running");
            let asks = running.iter().map(|&k| async move {
                let status = self.status(http, k).await.map_err(|e| format!("{e:#}"));
                (k, status)
            });
            let answers = futures_util::future::join_all(asks).await;
            let why = match agreed_leader(&answers) {
                Ok(k) => {
                    let status = answers
                        .into_iter()
                        .find_map(|(i, s)| (i == k).then_some(s).and_then(Result::ok))
                        .expect("agreed_leader names a node that answered");
                    return Ok((k, status));
                }
                Err(why) => why,
            };
            if Instant::now() > deadline {
                bail!("no leader the running nodes agree on within {within:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval, bounded by the deadline
        }
    }

    /// Wait until every running node has applied all the leader had applied when asked, so a
    /// check that reads from any node sees every acknowledged write. Returns the index waited for.
    pub async fn wait_caught_up(&self, http: &reqwest::Client, within: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + within;
        let (_, leader) = self.leader(http, within).await?;
        let target = leader.last_applied_index.unwrap_or(0);
        for k in (0..self.nodes.len()).filter(|&k| self.nodes[k].running()) {
            loop {
                let applied = self.status(http, k).await.ok().and_then(|s| s.last_applied_index);
                if applied.unwrap_or(0) >= target {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {} applied {applied:?}, not yet index {target}, within {within:?}",
                        k + 1
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await; // poll interval, bounded by the deadline
            }
        }
        Ok(target)
    }

    /// SIGTERM every node at once (they drain), then the emulator.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let stops = self.nodes.iter_mut().map(|n| n.stop());
        let results = futures_util::future::join_all(stops).await;
        if let Some(mut emulator) = self.emulator.take() {
            terminate(&mut emulator, Duration::from_secs(5)).await?;
        }
        results.into_iter().collect()
    }
}

/// The index of the leader in `answers` (node index, its `node { … }` or why it did not
/// answer), one per running node: every one must answer and name the same leader, that leader
/// must be among them and say it leads, and none may be in a later term than it.
pub fn agreed_leader(answers: &[(usize, Result<NodeStatus, String>)]) -> Result<usize, String> {
    let mut named = None;
    for (k, answer) in answers {
        let s = answer
            .as_ref()
            .map_err(|e| format!("node {} did not answer: {e}", k + 1))?;
        let Some(leader) = s.leader_id else {
            return Err(format!("node {} knows no leader", k + 1));
        };
        match named {
            None => named = Some(leader),
            Some(l) if l != leader => return Err(format!("the nodes name different leaders ({l} and {leader})")),
            Some(_) => {}
        }
    }
    let named = named.ok_or("no node answered")?;
    let (k, s) = answers
        .iter()
        .find_map(|(k, a)| a.as_ref().ok().filter(|s| s.node_id == named).map(|s| (*k, s)))
        .ok_or_else(|| format!("the leader they name, node {named}, is not running"))?;
    if !s.is_leader {
        return Err(format!("node {named} is named leader but does not lead"));
    }
    let latest = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .map(|s| s.term)
        .max();
    if latest > Some(s.term) {
        return Err(format!(
            "node {named} leads term {}, a node is in term {latest:?}",
            s.term
        ));
    }
    Ok(k)
}

/// The cluster flags of node `id` (1-based): its own Raft address, everyone's in `--join`, and
/// what all share (the cluster secret in the private settings file `settings`). `--data-dir`,
/// `--http-addr` and `--join-rate-per-ip` come from [`LocalNode`].
pub fn member_flags(id: u64, raft: &[String], settings: &Path, kek: &Path, emulator_url: &str) -> Vec<String> {
    let own = &raft[id as usize - 1];
    [
        ("--node-id", id.to_string()),
        ("--raft-addr", own.clone()),
        ("--bootstrap-expect", raft.len().to_string()),
        ("--join", raft.join(",")),
        ("--config", settings.display().to_string()),
        ("--key-encryption-key-file", kek.display().to_string()),
        ("--ivs-backend", "emulator".to_string()),
        ("--ivs-endpoint-url", emulator_url.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// `{ node { … } }` of the node at `base`, asked with `key`.
pub async fn node_status(http: &reqwest::Client, base: &str, key: Option<&str>) -> anyhow::Result<NodeStatus> {
    let q = "{ node { nodeId leaderId isLeader term lastAppliedIndex } }";
    let mut data = graphql(http, base, key, q, json!({})).await?;
    serde_json::from_value(data["node"].take()).with_context(|| format!("{base}: node"))
}

/// `broadcast(id) { viewers admittedTotal }` as the node at `base` has it.
pub async fn broadcast_counts(
    http: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    id: &str,
) -> anyhow::Result<Option<crate::api::BroadcastCounts>> {
    let q = "query($i: ID!) { broadcast(id: $i) { viewers admittedTotal } }";
    let mut data = graphql(http, base, key, q, json!({ "i": id })).await?;
    serde_json::from_value(data["broadcast"].take()).with_context(|| format!("{base}: broadcast"))
}

/// One GraphQL request to one node (not the load's round-robin pools): its `data`, or its first
/// error as an error.
async fn graphql(
    http: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    query: &str,
    vars: Value,
) -> anyhow::Result<Value> {
    let mut req = http
        .post(format!("{base}/graphql"))
        .timeout(STATUS_TIMEOUT)
        .json(&json!({ "query": query, "variables": vars }));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let mut answer: Value = req.send().await.with_context(|| base.to_string())?.json().await?;
    if let Some(e) = answer["errors"].get(0) {
        bail!("{base}: {e}");
    }
    Ok(answer["data"].take())
}

async fn start_emulator(bin: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
    let log_path = dir.join("emulator.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin)
        .args(["ivs-emulator", "--listen", &listen, "--state-file"])
        .arg(dir.join("emulator.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} ivs-emulator", bin.display()))?;
    let deadline = Instant::now() + EMULATOR_WITHIN;
    loop {
        if tokio::net::TcpStream::connect(&listen).await.is_ok() {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!("the IVS emulator exited ({status}); see {}", log_path.display());
        }
        if Instant::now() > deadline {
            bail!(
                "the IVS emulator did not listen on {listen} within {EMULATOR_WITHIN:?}; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval, bounded by the deadline
    }
}

/// `count` loopback ports free right now, all different (held open together while picked).
pub fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free loopback ports")?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(bytes)
}

/// `len` random characters from `[A-Za-z0-9]`.
pub fn random_secret(len: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        // Rejection sampling keeps every character equally likely (256 is not a multiple of 62).
        for b in random_bytes(len)? {
            if (b as usize) < 256 - 256 % ALPHABET.len() && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Write `contents` to a new file readable by this user only (mode 0600 from its creation).
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_member_gets_its_own_raft_address_and_everyone_s_in_join() {
        let raft: Vec<String> = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
            .map(String::from)
            .into();
        let flags = member_flags(
            2,
            &raft,
            Path::new("/d/cluster.toml"),
            Path::new("/d/kek"),
            "http://127.0.0.1:4566",
        );
        let value = |flag: &str| flags[flags.iter().position(|f| f == flag).unwrap() + 1].clone();
        assert_eq!(value("--node-id"), "2");
        assert_eq!(value("--raft-addr"), "127.0.0.1:7002");
        assert_eq!(value("--bootstrap-expect"), "3");
        assert_eq!(value("--join"), "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003");
        assert_eq!(value("--config"), "/d/cluster.toml");
        assert!(
            !flags.iter().any(|f| f == "--cluster-secret"),
            "the secret is not on the command line"
        );
        assert_eq!(value("--key-encryption-key-file"), "/d/kek");
        assert_eq!(value("--ivs-backend"), "emulator");
        assert_eq!(value("--ivs-endpoint-url"), "http://127.0.0.1:4566");
        assert_eq!(flags.len(), 16, "flag and value pairs only: {flags:?}");
    }

    fn status(id: u64, leader: Option<u64>, term: u64) -> NodeStatus {
        NodeStatus {
            node_id: id,
            leader_id: leader,
            is_leader: leader == Some(id),
            term,
            last_applied_index: Some(10),
        }
    }

    #[test]
    fn the_leader_is_the_one_every_running_node_names() {
        let all = |s: Vec<NodeStatus>| -> Vec<(usize, Result<NodeStatus, String>)> {
            s.into_iter().map(|s| (s.node_id as usize - 1, Ok(s))).collect()
        };
        assert_eq!(
            agreed_leader(&all(vec![
                status(1, Some(2), 2),
                status(2, Some(2), 2),
                status(3, Some(2), 2)
            ])),
            Ok(1)
        );
        // Node 1 just restarted and believes in its own leadership of term 1.
        let stale = all(vec![
            status(1, Some(1), 1),
            status(2, Some(2), 2),
            status(3, Some(2), 2),
        ]);
        assert!(agreed_leader(&stale).unwrap_err().contains("different leaders"));
        let alone = all(vec![status(1, Some(1), 1)]);
        assert_eq!(agreed_leader(&alone), Ok(0));
        let later = all(vec![status(1, Some(1), 1), status(2, Some(1), 2)]);
        assert!(agreed_leader(&later).unwrap_err().contains("term"));
        let electing = all(vec![status(2, None, 3), status(3, None, 3)]);
        assert!(agreed_leader(&electing).unwrap_err().contains("knows no leader"));
        let dead = all(vec![status(2, Some(1), 1), status(3, Some(1), 1)]);
        assert!(agreed_leader(&dead).unwrap_err().contains("not running"));
        let silent = vec![(0, Ok(status(1, Some(1), 1))), (1, Err("timeout".to_string()))];
        assert!(agreed_leader(&silent).unwrap_err().contains("node 2 did not answer"));
        let mut not_leading = status(2, Some(2), 2);
        not_leading.is_leader = false;
        assert!(
            agreed_leader(&all(vec![not_leading]))
                .unwrap_err()
                .contains("does not lead")
        );
    }

    #[test]
    fn secrets_are_long_alphanumeric_and_differ() {
        let a = random_secret(32).unwrap();
        let b = random_secret(32).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(7).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 7, "{ports:?}");
    }

    #[test]
    fn the_key_file_is_private_from_its_creation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        write_private(&path, b"abc").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_private(&path, b"again").is_err(), "never overwrites a key");
    }
}
