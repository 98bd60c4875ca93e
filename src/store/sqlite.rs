//! [`SqliteStore`]: the embedded backend of [`Records`], one `berth.db` file
//! in the state directory. Owns the connection settings (WAL, busy timeout,
//! foreign keys, `synchronous = FULL`), the key check that makes a wrong key
//! fail at open, and the SQL of every record operation.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rusqlite::types::Type;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

use super::common::{
    check_finishable, finish_arguments, from_millis, job_run_id, millis, new_id, new_key_check,
    now_millis, open_credential, phases_json, release_number, seal_credential, ttl_millis,
    verify_key_check, CredentialRow, CREDENTIAL_COLUMNS, JOB_RUN_COLUMNS, KEY_CHECK_META,
    RELEASE_COLUMNS,
};
use super::copy::{DumpedApp, PlannedDigest, StoreDump, StoreInfo};
use super::crypto::{create_key_file, read_key_file, Cipher, RecordKind, KEY_FILE_NAME};
use super::error::{DatabaseError, DatabaseErrorKind, StoreError};
use super::migrations::{migrate_to, user_version};
use super::paths::ensure_state_dir;
use super::{
    AppRecord, Credential, CredentialUpdate, HookRecord, JobRunEnd, JobRunRecord, JobRunState,
    KnownImage, LeaseFence, LeaseOutcome, NewCredential, NewJobRun, NewRelease, Records,
    ReleaseOutcome, ReleaseRecord, Secret, StoreLocation, StoreOptions, SCHEMA_VERSION,
};

/// The database file name inside the state directory.
pub const DATABASE_FILE_NAME: &str = "berth.db";

/// How long a write waits for another process's write to finish.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// What [`Records::info`] counts: (kind, table).
pub(super) const COUNTED_TABLES: [(&str, &str); 7] = [
    ("registry credentials", "registry_credentials"),
    ("apps", "apps"),
    ("deploy hooks", "deploy_hooks"),
    ("releases", "releases"),
    ("job runs", "job_runs"),
    ("known images", "known_images"),
    ("planned digests", "planned_digests"),
];

fn credential_row(row: &Row<'_>) -> rusqlite::Result<CredentialRow> {
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

/// Now plus `ttl`, in Unix milliseconds (saturating).
fn expiry_millis(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(ttl_millis(ttl))
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
        let path = match &options.location {
            Some(StoreLocation::Sqlite(path)) => {
                if let Some(parent) = path.parent() {
                    ensure_state_dir(parent)?;
                }
                path.clone()
            }
            _ => state_dir.join(DATABASE_FILE_NAME),
        };
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
        if options.migrate {
            migrate_to(&mut conn, &path, version)?;
        } else {
            let found = user_version(&conn)?;
            let location = path.display().to_string();
            if found > SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew {
                    location,
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            if found < SCHEMA_VERSION {
                return Err(StoreError::SchemaBehind {
                    location,
                    found,
                    needed: SCHEMA_VERSION,
                });
            }
        }

        // The key file lives beside the database (the state directory for
        // the default `berth.db`).
        let key_dir = path.parent().unwrap_or(state_dir).to_owned();
        let key_file = key_dir.join(KEY_FILE_NAME);
        let key = match &options.secret_key {
            Some(key) => key.clone(),
            None => match read_key_file(&key_file)? {
                Some(key) => key,
                None => {
                    if Self::read_key_check(&conn)?.is_some() {
                        return Err(StoreError::KeyMissing {
                            state_dir: key_dir.clone(),
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
            location: path.display().to_string(),
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
            let sealed = new_key_check(cipher)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another process may have won the race; its value stays.
            tx.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![KEY_CHECK_META, sealed],
            )?;
            tx.commit()?;
        }
        let stored = Self::read_key_check(conn)?.unwrap_or_default();
        verify_key_check(cipher, key, &stored)
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
        open_credential(&self.cipher, row)
    }

    fn seal_secret(&self, id: &str, secret: &Secret) -> Result<Vec<u8>, StoreError> {
        seal_credential(&self.cipher, id, secret)
    }

    /// Fails with [`StoreError::LeaseLost`] unless `fence` still holds the
    /// app's lease (same owner, same generation), inside `tx`.
    fn check_fence(tx: &Connection, app: &str, fence: &LeaseFence) -> Result<(), StoreError> {
        if fence.app != app {
            return Err(StoreError::LeaseLost {
                app: app.to_owned(),
                holder: None,
            });
        }
        let holder: Option<(String, i64)> = tx
            .query_row(
                "SELECT owner, generation FROM leases WHERE app = ?1",
                [&fence.app],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        match holder {
            Some((owner, generation))
                if owner == fence.owner
                    && u64::try_from(generation).ok() == Some(fence.generation) =>
            {
                Ok(())
            }
            other => Err(StoreError::LeaseLost {
                app: fence.app.clone(),
                holder: other.map(|(owner, _)| owner).filter(|o| !o.is_empty()),
            }),
        }
    }
}

impl Records for SqliteStore {
    fn claim_job_run(&self, new: &NewJobRun) -> Result<Option<JobRunRecord>, StoreError> {
        let now = now_millis();
        let expires = expiry_millis(now, new.ttl);
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
        let expires = expiry_millis(now_millis(), ttl);
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
        let id = new_id("rc")?;
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
                credential_row,
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
                credential_row,
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
                .query_map([], credential_row)?
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

    fn start_release(
        &self,
        new: NewRelease,
        fence: &LeaseFence,
    ) -> Result<ReleaseRecord, StoreError> {
        let number = release_number(new.release)?;
        let now = now_millis();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::check_fence(&tx, &new.app, fence)?;
        let inserted = tx.execute(
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
        tx.commit()?;
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
        fence: &LeaseFence,
    ) -> Result<(), StoreError> {
        let (number, phases_json) = finish_arguments(app, release, outcome, phases)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::check_fence(&tx, app, fence)?;
        let current: Option<String> = tx
            .query_row(
                "SELECT outcome FROM releases WHERE app = ?1 AND number = ?2",
                params![app, number],
                |row| row.get(0),
            )
            .optional()?;
        check_finishable(app, release, current.as_deref())?;
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
        let holder: Option<(String, i64, i64, i64)> = tx
            .query_row(
                "SELECT owner, expires_at, generation, acquired_at FROM leases WHERE app = ?1",
                [app],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?;
        let (generation, acquired_at) = match holder {
            Some((holder, expires_at, _, since)) if holder != owner && expires_at > now => {
                return Ok(LeaseOutcome::HeldBy {
                    owner: holder,
                    expires_at: from_millis(expires_at),
                    since: from_millis(since),
                });
            }
            Some((holder, _, generation, since)) if holder == owner => (generation, since),
            Some((_, _, generation, _)) => (generation + 1, now),
            None => (1, now),
        };
        tx.execute(
            "INSERT INTO leases (app, owner, expires_at, generation, acquired_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (app) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at, generation = excluded.generation, \
             acquired_at = excluded.acquired_at",
            params![app, owner, expiry_millis(now, ttl), generation, acquired_at],
        )?;
        tx.commit()?;
        Ok(LeaseOutcome::Acquired {
            generation: u64::try_from(generation).unwrap_or(0),
        })
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
        // The row stays, so the next holder's generation is higher.
        self.lock().execute(
            "UPDATE leases SET owner = '', expires_at = 0 WHERE app = ?1 AND owner = ?2",
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
    ) -> Result<Option<u64>, StoreError> {
        let now = now_millis();
        let generation: Option<i64> = self
            .lock()
            .query_row(
                "UPDATE leases SET owner = ?3, expires_at = ?4, generation = generation + 1, \
                 acquired_at = ?5 WHERE app = ?1 AND owner = ?2 RETURNING generation",
                params![app, from, to, expiry_millis(now, ttl), now],
                |row| row.get(0),
            )
            .optional()?;
        Ok(generation.map(|g| u64::try_from(g).unwrap_or(0)))
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

    fn info(&self) -> Result<StoreInfo, StoreError> {
        let problems = match self.integrity_check() {
            Ok(()) => Vec::new(),
            Err(StoreError::Corrupt(lines)) => vec![lines],
            Err(e) => return Err(e),
        };
        let conn = self.lock();
        let mut counts = Vec::new();
        for (kind, table) in COUNTED_TABLES {
            let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })?;
            counts.push((kind, u64::try_from(n).unwrap_or(0)));
        }
        Ok(StoreInfo {
            backend: "sqlite",
            location: self.path.display().to_string(),
            server: Some(format!("SQLite {}", rusqlite::version())),
            schema_version: user_version(&conn)?,
            supported_version: SCHEMA_VERSION,
            counts,
            problems,
        })
    }

    fn dump(&self) -> Result<StoreDump, StoreError> {
        let credentials = self.list_credentials()?;
        let mut apps = Vec::new();
        for record in self.list_apps()? {
            let sealed = self.app_sealed(&record.name)?;
            apps.push(DumpedApp { record, sealed });
        }
        let conn = self.lock();
        let hooks = conn
            .prepare("SELECT id, app, key_hash, created_at FROM deploy_hooks ORDER BY id")?
            .query_map([], hook_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let releases = conn
            .prepare(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases ORDER BY app, number"
            ))?
            .query_map([], release_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let job_runs = conn
            .prepare(&format!(
                "SELECT {JOB_RUN_COLUMNS} FROM job_runs ORDER BY id"
            ))?
            .query_map([], job_run_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let known_images = conn
            .prepare(
                "SELECT top_digest, digest, index_digest, size_bytes FROM known_images \
                 ORDER BY top_digest",
            )?
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    KnownImage {
                        digest: row.get(1)?,
                        index_digest: row.get(2)?,
                        size_bytes: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let planned_digests = conn
            .prepare(
                "SELECT app, image, prior, digest, planned_at FROM planned_digests \
                 ORDER BY app, image, prior",
            )?
            .query_map([], |row| {
                Ok(PlannedDigest {
                    app: row.get(0)?,
                    image: row.get(1)?,
                    prior: row.get(2)?,
                    digest: row.get(3)?,
                    planned_at: from_millis(row.get(4)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StoreDump {
            credentials,
            apps,
            hooks,
            releases,
            job_runs,
            known_images,
            planned_digests,
        })
    }

    fn load(&self, dump: &StoreDump) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for c in &dump.credentials {
            tx.execute(
                "INSERT INTO registry_credentials \
                 (id, name, registry, username, secret, secret_version, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 registry = excluded.registry, username = excluded.username, \
                 secret = excluded.secret, secret_version = excluded.secret_version, \
                 created_at = excluded.created_at, updated_at = excluded.updated_at",
                params![
                    c.id,
                    c.name,
                    c.registry,
                    c.username,
                    self.seal_secret(&c.id, &c.secret)?,
                    c.secret_version,
                    millis(c.created_at),
                    millis(c.updated_at)
                ],
            )?;
        }
        for a in &dump.apps {
            let sealed = a
                .sealed
                .as_deref()
                .map(|plain| {
                    self.cipher
                        .seal(RecordKind::AppSecrets, &a.record.name, plain)
                })
                .transpose()?;
            tx.execute(
                "INSERT INTO apps (name, credential_id, spec_json, updated_at, secrets) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (name) DO UPDATE SET credential_id = excluded.credential_id, \
                 spec_json = excluded.spec_json, updated_at = excluded.updated_at, \
                 secrets = excluded.secrets",
                params![
                    a.record.name,
                    a.record.credential_id,
                    a.record.spec_json,
                    millis(a.record.updated_at),
                    sealed
                ],
            )?;
        }
        for h in &dump.hooks {
            tx.execute(
                "INSERT INTO deploy_hooks (id, app, key_hash, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET app = excluded.app, key_hash = excluded.key_hash",
                params![h.id, h.app, h.key_hash, millis(h.created_at)],
            )?;
        }
        for r in &dump.releases {
            tx.execute(
                "INSERT INTO releases (app, number, digest, image, spec_json, triggered_by, \
                 outcome, error, phases_json, started_at, finished_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (app, number) DO UPDATE SET outcome = excluded.outcome, \
                 error = excluded.error, phases_json = excluded.phases_json, \
                 finished_at = excluded.finished_at",
                params![
                    r.app,
                    release_number(r.release)?,
                    r.digest,
                    r.image,
                    r.spec_json,
                    r.trigger,
                    r.outcome.as_str(),
                    r.error,
                    phases_json(&r.phases)?,
                    millis(r.started_at),
                    r.finished_at.map(millis)
                ],
            )?;
        }
        for j in &dump.job_runs {
            let tail = serde_json::to_string(&j.log_tail)
                .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
            tx.execute(
                "INSERT INTO job_runs (id, app, job, scheduled_at, triggered_by, state, owner, \
                 host, container_id, digest, release, exit_code, reason, log_tail_json, \
                 started_at, finished_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
                 ON CONFLICT DO NOTHING",
                params![
                    job_run_id(j.id)?,
                    j.app,
                    j.job,
                    j.scheduled_at.map(millis),
                    j.trigger,
                    j.state.as_str(),
                    j.owner,
                    j.host,
                    j.container_id,
                    j.digest,
                    j.release.map(release_number).transpose()?,
                    j.exit_code,
                    j.reason,
                    tail,
                    j.started_at.map(millis),
                    j.finished_at.map(millis)
                ],
            )?;
        }
        for (top, image) in &dump.known_images {
            tx.execute(
                "INSERT INTO known_images (top_digest, digest, index_digest, size_bytes, resolved_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (top_digest) DO NOTHING",
                params![
                    top,
                    image.digest,
                    image.index_digest,
                    i64::try_from(image.size_bytes).unwrap_or(i64::MAX),
                    now_millis()
                ],
            )?;
        }
        for p in &dump.planned_digests {
            tx.execute(
                "INSERT INTO planned_digests (app, image, prior, digest, planned_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (app, image, prior) DO UPDATE \
                 SET digest = excluded.digest, planned_at = excluded.planned_at",
                params![p.app, p.image, p.prior, p.digest, millis(p.planned_at)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::conformance::{new_credential, new_release};
    use super::super::{KeySource, SecretKey};
    use super::*;

    fn options(dir: &Path) -> StoreOptions {
        StoreOptions {
            state_dir: dir.to_owned(),
            secret_key: None,
            location: None,
            migrate: true,
        }
    }

    fn raw(store: &SqliteStore) -> MutexGuard<'_, Connection> {
        store.lock()
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
            secret_key: Some(key.clone()),
            ..options(tmp.path())
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
        let LeaseOutcome::Acquired { generation } = store
            .acquire_lease("web", "me", Duration::from_secs(60))
            .unwrap()
        else {
            panic!("the lease is free")
        };
        let fence = LeaseFence {
            app: "web".into(),
            owner: "me".into(),
            generation,
        };
        store.start_release(new_release("web", 1), &fence).unwrap();
        assert_eq!(store.last_release_number("web").unwrap(), Some(1));
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
}
