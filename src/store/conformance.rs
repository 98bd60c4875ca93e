//! The store's conformance suite: every behaviour of [`Records`], run
//! against both backends: SQLite in a temporary directory and PostgreSQL
//! in a database of its own on the dev cluster (`tests/devenv.sh up`). A
//! test written here runs twice; `mod sqlite` and `mod postgres` at the end
//! list them. What only one backend has (file modes, TLS, concurrent
//! migrations) is tested next to it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    copy, CredentialUpdate, JobRunEnd, JobRunState, KeySource, LeaseFence, LeaseOutcome,
    NewCredential, NewJobRun, NewRelease, Records, ReleaseOutcome, Secret, SecretKey, Store,
    StoreError, StoreLocation, StoreOptions,
};
use crate::devtools::pg::TestDatabase;

/// One backend under test: its store can be opened again (another runner,
/// or after a restart), with its key or another, and tampered with.
pub(super) trait Backend {
    /// Opens the store with the backend's own key.
    fn open(&self) -> Result<Arc<dyn Records>, StoreError> {
        self.open_with(self.key(), true)
    }
    /// Opens the store with `key`; `migrate` as in [`StoreOptions`].
    fn open_with(&self, key: SecretKey, migrate: bool) -> Result<Arc<dyn Records>, StoreError>;
    /// The key the store was made with.
    fn key(&self) -> SecretKey;
    /// The options [`Backend::open`] uses.
    fn options(&self) -> StoreOptions;
    /// Runs raw SQL on the database (the same text works on both).
    fn exec(&self, sql: &str);
    /// Marks the schema as written by a newer Berth.
    fn set_newer_schema(&self);
    /// Whether `marker` appears in plain text anywhere the database keeps
    /// its records.
    fn plaintext_found(&self, marker: &[u8]) -> bool;
}

pub(super) struct SqliteBackend {
    dir: tempfile::TempDir,
    key: SecretKey,
}

impl SqliteBackend {
    pub(super) fn new() -> SqliteBackend {
        SqliteBackend {
            dir: tempfile::tempdir().unwrap(),
            key: SecretKey::generate(KeySource::Environment).unwrap(),
        }
    }

    fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join(super::sqlite::DATABASE_FILE_NAME)).unwrap()
    }
}

/// Opens `options` with another key and migration setting.
fn open_as(
    mut options: StoreOptions,
    key: SecretKey,
    migrate: bool,
) -> Result<Arc<dyn Records>, StoreError> {
    options.secret_key = Some(key);
    options.migrate = migrate;
    super::open_records(&options)
}

impl Backend for SqliteBackend {
    fn open_with(&self, key: SecretKey, migrate: bool) -> Result<Arc<dyn Records>, StoreError> {
        open_as(self.options(), key, migrate)
    }
    fn key(&self) -> SecretKey {
        self.key.clone()
    }
    fn options(&self) -> StoreOptions {
        StoreOptions {
            state_dir: self.dir.path().to_owned(),
            secret_key: Some(self.key.clone()),
            location: None,
            migrate: true,
        }
    }
    fn exec(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap();
    }
    fn set_newer_schema(&self) {
        self.conn()
            .pragma_update(None, "user_version", super::SCHEMA_VERSION + 5)
            .unwrap();
    }
    fn plaintext_found(&self, marker: &[u8]) -> bool {
        ["berth.db", "berth.db-wal", "berth.db-shm"]
            .iter()
            .any(|name| {
                std::fs::read(self.dir.path().join(name))
                    .map(|bytes| bytes.windows(marker.len()).any(|w| w == marker))
                    .unwrap_or(false)
            })
    }
}

pub(super) struct PostgresBackend {
    db: TestDatabase,
    state_dir: tempfile::TempDir,
    key: SecretKey,
}

impl PostgresBackend {
    pub(super) fn new() -> PostgresBackend {
        PostgresBackend {
            db: TestDatabase::create(),
            state_dir: tempfile::tempdir().unwrap(),
            key: SecretKey::generate(KeySource::Environment).unwrap(),
        }
    }
}

impl Backend for PostgresBackend {
    fn open_with(&self, key: SecretKey, migrate: bool) -> Result<Arc<dyn Records>, StoreError> {
        open_as(self.options(), key, migrate)
    }
    fn key(&self) -> SecretKey {
        self.key.clone()
    }
    fn options(&self) -> StoreOptions {
        StoreOptions {
            state_dir: self.state_dir.path().to_owned(),
            secret_key: Some(self.key.clone()),
            location: Some(StoreLocation::parse(&self.db.url(), None, &|_| None).unwrap()),
            migrate: true,
        }
    }
    fn exec(&self, sql: &str) {
        self.db.exec(sql);
    }
    fn set_newer_schema(&self) {
        self.db.exec(&format!(
            "INSERT INTO berth_migrations (version, description, applied_by) \
             VALUES ({}, 'from the future', 'a test')",
            super::postgres::PG_SCHEMA_VERSION + 5
        ));
    }
    fn plaintext_found(&self, marker: &[u8]) -> bool {
        let marker = String::from_utf8_lossy(marker).into_owned();
        let tables = [
            "meta",
            "registry_credentials",
            "apps",
            "deploy_hooks",
            "releases",
            "job_runs",
            "leases",
            "planned_digests",
            "known_images",
        ];
        tables.iter().any(|t| {
            // Every row as text, bytea columns included (as hex and as
            // escaped bytes).
            let rows = self.db.query(&format!(
                "SELECT t::text, encode(convert_to(t::text, 'UTF8'), 'escape') FROM {t} t"
            ));
            let hex_marker = hex::encode(marker.as_bytes());
            rows.iter()
                .flatten()
                .flatten()
                .any(|cell| cell.contains(&marker) || cell.contains(&hex_marker))
        })
    }
}

pub(super) fn new_credential(name: &str, secret: &str) -> NewCredential {
    NewCredential {
        name: name.to_owned(),
        registry: "registry.example.com:5000".to_owned(),
        username: "robot".to_owned(),
        secret: Secret::new(secret),
        secret_version: Some(1),
    }
}

pub(super) fn new_release(app: &str, release: u64) -> NewRelease {
    NewRelease {
        app: app.to_owned(),
        release,
        digest: format!("sha256:{release:064x}"),
        image: format!("registry.example.com/{app}@sha256:{release:064x}"),
        spec_json: format!("{{\"release\":{release}}}"),
        trigger: "berth apply".to_owned(),
    }
}

const LONG: Duration = Duration::from_secs(60);

/// Takes the app's lease as `owner`: the fence its release writes carry.
fn hold(store: &dyn Records, app: &str, owner: &str) -> LeaseFence {
    match store.acquire_lease(app, owner, LONG).unwrap() {
        LeaseOutcome::Acquired { generation } => LeaseFence {
            app: app.to_owned(),
            owner: owner.to_owned(),
            generation,
        },
        other => panic!("{owner} did not get the lease of {app}: {other:?}"),
    }
}

pub(super) fn a_scheduled_run_is_claimed_once_and_a_dead_runners_run_is_lost(b: &dyn Backend) {
    let store = b.open().unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let claim = |owner: &str, at: Option<SystemTime>, ttl: Duration| NewJobRun {
        app: "web".into(),
        job: "report".into(),
        scheduled_at: at,
        trigger: "schedule".into(),
        owner: owner.into(),
        ttl,
    };
    let run = store
        .claim_job_run(&claim("a", Some(at), LONG))
        .unwrap()
        .unwrap();
    assert_eq!(run.state, JobRunState::Running);
    assert_eq!(run.owner.as_deref(), Some("a"));
    // Another runner (another open of the same store) cannot claim it.
    let other = b.open().unwrap();
    assert!(other
        .claim_job_run(&claim("b", Some(at), LONG))
        .unwrap()
        .is_none());
    // On-demand runs never conflict.
    assert!(store
        .claim_job_run(&claim("b", None, LONG))
        .unwrap()
        .is_some());
    assert!(store
        .claim_job_run(&claim("b", None, LONG))
        .unwrap()
        .is_some());
    // A missed or skipped time is not claimed again, and not twice.
    let later = at + Duration::from_secs(60);
    let n = store
        .record_job_runs_not_run("web", "report", &[at, later], JobRunState::Missed, "down")
        .unwrap();
    assert_eq!(n, 1, "only the time not recorded yet");
    assert!(store
        .claim_job_run(&claim("b", Some(later), LONG))
        .unwrap()
        .is_none());
    assert_eq!(
        store.last_scheduled_at("web", "report").unwrap(),
        Some(later)
    );
    assert_eq!(store.last_scheduled_at("web", "other").unwrap(), None);
    // Only the owner ends it; a replaced run cannot be ended again.
    assert!(store
        .set_job_run_container(run.id, "a", "local", "c1", "sha256:x", Some(2))
        .unwrap());
    assert!(!store
        .set_job_run_container(run.id, "b", "local", "c2", "sha256:x", Some(2))
        .unwrap());
    assert!(store.renew_job_run(run.id, "a", LONG).unwrap());
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
    assert_eq!(first.reason.as_deref(), Some("newer"));
    assert!(first.finished_at.is_some());
    // Newest first; the limit holds; another job's runs are not listed.
    let ids: Vec<u64> = listed.iter().map(|r| r.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);
    assert_eq!(store.list_job_runs("web", None, 2).unwrap().len(), 2);
    assert!(store
        .list_job_runs("web", Some("other"), 10)
        .unwrap()
        .is_empty());
    // A finished run keeps its exit code and log lines.
    let done = store
        .claim_job_run(&claim("a", None, LONG))
        .unwrap()
        .unwrap();
    let failed = JobRunEnd {
        state: JobRunState::Failed,
        exit_code: Some(3),
        reason: Some("exited with code 3".into()),
        log_tail: vec!["line 1".into(), "boom".into()],
    };
    assert!(store.finish_job_run(done.id, "a", &failed).unwrap());
    let got = store.list_job_runs("web", Some("report"), 1).unwrap();
    assert_eq!(got[0].id, done.id);
    assert_eq!(got[0].exit_code, Some(3));
    assert_eq!(got[0].log_tail, ["line 1", "boom"]);
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
    assert!(!store.renew_job_run(short.id, "dead", LONG).unwrap());
}

pub(super) fn create_app_refuses_an_existing_app_and_keeps_its_record(b: &dyn Backend) {
    let store = b.open().unwrap();
    store.create_app("web", None, "{\"v\":1}").unwrap();
    // Also when another runner creates it.
    let other = b.open().unwrap();
    let err = other.create_app("web", None, "{\"v\":2}").unwrap_err();
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

pub(super) fn reopens_with_its_records(b: &dyn Backend) {
    let store = b.open().unwrap();
    let id = store
        .insert_credential(new_credential("a", "tok"))
        .unwrap()
        .id;
    drop(store);
    let again = b.open().unwrap();
    assert_eq!(
        again.get_credential(&id).unwrap().unwrap().secret.expose(),
        "tok"
    );
    let info = again.info().unwrap();
    assert_eq!(info.schema_version, info.supported_version);
    assert!(info.problems.is_empty(), "{:?}", info.problems);
    assert_eq!(info.counts[0], ("registry credentials", 1));
}

pub(super) fn wrong_key_fails_at_open_with_the_clear_error(b: &dyn Backend) {
    b.open().unwrap();
    let other = SecretKey::generate(KeySource::Environment).unwrap();
    let err = b.open_with(other, true).unwrap_err();
    assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("the secret key does not match the one this store was created with"),
        "{text}"
    );
    assert!(text.contains("BERTH_SECRET_KEY"), "{text}");
    // The right key still opens it.
    b.open().unwrap();
}

pub(super) fn credential_crud(b: &dyn Backend) {
    let store = b.open().unwrap();
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
    assert_eq!(got.updated_at, updated.updated_at);

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

pub(super) fn delete_is_refused_while_an_app_uses_the_credential(b: &dyn Backend) {
    let store = b.open().unwrap();
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

pub(super) fn app_records(b: &dyn Backend) {
    let store = b.open().unwrap();
    let err = store.upsert_app("web", Some("rc-nope"), "{}").unwrap_err();
    assert!(matches!(err, StoreError::CredentialNotFound { .. }));
    let err = store.create_app("web", Some("rc-nope"), "{}").unwrap_err();
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

pub(super) fn a_secret_moved_to_another_record_fails_cleanly(b: &dyn Backend) {
    let store = b.open().unwrap();
    let a = store
        .insert_credential(new_credential("a", "secret-a"))
        .unwrap();
    let c = store
        .insert_credential(new_credential("b", "secret-b"))
        .unwrap();
    b.exec(&format!(
        "UPDATE registry_credentials SET secret = \
         (SELECT secret FROM registry_credentials WHERE id = '{}') WHERE id = '{}'",
        a.id, c.id
    ));
    let err = store.get_credential(&c.id).unwrap_err();
    assert!(
        matches!(err, StoreError::Decrypt { ref id, .. } if *id == c.id),
        "{err}"
    );
    assert!(!err.to_string().contains("secret-a"));
    assert!(store.get_credential(&a.id).unwrap().is_some());
}

pub(super) fn an_apps_sealed_data_is_bound_to_it_and_never_plain(b: &dyn Backend) {
    let store = b.open().unwrap();
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
    // An update of the spec keeps it; another runner reads it.
    store.upsert_app("web", None, "{\"v\":2}").unwrap();
    assert_eq!(
        b.open().unwrap().app_sealed("web").unwrap().as_deref(),
        Some(&marker[..])
    );
    drop(store);
    assert!(
        !b.plaintext_found(marker),
        "the sealed data is in the database in plain text"
    );
    // Sealed for one app, it does not open as another's.
    let store = b.open().unwrap();
    store.upsert_app("api", None, "{}").unwrap();
    b.exec("UPDATE apps SET secrets = (SELECT secrets FROM apps WHERE name = 'web') WHERE name = 'api'");
    let err = store.app_sealed("api").unwrap_err();
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err}");
}

pub(super) fn hooks_keep_their_key_hash_only(b: &dyn Backend) {
    let store = b.open().unwrap();
    let a = store.insert_hook("web", "aa").unwrap();
    let c = store.insert_hook("web", "bb").unwrap();
    assert!(a.id.starts_with("dh-") && a.id.len() == 19, "{}", a.id);
    assert_ne!(a.id, c.id);
    assert_eq!(store.get_hook(&a.id).unwrap().unwrap().key_hash, "aa");
    assert_eq!(store.get_hook(&a.id).unwrap().unwrap(), a);
    assert_eq!(store.list_hooks("web").unwrap().len(), 2);
    assert!(store.list_hooks("api").unwrap().is_empty());
    assert!(store.delete_hook(&a.id).unwrap());
    assert!(!store.delete_hook(&a.id).unwrap());
    assert_eq!(store.get_hook(&a.id).unwrap(), None);
    assert_eq!(store.list_hooks("web").unwrap(), vec![c]);
}

pub(super) fn refuses_a_newer_schema_and_says_so(b: &dyn Backend) {
    b.open().unwrap();
    b.set_newer_schema();
    let err = b.open().unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("upgrade Berth"), "{text}");
    let err = b.open_with(b.key(), false).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
}

pub(super) fn a_store_that_needs_migrations_is_refused_without_migrating(b: &dyn Backend) {
    // An empty database: version 0.
    let err = b.open_with(b.key(), false).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaBehind { found: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("berth store migrate"), "{err}");
    b.open().unwrap();
    b.open_with(b.key(), false).unwrap();
}

pub(super) fn secrets_are_not_stored_in_plain_text(b: &dyn Backend) {
    let store = b.open().unwrap();
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
    assert!(!b.plaintext_found(marker.as_bytes()), "while open");
    // The check can fail: a plain value written beside is found.
    let probe = "plain-probe-3c81d0";
    store
        .upsert_app("probe", None, &format!("{{\"x\":\"{probe}\"}}"))
        .unwrap();
    assert!(
        b.plaintext_found(probe.as_bytes()),
        "the scan finds plain text"
    );
    drop(store);
    assert!(!b.plaintext_found(marker.as_bytes()), "after closing");
}

pub(super) fn release_lifecycle(b: &dyn Backend) {
    let store = b.open().unwrap();
    assert_eq!(store.last_release_number("web").unwrap(), None);
    assert!(store.list_releases("web", 10).unwrap().is_empty());
    assert!(store.get_release("web", 1).unwrap().is_none());
    let web = hold(&*store, "web", "me");
    let api = hold(&*store, "api", "me");

    let before = SystemTime::now() - Duration::from_secs(2);
    let started = store.start_release(new_release("web", 1), &web).unwrap();
    assert_eq!(started.outcome, ReleaseOutcome::Running);
    assert_eq!(started.trigger, "berth apply");
    assert!(started.phases.is_empty() && started.error.is_none());
    assert!(started.finished_at.is_none());
    assert!(started.started_at >= before);
    assert_eq!(store.get_release("web", 1).unwrap().unwrap(), started);

    let err = store
        .start_release(new_release("web", 1), &web)
        .unwrap_err();
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
        .finish_release("web", 1, ReleaseOutcome::Succeeded, None, &phases, &web)
        .unwrap();
    let done = store.get_release("web", 1).unwrap().unwrap();
    assert_eq!(done.outcome, ReleaseOutcome::Succeeded);
    assert_eq!(done.phases, phases);
    assert!(done.error.is_none());
    assert!(done.finished_at.unwrap() >= done.started_at);

    let err = store
        .finish_release("web", 1, ReleaseOutcome::Failed, Some("x"), &[], &web)
        .unwrap_err();
    assert!(matches!(err, StoreError::ReleaseFinished { .. }), "{err}");
    assert!(err.to_string().contains("succeeded"), "{err}");
    let err = store
        .finish_release("web", 9, ReleaseOutcome::Failed, None, &[], &web)
        .unwrap_err();
    assert!(matches!(err, StoreError::ReleaseNotFound { .. }), "{err}");

    store.start_release(new_release("web", 2), &web).unwrap();
    let err = store
        .finish_release("web", 2, ReleaseOutcome::Running, None, &[], &web)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err}");
    store
        .finish_release(
            "web",
            2,
            ReleaseOutcome::RolledBack,
            Some("health check timed out"),
            &[("roll".to_owned(), 30_000)],
            &web,
        )
        .unwrap();
    let mut rollback = new_release("web", 3);
    rollback.trigger = "rollback".into();
    store.start_release(rollback, &web).unwrap();
    // Another app's journal is separate (and needs that app's lease).
    let err = store
        .start_release(new_release("api", 7), &web)
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    store.start_release(new_release("api", 7), &api).unwrap();

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
        .start_release(new_release("web", u64::MAX), &web)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err}");
    assert!(store.get_release("web", u64::MAX).unwrap().is_none());

    store.delete_releases("web").unwrap();
    assert!(store.list_releases("web", 10).unwrap().is_empty());
    assert_eq!(store.last_release_number("web").unwrap(), None);
    assert_eq!(store.last_release_number("api").unwrap(), Some(7));
}

pub(super) fn a_runner_whose_lease_was_taken_over_cannot_write_the_release(b: &dyn Backend) {
    let store = b.open().unwrap();
    let short = Duration::from_millis(300);
    let stalled = match store.acquire_lease("web", "stalled", short).unwrap() {
        LeaseOutcome::Acquired { generation } => LeaseFence {
            app: "web".into(),
            owner: "stalled".into(),
            generation,
        },
        other => panic!("{other:?}"),
    };
    store
        .start_release(new_release("web", 1), &stalled)
        .unwrap();
    // It stalls past its lease; another runner takes the lease over.
    let other = b.open().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let taker = loop {
        match other.acquire_lease("web", "taker", LONG).unwrap() {
            LeaseOutcome::Acquired { generation } => {
                break LeaseFence {
                    app: "web".into(),
                    owner: "taker".into(),
                    generation,
                }
            }
            LeaseOutcome::HeldBy { .. } => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the lease never expired"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(
        taker.generation > stalled.generation,
        "{taker:?} after {stalled:?}"
    );
    // The stalled runner wakes up: its writes are refused, naming the
    // new holder; nothing of it is written.
    let err = store
        .finish_release("web", 1, ReleaseOutcome::Succeeded, None, &[], &stalled)
        .unwrap_err();
    match &err {
        StoreError::LeaseLost { app, holder } => {
            assert_eq!(app, "web");
            assert_eq!(holder.as_deref(), Some("taker"));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("taken over by taker"), "{err}");
    let err = store
        .start_release(new_release("web", 2), &stalled)
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(!store.renew_lease("web", "stalled", LONG).unwrap());
    assert_eq!(
        store.get_release("web", 1).unwrap().unwrap().outcome,
        ReleaseOutcome::Running
    );
    // The holder records the outcome of the release it found.
    other
        .finish_release(
            "web",
            1,
            ReleaseOutcome::Failed,
            Some("its runner stalled"),
            &[],
            &taker,
        )
        .unwrap();
    // A fence from the same owner but an older generation is refused too:
    // the holder released and took it again in between.
    other.release_lease("web", "taker").unwrap();
    let again = hold(&*other, "web", "taker");
    assert!(again.generation > taker.generation);
    let err = other
        .start_release(new_release("web", 2), &taker)
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    other.start_release(new_release("web", 2), &again).unwrap();
}

pub(super) fn leases(b: &dyn Backend) {
    let store = b.open().unwrap();
    let first = match store.acquire_lease("web", "a", LONG).unwrap() {
        LeaseOutcome::Acquired { generation } => generation,
        other => panic!("{other:?}"),
    };
    let before = SystemTime::now();
    match b.open().unwrap().acquire_lease("web", "b", LONG).unwrap() {
        LeaseOutcome::HeldBy {
            owner,
            expires_at,
            since,
        } => {
            assert_eq!(owner, "a");
            // The database's clock, on this machine the same as ours.
            assert!(expires_at > before + Duration::from_secs(50));
            assert!(expires_at <= before + LONG + Duration::from_secs(2));
            assert!(since <= before + Duration::from_secs(1), "{since:?}");
            assert!(since + Duration::from_secs(30) > before, "{since:?}");
        }
        other => panic!("b got {other:?}"),
    }
    // Another app's lease is independent.
    assert!(matches!(
        store.acquire_lease("api", "b", LONG).unwrap(),
        LeaseOutcome::Acquired { .. }
    ));
    // Acquiring again as the holder extends the lease, same generation.
    assert_eq!(
        store.acquire_lease("web", "a", LONG).unwrap(),
        LeaseOutcome::Acquired { generation: first }
    );
    assert!(store.renew_lease("web", "a", LONG).unwrap());
    assert!(!store.renew_lease("web", "b", LONG).unwrap());
    // Releasing someone else's lease does nothing.
    store.release_lease("web", "b").unwrap();
    assert!(matches!(
        store.acquire_lease("web", "b", LONG).unwrap(),
        LeaseOutcome::HeldBy { .. }
    ));
    store.release_lease("web", "a").unwrap();
    assert!(!store.renew_lease("web", "a", LONG).unwrap());
    // The next holder gets a higher generation.
    match store.acquire_lease("web", "b", LONG).unwrap() {
        LeaseOutcome::Acquired { generation } => assert!(generation > first),
        other => panic!("{other:?}"),
    }
}

pub(super) fn an_expired_lease_is_taken_over(b: &dyn Backend) {
    let store = b.open().unwrap();
    let short = Duration::from_millis(200);
    assert!(matches!(
        store.acquire_lease("web", "a", short).unwrap(),
        LeaseOutcome::Acquired { .. }
    ));
    let expires = match store.acquire_lease("web", "b", short).unwrap() {
        LeaseOutcome::HeldBy {
            owner, expires_at, ..
        } => {
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
            LeaseOutcome::Acquired { .. } => break,
            LeaseOutcome::HeldBy { .. } => {
                assert!(std::time::Instant::now() < deadline, "never expired")
            }
        }
    }
    assert!(SystemTime::now() + Duration::from_millis(100) >= expires);
    // a's lease is gone: renewing says so and releasing leaves b's alone.
    assert!(!store.renew_lease("web", "a", short).unwrap());
    store.release_lease("web", "a").unwrap();
    assert!(store.renew_lease("web", "b", LONG).unwrap());
    assert!(matches!(
        store.acquire_lease("web", "a", short).unwrap(),
        LeaseOutcome::HeldBy { ref owner, .. } if owner == "b"
    ));
}

pub(super) fn a_lease_is_taken_over_only_from_its_holder(b: &dyn Backend) {
    let store = b.open().unwrap();
    let dead = hold(&*store, "web", "dead");
    assert_eq!(
        store.take_over_lease("web", "other", "me", LONG).unwrap(),
        None
    );
    let taken = store
        .take_over_lease("web", "dead", "me", LONG)
        .unwrap()
        .unwrap();
    assert!(taken > dead.generation);
    assert!(store.renew_lease("web", "me", LONG).unwrap());
    assert!(!store.renew_lease("web", "dead", LONG).unwrap());
    // Nothing to take over for an app without a lease.
    assert_eq!(
        store.take_over_lease("api", "dead", "me", LONG).unwrap(),
        None
    );
}

/// Eight threads, each a runner of its own, race for one lease many times:
/// never two holders at once.
pub(super) fn racing_runners_never_hold_one_lease_together(b: &dyn Backend) {
    let holders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let wins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stores: Vec<Arc<dyn Records>> = (0..8).map(|_| b.open().unwrap()).collect();
    std::thread::scope(|scope| {
        for (i, store) in stores.iter().enumerate() {
            let (holders, wins) = (holders.clone(), wins.clone());
            scope.spawn(move || {
                let owner = format!("runner-{i}");
                for _ in 0..15 {
                    if let LeaseOutcome::Acquired { .. } =
                        store.acquire_lease("web", &owner, LONG).unwrap()
                    {
                        let now = holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(now, 0, "{owner} holds the lease with another");
                        wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        store.release_lease("web", &owner).unwrap();
                    }
                }
            });
        }
    });
    assert!(wins.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

pub(super) fn planned_digests_and_known_images(b: &dyn Backend) {
    let store = b.open().unwrap();
    assert_eq!(store.planned_digest("web", "repo:1", "").unwrap(), None);
    store
        .record_planned_digest("web", "repo:1", "", "sha256:a")
        .unwrap();
    store
        .record_planned_digest("web", "repo:1", "", "sha256:b")
        .unwrap();
    let (digest, at) = store.planned_digest("web", "repo:1", "").unwrap().unwrap();
    assert_eq!(digest, "sha256:b");
    assert!(at <= SystemTime::now() + Duration::from_secs(1));
    assert_eq!(
        store.planned_digest("web", "repo:1", "sha256:a").unwrap(),
        None
    );
    assert_eq!(store.known_image("sha256:top").unwrap(), None);
    let image = super::KnownImage {
        digest: "sha256:amd64".into(),
        index_digest: Some("sha256:top".into()),
        size_bytes: 10 * 1024 * 1024 * 1024,
    };
    store.remember_image("sha256:top", &image).unwrap();
    assert_eq!(store.known_image("sha256:top").unwrap(), Some(image));
}

/// A copy to another store carries every record over, secrets resealed
/// with the target's key; a second copy changes nothing.
pub(super) fn copies_every_record_to_another_store_twice_the_same(b: &dyn Backend) {
    let source = b.open().unwrap();
    let cred = source
        .insert_credential(new_credential("a", "tok-1"))
        .unwrap();
    source
        .upsert_app("web", Some(&cred.id), "{\"v\":1}")
        .unwrap();
    source.set_app_sealed("web", b"sealed-web").unwrap();
    source.insert_hook("web", "hash").unwrap();
    let fence = hold(&*source, "web", "me");
    source.start_release(new_release("web", 1), &fence).unwrap();
    source
        .finish_release(
            "web",
            1,
            ReleaseOutcome::Succeeded,
            None,
            &[("roll".into(), 5)],
            &fence,
        )
        .unwrap();
    let run = source
        .claim_job_run(&NewJobRun {
            app: "web".into(),
            job: "report".into(),
            scheduled_at: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            trigger: "schedule".into(),
            owner: "me".into(),
            ttl: LONG,
        })
        .unwrap()
        .unwrap();
    source
        .record_planned_digest("web", "repo:1", "", "sha256:a")
        .unwrap();
    // Into the other backend, with a key of its own.
    let target_backend: Box<dyn Backend> = if b.options().location.is_some() {
        Box::new(SqliteBackend::new())
    } else {
        Box::new(PostgresBackend::new())
    };
    let target = target_backend.open().unwrap();
    let report = copy::copy(&*source, &*target).unwrap();
    let counts: std::collections::BTreeMap<_, _> = report.counts.into_iter().collect();
    assert_eq!(counts["registry credentials"], 1);
    assert_eq!(counts["releases"], 1);
    assert_eq!(counts["job runs"], 1);
    let again = copy::copy(&*source, &*target).unwrap();
    assert_eq!(again.counts.iter().map(|c| c.1).sum::<usize>(), 6);
    assert_eq!(
        target
            .get_credential(&cred.id)
            .unwrap()
            .unwrap()
            .secret
            .expose(),
        "tok-1"
    );
    assert_eq!(
        target.app_sealed("web").unwrap().as_deref(),
        Some(&b"sealed-web"[..])
    );
    let release = target.get_release("web", 1).unwrap().unwrap();
    assert_eq!(release, source.get_release("web", 1).unwrap().unwrap());
    assert_eq!(target.list_job_runs("web", None, 10).unwrap()[0].id, run.id);
    // The target goes on numbering job runs after the copied ones.
    let next = target
        .claim_job_run(&NewJobRun {
            app: "web".into(),
            job: "report".into(),
            scheduled_at: None,
            trigger: "manual".into(),
            owner: "me".into(),
            ttl: LONG,
        })
        .unwrap()
        .unwrap();
    assert!(next.id > run.id);
    let info = target.info().unwrap();
    assert!(info.counts.contains(&("apps", 1)), "{info:?}");
    // A credential in use is still refused deletion in the copy.
    assert!(matches!(
        target.delete_credential(&cred.id).unwrap_err(),
        StoreError::CredentialInUse { .. }
    ));
}

pub(super) fn async_store_round_trip(b: &dyn Backend) {
    let options = b.options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::open(options).await.unwrap();
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
        // Dropped inside the runtime: must not panic.
        drop(store);
    });
}

/// A lost connection: the pooled connections are cut under the store; the
/// next operations reconnect (a retry where that is safe) and succeed.
pub(super) fn operations_survive_a_lost_connection(b: &dyn Backend, cut: &dyn Fn() -> usize) {
    let store = b.open().unwrap();
    store.upsert_app("web", None, "{}").unwrap();
    let fence = hold(&*store, "web", "me");
    assert!(cut() >= 1, "no session was cut");
    assert!(store.renew_lease("web", "me", LONG).unwrap());
    store.start_release(new_release("web", 1), &fence).unwrap();
    assert!(cut() >= 1);
    assert_eq!(store.list_apps().unwrap().len(), 1);
    assert!(cut() >= 1);
    store
        .finish_release("web", 1, ReleaseOutcome::Succeeded, None, &[], &fence)
        .unwrap();
    assert_eq!(
        store.get_release("web", 1).unwrap().unwrap().outcome,
        ReleaseOutcome::Succeeded
    );
}

macro_rules! conformance {
    ($backend:ident: $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                super::$name(&super::$backend::new());
            }
        )*
    };
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            conformance!(SqliteBackend: $($name),*);
        }
        mod postgres {
            conformance!(PostgresBackend: $($name),*);

            #[test]
            fn operations_survive_a_lost_connection() {
                let b = super::PostgresBackend::new();
                super::operations_survive_a_lost_connection(&b, &|| b.db.cut_connections());
            }
        }
    };
}

both!(
    a_scheduled_run_is_claimed_once_and_a_dead_runners_run_is_lost,
    create_app_refuses_an_existing_app_and_keeps_its_record,
    reopens_with_its_records,
    wrong_key_fails_at_open_with_the_clear_error,
    credential_crud,
    delete_is_refused_while_an_app_uses_the_credential,
    app_records,
    a_secret_moved_to_another_record_fails_cleanly,
    an_apps_sealed_data_is_bound_to_it_and_never_plain,
    hooks_keep_their_key_hash_only,
    refuses_a_newer_schema_and_says_so,
    a_store_that_needs_migrations_is_refused_without_migrating,
    secrets_are_not_stored_in_plain_text,
    release_lifecycle,
    a_runner_whose_lease_was_taken_over_cannot_write_the_release,
    leases,
    an_expired_lease_is_taken_over,
    a_lease_is_taken_over_only_from_its_holder,
    racing_runners_never_hold_one_lease_together,
    planned_digests_and_known_images,
    copies_every_record_to_another_store_twice_the_same,
    async_store_round_trip,
);
