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
    // 2: the releases journal and deploy leases. Times are Unix
    // milliseconds; phases are a JSON array of [name, milliseconds] pairs.
    r#"
    CREATE TABLE releases (
        app          TEXT NOT NULL,
        number       INTEGER NOT NULL CHECK (number >= 0),
        digest       TEXT NOT NULL,
        image        TEXT NOT NULL,
        spec_json    TEXT NOT NULL,
        triggered_by TEXT NOT NULL,
        outcome      TEXT NOT NULL
                     CHECK (outcome IN ('running', 'succeeded', 'failed', 'rolled_back')),
        error        TEXT,
        phases_json  TEXT NOT NULL DEFAULT '[]',
        started_at   INTEGER NOT NULL,
        finished_at  INTEGER,
        PRIMARY KEY (app, number)
    ) STRICT;

    CREATE TABLE leases (
        app        TEXT PRIMARY KEY NOT NULL,
        owner      TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT;
    "#,
    // 3: digests resolved at plan time, so the re-plan terraform makes at
    // apply time can return exactly what the plan showed.
    r#"
    CREATE TABLE planned_digests (
        app        TEXT NOT NULL,
        image      TEXT NOT NULL,
        prior      TEXT NOT NULL,
        digest     TEXT NOT NULL,
        planned_at INTEGER NOT NULL,
        PRIMARY KEY (app, image, prior)
    ) STRICT;
    "#,
    // 4: what each image digest resolved to (content-addressed, so never
    // stale): a plan of an unchanged tag needs only a HEAD request.
    r#"
    CREATE TABLE known_images (
        top_digest   TEXT PRIMARY KEY NOT NULL,
        digest       TEXT NOT NULL,
        index_digest TEXT,
        size_bytes   INTEGER NOT NULL,
        resolved_at  INTEGER NOT NULL
    ) STRICT;
    "#,
    // 5: each app's secret values (sealed, bound to the app), so a deploy
    // without terraform (a hook, a rollback) has the whole spec; and the
    // deploy hooks, by the hash of their key only.
    r#"
    ALTER TABLE apps ADD COLUMN secrets BLOB;

    CREATE TABLE deploy_hooks (
        id         TEXT PRIMARY KEY NOT NULL,
        app        TEXT NOT NULL,
        key_hash   TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;

    CREATE INDEX deploy_hooks_by_app ON deploy_hooks (app);
    "#,
    // 6: the job runs journal. A scheduled run is claimed by inserting its
    // row: (app, job, scheduled_at) is unique; NULL (on demand, deploy
    // jobs) never conflicts.
    r#"
    CREATE TABLE job_runs (
        id               INTEGER PRIMARY KEY,
        app              TEXT NOT NULL,
        job              TEXT NOT NULL,
        scheduled_at     INTEGER,
        triggered_by     TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('running', 'succeeded',
                         'failed', 'timed_out', 'replaced', 'skipped', 'missed', 'lost')),
        owner            TEXT,
        lease_expires_at INTEGER,
        host             TEXT,
        container_id     TEXT,
        digest           TEXT,
        release          INTEGER,
        exit_code        INTEGER,
        reason           TEXT,
        log_tail_json    TEXT NOT NULL DEFAULT '[]',
        started_at       INTEGER,
        finished_at      INTEGER,
        UNIQUE (app, job, scheduled_at)
    ) STRICT;

    CREATE INDEX job_runs_by_job ON job_runs (app, job, id);
    "#,
    // 7: lease generations (fencing) and since when a lease is held.
    r#"
    ALTER TABLE leases ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE leases ADD COLUMN acquired_at INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the database up to [`SCHEMA_VERSION`] (see [`migrate_to`]).
#[cfg(test)]
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_to(conn, path, SCHEMA_VERSION)
}

/// Brings the database up to version `target`: [`SCHEMA_VERSION`] when
/// opening a store; lower only in tests that build a database as an older
/// build left it. A database newer than [`SCHEMA_VERSION`] is refused. Safe
/// when several processes open the same database at once: each step
/// re-reads the version inside its write transaction, so a step another
/// process already applied is skipped.
pub(crate) fn migrate_to(
    conn: &mut Connection,
    path: &Path,
    target: i64,
) -> Result<(), StoreError> {
    let too_new = |found| StoreError::SchemaTooNew {
        location: path.display().to_string(),
        found,
        supported: SCHEMA_VERSION,
    };
    let current = user_version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(too_new(current));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version > target {
            break;
        }
        if version <= current {
            continue;
        }
        let failed = |source: rusqlite::Error| StoreError::Migration {
            version,
            source: source.into(),
        };
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
        assert_eq!(
            tables,
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

    #[test]
    fn one_step_at_a_time() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, Path::new(":memory:"), 1).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 1);
        let count = |conn: &Connection, name: &str| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(count(&conn, "apps"), 1);
        assert_eq!(count(&conn, "releases"), 0);
        migrate_to(&mut conn, Path::new(":memory:"), 2).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 2);
        assert_eq!(count(&conn, "releases"), 1);
        assert_eq!(count(&conn, "leases"), 1);
        assert_eq!(count(&conn, "planned_digests"), 0);
        migrate_to(&mut conn, Path::new(":memory:"), 3).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 3);
        assert_eq!(count(&conn, "planned_digests"), 1);
        assert_eq!(count(&conn, "known_images"), 0);
        migrate_to(&mut conn, Path::new(":memory:"), 4).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 4);
        assert_eq!(count(&conn, "known_images"), 1);
        assert_eq!(count(&conn, "deploy_hooks"), 0);
        migrate_to(&mut conn, Path::new(":memory:"), 5).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 5);
        assert_eq!(count(&conn, "deploy_hooks"), 1);
        assert_eq!(count(&conn, "job_runs"), 0);
        migrate_to(&mut conn, Path::new(":memory:"), 6).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 6);
        assert_eq!(count(&conn, "job_runs"), 1);
        let lease_columns = |conn: &Connection| -> Vec<String> {
            conn.prepare("SELECT name FROM pragma_table_info('leases') ORDER BY cid")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(lease_columns(&conn), ["app", "owner", "expires_at"]);
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 7);
        assert_eq!(
            lease_columns(&conn),
            ["app", "owner", "expires_at", "generation", "acquired_at"]
        );
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
