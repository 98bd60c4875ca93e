//! `berth store migrate|check|copy`: the store itself. The store is
//! `BERTH_STORE` (else `berth.db` in the state directory), the key
//! `BERTH_SECRET_KEY` (else the state directory's key file, SQLite only).
//!
//! - `migrate` applies the schema migrations the store lacks (every runner
//!   also does on open; this is for doing it once, first, from CI) and says
//!   which version it found and left.
//! - `check` opens the store without migrating: backend, server, schema
//!   version, record counts, whether the key opens it; exit 1 on a problem.
//! - `copy --from URL --to URL` copies every record (not leases) from one
//!   store to another, secrets opened with the source's key and sealed with
//!   the target's, then reads the target back and checks each record is
//!   there. Idempotent.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{self, OutputArgs, Table};
use super::CliError;
use crate::store::{open_records, process_env, StoreInfo, StoreLocation, StoreOptions};

/// `berth store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Apply the schema migrations the store lacks
    Migrate(MigrateArgs),
    /// Check the store without changing it: schema, key, record counts
    Check(CheckArgs),
    /// Copy every record from one store to another (SQLite and PostgreSQL,
    /// either way), then verify the target has each
    Copy(CopyArgs),
}

/// Arguments of `berth store migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth store check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth store copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The source store URL (`sqlite:///…/berth.db` or `postgres://…`)
    #[arg(long, value_name = "URL")]
    from: String,

    /// The target store URL; created and migrated as needed
    #[arg(long, value_name = "URL")]
    to: String,

    /// The source's key (base64) when it differs from the target's: the
    /// target's is BERTH_SECRET_KEY, and a SQLite source without this uses
    /// its state directory's key file
    #[arg(long, value_name = "VAR", default_value = "BERTH_SOURCE_SECRET_KEY")]
    from_key_env: String,

    #[command(flatten)]
    output: OutputArgs,
}

/// Runs one `berth store` command.
pub async fn run(command: StoreCommand) -> Result<(), CliError> {
    tokio::task::spawn_blocking(move || match command {
        StoreCommand::Migrate(args) => migrate(args),
        StoreCommand::Check(args) => check(args),
        StoreCommand::Copy(args) => copy(args),
    })
    .await
    .map_err(|e| CliError::failed("The store command did not finish", e.to_string()))?
}

fn options() -> Result<StoreOptions, CliError> {
    StoreOptions::from_env_with_store(None, None, &process_env)
        .map_err(super::app::store_open_error)
}

#[derive(Serialize)]
struct InfoReport<'a> {
    backend: &'a str,
    location: &'a str,
    server: Option<&'a str>,
    schema_version: i64,
    supported_version: i64,
    records: std::collections::BTreeMap<&'a str, u64>,
    problems: &'a [String],
}

impl<'a> InfoReport<'a> {
    fn new(info: &'a StoreInfo) -> InfoReport<'a> {
        InfoReport {
            backend: info.backend,
            location: &info.location,
            server: info.server.as_deref(),
            schema_version: info.schema_version,
            supported_version: info.supported_version,
            records: info.counts.iter().copied().collect(),
            problems: &info.problems,
        }
    }
}

fn info_table(info: &StoreInfo) -> Table {
    let mut table = Table::new()
        .row("store", format!("{} ({})", info.location, info.backend))
        .row("server", info.server.clone().unwrap_or_else(|| "-".into()))
        .row(
            "schema",
            format!(
                "version {} (this Berth knows up to {})",
                info.schema_version, info.supported_version
            ),
        );
    for (kind, n) in &info.counts {
        table = table.row(*kind, n.to_string());
    }
    table
}

fn migrate(args: MigrateArgs) -> Result<(), CliError> {
    let mut options = options()?;
    // What it was before: opened without migrating, if it opens at all.
    options.migrate = false;
    let before = match open_records(&options) {
        Ok(records) => Some(
            records
                .info()
                .map_err(super::app::store_error)?
                .schema_version,
        ),
        Err(crate::store::StoreError::SchemaBehind { found, .. }) => Some(found),
        Err(e @ crate::store::StoreError::SchemaTooNew { .. }) => {
            return Err(super::app::store_open_error(e))
        }
        Err(_) => None,
    };
    options.migrate = true;
    let records = open_records(&options).map_err(super::app::store_open_error)?;
    let info = records.info().map_err(super::app::store_error)?;
    if args.output.json {
        #[derive(Serialize)]
        struct Migrated<'a> {
            from_version: Option<i64>,
            #[serde(flatten)]
            info: InfoReport<'a>,
        }
        return output::print_json(&Migrated {
            from_version: before,
            info: InfoReport::new(&info),
        });
    }
    let line = match before {
        Some(v) if v == info.schema_version => format!(
            "{}: already at schema version {}; nothing to do",
            info.location, v
        ),
        Some(v) => format!(
            "{}: migrated from schema version {v} to {}",
            info.location, info.schema_version
        ),
        None => format!(
            "{}: created at schema version {}",
            info.location, info.schema_version
        ),
    };
    output::print_line(&line)
}

fn check(args: CheckArgs) -> Result<(), CliError> {
    let mut options = options()?;
    options.migrate = false;
    let records = open_records(&options)
        .map_err(|e| CliError::failed("The store check failed", e.to_string()))?;
    let info = records.info().map_err(super::app::store_error)?;
    if args.output.json {
        output::print_json(&InfoReport::new(&info))?;
    } else {
        info_table(&info).row("key", "opens the store").print()?;
    }
    if info.problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(
            "The store check found problems",
            info.problems.join("; "),
        ))
    }
}

fn copy(args: CopyArgs) -> Result<(), CliError> {
    let env = process_env;
    let base = StoreOptions::from_env(None, &env).map_err(super::app::store_open_error)?;
    let parse = |url: &str, flag: &str| {
        StoreLocation::parse(url, Some(flag), &env).map_err(|e| CliError::usage(e.to_string()))
    };
    let from = parse(&args.from, "--from")?;
    let to = parse(&args.to, "--to")?;
    if from == to {
        return Err(CliError::usage(
            "--from and --to name the same store; give two different stores",
        ));
    }
    // The source's key: given for it, else the key file beside a SQLite
    // source, else the target's.
    let source_key = match env(&args.from_key_env) {
        Some(text) => Some(
            crate::store::SecretKey::from_base64(
                &text.to_string_lossy(),
                crate::store::KeySource::Environment,
            )
            .map_err(|e| CliError::usage(format!("{}: {e}", args.from_key_env)))?,
        ),
        None => match &from {
            StoreLocation::Sqlite(path)
                if path
                    .parent()
                    .is_some_and(|d| d.join(crate::store::crypto::KEY_FILE_NAME).exists()) =>
            {
                None
            }
            _ => base.secret_key.clone(),
        },
    };
    let source_options = StoreOptions {
        secret_key: source_key,
        location: Some(from.clone()),
        ..base.clone()
    };
    let target_options = StoreOptions {
        location: Some(to.clone()),
        ..base
    };
    let source = open_records(&source_options)
        .map_err(|e| CliError::failed("Cannot open the source store", e.to_string()))?;
    let target = open_records(&target_options)
        .map_err(|e| CliError::failed("Cannot open the target store", e.to_string()))?;
    let report = crate::store::copy::copy(&*source, &*target)
        .map_err(|e| CliError::failed("The copy failed", e.to_string()))?;
    if args.output.json {
        #[derive(Serialize)]
        struct Copied {
            from: String,
            to: String,
            records: std::collections::BTreeMap<&'static str, usize>,
            verified: bool,
        }
        return output::print_json(&Copied {
            from: from.describe(),
            to: to.describe(),
            records: report.counts.iter().copied().collect(),
            verified: true,
        });
    }
    let mut table = Table::new()
        .row("from", from.describe())
        .row("to", to.describe());
    for (kind, n) in &report.counts {
        table = table.row(*kind, n.to_string());
    }
    table
        .row("verified", "every record of the source is in the target")
        .print()
}
