//! Black-box harness: runs the real `stagefleet` binary on loopback with its own data dir, reads
//! the URLs and the admin key from its banner, and speaks GraphQL to it over HTTP.

#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod webrtc;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct TestNode {
    child: Child,
    pub url: String,
    pub emulator_url: Option<String>,
    pub admin_key: Option<String>,
    pub data_dir: PathBuf,
    http: reqwest::Client,
}

impl TestNode {
    /// Start a node on a free port; `extra` are more flags. Waits for its banner.
    pub fn start(data_dir: &Path, extra: &[&str]) -> TestNode {
        Self::start_at(data_dir, "127.0.0.1:0", extra)
    }

    pub fn start_at(data_dir: &Path, http_addr: &str, extra: &[&str]) -> TestNode {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("node.log"))
            .unwrap();
        let mut child = Command::new(binary())
            .args(["--data-dir", data_dir.to_str().unwrap(), "--http-addr", http_addr])
            .args(extra)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("RUST_LOG", "info")
            // Stages appear only when a test asks for them (`--autoscale true` wins over this).
            .env("STAGEFLEET_AUTOSCALE", "false")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning stagefleet");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut url, mut emulator_url, mut admin_key) = (None, None, None);
        for line in lines.by_ref() {
            let line = line.expect("reading the banner");
            let last_word = line.split_whitespace().last().unwrap_or("").to_string();
            if line.contains("GraphQL (GraphiQL") {
                url = Some(last_word.trim_end_matches("/graphql").to_string());
            } else if line.contains("built-in IVS emulator at") {
                emulator_url = Some(last_word);
            } else if line.contains("admin key") {
                admin_key = Some(last_word);
            } else if line.trim_start().starts_with("data") {
                break;
            }
        }
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let url = url.unwrap_or_else(|| {
            let log = std::fs::read_to_string(data_dir.join("node.log")).unwrap_or_default();
            panic!("the node printed no GraphQL URL; its log:\n{log}")
        });
        TestNode {
            child,
            url,
            emulator_url,
            admin_key,
            data_dir: data_dir.to_path_buf(),
            http: reqwest::Client::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.child.wait().unwrap();
    }

    /// Freeze the process (SIGSTOP): it holds its sockets and answers nothing, as a node cut off
    /// by the network does.
    pub fn freeze(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Let a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// SIGTERM and wait; returns whether the process exited successfully.
    pub fn terminate(&mut self) -> bool {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap().success()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POST a GraphQL request; returns (HTTP status, body).
    pub async fn post(&self, query: &str, variables: Value, key: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let resp = req.send().await.expect("POST /graphql");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("a JSON body"))
    }

    /// GraphQL call expected to succeed; returns `data`.
    pub async fn ok(&self, query: &str, variables: Value, key: Option<&str>) -> Value {
        let (status, body) = self.post(query, variables, key).await;
        assert!(
            body.get("errors").is_none() && status == 200,
            "{query} failed ({status}): {body}"
        );
        body["data"].clone()
    }

    /// GraphQL call expected to fail; returns the first error's `extensions.code`.
    pub async fn err(&self, query: &str, variables: Value, key: Option<&str>) -> String {
        let (_, body) = self.post(query, variables, key).await;
        let code = body["errors"][0]["extensions"]["code"].as_str();
        code.unwrap_or_else(|| panic!("{query} was expected to fail with a code: {body}"))
            .to_string()
    }

    pub async fn admin(&self, query: &str, variables: Value) -> Value {
        self.ok(query, variables, self.admin_key.as_deref()).await
    }

    pub async fn start_broadcast(&self, id: &str) -> Value {
        let q = "mutation($id: ID!) { startBroadcast(id: $id, name: \"test\") { id state stages { id arn eventsUrl whipUrl } } }";
        self.admin(q, json!({"id": id})).await["startBroadcast"].clone()
    }

    /// `hostTokens` for `user`: one `{participantId token stage { id }}` per origin stage.
    pub async fn host_tokens(&self, broadcast: &str, user: &str) -> Vec<Value> {
        let q = "mutation($b: ID!, $u: String!) { hostTokens(broadcastId: $b, userId: $u) { participantId token stage { id } } }";
        self.admin(q, json!({"b": broadcast, "u": user})).await["hostTokens"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub async fn join(&self, broadcast: &str, user: &str) -> Result<Value, String> {
        let q = "mutation($b: ID!, $u: String!) { joinBroadcast(broadcastId: $b, userId: $u) {
            token tokenExpiresAt rejoined
            session { id userId stageId participantId leaseUntil }
            stage { id arn ivsStageId eventsUrl whipUrl capacity } } }";
        let (_, body) = self.post(q, json!({"b": broadcast, "u": user}), None).await;
        match body["errors"][0]["extensions"]["code"].as_str() {
            Some(code) => Err(code.to_string()),
            None => Ok(body["data"]["joinBroadcast"].clone()),
        }
    }

    /// Join `broadcast` as `user` through a proxy that sent `x-forwarded-for: <xff>`; the refusal's
    /// code, or None when admitted.
    pub async fn join_forwarded(&self, xff: &str, broadcast: &str, user: &str) -> Option<String> {
        let q = "mutation($b: ID!, $u: String!) { joinBroadcast(broadcastId: $b, userId: $u) { token } }";
        let body: Value = self
            .http
            .post(format!("{}/graphql", self.url))
            .header("x-forwarded-for", xff)
            .json(&json!({"query": q, "variables": {"b": broadcast, "u": user}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["errors"][0]["extensions"]["code"].as_str().map(str::to_string)
    }

    /// Requests answered by a compiled join plan so far (`/metrics`).
    pub async fn compiled_answers(&self) -> u64 {
        let (_, metrics) = self.get("/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("stagefleet_graphql_compiled_total "))
            .expect("the counter is exported")
            .parse()
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.http.get(format!("{}{path}", self.url)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// GET a path of the built-in emulator (e.g. `/_emulator/state`).
    pub async fn get_emulator(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.emulator_url.as_ref().expect("built-in emulator"));
        let resp = self.http.get(url).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Ask the emulator to admit a participant with `token`, as IVS would at join.
    pub async fn emulator_join(&self, token: &str, publish: bool) -> (u16, Value) {
        let url = format!(
            "{}/_emulator/join",
            self.emulator_url.as_ref().expect("built-in emulator")
        );
        let resp = self
            .http
            .post(url)
            .json(&json!({"token": token, "publish": publish}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node on a free port in a data dir of its own (removed when the first value drops).
pub fn node(extra: &[&str]) -> (tempfile::TempDir, TestNode) {
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start(dir.path(), extra);
    (dir, n)
}

/// The binary under test: `STAGEFLEET_BIN` if set (e.g. a release build), else cargo's own.
pub fn binary() -> PathBuf {
    std::env::var_os("STAGEFLEET_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stagefleet")), PathBuf::from)
}

/// Poll `f` until it returns `Some`, or panic after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_showing(timeout, what, || {
        let polled = f();
        async move { polled.await.ok_or_else(String::new) }
    })
    .await
}

/// [`eventually`] for a wait whose failure needs explaining: `f` answers `Err(what it saw)`
/// until it is satisfied, and a timeout adds the last of those to `what`.
pub async fn eventually_showing<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match f().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(Instant::now() < deadline, "timed out waiting for: {what}{seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The JWT's header and claims, decoded (signature checked separately, by the emulator).
pub fn decode_jwt(token: &str) -> (Value, Value) {
    use base64::Engine;
    let part = |i: usize| -> Value {
        let seg = token.split('.').nth(i).expect("three JWS parts");
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
    };
    assert_eq!(token.split('.').count(), 3);
    (part(0), part(1))
}
