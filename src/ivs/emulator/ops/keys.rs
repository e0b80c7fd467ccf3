//! ImportPublicKey, GetPublicKey, ListPublicKeys, DeletePublicKey: the P-384 keys that
//! self-signed participant tokens are verified against.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ArnReq, Ctx, ListReq, Outcome, validate};
use crate::ivs::emulator::error::{ApiError, ApiResult};
use crate::ivs::emulator::state::PublicKey;
use crate::ivs::token;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReq {
    public_key_material: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// SHA-256 of the SubjectPublicKeyInfo DER as colon-separated hex, the form IVS shows.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn key_json(key: &PublicKey) -> Value {
    json!({
        "arn": key.arn,
        "name": key.name,
        "publicKeyMaterial": key.pem,
        "fingerprint": key.fingerprint,
        "tags": key.tags,
    })
}

/// The key id part of a public-key ARN (UUID-shaped, like IVS's).
fn new_key_id() -> String {
    use rand::Rng;
    let hex: String = (0..32)
        .map(|_| char::from_digit(rand::rng().random_range(0..16), 16).unwrap())
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn find<'a>(ctx: &'a Ctx<'_>, arn: &str) -> ApiResult<&'a PublicKey> {
    validate::arn("public-key", arn)?;
    let id = crate::ivs::backend::stage_id_from_arn(arn);
    ctx.state
        .keys
        .get(id)
        .filter(|k| k.arn == arn)
        .ok_or_else(|| ApiError::NotFound(format!("public key {arn} not found")))
}

pub fn import(ctx: Ctx<'_>, req: ImportReq) -> ApiResult<Outcome> {
    validate::name("name", &req.name)?;
    validate::tags(&req.tags)?;
    let pem = req.public_key_material.as_str();
    if !(pem.contains("-----BEGIN PUBLIC KEY-----") && pem.contains("-----END PUBLIC KEY-----")) {
        return Err(ApiError::Validation(
            "publicKeyMaterial must be a PEM 'PUBLIC KEY' block".into(),
        ));
    }
    let der =
        token::pem_body(pem).ok_or_else(|| ApiError::Validation("publicKeyMaterial is not valid base64 PEM".into()))?;
    if token::spki_point(&der).is_none() {
        return Err(ApiError::Validation(
            "publicKeyMaterial is not an ECDSA P-384 public key".into(),
        ));
    }
    let fingerprint = fingerprint(&der);
    if let Some(existing) = ctx.state.keys.values().find(|k| k.fingerprint == fingerprint) {
        return Err(ApiError::Conflict(format!(
            "this key material is already imported as {}",
            existing.arn
        )));
    }
    let max = ctx.settings.max_public_keys;
    if ctx.state.keys.len() >= max as usize {
        return Err(ApiError::QuotaExceeded(format!(
            "the account already has the maximum of {max} public keys"
        )));
    }
    let id = new_key_id();
    let arn = format!(
        "arn:aws:ivs:{}:{}:public-key/{id}",
        ctx.settings.region, ctx.settings.account_id
    );
    let key = PublicKey {
        arn,
        name: req.name,
        pem: pem.to_string(),
        fingerprint,
        tags: req.tags,
    };
    let body = json!({"publicKey": key_json(&key)});
    ctx.state.keys.insert(id, key);
    Outcome::wrote(body)
}

pub fn get(ctx: Ctx<'_>, req: ArnReq) -> ApiResult<Outcome> {
    let key = find(&ctx, &req.arn)?;
    Outcome::read(json!({"publicKey": key_json(key)}))
}

pub fn list(ctx: Ctx<'_>, req: ListReq) -> ApiResult<Outcome> {
    let max = validate::max_results(req.max_results, 100)?;
    let items = ctx
        .state
        .keys
        .iter()
        .map(|(id, k)| (id.clone(), json!({"arn": k.arn, "name": k.name, "tags": k.tags})));
    let (keys, next) = validate::page(items.collect(), req.next_token.as_deref(), max)?;
    Outcome::read(json!({"publicKeys": keys, "nextToken": next}))
}

/// Tokens signed by a deleted key stop verifying at once: joins look keys up at join time.
pub fn delete(ctx: Ctx<'_>, req: ArnReq) -> ApiResult<Outcome> {
    find(&ctx, &req.arn)?;
    ctx.state.keys.remove(crate::ivs::backend::stage_id_from_arn(&req.arn));
    Outcome::wrote(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_colon_hex_sha256() {
        let fp = fingerprint(b"");
        assert!(fp.starts_with("e3:b0:c4:42:98:fc"));
        assert_eq!(fp.len(), 32 * 3 - 1);
    }

    #[test]
    fn key_ids_look_like_uuids() {
        let id = new_key_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
