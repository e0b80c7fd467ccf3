//! First-start (and every-start) setup, done by the leader: the config seeds the replicated
//! policy when the cluster first forms, a signing key exists, is imported into IVS and is sealed under the current
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
    seed_policy(node).await?;
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

/// The config seeds the replicated policy once, when the cluster first forms; afterwards the
/// replicated policy (changed with `setPolicy`) wins, and a config that disagrees is named in
/// the log so the operator is not surprised.
async fn seed_policy(node: &Node) -> anyhow::Result<()> {
    let seed = node.cfg.policy_seed();
    let view = node.store.view();
    if !view.policy_set {
        node.store
            .propose(proposal::SetPolicy(seed))
            .await
            .context("seeding the fleet policy")?;
        return Ok(());
    }
    for (setting, config, replicated) in policy_differences(&seed, &view.policy) {
        tracing::warn!(
            setting,
            config = %config,
            replicated = %replicated,
            "the config differs from the replicated fleet policy, which wins; change it with the setPolicy mutation"
        );
    }
    Ok(())
}

/// The settings where `a` and `b` differ, with both values.
fn policy_differences(a: &FleetPolicy, b: &FleetPolicy) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    let mut cmp = |name, x: String, y: String| {
        if x != y {
            out.push((name, x, y));
        }
    };
    cmp("placement", a.placement.to_string(), b.placement.to_string());
    cmp(
        "seats_per_stage",
        a.seats_per_stage.to_string(),
        b.seats_per_stage.to_string(),
    );
    cmp("max_stages", a.max_stages.to_string(), b.max_stages.to_string());
    cmp(
        "session_lease_secs",
        (a.session_lease_ms / 1000).to_string(),
        (b.session_lease_ms / 1000).to_string(),
    );
    cmp(
        "max_seats_per_client",
        a.max_seats_per_client.to_string(),
        b.max_seats_per_client.to_string(),
    );
    out
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
