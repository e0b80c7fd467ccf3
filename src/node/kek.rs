//! The key-encryption key (KEK): 32 random bytes, base64 in a file, that seal what the node must
//! replicate but not show (the token signing key) with AES-256-GCM. Sealing and opening happen at
//! the edge, before a command is proposed and after a record is read; the state machine, the Raft
//! log and snapshots only ever hold sealed bytes.
//!
//! This module knows files and ciphers, not what it seals: callers bind the purpose through the
//! associated data (`crate::node::signing` adds "stagefleet signing key v1" and the key's ARN).

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A KEK is this many bytes (after base64 decoding).
pub const KEY_LEN: usize = 32;
/// The setting that names the current KEK file; error messages use it.
pub const SETTING: &str = "key_encryption_key_file";
/// The setting that names the previous KEK file, while rotating.
pub const PREVIOUS_SETTING: &str = "previous_key_encryption_key_file";

/// One key-encryption key and where it came from (for messages; the bytes are not kept).
pub struct Kek {
    key: RandomizedNonceKey,
    path: PathBuf,
    setting: &'static str,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.describe())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("{setting} {}: {error}", path.display())]
    Io {
        setting: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{setting} {}: {why}", path.display())]
    Invalid {
        setting: &'static str,
        path: PathBuf,
        why: String,
    },
}

/// Why sealed bytes did not open. Deliberately coarse: AES-GCM cannot tell a wrong key from
/// tampered bytes or other associated data, and neither should a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the sealed value is not base64 of a nonce, ciphertext and tag")]
    Malformed,
    #[error("it was sealed under another key-encryption key (or for another purpose, or altered)")]
    Rejected,
}

impl Kek {
    /// A KEK from raw bytes (tests, and after reading a file).
    pub fn from_bytes(bytes: &[u8; KEY_LEN], path: impl Into<PathBuf>, setting: &'static str) -> Self {
        Self {
            key: RandomizedNonceKey::new(&AES_256_GCM, bytes).expect("32 bytes are an AES-256 key"),
            path: path.into(),
            setting,
        }
    }

    /// Read the KEK in `path`: base64 of exactly 32 bytes (surrounding whitespace ignored). Warns
    /// when the file is readable by anyone but its owner.
    pub fn load(path: &Path, setting: &'static str) -> Result<Self, KekError> {
        let io_err = |error| KekError::Io {
            setting,
            path: path.to_path_buf(),
            error,
        };
        let invalid = |why: String| KekError::Invalid {
            setting,
            path: path.to_path_buf(),
            why,
        };
        let mode = std::fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:04o}"),
                "the {setting} is readable by users other than its owner; chmod 600 it"
            );
        }
        let text = std::fs::read_to_string(path).map_err(io_err)?;
        let mut bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| invalid(format!("not base64 ({e}); {}", HOW_TO_MAKE)))?;
        let result = match <[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
            Ok(raw) => {
                let mut raw = raw;
                let kek = Self::from_bytes(&raw, path, setting);
                raw.fill(0);
                Ok(kek)
            }
            Err(_) => Err(invalid(format!(
                "holds {} bytes after base64 decoding; a key-encryption key is exactly {KEY_LEN} ({HOW_TO_MAKE})",
                bytes.len()
            ))),
        };
        // Best effort: the heap copy of the key does not outlive this call.
        bytes.fill(0);
        result
    }

    /// Write a new random KEK to `path` (which must not exist) with mode 0600, and return it.
    pub fn generate(path: &Path, setting: &'static str) -> Result<Self, KekError> {
        let io_err = |error| KekError::Io {
            setting,
            path: path.to_path_buf(),
            error,
        };
        let mut raw = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| io_err(io::Error::other("no system randomness")))?;
        let text = format!("{}\n", STANDARD.encode(raw));
        // Written under a temporary name and renamed: a crash never leaves a short key behind
        // that would refuse the next start.
        let tmp = path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            // A link, not a rename: it fails if `path` exists, so a key is never clobbered.
            std::fs::hard_link(&tmp, path)
        };
        let written = write();
        let _ = std::fs::remove_file(&tmp);
        written.map_err(io_err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The new name is durable before anything is sealed under it.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        }
        let kek = Self::from_bytes(&raw, path, setting);
        raw.fill(0);
        Ok(kek)
    }

    /// "key_encryption_key_file /path", for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.setting, self.path.display())
    }

    /// Seal `plaintext` under a fresh random 96-bit nonce: base64 of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let mut in_out = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(aad), &mut in_out)
            .expect("AES-GCM sealing a short message");
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&in_out);
        STANDARD.encode(out)
    }

    /// Open what [`Kek::seal`] made with the same key and associated data.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(OpenError::Malformed);
        }
        let (nonce, body) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut in_out = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| OpenError::Rejected)?;
        Ok(plain.to_vec())
    }
}

const HOW_TO_MAKE: &str = "make one with `head -c 32 /dev/urandom | base64`";

/// Which key opened a sealed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedWith {
    Current,
    Previous,
}

/// The current KEK, which seals, and while rotating the previous one, which only opens.
#[derive(Debug)]
pub struct Keks {
    pub current: Kek,
    pub previous: Option<Kek>,
}

impl Keks {
    /// Load the configured KEKs. `current` is `key_encryption_key_file`, or `default_path` when
    /// that is empty; only the default file is generated when missing, and only if
    /// `may_generate` (nothing sealed under a KEK exists yet). A configured file must exist: a
    /// typo must not silently become a new key.
    pub fn load(configured: &Path, default_path: &Path, previous: &Path, may_generate: bool) -> Result<Self, KekError> {
        let current = if !configured.as_os_str().is_empty() {
            Kek::load(configured, SETTING)?
        } else if default_path.exists() {
            Kek::load(default_path, SETTING)?
        } else if !may_generate {
            return Err(KekError::Invalid {
                setting: SETTING,
                path: default_path.to_path_buf(),
                why: "missing, but the signing key in the replicated state is sealed under a key-encryption key: \
                      restore the file (or set key_encryption_key_file to where it is)"
                    .into(),
            });
        } else {
            let kek = Kek::generate(default_path, SETTING)?;
            tracing::info!(file = %default_path.display(), "generated the key-encryption key; every node of a cluster needs this same file");
            kek
        };
        let previous = if previous.as_os_str().is_empty() {
            None
        } else {
            Some(Kek::load(previous, PREVIOUS_SETTING)?)
        };
        Ok(Self { current, previous })
    }

    /// Open with the current KEK, else the previous one.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<(Vec<u8>, OpenedWith), OpenError> {
        let first = match self.current.open(sealed, aad) {
            Ok(plain) => return Ok((plain, OpenedWith::Current)),
            Err(e) => e,
        };
        match &self.previous {
            Some(prev) => prev.open(sealed, aad).map(|p| (p, OpenedWith::Previous)),
            None => Err(first),
        }
    }

    /// "key_encryption_key_file /a" or "key_encryption_key_file /a nor previous_key_encryption_key_file /b".
    pub fn describe(&self) -> String {
        match &self.previous {
            Some(p) => format!("{} nor {}", self.current.describe(), p.describe()),
            None => self.current.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::from_bytes(&[byte; KEY_LEN], format!("/kek-{byte}"), SETTING)
    }

    #[test]
    fn what_is_sealed_opens_with_the_same_key_and_associated_data_only() {
        let k = kek(1);
        let sealed = k.seal(b"the secret", b"purpose v1");
        assert_eq!(k.open(&sealed, b"purpose v1").unwrap(), b"the secret");
        assert!(!sealed.contains(&STANDARD.encode(b"the secret")));
        assert_eq!(
            kek(2).open(&sealed, b"purpose v1"),
            Err(OpenError::Rejected),
            "wrong key"
        );
        assert_eq!(k.open(&sealed, b"purpose v2"), Err(OpenError::Rejected), "other AAD");
        assert_eq!(k.open(&sealed, b""), Err(OpenError::Rejected), "no AAD");
    }

    #[test]
    fn any_altered_byte_of_nonce_ciphertext_or_tag_is_rejected() {
        let k = kek(1);
        let bytes = STANDARD.decode(k.seal(b"the secret", b"aad")).unwrap();
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 0x01;
            assert_eq!(
                k.open(&STANDARD.encode(&altered), b"aad"),
                Err(OpenError::Rejected),
                "byte {i}"
            );
        }
        assert_eq!(
            k.open(&STANDARD.encode(&bytes[..bytes.len() - 1]), b"aad"),
            Err(OpenError::Rejected)
        );
        assert_eq!(
            k.open(&STANDARD.encode(&bytes[..20]), b"aad"),
            Err(OpenError::Malformed)
        );
        assert_eq!(k.open("not base64!", b"aad"), Err(OpenError::Malformed));
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let k = kek(1);
        let a = STANDARD.decode(k.seal(b"same", b"aad")).unwrap();
        let b = STANDARD.decode(k.seal(b"same", b"aad")).unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn the_previous_key_opens_what_the_current_one_cannot() {
        let old = kek(1);
        let sealed = old.seal(b"k", b"aad");
        let rotating = Keks {
            current: kek(2),
            previous: Some(old),
        };
        assert_eq!(
            rotating.open(&sealed, b"aad"),
            Ok((b"k".to_vec(), OpenedWith::Previous))
        );
        let fresh = rotating.current.seal(b"k", b"aad");
        assert_eq!(rotating.open(&fresh, b"aad"), Ok((b"k".to_vec(), OpenedWith::Current)));
        let without = Keks {
            current: kek(2),
            previous: None,
        };
        assert_eq!(without.open(&sealed, b"aad"), Err(OpenError::Rejected));
    }

    #[test]
    fn a_generated_file_is_private_and_loads_back_and_a_short_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let generated = Kek::generate(&path, SETTING).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = generated.seal(b"x", b"");
        assert_eq!(Kek::load(&path, SETTING).unwrap().open(&sealed, b"").unwrap(), b"x");
        assert!(
            Kek::generate(&path, SETTING).is_err(),
            "an existing key is never overwritten"
        );

        let short = dir.path().join("short");
        std::fs::write(&short, STANDARD.encode([7u8; 16])).unwrap();
        let err = Kek::load(&short, PREVIOUS_SETTING).unwrap_err().to_string();
        assert!(
            err.contains("previous_key_encryption_key_file") && err.contains("short"),
            "{err}"
        );
        assert!(err.contains("holds 16 bytes") && err.contains("exactly 32"), "{err}");
        std::fs::write(&short, "not base64 at all").unwrap();
        assert!(
            Kek::load(&short, SETTING)
                .unwrap_err()
                .to_string()
                .contains("not base64")
        );
    }

    #[test]
    fn only_the_default_file_is_generated_and_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("key-encryption-key");
        let none = Path::new("");
        let err = Keks::load(none, &default, none, false).unwrap_err().to_string();
        assert!(
            err.contains("key_encryption_key_file") && err.contains("missing"),
            "{err}"
        );
        assert!(!default.exists());
        Keks::load(none, &default, none, true).unwrap();
        assert!(default.exists());
        let configured = dir.path().join("typo");
        let err = Keks::load(&configured, &default, none, true).unwrap_err().to_string();
        assert!(err.contains("key_encryption_key_file") && err.contains("typo"), "{err}");
        assert!(!configured.exists(), "a configured file is never generated");
    }
}
