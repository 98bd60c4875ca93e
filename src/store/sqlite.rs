//! [`SqliteStore`]: the embedded backend of [`Records`], one `berth.db` file
//! in the state directory. Owns the connection settings (WAL, busy timeout,
//! foreign keys, `synchronous = FULL`), the key check that makes a wrong key
//! fail at open, and the SQL of every record operation.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

use super::crypto::{create_key_file, read_key_file, Cipher, RecordKind, KEY_FILE_NAME};
use super::error::StoreError;
use super::migrations::migrate;
use super::paths::ensure_state_dir;
use super::{
    AppRecord, Credential, CredentialUpdate, NewCredential, Records, Secret, StoreOptions,
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
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| StoreError::Crypto("the random generator failed"))?;
    Ok(format!("rc-{}", hex::encode(bytes)))
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

impl SqliteStore {
    /// Opens `<state_dir>/berth.db`, creating the directory (0700), the
    /// database (0600) and the key file as needed, migrating the schema, and
    /// checking that the key is the one the database was created with.
    pub fn open(options: &StoreOptions) -> Result<SqliteStore, StoreError> {
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
        migrate(&mut conn, &path)?;

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
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
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
    }
}
