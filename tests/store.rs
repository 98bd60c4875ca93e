//! The store under real processes, on both backends (SQLite in a state
//! directory, PostgreSQL in a database of its own on the dev cluster):
//! several writers at once, a writer killed with SIGKILL in the middle of
//! its writes, two processes racing for one deploy lease, and five runners
//! starting on an empty database at once (each migration applied once).
//!
//! The child processes are this test binary itself, re-run with
//! `--exact child_writer` and `BERTH_STORE_TEST_ROLE=writer` (or
//! `child_leaser`, `child_opener`); without that variable the child tests
//! do nothing. A child opens the store the way the `berth` command does:
//! `BERTH_STATE_DIR`, `BERTH_STORE`, `BERTH_SECRET_KEY`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use berth::devtools::pg::TestDatabase;
use berth::registry::Secret;
use berth::store::{
    lease_owner, open_records, process_env, KeySource, LeaseOutcome, NewCredential, Records,
    SecretKey, StoreOptions,
};

const ROLE_VAR: &str = "BERTH_STORE_TEST_ROLE";
const DIR_VAR: &str = "BERTH_STORE_TEST_DIR";
const WRITER_VAR: &str = "BERTH_STORE_TEST_WRITER";
const COUNT_VAR: &str = "BERTH_STORE_TEST_COUNT";
const STARTED_FILE: &str = "writer-started";

/// Where the processes of one test keep their records.
enum Target {
    /// The state directory's `berth.db`, its key file made by whichever
    /// process comes first.
    Sqlite { dir: std::path::PathBuf },
    /// A database of its own; the team key in `BERTH_SECRET_KEY`.
    Postgres {
        dir: std::path::PathBuf,
        db: TestDatabase,
        key: String,
    },
}

impl Target {
    fn new(postgres: bool, tmp: &Path) -> Target {
        let dir = tmp.join("state");
        if postgres {
            Target::Postgres {
                dir,
                db: TestDatabase::create(),
                key: SecretKey::generate(KeySource::Environment)
                    .unwrap()
                    .expose_base64(),
            }
        } else {
            Target::Sqlite { dir }
        }
    }

    fn dir(&self) -> &Path {
        match self {
            Target::Sqlite { dir } | Target::Postgres { dir, .. } => dir,
        }
    }

    /// The environment a child (or `berth`) opens this store with.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("BERTH_STATE_DIR", self.dir().display().to_string())];
        if let Target::Postgres { db, key, .. } = self {
            env.push(("BERTH_STORE", db.url()));
            env.push(("BERTH_SECRET_KEY", key.clone()));
        }
        env
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env_remove("BERTH_SECRET_KEY").env_remove("BERTH_STORE");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    fn open(&self) -> Arc<dyn Records> {
        let env = self.env();
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| std::ffi::OsString::from(v))
        };
        let options = StoreOptions::from_env_with_store(None, None, &lookup).unwrap();
        open_records(&options).expect("open the store")
    }
}

/// Opens the store as a child process: from the environment.
fn open_from_env() -> Arc<dyn Records> {
    let options = StoreOptions::from_env_with_store(None, None, &process_env).expect("options");
    open_records(&options).expect("open store")
}

fn secret_for(name: &str) -> String {
    format!("token-for-{name}")
}

/// The writer role: inserts `COUNT` credentials named `w<writer>-<i>`, in
/// order, each in its own transaction; touches `writer-started` after the
/// first one.
#[test]
fn child_writer() {
    if std::env::var_os(ROLE_VAR).as_deref() != Some("writer".as_ref()) {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var_os(DIR_VAR).expect("state dir"));
    let writer: String = std::env::var(WRITER_VAR).expect("writer id");
    let count: usize = std::env::var(COUNT_VAR)
        .expect("count")
        .parse()
        .expect("count is a number");
    let store = open_from_env();
    for i in 0..count {
        let name = format!("w{writer}-{i}");
        store
            .insert_credential(NewCredential {
                secret: Secret::new(secret_for(&name)),
                name,
                registry: "registry.example.com".to_owned(),
                username: format!("user-{writer}"),
                secret_version: None,
            })
            .expect("insert");
        if i == 0 {
            std::fs::create_dir_all(&dir).expect("marker dir");
            std::fs::write(dir.join(format!("{STARTED_FILE}-{writer}")), b"").expect("marker");
        }
    }
}

/// This test binary re-run as child `role` (`child_<role>`) number `id`,
/// on `target`'s store.
fn child_command(target: &Target, role: &str, id: &str) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        &format!("child_{role}"),
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_VAR, role)
    .env(DIR_VAR, target.dir())
    .env(WRITER_VAR, id)
    .stdout(Stdio::null());
    target.apply(&mut cmd);
    cmd
}

fn writer_command(target: &Target, writer: &str, count: usize) -> Command {
    let mut cmd = child_command(target, "writer", writer);
    cmd.env(COUNT_VAR, count.to_string());
    cmd
}

/// Waits (at most 60 s) until each child of `ids` wrote `ready-<id>` in
/// `dir`; a child that exits first fails the test.
fn wait_ready(dir: &Path, ids: &[&str], children: &mut [std::process::Child]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ids
        .iter()
        .all(|id| dir.join(format!("ready-{id}")).exists())
    {
        for child in children.iter_mut() {
            if let Some(status) = child.try_wait().expect("poll child") {
                panic!("child exited early: {status}");
            }
        }
        assert!(Instant::now() < deadline, "children never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Opens the store and checks that every record decrypts to the secret its
/// name implies; returns the names.
fn verify_all(target: &Target) -> BTreeSet<String> {
    let store = target.open();
    let info = store.info().expect("info");
    assert!(info.problems.is_empty(), "{:?}", info.problems);
    let credentials = store.list_credentials().expect("every record decrypts");
    let mut names = BTreeSet::new();
    for credential in credentials {
        assert_eq!(credential.secret.expose(), secret_for(&credential.name));
        assert!(credential.id.starts_with("rc-"));
        assert!(names.insert(credential.name), "duplicate name");
    }
    names
}

#[test]
fn two_processes_write_at_once_sqlite() {
    two_processes_write_at_once(false)
}

#[test]
fn two_processes_write_at_once_postgres() {
    two_processes_write_at_once(true)
}

fn two_processes_write_at_once(postgres: bool) {
    const PER_WRITER: usize = 150;
    let tmp = tempfile::tempdir().unwrap();
    // A fresh store: both writers also race to create it (the key file,
    // WAL, the migrations; the schema and key check on PostgreSQL).
    let target = Target::new(postgres, tmp.path());
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|w| {
            writer_command(&target, w, PER_WRITER)
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn writer")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait for writer");
        assert!(
            out.status.success(),
            "writer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names = verify_all(&target);
    let expected: BTreeSet<String> = ["a", "b"]
        .iter()
        .flat_map(|w| (0..PER_WRITER).map(move |i| format!("w{w}-{i}")))
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn writer_killed_mid_write_loses_no_committed_record_sqlite() {
    writer_killed_mid_write_loses_no_committed_record(false)
}

#[test]
fn writer_killed_mid_write_loses_no_committed_record_postgres() {
    writer_killed_mid_write_loses_no_committed_record(true)
}

fn writer_killed_mid_write_loses_no_committed_record(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let target = Target::new(postgres, tmp.path());
    let dir = target.dir().to_owned();
    // Far more than it can write before the kill; the bound is a backstop.
    let mut child = writer_command(&target, "k", 1_000_000)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let marker = dir.join(format!("{STARTED_FILE}-k"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if let Some(status) = child.try_wait().expect("poll writer") {
            panic!("writer exited early: {status}");
        }
        assert!(Instant::now() < deadline, "writer never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("poll writer").is_none(),
        "writer finished before it could be killed"
    );
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap writer");

    let names = verify_all(&target);
    // Inserts commit one by one in order, so what survives is exactly a
    // prefix w k-0 .. w k-(n-1): no gap, no half record.
    let n = names.len();
    assert!(n >= 1, "the first record was committed before the marker");
    let expected: BTreeSet<String> = (0..n).map(|i| format!("wk-{i}")).collect();
    assert_eq!(names, expected);

    // The store stays writable after the crash.
    let store = target.open();
    store
        .insert_credential(NewCredential {
            name: "after".into(),
            registry: "registry.example.com".into(),
            username: "u".into(),
            secret: Secret::new(secret_for("after")),
            secret_version: None,
        })
        .unwrap();
    assert_eq!(store.list_credentials().unwrap().len(), n + 1);
}

const GO_FILE: &str = "leasers-go";
const RACE_APP: &str = "raced-app";

/// The leaser role: opens the store, says it is ready, waits for the go
/// file, tries once to take the lease of `raced-app`, and writes what
/// happened to `result-<id>`: `acquired <owner>` or `held <owner> <holder>`.
#[test]
fn child_leaser() {
    if std::env::var_os(ROLE_VAR).as_deref() != Some("leaser".as_ref()) {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var_os(DIR_VAR).expect("state dir"));
    let id: String = std::env::var(WRITER_VAR).expect("leaser id");
    let store = open_from_env();
    let owner = lease_owner();
    std::fs::write(dir.join(format!("ready-{id}")), b"").expect("ready marker");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join(GO_FILE).exists() {
        assert!(Instant::now() < deadline, "never told to go");
        std::thread::sleep(Duration::from_millis(1));
    }
    let line = match store
        .acquire_lease(RACE_APP, &owner, Duration::from_secs(120))
        .expect("acquire_lease")
    {
        LeaseOutcome::Acquired { .. } => format!("acquired {owner}"),
        LeaseOutcome::HeldBy { owner: holder, .. } => format!("held {owner} {holder}"),
    };
    std::fs::write(dir.join(format!("result-{id}")), line).expect("result");
}

#[test]
fn two_processes_race_for_one_lease_sqlite() {
    two_processes_race_for_one_lease(false)
}

#[test]
fn two_processes_race_for_one_lease_postgres() {
    two_processes_race_for_one_lease(true)
}

fn two_processes_race_for_one_lease(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let target = Target::new(postgres, tmp.path());
    let dir = target.dir().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    // Create the store first so the race is about the lease only.
    drop(target.open());
    let ids = ["a", "b"];
    let mut children: Vec<_> = ids
        .iter()
        .map(|id| {
            child_command(&target, "leaser", id)
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn leaser")
        })
        .collect();
    wait_ready(&dir, &ids, &mut children);
    std::fs::write(dir.join(GO_FILE), b"").unwrap();
    for child in children {
        let out = child.wait_with_output().expect("wait for leaser");
        assert!(
            out.status.success(),
            "leaser failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let results: Vec<String> = ids
        .iter()
        .map(|id| std::fs::read_to_string(dir.join(format!("result-{id}"))).unwrap())
        .collect();
    let winners: Vec<&str> = results
        .iter()
        .filter_map(|r| r.strip_prefix("acquired "))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one acquires: {results:?}");
    let winner = winners[0];
    let loser: Vec<&str> = results
        .iter()
        .filter_map(|r| r.strip_prefix("held "))
        .collect();
    assert_eq!(loser.len(), 1, "{results:?}");
    let (loser_owner, holder) = loser[0].split_once(' ').expect("held line");
    assert_eq!(holder, winner, "the loser sees the winner: {results:?}");
    assert_ne!(loser_owner, winner);

    // The stored lease is the winner's: renewing works for it only.
    let store = target.open();
    let ttl = Duration::from_secs(60);
    assert!(store.renew_lease(RACE_APP, winner, ttl).unwrap());
    assert!(!store.renew_lease(RACE_APP, loser_owner, ttl).unwrap());
}

/// The opener role: says it is ready, waits for the go file, opens the
/// store (migrating an empty database), writes `opened-<id>`.
#[test]
fn child_opener() {
    if std::env::var_os(ROLE_VAR).as_deref() != Some("opener".as_ref()) {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var_os(DIR_VAR).expect("state dir"));
    let id: String = std::env::var(WRITER_VAR).expect("opener id");
    std::fs::write(dir.join(format!("ready-{id}")), b"").expect("ready marker");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join(GO_FILE).exists() {
        assert!(Instant::now() < deadline, "never told to go");
        std::thread::sleep(Duration::from_millis(1));
    }
    let store = open_from_env();
    let info = store.info().expect("info");
    assert_eq!(info.schema_version, info.supported_version);
    std::fs::write(dir.join(format!("opened-{id}")), b"").expect("result");
}

/// Five runners start at the same moment on an empty database: all open
/// it, and each migration was applied exactly once (PostgreSQL records who
/// applied it).
#[test]
fn five_runners_start_on_an_empty_database_and_migrate_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let target = Target::new(true, tmp.path());
    let dir = target.dir().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    let ids = ["1", "2", "3", "4", "5"];
    let mut children: Vec<_> = ids
        .iter()
        .map(|id| {
            child_command(&target, "opener", id)
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn opener")
        })
        .collect();
    // All five wait at the line, then go at once.
    wait_ready(&dir, &ids, &mut children);
    std::fs::write(dir.join(GO_FILE), b"").unwrap();
    for child in children {
        let out = child.wait_with_output().expect("wait for opener");
        assert!(
            out.status.success(),
            "opener failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for id in ids {
        assert!(dir.join(format!("opened-{id}")).exists(), "runner {id}");
    }
    let Target::Postgres { db, .. } = &target else {
        unreachable!()
    };
    let rows = db.query("SELECT version, count(*), min(applied_by) FROM berth_migrations GROUP BY version ORDER BY version");
    let versions: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    let expected: Vec<(String, String)> = (1..=berth::store::postgres::PG_SCHEMA_VERSION)
        .map(|v| (v.to_string(), "1".to_owned()))
        .collect();
    assert_eq!(versions, expected, "each migration once");
    // Applied by one of the five (a child process, not this one).
    let by = rows[0][2].clone().unwrap();
    assert!(
        !by.contains(&format!(":{}@", std::process::id())),
        "applied by {by}"
    );
    // One key check value: every runner agreed on the key.
    let meta = db.query("SELECT count(*) FROM meta WHERE key = 'key_check'");
    assert_eq!(meta[0][0].as_deref(), Some("1"));
}

/// Opens a PostgreSQL store at `url` with `key`; the error text when it
/// fails.
fn open_url(url: &str, key: &SecretKey) -> Result<Arc<dyn Records>, String> {
    let location = berth::store::StoreLocation::parse(url, Some("BERTH_STORE"), &|_| None)
        .map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        location: Some(location),
        ..StoreOptions::in_dir(tmp.path(), Some(key.clone()))
    };
    open_records(&options).map_err(|e| e.to_string())
}

#[test]
fn postgres_tls_verify_full_trusts_only_the_right_ca_and_host_name() {
    use berth::devtools::pg::{ca_pem, tls_dir, CERT_USER, PASSWORD, PORT, USER};
    let db = TestDatabase::create();
    let name = &db.name;
    let ca = ca_pem();
    let key = SecretKey::generate(KeySource::Environment).unwrap();
    // The right CA, the name on the certificate: works, over TLS.
    let store = open_url(&db.url(), &key).expect("verify-full with the right CA");
    store.upsert_app("tls", None, "{}").unwrap();
    let ssl = db.query(&format!(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = '{name}' AND a.application_name = 'berth'"
    ));
    assert_eq!(ssl[0][0].as_deref(), Some("t"), "Berth's sessions use TLS");
    // The IP address is on the certificate too.
    open_url(
        &format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{PORT}/{name}?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ),
        &key,
    )
    .expect("verify-full by IP address");

    // A CA that did not sign the server's certificate: refused.
    let tmp = tempfile::tempdir().unwrap();
    let other_ca = tmp.path().join("other-ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["other CA".to_owned()]).unwrap();
    std::fs::write(&other_ca, cert.cert.pem()).unwrap();
    let err = open_url(
        &format!(
            "postgres://{USER}:{PASSWORD}@localhost:{PORT}/{name}?sslmode=verify-full&sslrootcert={}",
            other_ca.display()
        ),
        &key,
    )
    .unwrap_err();
    assert!(err.contains("cannot open the state database"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    // The right CA, a name the certificate is not for (the address is the
    // server's): refused by verify-full, accepted by verify-ca.
    let wrong_name = format!(
        "postgres://{USER}:{PASSWORD}@db.invalid:{PORT}/{name}?hostaddr=127.0.0.1&sslrootcert={}",
        ca.display()
    );
    let err = open_url(&format!("{wrong_name}&sslmode=verify-full"), &key).unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    open_url(&format!("{wrong_name}&sslmode=verify-ca"), &key).expect("verify-ca ignores the name");
    // A file that is not a CA: said so, naming the file.
    let err = open_url(
        &format!(
            "postgres://{USER}:{PASSWORD}@localhost:{PORT}/{name}?sslmode=verify-full&sslrootcert=/etc/hostname"
        ),
        &key,
    )
    .unwrap_err();
    assert!(
        err.contains("sslrootcert /etc/hostname holds no PEM certificate"),
        "{err}"
    );

    // A client certificate instead of a password (the cert-only role).
    db.exec(&format!(
        "GRANT ALL ON SCHEMA public TO {CERT_USER}; \
         GRANT ALL ON ALL TABLES IN SCHEMA public TO {CERT_USER}; \
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {CERT_USER}"
    ));
    let tls = tls_dir();
    let by_cert = format!(
        "postgres://{CERT_USER}@localhost:{PORT}/{name}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        ca.display(),
        tls.join("client.pem").display(),
        tls.join("client.key").display()
    );
    let by_cert_store = open_url(&by_cert, &key).expect("client certificate login");
    assert_eq!(by_cert_store.get_app("tls").unwrap().unwrap().name, "tls");
    // Without the certificate the role cannot log in.
    let no_cert = format!(
        "postgres://{CERT_USER}@localhost:{PORT}/{name}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let err = open_url(&no_cert, &key).unwrap_err();
    assert!(err.contains("cannot open the state database"), "{err}");

    // Without TLS, where the server allows it.
    let plain = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{PORT}/{name}?sslmode=disable");
    open_url(&plain, &key).expect("sslmode=disable");
}

/// `berth store …` with the environment `env`: exit code, stdout, stderr.
fn berth_store(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("store")
        .args(args)
        .env_remove("BERTH_STORE")
        .env_remove("BERTH_SECRET_KEY")
        .env_remove("BERTH_SOURCE_SECRET_KEY")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run berth store");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn berth_store_migrates_checks_and_copies_sqlite_to_postgresql_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDatabase::create();
    let team_key = SecretKey::generate(KeySource::Environment)
        .unwrap()
        .expose_base64();
    let pg = vec![
        ("BERTH_STORE", db.url()),
        ("BERTH_SECRET_KEY", team_key.clone()),
        (
            "BERTH_STATE_DIR",
            tmp.path().join("pg-state").display().to_string(),
        ),
    ];
    // An empty database: check refuses it (exit 1) and says to migrate.
    let (code, _, err) = berth_store(&["check"], &pg);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("berth store migrate"), "{err}");
    let (code, out, err) = berth_store(&["migrate"], &pg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("migrated from schema version 0 to 1"), "{out}");
    let (code, out, _) = berth_store(&["migrate"], &pg);
    assert_eq!(code, 0);
    assert!(
        out.contains("already at schema version 1; nothing to do"),
        "{out}"
    );
    assert!(!out.contains(berth::devtools::pg::PASSWORD), "{out}");

    // A SQLite store with its own key file, records made through the store.
    let sqlite_dir = tmp.path().join("laptop");
    let laptop = open_records(&StoreOptions::in_dir(&sqlite_dir, None)).unwrap();
    let cred = laptop
        .insert_credential(NewCredential {
            name: "ghcr".into(),
            registry: "ghcr.io".into(),
            username: "bot".into(),
            secret: Secret::new("tok-laptop"),
            secret_version: None,
        })
        .unwrap();
    laptop
        .upsert_app("web", Some(&cred.id), "{\"v\":1}")
        .unwrap();
    laptop.set_app_sealed("web", b"sealed").unwrap();
    laptop.insert_hook("web", "hash").unwrap();
    drop(laptop);
    let from = format!("sqlite://{}", sqlite_dir.join("berth.db").display());
    // Its key file is found beside it; the target seals with the team key.
    let (code, out, err) = berth_store(&["copy", "--from", &from, "--to", &db.url()], &pg);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("every record of the source is in the target"),
        "{out}"
    );
    assert!(!out.contains(berth::devtools::pg::PASSWORD), "{out}");
    // Idempotent, and --json says what it copied.
    let (code, out, err) =
        berth_store(&["copy", "--from", &from, "--to", &db.url(), "--json"], &pg);
    assert_eq!(code, 0, "{err}");
    let copied: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(copied["records"]["registry credentials"], 1, "{copied}");
    assert_eq!(copied["records"]["apps"], 1);
    assert_eq!(copied["records"]["deploy hooks"], 1);
    assert_eq!(copied["verified"], true);
    let (code, out, err) = berth_store(&["check", "--json"], &pg);
    assert_eq!(code, 0, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["backend"], "postgresql");
    assert_eq!(info["records"]["apps"], 1, "{info}");
    // The records open on PostgreSQL with the team key.
    let shared = Target::Postgres {
        dir: tmp.path().join("pg-state"),
        db,
        key: team_key.clone(),
    };
    let store = shared.open();
    assert_eq!(
        store
            .get_credential(&cred.id)
            .unwrap()
            .unwrap()
            .secret
            .expose(),
        "tok-laptop"
    );
    assert_eq!(
        store.app_sealed("web").unwrap().as_deref(),
        Some(&b"sealed"[..])
    );
    // And back to a new SQLite store, with the team key.
    let back = tmp.path().join("back/berth.db");
    let Target::Postgres { db, .. } = &shared else {
        unreachable!()
    };
    let (code, out, err) = berth_store(
        &[
            "copy",
            "--from",
            &db.url(),
            "--to",
            &format!("sqlite://{}", back.display()),
        ],
        &pg,
    );
    assert_eq!(code, 0, "{err}\n{out}");
    let key = SecretKey::from_base64(&team_key, KeySource::Environment).unwrap();
    let back_store = open_records(&StoreOptions {
        location: Some(berth::store::StoreLocation::Sqlite(back.clone())),
        ..StoreOptions::in_dir(tmp.path().join("back"), Some(key))
    })
    .unwrap();
    assert_eq!(back_store.list_hooks("web").unwrap().len(), 1);
    assert_eq!(
        back_store
            .get_credential(&cred.id)
            .unwrap()
            .unwrap()
            .secret
            .expose(),
        "tok-laptop"
    );
    // Bad input: the same store twice, a bad URL.
    let (code, _, err) = berth_store(&["copy", "--from", &from, "--to", &from], &pg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the same store"), "{err}");
    let (code, _, err) = berth_store(&["copy", "--from", "mysql://x", "--to", &from], &pg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--from") && err.contains("mysql"), "{err}");
}
