//! [`PostgresStore`]: the shared backend of [`Records`], for teams whose
//! runners (laptops, CI, `berth serve`) must see one set of records.
//!
//! - Connections: a deadpool pool of tokio-postgres clients, TLS by rustls
//!   as the URL's `sslmode` says ([`tls_connector`]). The pool and the
//!   connection tasks run on a small runtime of the store's own, so the
//!   synchronous [`Records`] calls (made on blocking threads, see
//!   [`super::Store`]) work from any thread.
//! - Time: every timestamp a runner compares with another's (lease and job
//!   run expiries, `since`) comes from the database's clock,
//!   `berth_now_ms()`, never the runner's.
//! - Leases are rows, never session advisory locks (those break behind
//!   PgBouncer and pools); a lease has a generation that the holder's
//!   release writes check ([`LeaseFence`]).
//! - Migrations are versioned in `berth_migrations`; a runner applies the
//!   missing ones in one transaction under a transaction-scoped advisory
//!   lock, so five runners starting at once on an empty database apply each
//!   exactly once. A database newer than the binary is refused.
//! - A lost connection: an operation whose request never reached the server
//!   (the pooled connection was already closed) is retried on a fresh
//!   connection; so are reads and idempotent writes that failed on the wire.
//!   Anything else fails as a [`DatabaseErrorKind::Connection`] error: a
//!   transaction is committed whole or not at all, and the next run converges.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::common::{
    check_finishable, finish_arguments, from_millis, job_run_id, millis, new_id, new_key_check,
    open_credential, phases_json, release_number, seal_credential, ttl_millis, unsigned,
    verify_key_check, CredentialRow, CREDENTIAL_COLUMNS, JOB_RUN_COLUMNS, KEY_CHECK_META,
    RELEASE_COLUMNS,
};
use super::copy::{DumpedApp, PlannedDigest, StoreDump, StoreInfo};
use super::crypto::{Cipher, RecordKind};
use super::error::{DatabaseError, DatabaseErrorKind, StoreError};
use super::location::{PgTls, PostgresLocation, SslMode};
use super::sqlite::COUNTED_TABLES;
use super::{
    AppRecord, Credential, CredentialUpdate, HookRecord, JobRunEnd, JobRunRecord, JobRunState,
    KnownImage, LeaseFence, LeaseOutcome, NewCredential, NewJobRun, NewRelease, Records,
    ReleaseOutcome, ReleaseRecord, StoreOptions,
};

/// The schema, one migration per entry; `berth_migrations` records which
/// ran. Never edit one that shipped: add the next.
const MIGRATIONS: &[(&str, &str)] = &[(
    "the records of Berth 0.1 (SQLite schema 7)",
    r#"
    CREATE FUNCTION berth_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
        $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

    CREATE TABLE meta (
        key   text PRIMARY KEY,
        value bytea NOT NULL
    );

    CREATE TABLE registry_credentials (
        id             text PRIMARY KEY,
        name           text NOT NULL,
        registry       text NOT NULL,
        username       text NOT NULL,
        secret         bytea NOT NULL,
        secret_version bigint,
        created_at     bigint NOT NULL,
        updated_at     bigint NOT NULL
    );

    CREATE TABLE apps (
        name          text PRIMARY KEY,
        credential_id text REFERENCES registry_credentials (id),
        spec_json     text NOT NULL,
        updated_at    bigint NOT NULL,
        secrets       bytea
    );
    CREATE INDEX apps_by_credential ON apps (credential_id);

    CREATE TABLE releases (
        app          text NOT NULL,
        number       bigint NOT NULL CHECK (number >= 0),
        digest       text NOT NULL,
        image        text NOT NULL,
        spec_json    text NOT NULL,
        triggered_by text NOT NULL,
        outcome      text NOT NULL
                     CHECK (outcome IN ('running', 'succeeded', 'failed', 'rolled_back')),
        error        text,
        phases_json  text NOT NULL DEFAULT '[]',
        started_at   bigint NOT NULL,
        finished_at  bigint,
        PRIMARY KEY (app, number)
    );

    CREATE TABLE leases (
        app         text PRIMARY KEY,
        owner       text NOT NULL,
        expires_at  bigint NOT NULL,
        generation  bigint NOT NULL DEFAULT 0,
        acquired_at bigint NOT NULL DEFAULT 0
    );

    CREATE TABLE planned_digests (
        app        text NOT NULL,
        image      text NOT NULL,
        prior      text NOT NULL,
        digest     text NOT NULL,
        planned_at bigint NOT NULL,
        PRIMARY KEY (app, image, prior)
    );

    CREATE TABLE known_images (
        top_digest   text PRIMARY KEY,
        digest       text NOT NULL,
        index_digest text,
        size_bytes   bigint NOT NULL,
        resolved_at  bigint NOT NULL
    );

    CREATE TABLE deploy_hooks (
        id         text PRIMARY KEY,
        app        text NOT NULL,
        key_hash   text NOT NULL,
        created_at bigint NOT NULL
    );
    CREATE INDEX deploy_hooks_by_app ON deploy_hooks (app);

    CREATE TABLE job_runs (
        id               bigserial PRIMARY KEY,
        app              text NOT NULL,
        job              text NOT NULL,
        scheduled_at     bigint,
        triggered_by     text NOT NULL,
        state            text NOT NULL CHECK (state IN ('running', 'succeeded',
                         'failed', 'timed_out', 'replaced', 'skipped', 'missed', 'lost')),
        owner            text,
        lease_expires_at bigint,
        host             text,
        container_id     text,
        digest           text,
        release          bigint,
        exit_code        bigint,
        reason           text,
        log_tail_json    text NOT NULL DEFAULT '[]',
        started_at       bigint,
        finished_at      bigint,
        UNIQUE (app, job, scheduled_at)
    );
    CREATE INDEX job_runs_by_job ON job_runs (app, job, id);
    "#,
)];

/// The schema version this build writes.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The key of the transaction-scoped advisory lock migrations take
/// ("berth" in ASCII).
const MIGRATION_LOCK: i64 = 0x0062_6572_7468;

/// Connections a store keeps open at most. Each costs a TLS handshake and
/// a SCRAM login, and its own prepared statements; the operations are
/// short, so a few serve terraform's ten parallel calls.
const POOL_SIZE: usize = 4;

/// How long an operation waits for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The PostgreSQL backend.
pub struct PostgresStore {
    /// Drives the pool's connections; shut down in the background on drop
    /// (the store may be dropped inside another runtime).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    cipher: Cipher,
    location: String,
    /// Statements sent, for the benchmark's round-trip count.
    statements: AtomicU64,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What an operation failed with, before it becomes a [`StoreError`].
enum Failure {
    Pg(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure::Pg(e)
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Failure {
        Failure::Pool(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

/// Whether an operation may be sent again after a failure on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads, and writes whose repetition changes nothing.
    Idempotent,
    /// Only when the request never left (the connection was closed).
    IfNotSent,
}

fn is_connection_failure(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let class = &code.code()[..2];
        // 08: connection exception; 57P01-3: the server shut the session.
        return class == "08"
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW;
    }
    // No SQLSTATE: I/O, TLS or protocol trouble on the connection.
    e.as_db_error().is_none()
}

fn session_ended_by_server(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
    })
}

impl Failure {
    fn retryable(&self, retry: Retry) -> bool {
        match self {
            // Never sent, or the server ended the session before running
            // it (an administrator, a restart): nothing was committed.
            Failure::Pg(e) if e.is_closed() || session_ended_by_server(e) => true,
            Failure::Pg(e) => retry == Retry::Idempotent && is_connection_failure(e),
            // No connection could be made or had: nothing was sent.
            Failure::Pool(deadpool_postgres::PoolError::Backend(_))
            | Failure::Pool(deadpool_postgres::PoolError::Timeout(_)) => true,
            _ => false,
        }
    }

    /// The request failed because its pooled connection was already
    /// closed, or the server ended the session: nothing ran.
    fn connection_was_closed(&self) -> bool {
        matches!(self, Failure::Pg(e) if e.is_closed() || session_ended_by_server(e))
    }

    fn into_store_error(self) -> StoreError {
        match self {
            Failure::Pg(e) => StoreError::Database(pg_error(&e)),
            Failure::Pool(e) => StoreError::Database(pool_error(&e)),
            Failure::Store(e) => e,
        }
    }
}

/// tokio-postgres's error in the store's words: the server's message and
/// detail when it sent one, the cause otherwise (never a query parameter).
fn pg_error(e: &tokio_postgres::Error) -> DatabaseError {
    let kind = if let Some(code) = e.code() {
        match code {
            c if *c == SqlState::DISK_FULL => DatabaseErrorKind::DiskFull,
            c if *c == SqlState::READ_ONLY_SQL_TRANSACTION => DatabaseErrorKind::ReadOnly,
            c if *c == SqlState::IO_ERROR => DatabaseErrorKind::Io,
            _ if is_connection_failure(e) => DatabaseErrorKind::Connection,
            _ => DatabaseErrorKind::Other,
        }
    } else {
        DatabaseErrorKind::Connection
    };
    let message = match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({})", db.message(), detail),
            None => db.message().to_owned(),
        },
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let s_text = s.to_string();
                if !text.contains(&s_text) {
                    text = format!("{text}: {s_text}");
                }
                source = s.source();
            }
            text
        }
    };
    DatabaseError { kind, message }
}

fn pool_error(e: &deadpool_postgres::PoolError) -> DatabaseError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        deadpool_postgres::PoolError::Timeout(_) => DatabaseError {
            kind: DatabaseErrorKind::Connection,
            message: format!(
                "no connection to the database within {}s (the server is unreachable, or every connection is busy)",
                POOL_WAIT.as_secs()
            ),
        },
        other => DatabaseError {
            kind: DatabaseErrorKind::Connection,
            message: other.to_string(),
        },
    }
}

/// rustls verification for `sslmode=require` without a CA, and for
/// `verify-ca` (which checks the chain but not the name): wraps the WebPKI
/// verifier, or accepts any certificate, and still checks the handshake's
/// signatures.
#[derive(Debug)]
struct LaxVerifier {
    /// The chain check; `None` accepts any certificate (`require`).
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for LaxVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(ok) => Ok(ok),
            // verify-ca: any name, as long as our CA signed it.
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn read_pem_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// The TLS connector for the URL's TLS settings. Errors say which file is
/// wrong (never its contents).
pub fn tls_connector(tls: &PgTls) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let roots = match &tls.root_cert {
        Some(path) => {
            let pem = read_pem_file(path, "sslrootcert")?;
            let mut roots = RootCertStore::empty();
            let mut count = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.map_err(|_| format!("sslrootcert {} is not valid PEM", path.display()))?;
                roots.add(cert).map_err(|e| {
                    format!(
                        "sslrootcert {} holds a certificate rustls refuses: {e}",
                        path.display()
                    )
                })?;
                count += 1;
            }
            if count == 0 {
                return Err(format!(
                    "sslrootcert {} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
                    path.display()
                ));
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let chain = |roots: &Arc<RootCertStore>| {
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("TLS setup failed: {e}"))
    };
    let builder = match (tls.mode, &roots) {
        (SslMode::VerifyFull, Some(roots)) => builder.with_webpki_verifier(chain(roots)?),
        (SslMode::VerifyFull, None) => {
            return Err("sslmode=verify-full needs sslrootcert".to_owned())
        }
        // libpq: `require` with a root certificate verifies like verify-ca.
        (
            SslMode::VerifyCa | SslMode::Require | SslMode::Prefer | SslMode::Disable,
            Some(roots),
        ) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LaxVerifier {
                chain: Some(chain(roots)?),
                provider: provider.clone(),
            })),
        (SslMode::VerifyCa, None) => return Err("sslmode=verify-ca needs sslrootcert".to_owned()),
        (_, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LaxVerifier {
                chain: None,
                provider: provider.clone(),
            })),
    };
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let pem = read_pem_file(cert_path, "sslcert")?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("sslcert {} is not valid PEM", cert_path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "sslcert {} holds no PEM certificate",
                    cert_path.display()
                ));
            }
            let pem = read_pem_file(key_path, "sslkey")?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "sslkey {} holds no PEM private key (PKCS#8, RSA or EC)",
                        key_path.display()
                    )
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("sslcert and sslkey do not go together: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn row_credential(row: &Row) -> CredentialRow {
    CredentialRow {
        id: row.get(0),
        name: row.get(1),
        registry: row.get(2),
        username: row.get(3),
        sealed: row.get(4),
        secret_version: row.get(5),
        created_at: row.get(6),
        updated_at: row.get(7),
    }
}

fn row_app(row: &Row) -> AppRecord {
    AppRecord {
        name: row.get(0),
        credential_id: row.get(1),
        spec_json: row.get(2),
        updated_at: from_millis(row.get(3)),
    }
}

fn row_hook(row: &Row) -> HookRecord {
    HookRecord {
        id: row.get(0),
        app: row.get(1),
        key_hash: row.get(2),
        created_at: from_millis(row.get(3)),
    }
}

fn row_release(row: &Row) -> Result<ReleaseRecord, StoreError> {
    let outcome: String = row.get(6);
    let phases: String = row.get(8);
    Ok(ReleaseRecord {
        app: row.get(0),
        release: unsigned(row.get(1), "a release number")?,
        digest: row.get(2),
        image: row.get(3),
        spec_json: row.get(4),
        trigger: row.get(5),
        outcome: outcome.parse().map_err(StoreError::Corrupt)?,
        error: row.get(7),
        phases: serde_json::from_str(&phases)
            .map_err(|e| StoreError::Corrupt(format!("a release's phase timings: {e}")))?,
        started_at: from_millis(row.get(9)),
        finished_at: row.get::<_, Option<i64>>(10).map(from_millis),
    })
}

fn row_job_run(row: &Row) -> Result<JobRunRecord, StoreError> {
    let state: String = row.get(5);
    let tail: String = row.get(13);
    Ok(JobRunRecord {
        id: unsigned(row.get(0), "a job run id")?,
        app: row.get(1),
        job: row.get(2),
        scheduled_at: row.get::<_, Option<i64>>(3).map(from_millis),
        trigger: row.get(4),
        state: state.parse().map_err(StoreError::Corrupt)?,
        owner: row.get(6),
        host: row.get(7),
        container_id: row.get(8),
        digest: row.get(9),
        release: row
            .get::<_, Option<i64>>(10)
            .and_then(|r| u64::try_from(r).ok()),
        exit_code: row.get(11),
        reason: row.get(12),
        log_tail: serde_json::from_str(&tail)
            .map_err(|e| StoreError::Corrupt(format!("a job run's log lines: {e}")))?,
        started_at: row.get::<_, Option<i64>>(14).map(from_millis),
        finished_at: row.get::<_, Option<i64>>(15).map(from_millis),
    })
}

fn generation(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

type Client = deadpool_postgres::Object;

impl PostgresStore {
    /// Connects, migrates (unless `options.migrate` is off) and checks the
    /// key. Blocking.
    pub fn open(
        location: &PostgresLocation,
        options: &StoreOptions,
    ) -> Result<PostgresStore, StoreError> {
        let where_ = location.display().to_owned();
        let key = options
            .secret_key
            .clone()
            .ok_or_else(|| StoreError::SharedStoreNeedsKey {
                location: where_.clone(),
            })?;
        let cipher = Cipher::new(&key)?;
        let open_err = |message: String, kind| StoreError::Open {
            location: where_.clone(),
            source: DatabaseError { kind, message },
        };
        let tls =
            tls_connector(&location.tls).map_err(|m| open_err(m, DatabaseErrorKind::Other))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-postgres")
            .enable_all()
            .build()
            .map_err(|e| {
                open_err(
                    format!("cannot start its I/O thread: {e}"),
                    DatabaseErrorKind::Other,
                )
            })?;
        let manager = Manager::from_config(
            location.config.clone(),
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let connect_timeout = location
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(super::location::DEFAULT_CONNECT_TIMEOUT);
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(connect_timeout))
                .wait_timeout(Some(POOL_WAIT))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(|e| open_err(e.to_string(), DatabaseErrorKind::Other))?
        };
        let store = PostgresStore {
            runtime: Some(runtime),
            pool,
            cipher,
            location: where_.clone(),
            statements: AtomicU64::new(0),
        };
        // The first connection says whether the server is there at all.
        store
            .block(async { store.client().await.map(drop) })
            .map_err(|e| match e {
                Failure::Store(e) => e,
                Failure::Pg(e) => StoreError::Open {
                    location: where_.clone(),
                    source: pg_error(&e),
                },
                Failure::Pool(e) => StoreError::Open {
                    location: where_.clone(),
                    source: pool_error(&e),
                },
            })?;
        if options.migrate {
            // The common case, a current schema, costs one read; only a
            // store that is behind takes the migration lock.
            if store.schema_version()? != PG_SCHEMA_VERSION {
                store.migrate(PG_SCHEMA_VERSION)?;
            }
        } else {
            let found = store.schema_version()?;
            if found > PG_SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew {
                    location: where_,
                    found,
                    supported: PG_SCHEMA_VERSION,
                });
            }
            if found < PG_SCHEMA_VERSION {
                return Err(StoreError::SchemaBehind {
                    location: where_,
                    found,
                    needed: PG_SCHEMA_VERSION,
                });
            }
        }
        store.check_key(&key)?;
        Ok(store)
    }

    /// Statements sent so far (each a round trip, or part of one).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Runs `fut` to completion on this thread, inside the store's runtime
    /// (its timers and sockets belong there).
    fn block<T>(&self, fut: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the store");
        let _entered = runtime.enter();
        futures::executor::block_on(fut)
    }

    /// Runs `op` (all of it again on a retry), at most twice.
    fn op<T, F, Fut>(&self, retry: Retry, op: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.block(async {
            // Each pooled connection the server closed fails one attempt
            // (and is then dropped by the pool's recycle check), so after a
            // cut every one of them may: up to POOL_SIZE more attempts for
            // those; one more for anything else that is safe to repeat.
            let mut stale = 0;
            let mut other = 0;
            loop {
                match op().await {
                    Err(e) if e.retryable(retry) => {
                        let budget = if e.connection_was_closed() {
                            stale += 1;
                            stale <= POOL_SIZE
                        } else {
                            other += 1;
                            other <= 1
                        };
                        if !budget {
                            return Err(e);
                        }
                        tracing::debug!(store = %self.location, "retrying a store operation on a new connection");
                    }
                    done => return done,
                }
            }
        })
        .map_err(Failure::into_store_error)
    }

    async fn client(&self) -> Result<Client, Failure> {
        Ok(self.pool.get().await?)
    }

    /// One statement, prepared once per connection.
    async fn query(
        &self,
        client: &Client,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure> {
        let stmt = client.prepare_cached(sql).await?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        Ok(client.query(&stmt, params).await?)
    }

    async fn execute(
        &self,
        client: &Client,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Failure> {
        let stmt = client.prepare_cached(sql).await?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        Ok(client.execute(&stmt, params).await?)
    }

    async fn tx_query(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure> {
        let stmt = tx.prepare_cached(sql).await?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        Ok(tx.query(&stmt, params).await?)
    }

    async fn tx_execute(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Failure> {
        let stmt = tx.prepare_cached(sql).await?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        Ok(tx.execute(&stmt, params).await?)
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let exists = self
                .query(
                    &client,
                    "SELECT to_regclass('berth_migrations') IS NOT NULL",
                    &[],
                )
                .await?;
            if !exists[0].get::<_, bool>(0) {
                return Ok(0);
            }
            let rows = self
                .query(
                    &client,
                    "SELECT coalesce(max(version), 0)::bigint FROM berth_migrations",
                    &[],
                )
                .await?;
            Ok(rows[0].get(0))
        })
    }

    /// Applies the migrations up to `target` that the database lacks, in
    /// one transaction holding the migration lock; how many it applied.
    pub fn migrate(&self, target: i64) -> Result<usize, StoreError> {
        let applied_by = super::lease_owner();
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS berth_migrations (
                     version     integer PRIMARY KEY,
                     description text NOT NULL,
                     applied_at  timestamptz NOT NULL DEFAULT now(),
                     applied_by  text NOT NULL
                 )",
            )
            .await?;
            let current: i64 = tx
                .query_one(
                    "SELECT coalesce(max(version), 0)::bigint FROM berth_migrations",
                    &[],
                )
                .await?
                .get(0);
            if current > PG_SCHEMA_VERSION {
                return Err(Failure::Store(StoreError::SchemaTooNew {
                    location: self.location.clone(),
                    found: current,
                    supported: PG_SCHEMA_VERSION,
                }));
            }
            let mut applied = 0;
            for (index, (description, sql)) in MIGRATIONS.iter().enumerate() {
                let version = index as i64 + 1;
                if version <= current || version > target {
                    continue;
                }
                tx.batch_execute(sql).await.map_err(|e| {
                    Failure::Store(StoreError::Migration {
                        version,
                        source: pg_error(&e),
                    })
                })?;
                tx.execute(
                    "INSERT INTO berth_migrations (version, description, applied_by) \
                     VALUES ($1, $2, $3)",
                    &[&(version as i32), description, &applied_by],
                )
                .await?;
                applied += 1;
            }
            tx.commit().await?;
            Ok(applied)
        })
        .map_err(Failure::into_store_error)
    }

    /// Records the key check on first open; afterwards requires that the
    /// key opens it.
    fn check_key(&self, key: &super::SecretKey) -> Result<(), StoreError> {
        let sealed = new_key_check(&self.cipher)?;
        let stored: Vec<u8> = self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let read = "SELECT value FROM meta WHERE key = $1";
            if let Some(row) = self.query(&client, read, &[&KEY_CHECK_META]).await?.first() {
                return Ok(row.get(0));
            }
            // The first runner records it; if another won the race, its
            // value stays and is what we check against.
            self.execute(
                &client,
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&KEY_CHECK_META, &sealed],
            )
            .await?;
            let rows = self.query(&client, read, &[&KEY_CHECK_META]).await?;
            Ok(rows.first().map(|r| r.get(0)).unwrap_or_default())
        })?;
        verify_key_check(&self.cipher, key, &stored)
    }

    /// The versions `berth_migrations` records, with who applied them.
    pub fn applied_migrations(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT version::bigint, applied_by FROM berth_migrations ORDER BY version",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    async fn check_fence(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        app: &str,
        fence: &LeaseFence,
    ) -> Result<(), Failure> {
        if fence.app != app {
            return Err(Failure::Store(StoreError::LeaseLost {
                app: app.to_owned(),
                holder: None,
            }));
        }
        // FOR SHARE: a take-over waits until this transaction ends.
        let rows = self
            .tx_query(
                tx,
                "SELECT owner, generation FROM leases WHERE app = $1 FOR SHARE",
                &[&fence.app],
            )
            .await?;
        match rows
            .first()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        {
            Some((owner, g)) if owner == fence.owner && generation(g) == fence.generation => Ok(()),
            other => Err(Failure::Store(StoreError::LeaseLost {
                app: fence.app.clone(),
                holder: other.map(|(owner, _)| owner).filter(|o| !o.is_empty()),
            })),
        }
    }

    async fn write_app(
        &self,
        name: &str,
        credential_id: Option<&str>,
        spec_json: &str,
        only_new: bool,
    ) -> Result<AppRecord, Failure> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(id) = credential_id {
            let rows = self
                .tx_query(
                    &tx,
                    "SELECT 1 FROM registry_credentials WHERE id = $1 FOR SHARE",
                    &[&id],
                )
                .await?;
            if rows.is_empty() {
                return Err(StoreError::CredentialNotFound { id: id.to_owned() }.into());
            }
        }
        let sql = if only_new {
            "INSERT INTO apps (name, credential_id, spec_json, updated_at) \
             VALUES ($1, $2, $3, berth_now_ms()) ON CONFLICT (name) DO NOTHING \
             RETURNING updated_at"
        } else {
            "INSERT INTO apps (name, credential_id, spec_json, updated_at) \
             VALUES ($1, $2, $3, berth_now_ms()) \
             ON CONFLICT (name) DO UPDATE SET credential_id = excluded.credential_id, \
             spec_json = excluded.spec_json, updated_at = excluded.updated_at \
             RETURNING updated_at"
        };
        let rows = self
            .tx_query(&tx, sql, &[&name, &credential_id, &spec_json])
            .await?;
        let Some(row) = rows.first() else {
            return Err(StoreError::AppExists {
                name: name.to_owned(),
            }
            .into());
        };
        let updated_at = from_millis(row.get(0));
        tx.commit().await?;
        Ok(AppRecord {
            name: name.to_owned(),
            credential_id: credential_id.map(str::to_owned),
            spec_json: spec_json.to_owned(),
            updated_at,
        })
    }
}

impl Records for PostgresStore {
    fn claim_job_run(&self, new: &NewJobRun) -> Result<Option<JobRunRecord>, StoreError> {
        let scheduled = new.scheduled_at.map(millis);
        let ttl = ttl_millis(new.ttl);
        self.op(Retry::IfNotSent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    &format!(
                        "INSERT INTO job_runs (app, job, scheduled_at, triggered_by, state, owner, \
                         lease_expires_at, started_at) \
                         VALUES ($1, $2, $3, $4, 'running', $5, berth_now_ms() + $6, berth_now_ms()) \
                         ON CONFLICT (app, job, scheduled_at) DO NOTHING RETURNING {JOB_RUN_COLUMNS}"
                    ),
                    &[&new.app, &new.job, &scheduled, &new.trigger, &new.owner, &ttl],
                )
                .await?;
            Ok(rows.first().map(row_job_run).transpose()?)
        })
    }

    fn record_job_runs_not_run(
        &self,
        app: &str,
        job: &str,
        times: &[SystemTime],
        state: JobRunState,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let times: Vec<i64> = times.iter().map(|t| millis(*t)).collect();
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let n = self
                .execute(
                    &client,
                    "INSERT INTO job_runs (app, job, scheduled_at, triggered_by, state, reason, \
                     finished_at) SELECT $1, $2, t, 'schedule', $4, $5, berth_now_ms() \
                     FROM unnest($3::bigint[]) AS t \
                     ON CONFLICT (app, job, scheduled_at) DO NOTHING",
                    &[&app, &job, &times, &state.as_str(), &reason],
                )
                .await?;
            Ok(n as usize)
        })
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
        let id = job_run_id(id)?;
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let n = self
                .execute(
                    &client,
                    "UPDATE job_runs SET host = $3, container_id = $4, digest = $5, release = $6 \
                     WHERE id = $1 AND owner = $2 AND state = 'running'",
                    &[&id, &owner, &host, &container_id, &digest, &release],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn renew_job_run(&self, id: u64, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let id = job_run_id(id)?;
        let ttl = ttl_millis(ttl);
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let n = self
                .execute(
                    &client,
                    "UPDATE job_runs SET lease_expires_at = berth_now_ms() + $3 \
                     WHERE id = $1 AND owner = $2 AND state = 'running'",
                    &[&id, &owner, &ttl],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn finish_job_run(&self, id: u64, owner: &str, end: &JobRunEnd) -> Result<bool, StoreError> {
        let id = job_run_id(id)?;
        let tail = serde_json::to_string(&end.log_tail)
            .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
        self.op(Retry::IfNotSent, || async {
            let client = self.client().await?;
            let n = self
                .execute(
                    &client,
                    "UPDATE job_runs SET state = $3, exit_code = $4, reason = $5, \
                     log_tail_json = $6, finished_at = berth_now_ms(), lease_expires_at = NULL \
                     WHERE id = $1 AND owner = $2 AND state = 'running'",
                    &[
                        &id,
                        &owner,
                        &end.state.as_str(),
                        &end.exit_code,
                        &end.reason,
                        &tail,
                    ],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn stop_job_run(&self, id: u64, state: JobRunState, reason: &str) -> Result<bool, StoreError> {
        let id = job_run_id(id)?;
        self.op(Retry::IfNotSent, || async {
            let client = self.client().await?;
            let n = self
                .execute(
                    &client,
                    "UPDATE job_runs SET state = $2, reason = $3, finished_at = berth_now_ms(), \
                     lease_expires_at = NULL WHERE id = $1 AND state = 'running'",
                    &[&id, &state.as_str(), &reason],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn running_job_runs(&self, app: &str, job: &str) -> Result<Vec<JobRunRecord>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            self.tx_execute(
                &tx,
                "UPDATE job_runs SET state = 'lost', finished_at = berth_now_ms(), \
                 lease_expires_at = NULL, \
                 reason = 'the runner that started it stopped renewing its lease (killed, or cut off from the store)' \
                 WHERE app = $1 AND job = $2 AND state = 'running' \
                 AND lease_expires_at <= berth_now_ms()",
                &[&app, &job],
            )
            .await?;
            let rows = self
                .tx_query(
                    &tx,
                    &format!(
                        "SELECT {JOB_RUN_COLUMNS} FROM job_runs \
                         WHERE app = $1 AND job = $2 AND state = 'running' ORDER BY id"
                    ),
                    &[&app, &job],
                )
                .await?;
            tx.commit().await?;
            Ok(rows.iter().map(row_job_run).collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn list_job_runs(
        &self,
        app: &str,
        job: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRunRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    &format!(
                        "SELECT {JOB_RUN_COLUMNS} FROM job_runs \
                         WHERE app = $1 AND ($2::text IS NULL OR job = $2) \
                         ORDER BY id DESC LIMIT $3"
                    ),
                    &[&app, &job, &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(row_job_run)
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn last_scheduled_at(&self, app: &str, job: &str) -> Result<Option<SystemTime>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT max(scheduled_at) FROM job_runs WHERE app = $1 AND job = $2",
                    &[&app, &job],
                )
                .await?;
            Ok(rows[0].get::<_, Option<i64>>(0).map(from_millis))
        })
    }

    fn insert_credential(&self, new: NewCredential) -> Result<Credential, StoreError> {
        let id = new_id("rc")?;
        let sealed = seal_credential(&self.cipher, &id, &new.secret)?;
        let now: i64 = self.op(Retry::IfNotSent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "INSERT INTO registry_credentials \
                     (id, name, registry, username, secret, secret_version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, berth_now_ms(), berth_now_ms()) \
                     RETURNING created_at",
                    &[&id, &new.name, &new.registry, &new.username, &sealed, &new.secret_version],
                )
                .await?;
            Ok(rows[0].get(0))
        })?;
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
        let row = self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    &format!("SELECT {CREDENTIAL_COLUMNS} FROM registry_credentials WHERE id = $1"),
                    &[&id],
                )
                .await?;
            Ok(rows.first().map(row_credential))
        })?;
        row.map(|row| open_credential(&self.cipher, row))
            .transpose()
    }

    fn update_credential(
        &self,
        id: &str,
        update: CredentialUpdate,
    ) -> Result<Credential, StoreError> {
        self.op(Retry::IfNotSent, || async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let rows = self
                .tx_query(
                    &tx,
                    &format!(
                        "SELECT {CREDENTIAL_COLUMNS} FROM registry_credentials WHERE id = $1 FOR UPDATE"
                    ),
                    &[&id],
                )
                .await?;
            let row = rows
                .first()
                .map(row_credential)
                .ok_or_else(|| StoreError::CredentialNotFound { id: id.to_owned() })?;
            // Opening the current secret also proves the record is intact.
            let mut credential = open_credential(&self.cipher, row)?;
            let update = update.clone();
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
            let sealed = seal_credential(&self.cipher, id, &credential.secret)?;
            let rows = self
                .tx_query(
                    &tx,
                    "UPDATE registry_credentials SET name = $2, username = $3, secret = $4, \
                     secret_version = $5, updated_at = berth_now_ms() WHERE id = $1 \
                     RETURNING updated_at",
                    &[&id, &credential.name, &credential.username, &sealed, &credential.secret_version],
                )
                .await?;
            credential.updated_at = from_millis(rows[0].get(0));
            tx.commit().await?;
            Ok(credential)
        })
    }

    fn delete_credential(&self, id: &str) -> Result<bool, StoreError> {
        self.op(Retry::Idempotent, || async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Lock the credential first: an app write that names it waits.
            self.tx_query(
                &tx,
                "SELECT 1 FROM registry_credentials WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
            let apps: Vec<String> = self
                .tx_query(
                    &tx,
                    "SELECT name FROM apps WHERE credential_id = $1 ORDER BY name",
                    &[&id],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !apps.is_empty() {
                return Err(StoreError::CredentialInUse {
                    id: id.to_owned(),
                    apps,
                }
                .into());
            }
            let n = self
                .tx_execute(
                    &tx,
                    "DELETE FROM registry_credentials WHERE id = $1",
                    &[&id],
                )
                .await?;
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    fn list_credentials(&self) -> Result<Vec<Credential>, StoreError> {
        let rows = self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    &format!(
                        "SELECT {CREDENTIAL_COLUMNS} FROM registry_credentials ORDER BY name, id"
                    ),
                    &[],
                )
                .await?;
            Ok(rows.iter().map(row_credential).collect::<Vec<_>>())
        })?;
        rows.into_iter()
            .map(|row| open_credential(&self.cipher, row))
            .collect()
    }

    fn upsert_app(
        &self,
        name: &str,
        credential_id: Option<&str>,
        spec_json: &str,
    ) -> Result<AppRecord, StoreError> {
        self.op(Retry::Idempotent, || {
            self.write_app(name, credential_id, spec_json, false)
        })
    }

    fn create_app(
        &self,
        name: &str,
        credential_id: Option<&str>,
        spec_json: &str,
    ) -> Result<AppRecord, StoreError> {
        self.op(Retry::IfNotSent, || {
            self.write_app(name, credential_id, spec_json, true)
        })
    }

    fn get_app(&self, name: &str) -> Result<Option<AppRecord>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT name, credential_id, spec_json, updated_at FROM apps WHERE name = $1",
                    &[&name],
                )
                .await?;
            Ok(rows.first().map(row_app))
        })
    }

    fn delete_app(&self, name: &str) -> Result<bool, StoreError> {
        self.op(Retry::IfNotSent, || async {
            let client = self.client().await?;
            let n = self
                .execute(&client, "DELETE FROM apps WHERE name = $1", &[&name])
                .await?;
            Ok(n > 0)
        })
    }

    fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT name, credential_id, spec_json, updated_at FROM apps ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(row_app).collect())
        })
    }

    fn apps_using_credential(&self, id: &str) -> Result<Vec<String>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT name FROM apps WHERE credential_id = $1 ORDER BY name",
                    &[&id],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn set_app_sealed(&self, name: &str, plaintext: &[u8]) -> Result<(), StoreError> {
        let sealed = self.cipher.seal(RecordKind::AppSecrets, name, plaintext)?;
        let n = self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            self.execute(
                &client,
                "UPDATE apps SET secrets = $2 WHERE name = $1",
                &[&name, &sealed],
            )
            .await
        })?;
        if n == 0 {
            return Err(StoreError::AppNotFound {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn app_sealed(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sealed: Option<Vec<u8>> = self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT secrets FROM apps WHERE name = $1",
                    &[&name],
                )
                .await?;
            Ok(rows.first().and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
        })?;
        sealed
            .map(|sealed| self.cipher.open(RecordKind::AppSecrets, name, &sealed))
            .transpose()
    }

    fn insert_hook(&self, app: &str, key_hash: &str) -> Result<HookRecord, StoreError> {
        let id = new_id("dh")?;
        let now: i64 = self.op(Retry::IfNotSent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "INSERT INTO deploy_hooks (id, app, key_hash, created_at) \
                     VALUES ($1, $2, $3, berth_now_ms()) RETURNING created_at",
                    &[&id, &app, &key_hash],
                )
                .await?;
            Ok(rows[0].get(0))
        })?;
        Ok(HookRecord {
            id,
            app: app.to_owned(),
            key_hash: key_hash.to_owned(),
            created_at: from_millis(now),
        })
    }

    fn get_hook(&self, id: &str) -> Result<Option<HookRecord>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT id, app, key_hash, created_at FROM deploy_hooks WHERE id = $1",
                    &[&id],
                )
                .await?;
            Ok(rows.first().map(row_hook))
        })
    }

    fn delete_hook(&self, id: &str) -> Result<bool, StoreError> {
        self.op(Retry::IfNotSent, || async {
            let client = self.client().await?;
            let n = self
                .execute(&client, "DELETE FROM deploy_hooks WHERE id = $1", &[&id])
                .await?;
            Ok(n > 0)
        })
    }

    fn list_hooks(&self, app: &str) -> Result<Vec<HookRecord>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT id, app, key_hash, created_at FROM deploy_hooks WHERE app = $1 ORDER BY id",
                    &[&app],
                )
                .await?;
            Ok(rows.iter().map(row_hook).collect())
        })
    }

    fn start_release(
        &self,
        new: NewRelease,
        fence: &LeaseFence,
    ) -> Result<ReleaseRecord, StoreError> {
        let number = release_number(new.release)?;
        let started: i64 =
            self.op(Retry::IfNotSent, || async {
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                self.check_fence(&tx, &new.app, fence).await?;
                let rows = self
                .tx_query(
                    &tx,
                    "INSERT INTO releases (app, number, digest, image, spec_json, triggered_by, \
                     outcome, error, phases_json, started_at, finished_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'running', NULL, '[]', berth_now_ms(), NULL) \
                     ON CONFLICT (app, number) DO NOTHING RETURNING started_at",
                    &[&new.app, &number, &new.digest, &new.image, &new.spec_json, &new.trigger],
                )
                .await?;
                let Some(row) = rows.first() else {
                    return Err(StoreError::ReleaseExists {
                        app: new.app.clone(),
                        release: new.release,
                    }
                    .into());
                };
                let started = row.get(0);
                tx.commit().await?;
                Ok(started)
            })?;
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
            started_at: from_millis(started),
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
        let (number, phases) = finish_arguments(app, release, outcome, phases)?;
        self.op(Retry::IfNotSent, || async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            self.check_fence(&tx, app, fence).await?;
            let rows = self
                .tx_query(
                    &tx,
                    "SELECT outcome FROM releases WHERE app = $1 AND number = $2 FOR UPDATE",
                    &[&app, &number],
                )
                .await?;
            let current = rows.first().map(|r| r.get::<_, String>(0));
            check_finishable(app, release, current.as_deref())?;
            self.tx_execute(
                &tx,
                "UPDATE releases SET outcome = $3, error = $4, phases_json = $5, \
                 finished_at = berth_now_ms() WHERE app = $1 AND number = $2",
                &[&app, &number, &outcome.as_str(), &error, &phases],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_releases(&self, app: &str, limit: usize) -> Result<Vec<ReleaseRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    &format!(
                        "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = $1 \
                         ORDER BY number DESC LIMIT $2"
                    ),
                    &[&app, &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(row_release)
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn get_release(&self, app: &str, release: u64) -> Result<Option<ReleaseRecord>, StoreError> {
        let Ok(number) = i64::try_from(release) else {
            return Ok(None);
        };
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    &format!(
                        "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = $1 AND number = $2"
                    ),
                    &[&app, &number],
                )
                .await?;
            Ok(rows.first().map(row_release).transpose()?)
        })
    }

    fn last_release_number(&self, app: &str) -> Result<Option<u64>, StoreError> {
        let last: Option<i64> = self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT max(number) FROM releases WHERE app = $1",
                    &[&app],
                )
                .await?;
            Ok(rows[0].get(0))
        })?;
        last.map(|n| unsigned(n, "a release number")).transpose()
    }

    fn delete_releases(&self, app: &str) -> Result<(), StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            self.execute(&client, "DELETE FROM releases WHERE app = $1", &[&app])
                .await?;
            Ok(())
        })
    }

    fn acquire_lease(
        &self,
        app: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        let ttl = ttl_millis(ttl);
        // Idempotent: taking or extending our own lease twice is the same.
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            // A bounded loop: the holder may release between our two
            // statements, then the lease is free on the next try.
            for _ in 0..3 {
                let rows = self
                    .query(
                        &client,
                        "INSERT INTO leases AS l (app, owner, expires_at, generation, acquired_at) \
                         VALUES ($1, $2, berth_now_ms() + $3, 1, berth_now_ms()) \
                         ON CONFLICT (app) DO UPDATE SET owner = excluded.owner, \
                         expires_at = excluded.expires_at, \
                         generation = CASE WHEN l.owner = excluded.owner THEN l.generation \
                                      ELSE l.generation + 1 END, \
                         acquired_at = CASE WHEN l.owner = excluded.owner THEN l.acquired_at \
                                       ELSE excluded.acquired_at END \
                         WHERE l.owner = excluded.owner OR l.expires_at <= berth_now_ms() \
                         RETURNING generation",
                        &[&app, &owner, &ttl],
                    )
                    .await?;
                if let Some(row) = rows.first() {
                    return Ok(LeaseOutcome::Acquired {
                        generation: generation(row.get(0)),
                    });
                }
                let rows = self
                    .query(
                        &client,
                        "SELECT owner, expires_at, acquired_at FROM leases \
                         WHERE app = $1 AND expires_at > berth_now_ms() AND owner <> $2",
                        &[&app, &owner],
                    )
                    .await?;
                if let Some(row) = rows.first() {
                    return Ok(LeaseOutcome::HeldBy {
                        owner: row.get(0),
                        expires_at: from_millis(row.get(1)),
                        since: from_millis(row.get(2)),
                    });
                }
            }
            Err(StoreError::InvalidRequest(format!(
                "the deploy lease of app `{app}` changed hands three times while it was being taken; try again"
            ))
            .into())
        })
    }

    fn renew_lease(&self, app: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl = ttl_millis(ttl);
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let n = self
                .execute(
                    &client,
                    "UPDATE leases SET expires_at = berth_now_ms() + $3 WHERE app = $1 AND owner = $2",
                    &[&app, &owner, &ttl],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn release_lease(&self, app: &str, owner: &str) -> Result<(), StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            // The row stays, so the next holder's generation is higher.
            self.execute(
                &client,
                "UPDATE leases SET owner = '', expires_at = 0 WHERE app = $1 AND owner = $2",
                &[&app, &owner],
            )
            .await?;
            Ok(())
        })
    }

    fn take_over_lease(
        &self,
        app: &str,
        from: &str,
        to: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let ttl = ttl_millis(ttl);
        self.op(Retry::IfNotSent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "UPDATE leases SET owner = $3, expires_at = berth_now_ms() + $4, \
                     generation = generation + 1, acquired_at = berth_now_ms() \
                     WHERE app = $1 AND owner = $2 RETURNING generation",
                    &[&app, &from, &to, &ttl],
                )
                .await?;
            Ok(rows.first().map(|r| generation(r.get(0))))
        })
    }

    fn record_planned_digest(
        &self,
        app: &str,
        image: &str,
        prior: &str,
        digest: &str,
    ) -> Result<(), StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            self.execute(
                &client,
                "INSERT INTO planned_digests (app, image, prior, digest, planned_at) \
                 VALUES ($1, $2, $3, $4, berth_now_ms()) \
                 ON CONFLICT (app, image, prior) DO UPDATE SET digest = excluded.digest, \
                 planned_at = excluded.planned_at",
                &[&app, &image, &prior, &digest],
            )
            .await?;
            Ok(())
        })
    }

    fn planned_digest(
        &self,
        app: &str,
        image: &str,
        prior: &str,
    ) -> Result<Option<(String, SystemTime)>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT digest, planned_at FROM planned_digests \
                     WHERE app = $1 AND image = $2 AND prior = $3",
                    &[&app, &image, &prior],
                )
                .await?;
            Ok(rows
                .first()
                .map(|r| (r.get::<_, String>(0), from_millis(r.get(1)))))
        })
    }

    fn remember_image(&self, top_digest: &str, image: &KnownImage) -> Result<(), StoreError> {
        let size = i64::try_from(image.size_bytes).unwrap_or(i64::MAX);
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            self.execute(
                &client,
                "INSERT INTO known_images (top_digest, digest, index_digest, size_bytes, resolved_at) \
                 VALUES ($1, $2, $3, $4, berth_now_ms()) \
                 ON CONFLICT (top_digest) DO UPDATE SET digest = excluded.digest, \
                 index_digest = excluded.index_digest, size_bytes = excluded.size_bytes, \
                 resolved_at = excluded.resolved_at",
                &[&top_digest, &image.digest, &image.index_digest, &size],
            )
            .await?;
            Ok(())
        })
    }

    fn known_image(&self, top_digest: &str) -> Result<Option<KnownImage>, StoreError> {
        self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let rows = self
                .query(
                    &client,
                    "SELECT digest, index_digest, size_bytes FROM known_images WHERE top_digest = $1",
                    &[&top_digest],
                )
                .await?;
            Ok(rows.first().map(|r| KnownImage {
                digest: r.get(0),
                index_digest: r.get(1),
                size_bytes: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            }))
        })
    }

    fn info(&self) -> Result<StoreInfo, StoreError> {
        let schema_version = self.schema_version()?;
        let (server, counts) = self.op(Retry::Idempotent, || async {
            let client = self.client().await?;
            let server: String = self.query(&client, "SHOW server_version", &[]).await?[0].get(0);
            let mut counts = Vec::new();
            for (kind, table) in COUNTED_TABLES {
                let rows = self
                    .query(&client, &format!("SELECT count(*) FROM {table}"), &[])
                    .await?;
                counts.push((kind, u64::try_from(rows[0].get::<_, i64>(0)).unwrap_or(0)));
            }
            Ok((server, counts))
        })?;
        Ok(StoreInfo {
            backend: "postgresql",
            location: self.location.clone(),
            server: Some(format!("PostgreSQL {server}")),
            schema_version,
            supported_version: PG_SCHEMA_VERSION,
            counts,
            problems: Vec::new(),
        })
    }

    fn dump(&self) -> Result<StoreDump, StoreError> {
        let credentials = self.list_credentials()?;
        let mut apps = Vec::new();
        for record in self.list_apps()? {
            let sealed = self.app_sealed(&record.name)?;
            apps.push(DumpedApp { record, sealed });
        }
        let (hooks, releases, job_runs, known_images, planned_digests) =
            self.op(Retry::Idempotent, || async {
                let client = self.client().await?;
                let hooks = self
                    .query(
                        &client,
                        "SELECT id, app, key_hash, created_at FROM deploy_hooks ORDER BY id",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(row_hook)
                    .collect::<Vec<_>>();
                let releases = self
                    .query(
                        &client,
                        &format!("SELECT {RELEASE_COLUMNS} FROM releases ORDER BY app, number"),
                        &[],
                    )
                    .await?
                    .iter()
                    .map(row_release)
                    .collect::<Result<Vec<_>, _>>()?;
                let job_runs = self
                    .query(
                        &client,
                        &format!("SELECT {JOB_RUN_COLUMNS} FROM job_runs ORDER BY id"),
                        &[],
                    )
                    .await?
                    .iter()
                    .map(row_job_run)
                    .collect::<Result<Vec<_>, _>>()?;
                let known = self
                    .query(
                        &client,
                        "SELECT top_digest, digest, index_digest, size_bytes FROM known_images \
                         ORDER BY top_digest",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| {
                        (
                            r.get::<_, String>(0),
                            KnownImage {
                                digest: r.get(1),
                                index_digest: r.get(2),
                                size_bytes: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                            },
                        )
                    })
                    .collect::<Vec<_>>();
                let planned = self
                    .query(
                        &client,
                        "SELECT app, image, prior, digest, planned_at FROM planned_digests \
                         ORDER BY app, image, prior",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| PlannedDigest {
                        app: r.get(0),
                        image: r.get(1),
                        prior: r.get(2),
                        digest: r.get(3),
                        planned_at: from_millis(r.get(4)),
                    })
                    .collect::<Vec<_>>();
                Ok((hooks, releases, job_runs, known, planned))
            })?;
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
        // Sealed once, outside the retried transaction.
        let credentials = dump
            .credentials
            .iter()
            .map(|c| Ok((c, seal_credential(&self.cipher, &c.id, &c.secret)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let apps = dump
            .apps
            .iter()
            .map(|a| {
                let sealed = a
                    .sealed
                    .as_deref()
                    .map(|plain| {
                        self.cipher
                            .seal(RecordKind::AppSecrets, &a.record.name, plain)
                    })
                    .transpose()?;
                Ok((a, sealed))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.op(Retry::Idempotent, || async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            for (c, sealed) in &credentials {
                self.tx_execute(
                    &tx,
                    "INSERT INTO registry_credentials \
                     (id, name, registry, username, secret, secret_version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                     registry = excluded.registry, username = excluded.username, \
                     secret = excluded.secret, secret_version = excluded.secret_version, \
                     created_at = excluded.created_at, updated_at = excluded.updated_at",
                    &[
                        &c.id,
                        &c.name,
                        &c.registry,
                        &c.username,
                        sealed,
                        &c.secret_version,
                        &millis(c.created_at),
                        &millis(c.updated_at),
                    ],
                )
                .await?;
            }
            for (a, sealed) in &apps {
                self.tx_execute(
                    &tx,
                    "INSERT INTO apps (name, credential_id, spec_json, updated_at, secrets) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (name) DO UPDATE SET credential_id = excluded.credential_id, \
                     spec_json = excluded.spec_json, updated_at = excluded.updated_at, \
                     secrets = excluded.secrets",
                    &[
                        &a.record.name,
                        &a.record.credential_id,
                        &a.record.spec_json,
                        &millis(a.record.updated_at),
                        sealed,
                    ],
                )
                .await?;
            }
            for h in &dump.hooks {
                self.tx_execute(
                    &tx,
                    "INSERT INTO deploy_hooks (id, app, key_hash, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET app = excluded.app, \
                     key_hash = excluded.key_hash",
                    &[&h.id, &h.app, &h.key_hash, &millis(h.created_at)],
                )
                .await?;
            }
            for r in &dump.releases {
                self.tx_execute(
                    &tx,
                    "INSERT INTO releases (app, number, digest, image, spec_json, triggered_by, \
                     outcome, error, phases_json, started_at, finished_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (app, number) DO UPDATE SET outcome = excluded.outcome, \
                     error = excluded.error, phases_json = excluded.phases_json, \
                     finished_at = excluded.finished_at",
                    &[
                        &r.app,
                        &release_number(r.release)?,
                        &r.digest,
                        &r.image,
                        &r.spec_json,
                        &r.trigger,
                        &r.outcome.as_str(),
                        &r.error,
                        &phases_json(&r.phases)?,
                        &millis(r.started_at),
                        &r.finished_at.map(millis),
                    ],
                )
                .await?;
            }
            for j in &dump.job_runs {
                let tail = serde_json::to_string(&j.log_tail)
                    .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
                self.tx_execute(
                    &tx,
                    "INSERT INTO job_runs (id, app, job, scheduled_at, triggered_by, state, owner, \
                     host, container_id, digest, release, exit_code, reason, log_tail_json, \
                     started_at, finished_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                     ON CONFLICT DO NOTHING",
                    &[
                        &job_run_id(j.id)?,
                        &j.app,
                        &j.job,
                        &j.scheduled_at.map(millis),
                        &j.trigger,
                        &j.state.as_str(),
                        &j.owner,
                        &j.host,
                        &j.container_id,
                        &j.digest,
                        &j.release.map(release_number).transpose()?,
                        &j.exit_code,
                        &j.reason,
                        &tail,
                        &j.started_at.map(millis),
                        &j.finished_at.map(millis),
                    ],
                )
                .await?;
            }
            // Ids given explicitly do not move the sequence: move it past them.
            self.tx_execute(
                &tx,
                "SELECT setval(pg_get_serial_sequence('job_runs', 'id'), \
                 greatest((SELECT coalesce(max(id), 0) FROM job_runs), 1))",
                &[],
            )
            .await?;
            for (top, image) in &dump.known_images {
                self.tx_execute(
                    &tx,
                    "INSERT INTO known_images (top_digest, digest, index_digest, size_bytes, \
                     resolved_at) VALUES ($1, $2, $3, $4, berth_now_ms()) \
                     ON CONFLICT (top_digest) DO NOTHING",
                    &[
                        top,
                        &image.digest,
                        &image.index_digest,
                        &i64::try_from(image.size_bytes).unwrap_or(i64::MAX),
                    ],
                )
                .await?;
            }
            for p in &dump.planned_digests {
                self.tx_execute(
                    &tx,
                    "INSERT INTO planned_digests (app, image, prior, digest, planned_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (app, image, prior) DO UPDATE \
                     SET digest = excluded.digest, planned_at = excluded.planned_at",
                    &[&p.app, &p.image, &p.prior, &p.digest, &millis(p.planned_at)],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
