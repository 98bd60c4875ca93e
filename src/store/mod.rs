//! The engine's records: registry credentials (secrets encrypted at rest),
//! app records, the releases journal and deploy leases, kept in SQLite in
//! the state directory.
//!
//! Layout:
//! - [`paths`]: where the state directory is (explicit setting >
//!   `BERTH_STATE_DIR` > `$XDG_DATA_HOME/berth` > `$HOME/.local/share/berth`),
//!   decided by a pure function over an injectable environment lookup.
//! - [`crypto`]: the [`SecretKey`] (`BERTH_SECRET_KEY`, or
//!   `<state_dir>/secret.key` generated on first use, mode 0600) and the
//!   AES-256-GCM sealing of record secrets, bound to their record.
//! - `migrations`: the schema, versioned with `PRAGMA user_version`.
//! - [`sqlite`]: [`SqliteStore`], the embedded backend (`berth.db`, WAL,
//!   busy timeout, one transaction per multi-step change).
//!
//! The seam for other backends is the [`Records`] trait: a narrow, synchronous
//! set of record operations with no SQLite types in it. A PostgreSQL backend
//! for teams implements `Records`; nothing above this module changes.
//! Async code uses [`Store`], a cheap-to-clone handle that runs every
//! operation of any `Records` on `tokio::task::spawn_blocking`, so SQLite I/O
//! (and waiting for another process's write lock, bounded by the busy timeout)
//! never blocks the runtime. Synchronous code (tests, the CLI's one-shot
//! commands) may call [`SqliteStore`] directly.
//!
//! Integrity: a record is written by one SQLite transaction or not at all
//! (WAL with `synchronous = FULL`), so killing a process mid-write loses at
//! most the write in flight and never leaves a half record. Several processes
//! (the provider, later `berth serve`) may use one state directory at once.
//!
//! The releases journal (migration 2) records every deploy of an app: the
//! pinned image, the spec (secret values already removed by the caller), who
//! triggered it, the outcome with per-phase timings. Deploy leases (also
//! migration 2) serialize deploys of one app across processes: a lease has
//! an owner ([`lease_owner`]) and an expiry, is taken inside an immediate
//! transaction (free, expired, or already ours), and is therefore never
//! stuck: a crashed owner's lease simply runs out.
//!
//! Migration 5 keeps each app's secret values sealed in its record (bound
//! to the app's name), for deploys without terraform, and the deploy hooks,
//! by the SHA-256 of their key only.

mod common;
pub mod copy;
pub mod crypto;
mod error;
pub mod jobs;
pub mod location;
mod migrations;
pub mod paths;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod conformance;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::registry::{KnownImage, Secret};
pub use copy::{StoreDump, StoreInfo};
pub use crypto::{KeySource, SecretKey};
pub use error::{DatabaseError, DatabaseErrorKind, StoreError, SECRET_KEY_VAR};
pub use jobs::{JobRunEnd, JobRunRecord, JobRunState, NewJobRun};
pub use location::{StoreLocation, STORE_VAR};
pub use migrations::SCHEMA_VERSION;
pub use paths::{resolve_state_dir, STATE_DIR_VAR};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The environment lookup of the running process, for [`StoreOptions::from_env`]
/// and [`resolve_state_dir`]. Tests pass their own closure instead.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The state directory; created (mode 0700) when missing.
    pub state_dir: PathBuf,
    /// The key for secrets at rest; `None` uses `<state_dir>/secret.key`,
    /// generated on first use (SQLite only: a shared PostgreSQL store needs
    /// the team's key, [`StoreError::SharedStoreNeedsKey`]).
    pub secret_key: Option<SecretKey>,
    /// Where the records are; `None` is `berth.db` in the state directory.
    pub location: Option<StoreLocation>,
    /// Whether opening applies pending schema migrations (the default);
    /// `false` refuses a store that needs them ([`StoreError::SchemaBehind`]).
    pub migrate: bool,
}

impl StoreOptions {
    /// SQLite in `state_dir`, its key from `secret_key` or the key file;
    /// migrating.
    pub fn in_dir(state_dir: impl Into<PathBuf>, secret_key: Option<SecretKey>) -> StoreOptions {
        StoreOptions {
            state_dir: state_dir.into(),
            secret_key,
            location: None,
            migrate: true,
        }
    }

    /// Options from an explicit state directory setting (if any) and the
    /// environment: `BERTH_STATE_DIR`, `XDG_DATA_HOME`, `HOME`,
    /// `BERTH_SECRET_KEY`. The store is `berth.db` in the state directory.
    pub fn from_env(
        explicit_state_dir: Option<&Path>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<StoreOptions, StoreError> {
        Ok(StoreOptions {
            state_dir: resolve_state_dir(explicit_state_dir, env)?,
            secret_key: SecretKey::from_env(env)?,
            location: None,
            migrate: true,
        })
    }

    /// [`StoreOptions::from_env`], with the store from an explicit setting
    /// (the provider's `store`), else `BERTH_STORE`, else the state
    /// directory's `berth.db`.
    pub fn from_env_with_store(
        explicit_state_dir: Option<&Path>,
        explicit_store: Option<&StoreLocation>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<StoreOptions, StoreError> {
        let mut options = StoreOptions::from_env(explicit_state_dir, env)?;
        options.location = match explicit_store {
            Some(location) => Some(location.clone()),
            None => match env(STORE_VAR) {
                Some(url) if !url.is_empty() => Some(StoreLocation::parse(
                    &url.to_string_lossy(),
                    Some(STORE_VAR),
                    env,
                )?),
                _ => None,
            },
        };
        Ok(options)
    }

    /// The store these options open, for messages (no password).
    pub fn describe(&self) -> String {
        match &self.location {
            Some(location) => location.describe(),
            None => StoreLocation::in_state_dir(&self.state_dir).describe(),
        }
    }
}

/// A registry credential to create.
#[derive(Clone, Debug)]
pub struct NewCredential {
    /// Display name.
    pub name: String,
    /// Normalized registry host, e.g. `registry.example.com:5000`.
    pub registry: String,
    /// User name at the registry.
    pub username: String,
    /// Password or token; encrypted at rest.
    pub secret: Secret,
    /// Version of a write-only secret attribute, if the caller tracks one.
    pub secret_version: Option<i64>,
}

/// Changes to a registry credential; `None` fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct CredentialUpdate {
    /// New display name.
    pub name: Option<String>,
    /// New user name.
    pub username: Option<String>,
    /// New secret (re-encrypted with a fresh nonce).
    pub secret: Option<Secret>,
    /// New secret version; `Some(None)` clears it.
    pub secret_version: Option<Option<i64>>,
}

/// A stored registry credential, with its secret decrypted.
#[derive(Clone, Debug)]
pub struct Credential {
    /// Generated id, `rc-` and 16 hex digits.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Normalized registry host.
    pub registry: String,
    /// User name at the registry.
    pub username: String,
    /// Password or token (redacting `Debug`).
    pub secret: Secret,
    /// Version of a write-only secret attribute.
    pub secret_version: Option<i64>,
    /// When the record was created (millisecond precision).
    pub created_at: SystemTime,
    /// When the record last changed (millisecond precision).
    pub updated_at: SystemTime,
}

/// What the app resource records about an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRecord {
    /// App name (unique).
    pub name: String,
    /// The registry credential the app pulls with, if any.
    pub credential_id: Option<String>,
    /// The app spec as JSON.
    pub spec_json: String,
    /// When the record last changed (millisecond precision).
    pub updated_at: SystemTime,
}

/// A deploy hook as stored: its key only as a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRecord {
    /// Generated id, `dh-` and 16 hex digits; public (it is in the URL).
    pub id: String,
    /// The app the hook deploys.
    pub app: String,
    /// Hex SHA-256 of the key (the key has 256 random bits: no slower hash
    /// is needed to make guessing it hopeless).
    pub key_hash: String,
    pub created_at: SystemTime,
}

/// A release to record as started: what is being deployed and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRelease {
    /// The app.
    pub app: String,
    /// The release number, unique per app (usually the last one plus one).
    pub release: u64,
    /// The image digest, `sha256:…`.
    pub digest: String,
    /// The pinned image reference, `repo@digest`.
    pub image: String,
    /// The app spec as JSON, secret values already removed by the caller.
    pub spec_json: String,
    /// What started it: `terraform`, `berth apply`, `hook`, `rollback`.
    pub trigger: String,
}

/// How a release ended (or that it is still running). Stored as text:
/// `running`, `succeeded`, `failed`, `rolled_back` (also its `Display`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseOutcome {
    /// Started, not finished (or its process died before finishing).
    Running,
    /// Deployed.
    Succeeded,
    /// Failed before traffic switched; the old version was untouched.
    Failed,
    /// Failed after traffic switched; switched back to the old version.
    RolledBack,
}

impl ReleaseOutcome {
    /// The stored (and displayed) text.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseOutcome::Running => "running",
            ReleaseOutcome::Succeeded => "succeeded",
            ReleaseOutcome::Failed => "failed",
            ReleaseOutcome::RolledBack => "rolled_back",
        }
    }
}

impl std::fmt::Display for ReleaseOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReleaseOutcome {
    type Err = String;

    fn from_str(s: &str) -> Result<ReleaseOutcome, String> {
        match s {
            "running" => Ok(ReleaseOutcome::Running),
            "succeeded" => Ok(ReleaseOutcome::Succeeded),
            "failed" => Ok(ReleaseOutcome::Failed),
            "rolled_back" => Ok(ReleaseOutcome::RolledBack),
            other => Err(format!("unknown release outcome `{other}`")),
        }
    }
}

/// One entry of the releases journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseRecord {
    /// The app.
    pub app: String,
    /// The release number.
    pub release: u64,
    /// The image digest.
    pub digest: String,
    /// The pinned image reference, `repo@digest`.
    pub image: String,
    /// The app spec as JSON (no secret values).
    pub spec_json: String,
    /// What started it.
    pub trigger: String,
    /// How it ended, or [`ReleaseOutcome::Running`].
    pub outcome: ReleaseOutcome,
    /// Why it failed, plain text (never logged by the store).
    pub error: Option<String>,
    /// Phase name and milliseconds, in order.
    pub phases: Vec<(String, u64)>,
    /// When it started (millisecond precision).
    pub started_at: SystemTime,
    /// When it finished (millisecond precision); `None` while running.
    pub finished_at: Option<SystemTime>,
}

/// The answer to [`Records::acquire_lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller holds the lease now (taken, or extended when it was
    /// already the caller's).
    Acquired {
        /// The lease's generation: one more each time the lease changes
        /// hands, the same while one owner extends it. With the owner it is
        /// the [`LeaseFence`] that the holder's writes carry.
        generation: u64,
    },
    /// Someone else holds an unexpired lease.
    HeldBy {
        /// The holder, as passed to `acquire_lease`.
        owner: String,
        /// When the holder's lease runs out unless renewed (millisecond
        /// precision; the database's clock for PostgreSQL).
        expires_at: SystemTime,
        /// Since when the holder has it.
        since: SystemTime,
    },
}

/// Proof of holding an app's deploy lease, carried by the writes that only
/// the holder may make (the release it journals): a runner whose lease was
/// taken over while it stalled gets [`StoreError::LeaseLost`] instead of
/// overwriting the new holder's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFence {
    pub app: String,
    pub owner: String,
    pub generation: u64,
}

/// Names this runner in the leases it holds (instead of the host name),
/// e.g. `ci-runner-7`: what another runner's "held by" message shows.
/// Runners with different names never take over each other's leases
/// early: they wait for them to expire.
pub const RUNNER_VAR: &str = "BERTH_RUNNER";

/// A lease owner name unique to this process and call:
/// `<runner>:<pid>@<start>:<6 random hex digits>`. The runner is
/// `BERTH_RUNNER`, else the host name from `/etc/hostname`, else
/// `HOSTNAME`, else `unknown-host` (best effort; it is there to tell a
/// person who holds a lease, and whether its process runs on this machine).
pub fn lease_owner() -> String {
    let host = std::env::var(RUNNER_VAR)
        .ok()
        .map(|h| h.trim().replace(':', "-"))
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".to_owned());
    let mut bytes = [0u8; 3];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Still distinct enough between calls in one process.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes.copy_from_slice(&nanos.to_be_bytes()[1..]);
    }
    let pid = std::process::id();
    match process_start(pid) {
        Some(start) => format!("{host}:{pid}@{start}:{}", hex::encode(bytes)),
        None => format!("{host}:{pid}:{}", hex::encode(bytes)),
    }
}

/// A lease owner as a person reads it: `process 1234 on host ci-7`
/// (owners in another form are shown as they are).
pub fn describe_lease_owner(owner: &str) -> String {
    let mut parts = owner.split(':');
    match (parts.next(), parts.next()) {
        (Some(host), Some(process)) if !host.is_empty() => {
            let pid = process.split('@').next().unwrap_or(process);
            if pid.chars().all(|c| c.is_ascii_digit()) && !pid.is_empty() {
                format!("process {pid} on host {host} ({owner})")
            } else {
                owner.to_owned()
            }
        }
        _ => owner.to_owned(),
    }
}

/// When process `pid` started (clock ticks after boot, field 22 of
/// `/proc/PID/stat`): with the pid, it names one process even after the
/// pid is reused.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The machine's name as [`lease_owner`] writes it.
fn owner_host(owner: &str) -> Option<&str> {
    owner.split(':').next()
}

/// Whether the lease `owner` (written by [`lease_owner`]) is a process of
/// this machine that no longer runs: gone, or its pid now another
/// process. Owners on other machines, or in a form not understood, are
/// never called gone: their leases expire instead.
pub fn lease_owner_is_gone(owner: &str) -> bool {
    let this = lease_owner();
    if owner_host(owner) != owner_host(&this) {
        return false;
    }
    let Some(process) = owner.split(':').nth(1) else {
        return false;
    };
    let (pid, start) = match process.split_once('@') {
        Some((pid, start)) => (pid, start.parse::<u64>().ok()),
        None => (process, None),
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    match (process_start(pid), start) {
        (None, _) => true,
        (Some(now), Some(then)) => now != then,
        (Some(_), None) => false,
    }
}

/// The record operations every backend provides. Synchronous on purpose:
/// async callers go through [`Store`]. Multi-step operations are atomic.
pub trait Records: Send + Sync + std::fmt::Debug {
    /// Claims a run: inserts it as running with `new.owner`'s lease.
    /// `Ok(None)` when the scheduled time was claimed (or recorded) before.
    fn claim_job_run(&self, new: &NewJobRun) -> Result<Option<JobRunRecord>, StoreError>;
    /// Records scheduled times that did not run (`Skipped`, `Missed`),
    /// except those already recorded; how many were new.
    fn record_job_runs_not_run(
        &self,
        app: &str,
        job: &str,
        times: &[SystemTime],
        state: JobRunState,
        reason: &str,
    ) -> Result<usize, StoreError>;
    /// Where a claimed run runs; `false` when `owner` no longer has it.
    #[allow(clippy::too_many_arguments)]
    fn set_job_run_container(
        &self,
        id: u64,
        owner: &str,
        host: &str,
        container_id: &str,
        digest: &str,
        release: Option<u64>,
    ) -> Result<bool, StoreError>;
    /// Extends a running run's lease; `false` when `owner` no longer has it.
    fn renew_job_run(&self, id: u64, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Ends a running run owned by `owner`; `false` when it was ended
    /// before (replaced, or marked lost).
    fn finish_job_run(&self, id: u64, owner: &str, end: &JobRunEnd) -> Result<bool, StoreError>;
    /// Ends a running run whoever owns it (`Replaced`, `Lost`).
    fn stop_job_run(&self, id: u64, state: JobRunState, reason: &str) -> Result<bool, StoreError>;
    /// The job's runs still running; those whose lease ran out are marked
    /// lost first.
    fn running_job_runs(&self, app: &str, job: &str) -> Result<Vec<JobRunRecord>, StoreError>;
    /// Recent runs of an app (of one job, when given), newest first.
    fn list_job_runs(
        &self,
        app: &str,
        job: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRunRecord>, StoreError>;
    /// The latest scheduled time recorded for the job (run or not).
    fn last_scheduled_at(&self, app: &str, job: &str) -> Result<Option<SystemTime>, StoreError>;

    /// Stores a new credential under a generated id.
    fn insert_credential(&self, new: NewCredential) -> Result<Credential, StoreError>;
    /// The credential with `id`, decrypted; `None` when there is none.
    fn get_credential(&self, id: &str) -> Result<Option<Credential>, StoreError>;
    /// Changes a credential; [`StoreError::CredentialNotFound`] when missing.
    fn update_credential(
        &self,
        id: &str,
        update: CredentialUpdate,
    ) -> Result<Credential, StoreError>;
    /// Deletes a credential; `Ok(false)` when it did not exist, and
    /// [`StoreError::CredentialInUse`] (nothing deleted) while any app
    /// record references it.
    fn delete_credential(&self, id: &str) -> Result<bool, StoreError>;
    /// Every credential, decrypted, ordered by name then id.
    fn list_credentials(&self) -> Result<Vec<Credential>, StoreError>;
    /// Creates or replaces the app record `name`;
    /// [`StoreError::CredentialNotFound`] when `credential_id` names no
    /// credential.
    fn upsert_app(
        &self,
        name: &str,
        credential_id: Option<&str>,
        spec_json: &str,
    ) -> Result<AppRecord, StoreError>;
    /// Creates the app record `name`; [`StoreError::AppExists`] when it
    /// exists already.
    fn create_app(
        &self,
        name: &str,
        credential_id: Option<&str>,
        spec_json: &str,
    ) -> Result<AppRecord, StoreError>;
    /// The app record `name`, if any.
    fn get_app(&self, name: &str) -> Result<Option<AppRecord>, StoreError>;
    /// Deletes an app record; `Ok(false)` when it did not exist.
    fn delete_app(&self, name: &str) -> Result<bool, StoreError>;
    /// Every app record, ordered by name.
    fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError>;
    /// Names of the apps whose record references credential `id`, sorted.
    fn apps_using_credential(&self, id: &str) -> Result<Vec<String>, StoreError>;
    /// Seals `plaintext` (what the engine keeps private about the app: its
    /// secret values, where it was deployed) into the app's record, bound
    /// to its name; [`StoreError::AppNotFound`] when there is no record.
    fn set_app_sealed(&self, name: &str, plaintext: &[u8]) -> Result<(), StoreError>;
    /// What [`Records::set_app_sealed`] stored, opened; `None` when nothing.
    fn app_sealed(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a new deploy hook for `app` under a generated id.
    fn insert_hook(&self, app: &str, key_hash: &str) -> Result<HookRecord, StoreError>;
    /// The hook with `id`, if any.
    fn get_hook(&self, id: &str) -> Result<Option<HookRecord>, StoreError>;
    /// Deletes a hook; `Ok(false)` when it did not exist.
    fn delete_hook(&self, id: &str) -> Result<bool, StoreError>;
    /// The hooks of `app`, by id.
    fn list_hooks(&self, app: &str) -> Result<Vec<HookRecord>, StoreError>;

    /// Journals a release as started ([`ReleaseOutcome::Running`], now);
    /// [`StoreError::ReleaseExists`] (nothing written) when `(app, release)`
    /// is already in the journal, [`StoreError::LeaseLost`] when `fence` no
    /// longer holds the app's lease.
    fn start_release(
        &self,
        new: NewRelease,
        fence: &LeaseFence,
    ) -> Result<ReleaseRecord, StoreError>;
    /// Records how a running release ended, its error text and phase
    /// timings, finished now. [`StoreError::ReleaseNotFound`] when it is not
    /// in the journal, [`StoreError::ReleaseFinished`] when it already
    /// ended, [`StoreError::InvalidRequest`] for the outcome `Running`,
    /// [`StoreError::LeaseLost`] (nothing written) when `fence` no longer
    /// holds the app's lease.
    fn finish_release(
        &self,
        app: &str,
        release: u64,
        outcome: ReleaseOutcome,
        error: Option<&str>,
        phases: &[(String, u64)],
        fence: &LeaseFence,
    ) -> Result<(), StoreError>;
    /// The app's newest `limit` releases, newest (highest number) first.
    fn list_releases(&self, app: &str, limit: usize) -> Result<Vec<ReleaseRecord>, StoreError>;
    /// One release, if journaled.
    fn get_release(&self, app: &str, release: u64) -> Result<Option<ReleaseRecord>, StoreError>;
    /// The highest release number journaled for the app, if any.
    fn last_release_number(&self, app: &str) -> Result<Option<u64>, StoreError>;
    /// Deletes the app's whole journal (for destroy).
    fn delete_releases(&self, app: &str) -> Result<(), StoreError>;

    /// Takes the app's deploy lease for `ttl`, atomically: when nobody holds
    /// it, the holder's lease expired, or `owner` already holds it (then the
    /// expiry is extended). Otherwise reports the holder and its expiry.
    fn acquire_lease(
        &self,
        app: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError>;
    /// Extends `owner`'s lease to now + `ttl`; `Ok(false)` when the lease is
    /// not `owner`'s any more (another owner took it after it expired, or it
    /// was released).
    fn renew_lease(&self, app: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Gives the lease up if `owner` holds it; otherwise does nothing.
    fn release_lease(&self, app: &str, owner: &str) -> Result<(), StoreError>;
    /// Hands the lease from `from` (a process that is gone) to `to`, if
    /// `from` still holds it: the new generation, or `None` when it did not.
    fn take_over_lease(
        &self,
        app: &str,
        from: &str,
        to: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError>;
    /// Records the digest a plan resolved for `image` of `app`, given the
    /// digest the app had (`prior`, empty for a new app).
    fn record_planned_digest(
        &self,
        app: &str,
        image: &str,
        prior: &str,
        digest: &str,
    ) -> Result<(), StoreError>;
    /// The digest last recorded for that key, and when.
    fn planned_digest(
        &self,
        app: &str,
        image: &str,
        prior: &str,
    ) -> Result<Option<(String, SystemTime)>, StoreError>;
    /// Remembers what the image `top_digest` names resolved to.
    fn remember_image(&self, top_digest: &str, image: &KnownImage) -> Result<(), StoreError>;
    /// What `top_digest` resolved to before, if it was remembered.
    fn known_image(&self, top_digest: &str) -> Result<Option<KnownImage>, StoreError>;

    /// The backend, its schema version and how many records of each kind
    /// it holds; problems found (SQLite's integrity check) are listed.
    fn info(&self) -> Result<StoreInfo, StoreError>;
    /// Every record worth keeping (not leases), secrets opened.
    fn dump(&self) -> Result<StoreDump, StoreError>;
    /// Writes `dump` in one transaction: records missing are added, those
    /// present (same id or key) updated; secrets sealed with this store's
    /// key. Idempotent.
    fn load(&self, dump: &StoreDump) -> Result<(), StoreError>;
}

/// The async handle to the records: cheap to clone, every call runs on the
/// blocking thread pool.
#[derive(Clone)]
pub struct Store {
    records: Arc<dyn Records>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Opens (creating and migrating as needed) the store `options` name:
/// SQLite or PostgreSQL. Blocking.
pub fn open_records(options: &StoreOptions) -> Result<Arc<dyn Records>, StoreError> {
    Ok(match &options.location {
        Some(StoreLocation::Postgres(pg)) => Arc::new(PostgresStore::open(pg, options)?),
        _ => Arc::new(SqliteStore::open(options)?),
    })
}

impl Store {
    /// Opens (creating and migrating as needed) the store `options` name.
    pub async fn open(options: StoreOptions) -> Result<Store, StoreError> {
        let records = tokio::task::spawn_blocking(move || open_records(&options))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Store::from_records(records))
    }

    /// See [`Records::info`].
    pub async fn info(&self) -> Result<StoreInfo, StoreError> {
        self.run(|r| r.info()).await
    }

    /// Wraps any backend.
    pub fn from_records(records: Arc<dyn Records>) -> Store {
        Store { records }
    }

    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Records) -> Result<T, StoreError> + Send + 'static,
    {
        let records = Arc::clone(&self.records);
        tokio::task::spawn_blocking(move || op(records.as_ref()))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// See [`Records::claim_job_run`].
    pub async fn claim_job_run(&self, new: NewJobRun) -> Result<Option<JobRunRecord>, StoreError> {
        self.run(move |r| r.claim_job_run(&new)).await
    }

    /// See [`Records::record_job_runs_not_run`].
    pub async fn record_job_runs_not_run(
        &self,
        app: String,
        job: String,
        times: Vec<SystemTime>,
        state: JobRunState,
        reason: String,
    ) -> Result<usize, StoreError> {
        self.run(move |r| r.record_job_runs_not_run(&app, &job, &times, state, &reason))
            .await
    }

    /// See [`Records::set_job_run_container`].
    pub async fn set_job_run_container(
        &self,
        id: u64,
        owner: String,
        host: String,
        container_id: String,
        digest: String,
        release: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.run(move |r| {
            r.set_job_run_container(id, &owner, &host, &container_id, &digest, release)
        })
        .await
    }

    /// See [`Records::renew_job_run`].
    pub async fn renew_job_run(
        &self,
        id: u64,
        owner: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.run(move |r| r.renew_job_run(id, &owner, ttl)).await
    }

    /// See [`Records::finish_job_run`].
    pub async fn finish_job_run(
        &self,
        id: u64,
        owner: String,
        end: JobRunEnd,
    ) -> Result<bool, StoreError> {
        self.run(move |r| r.finish_job_run(id, &owner, &end)).await
    }

    /// See [`Records::stop_job_run`].
    pub async fn stop_job_run(
        &self,
        id: u64,
        state: JobRunState,
        reason: String,
    ) -> Result<bool, StoreError> {
        self.run(move |r| r.stop_job_run(id, state, &reason)).await
    }

    /// See [`Records::running_job_runs`].
    pub async fn running_job_runs(
        &self,
        app: String,
        job: String,
    ) -> Result<Vec<JobRunRecord>, StoreError> {
        self.run(move |r| r.running_job_runs(&app, &job)).await
    }

    /// See [`Records::list_job_runs`].
    pub async fn list_job_runs(
        &self,
        app: String,
        job: Option<String>,
        limit: usize,
    ) -> Result<Vec<JobRunRecord>, StoreError> {
        self.run(move |r| r.list_job_runs(&app, job.as_deref(), limit))
            .await
    }

    /// See [`Records::last_scheduled_at`].
    pub async fn last_scheduled_at(
        &self,
        app: String,
        job: String,
    ) -> Result<Option<SystemTime>, StoreError> {
        self.run(move |r| r.last_scheduled_at(&app, &job)).await
    }

    /// See [`Records::insert_credential`].
    pub async fn insert_credential(&self, new: NewCredential) -> Result<Credential, StoreError> {
        self.run(move |r| r.insert_credential(new)).await
    }

    /// See [`Records::get_credential`].
    pub async fn get_credential(&self, id: String) -> Result<Option<Credential>, StoreError> {
        self.run(move |r| r.get_credential(&id)).await
    }

    /// See [`Records::update_credential`].
    pub async fn update_credential(
        &self,
        id: String,
        update: CredentialUpdate,
    ) -> Result<Credential, StoreError> {
        self.run(move |r| r.update_credential(&id, update)).await
    }

    /// See [`Records::delete_credential`].
    pub async fn delete_credential(&self, id: String) -> Result<bool, StoreError> {
        self.run(move |r| r.delete_credential(&id)).await
    }

    /// See [`Records::list_credentials`].
    pub async fn list_credentials(&self) -> Result<Vec<Credential>, StoreError> {
        self.run(|r| r.list_credentials()).await
    }

    /// See [`Records::upsert_app`].
    pub async fn upsert_app(
        &self,
        name: String,
        credential_id: Option<String>,
        spec_json: String,
    ) -> Result<AppRecord, StoreError> {
        self.run(move |r| r.upsert_app(&name, credential_id.as_deref(), &spec_json))
            .await
    }

    /// See [`Records::create_app`].
    pub async fn create_app(
        &self,
        name: String,
        credential_id: Option<String>,
        spec_json: String,
    ) -> Result<AppRecord, StoreError> {
        self.run(move |r| r.create_app(&name, credential_id.as_deref(), &spec_json))
            .await
    }

    /// See [`Records::set_app_sealed`].
    pub async fn set_app_sealed(&self, name: String, plaintext: Vec<u8>) -> Result<(), StoreError> {
        self.run(move |r| r.set_app_sealed(&name, &plaintext)).await
    }

    /// See [`Records::app_sealed`].
    pub async fn app_sealed(&self, name: String) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(move |r| r.app_sealed(&name)).await
    }

    /// See [`Records::insert_hook`].
    pub async fn insert_hook(
        &self,
        app: String,
        key_hash: String,
    ) -> Result<HookRecord, StoreError> {
        self.run(move |r| r.insert_hook(&app, &key_hash)).await
    }

    /// See [`Records::get_hook`].
    pub async fn get_hook(&self, id: String) -> Result<Option<HookRecord>, StoreError> {
        self.run(move |r| r.get_hook(&id)).await
    }

    /// See [`Records::delete_hook`].
    pub async fn delete_hook(&self, id: String) -> Result<bool, StoreError> {
        self.run(move |r| r.delete_hook(&id)).await
    }

    /// See [`Records::list_hooks`].
    pub async fn list_hooks(&self, app: String) -> Result<Vec<HookRecord>, StoreError> {
        self.run(move |r| r.list_hooks(&app)).await
    }

    /// See [`Records::get_app`].
    pub async fn get_app(&self, name: String) -> Result<Option<AppRecord>, StoreError> {
        self.run(move |r| r.get_app(&name)).await
    }

    /// See [`Records::delete_app`].
    pub async fn delete_app(&self, name: String) -> Result<bool, StoreError> {
        self.run(move |r| r.delete_app(&name)).await
    }

    /// See [`Records::list_apps`].
    pub async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.run(|r| r.list_apps()).await
    }

    /// See [`Records::apps_using_credential`].
    pub async fn apps_using_credential(&self, id: String) -> Result<Vec<String>, StoreError> {
        self.run(move |r| r.apps_using_credential(&id)).await
    }

    /// See [`Records::start_release`].
    pub async fn start_release(
        &self,
        new: NewRelease,
        fence: LeaseFence,
    ) -> Result<ReleaseRecord, StoreError> {
        self.run(move |r| r.start_release(new, &fence)).await
    }

    /// See [`Records::finish_release`].
    pub async fn finish_release(
        &self,
        app: String,
        release: u64,
        outcome: ReleaseOutcome,
        error: Option<String>,
        phases: Vec<(String, u64)>,
        fence: LeaseFence,
    ) -> Result<(), StoreError> {
        self.run(move |r| {
            r.finish_release(&app, release, outcome, error.as_deref(), &phases, &fence)
        })
        .await
    }

    /// See [`Records::list_releases`].
    pub async fn list_releases(
        &self,
        app: String,
        limit: usize,
    ) -> Result<Vec<ReleaseRecord>, StoreError> {
        self.run(move |r| r.list_releases(&app, limit)).await
    }

    /// See [`Records::get_release`].
    pub async fn get_release(
        &self,
        app: String,
        release: u64,
    ) -> Result<Option<ReleaseRecord>, StoreError> {
        self.run(move |r| r.get_release(&app, release)).await
    }

    /// See [`Records::last_release_number`].
    pub async fn last_release_number(&self, app: String) -> Result<Option<u64>, StoreError> {
        self.run(move |r| r.last_release_number(&app)).await
    }

    /// See [`Records::delete_releases`].
    pub async fn delete_releases(&self, app: String) -> Result<(), StoreError> {
        self.run(move |r| r.delete_releases(&app)).await
    }

    /// See [`Records::acquire_lease`].
    pub async fn acquire_lease(
        &self,
        app: String,
        owner: String,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.run(move |r| r.acquire_lease(&app, &owner, ttl)).await
    }

    /// See [`Records::renew_lease`].
    pub async fn renew_lease(
        &self,
        app: String,
        owner: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.run(move |r| r.renew_lease(&app, &owner, ttl)).await
    }

    /// See [`Records::record_planned_digest`].
    pub async fn record_planned_digest(
        &self,
        app: String,
        image: String,
        prior: String,
        digest: String,
    ) -> Result<(), StoreError> {
        self.run(move |r| r.record_planned_digest(&app, &image, &prior, &digest))
            .await
    }

    /// See [`Records::remember_image`].
    pub async fn remember_image(
        &self,
        top_digest: String,
        image: KnownImage,
    ) -> Result<(), StoreError> {
        self.run(move |r| r.remember_image(&top_digest, &image))
            .await
    }

    /// See [`Records::known_image`].
    pub async fn known_image(&self, top_digest: String) -> Result<Option<KnownImage>, StoreError> {
        self.run(move |r| r.known_image(&top_digest)).await
    }

    /// See [`Records::planned_digest`].
    pub async fn planned_digest(
        &self,
        app: String,
        image: String,
        prior: String,
    ) -> Result<Option<(String, SystemTime)>, StoreError> {
        self.run(move |r| r.planned_digest(&app, &image, &prior))
            .await
    }

    /// See [`Records::release_lease`].
    pub async fn release_lease(&self, app: String, owner: String) -> Result<(), StoreError> {
        self.run(move |r| r.release_lease(&app, &owner)).await
    }

    /// See [`Records::take_over_lease`].
    pub async fn take_over_lease(
        &self,
        app: String,
        from: String,
        to: String,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        self.run(move |r| r.take_over_lease(&app, &from, &to, ttl))
            .await
    }
}
