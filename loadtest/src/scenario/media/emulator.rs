//! The IVS emulator as the `media` scenario uses it: started here (`stagefleet ivs-emulator` on a
//! free loopback port) or given by URL; stages and participant tokens through its restJson1 API
//! (`POST /<Operation>`, JSON, no signature check); and a publisher's events socket, which must
//! stay open (and answer the emulator's idle timeout with pings) while it publishes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::cluster::free_ports;
use crate::target::terminate;

/// How long the emulator may take to listen.
const LISTEN_WITHIN: Duration = Duration::from_secs(30);
/// The SDK pings every 15 s; the emulator closes a socket silent for 60 s.
const PING_EVERY: Duration = Duration::from_secs(15);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Throttled calls are tried again this often, this long at most (a given emulator may enforce
/// IVS's 50 tokens/s; one started here does not).
const THROTTLE_RETRY: Duration = Duration::from_millis(100);
const THROTTLE_GIVE_UP: Duration = Duration::from_secs(30);

/// A `stagefleet ivs-emulator` this tool runs.
pub struct LocalEmulator {
    child: Option<Child>,
    pub url: String,
    pub log: PathBuf,
    /// Its PID, for the CPU/RSS sampler.
    pub pid: Arc<AtomicU32>,
}

impl LocalEmulator {
    /// `bin ivs-emulator --listen 127.0.0.1:<free port> --no-enforce-tps`, its log in `log`.
    pub async fn start(bin: &Path, log: &Path) -> anyhow::Result<LocalEmulator> {
        let port = free_ports(1)?[0];
        let listen = format!("127.0.0.1:{port}");
        let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(bin)
            .args(["ivs-emulator", "--listen", &listen, "--no-enforce-tps"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ivs-emulator", bin.display()))?;
        let deadline = Instant::now() + LISTEN_WITHIN;
        loop {
            if tokio::net::TcpStream::connect(&listen).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("the IVS emulator exited ({status}); see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "the IVS emulator did not listen on {listen} within {LISTEN_WITHIN:?}; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval, bounded by the deadline
        }
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        Ok(LocalEmulator {
            child: Some(child),
            url: format!("http://{listen}"),
            log: log.to_path_buf(),
            pid,
        })
    }

    /// SIGTERM and wait.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10)).await?;
        }
        Ok(())
    }
}

/// A stage and what its pages need.
#[derive(Clone, Debug)]
pub struct Stage {
    pub arn: String,
    pub events: String,
    pub whip: String,
}

impl Stage {
    /// The stage id: the ARN's last path segment.
    pub fn id(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or(&self.arn)
    }
}

/// A participant token and whom it seats.
#[derive(Clone, Debug)]
pub struct Token {
    pub participant_id: String,
    pub token: String,
}

/// The emulator's IVS API, unsigned.
#[derive(Clone)]
pub struct Ivs {
    http: reqwest::Client,
    base: String,
}

impl Ivs {
    pub fn new(base: &str) -> anyhow::Result<Ivs> {
        Ok(Ivs {
            http: reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// `POST /<op>`; a ThrottlingException is tried again for a while.
    async fn call(&self, op: &str, body: Value) -> anyhow::Result<Value> {
        let give_up = Instant::now() + THROTTLE_GIVE_UP;
        loop {
            let response = self
                .http
                .post(format!("{}/{op}", self.base))
                .json(&body)
                .send()
                .await
                .with_context(|| format!("{op} at {}", self.base))?;
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(answer);
            }
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS && Instant::now() < give_up {
                tokio::time::sleep(THROTTLE_RETRY).await;
                continue;
            }
            bail!("{op}: {status} {answer}");
        }
    }

    pub async fn create_stage(&self, name: &str) -> anyhow::Result<Stage> {
        let answer = self.call("CreateStage", json!({ "name": name })).await?;
        let stage = &answer["stage"];
        let field = |v: &Value, what: &str| {
            v.as_str()
                .map(str::to_string)
                .with_context(|| format!("CreateStage answered without {what}: {answer}"))
        };
        Ok(Stage {
            arn: field(&stage["arn"], "an arn")?,
            events: field(&stage["endpoints"]["events"], "an events endpoint")?,
            whip: field(&stage["endpoints"]["whip"], "a WHIP endpoint")?,
        })
    }

    /// A token for `user_id`; `publish` adds PUBLISH to SUBSCRIBE.
    pub async fn token(&self, stage: &Stage, user_id: &str, publish: bool) -> anyhow::Result<Token> {
        let capabilities: &[&str] = if publish {
            &["PUBLISH", "SUBSCRIBE"]
        } else {
            &["SUBSCRIBE"]
        };
        let body = json!({ "stageArn": stage.arn, "userId": user_id, "capabilities": capabilities });
        let answer = self.call("CreateParticipantToken", body).await?;
        let t = &answer["participantToken"];
        match (t["participantId"].as_str(), t["token"].as_str()) {
            (Some(id), Some(token)) => Ok(Token {
                participant_id: id.to_string(),
                token: token.to_string(),
            }),
            _ => bail!("CreateParticipantToken answered {answer}"),
        }
    }

    pub async fn delete_stage(&self, stage: &Stage) -> anyhow::Result<()> {
        self.call("DeleteStage", json!({ "arn": stage.arn })).await.map(|_| ())
    }
}

/// A page's events socket, held open (pinged, its frames read and dropped) until dropped: the
/// participant stays joined, so it may publish.
pub struct Joined {
    task: JoinHandle<()>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Open the stage's events socket with `token` as the subprotocol and wait for the first
/// STAGE_STATE (the emulator joined the participant); a JOIN_ERROR or a close is an error.
pub async fn join(stage: &Stage, token: &Token) -> anyhow::Result<Joined> {
    let url = format!("{}?topic={}/publishers", stage.events, stage.id());
    let mut request = url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&token.token)?);
    let (mut socket, _) = tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .context("the events socket did not open in time")?
        .context("opening the events socket")?;
    let first = tokio::time::timeout(CALL_TIMEOUT, async {
        while let Some(message) = socket.next().await {
            if let Message::Text(t) = message? {
                return Ok(serde_json::from_str::<Value>(&t)?);
            }
        }
        bail!("the events socket closed before the stage state")
    })
    .await
    .context("no stage state on the events socket in time")??;
    if first["type"] != "aws:ivs:STAGE_STATE" {
        bail!("the events socket answered {first}");
    }
    let task = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    if socket.send(Message::text(json!({"type": "PING"}).to_string())).await.is_err() {
                        return;
                    }
                }
                message = socket.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                },
            }
        }
    });
    Ok(Joined { task })
}
