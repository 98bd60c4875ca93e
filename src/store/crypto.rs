//! Secrets at rest: the [`SecretKey`] (from `BERTH_SECRET_KEY`, from the
//! caller, or from `<state_dir>/secret.key`, generated on first use) and the
//! [`Cipher`] that seals record secrets with AES-256-GCM.
//!
//! Ciphertext layout, version 1: `0x01 ‖ nonce (12 random bytes) ‖
//! ciphertext ‖ tag (16 bytes)`. The additional authenticated data binds a
//! ciphertext to its record (`berth:<kind>\0<id>`), so a ciphertext copied
//! into another record fails to open instead of decrypting as the wrong
//! secret. The leading byte lets a later format (or key rotation) coexist.

use std::ffi::OsString;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::error::{StoreError, SECRET_KEY_VAR};

/// Length of a secret key in bytes.
pub const KEY_LEN: usize = 32;

/// The file name of the generated key inside the state directory.
pub const KEY_FILE_NAME: &str = "secret.key";

/// The first byte of every ciphertext this build writes.
const CIPHERTEXT_V1: u8 = 1;

/// Where a [`SecretKey`] came from; named in errors so the user knows which
/// key to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The `BERTH_SECRET_KEY` environment variable.
    Environment,
    /// The key file in the state directory.
    File(PathBuf),
    /// Passed in by the caller (for example a provider setting); the string
    /// names the setting.
    Given(String),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Environment => write!(f, "the key in use comes from {SECRET_KEY_VAR}"),
            KeySource::File(path) => {
                write!(
                    f,
                    "the key in use was read from {}; set {SECRET_KEY_VAR} to override it",
                    path.display()
                )
            }
            KeySource::Given(name) => write!(f, "the key in use comes from {name}"),
        }
    }
}

/// The 32-byte key that encrypts secrets at rest. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey {
    bytes: [u8; KEY_LEN],
    source: KeySource,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("bytes", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

impl SecretKey {
    /// Parses the standard base64 encoding of 32 bytes (surrounding
    /// whitespace allowed). Errors name `source`, never the value.
    pub fn from_base64(text: &str, source: KeySource) -> Result<SecretKey, StoreError> {
        let origin = match &source {
            KeySource::Environment => SECRET_KEY_VAR.to_owned(),
            KeySource::File(path) => path.display().to_string(),
            KeySource::Given(name) => name.clone(),
        };
        let malformed = |reason: String| StoreError::MalformedKey {
            origin: origin.clone(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(malformed("it is empty".to_owned()));
        }
        let decoded = STANDARD
            .decode(trimmed)
            .map_err(|_| malformed("it is not valid base64".to_owned()))?;
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            malformed(format!(
                "it decodes to {} bytes instead of {KEY_LEN}",
                decoded.len()
            ))
        })?;
        Ok(SecretKey { bytes, source })
    }

    /// Reads `BERTH_SECRET_KEY` through `env` (an injectable lookup, usually
    /// [`super::process_env`]). Unset or empty gives `Ok(None)`.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Option<SecretKey>, StoreError> {
        let Some(value) = env(SECRET_KEY_VAR) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(None);
        }
        let Some(text) = value.to_str() else {
            return Err(StoreError::MalformedKey {
                origin: SECRET_KEY_VAR.to_owned(),
                reason: "it is not valid UTF-8".to_owned(),
            });
        };
        SecretKey::from_base64(text, KeySource::Environment).map(Some)
    }

    /// A fresh random key.
    pub fn generate(source: KeySource) -> Result<SecretKey, StoreError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| StoreError::Crypto("the random generator failed"))?;
        Ok(SecretKey { bytes, source })
    }

    /// The key as standard base64, the form `BERTH_SECRET_KEY` takes. Handle
    /// the result as a secret.
    pub fn expose_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// Where this key came from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }
}

/// Reads the key file, `Ok(None)` when it does not exist.
pub(crate) fn read_key_file(path: &Path) -> Result<Option<SecretKey>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) if err.kind() == ErrorKind::InvalidData => {
            return Err(StoreError::MalformedKeyFile {
                path: path.to_owned(),
                reason: "it is not text".to_owned(),
            })
        }
        Err(source) => {
            return Err(StoreError::StateDir {
                path: path.to_owned(),
                source,
            })
        }
    };
    match SecretKey::from_base64(&text, KeySource::File(path.to_owned())) {
        Ok(key) => Ok(Some(key)),
        Err(StoreError::MalformedKey { reason, .. }) => Err(StoreError::MalformedKeyFile {
            path: path.to_owned(),
            reason,
        }),
        Err(other) => Err(other),
    }
}

/// Creates the key file with a new random key, readable only by its owner.
///
/// The key is written to a temporary file (mode 0600) and then hard-linked
/// into place: linking fails when the name exists, so of several processes
/// starting at once exactly one key wins, and everyone else reads that one.
/// A reader never sees a half-written key file.
pub(crate) fn create_key_file(path: &Path) -> Result<SecretKey, StoreError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::StateDir { path, source }
    };
    let key = SecretKey::generate(KeySource::File(path.to_owned()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix)
        .map_err(|_| StoreError::Crypto("the random generator failed"))?;
    let temp = dir.join(format!(
        ".{KEY_FILE_NAME}.{}.{}.tmp",
        std::process::id(),
        hex::encode(suffix)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(format!("{}\n", key.expose_base64()).as_bytes())?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io_err(&temp)(source));
    }
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            // Make the new name durable before anything is encrypted under it.
            if let Ok(dir_handle) = std::fs::File::open(dir) {
                let _ = dir_handle.sync_all();
            }
            Ok(key)
        }
        Err(err) if err.kind() == ErrorKind::AlreadyExists => match read_key_file(path)? {
            Some(winner) => Ok(winner),
            None => Err(io_err(path)(std::io::Error::new(
                ErrorKind::NotFound,
                "the key file vanished while it was being created",
            ))),
        },
        Err(source) => Err(io_err(path)(source)),
    }
}

/// What a sealed secret belongs to; part of the authenticated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// The known plaintext that proves the key matches the database.
    KeyCheck,
    /// A registry credential's token.
    RegistryCredential,
    /// An app's secret environment values.
    AppSecrets,
}

impl RecordKind {
    fn label(self) -> &'static str {
        match self {
            RecordKind::KeyCheck => "key_check",
            RecordKind::RegistryCredential => "registry_credential",
            RecordKind::AppSecrets => "app_secrets",
        }
    }

    /// How errors name this kind of record.
    pub(crate) fn human(self) -> &'static str {
        match self {
            RecordKind::KeyCheck => "key check",
            RecordKind::RegistryCredential => "registry credential",
            RecordKind::AppSecrets => "app's secrets",
        }
    }
}

fn aad(kind: RecordKind, id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(8 + kind.label().len() + id.len());
    aad.extend_from_slice(b"berth:");
    aad.extend_from_slice(kind.label().as_bytes());
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    aad
}

/// Seals and opens record secrets under one [`SecretKey`].
pub(crate) struct Cipher {
    key: LessSafeKey,
}

impl Cipher {
    pub(crate) fn new(key: &SecretKey) -> Result<Cipher, StoreError> {
        let unbound = UnboundKey::new(&AES_256_GCM, &key.bytes)
            .map_err(|_| StoreError::Crypto("the cipher rejected the key"))?;
        Ok(Cipher {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `plaintext` for record `kind`/`id` with a fresh random nonce.
    pub(crate) fn seal(
        &self,
        kind: RecordKind,
        id: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| StoreError::Crypto("the random generator failed"))?;
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(kind, id)),
                &mut body,
            )
            .map_err(|_| StoreError::Crypto("encryption failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(CIPHERTEXT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts what [`Cipher::seal`] produced for the same `kind`/`id`.
    pub(crate) fn open(
        &self,
        kind: RecordKind,
        id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let fail = || StoreError::Decrypt {
            kind: kind.human(),
            id: id.to_owned(),
        };
        let (&version, rest) = sealed.split_first().ok_or_else(fail)?;
        if version != CIPHERTEXT_V1 || rest.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(kind, id)), &mut body)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate(KeySource::Given("test".into())).unwrap()
    }

    #[test]
    fn round_trip() {
        let cipher = Cipher::new(&key()).unwrap();
        let sealed = cipher
            .seal(RecordKind::RegistryCredential, "rc-1", b"hunter2")
            .unwrap();
        assert_eq!(sealed[0], CIPHERTEXT_V1);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 7 + 16);
        let plain = cipher
            .open(RecordKind::RegistryCredential, "rc-1", &sealed)
            .unwrap();
        assert_eq!(plain, b"hunter2");
        // Random nonces: the same plaintext seals differently each time.
        let again = cipher
            .seal(RecordKind::RegistryCredential, "rc-1", b"hunter2")
            .unwrap();
        assert_ne!(sealed, again);
    }

    #[test]
    fn ciphertext_is_bound_to_its_record() {
        let cipher = Cipher::new(&key()).unwrap();
        let sealed = cipher
            .seal(RecordKind::RegistryCredential, "rc-1", b"hunter2")
            .unwrap();
        let err = cipher
            .open(RecordKind::RegistryCredential, "rc-2", &sealed)
            .unwrap_err();
        assert!(matches!(err, StoreError::Decrypt { ref id, .. } if id == "rc-2"));
        assert!(cipher.open(RecordKind::KeyCheck, "rc-1", &sealed).is_err());
    }

    #[test]
    fn wrong_key_tampering_and_truncation_fail_cleanly() {
        let sealed = Cipher::new(&key())
            .unwrap()
            .seal(RecordKind::RegistryCredential, "rc-1", b"hunter2")
            .unwrap();
        let other = Cipher::new(&key()).unwrap();
        assert!(other
            .open(RecordKind::RegistryCredential, "rc-1", &sealed)
            .is_err());
        let cipher = Cipher::new(&key()).unwrap();
        let mut flipped = cipher
            .seal(RecordKind::RegistryCredential, "rc-1", b"hunter2")
            .unwrap();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        for bad in [
            &flipped[..],
            &[][..],
            &[CIPHERTEXT_V1, 1, 2][..],
            &[9u8; 40][..],
        ] {
            assert!(cipher
                .open(RecordKind::RegistryCredential, "rc-1", bad)
                .is_err());
        }
    }

    #[test]
    fn malformed_keys_name_the_variable_and_the_expected_form() {
        let env =
            |value: &'static str| move |name: &str| (name == SECRET_KEY_VAR).then(|| value.into());
        for value in ["not base64!!", "c2hvcnQ=", "   \t"] {
            let result = SecretKey::from_env(&env(value));
            if value.trim().is_empty() {
                // Whitespace only is rejected, an empty variable means unset.
                let err = result.unwrap_err().to_string();
                assert!(err.contains("it is empty"), "{err}");
                continue;
            }
            let err = result.unwrap_err().to_string();
            assert!(
                err.starts_with("BERTH_SECRET_KEY is not a valid secret key"),
                "{err}"
            );
            assert!(err.contains("base64"), "{err}");
            assert!(err.contains("32"), "{err}");
            assert!(!err.contains(value), "the error echoes the value: {err}");
        }
        assert!(SecretKey::from_env(&env("")).unwrap().is_none());
        assert!(SecretKey::from_env(&|_: &str| None).unwrap().is_none());
        let good = key().expose_base64();
        let parsed = SecretKey::from_env(&|_: &str| Some(good.clone().into()))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.source(), &KeySource::Environment);
        assert_eq!(parsed.expose_base64(), good);
    }

    #[test]
    fn debug_redacts_the_key() {
        let key = key();
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains(&key.expose_base64()));
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        assert!(read_key_file(&path).unwrap().is_none());
        let created = create_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second creator (another process that lost the race) gets the
        // existing key, not a new one.
        let second = create_key_file(&path).unwrap();
        assert_eq!(second.expose_base64(), created.expose_base64());
        let read = read_key_file(&path).unwrap().unwrap();
        assert_eq!(read.expose_base64(), created.expose_base64());
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE_NAME)]);
    }

    #[test]
    fn damaged_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        std::fs::write(&path, "garbage").unwrap();
        let err = read_key_file(&path).unwrap_err();
        assert!(matches!(err, StoreError::MalformedKeyFile { .. }), "{err}");
        assert!(err.to_string().contains("BERTH_SECRET_KEY"));
    }
}
