//! First-start (and every-start) setup, done by the leader: the replicated policy follows the
//! config, a signing key exists and is imported into IVS, and an admin key exists (its secret is
//! returned once, to be printed, and never stored).

use std::collections::BTreeMap;

use anyhow::Context;
use base64::Engine;

use super::{Node, now_ms};
use crate::fleet::admission::FleetPolicy;
use crate::fleet::{Role, SigningKeyRecord};
use crate::ivs::token::SigningKey;
use crate::state::{Command, Response};

/// Returns the admin key text when one was created now.
pub async fn run(node: &Node) -> anyhow::Result<Option<String>> {
    if !node.store.is_leader() {
        return Ok(None);
    }
    let cfg = &node.cfg;
    let policy = FleetPolicy {
        placement: cfg.placement,
        seats_per_stage: cfg.seats_per_stage,
        max_stages: cfg.max_stages,
        session_lease_ms: cfg.session_lease_secs as i64 * 1000,
    };
    if node.store.shared.read().policy != policy {
        node.store.propose(Command::SetPolicy(policy)).await?;
    }
    if node.store.shared.read().fleet.signing_key.is_none() {
        let record = signing_key(node).await?;
        tracing::info!(kid = %record.arn, "signing key ready");
        node.store.propose(Command::SetSigningKey(record)).await?;
    }
    if node.store.shared.read().fleet.api_keys.is_empty() {
        let (record, key) = super::keys::generate("admin (first start)", Role::Admin, now_ms());
        match node.store.propose(Command::CreateApiKey(record)).await?.1 {
            Response::ApiKey(_) => return Ok(Some(key)),
            other => anyhow::bail!("creating the admin key: unexpected {other:?}"),
        }
    }
    Ok(None)
}

/// The configured key, or a new one; imported into IVS unless its ARN is given.
async fn signing_key(node: &Node) -> anyhow::Result<SigningKeyRecord> {
    let cfg = &node.cfg;
    let key = if cfg.signing_key_file.as_os_str().is_empty() {
        SigningKey::from_der(&SigningKey::generate_pkcs8(), "")?
    } else {
        let pem = std::fs::read_to_string(&cfg.signing_key_file)
            .with_context(|| format!("reading signing_key_file {}", cfg.signing_key_file.display()))?;
        SigningKey::from_pem(&pem, "")
            .with_context(|| format!("signing_key_file {}", cfg.signing_key_file.display()))?
    };
    let arn = if !cfg.signing_key_arn.is_empty() {
        cfg.signing_key_arn.clone()
    } else {
        let tags = BTreeMap::from([("stagefleet:fleet".to_string(), cfg.fleet_id.clone())]);
        let name = format!("stagefleet-{}-{}", sanitize(&cfg.fleet_id), now_ms() / 1000);
        node.backend
            .import_public_key(&name, &key.public_key_pem(), &tags)
            .await
            .context("importing the token signing key into IVS (ImportPublicKey)")?
            .arn
    };
    Ok(SigningKeyRecord {
        pkcs8_b64: base64::engine::general_purpose::STANDARD.encode(key.pkcs8()),
        arn,
    })
}

/// IVS names allow `[a-zA-Z0-9-_]` only.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}
