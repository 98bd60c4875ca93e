//! `berth image …`: image references from the command line.
//!
//! - `normalize REF` prints the canonical reference ([`Reference::parse`]
//!   and its `Display`), purely, without any network access.
//! - `resolve REF` asks the registry for the linux/amd64 manifest digest
//!   ([`RegistryClient::resolve`]) and prints it with the index digest,
//!   size and pinned reference. Credentials come from `--username` and
//!   `--password-stdin`; the password is never a flag value, so it stays out
//!   of shell history and process listings, and it is held as a redacting
//!   [`Secret`] from the moment it is read.

use std::io::Read;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{self, human_bytes, OutputArgs, Table};
use super::CliError;
use crate::reference::Reference;
use crate::registry::{
    Credentials, RegistryClient, RegistryError, RegistryOptions, ResolvedImage, Secret,
};

/// Longest password or token `--password-stdin` accepts; anything longer is
/// not a credential but the wrong file piped in.
const MAX_PASSWORD_BYTES: u64 = 64 * 1024;

const NORMALIZE_LONG_ABOUT: &str = "\
Print the canonical form of an image reference, by the Docker distribution
rules: the registry defaults to docker.io, Docker Hub repositories without a
namespace get library/, and the tag defaults to latest only when the reference
has neither a tag nor a digest. No network access.

An invalid reference is reported in one line on stderr, with exit code 2.";

const RESOLVE_LONG_ABOUT: &str = "\
Resolve an image reference to the digest of its linux/amd64 image manifest,
the image Berth would deploy, and check that Berth can deploy it (published
for linux/amd64, at most 10 GB compressed). A tag naming a multi-platform
index also reports the index digest.

Registries on loopback and those given with --insecure-registry are spoken to
over plain HTTP, all others over HTTPS. A failure prints a summary, what was
found and what to do on stderr, with exit code 1.";

const NORMALIZE_AFTER_HELP: &str = "\
Examples:
  $ berth image normalize nginx
  docker.io/library/nginx:latest
  $ berth image normalize index.docker.io/x --json
  $ berth image normalize Foo/Bar     # exit 2: repository name must be lowercase";

const RESOLVE_AFTER_HELP: &str = "\
Examples:
  berth image resolve nginx:1.27
  berth image resolve 127.0.0.1:5000/berth/demo:v1 --json
  printf %s \"$TOKEN\" | berth image resolve ghcr.io/acme/api:v3 --username acme --password-stdin
  berth image resolve registry.internal:5000/app:v1 --insecure-registry registry.internal:5000";

/// `berth image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Print the canonical form of an image reference (no network access)
    #[command(long_about = NORMALIZE_LONG_ABOUT, after_help = NORMALIZE_AFTER_HELP)]
    Normalize(NormalizeArgs),

    /// Resolve an image reference to its linux/amd64 manifest digest
    #[command(long_about = RESOLVE_LONG_ABOUT, after_help = RESOLVE_AFTER_HELP)]
    Resolve(ResolveArgs),
}

/// Arguments of `berth image normalize`.
#[derive(Debug, Args)]
pub struct NormalizeArgs {
    /// The image reference, e.g. `nginx`, `ghcr.io/acme/api:v3` or
    /// `name@sha256:<digest>`
    #[arg(value_name = "REF")]
    reference: String,

    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth image resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The image reference: a tag or a digest, e.g. `nginx:1.27`
    #[arg(value_name = "REF")]
    reference: String,

    /// Speak plain HTTP to this registry (`host[:port]`); repeatable
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,

    /// Username for the registry (needs --password-stdin)
    #[arg(long, value_name = "NAME", requires = "password_stdin")]
    username: Option<String>,

    /// Read the password or token for --username from stdin
    #[arg(long, requires = "username")]
    password_stdin: bool,

    #[command(flatten)]
    output: OutputArgs,
}

/// Runs one `berth image` subcommand.
pub async fn run(command: ImageCommand) -> Result<(), CliError> {
    match command {
        ImageCommand::Normalize(args) => normalize(&args),
        ImageCommand::Resolve(args) => resolve(args).await,
    }
}

/// `berth image normalize --json`.
#[derive(Debug, Serialize)]
struct NormalizedReference<'a> {
    input: &'a str,
    reference: String,
    registry: &'a str,
    repository: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

fn normalize(args: &NormalizeArgs) -> Result<(), CliError> {
    let reference = Reference::parse(&args.reference).map_err(CliError::usage)?;
    if args.output.json {
        output::print_json(&NormalizedReference {
            input: &args.reference,
            reference: reference.to_string(),
            registry: reference.registry(),
            repository: reference.repository(),
            tag: reference.tag(),
            digest: reference.digest(),
        })
    } else {
        output::print_line(&reference.to_string())
    }
}

async fn resolve(args: ResolveArgs) -> Result<(), CliError> {
    let reference = Reference::parse(&args.reference).map_err(CliError::usage)?;
    let credentials = match args.username {
        Some(username) if args.password_stdin => {
            // Nothing else runs on this runtime yet, so a blocking read of
            // stdin stalls no other task.
            let password = read_password(std::io::stdin().lock())?;
            Credentials::basic(username, password)
        }
        // clap makes --username and --password-stdin require each other.
        _ => Credentials::Anonymous,
    };
    let client = RegistryClient::new(RegistryOptions {
        insecure_registries: args.insecure_registries,
    });
    let resolved = client
        .resolve(&reference, &credentials)
        .await
        .map_err(resolve_error)?;
    tracing::debug!(
        reference = %resolved.reference,
        digest = %resolved.digest,
        "resolved image"
    );
    if args.output.json {
        output::print_json(&resolved)
    } else {
        resolved_table(&resolved).print()
    }
}

/// The human form of a resolve.
fn resolved_table(resolved: &ResolvedImage) -> Table {
    Table::new()
        .row("reference", resolved.reference.as_str())
        .row("digest", resolved.digest.as_str())
        .row(
            "index digest",
            resolved.index_digest.as_deref().unwrap_or("-"),
        )
        .row("platform", resolved.platform.as_str())
        .row(
            "size",
            format!(
                "{} ({} bytes, compressed)",
                human_bytes(resolved.size_bytes),
                resolved.size_bytes
            ),
        )
        .row("pinned reference", resolved.pinned_reference.as_str())
}

/// Reads the password or token from `input` (stdin): at most
/// [`MAX_PASSWORD_BYTES`], UTF-8, trailing line ends dropped, not empty.
/// Error messages never repeat what was read.
fn read_password(input: impl Read) -> Result<Secret, CliError> {
    let mut bytes = Vec::new();
    input
        .take(MAX_PASSWORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::usage(format!("--password-stdin: cannot read stdin: {e}")))?;
    if bytes.len() as u64 > MAX_PASSWORD_BYTES {
        return Err(CliError::usage(format!(
            "--password-stdin: stdin holds more than {MAX_PASSWORD_BYTES} bytes, which is not a \
             password or token; pipe only the secret itself"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        CliError::usage("--password-stdin: the password read from stdin is not valid UTF-8")
    })?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(CliError::usage(
            "--password-stdin: stdin was empty; pipe the password or token in, e.g. \
             `printf %s \"$TOKEN\" | berth image resolve REF --username NAME --password-stdin`",
        ));
    }
    Ok(Secret::new(password))
}

/// A registry failure as the command line reports it: the registry layer's
/// summary and detail, plus a hint in command-line terms where the detail
/// speaks of Terraform configuration.
fn resolve_error(error: RegistryError) -> CliError {
    let hint = match &error {
        RegistryError::AuthenticationRequired { .. } => Some(
            "with the berth command, pass the username with --username and the password or \
             token on stdin with --password-stdin",
        ),
        RegistryError::CredentialsRejected { .. } => {
            Some("check the --username given and the password or token piped to --password-stdin")
        }
        RegistryError::Denied { .. } => {
            Some("use --username and --password-stdin with an account that may pull it")
        }
        RegistryError::Unreachable { url, .. } if url.starts_with("https://") => Some(
            "if the registry speaks plain HTTP, pass --insecure-registry HOST[:PORT] \
             (loopback registries always use plain HTTP)",
        ),
        _ => None,
    };
    let cli_error = CliError::failed(error.summary(), error.to_string());
    match hint {
        Some(hint) => cli_error.with_hint(hint),
        None => cli_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_from_stdin_drops_the_line_end_only() {
        let secret = read_password(&b"s3cret \r\n"[..]).expect("password");
        assert_eq!(secret.expose(), "s3cret ");
        let secret = read_password(&b"token"[..]).expect("password");
        assert_eq!(secret.expose(), "token");
    }

    #[test]
    fn bad_stdin_is_a_usage_error_that_repeats_nothing() {
        for input in [&b""[..], &b"\n"[..], &b"\xffpass\xfe"[..]] {
            let error = read_password(input).expect_err("refused");
            assert!(matches!(error, CliError::Usage(_)), "{error}");
            assert!(!error.to_string().contains("pass\u{fffd}"), "{error}");
        }
        let huge = vec![b'a'; 70_000];
        let error = read_password(&huge[..]).expect_err("refused");
        assert!(
            error.to_string().contains("more than 65536 bytes"),
            "{error}"
        );
    }

    #[test]
    fn the_table_shows_every_field() {
        let text = resolved_table(&ResolvedImage {
            reference: "127.0.0.1:5000/berth/demo:v1".to_owned(),
            digest: "sha256:aa".to_owned(),
            index_digest: None,
            platform: "linux/amd64".to_owned(),
            size_bytes: 1_234_567,
            pinned_reference: "127.0.0.1:5000/berth/demo@sha256:aa".to_owned(),
        })
        .render();
        assert_eq!(
            text,
            "reference         127.0.0.1:5000/berth/demo:v1\n\
             digest            sha256:aa\n\
             index digest      -\n\
             platform          linux/amd64\n\
             size              1.2 MB (1234567 bytes, compressed)\n\
             pinned reference  127.0.0.1:5000/berth/demo@sha256:aa\n"
        );
    }

    #[test]
    fn authentication_failures_get_a_command_line_hint() {
        let error = resolve_error(RegistryError::AuthenticationRequired {
            registry: "127.0.0.1:5001".to_owned(),
            repository: "berth/private".to_owned(),
        });
        let text = error.to_string();
        assert!(
            text.starts_with("berth: Registry requires authentication\n"),
            "{text}"
        );
        assert!(text.contains("hint: "), "{text}");
        assert!(text.contains("--password-stdin"), "{text}");
        assert_eq!(error.exit_code(), super::super::EXIT_FAILED);
    }
}
