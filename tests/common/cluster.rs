//! A three-node cluster of real `stagefleet` processes on loopback, sharing one standalone IVS
//! emulator (a process of the same binary), one cluster secret and one key-encryption key.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{TestNode, binary, eventually};

pub const SECRET: &str = "test-cluster-secret-0123456789";

/// A port free on loopback right now, below the kernel's ephemeral range (so no connection's
/// source port and no other test's port 0 takes it before the node binds it), never the same
/// twice in one process (nodes keep fixed addresses across restarts). Each test process starts at
/// its own place in 20,000–32,499 (by pid) and walks on from there; it never asks the kernel for
/// one, which once handed out a port that was taken again before the node bound it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 12_500;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 50) * 250;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < PORTS, "this test process used every port of 20,000–32,499");
        let port = (FIRST + (start + n) % PORTS) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Emulator {
    child: Child,
    pub url: String,
}

impl Emulator {
    pub async fn start(dir: &Path) -> Emulator {
        let port = free_port();
        let log = std::fs::File::create(dir.join("emulator.log")).unwrap();
        let child = Command::new(binary())
            .args(["ivs-emulator", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--state-file", dir.join("emulator.json").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning the standalone emulator");
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(30), "the emulator listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
        Emulator { child, url }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One member's fixed addresses and flags (fixed so a restart keeps its identity).
#[derive(Clone)]
pub struct Member {
    pub id: u64,
    pub http_addr: String,
    pub raft_addr: String,
    pub data_dir: PathBuf,
    pub flags: Vec<String>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub emulator: Emulator,
    pub members: Vec<Member>,
    /// `None` while a member is stopped.
    pub nodes: Vec<Option<TestNode>>,
    pub admin_key: String,
}

impl Cluster {
    /// Three nodes formed with `--bootstrap-expect 3`, all started at once; `extra` flags go to
    /// every node.
    pub async fn start(extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let emulator = Emulator::start(dir.path()).await;
        let kek = dir.path().join("kek");
        {
            use base64::Engine;
            let bytes: [u8; 32] = rand::random();
            std::fs::write(&kek, base64::engine::general_purpose::STANDARD.encode(bytes)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let raft: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let join = raft.join(",");
        let members: Vec<Member> = (0..3)
            .map(|i| {
                let mut flags: Vec<String> = [
                    "--node-id",
                    &(i + 1).to_string(),
                    "--raft-addr",
                    &raft[i],
                    "--bootstrap-expect",
                    "3",
                    "--join",
                    &join,
                    "--cluster-secret",
                    SECRET,
                    "--key-encryption-key-file",
                    kek.to_str().unwrap(),
                    "--ivs-backend",
                    "emulator",
                    "--ivs-endpoint-url",
                    &emulator.url,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                flags.extend(extra.iter().map(|s| s.to_string()));
                Member {
                    id: i as u64 + 1,
                    http_addr: format!("127.0.0.1:{}", free_port()),
                    raft_addr: raft[i].clone(),
                    data_dir: dir.path().join(format!("node{}", i + 1)),
                    flags,
                }
            })
            .collect();
        // Each start waits for a leader, which needs the others: start them side by side.
        let starts: Vec<_> = members
            .iter()
            .cloned()
            .map(|m| std::thread::spawn(move || m.start()))
            .collect();
        let nodes: Vec<Option<TestNode>> = starts.into_iter().map(|t| Some(t.join().unwrap())).collect();
        let admin_key = nodes
            .iter()
            .flatten()
            .find_map(|n| n.admin_key.clone())
            .expect("the node that set the cluster up printed the admin key");
        let mut c = Cluster {
            dir,
            emulator,
            members,
            nodes,
            admin_key,
        };
        c.share_admin_key();
        // A follower may print its banner a moment before it has applied the admin key.
        for (i, n) in c.running() {
            eventually(
                Duration::from_secs(10),
                &format!("node {i} knows the admin key"),
                || async {
                    let (status, _) = n.post("{ node { nodeId } }", json!({}), Some(&c.admin_key)).await;
                    (status == 200).then_some(())
                },
            )
            .await;
        }
        c
    }

    fn share_admin_key(&mut self) {
        for n in self.nodes.iter_mut().flatten() {
            n.admin_key = Some(self.admin_key.clone());
        }
    }

    pub fn node(&self, i: usize) -> &TestNode {
        self.nodes[i].as_ref().expect("that node is running")
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &TestNode)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// `{ node { … } }` as node `i` answers it.
    pub async fn status(&self, i: usize) -> Value {
        self.node(i)
            .admin("{ node { nodeId leaderId isLeader term lastAppliedIndex } }", json!({}))
            .await["node"]
            .clone()
    }

    /// The index of the member every running node names as leader, once they agree.
    pub async fn leader(&self) -> usize {
        eventually(
            Duration::from_secs(20),
            "the running nodes agree on a leader",
            || async {
                let mut named = Vec::new();
                for (i, _) in self.running() {
                    named.push(self.status(i).await["leaderId"].as_u64());
                }
                let first = named.first().copied().flatten()?;
                let i = self.members.iter().position(|m| m.id == first)?;
                (named.iter().all(|l| *l == Some(first)) && self.nodes[i].is_some()).then_some(i)
            },
        )
        .await
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            n.kill9();
        }
    }

    /// Start member `i` again with its data dir and addresses.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "stop it first");
        let mut n = self.members[i].start();
        n.admin_key = Some(self.admin_key.clone());
        self.nodes[i] = Some(n);
    }
}

impl Member {
    /// Start this member again on its data dir, addresses and flags.
    pub fn start_again(&self) -> TestNode {
        self.start()
    }

    fn start(&self) -> TestNode {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        TestNode::start_at(&self.data_dir, &self.http_addr, &flags)
    }
}
