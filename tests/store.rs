//! The store under real processes: several writers on one state directory
//! at once, a writer killed with SIGKILL in the middle of its writes, and
//! two processes racing for one deploy lease.
//!
//! The child processes are this test binary itself, re-run with
//! `--exact child_writer` and `BERTH_STORE_TEST_ROLE=writer` (or
//! `--exact child_leaser` and `BERTH_STORE_TEST_ROLE=leaser`); without that
//! variable the child tests do nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth::registry::Secret;
use berth::store::{lease_owner, LeaseOutcome, NewCredential, Records, SqliteStore, StoreOptions};

const ROLE_VAR: &str = "BERTH_STORE_TEST_ROLE";
const DIR_VAR: &str = "BERTH_STORE_TEST_DIR";
const WRITER_VAR: &str = "BERTH_STORE_TEST_WRITER";
const COUNT_VAR: &str = "BERTH_STORE_TEST_COUNT";
const STARTED_FILE: &str = "writer-started";

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        state_dir: dir.to_owned(),
        secret_key: None,
    }
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
    let store = SqliteStore::open(&options(&dir)).expect("open store");
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
            std::fs::write(dir.join(format!("{STARTED_FILE}-{writer}")), b"").expect("marker");
        }
    }
}

fn writer_command(dir: &Path, writer: &str, count: usize) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, "writer")
        .env(DIR_VAR, dir)
        .env(WRITER_VAR, writer)
        .env(COUNT_VAR, count.to_string())
        .env_remove("BERTH_SECRET_KEY")
        .stdout(Stdio::null());
    cmd
}

/// Opens the store and checks that every record decrypts to the secret its
/// name implies; returns the names.
fn verify_all(dir: &Path) -> BTreeSet<String> {
    let store = SqliteStore::open(&options(dir)).expect("reopen after writers");
    store.integrity_check().expect("integrity_check is ok");
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
fn two_processes_write_at_once() {
    const PER_WRITER: usize = 150;
    let tmp = tempfile::tempdir().unwrap();
    // A fresh directory: both writers also race to create the key file,
    // switch the database to WAL and run the migrations.
    let dir = tmp.path().join("state");
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|w| {
            writer_command(&dir, w, PER_WRITER)
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
    let names = verify_all(&dir);
    let expected: BTreeSet<String> = ["a", "b"]
        .iter()
        .flat_map(|w| (0..PER_WRITER).map(move |i| format!("w{w}-{i}")))
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn writer_killed_mid_write_loses_no_committed_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    // Far more than it can write before the kill; the bound is a backstop.
    let mut child = writer_command(&dir, "k", 1_000_000)
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

    let names = verify_all(&dir);
    // Inserts commit one by one in order, so what survives is exactly a
    // prefix w k-0 .. w k-(n-1): no gap, no half record.
    let n = names.len();
    assert!(n >= 1, "the first record was committed before the marker");
    let expected: BTreeSet<String> = (0..n).map(|i| format!("wk-{i}")).collect();
    assert_eq!(names, expected);

    // The store stays writable after the crash.
    let store = SqliteStore::open(&options(&dir)).unwrap();
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
    let store = SqliteStore::open(&options(&dir)).expect("open store");
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
        LeaseOutcome::Acquired => format!("acquired {owner}"),
        LeaseOutcome::HeldBy { owner: holder, .. } => format!("held {owner} {holder}"),
    };
    std::fs::write(dir.join(format!("result-{id}")), line).expect("result");
}

#[test]
fn two_processes_race_for_one_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    // Create the store first so the race is about the lease only.
    drop(SqliteStore::open(&options(&dir)).unwrap());
    let exe = std::env::current_exe().expect("test binary path");
    let ids = ["a", "b"];
    let mut children: Vec<_> = ids
        .iter()
        .map(|id| {
            Command::new(&exe)
                .args(["--exact", "child_leaser", "--nocapture", "--test-threads=1"])
                .env(ROLE_VAR, "leaser")
                .env(DIR_VAR, &dir)
                .env(WRITER_VAR, id)
                .env_remove("BERTH_SECRET_KEY")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn leaser")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ids
        .iter()
        .all(|id| dir.join(format!("ready-{id}")).exists())
    {
        for child in &mut children {
            if let Some(status) = child.try_wait().expect("poll leaser") {
                panic!("leaser exited early: {status}");
            }
        }
        assert!(Instant::now() < deadline, "leasers never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
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
    let store = SqliteStore::open(&options(&dir)).unwrap();
    let ttl = Duration::from_secs(60);
    assert!(store.renew_lease(RACE_APP, winner, ttl).unwrap());
    assert!(!store.renew_lease(RACE_APP, loser_owner, ttl).unwrap());
}
