//! Where the store is: [`StoreLocation`], parsed from the provider's `store`
//! or `BERTH_STORE`. Pure: the environment comes in as a lookup function.
//!
//! - `sqlite:///PATH/berth.db`: the embedded store in that file.
//! - `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?OPTIONS]` (or
//!   `postgresql://`): libpq's URL form, with the options users copy from
//!   their database provider. `sslmode` is `disable`, `allow`, `prefer` (the
//!   default, as in libpq), `require`, `verify-ca` or `verify-full`;
//!   `sslrootcert`, `sslcert` and `sslkey` name PEM files; `passfile` a
//!   password file; `application_name`, `connect_timeout` (seconds) and the
//!   other options tokio-postgres knows pass through. Query values are
//!   percent-decoded.
//!
//! The password comes from the URL, else `PGPASSWORD`, else the password
//! file (`passfile`, `PGPASSFILE`, `~/.pgpass`: libpq's format). It is
//! never part of what [`StoreLocation`] displays or debugs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::error::StoreError;

/// The environment variable naming the store, for the `berth` command and
/// `berth serve` (the provider's `store` attribute wins over it).
pub const STORE_VAR: &str = "BERTH_STORE";

/// How long connecting to PostgreSQL may take when the URL does not say
/// (`connect_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Berth's records live.
#[derive(Clone)]
pub enum StoreLocation {
    /// The SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(Box<PostgresLocation>),
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate
    /// (libpq's `allow` and `prefer`).
    Prefer,
    /// TLS always; the certificate is checked against `sslrootcert` only
    /// when one is given (as libpq does), else not at all.
    Require,
    /// TLS, the certificate signed by `sslrootcert`; any host name.
    VerifyCa,
    /// TLS, the certificate signed by `sslrootcert` and issued for the host.
    VerifyFull,
}

impl SslMode {
    /// The name in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of a PostgreSQL URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    /// PEM file of the CA certificate(s) that sign the server's.
    pub root_cert: Option<PathBuf>,
    /// PEM client certificate and key (certificate authentication).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A parsed PostgreSQL URL: the connection settings (password included) and
/// the TLS settings.
#[derive(Clone)]
pub struct PostgresLocation {
    /// Connection settings, password filled in from the environment.
    pub config: tokio_postgres::Config,
    pub tls: PgTls,
    /// The URL without its password, for messages.
    display: String,
    /// The URL as given, for equality.
    raw: String,
}

impl PostgresLocation {
    /// The URL without its password.
    pub fn display(&self) -> &str {
        &self.display
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            StoreLocation::Postgres(pg) => f.write_str(&pg.display),
        }
    }
}

impl PartialEq for StoreLocation {
    fn eq(&self, other: &StoreLocation) -> bool {
        match (self, other) {
            (StoreLocation::Sqlite(a), StoreLocation::Sqlite(b)) => a == b,
            (StoreLocation::Postgres(a), StoreLocation::Postgres(b)) => a.raw == b.raw,
            _ => false,
        }
    }
}

impl StoreLocation {
    /// The default: `berth.db` in the state directory.
    pub fn in_state_dir(state_dir: &Path) -> StoreLocation {
        StoreLocation::Sqlite(state_dir.join(super::sqlite::DATABASE_FILE_NAME))
    }

    /// Parses a store URL. `origin` names the setting in errors (e.g.
    /// `BERTH_STORE`); `env` is the environment (`PGPASSWORD`,
    /// `PGPASSFILE`, `HOME`).
    pub fn parse(
        url: &str,
        origin: Option<&str>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<StoreLocation, StoreError> {
        let invalid = |reason: String| StoreError::InvalidStoreUrl {
            origin: origin.map(str::to_owned),
            reason,
        };
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            if !path.starts_with('/') {
                return Err(invalid(format!(
                    "a SQLite store needs an absolute path, three slashes in all: `sqlite:///{}`",
                    path.trim_start_matches("./")
                )));
            }
            if path.ends_with('/') {
                return Err(invalid(
                    "the path names a directory; name the database file, e.g. `sqlite:///var/lib/berth/berth.db`".into(),
                ));
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return parse_postgres(url, env)
                .map(|pg| StoreLocation::Postgres(Box::new(pg)))
                .map_err(invalid);
        }
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        Err(invalid(if scheme.is_empty() {
            "it has no scheme".to_owned()
        } else {
            format!("the scheme `{scheme}` is not one Berth knows")
        }))
    }

    /// The location for messages (no password).
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

/// The options Berth reads itself; the rest go to tokio-postgres.
const OWN_OPTIONS: [&str; 5] = ["sslmode", "sslrootcert", "sslcert", "sslkey", "passfile"];

fn parse_postgres(
    url: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<PostgresLocation, String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut mode = None;
    let mut tls = PgTls {
        mode: SslMode::Prefer,
        root_cert: None,
        client_cert: None,
        client_key: None,
    };
    let mut passfile = None;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "sslmode" => {
                mode = Some(match value.as_ref() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        ))
                    }
                })
            }
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(value.as_ref())),
            "sslcert" => tls.client_cert = Some(PathBuf::from(value.as_ref())),
            "sslkey" => tls.client_key = Some(PathBuf::from(value.as_ref())),
            "passfile" => passfile = Some(PathBuf::from(value.as_ref())),
            "password" => return Err(
                "put the password in the URL's user part (`postgres://USER:PASSWORD@HOST/DB`), in PGPASSWORD or in a password file, not in a `password` option".into(),
            ),
            key => {
                debug_assert!(!OWN_OPTIONS.contains(&key));
                rest.append_pair(key, &value);
            }
        }
    }
    tls.mode = mode.unwrap_or(SslMode::Prefer);
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        return Err(
            "set `sslcert` and `sslkey` together (the client certificate and its key)".into(),
        );
    }
    if matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyFull) && tls.root_cert.is_none() {
        let default_root = home(env).map(|h| h.join(".postgresql/root.crt"));
        match default_root {
            Some(path) if path.exists() => tls.root_cert = Some(path),
            _ => {
                return Err(format!(
                    "sslmode={} checks the server's certificate, so it needs the CA: add `sslrootcert=/PATH/ca.pem` (or put it in ~/.postgresql/root.crt)",
                    tls.mode.as_str()
                ))
            }
        }
    }
    let rest = rest.finish();
    let passthrough = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{rest}")
    };
    let mut config = tokio_postgres::Config::from_str(&passthrough).map_err(|e| {
        // tokio-postgres's parse errors name the option, never a value.
        match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }
    })?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    let Some(user) = config.get_user().map(str::to_owned) else {
        return Err("the URL names no user: write `postgres://USER@HOST/DATABASE`".into());
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => {
            return Err("the URL names no host: write `postgres://USER@HOST:PORT/DATABASE`".into())
        }
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    if config.get_dbname().is_none() {
        config.dbname(&user);
    }
    let dbname = config.get_dbname().unwrap_or(&user).to_owned();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("berth");
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD").and_then(|p| p.into_string().ok()) {
            config.password(password);
        } else {
            let file = passfile
                .or_else(|| env("PGPASSFILE").map(PathBuf::from))
                .or_else(|| home(env).map(|h| h.join(".pgpass")));
            if let Some(file) = file {
                if let Ok(text) = std::fs::read_to_string(&file) {
                    if let Some(password) = passfile_lookup(&text, &host, port, &dbname, &user) {
                        config.password(password);
                    }
                }
            }
        }
    }
    let display = format!(
        "postgres://{user}@{}:{port}/{dbname} (sslmode={})",
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        },
        tls.mode.as_str()
    );
    Ok(PostgresLocation {
        config,
        tls,
        display,
        raw: url.to_owned(),
    })
}

fn home(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// The password for `host:port:db:user` in a libpq password file: the first
/// line whose fields all match (`*` matches anything; `\:` and `\\` are a
/// literal colon and backslash); `#` starts a comment line.
pub fn passfile_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        // libpq: `localhost` also matches the default Unix socket.
        if matches(&fields[0], host)
            && matches(&fields[1], &port)
            && matches(&fields[2], db)
            && matches(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn pg(url: &str) -> PostgresLocation {
        match StoreLocation::parse(url, None, &no_env).unwrap() {
            StoreLocation::Postgres(pg) => *pg,
            other => panic!("not postgres: {other}"),
        }
    }

    fn err(url: &str) -> String {
        StoreLocation::parse(url, Some("BERTH_STORE"), &no_env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            StoreLocation::parse("sqlite:///var/lib/berth/berth.db", None, &no_env).unwrap(),
            StoreLocation::Sqlite(PathBuf::from("/var/lib/berth/berth.db"))
        );
        let e = err("sqlite://berth.db");
        assert!(
            e.contains("in BERTH_STORE") && e.contains("sqlite:///berth.db"),
            "{e}"
        );
        assert!(err("sqlite:///var/lib/berth/").contains("directory"));
        assert!(err("mysql://x@y/z").contains("`mysql` is not one Berth knows"));
        assert!(err("/var/lib/berth.db").contains("no scheme"));
    }

    #[test]
    fn postgres_urls_keep_libpq_options_and_hide_the_password() {
        let loc = pg("postgres://team:s3cr%40t@db.example.com:6432/berth?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=ci&connect_timeout=3");
        assert_eq!(loc.tls.mode, SslMode::VerifyFull);
        assert_eq!(loc.tls.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(loc.config.get_password(), Some(&b"s3cr@t"[..]));
        assert_eq!(loc.config.get_application_name(), Some("ci"));
        assert_eq!(
            loc.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(loc.config.get_dbname(), Some("berth"));
        assert_eq!(
            loc.display(),
            "postgres://team@db.example.com:6432/berth (sslmode=verify-full)"
        );
        let location = StoreLocation::Postgres(Box::new(loc));
        assert!(!format!("{location:?} {location}").contains("s3cr"));
        // Defaults: libpq's prefer, a bounded connect, application_name.
        let loc = pg("postgresql://team@db/berth");
        assert_eq!(loc.tls.mode, SslMode::Prefer);
        assert_eq!(
            loc.config.get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
        assert_eq!(loc.config.get_application_name(), Some("berth"));
        assert_eq!(loc.config.get_ports(), &[5432]);
        // The database defaults to the user, as in libpq.
        assert_eq!(pg("postgres://team@db").config.get_dbname(), Some("team"));
    }

    #[test]
    fn bad_postgres_urls_say_what_to_change() {
        assert!(err("postgres://team@db/b?sslmode=strict").contains("sslmode `strict`"));
        assert!(err("postgres://team@db/b?sslmode=verify-full").contains("sslrootcert"));
        assert!(err("postgres://team@db/b?sslcert=/c.pem").contains("together"));
        assert!(err("postgres://db/b").contains("names no user"));
        assert!(err("postgres://team@db/b?password=x").contains("user part"));
        let e = err("postgres://team:hunter2@db/b?bogus=1");
        assert!(e.contains("bogus") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn password_from_the_environment_then_the_password_file() {
        let dir = std::env::temp_dir().join(format!("berth-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:nope\ndb:5432:berth:team:from\\:file\n",
        )
        .unwrap();
        let file_env = file.clone();
        let env = move |name: &str| match name {
            "PGPASSFILE" => Some(file_env.clone().into_os_string()),
            _ => None,
        };
        let StoreLocation::Postgres(loc) =
            StoreLocation::parse("postgres://team@db/berth", None, &env).unwrap()
        else {
            panic!()
        };
        assert_eq!(loc.config.get_password(), Some(&b"from:file"[..]));
        let env = |name: &str| match name {
            "PGPASSWORD" => Some(OsString::from("from-env")),
            _ => None,
        };
        let StoreLocation::Postgres(loc) =
            StoreLocation::parse("postgres://team@db/berth", None, &env).unwrap()
        else {
            panic!()
        };
        assert_eq!(loc.config.get_password(), Some(&b"from-env"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passfile_wildcards_and_escapes() {
        let text = "*:*:*:admin:a\\\\b\nhost:*:db:u:pw\n";
        assert_eq!(
            passfile_lookup(text, "x", 1, "y", "admin").as_deref(),
            Some("a\\b")
        );
        assert_eq!(
            passfile_lookup(text, "host", 5432, "db", "u").as_deref(),
            Some("pw")
        );
        assert_eq!(passfile_lookup(text, "host", 5432, "other", "u"), None);
    }
}
