//! The replicated signing key at rest and in use. It is sealed under the key-encryption key
//! (`super::kek`) before it is proposed, so the Raft log, the state machine and snapshots only
//! hold sealed bytes; it is opened and parsed once after (every join signs with it, and parsing a
//! P-384 key per token would cost as much as the signature). [`SigningKeys::review`] says when a
//! stored record must be sealed again: still in clear (a data dir from before sealing) or sealed
//! under the previous key-encryption key. Proposing that is the bootstrap's job, not this one's.

use std::sync::{Arc, RwLock};

use base64::Engine;

use super::NodeError;
use super::kek::{Keks, OpenError, OpenedWith};
use crate::fleet::{PrivateKey, SigningKeyRecord};
use crate::ivs::token::SigningKey;
use crate::state::Shared;

/// Associated data of a sealed signing key: the purpose, versioned, and the key's ARN (known
/// before sealing: bootstrap imports the public key first). A sealed key copied into a record
/// for another ARN, or a value sealed for another purpose under the same KEK, does not open.
fn aad(arn: &str) -> Vec<u8> {
    [&b"stagefleet signing key v1\n"[..], arn.as_bytes()].concat()
}

/// Why a stored record has to be sealed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reseal {
    /// Written before keys were sealed.
    WasClear,
    /// Opens only with `previous_key_encryption_key_file`: a rotation in progress.
    UnderPreviousKek,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyAtRestError {
    #[error(
        "the token signing key in the replicated state does not open with {tried}: {why}. Start the node \
         with the key-encryption key it was sealed under in key_encryption_key_file or, while rotating to a \
         new one, the old one in previous_key_encryption_key_file"
    )]
    DoesNotOpen { tried: String, why: OpenError },
    #[error("the token signing key in the replicated state is not a P-384 PKCS#8 key: {0}")]
    BadKey(String),
}

struct Parsed {
    private: PrivateKey,
    key: Arc<SigningKey>,
}

pub struct SigningKeys {
    shared: Arc<Shared>,
    keks: Keks,
    parsed: RwLock<Option<Parsed>>,
}

impl SigningKeys {
    pub fn new(shared: Arc<Shared>, keks: Keks) -> Self {
        Self {
            shared,
            keks,
            parsed: RwLock::new(None),
        }
    }

    /// The record to replicate for `key`: sealed under the current KEK, bound to `arn`.
    pub fn seal(&self, key: &SigningKey, arn: &str) -> SigningKeyRecord {
        SigningKeyRecord {
            private: PrivateKey::Sealed(self.keks.current.seal(key.pkcs8(), &aad(arn))),
            arn: arn.to_string(),
        }
    }

    /// Open and parse `record`; says whether it needs sealing again.
    pub fn open(&self, record: &SigningKeyRecord) -> Result<(SigningKey, Option<Reseal>), KeyAtRestError> {
        let (mut der, reseal) = match &record.private {
            PrivateKey::Sealed(sealed) => match self.keks.open(sealed, &aad(&record.arn)) {
                Ok((der, OpenedWith::Current)) => (der, None),
                Ok((der, OpenedWith::Previous)) => (der, Some(Reseal::UnderPreviousKek)),
                Err(why) => {
                    return Err(KeyAtRestError::DoesNotOpen {
                        tried: self.keks.describe(),
                        why,
                    });
                }
            },
            PrivateKey::Clear(b64) => (
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| KeyAtRestError::BadKey(e.to_string()))?,
                Some(Reseal::WasClear),
            ),
        };
        let key = SigningKey::from_der(&der, record.arn.clone()).map_err(|e| KeyAtRestError::BadKey(e.to_string()));
        der.fill(0);
        Ok((key?, reseal))
    }

    /// The stored record sealed again under the current KEK, when it needs it (and why).
    /// `Ok(None)` when there is no record or it is sealed under the current KEK; an error when
    /// no configured KEK opens it: this node could not sign a single token.
    pub fn review(&self) -> Result<Option<(SigningKeyRecord, Reseal)>, KeyAtRestError> {
        let Some(record) = self.shared.view().fleet.signing_key.clone() else {
            return Ok(None);
        };
        let (key, reseal) = self.open(&record)?;
        Ok(reseal.map(|why| (self.seal(&key, &record.arn), why)))
    }

    /// The key tokens are signed with, as replicated now.
    pub fn current(&self) -> Result<Arc<SigningKey>, NodeError> {
        let record = {
            let core = self.shared.view();
            let record = core.fleet.signing_key.as_ref().ok_or(NodeError::NoSigningKey)?;
            if let Some(p) = self.parsed.read().expect("signing lock").as_ref()
                && p.key.kid() == record.arn
                && p.private == record.private
            {
                return Ok(p.key.clone());
            }
            record.clone()
        };
        let (key, _) = self.open(&record).map_err(|e| {
            tracing::error!(error = %e, "cannot sign tokens");
            NodeError::internal(e)
        })?;
        let key = Arc::new(key);
        *self.parsed.write().expect("signing lock") = Some(Parsed {
            private: record.private,
            key: key.clone(),
        });
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::kek::{Kek, SETTING};

    fn keks(current: u8, previous: Option<u8>) -> Keks {
        let kek = |b: u8, setting| Kek::from_bytes(&[b; 32], format!("/kek-{b}"), setting);
        Keks {
            current: kek(current, SETTING),
            previous: previous.map(|b| kek(b, crate::node::kek::PREVIOUS_SETTING)),
        }
    }

    /// Without a stored record: these tests hand records to `open` and `seal` directly.
    fn signing_keys(current: u8, previous: Option<u8>) -> SigningKeys {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let snapshots = tempfile::tempdir().unwrap();
        let sm = crate::state::machine::StateMachine::open(&db, snapshots.path().to_path_buf(), 1).unwrap();
        SigningKeys::new(sm.shared(), keks(current, previous))
    }

    fn new_key() -> SigningKey {
        SigningKey::from_der(&SigningKey::generate_pkcs8(), "").unwrap()
    }

    #[test]
    fn a_sealed_record_holds_no_key_bytes_and_opens_to_the_same_key() {
        let keys = signing_keys(1, None);
        let key = new_key();
        let record = keys.seal(&key, "arn:key/1");
        let json = serde_json::to_string(&record).unwrap();
        let clear = base64::engine::general_purpose::STANDARD.encode(key.pkcs8());
        assert!(
            json.starts_with(r#"{"sealed_pkcs8":"#) && !json.contains(&clear),
            "{json}"
        );
        assert!(
            !format!("{record:?}").contains(&clear[..20]),
            "Debug prints no key material"
        );
        let (opened, reseal) = keys.open(&record).unwrap();
        assert_eq!(opened.pkcs8(), key.pkcs8());
        assert_eq!(opened.kid(), "arn:key/1");
        assert_eq!(reseal, None);
    }

    #[test]
    fn a_sealed_key_moved_to_another_arn_does_not_open() {
        let keys = signing_keys(1, None);
        let mut record = keys.seal(&new_key(), "arn:key/1");
        record.arn = "arn:key/2".into();
        let err = keys.open(&record).unwrap_err().to_string();
        assert!(err.contains("key_encryption_key_file /kek-1"), "{err}");
    }

    #[test]
    fn records_written_before_sealing_still_parse_and_ask_to_be_sealed() {
        let key = new_key();
        let clear = base64::engine::general_purpose::STANDARD.encode(key.pkcs8());
        let old_json = format!(r#"{{"pkcs8_b64":"{clear}","arn":"arn:old"}}"#);
        let record: SigningKeyRecord = serde_json::from_str(&old_json).unwrap();
        assert_eq!(record.private, PrivateKey::Clear(clear.clone()));
        let (opened, reseal) = signing_keys(1, None).open(&record).unwrap();
        assert_eq!(opened.pkcs8(), key.pkcs8());
        assert_eq!(reseal, Some(Reseal::WasClear));
    }

    #[test]
    fn rotation_opens_with_the_previous_kek_and_without_either_names_both_settings() {
        let key = new_key();
        let record = signing_keys(1, None).seal(&key, "arn:k");
        let rotating = signing_keys(2, Some(1));
        let (opened, reseal) = rotating.open(&record).unwrap();
        assert_eq!((opened.pkcs8(), reseal), (key.pkcs8(), Some(Reseal::UnderPreviousKek)));
        let resealed = rotating.seal(&opened, "arn:k");
        assert_eq!(
            signing_keys(2, None).open(&resealed).unwrap().1,
            None,
            "the new KEK alone opens it"
        );

        let err = signing_keys(3, Some(2)).open(&record).unwrap_err().to_string();
        assert!(
            err.contains("key_encryption_key_file /kek-3 nor previous_key_encryption_key_file /kek-2"),
            "{err}"
        );
    }
}
