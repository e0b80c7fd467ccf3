//! The replicated signing key, parsed once: every join signs with it, and parsing a P-384 key
//! per token would cost as much as the signature.

use std::sync::{Arc, RwLock};

use base64::Engine;

use super::NodeError;
use crate::ivs::token::SigningKey;
use crate::state::machine::Shared;

pub struct SigningKeys {
    shared: Arc<Shared>,
    parsed: RwLock<Option<Arc<SigningKey>>>,
}

impl SigningKeys {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            parsed: RwLock::new(None),
        }
    }

    /// The key tokens are signed with, as replicated now.
    pub fn current(&self) -> Result<Arc<SigningKey>, NodeError> {
        let (pkcs8_b64, arn) = {
            let core = self.shared.read();
            let record = core.fleet.signing_key.as_ref().ok_or(NodeError::NoSigningKey)?;
            if let Some(k) = self.parsed.read().expect("signing lock").as_ref() {
                if k.kid() == record.arn {
                    return Ok(k.clone());
                }
            }
            (record.pkcs8_b64.clone(), record.arn.clone())
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(&pkcs8_b64)
            .map_err(NodeError::internal)?;
        let key = Arc::new(SigningKey::from_der(&der, arn).map_err(NodeError::internal)?);
        *self.parsed.write().expect("signing lock") = Some(key.clone());
        Ok(key)
    }
}
