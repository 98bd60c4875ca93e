//! [`SqliteStore`]: the embedded backend of [`Records`], one `berth.db` file
//! in the state directory. Owns the connection settings (WAL, busy timeout,
//! foreign keys, `synchronous = FULL`), the key check that makes a wrong key
//! fail at open, and the SQL of every record operation.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Type;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

use super::crypto::{create_key_file, read_key_file, Cipher, RecordKind, KEY_FILE_NAME};
use super::error::{DatabaseError, DatabaseErrorKind, StoreError};
use super::migrations::migrate_to;
use super::paths::ensure_state_dir;
use super::{
    AppRecord, Credential, CredentialUpdate, HookRecord, JobRunEnd, JobRunRecord, JobRunState,
    KnownImage, LeaseOutcome, NewCredential, NewJobRun, NewRelease, Records, ReleaseOutcome,
    ReleaseRecord, Secret, StoreOptions, SCHEMA_VERSION,
};

/// The database file name inside the state directory.
pub const DATABASE_FILE_NAME: &str = "berth.db";

/// How long a write waits for another process's write to finish.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The known plaintext sealed under the key when a database is created.
const KEY_CHECK_PLAINTEXT: &[u8] = b"berth secret key check v1";
const KEY_CHECK_META: &str = "key_check";

/// The SQLite backend. Thread-safe; one connection behind a mutex (SQLite
/// allows one writer at a time anyway).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    cipher: Cipher,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn now_millis() -> i64 {
    millis(SystemTime::now())
}

fn new_credential_id() -> Result<String, StoreError> {
    new_id("rc")
}

/// `PREFIX-` and 16 random hex digits.
fn new_id(prefix: &str) -> Result<String, StoreError> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| StoreError::Crypto("the random generator failed"))?;
    Ok(format!("{prefix}-{}", hex::encode(bytes)))
}

fn hook_from_row(row: &Row<'_>) -> rusqlite::Result<HookRecord> {
    Ok(HookRecord {
        id: row.get(0)?,
        app: row.get(1)?,
        key_hash: row.get(2)?,
        created_at: from_millis(row.get(3)?),
    })
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// A credential row before decryption.
struct CredentialRow {
    id: String,
    name: String,
    registry: String,
    username: String,
    sealed: Vec<u8>,
    secret_version: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const CREDENTIAL_COLUMNS: &str =
    "id, name, registry, username, secret, secret_version, created_at, updated_at";

impl CredentialRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<CredentialRow> {
        Ok(CredentialRow {
            id: row.get(0)?,
            name: row.get(1)?,
            registry: row.get(2)?,
            username: row.get(3)?,
            sealed: row.get(4)?,
            secret_version: row.get(5)?,
            created_at: row.get(6)?,
            updated_at: row.get(7)?,
        })
    }
}

fn app_from_row(row: &Row<'_>) -> rusqlite::Result<AppRecord> {
    Ok(AppRecord {
        name: row.get(0)?,
        credential_id: row.get(1)?,
        spec_json: row.get(2)?,
        updated_at: from_millis(row.get(3)?),
    })
}

fn apps_using(conn: &Connection, id: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT name FROM apps WHERE credential_id = ?1 ORDER BY name")?;
    let names = stmt
        .query_map([id], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(names)
}

const RELEASE_COLUMNS: &str = "app, number, digest, image, spec_json, triggered_by, outcome, \
     error, phases_json, started_at, finished_at";

fn conversion_failure(
    column: usize,
    ty: Type,
    err: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, ty, Box::new(err))
}

fn release_from_row(row: &Row<'_>) -> rusqlite::Result<ReleaseRecord> {
    let number: i64 = row.get(1)?;
    let release = u64::try_from(number).map_err(|e| conversion_failure(1, Type::Integer, e))?;
    let outcome: String = row.get(6)?;
    let outcome = outcome
        .parse::<ReleaseOutcome>()
        .map_err(|e| conversion_failure(6, Type::Text, std::io::Error::other(e)))?;
    let phases_json: String = row.get(8)?;
    let phases: Vec<(String, u64)> =
        serde_json::from_str(&phases_json).map_err(|e| conversion_failure(8, Type::Text, e))?;
    Ok(ReleaseRecord {
        app: row.get(0)?,
        release,
        digest: row.get(2)?,
        image: row.get(3)?,
        spec_json: row.get(4)?,
        trigger: row.get(5)?,
        outcome,
        error: row.get(7)?,
        phases,
        started_at: from_millis(row.get(9)?),
        finished_at: row.get::<_, Option<i64>>(10)?.map(from_millis),
    })
}

const JOB_RUN_COLUMNS: &str = "id, app, job, scheduled_at, triggered_by, state, owner, host, \
     container_id, digest, release, exit_code, reason, log_tail_json, started_at, finished_at";

fn job_run_id(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id)
        .map_err(|_| StoreError::InvalidRequest(format!("job run id {id} is too large")))
}

fn job_run_from_row(row: &Row<'_>) -> rusqlite::Result<JobRunRecord> {
    let id: i64 = row.get(0)?;
    let state: String = row.get(5)?;
    let state = state
        .parse::<JobRunState>()
        .map_err(|e| conversion_failure(5, Type::Text, std::io::Error::other(e)))?;
    let release: Option<i64> = row.get(10)?;
    let tail: String = row.get(13)?;
    let log_tail: Vec<String> =
        serde_json::from_str(&tail).map_err(|e| conversion_failure(13, Type::Text, e))?;
    Ok(JobRunRecord {
        id: u64::try_from(id).map_err(|e| conversion_failure(0, Type::Integer, e))?,
        app: row.get(1)?,
        job: row.get(2)?,
        scheduled_at: row.get::<_, Option<i64>>(3)?.map(from_millis),
        trigger: row.get(4)?,
        state,
        owner: row.get(6)?,
        host: row.get(7)?,
        container_id: row.get(8)?,
        digest: row.get(9)?,
        release: release.and_then(|r| u64::try_from(r).ok()),
        exit_code: row.get(11)?,
        reason: row.get(12)?,
        log_tail,
        started_at: row.get::<_, Option<i64>>(14)?.map(from_millis),
        finished_at: row.get::<_, Option<i64>>(15)?.map(from_millis),
    })
}

// SQLite's errors as the store's, with the kind that picks the advice.
impl From<rusqlite::Error> for DatabaseError {
    fn from(e: rusqlite::Error) -> DatabaseError {
        use rusqlite::ErrorCode;
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => DatabaseErrorKind::DiskFull,
            Some(ErrorCode::SystemIoFailure) => DatabaseErrorKind::Io,
            Some(ErrorCode::ReadOnly) => DatabaseErrorKind::ReadOnly,
            _ => DatabaseErrorKind::Other,
        };
        DatabaseError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Database(e.into())
    }
}

/// A release number as stored (SQLite integers are signed).
fn release_number(release: u64) -> Result<i64, StoreError> {
    i64::try_from(release).map_err(|_| {
        StoreError::InvalidRequest(format!(
            "release number {release} is too large (at most {})",
            i64::MAX
        ))
    })
}

/// Now plus `ttl`, in Unix milliseconds (saturating).
fn expiry_millis(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

impl SqliteStore {
    /// Writes an app record; `only_new` refuses one that exists.
    fn write_app(
        &self,
        name: &str,
        credential_id: Option<&str>,
        spec_json: &str,
        only_new: bool,
    ) -> Result<AppRecord, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(id) = credential_id {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM registry_credentials WHERE id = ?1)",
                [id],
                |row| row.get(0),
            )?;
            if !exists {
                return Err(StoreError::CredentialNotFound { id: id.to_owned() });
            }
        }
        if only_new {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM apps WHERE name = ?1)",
                [name],
                |row| row.get(0),
            )?;
            if exists {
                return Err(StoreError::AppExists {
                    name: name.to_owned(),
                });
            }
        }
        let now = now_millis();
        tx.execute(
            "INSERT INTO apps (name, credential_id, spec_json, updated_at) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET credential_id = excluded.credential_id, \
             spec_json = excluded.spec_json, updated_at = excluded.updated_at",
            params![name, credential_id, spec_json, now],
        )?;
        tx.commit()?;
        Ok(AppRecord {
            name: name.to_owned(),
            credential_id: credential_id.map(str::to_owned),
            spec_json: spec_json.to_owned(),
            updated_at: from_millis(now),
        })
    }

    /// Opens `<state_dir>/berth.db`, creating the directory (0700), the
    /// database (0600) and the key file as needed, migrating the schema, and
    /// checking that the key is the one the database was created with.
    pub fn open(options: &StoreOptions) -> Result<SqliteStore, StoreError> {
        Self::open_at_version(options, SCHEMA_VERSION)
    }

    /// [`SqliteStore::open`], migrating only up to `version`: how an older
    /// build left the database. For tests of migrations.
    pub(crate) fn open_at_version(
        options: &StoreOptions,
        version: i64,
    ) -> Result<SqliteStore, StoreError> {
        let state_dir = &options.state_dir;
        ensure_state_dir(state_dir)?;
        let path = state_dir.join(DATABASE_FILE_NAME);
        // Create the file owner-only before SQLite does (SQLite gives its
        // -wal and -shm files the same mode). Never truncates.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::StateDir {
                path: path.clone(),
                source,
            })?;
        let mut conn = Self::connect(&path)?;
        migrate_to(&mut conn, &path, version)?;

        let key_file = state_dir.join(KEY_FILE_NAME);
        let key = match &options.secret_key {
            Some(key) => key.clone(),
            None => match read_key_file(&key_file)? {
                Some(key) => key,
                None => {
                    if Self::read_key_check(&conn)?.is_some() {
                        return Err(StoreError::KeyMissing {
                            state_dir: state_dir.clone(),
                            key_file,
                        });
                    }
                    create_key_file(&key_file)?
                }
            },
        };
        let cipher = Cipher::new(&key)?;
        Self::check_key(&mut conn, &cipher, &key)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            cipher,
            path,
        })
    }

    fn connect(path: &Path) -> Result<Connection, StoreError> {
        let open_err = |source: rusqlite::Error| StoreError::Open {
            path: path.to_owned(),
            source: source.into(),
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Switching to WAL needs a moment of exclusive access; when several
        // processes open a new database at once, retry (bounded).
        let mut attempts = 0;
        loop {
            match conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => break,
                Ok(mode) => {
                    return Err(open_err(rusqlite::Error::InvalidParameterName(format!(
                        "journal_mode stayed {mode}; WAL is required"
                    ))))
                }
                Err(err) if is_busy(&err) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => return Err(open_err(err)),
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        Ok(conn)
    }

    fn read_key_check(conn: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [KEY_CHECK_META],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Records the key check value on first open; afterwards requires that
    /// the key opens it.
    fn check_key(
        conn: &mut Connection,
        cipher: &Cipher,
        key: &super::SecretKey,
    ) -> Result<(), StoreError> {
        if Self::read_key_check(conn)?.is_none() {
            let sealed = cipher.seal(RecordKind::KeyCheck, KEY_CHECK_META, KEY_CHECK_PLAINTEXT)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another process may have won the race; its value stays.
            tx.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![KEY_CHECK_META, sealed],
            )?;
            tx.commit()?;
        }
        let stored = Self::read_key_check(conn)?.unwrap_or_default();
        match cipher.open(RecordKind::KeyCheck, KEY_CHECK_META, &stored) {
            Ok(plain) if plain == KEY_CHECK_PLAINTEXT => Ok(()),
            _ => Err(StoreError::KeyMismatch {
                key_source: key.source().clone(),
            }),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `PRAGMA integrity_check`; [`StoreError::Corrupt`] lists problems.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let lines = stmt
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        if lines.len() == 1 && lines[0] == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(lines.join("; ")))
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back on
        // unwind; the connection itself is still sound.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn decrypt(&self, row: CredentialRow) -> Result<Credential, StoreError> {
        let plain = self
            .cipher
            .open(RecordKind::RegistryCredential, &row.id, &row.sealed)?;
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

    fn seal_secret(&self, id: &str, secret: &Secret) -> Result<Vec<u8>, StoreError> {
        self.cipher.seal(
            RecordKind::RegistryCredential,
            id,
            secret.expose().as_bytes(),
        )
    }
}

impl Records for SqliteStore {
    fn claim_job_run(&self, new: &NewJobRun) -> Result<Option<JobRunRecord>, StoreError> {
        let now = now_millis();
        let expires = now.saturating_add(i64::try_from(new.ttl.as_millis()).unwrap_or(i64::MAX));
        let conn = self.lock();
        let inserted = conn.execute(
            "INSERT INTO job_runs (app, job, scheduled_at, triggered_by, state, owner, \
             lease_expires_at, started_at) VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7) \
             ON CONFLICT (app, job, scheduled_at) DO NOTHING",
            params![
                new.app,
                new.job,
                new.scheduled_at.map(millis),
                new.trigger,
                new.owner,
                expires,
                now
            ],
        )?;
        if inserted == 0 {
            return Ok(None);
        }
        let id = conn.last_insert_rowid();
        Ok(conn
            .query_row(
                &format!("SELECT {JOB_RUN_COLUMNS} FROM job_runs WHERE id = ?1"),
                [id],
                job_run_from_row,
            )
            .optional()?)
    }

    fn record_job_runs_not_run(
        &self,
        app: &str,
        job: &str,
        times: &[SystemTime],
        state: JobRunState,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_millis();
        let mut new = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO job_runs (app, job, scheduled_at, triggered_by, state, reason, \
                 finished_at) VALUES (?1, ?2, ?3, 'schedule', ?4, ?5, ?6) \
                 ON CONFLICT (app, job, scheduled_at) DO NOTHING",
            )?;
            for t in times {
                new += stmt.execute(params![app, job, millis(*t), state.as_str(), reason, now])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    fn set_job_run_container(
        &self,
        id: u64,
        owner: &str,
        host: &str,
        container_id: &str,
        digest: &str,
        release: Option<u64>,
    ) -> Result<bool, StoreError> {
        let release = release.map(release_number).transpose()?;
        let changed = self.lock().execute(
            "UPDATE job_runs SET host = ?3, container_id = ?4, digest = ?5, release = ?6 \
             WHERE id = ?1 AND owner = ?2 AND state = 'running'",
            params![job_run_id(id)?, owner, host, container_id, digest, release],
        )?;
        Ok(changed == 1)
    }

    fn renew_job_run(&self, id: u64, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let expires =
            now_millis().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let changed = self.lock().execute(
            "UPDATE job_runs SET lease_expires_at = ?3 \
             WHERE id = ?1 AND owner = ?2 AND state = 'running'",
            params![job_run_id(id)?, owner, expires],
        )?;
        Ok(changed == 1)
    }

    fn finish_job_run(&self, id: u64, owner: &str, end: &JobRunEnd) -> Result<bool, StoreError> {
        let tail = serde_json::to_string(&end.log_tail)
            .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
        let changed = self.lock().execute(
            "UPDATE job_runs SET state = ?3, exit_code = ?4, reason = ?5, log_tail_json = ?6, \
             finished_at = ?7, lease_expires_at = NULL \
             WHERE id = ?1 AND owner = ?2 AND state = 'running'",
            params![
                job_run_id(id)?,
                owner,
                end.state.as_str(),
                end.exit_code,
                end.reason,
                tail,
                now_millis()
            ],
        )?;
        Ok(changed == 1)
    }

    fn stop_job_run(&self, id: u64, state: JobRunState, reason: &str) -> Result<bool, StoreError> {
        let changed = self.lock().execute(
            "UPDATE job_runs SET state = ?2, reason = ?3, finished_at = ?4, \
             lease_expires_at = NULL WHERE id = ?1 AND state = 'running'",
            params![job_run_id(id)?, state.as_str(), reason, now_millis()],
        )?;
        Ok(changed == 1)
    }

    fn running_job_runs(&self, app: &str, job: &str) -> Result<Vec<JobRunRecord>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_millis();
        tx.execute(
            "UPDATE job_runs SET state = 'lost', finished_at = ?3, lease_expires_at = NULL, \
             reason = 'the runner that started it stopped renewing its lease (killed, or cut off from the store)' \
             WHERE app = ?1 AND job = ?2 AND state = 'running' AND lease_expires_at <= ?3",
            params![app, job, now],
        )?;
        let runs = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {JOB_RUN_COLUMNS} FROM job_runs \
                 WHERE app = ?1 AND job = ?2 AND state = 'running' ORDER BY id"
            ))?;
            let rows = stmt.query_map(params![app, job], job_run_from_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        Ok(runs)
    }

    fn list_job_runs(
        &self,
        app: &str,
        job: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRunRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {JOB_RUN_COLUMNS} FROM job_runs \
             WHERE app = ?1 AND (?2 IS NULL OR job = ?2) ORDER BY id DESC LIMIT ?3"
        ))?;
        let runs = stmt
            .query_map(params![app, job, limit], job_run_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(runs)
    }

    fn last_scheduled_at(&self, app: &str, job: &str) -> Result<Option<SystemTime>, StoreError> {
        let last: Option<i64> = self.lock().query_row(
            "SELECT max(scheduled_at) FROM job_runs WHERE app = ?1 AND job = ?2",
            params![app, job],
            |row| row.get(0),
        )?;
        Ok(last.map(from_millis))
    }

    fn insert_credential(&self, new: NewCredential) -> Result<Credential, StoreError> {
        let id = new_credential_id()?;
        let sealed = self.seal_secret(&id, &new.secret)?;
        let now = now_millis();
        self.lock().execute(
            "INSERT INTO registry_credentials \
             (id, name, registry, username, secret, secret_version, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                id,
                new.name,
                new.registry,
                new.username,
                sealed,
                new.secret_version,
                now
            ],
        )?;
        Ok(Credential {
            id,
            name: new.name,
            registry: new.registry,
            username: new.username,
            secret: new.secret,
            secret_version: new.secret_version,
            created_at: from_millis(now),
            updated_at: from_millis(now),
        })
    }

    fn get_credential(&self, id: &str) -> Result<Option<Credential>, StoreError> {
        let row = self
            .lock()
            .query_row(
                &format!("SELECT {CREDENTIAL_COLUMNS} FROM registry_credentials WHERE id = ?1"),
                [id],
                CredentialRow::from_row,
            )
            .optional()?;
        row.map(|row| self.decrypt(row)).transpose()
    }

    fn update_credential(
        &self,
        id: &str,
        update: CredentialUpdate,
    ) -> Result<Credential, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = tx
            .query_row(
                &format!("SELECT {CREDENTIAL_COLUMNS} FROM registry_credentials WHERE id = ?1"),
                [id],
                CredentialRow::from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::CredentialNotFound { id: id.to_owned() })?;
        // Decrypting the current secret also proves the record is intact.
        let mut credential = self.decrypt(row)?;
        if let Some(name) = update.name {
            credential.name = name;
        }
        if let Some(username) = update.username {
            credential.username = username;
        }
        if let Some(secret) = update.secret {
            credential.secret = secret;
        }
        if let Some(version) = update.secret_version {
            credential.secret_version = version;
        }
        let sealed = self.seal_secret(id, &credential.secret)?;
        let now = now_millis();
        tx.execute(
            "UPDATE registry_credentials \
             SET name = ?2, username = ?3, secret = ?4, secret_version = ?5, updated_at = ?6 \
             WHERE id = ?1",
            params![
                id,
                credential.name,
                credential.username,
                sealed,
                credential.secret_version,
                now
            ],
        )?;
        tx.commit()?;
        credential.updated_at = from_millis(now);
        Ok(credential)
    }

    fn delete_credential(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let apps = apps_using(&tx, id)?;
        if !apps.is_empty() {
            return Err(StoreError::CredentialInUse {
                id: id.to_owned(),
                apps,
            });
        }
        let deleted = tx.execute("DELETE FROM registry_credentials WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(deleted > 0)
    }

    fn list_credentials(&self) -> Result<Vec<Credential>, StoreError> {
        let rows = {
            let conn = self.lock();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CREDENTIAL_COLUMNS} FROM registry_credentials ORDER BY name, id"
            ))?;
            let rows = stmt
                .query_map([], CredentialRow::from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        rows.into_iter().map(|row| self.decrypt(row)).collect()
    }

    fn upsert_app(
        &self,
        name: &str,
        credential_id: Option<&str>,
        spec_json: &str,
    ) -> Result<AppRecord, StoreError> {
        self.write_app(name, credential_id, spec_json, false)
    }

    fn create_app(
        &self,
        name: &str,
        credential_id: Option<&str>,
        spec_json: &str,
    ) -> Result<AppRecord, StoreError> {
        self.write_app(name, credential_id, spec_json, true)
    }

    fn get_app(&self, name: &str) -> Result<Option<AppRecord>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT name, credential_id, spec_json, updated_at FROM apps WHERE name = ?1",
                [name],
                app_from_row,
            )
            .optional()?)
    }

    fn delete_app(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .execute("DELETE FROM apps WHERE name = ?1", [name])?
            > 0)
    }

    fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name, credential_id, spec_json, updated_at FROM apps ORDER BY name",
        )?;
        let apps = stmt
            .query_map([], app_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(apps)
    }

    fn apps_using_credential(&self, id: &str) -> Result<Vec<String>, StoreError> {
        apps_using(&self.lock(), id)
    }

    fn set_app_sealed(&self, name: &str, plaintext: &[u8]) -> Result<(), StoreError> {
        let sealed = self.cipher.seal(RecordKind::AppSecrets, name, plaintext)?;
        let changed = self.lock().execute(
            "UPDATE apps SET secrets = ?2 WHERE name = ?1",
            params![name, sealed],
        )?;
        if changed == 0 {
            return Err(StoreError::AppNotFound {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn app_sealed(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sealed: Option<Option<Vec<u8>>> = self
            .lock()
            .query_row("SELECT secrets FROM apps WHERE name = ?1", [name], |row| {
                row.get(0)
            })
            .optional()?;
        match sealed {
            Some(Some(sealed)) => Ok(Some(self.cipher.open(
                RecordKind::AppSecrets,
                name,
                &sealed,
            )?)),
            _ => Ok(None),
        }
    }

    fn insert_hook(&self, app: &str, key_hash: &str) -> Result<HookRecord, StoreError> {
        let id = new_id("dh")?;
        let now = now_millis();
        self.lock().execute(
            "INSERT INTO deploy_hooks (id, app, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, app, key_hash, now],
        )?;
        Ok(HookRecord {
            id,
            app: app.to_owned(),
            key_hash: key_hash.to_owned(),
            created_at: from_millis(now),
        })
    }

    fn get_hook(&self, id: &str) -> Result<Option<HookRecord>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, app, key_hash, created_at FROM deploy_hooks WHERE id = ?1",
                [id],
                hook_from_row,
            )
            .optional()?)
    }

    fn delete_hook(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .execute("DELETE FROM deploy_hooks WHERE id = ?1", [id])?
            > 0)
    }

    fn list_hooks(&self, app: &str) -> Result<Vec<HookRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, app, key_hash, created_at FROM deploy_hooks WHERE app = ?1 ORDER BY id",
        )?;
        let hooks = stmt
            .query_map([app], hook_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(hooks)
    }

    fn start_release(&self, new: NewRelease) -> Result<ReleaseRecord, StoreError> {
        let number = release_number(new.release)?;
        let now = now_millis();
        let inserted = self.lock().execute(
            "INSERT INTO releases \
             (app, number, digest, image, spec_json, triggered_by, outcome, error, \
              phases_json, started_at, finished_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, '[]', ?8, NULL) \
             ON CONFLICT (app, number) DO NOTHING",
            params![
                new.app,
                number,
                new.digest,
                new.image,
                new.spec_json,
                new.trigger,
                ReleaseOutcome::Running.as_str(),
                now
            ],
        )?;
        if inserted == 0 {
            return Err(StoreError::ReleaseExists {
                app: new.app,
                release: new.release,
            });
        }
        Ok(ReleaseRecord {
            app: new.app,
            release: new.release,
            digest: new.digest,
            image: new.image,
            spec_json: new.spec_json,
            trigger: new.trigger,
            outcome: ReleaseOutcome::Running,
            error: None,
            phases: Vec::new(),
            started_at: from_millis(now),
            finished_at: None,
        })
    }

    fn finish_release(
        &self,
        app: &str,
        release: u64,
        outcome: ReleaseOutcome,
        error: Option<&str>,
        phases: &[(String, u64)],
    ) -> Result<(), StoreError> {
        if outcome == ReleaseOutcome::Running {
            return Err(StoreError::InvalidRequest(format!(
                "release {release} of app `{app}` cannot finish as `running`"
            )));
        }
        let number = release_number(release)?;
        let phases_json = serde_json::to_string(phases).map_err(|e| {
            StoreError::InvalidRequest(format!("phase timings cannot be encoded: {e}"))
        })?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<String> = tx
            .query_row(
                "SELECT outcome FROM releases WHERE app = ?1 AND number = ?2",
                params![app, number],
                |row| row.get(0),
            )
            .optional()?;
        match current.as_deref() {
            None => {
                return Err(StoreError::ReleaseNotFound {
                    app: app.to_owned(),
                    release,
                })
            }
            Some(running) if running == ReleaseOutcome::Running.as_str() => {}
            Some(done) => {
                return Err(StoreError::ReleaseFinished {
                    app: app.to_owned(),
                    release,
                    outcome: done.to_owned(),
                })
            }
        }
        tx.execute(
            "UPDATE releases SET outcome = ?3, error = ?4, phases_json = ?5, finished_at = ?6 \
             WHERE app = ?1 AND number = ?2",
            params![
                app,
                number,
                outcome.as_str(),
                error,
                phases_json,
                now_millis()
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn list_releases(&self, app: &str, limit: usize) -> Result<Vec<ReleaseRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 \
             ORDER BY number DESC LIMIT ?2"
        ))?;
        let releases = stmt
            .query_map(params![app, limit], release_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(releases)
    }

    fn get_release(&self, app: &str, release: u64) -> Result<Option<ReleaseRecord>, StoreError> {
        let Ok(number) = i64::try_from(release) else {
            return Ok(None);
        };
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 AND number = ?2"),
                params![app, number],
                release_from_row,
            )
            .optional()?)
    }

    fn last_release_number(&self, app: &str) -> Result<Option<u64>, StoreError> {
        let last: Option<i64> = self.lock().query_row(
            "SELECT max(number) FROM releases WHERE app = ?1",
            [app],
            |row| row.get(0),
        )?;
        last.map(|n| {
            u64::try_from(n).map_err(|e| StoreError::from(conversion_failure(0, Type::Integer, e)))
        })
        .transpose()
    }

    fn delete_releases(&self, app: &str) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM releases WHERE app = ?1", [app])?;
        Ok(())
    }

    fn acquire_lease(
        &self,
        app: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        let mut conn = self.lock();
        // Immediate: the write lock is taken before the read, so two
        // processes cannot both see the lease free.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_millis();
        let holder: Option<(String, i64)> = tx
            .query_row(
                "SELECT owner, expires_at FROM leases WHERE app = ?1",
                [app],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((holder, expires_at)) = holder {
            if holder != owner && expires_at > now {
                return Ok(LeaseOutcome::HeldBy {
                    owner: holder,
                    expires_at: from_millis(expires_at),
                });
            }
        }
        tx.execute(
            "INSERT INTO leases (app, owner, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (app) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at",
            params![app, owner, expiry_millis(now, ttl)],
        )?;
        tx.commit()?;
        Ok(LeaseOutcome::Acquired)
    }

    fn renew_lease(&self, app: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        // Still ours even if it expired meanwhile: taking it over would
        // have replaced the owner.
        let changed = self.lock().execute(
            "UPDATE leases SET expires_at = ?3 WHERE app = ?1 AND owner = ?2",
            params![app, owner, expiry_millis(now_millis(), ttl)],
        )?;
        Ok(changed > 0)
    }

    fn release_lease(&self, app: &str, owner: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "DELETE FROM leases WHERE app = ?1 AND owner = ?2",
            params![app, owner],
        )?;
        Ok(())
    }

    fn take_over_lease(
        &self,
        app: &str,
        from: &str,
        to: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let changed = self.lock().execute(
            "UPDATE leases SET owner = ?3, expires_at = ?4 WHERE app = ?1 AND owner = ?2",
            params![app, from, to, expiry_millis(now_millis(), ttl)],
        )?;
        Ok(changed == 1)
    }

    fn record_planned_digest(
        &self,
        app: &str,
        image: &str,
        prior: &str,
        digest: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO planned_digests (app, image, prior, digest, planned_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (app, image, prior) DO UPDATE SET digest = ?4, planned_at = ?5",
            params![app, image, prior, digest, now_millis()],
        )?;
        Ok(())
    }

    fn planned_digest(
        &self,
        app: &str,
        image: &str,
        prior: &str,
    ) -> Result<Option<(String, SystemTime)>, StoreError> {
        let row = self
            .lock()
            .query_row(
                "SELECT digest, planned_at FROM planned_digests \
                 WHERE app = ?1 AND image = ?2 AND prior = ?3",
                params![app, image, prior],
                |row| Ok((row.get::<_, String>(0)?, from_millis(row.get(1)?))),
            )
            .optional()?;
        Ok(row)
    }

    fn remember_image(&self, top_digest: &str, image: &KnownImage) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO known_images (top_digest, digest, index_digest, size_bytes, resolved_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (top_digest) DO UPDATE SET digest = ?2, index_digest = ?3, \
             size_bytes = ?4, resolved_at = ?5",
            params![
                top_digest,
                image.digest,
                image.index_digest,
                i64::try_from(image.size_bytes).unwrap_or(i64::MAX),
                now_millis()
            ],
        )?;
        Ok(())
    }

    fn known_image(&self, top_digest: &str) -> Result<Option<KnownImage>, StoreError> {
        let row = self
            .lock()
            .query_row(
                "SELECT digest, index_digest, size_bytes FROM known_images WHERE top_digest = ?1",
                params![top_digest],
                |row| {
                    Ok(KnownImage {
                        digest: row.get(0)?,
                        index_digest: row.get(1)?,
                        size_bytes: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    })
                },
            )
            .optional()?;
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::{KeySource, SecretKey, Store};
    use super::*;

    fn options(dir: &Path) -> StoreOptions {
        StoreOptions {
            state_dir: dir.to_owned(),
            secret_key: None,
        }
    }

    fn new_credential(name: &str, secret: &str) -> NewCredential {
        NewCredential {
            name: name.to_owned(),
            registry: "registry.example.com:5000".to_owned(),
            username: "robot".to_owned(),
            secret: Secret::new(secret),
            secret_version: Some(1),
        }
    }

    fn raw(store: &SqliteStore) -> MutexGuard<'_, Connection> {
        store.lock()
    }

    #[test]
    fn a_scheduled_run_is_claimed_once_and_a_dead_runners_run_is_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let claim = |owner: &str, at: Option<SystemTime>, ttl: Duration| NewJobRun {
            app: "web".into(),
            job: "report".into(),
            scheduled_at: at,
            trigger: "schedule".into(),
            owner: owner.into(),
            ttl,
        };
        let long = Duration::from_secs(60);
        let run = store
            .claim_job_run(&claim("a", Some(at), long))
            .unwrap()
            .unwrap();
        assert_eq!(run.state, JobRunState::Running);
        assert!(store
            .claim_job_run(&claim("b", Some(at), long))
            .unwrap()
            .is_none());
        // On-demand runs never conflict.
        assert!(store
            .claim_job_run(&claim("b", None, long))
            .unwrap()
            .is_some());
        assert!(store
            .claim_job_run(&claim("b", None, long))
            .unwrap()
            .is_some());
        // A missed or skipped time is not claimed again, and not twice.
        let later = at + Duration::from_secs(60);
        let n = store
            .record_job_runs_not_run("web", "report", &[at, later], JobRunState::Missed, "down")
            .unwrap();
        assert_eq!(n, 1, "only the time not recorded yet");
        assert!(store
            .claim_job_run(&claim("b", Some(later), long))
            .unwrap()
            .is_none());
        assert_eq!(
            store.last_scheduled_at("web", "report").unwrap(),
            Some(later)
        );
        // Only the owner ends it; a replaced run cannot be ended again.
        assert!(store
            .set_job_run_container(run.id, "a", "local", "c1", "sha256:x", Some(2))
            .unwrap());
        let end = JobRunEnd {
            state: JobRunState::Succeeded,
            exit_code: Some(0),
            reason: None,
            log_tail: vec!["ok".into()],
        };
        assert!(!store.finish_job_run(run.id, "b", &end).unwrap());
        assert!(store
            .stop_job_run(run.id, JobRunState::Replaced, "newer")
            .unwrap());
        assert!(!store.finish_job_run(run.id, "a", &end).unwrap());
        let listed = store.list_job_runs("web", Some("report"), 10).unwrap();
        let first = listed.iter().find(|r| r.id == run.id).unwrap();
        assert_eq!(first.state, JobRunState::Replaced);
        assert_eq!(first.container_id.as_deref(), Some("c1"));
        assert_eq!(first.release, Some(2));
        // A runner that stops renewing: its run is lost at the next look.
        let short = store
            .claim_job_run(&claim(
                "dead",
                Some(at + Duration::from_secs(120)),
                Duration::ZERO,
            ))
            .unwrap()
            .unwrap();
        let running = store.running_job_runs("web", "report").unwrap();
        assert!(running.iter().all(|r| r.id != short.id), "{running:?}");
        let lost = store.list_job_runs("web", Some("report"), 10).unwrap();
        let lost = lost.iter().find(|r| r.id == short.id).unwrap();
        assert_eq!(lost.state, JobRunState::Lost);
        assert!(!store.renew_job_run(short.id, "dead", long).unwrap());
    }

    #[test]
    fn create_app_refuses_an_existing_app_and_keeps_its_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        store.create_app("web", None, "{\"v\":1}").unwrap();
        let err = store.create_app("web", None, "{\"v\":2}").unwrap_err();
        assert!(
            matches!(err, StoreError::AppExists { ref name } if name == "web"),
            "{err}"
        );
        assert!(err.to_string().contains("terraform import"), "{err}");
        assert_eq!(
            store.get_app("web").unwrap().unwrap().spec_json,
            "{\"v\":1}"
        );
        // An update replaces it; after a delete, a create works again.
        store.upsert_app("web", None, "{\"v\":3}").unwrap();
        assert_eq!(
            store.get_app("web").unwrap().unwrap().spec_json,
            "{\"v\":3}"
        );
        assert!(store.delete_app("web").unwrap());
        store.create_app("web", None, "{}").unwrap();
    }

    #[test]
    fn opens_fresh_and_reopens() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let store = SqliteStore::open(&options(&dir)).unwrap();
        let id = store
            .insert_credential(new_credential("a", "tok"))
            .unwrap()
            .id;
        {
            let conn = raw(&store);
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, super::super::SCHEMA_VERSION);
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let fk: bool = conn
                .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
                .unwrap();
            assert!(fk);
        }
        drop(store);
        for name in ["", DATABASE_FILE_NAME, KEY_FILE_NAME] {
            let mode = std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            let want = if name.is_empty() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "mode of {name:?}");
        }
        let again = SqliteStore::open(&options(&dir)).unwrap();
        again.integrity_check().unwrap();
        let got = again.get_credential(&id).unwrap().unwrap();
        assert_eq!(got.secret.expose(), "tok");
    }

    #[test]
    fn wrong_key_fails_at_open_with_the_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        SqliteStore::open(&options(tmp.path())).unwrap();
        let other = SecretKey::generate(KeySource::Environment).unwrap();
        let err = SqliteStore::open(&StoreOptions {
            state_dir: tmp.path().to_owned(),
            secret_key: Some(other),
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "the secret key does not match the one this state directory was created with"
            ),
            "{text}"
        );
        assert!(text.contains("BERTH_SECRET_KEY"), "{text}");
    }

    #[test]
    fn replaced_key_file_is_a_mismatch_and_missing_key_file_is_not_regenerated() {
        let tmp = tempfile::tempdir().unwrap();
        SqliteStore::open(&options(tmp.path())).unwrap();
        let key_file = tmp.path().join(KEY_FILE_NAME);
        let original = std::fs::read(&key_file).unwrap();

        let stranger = SecretKey::generate(KeySource::Environment).unwrap();
        std::fs::write(&key_file, stranger.expose_base64()).unwrap();
        let err = SqliteStore::open(&options(tmp.path())).unwrap_err();
        assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
        assert!(
            err.to_string().contains(&key_file.display().to_string()),
            "{err}"
        );

        std::fs::remove_file(&key_file).unwrap();
        let err = SqliteStore::open(&options(tmp.path())).unwrap_err();
        assert!(matches!(err, StoreError::KeyMissing { .. }), "{err}");
        assert!(!key_file.exists(), "a new key must not be generated");

        std::fs::write(&key_file, original).unwrap();
        SqliteStore::open(&options(tmp.path())).unwrap();
    }

    #[test]
    fn env_key_is_used_and_no_key_file_written() {
        let tmp = tempfile::tempdir().unwrap();
        let key = SecretKey::generate(KeySource::Environment).unwrap();
        let opts = StoreOptions {
            state_dir: tmp.path().to_owned(),
            secret_key: Some(key.clone()),
        };
        let store = SqliteStore::open(&opts).unwrap();
        let id = store
            .insert_credential(new_credential("a", "tok"))
            .unwrap()
            .id;
        drop(store);
        assert!(!tmp.path().join(KEY_FILE_NAME).exists());
        let store = SqliteStore::open(&opts).unwrap();
        assert_eq!(
            store.get_credential(&id).unwrap().unwrap().secret.expose(),
            "tok"
        );
    }

    #[test]
    fn credential_crud() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let created = store.insert_credential(new_credential("b", "one")).unwrap();
        assert!(
            created.id.starts_with("rc-") && created.id.len() == 19,
            "{}",
            created.id
        );
        assert!(created.id[3..].chars().all(|c| c.is_ascii_hexdigit()));
        let other = store.insert_credential(new_credential("a", "two")).unwrap();

        let got = store.get_credential(&created.id).unwrap().unwrap();
        assert_eq!(got.name, "b");
        assert_eq!(got.registry, "registry.example.com:5000");
        assert_eq!(got.username, "robot");
        assert_eq!(got.secret.expose(), "one");
        assert_eq!(got.secret_version, Some(1));
        assert_eq!(got.created_at, created.created_at);
        assert!(store
            .get_credential("rc-0000000000000000")
            .unwrap()
            .is_none());

        let updated = store
            .update_credential(
                &created.id,
                CredentialUpdate {
                    username: Some("bot".into()),
                    secret: Some(Secret::new("three")),
                    secret_version: Some(Some(2)),
                    ..CredentialUpdate::default()
                },
            )
            .unwrap();
        assert_eq!(
            (updated.name.as_str(), updated.username.as_str()),
            ("b", "bot")
        );
        let got = store.get_credential(&created.id).unwrap().unwrap();
        assert_eq!(got.secret.expose(), "three");
        assert_eq!(got.secret_version, Some(2));
        assert_eq!(got.username, "bot");
        assert!(got.updated_at >= got.created_at);

        let renamed = store
            .update_credential(
                &created.id,
                CredentialUpdate {
                    name: Some("c".into()),
                    secret_version: Some(None),
                    ..CredentialUpdate::default()
                },
            )
            .unwrap();
        assert_eq!(renamed.secret.expose(), "three");
        assert_eq!(renamed.secret_version, None);

        let err = store
            .update_credential("rc-missing", CredentialUpdate::default())
            .unwrap_err();
        assert!(matches!(err, StoreError::CredentialNotFound { .. }));

        let listed: Vec<_> = store
            .list_credentials()
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.secret.expose().to_owned()))
            .collect();
        assert_eq!(
            listed,
            [
                ("a".to_owned(), "two".to_owned()),
                ("c".to_owned(), "three".to_owned())
            ]
        );

        assert!(store.delete_credential(&other.id).unwrap());
        assert!(!store.delete_credential(&other.id).unwrap());
        assert_eq!(store.list_credentials().unwrap().len(), 1);
        // Debug of a credential never shows the secret.
        assert!(!format!("{got:?}").contains("three"));
    }

    #[test]
    fn delete_is_refused_while_an_app_uses_the_credential() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let cred = store.insert_credential(new_credential("a", "tok")).unwrap();
        store.upsert_app("web", Some(&cred.id), "{}").unwrap();
        store.upsert_app("api", Some(&cred.id), "{}").unwrap();
        store.upsert_app("free", None, "{\"x\":1}").unwrap();
        assert_eq!(
            store.apps_using_credential(&cred.id).unwrap(),
            ["api", "web"]
        );

        let err = store.delete_credential(&cred.id).unwrap_err();
        match &err {
            StoreError::CredentialInUse { id, apps } => {
                assert_eq!(id, &cred.id);
                assert_eq!(apps, &["api", "web"]);
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("app `web`"), "{err}");
        assert!(store.get_credential(&cred.id).unwrap().is_some());

        assert!(store.delete_app("api").unwrap());
        // Re-pointing an app away from the credential also frees it.
        store.upsert_app("web", None, "{}").unwrap();
        assert!(store.apps_using_credential(&cred.id).unwrap().is_empty());
        assert!(store.delete_credential(&cred.id).unwrap());
        assert!(store.get_credential(&cred.id).unwrap().is_none());
    }

    #[test]
    fn app_records() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let err = store.upsert_app("web", Some("rc-nope"), "{}").unwrap_err();
        assert!(matches!(err, StoreError::CredentialNotFound { .. }));
        assert!(store.get_app("web").unwrap().is_none());
        let first = store.upsert_app("web", None, "{\"a\":1}").unwrap();
        assert_eq!(store.get_app("web").unwrap().unwrap(), first);
        store.upsert_app("web", None, "{\"a\":2}").unwrap();
        store.upsert_app("db", None, "{}").unwrap();
        let apps = store.list_apps().unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].name, "db");
        assert_eq!(apps[1].spec_json, "{\"a\":2}");
        assert!(store.delete_app("web").unwrap());
        assert!(!store.delete_app("web").unwrap());
    }

    #[test]
    fn a_secret_moved_to_another_record_fails_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let a = store
            .insert_credential(new_credential("a", "secret-a"))
            .unwrap();
        let b = store
            .insert_credential(new_credential("b", "secret-b"))
            .unwrap();
        raw(&store)
            .execute(
                "UPDATE registry_credentials SET secret = \
                 (SELECT secret FROM registry_credentials WHERE id = ?1) WHERE id = ?2",
                [&a.id, &b.id],
            )
            .unwrap();
        let err = store.get_credential(&b.id).unwrap_err();
        assert!(
            matches!(err, StoreError::Decrypt { ref id, .. } if *id == b.id),
            "{err}"
        );
        assert!(!err.to_string().contains("secret-a"));
        assert!(store.get_credential(&a.id).unwrap().is_some());
    }

    #[test]
    fn an_apps_sealed_data_is_bound_to_it_and_never_plain() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let marker = b"app-secret-marker-91c2";
        let err = store.set_app_sealed("web", marker).unwrap_err();
        assert!(matches!(err, StoreError::AppNotFound { .. }), "{err}");
        store.upsert_app("web", None, "{}").unwrap();
        assert_eq!(store.app_sealed("web").unwrap(), None);
        store.set_app_sealed("web", marker).unwrap();
        assert_eq!(
            store.app_sealed("web").unwrap().as_deref(),
            Some(&marker[..])
        );
        // An update of the spec keeps it.
        store.upsert_app("web", None, "{\"v\":2}").unwrap();
        assert_eq!(
            store.app_sealed("web").unwrap().as_deref(),
            Some(&marker[..])
        );
        drop(store);
        for file in [
            DATABASE_FILE_NAME.to_string(),
            format!("{DATABASE_FILE_NAME}-wal"),
        ] {
            let bytes = std::fs::read(tmp.path().join(file)).unwrap_or_default();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "the sealed data is in the database in plain text"
            );
        }
        // Sealed for one app, it does not open as another's.
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        store.upsert_app("api", None, "{}").unwrap();
        let sealed: Vec<u8> = raw(&store)
            .query_row("SELECT secrets FROM apps WHERE name = 'web'", [], |r| {
                r.get(0)
            })
            .unwrap();
        raw(&store)
            .execute("UPDATE apps SET secrets = ?1 WHERE name = 'api'", [sealed])
            .unwrap();
        let err = store.app_sealed("api").unwrap_err();
        assert!(matches!(err, StoreError::Decrypt { .. }), "{err}");
    }

    #[test]
    fn hooks_keep_their_key_hash_only() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let a = store.insert_hook("web", "aa").unwrap();
        let b = store.insert_hook("web", "bb").unwrap();
        assert!(a.id.starts_with("dh-") && a.id.len() == 19, "{}", a.id);
        assert_ne!(a.id, b.id);
        assert_eq!(store.get_hook(&a.id).unwrap().unwrap().key_hash, "aa");
        assert_eq!(store.list_hooks("web").unwrap().len(), 2);
        assert!(store.delete_hook(&a.id).unwrap());
        assert!(!store.delete_hook(&a.id).unwrap());
        assert_eq!(store.get_hook(&a.id).unwrap(), None);
        assert_eq!(store.list_hooks("web").unwrap(), vec![b]);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        raw(&store)
            .pragma_update(None, "user_version", super::super::SCHEMA_VERSION + 5)
            .unwrap();
        drop(store);
        let err = SqliteStore::open(&options(tmp.path())).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    }

    #[test]
    fn secrets_are_not_stored_in_plain_text() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let marker = "plain-text-marker-7f3a9c";
        let cred = store
            .insert_credential(new_credential("a", marker))
            .unwrap();
        store
            .update_credential(
                &cred.id,
                CredentialUpdate {
                    secret: Some(Secret::new(format!("{marker}-v2"))),
                    ..CredentialUpdate::default()
                },
            )
            .unwrap();
        // Read the files while the store is open (records still in the WAL)
        // and after it is closed (checkpointed into berth.db).
        let scan = |label: &str| {
            for name in ["berth.db", "berth.db-wal", "berth.db-shm"] {
                let Ok(bytes) = std::fs::read(tmp.path().join(name)) else {
                    continue;
                };
                assert!(
                    !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                    "{label}: secret found in plain text in {name}"
                );
            }
        };
        let wal = std::fs::metadata(tmp.path().join("berth.db-wal")).unwrap();
        assert!(wal.len() > 0, "the WAL should hold the writes");
        scan("open");
        drop(store);
        scan("closed");
    }

    fn new_release(app: &str, release: u64) -> NewRelease {
        NewRelease {
            app: app.to_owned(),
            release,
            digest: format!("sha256:{release:064x}"),
            image: format!("registry.example.com/{app}@sha256:{release:064x}"),
            spec_json: format!("{{\"release\":{release}}}"),
            trigger: "berth apply".to_owned(),
        }
    }

    fn table_names(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn migrates_a_version_1_database_and_keeps_its_records() {
        let tmp = tempfile::tempdir().unwrap();
        let old = SqliteStore::open_at_version(&options(tmp.path()), 1).unwrap();
        let cred = old.insert_credential(new_credential("a", "tok")).unwrap();
        old.upsert_app("web", Some(&cred.id), "{\"v\":1}").unwrap();
        {
            let conn = raw(&old);
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, 1);
            assert_eq!(table_names(&conn), ["apps", "meta", "registry_credentials"]);
        }
        drop(old);

        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        {
            let conn = raw(&store);
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, SCHEMA_VERSION);
            assert_eq!(
                table_names(&conn),
                [
                    "apps",
                    "deploy_hooks",
                    "job_runs",
                    "known_images",
                    "leases",
                    "meta",
                    "planned_digests",
                    "registry_credentials",
                    "releases"
                ]
            );
        }
        store.integrity_check().unwrap();
        let got = store.get_credential(&cred.id).unwrap().unwrap();
        assert_eq!(got.secret.expose(), "tok");
        let app = store.get_app("web").unwrap().unwrap();
        assert_eq!(app.credential_id.as_deref(), Some(cred.id.as_str()));
        assert_eq!(app.spec_json, "{\"v\":1}");
        // The new tables work.
        store.start_release(new_release("web", 1)).unwrap();
        assert_eq!(store.last_release_number("web").unwrap(), Some(1));
        assert_eq!(
            store
                .acquire_lease("web", "me", Duration::from_secs(60))
                .unwrap(),
            LeaseOutcome::Acquired
        );
    }

    #[test]
    fn release_lifecycle() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        assert_eq!(store.last_release_number("web").unwrap(), None);
        assert!(store.list_releases("web", 10).unwrap().is_empty());
        assert!(store.get_release("web", 1).unwrap().is_none());

        let before = SystemTime::now() - Duration::from_millis(5);
        let started = store.start_release(new_release("web", 1)).unwrap();
        assert_eq!(started.outcome, ReleaseOutcome::Running);
        assert_eq!(started.trigger, "berth apply");
        assert!(started.phases.is_empty() && started.error.is_none());
        assert!(started.finished_at.is_none());
        assert!(started.started_at >= before);
        assert_eq!(store.get_release("web", 1).unwrap().unwrap(), started);

        let err = store.start_release(new_release("web", 1)).unwrap_err();
        assert!(
            matches!(err, StoreError::ReleaseExists { ref app, release: 1 } if app == "web"),
            "{err}"
        );
        // The refused start changed nothing.
        assert_eq!(store.get_release("web", 1).unwrap().unwrap(), started);

        let phases = vec![
            ("resolve".to_owned(), 12),
            ("pull".to_owned(), 3400),
            ("roll".to_owned(), 900),
        ];
        store
            .finish_release("web", 1, ReleaseOutcome::Succeeded, None, &phases)
            .unwrap();
        let done = store.get_release("web", 1).unwrap().unwrap();
        assert_eq!(done.outcome, ReleaseOutcome::Succeeded);
        assert_eq!(done.phases, phases);
        assert!(done.error.is_none());
        assert!(done.finished_at.unwrap() >= done.started_at);

        let err = store
            .finish_release("web", 1, ReleaseOutcome::Failed, Some("x"), &[])
            .unwrap_err();
        assert!(matches!(err, StoreError::ReleaseFinished { .. }), "{err}");
        assert!(err.to_string().contains("succeeded"), "{err}");
        let err = store
            .finish_release("web", 9, ReleaseOutcome::Failed, None, &[])
            .unwrap_err();
        assert!(matches!(err, StoreError::ReleaseNotFound { .. }), "{err}");

        store.start_release(new_release("web", 2)).unwrap();
        let err = store
            .finish_release("web", 2, ReleaseOutcome::Running, None, &[])
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidRequest(_)), "{err}");
        store
            .finish_release(
                "web",
                2,
                ReleaseOutcome::RolledBack,
                Some("health check timed out"),
                &[("roll".to_owned(), 30_000)],
            )
            .unwrap();
        let mut rollback = new_release("web", 3);
        rollback.trigger = "rollback".into();
        store.start_release(rollback).unwrap();
        // Another app's journal is separate.
        store.start_release(new_release("api", 7)).unwrap();

        let listed = store.list_releases("web", 10).unwrap();
        let numbers: Vec<u64> = listed.iter().map(|r| r.release).collect();
        assert_eq!(numbers, [3, 2, 1]);
        assert_eq!(listed[0].outcome, ReleaseOutcome::Running);
        assert_eq!(listed[0].trigger, "rollback");
        assert_eq!(listed[1].outcome, ReleaseOutcome::RolledBack);
        assert_eq!(listed[1].error.as_deref(), Some("health check timed out"));
        let newest: Vec<u64> = store
            .list_releases("web", 2)
            .unwrap()
            .iter()
            .map(|r| r.release)
            .collect();
        assert_eq!(newest, [3, 2]);
        assert!(store.list_releases("web", 0).unwrap().is_empty());
        assert_eq!(store.list_releases("web", usize::MAX).unwrap().len(), 3);
        assert_eq!(store.last_release_number("web").unwrap(), Some(3));
        assert_eq!(store.last_release_number("api").unwrap(), Some(7));

        let err = store
            .start_release(new_release("web", u64::MAX))
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidRequest(_)), "{err}");
        assert!(store.get_release("web", u64::MAX).unwrap().is_none());

        store.delete_releases("web").unwrap();
        assert!(store.list_releases("web", 10).unwrap().is_empty());
        assert_eq!(store.last_release_number("web").unwrap(), None);
        assert_eq!(store.last_release_number("api").unwrap(), Some(7));
    }

    #[test]
    fn release_outcome_text() {
        for (outcome, text) in [
            (ReleaseOutcome::Running, "running"),
            (ReleaseOutcome::Succeeded, "succeeded"),
            (ReleaseOutcome::Failed, "failed"),
            (ReleaseOutcome::RolledBack, "rolled_back"),
        ] {
            assert_eq!(outcome.to_string(), text);
            assert_eq!(text.parse::<ReleaseOutcome>().unwrap(), outcome);
            assert_eq!(
                serde_json::to_string(&outcome).unwrap(),
                format!("\"{text}\"")
            );
        }
        assert!("done".parse::<ReleaseOutcome>().is_err());
    }

    #[test]
    fn leases() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let long = Duration::from_secs(60);
        assert_eq!(
            store.acquire_lease("web", "a", long).unwrap(),
            LeaseOutcome::Acquired
        );
        let before = SystemTime::now();
        match store.acquire_lease("web", "b", long).unwrap() {
            LeaseOutcome::HeldBy { owner, expires_at } => {
                assert_eq!(owner, "a");
                assert!(expires_at > before + Duration::from_secs(50));
                assert!(expires_at <= before + long + Duration::from_secs(1));
            }
            other => panic!("b got {other:?}"),
        }
        // Another app's lease is independent.
        assert_eq!(
            store.acquire_lease("api", "b", long).unwrap(),
            LeaseOutcome::Acquired
        );
        // Acquiring again as the holder extends the lease.
        assert_eq!(
            store.acquire_lease("web", "a", long).unwrap(),
            LeaseOutcome::Acquired
        );
        assert!(store.renew_lease("web", "a", long).unwrap());
        assert!(!store.renew_lease("web", "b", long).unwrap());
        // Releasing someone else's lease does nothing.
        store.release_lease("web", "b").unwrap();
        assert!(matches!(
            store.acquire_lease("web", "b", long).unwrap(),
            LeaseOutcome::HeldBy { .. }
        ));
        store.release_lease("web", "a").unwrap();
        assert!(!store.renew_lease("web", "a", long).unwrap());
        assert_eq!(
            store.acquire_lease("web", "b", long).unwrap(),
            LeaseOutcome::Acquired
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let short = Duration::from_millis(200);
        assert_eq!(
            store.acquire_lease("web", "a", short).unwrap(),
            LeaseOutcome::Acquired
        );
        let expires = match store.acquire_lease("web", "b", short).unwrap() {
            LeaseOutcome::HeldBy { owner, expires_at } => {
                assert_eq!(owner, "a");
                expires_at
            }
            other => panic!("b got {other:?}"),
        };
        // A stopped holder (no renewals): the lease runs out, bounded wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            std::thread::sleep(Duration::from_millis(50));
            match store.acquire_lease("web", "b", short).unwrap() {
                LeaseOutcome::Acquired => break,
                LeaseOutcome::HeldBy { .. } => {
                    assert!(std::time::Instant::now() < deadline, "never expired")
                }
            }
        }
        assert!(SystemTime::now() >= expires);
        // a's lease is gone: renewing says so and releasing leaves b's alone.
        assert!(!store.renew_lease("web", "a", short).unwrap());
        store.release_lease("web", "a").unwrap();
        assert!(store
            .renew_lease("web", "b", Duration::from_secs(60))
            .unwrap());
        assert!(matches!(
            store.acquire_lease("web", "a", short).unwrap(),
            LeaseOutcome::HeldBy { ref owner, .. } if owner == "b"
        ));
    }

    #[test]
    fn lease_owners_are_distinct() {
        let a = super::super::lease_owner();
        let b = super::super::lease_owner();
        assert_ne!(a, b);
        let parts: Vec<&str> = a.rsplitn(3, ':').collect();
        assert_eq!(parts.len(), 3, "{a}");
        assert_eq!(parts[0].len(), 6);
        assert!(parts[0].chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        let (pid, start) = parts[1].split_once('@').expect("pid@start");
        assert_eq!(pid, std::process::id().to_string());
        assert!(start.parse::<u64>().is_ok(), "{a}");
        assert!(!parts[2].is_empty());
    }

    #[test]
    fn a_lease_is_taken_over_only_from_its_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&options(tmp.path())).unwrap();
        let long = Duration::from_secs(60);
        store.acquire_lease("web", "dead", long).unwrap();
        assert!(!store.take_over_lease("web", "other", "me", long).unwrap());
        assert!(store.take_over_lease("web", "dead", "me", long).unwrap());
        assert!(store.renew_lease("web", "me", long).unwrap());
        assert!(!store.renew_lease("web", "dead", long).unwrap());
        // Nothing to take over for an app without a lease.
        assert!(!store.take_over_lease("api", "dead", "me", long).unwrap());
    }

    #[test]
    fn only_a_gone_process_of_this_machine_loses_its_lease() {
        use super::super::{lease_owner, lease_owner_is_gone};
        let mine = lease_owner();
        let host = mine.split(':').next().unwrap().to_owned();
        assert!(!lease_owner_is_gone(&mine), "this process runs");
        // A process that ran and exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(lease_owner_is_gone(&format!("{host}:{pid}@1:abcdef")));
        assert!(lease_owner_is_gone(&format!("{host}:{pid}:abcdef")));
        // pid 1 runs, but not the process that started at tick 1 after
        // boot... unless it did: read its start to know.
        let init_start = super::super::process_start(1).unwrap();
        assert!(!lease_owner_is_gone(&format!(
            "{host}:1@{init_start}:abcdef"
        )));
        assert!(lease_owner_is_gone(&format!(
            "{host}:1@{}:abcdef",
            init_start + 1
        )));
        // Another machine's, or an unreadable owner: never called gone.
        assert!(!lease_owner_is_gone(&format!(
            "elsewhere-{host}:{pid}@1:abcdef"
        )));
        assert!(!lease_owner_is_gone("a"));
        assert!(!lease_owner_is_gone(&format!("{host}:x:abcdef")));
    }

    #[tokio::test]
    async fn async_store_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(options(tmp.path())).await.unwrap();
        let cred = store
            .insert_credential(new_credential("a", "tok"))
            .await
            .unwrap();
        store
            .upsert_app("web".into(), Some(cred.id.clone()), "{}".into())
            .await
            .unwrap();
        let err = store.delete_credential(cred.id.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::CredentialInUse { .. }));
        assert_eq!(store.list_apps().await.unwrap().len(), 1);
        let got = store.get_credential(cred.id).await.unwrap().unwrap();
        assert_eq!(got.secret.expose(), "tok");

        store.start_release(new_release("web", 1)).await.unwrap();
        store
            .finish_release(
                "web".into(),
                1,
                ReleaseOutcome::Failed,
                Some("pull failed".into()),
                vec![("pull".into(), 5)],
            )
            .await
            .unwrap();
        let got = store.get_release("web".into(), 1).await.unwrap().unwrap();
        assert_eq!(got.error.as_deref(), Some("pull failed"));
        assert_eq!(store.list_releases("web".into(), 5).await.unwrap().len(), 1);
        assert_eq!(
            store.last_release_number("web".into()).await.unwrap(),
            Some(1)
        );
        store.delete_releases("web".into()).await.unwrap();
        assert!(store.get_release("web".into(), 1).await.unwrap().is_none());

        let ttl = Duration::from_secs(30);
        let owner = super::super::lease_owner();
        let outcome = store
            .acquire_lease("web".into(), owner.clone(), ttl)
            .await
            .unwrap();
        assert_eq!(outcome, LeaseOutcome::Acquired);
        assert!(store
            .renew_lease("web".into(), owner.clone(), ttl)
            .await
            .unwrap());
        store.release_lease("web".into(), owner).await.unwrap();
        let outcome = store
            .acquire_lease("web".into(), "other".into(), ttl)
            .await
            .unwrap();
        assert_eq!(outcome, LeaseOutcome::Acquired);
    }
}
