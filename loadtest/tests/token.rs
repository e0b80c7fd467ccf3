//! Token checks accept the server's shape and reject a token for another stage, a publish
//! grant, or a signature by another key.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use loadtest::calibrate::{fresh_key, sign_jws};
use loadtest::token::{Expected, Keys, Signature, check, kid};
use serde_json::{Value, json};

const KID: &str = "arn:aws:ivs:us-east-1:123456789012:public-key/k1";

fn stage_a() -> Expected {
    Expected {
        arn: "arn:aws:ivs:us-east-1:123456789012:stage/AAAA".into(),
        ivs_stage_id: "AAAA".into(),
        events_url: "wss://events.example".into(),
        whip_url: "https://whip.example".into(),
        participant_id: "p1".into(),
    }
}

fn claims_for(e: &Expected) -> Value {
    json!({
        "exp": 2000, "iat": 1000, "jti": e.participant_id, "resource": e.arn,
        "topic": e.ivs_stage_id, "events_url": e.events_url, "whip_url": e.whip_url,
        "capabilities": { "allow_subscribe": true }, "attributes": {}, "version": "1.0",
    })
}

fn keys_of(key: &aws_lc_rs::signature::EcdsaKeyPair) -> Keys {
    let der = key.public_key().as_der().expect("der");
    Keys::from([(KID.to_string(), der.as_ref().to_vec())])
}

#[test]
fn a_token_for_its_stage_verifies() {
    let key = fresh_key();
    let token = sign_jws(&key, KID, &claims_for(&stage_a()));
    assert_eq!(kid(&token).unwrap(), KID);
    assert_eq!(check(&token, &stage_a(), &keys_of(&key)), Ok(Signature::Valid));
    assert_eq!(check(&token, &stage_a(), &Keys::new()), Ok(Signature::Unchecked));
}

#[test]
fn a_token_for_another_stage_is_rejected() {
    let key = fresh_key();
    let mut other = stage_a();
    other.arn = "arn:aws:ivs:us-east-1:123456789012:stage/BBBB".into();
    let token = sign_jws(&key, KID, &claims_for(&other));
    let err = check(&token, &stage_a(), &keys_of(&key)).unwrap_err();
    assert!(err.contains("resource"), "{err}");
}

#[test]
fn a_publish_grant_is_rejected() {
    let key = fresh_key();
    let mut claims = claims_for(&stage_a());
    claims["capabilities"] = json!({ "allow_publish": true, "allow_subscribe": true });
    let err = check(&sign_jws(&key, KID, &claims), &stage_a(), &Keys::new()).unwrap_err();
    assert!(err.contains("capabilities"), "{err}");
}

#[test]
fn a_signature_by_another_key_is_rejected() {
    let token = sign_jws(&fresh_key(), KID, &claims_for(&stage_a()));
    let err = check(&token, &stage_a(), &keys_of(&fresh_key())).unwrap_err();
    assert!(err.contains("signature"), "{err}");
}

#[test]
fn expiry_must_follow_issue() {
    let mut claims = claims_for(&stage_a());
    claims["exp"] = json!(1000);
    let err = check(&sign_jws(&fresh_key(), KID, &claims), &stage_a(), &Keys::new()).unwrap_err();
    assert!(err.contains("exp"), "{err}");
}

#[test]
fn garbage_is_not_a_token() {
    assert!(check("abc", &stage_a(), &Keys::new()).is_err());
    assert!(check("a.b.c", &stage_a(), &Keys::new()).is_err());
}
