//! The SQLite schema, as an ordered list of migrations tracked with
//! `PRAGMA user_version`. Migration `n` (1-based) takes the database from
//! version `n - 1` to `n` in one transaction; a database newer than this
//! build is refused. Append new migrations; never edit a released one.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::error::StoreError;

/// Every migration, in order. The schema version is the count applied.
const MIGRATIONS: &[&str] = &[
    // 1: key check, registry credentials, app records.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL
    ) STRICT;

    CREATE TABLE registry_credentials (
        id             TEXT PRIMARY KEY NOT NULL,
        name           TEXT NOT NULL,
        registry       TEXT NOT NULL,
        username       TEXT NOT NULL,
        secret         BLOB NOT NULL,
        secret_version INTEGER,
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE apps (
        name          TEXT PRIMARY KEY NOT NULL,
        credential_id TEXT REFERENCES registry_credentials (id),
        spec_json     TEXT NOT NULL,
        updated_at    INTEGER NOT NULL
    ) STRICT;

    CREATE INDEX apps_by_credential ON apps (credential_id);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the database up to [`SCHEMA_VERSION`]. Safe when several
/// processes open the same database at once: each step re-reads the version
/// inside its write transaction, so a step another process already applied
/// is skipped.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let too_new = |found| StoreError::SchemaTooNew {
        path: path.to_owned(),
        found,
        supported: SCHEMA_VERSION,
    };
    let current = user_version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(too_new(current));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= current {
            continue;
        }
        let failed = |source| StoreError::Migration { version, source };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        let now = user_version(&tx).map_err(failed)?;
        if now > SCHEMA_VERSION {
            return Err(too_new(now));
        }
        if now >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_empty_and_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tables, ["apps", "meta", "registry_credentials"]);
    }

    #[test]
    fn refuses_a_newer_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn, Path::new("/x/berth.db")).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }));
        let text = err.to_string();
        assert!(
            text.contains("/x/berth.db") && text.contains("upgrade Berth"),
            "{text}"
        );
    }
}
