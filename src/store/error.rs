//! [`StoreError`]: every way the store can fail, worded for the person who
//! has to fix it. No variant carries a secret value: key material and
//! decrypted tokens never reach an error message.

use std::path::PathBuf;

use super::crypto::KeySource;

/// The environment variable that holds the secret key, named in errors.
pub const SECRET_KEY_VAR: &str = "BERTH_SECRET_KEY";

/// Failures of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// None of the places the state directory can come from is set.
    #[error(
        "cannot find a state directory: set the provider's `state_dir`, \
         BERTH_STATE_DIR, XDG_DATA_HOME or HOME"
    )]
    NoStateDir,

    /// The state directory (or a file in it) cannot be created or read.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory or file concerned.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The database cannot be opened, reached or configured.
    #[error("cannot open the state database {location}: {source}")]
    Open {
        /// The database file, or the PostgreSQL URL without its password.
        location: String,
        /// What the database said.
        #[source]
        source: DatabaseError,
    },

    /// The database was written by a newer Berth.
    #[error(
        "the state database {location} has schema version {found}, but this build \
         of Berth knows versions up to {supported}: upgrade Berth (or use the \
         version that wrote it); nothing was changed"
    )]
    SchemaTooNew {
        /// The database file, or the PostgreSQL URL without its password.
        location: String,
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },

    /// The store needs migrations and the caller asked not to apply them.
    #[error(
        "the state database {location} has schema version {found}; this build of \
         Berth needs version {needed}: run `berth store migrate` (every runner of \
         this version migrates on its own when it opens the store)"
    )]
    SchemaBehind {
        /// The database file, or the PostgreSQL URL without its password.
        location: String,
        /// The version recorded in the database.
        found: i64,
        /// The version this build needs.
        needed: i64,
    },

    /// A schema migration failed; the database is left at the previous version.
    #[error("migrating the state database to schema version {version} failed: {source}")]
    Migration {
        /// The version the migration leads to.
        version: i64,
        /// What the database said.
        #[source]
        source: DatabaseError,
    },

    /// The `store` setting (`BERTH_STORE`) is not a store URL Berth can use.
    #[error(
        "invalid store URL{}: {reason}. Write `sqlite:///PATH/berth.db`, or \
         `postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=/PATH/ca.pem` \
         (libpq's URL form)",
        .origin.as_ref().map(|o| format!(" in {o}")).unwrap_or_default()
    )]
    InvalidStoreUrl {
        /// Where the setting came from, e.g. `BERTH_STORE`.
        origin: Option<String>,
        /// What is wrong (never the password).
        reason: String,
    },

    /// A shared (PostgreSQL) store without an explicit key.
    #[error(
        "the PostgreSQL store {location} is shared by every runner, so its secrets \
         are sealed with one team key: set BERTH_SECRET_KEY (the same value on every \
         runner and `berth serve`; make one with `openssl rand -base64 32`)"
    )]
    SharedStoreNeedsKey {
        /// The PostgreSQL URL without its password.
        location: String,
    },

    /// A release outcome written by a runner whose deploy lease was taken
    /// over: it must not overwrite what the new holder records.
    #[error(
        "the deploy lease of app `{app}` was taken over{} while this deploy ran \
         (it was not renewed in time: a stalled runner or a lost connection to the \
         store); its outcome was not recorded. Run the deploy again: it converges",
        .holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default()
    )]
    LeaseLost {
        /// The app.
        app: String,
        /// Who holds the lease now, if anyone.
        holder: Option<String>,
    },

    /// Any other database failure while reading or writing records.
    #[error("state database error: {0}")]
    Database(#[from] DatabaseError),

    /// `PRAGMA integrity_check` reported problems.
    #[error("the state database failed its integrity check: {0}")]
    Corrupt(String),

    /// `BERTH_SECRET_KEY` (or a key passed in) is not 32 bytes of base64.
    #[error(
        "{origin} is not a valid secret key: expected the standard base64 encoding \
         of exactly 32 random bytes (for example the output of \
         `openssl rand -base64 32`); {reason}"
    )]
    MalformedKey {
        /// Where the value came from, e.g. `BERTH_SECRET_KEY`.
        origin: String,
        /// What is wrong with it (never the value itself).
        reason: String,
    },

    /// The key file exists but does not hold a key.
    #[error(
        "the secret key file {path} is damaged: {reason}; restore it from a backup \
         or set BERTH_SECRET_KEY to the original key"
    )]
    MalformedKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it (never its contents).
        reason: String,
    },

    /// The database holds encrypted records but no key is available.
    #[error(
        "the state directory {state_dir} holds encrypted records but its secret key \
         file {key_file} is missing and BERTH_SECRET_KEY is not set: restore the key \
         file or set BERTH_SECRET_KEY to the original key"
    )]
    KeyMissing {
        /// The state directory.
        state_dir: PathBuf,
        /// Where the key file was expected.
        key_file: PathBuf,
    },

    /// The key does not decrypt this database's key check value.
    #[error(
        "the secret key does not match the one this store was created \
         with ({key_source}): use the original key (on a shared store, the team's \
         BERTH_SECRET_KEY), or point Berth at another store"
    )]
    KeyMismatch {
        /// Where the key in use came from.
        key_source: KeySource,
    },

    /// A stored secret fails authentication: tampered with, or moved between
    /// records.
    #[error(
        "the stored secret of {kind} {id} cannot be decrypted: it was altered or \
         copied from another record; set the secret again"
    )]
    Decrypt {
        /// Record kind, e.g. `registry credential`.
        kind: &'static str,
        /// Record id.
        id: String,
    },

    /// The operating system's random generator or the cipher failed.
    #[error("cryptography failure: {0}")]
    Crypto(&'static str),

    /// No registry credential has this id.
    #[error("registry credential {id} does not exist")]
    CredentialNotFound {
        /// The id asked for.
        id: String,
    },

    /// The credential cannot be deleted while apps use it.
    #[error(
        "registry credential {id} is used by {}: change or delete {} first",
        list_apps(apps),
        if apps.len() == 1 { "that app" } else { "those apps" }
    )]
    CredentialInUse {
        /// The credential.
        id: String,
        /// Names of the apps that reference it, sorted.
        apps: Vec<String>,
    },

    /// No app record has this name.
    #[error("Berth has no record of app `{name}`")]
    AppNotFound {
        /// The app asked for.
        name: String,
    },

    /// An app record with this name exists already (a create must not
    /// take over an app another configuration or runner manages).
    #[error("app `{name}` already exists in Berth's store (another configuration, runner or `berth apply` manages it): import it with `terraform import <address> {name}`, or choose another name")]
    AppExists {
        /// The app.
        name: String,
    },

    /// The release is already in the journal.
    #[error("release {release} of app `{app}` is already in the releases journal")]
    ReleaseExists {
        /// The app.
        app: String,
        /// The release number.
        release: u64,
    },

    /// The release is not in the journal.
    #[error("release {release} of app `{app}` is not in the releases journal")]
    ReleaseNotFound {
        /// The app.
        app: String,
        /// The release number.
        release: u64,
    },

    /// The release already ended; a journal entry is finished once.
    #[error("release {release} of app `{app}` already finished ({outcome})")]
    ReleaseFinished {
        /// The app.
        app: String,
        /// The release number.
        release: u64,
        /// How it ended, e.g. `succeeded`.
        outcome: String,
    },

    /// The caller asked for something the store cannot record.
    #[error("invalid state database request: {0}")]
    InvalidRequest(String),

    /// A blocking store task panicked or was cancelled.
    #[error("a state database task did not finish: {0}")]
    Task(String),
}

fn list_apps(apps: &[String]) -> String {
    let names: Vec<String> = apps.iter().map(|a| format!("app `{a}`")).collect();
    names.join(", ")
}

/// A failure of the database behind the store, whatever the backend: what
/// it said, and what kind of failure it is (so the advice fits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", .kind.advice())]
pub struct DatabaseError {
    pub kind: DatabaseErrorKind,
    /// What the database said.
    pub message: String,
}

/// The kinds of database failure a person can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseErrorKind {
    DiskFull,
    /// An I/O failure (SQLite says only this when the disk filled up at the
    /// wrong moment).
    Io,
    ReadOnly,
    /// The connection to a database server failed or was lost.
    Connection,
    Other,
}

impl DatabaseErrorKind {
    /// What to do about it; nothing was half-written: the transaction was
    /// rolled back.
    fn advice(&self) -> &'static str {
        match self {
            DatabaseErrorKind::DiskFull => {
                " (the disk holding Berth's state directory is full: free some space and run again; nothing was half-written)"
            }
            DatabaseErrorKind::Io => {
                " (is the disk holding Berth's state directory full, or gone? Free some space and run again; nothing was half-written)"
            }
            DatabaseErrorKind::ReadOnly => {
                " (the state directory is read-only: Berth needs to write its records there)"
            }
            DatabaseErrorKind::Connection => {
                " (check that the database server is up and reachable at the URL's host and port, with those TLS settings; a transaction is written whole or not at all, so run again once it is)"
            }
            DatabaseErrorKind::Other => "",
        }
    }
}
