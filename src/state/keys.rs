//! Key layout of the state machine's sled tree. One tree with prefixes, data and `last_applied`
//! together; every apply lands all or nothing through the redo record in a tree of its own
//! (`frozen`), so they can never disagree after a crash. Sessions are one record each
//! (`s/<id>`); their lookups by user, stage and lease are in memory (`sled_sessions`).

pub const APPLIED: &[u8] = b"m/applied";
pub const MEMBERSHIP: &[u8] = b"m/membership";
pub const POLICY: &[u8] = b"m/policy";
pub const SIGNING_KEY: &[u8] = b"m/signing_key";
pub const API_KEYS: &[u8] = b"m/api_keys";
/// In the `sm_redo` tree: the writes of the last apply, written before them (`frozen`).
pub const REDO: &[u8] = b"redo";

pub const BROADCAST: &str = "b/";
pub const STAGE: &str = "g/";
pub const SESSION: &str = "s/";

pub fn broadcast(id: &str) -> Vec<u8> {
    format!("{BROADCAST}{id}").into_bytes()
}

pub fn stage(id: &str) -> Vec<u8> {
    format!("{STAGE}{id}").into_bytes()
}

pub fn session(id: &str) -> Vec<u8> {
    format!("{SESSION}{id}").into_bytes()
}
