//! First-start (and every-start) setup, done by the leader: the replicated policy follows the
//! config, a signing key exists, is imported into IVS and is sealed under the current
//! key-encryption key, and an admin key exists (its secret is returned once, to be printed, and
//! never stored).

use std::time::Duration;

use anyhow::Context;

use super::Node;
use super::signing::Reseal;
use crate::clock::now_ms;
use crate::fleet::Role;
use crate::fleet::admission::FleetPolicy;
use crate::ivs::token::SigningKey;
use crate::state::proposal;

/// How long a start waits for the snapshot that drops re-sealed key entries from the log.
const COMPACT_TIMEOUT: Duration = Duration::from_secs(120);

/// Returns the admin key text when one was created now.
pub async fn run(node: &Node) -> anyhow::Result<Option<String>> {
    // Every node: a stored key that no configured key-encryption key opens would fail every join,
    // so the node refuses to start rather than come up unable to sign.
    let reseal = node.keys.review()?;
    if !node.store.is_leader() {
        return Ok(None);
    }
    let cfg = &node.cfg;
    let policy = FleetPolicy {
        placement: cfg.placement,
        seats_per_stage: cfg.seats_per_stage,
        max_stages: cfg.max_stages,
        session_lease_ms: cfg.session_lease_secs as i64 * 1000,
        max_seats_per_client: cfg.max_seats_per_client,
    };
    if node.store.view().policy != policy {
        node.store.propose(proposal::SetPolicy(policy)).await?;
    }
    if node.store.view().fleet.signing_key.is_none() {
        let (key, arn) = signing_key(node).await?;
        tracing::info!(kid = %arn, "signing key ready (replicated sealed under the key-encryption key)");
        node.store
            .propose(proposal::SetSigningKey(node.keys.seal(&key, &arn)))
            .await?;
    } else if let Some((record, why)) = reseal {
        reseal_signing_key(node, record, why).await?;
    }
    if node.store.view().fleet.api_keys.is_empty() {
        let (record, key) = super::keys::generate("admin (first start)", Role::Admin, now_ms());
        node.store
            .propose(proposal::CreateApiKey(record))
            .await
            .context("creating the admin key")?;
        return Ok(Some(key));
    }
    Ok(None)
}

/// Replace the stored signing key record by `record` (the same key, sealed under the current
/// KEK), then snapshot and purge the log through that entry, so the entries that carried the old
/// form leave the log and the previous snapshot file is replaced.
async fn reseal_signing_key(node: &Node, record: crate::fleet::SigningKeyRecord, why: Reseal) -> anyhow::Result<()> {
    let kid = record.arn.clone();
    let (log_id, _) = node
        .store
        .propose_logged(proposal::SetSigningKey(record))
        .await
        .context("replicating the re-sealed signing key")?;
    match why {
        Reseal::WasClear => tracing::warn!(
            %kid,
            index = log_id.index,
            "the signing key was stored in clear (a data dir from before keys were sealed): sealed it under \
             key_encryption_key_file; compacting the Raft log so the clear entries go"
        ),
        Reseal::UnderPreviousKek => tracing::warn!(
            %kid,
            index = log_id.index,
            "the signing key opened only with previous_key_encryption_key_file: sealed it again under \
             key_encryption_key_file; remove previous_key_encryption_key_file once every node has the new key"
        ),
    }
    match node.store.compact_through(log_id.index, COMPACT_TIMEOUT).await {
        Ok(()) => tracing::warn!(
            through = log_id.index,
            "snapshot taken and Raft log purged: the old form of the signing key is out of the log and \
             snapshot, but sled may keep the bytes of removed entries in its files until it reuses that \
             space; if the data dir was ever copied or read by others, treat that key as exposed"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not compact the Raft log now; the old form of the signing key stays in log entries until \
             the next snapshot (snapshot_every) purges them"
        ),
    }
    Ok(())
}

/// The configured key, or a new one, and its public key's ARN; imported into IVS unless the
/// ARN is given.
async fn signing_key(node: &Node) -> anyhow::Result<(SigningKey, String)> {
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
        let (name, tags) = crate::ivs::naming::public_key(&cfg.fleet_id, now_ms() / 1000);
        node.backend
            .import_public_key(&name, &key.public_key_pem(), &tags)
            .await
            .context("importing the token signing key into IVS (ImportPublicKey)")?
            .arn
    };
    Ok((key, arn))
}
