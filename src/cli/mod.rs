//! The `berth` command: the clap tree, logging set-up, dispatch, and how a
//! failure becomes a message on stderr and an exit code.
//!
//! One file per command group: `image` (`berth image normalize|resolve`),
//! `app` (`berth plan|apply|status|releases|rollback|destroy|schema`, at the
//! top level), `serve` (the deploy-hook server), `store` (`berth store
//! migrate|check|copy`); `output` holds the
//! `--json` switch and the human/JSON printing helpers.
//! A new group is a variant of [`Command`], a module with its own
//! `Subcommand`/`Args` types and a `run`, and one arm in [`run`].
//!
//! Contract for scripts (see `DESIGN.md`): results on stdout, diagnostics on
//! stderr, `--json` on every command that reports, and the exit codes
//! [`EXIT_OK`], [`EXIT_FAILED`] and [`EXIT_USAGE`].

pub mod app;
pub mod image;
pub mod jobs;
pub mod output;
pub mod serve;
pub mod store;

use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// The command did what was asked.
pub const EXIT_OK: u8 = 0;
/// The operation failed (registry unreachable, image refused, …).
pub const EXIT_FAILED: u8 = 1;
/// The command line or an input was invalid (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;

/// Environment variable holding the log filter (`warn` when unset).
pub const LOG_ENV: &str = "BERTH_LOG";

const ABOUT: &str = "Deploy prebuilt container images to your own Docker hosts";

const LONG_ABOUT: &str = "\
Berth deploys prebuilt container images (\"apps\") onto your own linux/amd64
Docker hosts, with no downtime, pinned by digest. It is driven declaratively:
by Terraform/OpenTofu through the `berth` provider, or by the `berth` command.

An app is described by an app spec file (YAML or JSON; `berth schema` prints
its JSON Schema). `berth plan -f app.yaml` shows what would change,
`berth apply -f app.yaml` deploys it.

Results go to stdout (text, or JSON with --json); diagnostics go to stderr.";

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the operation failed (e.g. the registry refused or could not be reached)
  2  invalid usage or input (e.g. a malformed image reference)

Environment:
  BERTH_LOG        log filter for stderr, e.g. `debug` or `berth=trace` (default: warn;
                   info for `berth serve`)
  BERTH_STATE_DIR  Berth's state directory (default: $XDG_DATA_HOME/berth or
                   ~/.local/share/berth)
  BERTH_STORE      the store: sqlite:///PATH/berth.db (default: berth.db in the
                   state directory) or postgres://USER@HOST:PORT/DB?sslmode=…
  BERTH_SECRET_KEY the key secrets are sealed with (base64 of 32 bytes; required
                   for PostgreSQL, the same on every runner)
  BERTH_RUNNER     this runner's name in deploy leases (default: the host name)
  BERTH_LOCK_WAIT  seconds a deploy waits for another one of the same app (60)
  BERTH_LEASE_TTL  seconds a deploy lease lives without renewal (60): how long a
                   runner killed elsewhere blocks the others
  DOCKER_HOST      the Docker host apps run on (default: unix:///var/run/docker.sock)

Examples:
  berth plan -f app.yaml
  berth apply -f app.yaml
  berth status
  berth image normalize nginx
  berth image resolve 127.0.0.1:5000/berth/demo:v1 --json
  berth serve --listen 127.0.0.1:7070
  BERTH_STORE=postgres://berth@db:5432/berth berth store check
  berth help image resolve";

/// The `berth` command line.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Command groups. Each variant's doc comment is its one-line summary in
/// `berth --help`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Normalize image references and resolve them to linux/amd64 digests
    #[command(subcommand)]
    Image(image::ImageCommand),

    #[command(flatten)]
    App(app::AppCommand),

    /// Serve deploy hooks: a call to a hook's secret URL deploys its app
    #[command(long_about = serve::LONG_ABOUT, after_help = serve::AFTER_HELP)]
    Serve(serve::ServeArgs),

    /// Berth's store: migrate it, check it, copy it to another
    #[command(subcommand)]
    Store(store::StoreCommand),
}

impl Cli {
    /// Parses the process's arguments. `--help`, `--version` and usage
    /// errors print and exit here (0, 0 and 2), before any other work.
    pub fn parse_args() -> Cli {
        Cli::parse()
    }
}

/// Runs a parsed command line: sets up logging, dispatches, reports a
/// failure on stderr, and returns the exit code.
pub async fn run(cli: Cli) -> ExitCode {
    // The hook server logs each call (hook id and outcome) by default.
    let default = match cli.command {
        Command::Serve(_) => LevelFilter::INFO,
        _ => LevelFilter::WARN,
    };
    init_logging(std::env::var(LOG_ENV).ok().as_deref(), default);
    let result = match cli.command {
        Command::Image(command) => image::run(command).await,
        Command::App(command) => app::run(command).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Store(command) => store::run(command).await,
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(error) => {
            error.report();
            ExitCode::from(error.exit_code())
        }
    }
}

/// Why a command failed, as the user reads it on stderr.
#[derive(Debug)]
pub enum CliError {
    /// Invalid input (exit 2): one line, `berth: <message>`.
    Usage(String),
    /// The operation failed (exit 1): `berth: <summary>`, then the detail
    /// (what was found, the likely cause, what to do) and optional hint.
    Failed {
        summary: String,
        detail: String,
        hint: Option<String>,
    },
}

impl CliError {
    /// An invalid-input error.
    pub fn usage(message: impl fmt::Display) -> CliError {
        CliError::Usage(message.to_string())
    }

    /// An operation failure with a short summary and the full detail.
    pub fn failed(summary: impl Into<String>, detail: impl Into<String>) -> CliError {
        CliError::Failed {
            summary: summary.into(),
            detail: detail.into(),
            hint: None,
        }
    }

    /// Adds a hint line to an operation failure.
    pub fn with_hint(self, text: impl Into<String>) -> CliError {
        match self {
            CliError::Failed {
                summary, detail, ..
            } => CliError::Failed {
                summary,
                detail,
                hint: Some(text.into()),
            },
            usage => usage,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Failed { .. } => EXIT_FAILED,
        }
    }

    /// Prints the error to stderr.
    fn report(&self) {
        eprint!("{self}");
    }
}

impl fmt::Display for CliError {
    /// `berth: <line>` for usage errors; `berth: <summary>`, the detail and
    /// `hint: …` on their own lines for failures. Ends with a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(message) => writeln!(f, "berth: {message}"),
            CliError::Failed {
                summary,
                detail,
                hint,
            } => {
                writeln!(f, "berth: {summary}")?;
                if !detail.is_empty() {
                    writeln!(f, "{detail}")?;
                }
                if let Some(hint) = hint {
                    writeln!(f, "hint: {hint}")?;
                }
                Ok(())
            }
        }
    }
}

/// Human-readable logs on stderr, filtered by `BERTH_LOG` (`filter`),
/// `default` when unset. An invalid filter is reported and replaced by
/// `default`.
fn init_logging(filter: Option<&str>, default: LevelFilter) {
    let (filter, problem) = log_filter(filter, default);
    // `try_init`: a second initialisation (e.g. in-process tests) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    if let Some(problem) = problem {
        tracing::warn!(
            variable = LOG_ENV,
            "ignoring an invalid log filter: {problem}"
        );
    }
}

/// The filter for `BERTH_LOG`'s value, and why it was rejected if it was.
fn log_filter(value: Option<&str>, level: LevelFilter) -> (EnvFilter, Option<String>) {
    let default = || {
        EnvFilter::builder()
            .with_default_directive(level.into())
            .parse_lossy("")
    };
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => (default(), None),
        Some(value) => match EnvFilter::builder()
            .with_default_directive(level.into())
            .parse(value)
        {
            Ok(filter) => (filter, None),
            Err(error) => (default(), Some(format!("{value:?}: {error}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_clap_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn log_filter_defaults_to_warn_and_rejects_nonsense() {
        let (filter, problem) = log_filter(None, LevelFilter::WARN);
        assert_eq!(filter.to_string(), "warn");
        assert!(problem.is_none());
        let (filter, _) = log_filter(None, LevelFilter::INFO);
        assert_eq!(filter.to_string(), "info");
        let (filter, problem) = log_filter(Some("berth=debug"), LevelFilter::WARN);
        assert!(filter.to_string().contains("berth=debug"), "{filter}");
        assert!(problem.is_none());
        let (filter, problem) = log_filter(Some("berth=loud"), LevelFilter::WARN);
        assert_eq!(filter.to_string(), "warn");
        assert!(problem.is_some_and(|p| p.contains("berth=loud")));
    }

    #[test]
    fn failures_print_summary_detail_and_hint_on_separate_lines() {
        let error = CliError::failed("Image not found", "image `x` was not found.")
            .with_hint("check the tag");
        assert_eq!(
            error.to_string(),
            "berth: Image not found\nimage `x` was not found.\nhint: check the tag\n"
        );
        assert_eq!(error.exit_code(), EXIT_FAILED);
        let usage = CliError::usage("invalid image reference \"Foo\": lowercase");
        assert_eq!(
            usage.to_string(),
            "berth: invalid image reference \"Foo\": lowercase\n"
        );
        assert_eq!(usage.exit_code(), EXIT_USAGE);
    }
}
