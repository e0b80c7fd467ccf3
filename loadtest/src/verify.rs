//! After a run: fetch the server's view of every ledger session, the broadcast's stages and
//! counts, check every token, and turn it all into a [`Verdict`].
//!
//! Public keys for signature checks come from `--public-key` PEM files and, for a node with the
//! built-in emulator, from the emulator's `GET /_emulator/state` (any object there holding an
//! `arn` and a PEM public key). Tokens with no known key are, for a node with the emulator, taken
//! to the emulator's `POST /_emulator/join`, which admits only a validly signed token for the
//! stage — the same check IVS makes — and then left again. Otherwise the signature is reported
//! as unchecked.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::Value;

use crate::api::{Api, SESSIONS_PER_QUERY};
use crate::ledger::{self, Ledger, ServerView, Violation};
use crate::token::{self, Expected, Keys, Signature};

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Stages of the broadcast after the run: (id, viewers, capacity).
    pub stages: Vec<(String, u32, u32)>,
    pub acknowledged_joins: usize,
    pub live_sessions: usize,
    pub left_sessions: usize,
    pub tokens_signature_verified: usize,
    pub tokens_signature_unchecked: usize,
    pub violations_total: usize,
    /// Acknowledged joins the server no longer knows (among `violations_total`).
    pub lost_joins: usize,
    /// The first violations (all are counted in `violations_total`).
    pub violations: Vec<Violation>,
    pub ok: bool,
}

/// Violations listed in full in a verdict; the rest are only counted.
const VIOLATIONS_LISTED: usize = 50;

impl Verdict {
    /// One more violation, found by a check after [`run`].
    pub fn add(&mut self, v: Violation) {
        if matches!(v, Violation::LostJoin { .. }) {
            self.lost_joins += 1;
        }
        self.violations_total += 1;
        if self.violations.len() < VIOLATIONS_LISTED {
            self.violations.push(v);
        }
        self.ok = false;
    }

    pub fn text(&self) -> String {
        let stages: Vec<String> = self.stages.iter().map(|(id, v, c)| format!("{id} {v}/{c}")).collect();
        let mut s = format!("stages (viewers/capacity): {}\n", stages.join(", "));
        s += &format!(
            "ledger: {} acknowledged joins ({} live, {} left); tokens: {} signature-verified, {} unchecked\n",
            self.acknowledged_joins,
            self.live_sessions,
            self.left_sessions,
            self.tokens_signature_verified,
            self.tokens_signature_unchecked
        );
        if self.ok {
            s += "verdict: OK (no lost join, no duplicate, no stage over capacity, tokens valid)\n";
        } else {
            s += &format!("verdict: FAILED with {} violations\n", self.violations_total);
            for v in &self.violations {
                s += &format!("  {}\n", serde_json::to_string(v).unwrap_or_default());
            }
        }
        s
    }
}

/// Read public keys from PEM files (kid = the file's `arn` given as `ARN=PATH`).
pub fn keys_from_files(specs: &[String]) -> anyhow::Result<Keys> {
    let mut keys = Keys::new();
    for spec in specs {
        let (arn, path) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--public-key wants ARN=PEM_FILE, got {spec}"))?;
        let pem = std::fs::read_to_string(path)?;
        keys.insert(arn.to_string(), token::pem_to_der(&pem).map_err(anyhow::Error::msg)?);
    }
    Ok(keys)
}

/// Every `{arn, <PEM public key>}` object anywhere in the emulator's state.
pub fn keys_from_emulator_state(state: &Value, keys: &mut Keys) {
    match state {
        Value::Object(map) => {
            let arn = map.get("arn").and_then(Value::as_str);
            let pem = map
                .values()
                .filter_map(Value::as_str)
                .find(|s| s.contains("BEGIN PUBLIC KEY"));
            if let (Some(arn), Some(pem)) = (arn, pem)
                && let Ok(der) = token::pem_to_der(pem)
            {
                keys.insert(arn.to_string(), der);
            }
            map.values().for_each(|v| keys_from_emulator_state(v, keys));
        }
        Value::Array(items) => items.iter().for_each(|v| keys_from_emulator_state(v, keys)),
        _ => {}
    }
}

pub async fn emulator_keys(http: &reqwest::Client, emulator: &str, keys: &mut Keys) {
    let url = format!("{emulator}/_emulator/state");
    if let Ok(r) = http.get(url).send().await
        && let Ok(state) = r.json::<Value>().await
    {
        keys_from_emulator_state(&state, keys);
    }
}

/// Query the server for everything the ledger claims, then check.
pub async fn run(
    api: &Api,
    broadcast: &str,
    ledger: &Ledger,
    keys: &Keys,
    emulator: Option<&str>,
    exclusive: bool,
    concurrency: usize,
) -> anyhow::Result<Verdict> {
    let ids: Vec<String> = ledger.entries.iter().map(|e| e.session.id.clone()).collect();
    let chunks: Vec<Vec<String>> = ids.chunks(SESSIONS_PER_QUERY).map(<[_]>::to_vec).collect();
    let mut sessions = HashMap::new();
    let mut answers = stream::iter(chunks)
        .map(|chunk| async move { (api.sessions(&chunk).await, chunk) })
        .buffer_unordered(concurrency.clamp(1, 32));
    while let Some((found, chunk)) = answers.next().await {
        for (id, s) in chunk.into_iter().zip(found?) {
            sessions.insert(id, s);
        }
    }
    let stages = api.stages(broadcast).await?;
    let view = ServerView {
        sessions,
        broadcast: api.broadcast(broadcast).await?,
        stages,
    };
    let mut violations = ledger::check(ledger, &view, exclusive);
    // The stage each token names must be the stage the server lists under that id.
    let arns: HashMap<&str, Option<&str>> = view.stages.iter().map(|s| (s.id.as_str(), s.arn.as_deref())).collect();
    let (mut verified, unchecked, bad) = check_tokens(ledger, keys.clone()).await;
    violations.extend(bad);
    let mut unchecked_count = unchecked.len();
    if let Some(emu) = emulator {
        let joins = stream::iter(unchecked)
            .map(|e| emulator_admits(api.http(), emu, e))
            .buffer_unordered(concurrency.clamp(1, 32));
        let results: Vec<Result<(), Violation>> = joins.collect().await;
        for r in results {
            unchecked_count -= 1;
            match r {
                Ok(()) => verified += 1,
                Err(v) => violations.push(v),
            }
        }
    }
    for e in ledger.entries.iter().filter(|e| !e.left) {
        if let Some(listed) = arns.get(e.stage.id.as_str())
            && *listed != e.stage.arn.as_deref()
        {
            violations.push(Violation::BadToken {
                session: e.session.id.clone(),
                reason: format!("join said stage ARN {:?}, stages() says {listed:?}", e.stage.arn),
            });
        }
    }
    let total = violations.len();
    let lost_joins = violations
        .iter()
        .filter(|v| matches!(v, Violation::LostJoin { .. }))
        .count();
    violations.truncate(VIOLATIONS_LISTED);
    Ok(Verdict {
        stages: view
            .stages
            .iter()
            .map(|s| (s.id.clone(), s.viewers, s.capacity))
            .collect(),
        acknowledged_joins: ledger.entries.len(),
        live_sessions: ledger.live_count(),
        left_sessions: ledger.entries.iter().filter(|e| e.left).count(),
        tokens_signature_verified: verified,
        tokens_signature_unchecked: unchecked_count,
        violations_total: total,
        lost_joins,
        violations,
        ok: total == 0,
    })
}

/// A token whose claims passed but whose key we lack: (session, token, stage ARN, participant).
type Unchecked = (String, String, String, String);

/// The emulator admits the token as a subscriber of its stage; then the participant leaves.
async fn emulator_admits(http: &reqwest::Client, emu: &str, t: Unchecked) -> Result<(), Violation> {
    let (session, token, arn, participant) = t;
    let bad = |reason: String| Violation::BadToken {
        session: session.clone(),
        reason,
    };
    let body = serde_json::json!({ "token": token, "publish": false, "stageArn": arn });
    let r = http
        .post(format!("{emu}/_emulator/join"))
        .json(&body)
        .send()
        .await
        .map_err(|e| bad(format!("emulator unreachable: {e}")))?;
    if !r.status().is_success() {
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        return Err(bad(format!("IVS emulator refused it: {status} {text}")));
    }
    let leave = serde_json::json!({ "stageArn": arn, "participantId": participant });
    let _ = http.post(format!("{emu}/_emulator/leave")).json(&leave).send().await;
    Ok(())
}

/// Verify every token on two blocking threads (ECDSA verify is CPU work, like signing).
async fn check_tokens(ledger: &Ledger, keys: Keys) -> (usize, Vec<Unchecked>, Vec<Violation>) {
    let jobs: Vec<(String, String, Expected)> = ledger
        .entries
        .iter()
        .map(|e| {
            let want = Expected {
                arn: e.stage.arn.clone().unwrap_or_default(),
                ivs_stage_id: e.stage.ivs_stage_id.clone().unwrap_or_default(),
                events_url: e.stage.events_url.clone().unwrap_or_default(),
                whip_url: e.stage.whip_url.clone().unwrap_or_default(),
                participant_id: e.session.participant_id.clone(),
            };
            (e.session.id.clone(), e.token.clone(), want)
        })
        .collect();
    let keys = Arc::new(keys);
    let half = jobs.len().div_ceil(2).max(1);
    let mut handles = Vec::new();
    for part in jobs.chunks(half).map(<[_]>::to_vec) {
        let keys = keys.clone();
        handles.push(tokio::task::spawn_blocking(move || {
            let (mut ok, mut unchecked, mut bad) = (0, Vec::new(), Vec::new());
            for (session, tok, want) in part {
                match token::check(&tok, &want, &keys) {
                    Ok(Signature::Valid) => ok += 1,
                    Ok(Signature::Unchecked) => unchecked.push((session, tok, want.arn, want.participant_id)),
                    Err(reason) => bad.push(Violation::BadToken { session, reason }),
                }
            }
            (ok, unchecked, bad)
        }));
    }
    let mut total = (0, Vec::new(), Vec::new());
    for h in handles {
        let (ok, unchecked, bad) = h.await.expect("token check thread");
        total.0 += ok;
        total.1.extend(unchecked);
        total.2.extend(bad);
    }
    total
}
