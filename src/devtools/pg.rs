//! The PostgreSQL of the dev environment (`tests/devenv.sh`: its own
//! cluster on 127.0.0.1:5499 with a test CA), and [`TestDatabase`]: a fresh
//! database per test, dropped when the test ends.

use std::path::PathBuf;

/// Where the dev cluster listens.
pub const HOST: &str = "127.0.0.1";
pub const PORT: u16 = 5499;
/// The role tests use (password authentication, may create databases).
pub const USER: &str = "berth";
pub const PASSWORD: &str = "berth-pg-pass";
/// The role that logs in with a client certificate only.
pub const CERT_USER: &str = "berth_cert";

/// `$BERTH_DEV_DIR/postgres/tls` (default `/var/lib/berth-dev`).
pub fn tls_dir() -> PathBuf {
    let base = std::env::var_os("BERTH_DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/berth-dev"));
    base.join("postgres/tls")
}

/// The test CA that signed the server's certificate.
pub fn ca_pem() -> PathBuf {
    tls_dir().join("ca.pem")
}

/// A database of its own for one test: `berth_t_<random>`, owned by
/// [`USER`], dropped (with any sessions still on it) when this is dropped.
/// `tests/devenv.sh down` drops any left by a killed test.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
}

fn admin_url(db: &str) -> String {
    format!("postgres://{USER}:{PASSWORD}@{HOST}:{PORT}/{db}?sslmode=disable&connect_timeout=10")
}

/// Runs `work` with a client on database `db` as [`USER`], on a thread of
/// its own with a runtime of its own (callable from async tests too).
/// Panics with a hint when the dev cluster does not answer.
fn with_client<T, F, Fut>(db: &str, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let url = admin_url(db);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot reach the dev PostgreSQL at {HOST}:{PORT} ({e}); run `bash tests/devenv.sh up`"
                    )
                });
            let task = tokio::spawn(connection);
            let out = work(client).await;
            let _ = task.await;
            out
        })
    })
    .join()
    .expect("the admin thread")
}

/// Runs `sql` on the dev cluster's `berth` database. Panics with the
/// server's message.
pub fn admin(sql: &str) {
    admin_on("berth", sql)
}

/// [`admin`] on database `db`.
pub fn admin_on(db: &str, sql: &str) {
    let sql = sql.to_owned();
    with_client(db, move |client| async move {
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    })
}

/// Rows of `sql` on database `db`, every column as text.
pub fn admin_query(db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let sql = sql.to_owned();
    with_client(db, move |client| async move {
        client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    })
}

impl TestDatabase {
    /// Creates the database.
    pub fn create() -> TestDatabase {
        let mut bytes = [0u8; 6];
        aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
        let name = format!("berth_t_{}", hex::encode(bytes));
        admin(&format!("CREATE DATABASE {name} OWNER {USER}"));
        TestDatabase { name }
    }

    /// Its URL as users write it: password in the URL, TLS checked against
    /// the test CA (`verify-full`).
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@localhost:{PORT}/{}?sslmode=verify-full&sslrootcert={}",
            self.name,
            ca_pem().display()
        )
    }

    /// The same without the password (it comes from PGPASSWORD or a file).
    pub fn url_without_password(&self) -> String {
        format!(
            "postgres://{USER}@localhost:{PORT}/{}?sslmode=verify-full&sslrootcert={}",
            self.name,
            ca_pem().display()
        )
    }

    /// Runs `sql` on this database as its owner.
    pub fn exec(&self, sql: &str) {
        admin_on(&self.name, sql)
    }

    /// Rows of `sql` on this database, as text.
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        admin_query(&self.name, sql)
    }

    /// Ends every session on this database (a lost connection, as a
    /// server restart or a network cut would make it).
    pub fn cut_connections(&self) -> usize {
        let rows = admin_query(
            "berth",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ),
        );
        rows.first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Transactions committed on this database so far (the server's count;
    /// an autocommitted statement is one).
    pub fn commits(&self) -> u64 {
        let rows = admin_query(
            "berth",
            &format!(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = '{}'",
                self.name
            ),
        );
        rows.first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Never panic in drop (a test that failed is already unwinding).
        let _ = std::panic::catch_unwind(|| admin(&sql));
    }
}
