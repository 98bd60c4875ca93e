//! What both backends share: time as Unix milliseconds, generated ids,
//! integer range checks, the key check value, and sealing and opening a
//! credential's secret. Pure, apart from the random generator and the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::crypto::{Cipher, RecordKind};
use super::error::StoreError;
use super::{Credential, Secret};

/// The known plaintext sealed under the key when a store is created.
pub(super) const KEY_CHECK_PLAINTEXT: &[u8] = b"berth secret key check v1";
/// Its key in the `meta` table.
pub(super) const KEY_CHECK_META: &str = "key_check";

pub(super) fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(super) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(super) fn now_millis() -> i64 {
    millis(SystemTime::now())
}

/// A duration in milliseconds, saturating.
pub(super) fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// `PREFIX-` and 16 random hex digits.
pub(super) fn new_id(prefix: &str) -> Result<String, StoreError> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| StoreError::Crypto("the random generator failed"))?;
    Ok(format!("{prefix}-{}", hex::encode(bytes)))
}

/// A release number as stored (database integers are signed).
pub(super) fn release_number(release: u64) -> Result<i64, StoreError> {
    i64::try_from(release).map_err(|_| {
        StoreError::InvalidRequest(format!(
            "release number {release} is too large (at most {})",
            i64::MAX
        ))
    })
}

pub(super) fn job_run_id(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id)
        .map_err(|_| StoreError::InvalidRequest(format!("job run id {id} is too large")))
}

/// A stored integer that must not be negative.
pub(super) fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{what} is {value}, which is negative")))
}

/// A credential row before decryption.
pub(super) struct CredentialRow {
    pub id: String,
    pub name: String,
    pub registry: String,
    pub username: String,
    pub sealed: Vec<u8>,
    pub secret_version: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub(super) const CREDENTIAL_COLUMNS: &str =
    "id, name, registry, username, secret, secret_version, created_at, updated_at";

pub(super) const RELEASE_COLUMNS: &str = "app, number, digest, image, spec_json, triggered_by, \
     outcome, error, phases_json, started_at, finished_at";

pub(super) const JOB_RUN_COLUMNS: &str = "id, app, job, scheduled_at, triggered_by, state, owner, \
     host, container_id, digest, release, exit_code, reason, log_tail_json, started_at, finished_at";

pub(super) fn open_credential(
    cipher: &Cipher,
    row: CredentialRow,
) -> Result<Credential, StoreError> {
    let plain = cipher.open(RecordKind::RegistryCredential, &row.id, &row.sealed)?;
    let secret = String::from_utf8(plain).map_err(|_| StoreError::Decrypt {
        kind: RecordKind::RegistryCredential.human(),
        id: row.id.clone(),
    })?;
    Ok(Credential {
        id: row.id,
        name: row.name,
        registry: row.registry,
        username: row.username,
        secret: Secret::new(secret),
        secret_version: row.secret_version,
        created_at: from_millis(row.created_at),
        updated_at: from_millis(row.updated_at),
    })
}

pub(super) fn seal_credential(
    cipher: &Cipher,
    id: &str,
    secret: &Secret,
) -> Result<Vec<u8>, StoreError> {
    cipher.seal(
        RecordKind::RegistryCredential,
        id,
        secret.expose().as_bytes(),
    )
}

/// Checks a stored key check value against the key in use.
pub(super) fn verify_key_check(
    cipher: &Cipher,
    key: &super::SecretKey,
    stored: &[u8],
) -> Result<(), StoreError> {
    match cipher.open(RecordKind::KeyCheck, KEY_CHECK_META, stored) {
        Ok(plain) if plain == KEY_CHECK_PLAINTEXT => Ok(()),
        _ => Err(StoreError::KeyMismatch {
            key_source: key.source().clone(),
        }),
    }
}

/// A new key check value sealed under the key in use.
pub(super) fn new_key_check(cipher: &Cipher) -> Result<Vec<u8>, StoreError> {
    cipher.seal(RecordKind::KeyCheck, KEY_CHECK_META, KEY_CHECK_PLAINTEXT)
}

/// The phase timings as stored.
pub(super) fn phases_json(phases: &[(String, u64)]) -> Result<String, StoreError> {
    serde_json::to_string(phases)
        .map_err(|e| StoreError::InvalidRequest(format!("phase timings cannot be encoded: {e}")))
}

/// Whether a release whose stored outcome is `current` (`None`: not in the
/// journal) may be finished now: only a running one, once.
pub(super) fn check_finishable(
    app: &str,
    release: u64,
    current: Option<&str>,
) -> Result<(), StoreError> {
    match current {
        None => Err(StoreError::ReleaseNotFound {
            app: app.to_owned(),
            release,
        }),
        Some(running) if running == super::ReleaseOutcome::Running.as_str() => Ok(()),
        Some(done) => Err(StoreError::ReleaseFinished {
            app: app.to_owned(),
            release,
            outcome: done.to_owned(),
        }),
    }
}

/// [`super::Records::finish_release`]'s argument checks, before any I/O:
/// the release number as stored and the phases as JSON.
pub(super) fn finish_arguments(
    app: &str,
    release: u64,
    outcome: super::ReleaseOutcome,
    phases: &[(String, u64)],
) -> Result<(i64, String), StoreError> {
    if outcome == super::ReleaseOutcome::Running {
        return Err(StoreError::InvalidRequest(format!(
            "release {release} of app `{app}` cannot finish as `running`"
        )));
    }
    Ok((release_number(release)?, phases_json(phases)?))
}
