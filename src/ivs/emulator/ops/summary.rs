//! `GET /_emulator/state`: what tests and operators want to see at a glance — per-stage
//! publisher/subscriber counts, keys, replications. Not an IVS shape.

use serde_json::{Value, json};

use crate::ivs::emulator::state::State;

pub fn summary(state: &State) -> Value {
    let stages: Vec<Value> = state
        .stages
        .values()
        .map(|s| {
            let (publishers, subscribers) = s.counts();
            json!({
                "arn": s.arn,
                "name": s.name,
                "tags": s.tags,
                "activeSessionId": s.active_session_id(),
                "publishers": publishers,
                "subscribers": subscribers,
            })
        })
        .collect();
    let keys: Vec<Value> = state
        .keys
        .values()
        .map(|k| json!({"arn": k.arn, "name": k.name, "fingerprint": k.fingerprint, "publicKeyMaterial": k.pem}))
        .collect();
    json!({"stages": stages, "publicKeys": keys, "replications": state.replications})
}
