//! Key layout of the state machine's sled tree. One tree with prefixes, so every apply is one
//! atomic `Batch`: data and `last_applied` can never disagree after a crash.

pub const APPLIED: &[u8] = b"m/applied";
pub const MEMBERSHIP: &[u8] = b"m/membership";
pub const POLICY: &[u8] = b"m/policy";
pub const SIGNING_KEY: &[u8] = b"m/signing_key";
pub const API_KEYS: &[u8] = b"m/api_keys";

pub const BROADCAST: &str = "b/";
pub const STAGE: &str = "g/";
pub const SESSION: &str = "s/";
pub const SESSION_BY_USER: &str = "u/";
pub const SESSION_BY_STAGE: &str = "x/";
pub const SESSION_BY_LEASE: &[u8] = b"l/";

pub fn broadcast(id: &str) -> Vec<u8> {
    format!("{BROADCAST}{id}").into_bytes()
}

pub fn stage(id: &str) -> Vec<u8> {
    format!("{STAGE}{id}").into_bytes()
}

pub fn session(id: &str) -> Vec<u8> {
    format!("{SESSION}{id}").into_bytes()
}

pub fn session_by_user(broadcast_id: &str, user_id: &str) -> Vec<u8> {
    format!("{SESSION_BY_USER}{broadcast_id}\0{user_id}").into_bytes()
}

pub fn stage_sessions_prefix(stage_id: &str) -> Vec<u8> {
    format!("{SESSION_BY_STAGE}{stage_id}\0").into_bytes()
}

pub fn session_by_stage(stage_id: &str, session_id: &str) -> Vec<u8> {
    let mut k = stage_sessions_prefix(stage_id);
    k.extend_from_slice(session_id.as_bytes());
    k
}

/// Big-endian lease time first, so a range scan walks sessions in expiry order.
pub fn session_by_lease(lease_until: i64, session_id: &str) -> Vec<u8> {
    let mut k = SESSION_BY_LEASE.to_vec();
    k.extend_from_slice(&(lease_until.max(0) as u64).to_be_bytes());
    k.extend_from_slice(session_id.as_bytes());
    k
}

pub fn lease_bound(lease_until: i64) -> Vec<u8> {
    let mut k = SESSION_BY_LEASE.to_vec();
    k.extend_from_slice(&(lease_until.max(0) as u64).to_be_bytes());
    k
}
