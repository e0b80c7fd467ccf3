//! Checks a participant token the server minted, the way IVS would at join time: the JWS shape,
//! the ES384 header, every claim against the stage the server said it seated the viewer on, and
//! (when a public key is known) the signature. Pure: keys come in as arguments.
//!
//! Does not fetch keys; `verify.rs` gets them from `--public-key` files or the emulator.

use std::collections::HashMap;

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// What the token must say: the stage as the join answer reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub arn: String,
    pub ivs_stage_id: String,
    pub events_url: String,
    pub whip_url: String,
    pub participant_id: String,
}

/// Public keys by their ARN (the JWT `kid`), as SubjectPublicKeyInfo DER.
pub type Keys = HashMap<String, Vec<u8>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    Valid,
    /// No key with this `kid` was given, so the signature was not checked.
    Unchecked,
}

/// The token's `kid`, or why the token is not a JWS at all.
pub fn kid(token: &str) -> Result<String, String> {
    let (header, _, _) = decode(token)?;
    header["kid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "header has no kid".to_string())
}

/// Check shape, header, claims and (if the key is in `keys`) signature.
pub fn check(token: &str, want: &Expected, keys: &Keys) -> Result<Signature, String> {
    let (header, claims, signature) = decode(token)?;
    if header["alg"] != "ES384" {
        return Err(format!("header alg is {}, not ES384", header["alg"]));
    }
    let kid = header["kid"].as_str().ok_or("header has no kid")?;
    check_claims(&claims, want)?;
    let Some(key) = keys.get(kid) else {
        return Ok(Signature::Unchecked);
    };
    let signed = token.rsplit_once('.').map(|(s, _)| s).unwrap_or_default();
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| format!("signature does not verify with key {kid}"))?;
    Ok(Signature::Valid)
}

fn decode(token: &str) -> Result<(Value, Value, Vec<u8>), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err(format!("token has {} parts, not 3", parts.len()));
    };
    let json = |part: &str, what: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("{what} is not base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{what} is not JSON: {e}"))
    };
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| format!("signature is not base64url: {e}"))?;
    Ok((json(h, "header")?, json(c, "claims")?, signature))
}

fn check_claims(c: &Value, want: &Expected) -> Result<(), String> {
    let same = |claim: &str, expected: &str| -> Result<(), String> {
        match c[claim].as_str() {
            Some(v) if v == expected => Ok(()),
            other => Err(format!("claim {claim} is {other:?}, expected {expected:?}")),
        }
    };
    same("resource", &want.arn)?;
    same("topic", &want.ivs_stage_id)?;
    same("events_url", &want.events_url)?;
    same("whip_url", &want.whip_url)?;
    same("jti", &want.participant_id)?;
    same("version", "1.0")?;
    // A viewer token grants subscribe and nothing else; a publish grant would be a security bug.
    if c["capabilities"] != json!({ "allow_subscribe": true }) {
        return Err(format!(
            "capabilities are {}, expected subscribe only",
            c["capabilities"]
        ));
    }
    match (c["iat"].as_i64(), c["exp"].as_i64()) {
        (Some(iat), Some(exp)) if exp > iat => Ok(()),
        (iat, exp) => Err(format!("exp {exp:?} is not after iat {iat:?}")),
    }
}

/// The DER inside a `-----BEGIN PUBLIC KEY-----` PEM block.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| format!("public key PEM is not base64: {e}"))
}
