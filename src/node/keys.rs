//! API keys: `sf_<id>_<secret>`. Only the SHA-256 of the secret is replicated; the key itself
//! is shown once, when created.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};

use crate::fleet::{ApiKeyRecord, Fleet, Millis, Role};
use crate::ivs::token::random_id;

/// A freshly created key: the record to replicate and the secret text to show once.
pub fn generate(name: &str, role: Role, now: Millis) -> (ApiKeyRecord, String) {
    let id = random_id(10);
    let secret = random_id(40);
    let record = ApiKeyRecord {
        id: id.clone(),
        name: name.to_string(),
        role,
        secret_sha256: sha256_hex(&secret),
        created_at: now,
    };
    (record, format!("sf_{id}_{secret}"))
}

fn sha256_hex(s: &str) -> String {
    digest(&SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key record `presented` proves, if any.
pub fn authenticate<'a>(fleet: &'a Fleet, presented: &str) -> Option<&'a ApiKeyRecord> {
    let rest = presented.strip_prefix("sf_")?;
    let (id, secret) = rest.split_once('_')?;
    let record = fleet.api_keys.get(id)?;
    verify_slices_are_equal(record.secret_sha256.as_bytes(), sha256_hex(secret).as_bytes()).ok()?;
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_authenticates_and_a_tampered_one_does_not() {
        let (record, key) = generate("ops", Role::Admin, 0);
        let mut fleet = Fleet::default();
        fleet.api_keys.insert(record.id.clone(), record.clone());
        assert_eq!(authenticate(&fleet, &key), Some(&record));
        assert!(!record.secret_sha256.contains(&key[14..]), "the secret is not stored");
        let mut tampered = key.clone();
        tampered.push('x');
        assert_eq!(authenticate(&fleet, &tampered), None);
        assert_eq!(authenticate(&fleet, "sf_nope_nope"), None);
        assert_eq!(authenticate(&fleet, "garbage"), None);
    }
}
