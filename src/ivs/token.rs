//! Self-signed IVS participant tokens: ES384 JWS in the exact shape of `ivs-realtime.md` §2.
//!
//! A [`SigningKey`] holds a P-384 key pair and the ARN IVS gave its public half on ImportPublicKey
//! (the JWT `kid`). Signing costs ~0.1 ms of CPU: callers on the async reactor must move it to a
//! blocking thread (see `crate::ivs::signer`). [`verify`] is the counterpart the emulator and the
//! tests use; IVS itself does the same check when a participant joins.

use std::collections::BTreeMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

/// IVS limits on `exp - iat`: 1 minute to 14 days.
pub const MIN_TTL_MINUTES: u32 = 1;
pub const MAX_TTL_MINUTES: u32 = 20_160;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCapabilities {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_publish: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_subscribe: bool,
}

impl TokenCapabilities {
    pub const VIEWER: Self = Self {
        allow_publish: false,
        allow_subscribe: true,
    };
    pub const HOST: Self = Self {
        allow_publish: true,
        allow_subscribe: true,
    };
}

/// The JWT payload. Field names are IVS's; all but `user_id` are mandatory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub resource: String,
    pub topic: String,
    pub events_url: String,
    pub whip_url: String,
    pub capabilities: TokenCapabilities,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the private key is not a P-384 key in PKCS#8 or SEC1 form: {0}")]
    BadKey(String),
    #[error("token is not a three-part JWS")]
    Malformed,
    #[error("token header is not ES384 with a kid")]
    BadHeader,
    #[error("no imported public key has ARN {0}")]
    UnknownKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("token claims are not valid JSON of the IVS shape: {0}")]
    BadClaims(String),
    #[error("token expired")]
    Expired,
}

/// A P-384 private key and the public-key ARN it signs for. Cheap to share behind an `Arc`.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key pair, returned as PKCS#8 DER so it can be stored and shared.
    pub fn generate_pkcs8() -> Vec<u8> {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .expect("P-384 key generation")
            .as_ref()
            .to_vec()
    }

    /// From PKCS#8 or SEC1 DER.
    pub fn from_der(der: &[u8], kid: impl Into<String>) -> Result<Self, TokenError> {
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, der)
            .map_err(|e| TokenError::BadKey(e.to_string()))?;
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|e| TokenError::BadKey(e.to_string()))?
            .as_ref()
            .to_vec();
        Ok(Self {
            pair,
            pkcs8,
            kid: kid.into(),
            rng: SystemRandom::new(),
        })
    }

    /// From a PEM file's text (`BEGIN PRIVATE KEY` or `BEGIN EC PRIVATE KEY`, as openssl writes them).
    pub fn from_pem(pem: &str, kid: impl Into<String>) -> Result<Self, TokenError> {
        let der = pem_body(pem).ok_or_else(|| TokenError::BadKey("no PEM block found".into()))?;
        Self::from_der(&der, kid)
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn with_kid(&self, kid: impl Into<String>) -> Self {
        Self::from_der(&self.pkcs8, kid).expect("re-parsing our own key")
    }

    /// The public half as `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo), the form
    /// ImportPublicKey takes.
    pub fn public_key_pem(&self) -> String {
        let der = self.pair.public_key().as_der().expect("public key DER");
        to_pem("PUBLIC KEY", der.as_ref())
    }

    /// Sign `claims` into `header.payload.signature`. CPU-bound (~0.1 ms): not on the reactor.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "ES384".into(),
            typ: "JWT".into(),
            kid: self.kid.clone(),
        };
        let mut out = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header json"));
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims).expect("claims json"), &mut out);
        let sig = self.pair.sign(&self.rng, out.as_bytes()).expect("ES384 sign");
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut out);
        out
    }
}

/// The `kid` a token claims, without verifying anything (to pick the key to verify with).
pub fn peek_kid(token: &str) -> Result<String, TokenError> {
    let header = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed)?;
    let h: Header = serde_json::from_slice(&bytes).map_err(|_| TokenError::BadHeader)?;
    if h.alg != "ES384" || h.kid.is_empty() {
        return Err(TokenError::BadHeader);
    }
    Ok(h.kid)
}

/// Verify an ES384 token against the public keys IVS knows (ARN → PEM) and return its claims.
/// `now` (Unix seconds) is compared with `exp` with no leeway, like the Web SDK does.
pub fn verify(token: &str, keys: &BTreeMap<String, String>, now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let kid = peek_kid(token)?;
    let pem = keys.get(&kid).ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
    let spki = pem_body(pem).ok_or(TokenError::UnknownKey(kid))?;
    let point = spki_point(&spki).ok_or(TokenError::BadSignature)?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)?;
    let signed = &token[..h.len() + 1 + p.len()];
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| TokenError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|e| TokenError::BadClaims(e.to_string()))?;
    if claims.version != "1.0" {
        return Err(TokenError::BadClaims(format!("version {:?}", claims.version)));
    }
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Decode a token's claims without checking the signature (for display and for tests that then
/// verify separately).
pub fn decode_unverified(token: &str) -> Result<Claims, TokenError> {
    let p = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&payload).map_err(|e| TokenError::BadClaims(e.to_string()))
}

/// `-----BEGIN X-----` PEM text of `der`, 64 columns.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first PEM block of `pem`.
pub fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start..];
    let body_start = rest.find('\n')? + 1;
    let end = rest.find("-----END ")?;
    let b64: String = rest[body_start..end].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).ok()
}

/// The uncompressed EC point (0x04 || X || Y, 97 bytes for P-384) at the end of a P-384
/// SubjectPublicKeyInfo; `None` for anything else.
pub fn spki_point(spki: &[u8]) -> Option<&[u8]> {
    // SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 }, BIT STRING { 0x00, point } }
    const P384_SPKI_PREFIX: [u8; 23] = [
        0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
        0x00, 0x22, 0x03, 0x62, 0x00,
    ];
    let point = spki.strip_prefix(&P384_SPKI_PREFIX[..])?;
    (point.len() == 97 && point[0] == 0x04).then_some(point)
}

/// A random id of `len` characters from `[A-Za-z0-9]` (participant ids, session ids, key ids).
pub fn random_id(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A session id: the time it was drawn (8 characters, sortable), then 17 random ones
/// (`[A-Za-z0-9]`, 101 bits: still a bearer secret nobody guesses). Ids drawn later sort later,
/// on every node to the clocks' skew, so the state machine's session records (keyed by id) are
/// written at the end of its tree instead of all over it: sled's cost per insert on every node was
/// the largest part of a join that is not signing (see BENCHMARKS). It tells when the session
/// began, which the session's holder is shown anyway.
pub fn session_id(now_ms: i64) -> String {
    // ASCII order, so the prefix sorts as the number does; 62^8 ms is some 6,900 years.
    const SORTABLE: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let t = now_ms.max(0) as u64;
    let mut id: String = (0..8u32)
        .rev()
        .map(|place| char::from(SORTABLE[(t / 62u64.pow(place) % 62) as usize]))
        .collect();
    id.push_str(&random_id(17));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_sort_by_the_time_they_were_drawn_and_differ_within_one_millisecond() {
        let times = [0, 1, 61, 62, 1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000];
        let ids: Vec<String> = times.iter().map(|t| session_id(*t)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "drawn later, sorts later");
        for id in &ids {
            assert_eq!(id.len(), 25);
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        }
        assert!(ids[0].starts_with("00000000") && ids[2].starts_with("0000000z") && ids[3].starts_with("00000010"));
        let same_ms: std::collections::HashSet<String> = (0..1_000).map(|_| session_id(5)).collect();
        assert_eq!(
            same_ms.len(),
            1_000,
            "the random part tells apart ids of one millisecond"
        );
    }

    fn claims(now: i64) -> Claims {
        Claims {
            exp: now + 720 * 60,
            iat: now,
            jti: "abc123".into(),
            user_id: Some("alice".into()),
            resource: "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEfGhIjKl".into(),
            topic: "AbCdEfGhIjKl".into(),
            events_url: "wss://global.events.live-video.net".into(),
            whip_url: "https://abc.global-bm.whip.live-video.net".into(),
            capabilities: TokenCapabilities::VIEWER,
            attributes: BTreeMap::from([("seat".into(), "7".into())]),
            version: "1.0".into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_public_key_and_not_another() {
        let key = SigningKey::from_der(&SigningKey::generate_pkcs8(), "arn:key/1").unwrap();
        let other = SigningKey::from_der(&SigningKey::generate_pkcs8(), "arn:key/1").unwrap();
        let token = key.sign(&claims(1_000));
        let keys = BTreeMap::from([("arn:key/1".to_string(), key.public_key_pem())]);
        assert_eq!(verify(&token, &keys, 1_000).unwrap(), claims(1_000));
        let wrong = BTreeMap::from([("arn:key/1".to_string(), other.public_key_pem())]);
        assert_eq!(verify(&token, &wrong, 1_000), Err(TokenError::BadSignature));
        assert_eq!(
            verify(&token, &BTreeMap::new(), 1_000),
            Err(TokenError::UnknownKey("arn:key/1".into()))
        );
        assert_eq!(verify(&token, &keys, 1_000 + 720 * 60), Err(TokenError::Expired));
    }

    #[test]
    fn viewer_capabilities_carry_only_allow_subscribe() {
        let json = serde_json::to_value(TokenCapabilities::VIEWER).unwrap();
        assert_eq!(json, serde_json::json!({"allow_subscribe": true}));
        let json = serde_json::to_value(TokenCapabilities::HOST).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"allow_publish": true, "allow_subscribe": true})
        );
    }

    #[test]
    fn header_names_es384_and_the_key_arn() {
        let key = SigningKey::from_der(&SigningKey::generate_pkcs8(), "arn:aws:ivs:us-east-1:1:public-key/x").unwrap();
        let token = key.sign(&claims(5));
        let header = URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg":"ES384","typ":"JWT","kid":"arn:aws:ivs:us-east-1:1:public-key/x"})
        );
    }

    #[test]
    fn keys_round_trip_through_pem_and_pkcs8() {
        let key = SigningKey::from_der(&SigningKey::generate_pkcs8(), "k").unwrap();
        let pem = to_pem("PRIVATE KEY", key.pkcs8());
        let again = SigningKey::from_pem(&pem, "k").unwrap();
        assert_eq!(again.public_key_pem(), key.public_key_pem());
        assert!(spki_point(&pem_body(&key.public_key_pem()).unwrap()).is_some());
        assert!(matches!(
            SigningKey::from_pem("nonsense", "k"),
            Err(TokenError::BadKey(_))
        ));
    }
}
