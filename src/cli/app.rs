//! The app commands of `berth`: `plan`, `apply`, `status`, `releases`,
//! `rollback`, `destroy` and `schema`, thin over the engine.
//!
//! - An app spec file (YAML or JSON, `-` for stdin) is read into
//!   [`AppSpec`] and checked with [`AppSpec::validate`]; every problem is
//!   reported as `FILE: field: message` (exit 2).
//! - `plan` and `apply` resolve the image tag to its linux/amd64 digest
//!   (with the app's registry credential from Berth's store), observe the
//!   hosts and run the engine's pure [`plan`](crate::engine::plan::plan);
//!   `apply` then deploys through [`Apps::deploy`], as the `berth_app`
//!   resource does.
//! - Every command works through [`Apps`], the engine's one API for the
//!   three front ends; none talks to Docker or the store for app logic.
//! - `status`, `releases` read the hosts' labels and the releases journal.
//! - `rollback` redeploys a journaled release with the app's current
//!   secret values (kept sealed in Berth's store).
//! - `destroy` removes the app's containers, networks and record.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{self, Columns, OutputArgs, Table};
use super::CliError;
use crate::docker::Hosts;
use crate::engine::apps::Recorded;
use crate::engine::deploy::TEST_LABEL_ENV;
use crate::engine::plan::{self as engine_plan, Drift, Instance, InstanceHealth};
use crate::engine::spec::{AppSpec, Component};
use crate::engine::{Apps, AppsError, DeployError, DeployRequest, Engine, Outcome, Record};
use crate::labels;
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError, RegistryOptions};
use crate::store::{process_env, ReleaseOutcome, ReleaseRecord, Store, StoreOptions};

/// The trigger journaled for `berth apply`.
pub const APPLY_TRIGGER: &str = "berth apply";
pub use crate::engine::apps::ROLLBACK_TRIGGER;
/// Longest app spec file read (anything bigger is the wrong file).
const MAX_SPEC_BYTES: u64 = 1024 * 1024;

const PLAN_LONG_ABOUT: &str = "\
Show what `berth apply` would do for an app spec file, changing nothing.

Resolves the image tag to its linux/amd64 digest (with `track_tag: false`, an
app that already runs this image keeps the digest it runs), reads the app's
containers from the Docker host, and prints each step of the plan in words,
then every difference between the host and the spec (drift), or
\"no changes\".";

const APPLY_LONG_ABOUT: &str = "\
Deploy an app spec file with no downtime: resolve the tag to its linux/amd64
digest, pull it, run the pre-deploy command, start the new instances,
health-check them from outside, then stop the old ones. A failure before the
switch leaves the running release untouched.

Prints the release number, digest, endpoints and how long each phase took.";

const STATUS_LONG_ABOUT: &str = "\
Without APP: every app Berth knows (its records and the containers carrying
its labels) with release, digest, running/desired instances and drift count.
With APP: the app's instances (name, host, state, endpoint) and its drift in
words.";

const ROLLBACK_LONG_ABOUT: &str = "\
Deploy the image and spec of an earlier release again, as a new release with
trigger `rollback`. Without RELEASE: the newest succeeded release before the
one running now.

The secret values are the app's current ones, which Berth keeps encrypted in
its store (the releases journal holds none); a release that used a secret the
app no longer has is refused.";

const AFTER_HELP: &str = "\
Examples:
  berth plan -f app.yaml
  berth apply -f app.yaml --json
  berth status
  berth releases shop
  berth rollback shop            # the previous succeeded release
  berth rollback shop 3
  berth destroy shop
  berth schema > app.schema.json";

/// The app commands (flattened into the top level of `berth`).
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Show what `apply` would change for an app spec file (changes nothing)
    #[command(long_about = PLAN_LONG_ABOUT, after_help = AFTER_HELP)]
    Plan(SpecFileArgs),

    /// Deploy an app spec file (resolve, pull, start, health-check, switch)
    #[command(long_about = APPLY_LONG_ABOUT, after_help = AFTER_HELP)]
    Apply(SpecFileArgs),

    /// Show every app, or one app's instances and drift
    #[command(long_about = STATUS_LONG_ABOUT, after_help = AFTER_HELP)]
    Status(StatusArgs),

    /// List an app's releases, newest first
    #[command(after_help = AFTER_HELP)]
    Releases(ReleasesArgs),

    /// Deploy an earlier release's image and spec again
    #[command(long_about = ROLLBACK_LONG_ABOUT, after_help = AFTER_HELP)]
    Rollback(RollbackArgs),

    /// Remove an app's containers, networks and record
    #[command(after_help = AFTER_HELP)]
    Destroy(DestroyArgs),

    /// Print the JSON Schema of the app spec file
    #[command(after_help = AFTER_HELP)]
    Schema(SchemaArgs),

    /// List an app's jobs with their next and last runs
    #[command(after_help = AFTER_HELP)]
    Jobs(super::jobs::JobsArgs),

    /// List an app's job runs (of one job, when given), newest first
    #[command(after_help = AFTER_HELP)]
    Runs(super::jobs::RunsArgs),

    /// Run one of an app's jobs now and wait for it to end
    #[command(after_help = AFTER_HELP)]
    Run(super::jobs::RunArgs),
}

/// Arguments of `berth plan` and `berth apply`.
#[derive(Debug, Args)]
pub struct SpecFileArgs {
    /// The app spec file, YAML or JSON; `-` reads stdin
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: String,

    /// Speak plain HTTP to this registry (`host[:port]`); repeatable
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,

    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The app; every app when left out
    #[arg(value_name = "APP")]
    app: Option<String>,

    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth releases`.
#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// The app
    #[arg(value_name = "APP")]
    app: String,

    /// Show at most this many releases
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,

    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The app
    #[arg(value_name = "APP")]
    app: String,

    /// The release to go back to; default: the newest succeeded release
    /// before the one running now
    #[arg(value_name = "RELEASE")]
    release: Option<u64>,

    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The app
    #[arg(value_name = "APP")]
    app: String,

    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Accepted for uniformity: the schema is always JSON
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs one app command.
pub async fn run(command: AppCommand) -> Result<(), CliError> {
    match command {
        AppCommand::Plan(args) => plan(args).await,
        AppCommand::Apply(args) => apply(args).await,
        AppCommand::Status(args) => status(args).await,
        AppCommand::Releases(args) => releases(args).await,
        AppCommand::Rollback(args) => rollback(args).await,
        AppCommand::Destroy(args) => destroy(args).await,
        AppCommand::Schema(_) => schema(),
        AppCommand::Jobs(args) => super::jobs::jobs(args).await,
        AppCommand::Runs(args) => super::jobs::runs(args).await,
        AppCommand::Run(args) => super::jobs::run(args).await,
    }
}

// ------------------------------------------------------------ spec files

/// Reads and checks an app spec file; `-` reads stdin. Every error names
/// the file, and the line, column and field when known (exit 2).
pub fn load_spec(file: &str) -> Result<AppSpec, CliError> {
    let spec = read_spec(file)?;
    let errors = spec.validate();
    if errors.is_empty() {
        for w in spec.job_warnings(chrono::Utc::now()) {
            eprintln!(
                "warning: {}: {}: {}",
                display_name(file),
                w.field,
                w.message
            );
        }
        Ok(spec)
    } else {
        let name = display_name(file);
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("{name}: {}: {}", e.field, e.message))
            .collect();
        Err(CliError::usage(format!(
            "{name} is not a valid app spec ({} problem{}):\n{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            lines.join("\n")
        )))
    }
}

fn display_name(file: &str) -> &str {
    if file == "-" {
        "<stdin>"
    } else {
        file
    }
}

/// Reads and parses an app spec file without validating it.
fn read_spec(file: &str) -> Result<AppSpec, CliError> {
    let name = display_name(file);
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_SPEC_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| CliError::usage(format!("{name}: cannot read the app spec: {e}")))?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(CliError::usage(format!(
            "{name}: larger than {MAX_SPEC_BYTES} bytes, which is not an app spec"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::usage(format!("{name}: the app spec is not valid UTF-8")))?;
    parse_spec(name, &text).map_err(CliError::usage)
}

/// Parses an app spec: JSON when the file is named `*.json` or the text
/// starts with `{`, YAML otherwise. Errors read `FILE:LINE:COLUMN: message`.
pub fn parse_spec(name: &str, text: &str) -> Result<AppSpec, String> {
    let is_json = Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    if is_json {
        serde_json::from_str(text).map_err(|e| {
            let message = e.to_string();
            if e.line() == 0 {
                return format!("{name}: {message}");
            }
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            format!("{name}:{}:{}: {message}", e.line(), e.column())
        })
    } else {
        if text.trim().is_empty() {
            return Err(format!(
                "{name}: the app spec is empty: give at least `name`, `image` and a service \
                 (see `berth schema`)"
            ));
        }
        // The YAML reader takes time quadratic in flow nesting (`[[[…`):
        // a few thousand levels took it minutes. No app spec nests deep.
        if let Some(line) = flow_nesting_beyond(text, MAX_FLOW_NESTING) {
            return Err(format!(
                "{name}:{line}: nests `[` or `{{` deeper than {MAX_FLOW_NESTING} levels, which no app spec does"
            ));
        }
        serde_norway::from_str(text).map_err(|e| {
            let message = e.to_string();
            match e.location() {
                Some(at) => {
                    let suffix = format!(" at line {} column {}", at.line(), at.column());
                    let message = message.strip_suffix(&suffix).unwrap_or(&message);
                    format!("{name}:{}:{}: {message}", at.line(), at.column())
                }
                None => format!("{name}: {message}"),
            }
        })
    }
}

/// How deep `[`/`{` may nest in a YAML spec file.
const MAX_FLOW_NESTING: usize = 64;

/// The line where YAML flow collections nest deeper than `limit`, if they
/// do. Quoted scalars and comments are skipped; a bracket in a plain
/// scalar counts, which errs on the safe side.
fn flow_nesting_beyond(text: &str, limit: usize) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' if previous.is_whitespace() => while chars.next_if(|&n| n != '\n').is_some() {},
            '"' => {
                while let Some(n) = chars.next() {
                    match n {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '\'' if !previous.is_alphanumeric() => {
                while let Some(n) = chars.next() {
                    match n {
                        '\'' if chars.next_if_eq(&'\'').is_none() => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > limit {
                    return Some(line);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    None
}

// ------------------------------------------------------------ the context

/// The app operations an app command drives: the engine's [`Apps`] over
/// the Docker host and Berth's store.
pub(super) struct Session {
    pub(super) apps: Apps,
}

impl Session {
    pub(super) async fn open(
        insecure_registries: Vec<String>,
        ingress: Option<crate::ingress::IngressSettings>,
    ) -> Result<Session, CliError> {
        let options = StoreOptions::from_env_with_store(None, None, &process_env)
            .map_err(store_open_error)?;
        let store = Store::open(options).await.map_err(store_open_error)?;
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let hosts = Hosts::from_config_or_local(&[], docker_host.as_deref()).map_err(|e| {
            CliError::failed("Cannot set up the Docker host", e.to_string())
                .with_hint("set DOCKER_HOST (e.g. unix:///var/run/docker.sock)")
        })?;
        let registry = RegistryClient::new(RegistryOptions {
            insecure_registries,
        });
        let engine = Engine::new(hosts, store)
            .with_test_label(process_env(TEST_LABEL_ENV).is_some())
            .with_lease_timing_from(&process_env)
            .map_err(CliError::usage)?
            .with_ingress(
                ingress.unwrap_or_default(),
                std::sync::Arc::new(registry.clone()),
            );
        Ok(Session {
            apps: Apps::new(engine, registry),
        })
    }

    fn engine(&self) -> &Engine {
        self.apps.engine()
    }

    pub(super) fn store(&self) -> &Store {
        self.apps.store()
    }

    /// The app as Berth recorded it (secret values included), and why its
    /// record cannot be read if it cannot.
    async fn recorded(&self, app: &str) -> Result<(Option<Recorded>, Option<String>), CliError> {
        match self.apps.recorded(app).await {
            Ok(recorded) => Ok((recorded, None)),
            Err(AppsError::Unreadable { why, .. }) => Ok((None, Some(why))),
            Err(e) => Err(apps_error(app, e)),
        }
    }

    /// Talks to the Docker host in `mode` (a spec file's `host_mode`).
    pub(super) fn use_host_mode(&mut self, mode: crate::docker::HostMode) -> Result<(), CliError> {
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let hosts = Hosts::local_in_mode(docker_host.as_deref(), mode).map_err(|e| {
            CliError::failed("Cannot set up the Docker host", e.to_string())
                .with_hint("set DOCKER_HOST (e.g. unix:///var/run/docker.sock)")
        })?;
        self.apps.engine_mut().hosts = hosts;
        Ok(())
    }

    /// Uses the ingress settings the app was last deployed with (its spec
    /// file's `ingress` section), for commands that take no spec file.
    async fn use_recorded_ingress(&mut self, app: &str) -> Result<(), CliError> {
        if let (Some(recorded), _) = self.recorded(app).await? {
            if let Some(settings) = recorded.spec.ingress {
                self.apps.engine_mut().set_ingress_settings(settings);
            }
            if let Some(mode) = recorded.spec.host_mode {
                self.use_host_mode(mode)?;
            }
        }
        Ok(())
    }

    /// The app's services when the host is a Swarm manager.
    async fn swarm_seen(&self, app: &str, fresh: bool) -> Result<SwarmSeen, CliError> {
        let Some(manager) = self.engine().swarm_manager() else {
            return Ok(None);
        };
        let services = self
            .engine()
            .swarm_services(manager, app, fresh)
            .await
            .map_err(|e| {
                CliError::failed(
                    format!("Cannot read app {app:?} from the Swarm manager"),
                    e.to_string(),
                )
            })?;
        Ok(Some((manager.name().to_owned(), services)))
    }

    async fn observe(&self, app: &str, fresh: bool) -> Result<Vec<Instance>, CliError> {
        self.engine().observe(app, fresh).await.map_err(|e| {
            CliError::failed(
                format!("Cannot read app {app:?} from the Docker host"),
                e.to_string(),
            )
        })
    }

    /// Every difference between `components` at `digest` and the host.
    async fn drift(
        &self,
        app: &str,
        components: &[Component],
        digest: &str,
        observed: &[Instance],
    ) -> Result<Vec<Drift>, CliError> {
        self.apps
            .drift(app, components, digest, observed, true)
            .await
            .map_err(|e| {
                CliError::failed(
                    format!("Cannot read the ingress of app {app:?}"),
                    e.to_string(),
                )
            })
    }
}

pub(super) fn store_open_error(error: crate::store::StoreError) -> CliError {
    CliError::failed("Cannot open Berth's state", error.to_string()).with_hint(
        "the store is BERTH_STORE, else berth.db in the state directory: \
         BERTH_STATE_DIR, else $XDG_DATA_HOME/berth or ~/.local/share/berth",
    )
}

pub(super) fn store_error(error: crate::store::StoreError) -> CliError {
    CliError::failed("Berth's store failed", error.to_string())
}

/// An app operation's failure as the command reports it.
pub(super) fn apps_error(app: &str, error: AppsError) -> CliError {
    match error {
        AppsError::Deploy(e) => deploy_error(app, e),
        AppsError::Registry(e) => registry_error(e),
        AppsError::Store(e) => store_error(e),
        e @ (AppsError::NoCredential { .. } | AppsError::WrongRegistry { .. }) => {
            CliError::usage(format!("registry_credential_id: {e}"))
        }
        AppsError::NotFound { .. } => not_found(app),
        e @ AppsError::Release { .. } => {
            CliError::failed(format!("Cannot roll back app {app:?}"), e.to_string())
                .with_hint(format!("`berth releases {app}` lists the releases"))
        }
        e => CliError::failed(format!("App {app:?}: the operation failed"), e.to_string()),
    }
}

fn deploy_error(app: &str, error: DeployError) -> CliError {
    let hint = match &error {
        DeployError::Busy { .. } => Some("wait for the other deploy, then run the command again"),
        DeployError::Unhealthy { .. } => Some(
            "check that the service answers HTTP on `http_port` at `health_check.path` within \
             `health_check.start_period_seconds`",
        ),
        _ => None,
    };
    let failed = CliError::failed(format!("Deploy of app {app:?} failed"), error.to_string());
    match hint {
        Some(hint) => failed.with_hint(hint),
        None => failed,
    }
}

fn registry_error(error: RegistryError) -> CliError {
    let hint = match &error {
        RegistryError::AuthenticationRequired { .. }
        | RegistryError::CredentialsRejected { .. }
        | RegistryError::Denied { .. } => Some(
            "set `registry_credential_id` in the app spec to a registry credential that may \
             pull the image",
        ),
        RegistryError::Unreachable { url, .. } if url.starts_with("https://") => Some(
            "if the registry speaks plain HTTP, pass --insecure-registry HOST[:PORT] \
             (loopback registries always use plain HTTP)",
        ),
        _ => None,
    };
    let failed = CliError::failed(error.summary(), error.to_string());
    match hint {
        Some(hint) => failed.with_hint(hint),
        None => failed,
    }
}

// ------------------------------------------------------------ plan, apply

/// Everything `plan` and `apply` work out before anything changes.
struct Prepared {
    spec: AppSpec,
    reference: Reference,
    components: Vec<Component>,
    digest: String,
    observed: Vec<Instance>,
    /// Where the digest came from, in words.
    digest_source: &'static str,
}

async fn prepare(session: &Session, spec: AppSpec) -> Result<Prepared, CliError> {
    let components = spec
        .components()
        .map_err(|e| CliError::usage(format!("{}: {}", e.field, e.message)))?;
    let reference =
        Reference::parse(&spec.image).map_err(|e| CliError::usage(format!("image: {e}")))?;
    let observed = session.observe(&spec.name, true).await?;
    // `track_tag: false`: an app already running this image keeps the digest
    // it runs until the image is changed on purpose.
    let kept = if spec.track_tag {
        None
    } else {
        let record = session
            .store()
            .get_app(spec.name.clone())
            .await
            .map_err(store_error)?;
        let same_image = record
            .as_ref()
            .and_then(|r| recorded_image(&r.spec_json))
            .is_some_and(|image| image == spec.image);
        running_digest(&observed).filter(|_| same_image)
    };
    let (digest, digest_source) = match kept {
        Some(digest) => (digest, "kept (track_tag is false)"),
        None => {
            let resolved = session
                .apps
                .resolve(&spec, &reference)
                .await
                .map_err(|e| apps_error(&spec.name, e))?;
            (resolved.digest, "resolved")
        }
    };
    Ok(Prepared {
        spec,
        reference,
        components,
        digest,
        observed,
        digest_source,
    })
}

/// The `image` of a recorded spec.
fn recorded_image(spec_json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(spec_json).ok()?;
    value.get("image")?.as_str().map(str::to_owned)
}

/// The digest the app's current release runs, from its labels.
fn running_digest(observed: &[Instance]) -> Option<String> {
    let current = engine_plan::current_release(observed);
    observed
        .iter()
        .filter(|i| i.release == current && !i.digest.is_empty())
        .map(|i| i.digest.clone())
        .next()
}

/// `berth plan --json`.
#[derive(Debug, Serialize)]
struct PlanReport {
    app: String,
    image: String,
    digest: String,
    current_release: Option<u64>,
    changes: bool,
    new_release: bool,
    steps: Vec<String>,
    /// Service name → its stable URLs (known before anything runs).
    urls: BTreeMap<String, Vec<String>>,
    drift: Vec<String>,
}

async fn plan(args: SpecFileArgs) -> Result<(), CliError> {
    let spec = load_spec(&args.file)?;
    let mut session = Session::open(args.insecure_registries, spec.ingress.clone()).await?;
    if let Some(mode) = spec.host_mode {
        session.use_host_mode(mode)?;
    }
    let prepared = prepare(&session, spec).await?;
    let hosts = session.engine().host_names();
    let plan = engine_plan::plan(
        &prepared.components,
        &prepared.digest,
        &hosts,
        &prepared.observed,
    );
    // Drift is a difference from something that runs; a new app has none.
    let drift: Vec<String> = if prepared.observed.is_empty() {
        Vec::new()
    } else {
        let app = &prepared.spec.name;
        let mut drift = session
            .drift(
                app,
                &prepared.components,
                &prepared.digest,
                &prepared.observed,
            )
            .await?;
        let mut words = Vec::new();
        if let Some(hook) = session
            .apps
            .hook_release(app, &prepared.observed, &prepared.spec.image)
            .await
            .map_err(|e| apps_error(app, e))?
            .filter(|h| !h.configured)
        {
            // Every instance runs the hook's digest: said once.
            drift.retain(|d| !matches!(d, Drift::WrongDigest { .. } | Drift::ForeignImage { .. }));
            words.push(hook.words(&prepared.spec.image));
        }
        words.extend(drift.iter().map(ToString::to_string));
        words
    };
    let changes = !plan.is_noop() || !drift.is_empty();
    let report = PlanReport {
        app: prepared.spec.name.clone(),
        image: prepared.spec.image.clone(),
        digest: prepared.digest.clone(),
        current_release: plan.current_release,
        changes,
        new_release: plan.new_release,
        steps: plan.reasons.clone(),
        urls: session.engine().urls(&prepared.components),
        drift,
    };
    if args.output.json {
        return output::print_json(&report);
    }
    let mut text = Table::new()
        .row("app", &report.app)
        .row("image", &report.image)
        .row(
            "digest",
            format!("{} ({})", report.digest, prepared.digest_source),
        )
        .row(
            "release",
            match (report.current_release, report.new_release) {
                (Some(r), true) => format!("{r} → a new release"),
                (None, _) => "none yet → release 1".to_owned(),
                (Some(r), false) => r.to_string(),
            },
        )
        .render();
    if report.changes {
        text.push_str("\nSteps:\n");
        for step in &report.steps {
            text.push_str(&format!("  {step}\n"));
        }
        if report.steps.is_empty() {
            text.push_str("  repair what the drift below names\n");
        }
    } else {
        text.push_str("\nno changes: the app runs this digest and spec\n");
    }
    if !report.drift.is_empty() {
        text.push_str("\nDrift:\n");
        for line in &report.drift {
            text.push_str(&format!("  {line}\n"));
        }
    }
    output::print_text(&text)
}

/// `berth apply --json` and `berth rollback --json`.
#[derive(Debug, Serialize)]
struct DeployReport {
    app: String,
    release: u64,
    new_release: bool,
    digest: String,
    image: String,
    trigger: String,
    /// Service name → its stable URLs through the ingress.
    urls: BTreeMap<String, Vec<String>>,
    endpoints: BTreeMap<String, Vec<String>>,
    steps: Vec<String>,
    /// Problems that did not undo the release (a failed post-deploy
    /// command); also printed on stderr.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    phases: Vec<PhaseReport>,
    /// For a rollback: the journaled release deployed again.
    #[serde(skip_serializing_if = "Option::is_none")]
    rolled_back_to: Option<u64>,
}

#[derive(Debug, Serialize)]
struct PhaseReport {
    phase: String,
    ms: u64,
}

impl DeployReport {
    fn new(
        outcome: Outcome,
        image: String,
        trigger: &str,
        rolled_back_to: Option<u64>,
    ) -> DeployReport {
        DeployReport {
            app: outcome.app,
            release: outcome.release,
            new_release: outcome.new_release,
            digest: outcome.digest,
            image,
            trigger: trigger.to_owned(),
            urls: outcome.urls,
            endpoints: outcome.endpoints,
            steps: outcome.steps,
            warnings: outcome.warnings,
            phases: outcome
                .phases
                .into_iter()
                .map(|(phase, ms)| PhaseReport { phase, ms })
                .collect(),
            rolled_back_to,
        }
    }

    fn print(&self, json: bool) -> Result<(), CliError> {
        for w in &self.warnings {
            eprintln!("warning: {w}");
        }
        if json {
            return output::print_json(self);
        }
        let release = match (self.new_release, self.rolled_back_to) {
            (true, Some(old)) => format!("{} (new release, from release {old})", self.release),
            (true, None) => format!("{} (new release)", self.release),
            (false, _) => format!("{} (unchanged)", self.release),
        };
        let mut table = Table::new()
            .row("app", &self.app)
            .row("release", release)
            .row("digest", &self.digest)
            .row("image", &self.image);
        let mut label = "urls";
        for (service, urls) in &self.urls {
            for url in urls {
                table = table.row(label, format!("{service}  {url}"));
                label = "";
            }
        }
        let mut label = "endpoints";
        for (service, endpoints) in &self.endpoints {
            for endpoint in endpoints {
                table = table.row(label, format!("{service}  {endpoint}"));
                label = "";
            }
        }
        if label == "endpoints" {
            table = table.row(label, "-");
        }
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|p| format!("{} {}", p.phase, human_ms(p.ms)))
            .collect();
        table = table.row("phases", phases.join(", "));
        let mut text = table.render();
        text.push_str("\nSteps:\n");
        for step in &self.steps {
            text.push_str(&format!("  {step}\n"));
        }
        output::print_text(&text)
    }
}

async fn apply(args: SpecFileArgs) -> Result<(), CliError> {
    let spec = load_spec(&args.file)?;
    let mut session = Session::open(args.insecure_registries, spec.ingress.clone()).await?;
    if let Some(mode) = spec.host_mode {
        session.use_host_mode(mode)?;
    }
    let prepared = prepare(&session, spec).await?;
    let app = prepared.spec.name.clone();
    let image = prepared.reference.with_digest(&prepared.digest).to_string();
    let outcome = session
        .apps
        .deploy(DeployRequest {
            spec: prepared.spec,
            image: prepared.reference,
            digest: prepared.digest,
            trigger: APPLY_TRIGGER.to_owned(),
            record: Record::Replace,
        })
        .await
        .map_err(|e| apps_error(&app, e))?;
    DeployReport::new(outcome, image, APPLY_TRIGGER, None).print(args.output.json)
}

// ------------------------------------------------------------ status

/// One app in `berth status --json`.
#[derive(Debug, Serialize)]
struct AppSummary {
    app: String,
    release: Option<u64>,
    digest: Option<String>,
    running: usize,
    /// Instances the app's record asks for; `None` without a record.
    desired: Option<u64>,
    /// Drift lines; `None` when there is no record to compare with.
    drift: Option<usize>,
    recorded: bool,
}

/// `berth status APP --json`.
#[derive(Debug, Serialize)]
struct AppStatus {
    app: String,
    release: Option<u64>,
    digest: Option<String>,
    running: usize,
    desired: Option<u64>,
    recorded: bool,
    /// Service name → its stable URLs through the ingress.
    urls: BTreeMap<String, Vec<String>>,
    instances: Vec<InstanceReport>,
    drift: Vec<String>,
    /// Why drift could not be fully judged, if so.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct InstanceReport {
    name: String,
    component: String,
    kind: String,
    slot: Option<u32>,
    release: Option<u64>,
    host: String,
    state: String,
    endpoint: Option<String>,
    digest: String,
}

/// What the records and the hosts say about one app.
struct AppView {
    release: Option<u64>,
    digest: Option<String>,
    running: usize,
    desired: Option<u64>,
    drift: Option<Vec<Drift>>,
    notes: Vec<String>,
}

/// The app's Swarm services, when the host is a Swarm manager: its name
/// and the services.
type SwarmSeen = Option<(String, Vec<crate::docker::swarm::ObservedService>)>;

fn view(
    hosts: &[String],
    recorded: Option<&Recorded>,
    unreadable: Option<String>,
    observed: &[Instance],
    swarm: &SwarmSeen,
) -> AppView {
    let release = engine_plan::current_release(observed);
    let digest = running_digest(observed);
    let running = observed
        .iter()
        .filter(|i| i.release == release && i.health == InstanceHealth::Running)
        .count();
    let mut notes = Vec::new();
    if let Some(why) = unreadable {
        notes.push(format!("the app record cannot be read ({why})"));
    }
    let components = recorded.and_then(|r| r.spec.components().ok());
    let desired = components
        .as_ref()
        .map(|c| c.iter().map(|c| u64::from(c.instances)).sum());
    let drift = match (&components, recorded) {
        (Some(components), Some(recorded)) => {
            // Judge against the digest that runs: a moved tag is for `plan`.
            let digest = digest.clone().unwrap_or_default();
            let mut drift = match swarm {
                Some((manager, services)) => crate::engine::swarm::service_drift(
                    &recorded.spec.name,
                    manager,
                    components,
                    &digest,
                    services,
                ),
                None => engine_plan::drift(components, &digest, hosts, observed),
            };
            let missing = recorded.missing_secrets();
            if !missing.is_empty() {
                // Recorded before Berth kept secret values: the spec hash of
                // the containers covers them, so config drift cannot be
                // judged until the next apply records them.
                drift.retain(|d| !matches!(d, Drift::SpecChanged { .. }));
                notes.push(format!(
                    "config drift is not checked: Berth's record of the app lacks the values \
                     of secret_env {} (recorded by an older Berth); the next apply records them",
                    missing.join(", ")
                ));
            }
            Some(drift)
        }
        _ => None,
    };
    AppView {
        release,
        digest,
        running,
        desired,
        drift,
        notes,
    }
}

async fn status(args: StatusArgs) -> Result<(), CliError> {
    let mut session = Session::open(Vec::new(), None).await?;
    match args.app {
        Some(app) => {
            session.use_recorded_ingress(&app).await?;
            status_of(&session, &app, args.output.json).await
        }
        None => status_all(&session, args.output.json).await,
    }
}

async fn status_all(session: &Session, json: bool) -> Result<(), CliError> {
    let records = session.store().list_apps().await.map_err(store_error)?;
    let mut names: BTreeSet<String> = records.iter().map(|r| r.name.clone()).collect();
    for host in session.engine().hosts.iter() {
        let listed = host.list_managed().await.map_err(|e| {
            CliError::failed(
                format!("Cannot list containers on Docker host {:?}", host.name()),
                e.to_string(),
            )
        })?;
        names.extend(
            listed
                .iter()
                .filter_map(|o| o.label(labels::APP))
                .map(str::to_owned),
        );
    }
    let hosts = session.engine().host_names();
    let mut apps = Vec::new();
    for name in names {
        let observed = session.observe(&name, false).await?;
        let record = records.iter().find(|r| r.name == name);
        let (recorded, unreadable) = match record {
            Some(_) => session.recorded(&name).await?,
            None => (None, None),
        };
        let swarm = session.swarm_seen(&name, false).await?;
        let view = view(&hosts, recorded.as_ref(), unreadable, &observed, &swarm);
        apps.push(AppSummary {
            app: name,
            release: view.release,
            digest: view.digest,
            running: view.running,
            desired: view.desired,
            drift: view.drift.map(|d| d.len()),
            recorded: record.is_some(),
        });
    }
    if json {
        return output::print_json(&serde_json::json!({ "apps": apps }));
    }
    if apps.is_empty() {
        return output::print_line("no apps");
    }
    let mut columns = Columns::new(&["APP", "RELEASE", "DIGEST", "INSTANCES", "DRIFT"]);
    for app in &apps {
        columns.row(vec![
            app.app.clone(),
            opt(app.release),
            app.digest
                .as_deref()
                .map(short_digest)
                .unwrap_or("-")
                .to_owned(),
            format!("{}/{}", app.running, opt(app.desired)),
            opt(app.drift),
        ]);
    }
    columns.print()
}

async fn status_of(session: &Session, app: &str, json: bool) -> Result<(), CliError> {
    let observed = session.observe(app, true).await?;
    let record = session
        .store()
        .get_app(app.to_owned())
        .await
        .map_err(store_error)?;
    if observed.is_empty() && record.is_none() {
        return Err(not_found(app));
    }
    let (recorded, unreadable) = session.recorded(app).await?;
    let swarm = session.swarm_seen(app, true).await?;
    let mut view = view(
        &session.engine().host_names(),
        recorded.as_ref(),
        unreadable,
        &observed,
        &swarm,
    );
    let components = recorded.as_ref().and_then(|r| r.spec.components().ok());
    let urls = components
        .as_ref()
        .map(|c| session.engine().urls(c))
        .unwrap_or_default();
    if let (Some(drift), Some(components)) = (view.drift.as_mut(), &components) {
        drift.extend(
            session
                .engine()
                .ingress_drift(app, components, &observed, true)
                .await
                .map_err(|e| {
                    CliError::failed(
                        format!("Cannot read the ingress of app {app:?}"),
                        e.to_string(),
                    )
                })?,
        );
    }
    let mut instances: Vec<&Instance> = observed.iter().collect();
    instances.sort_by(|a, b| {
        (&a.component, a.slot, a.release, &a.name).cmp(&(&b.component, b.slot, b.release, &b.name))
    });
    let report = AppStatus {
        app: app.to_owned(),
        release: view.release,
        digest: view.digest,
        running: view.running,
        desired: view.desired,
        recorded: record.is_some(),
        urls,
        instances: instances
            .into_iter()
            .map(|i| InstanceReport {
                name: i.name.clone(),
                component: i.component.clone(),
                kind: i.kind.clone(),
                slot: i.slot,
                release: i.release,
                host: i.host.clone(),
                state: state_word(&i.health),
                endpoint: i.endpoint.clone(),
                digest: i.digest.clone(),
            })
            .collect(),
        drift: view
            .drift
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect(),
        notes: view.notes,
    };
    if json {
        return output::print_json(&report);
    }
    let mut text = Table::new()
        .row("app", &report.app)
        .row("release", opt(report.release))
        .row("digest", report.digest.as_deref().unwrap_or("-"))
        .row(
            "instances",
            format!(
                "{} running / {} desired",
                report.running,
                opt(report.desired)
            ),
        );
    let mut label = "urls";
    for (service, urls) in &report.urls {
        for url in urls {
            text = text.row(label, format!("{service}  {url}"));
            label = "";
        }
    }
    let mut text = text.render();
    text.push('\n');
    if report.instances.is_empty() {
        text.push_str("no instances\n");
    } else {
        let mut columns = Columns::new(&["NAME", "HOST", "STATE", "ENDPOINT"]);
        for i in &report.instances {
            columns.row(vec![
                i.name.clone(),
                i.host.clone(),
                i.state.clone(),
                i.endpoint.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        text.push_str(&columns.render());
    }
    text.push('\n');
    match &view.drift {
        None => text.push_str("drift: unknown (Berth has no record of this app's spec)\n"),
        Some(d) if d.is_empty() => text.push_str("no drift\n"),
        Some(_) => {
            text.push_str("Drift:\n");
            for line in &report.drift {
                text.push_str(&format!("  {line}\n"));
            }
        }
    }
    for note in &report.notes {
        text.push_str(&format!("note: {note}\n"));
    }
    output::print_text(&text)
}

fn not_found(app: &str) -> CliError {
    CliError::failed(
        "App not found",
        format!(
            "no container on the Docker host carries the label {}={app}, and Berth's state has \
             no record of an app named {app:?}.",
            labels::APP
        ),
    )
    .with_hint("`berth status` lists the apps Berth knows")
}

fn state_word(health: &InstanceHealth) -> String {
    match health {
        InstanceHealth::Running => "running".to_owned(),
        InstanceHealth::Restarting => "restarting".to_owned(),
        InstanceHealth::Stopped(status) if status.is_empty() => "stopped".to_owned(),
        InstanceHealth::Stopped(status) => status.clone(),
    }
}

// ------------------------------------------------------------ releases

#[derive(Debug, Serialize)]
struct ReleaseReport {
    release: u64,
    digest: String,
    image: String,
    trigger: String,
    outcome: ReleaseOutcome,
    /// Seconds since the Unix epoch.
    started_at: Option<f64>,
    finished_at: Option<f64>,
    duration_ms: Option<u64>,
    error: Option<String>,
    phases: Vec<PhaseReport>,
}

async fn releases(args: ReleasesArgs) -> Result<(), CliError> {
    let session = Session::open(Vec::new(), None).await?;
    let records = session
        .store()
        .list_releases(args.app.clone(), args.limit)
        .await
        .map_err(store_error)?;
    let reports: Vec<ReleaseReport> = records.iter().map(release_report).collect();
    if args.output.json {
        return output::print_json(&serde_json::json!({
            "app": args.app,
            "releases": reports,
        }));
    }
    if reports.is_empty() {
        return output::print_line(&format!("no releases of app {:?} in the journal", args.app));
    }
    let mut columns = Columns::new(&[
        "RELEASE", "DIGEST", "TRIGGER", "OUTCOME", "STARTED", "DURATION", "ERROR",
    ]);
    for (report, record) in reports.iter().zip(&records) {
        columns.row(vec![
            report.release.to_string(),
            short_digest(&report.digest).to_owned(),
            report.trigger.clone(),
            report.outcome.to_string(),
            utc_time(record.started_at),
            report
                .duration_ms
                .map(human_ms)
                .unwrap_or_else(|| "-".to_owned()),
            report
                .error
                .as_deref()
                .and_then(|e| e.lines().next())
                .unwrap_or("")
                .to_owned(),
        ]);
    }
    columns.print()
}

fn release_report(record: &ReleaseRecord) -> ReleaseReport {
    let duration_ms = record.finished_at.and_then(|f| {
        f.duration_since(record.started_at)
            .ok()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    });
    let seconds = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| (d.as_millis() as f64) / 1000.0)
    };
    ReleaseReport {
        release: record.release,
        digest: record.digest.clone(),
        image: record.image.clone(),
        trigger: record.trigger.clone(),
        outcome: record.outcome,
        started_at: seconds(record.started_at),
        finished_at: record.finished_at.and_then(seconds),
        duration_ms,
        error: record.error.clone(),
        phases: record
            .phases
            .iter()
            .map(|(phase, ms)| PhaseReport {
                phase: phase.clone(),
                ms: *ms,
            })
            .collect(),
    }
}

// ------------------------------------------------------------ rollback

async fn rollback(args: RollbackArgs) -> Result<(), CliError> {
    let mut session = Session::open(Vec::new(), None).await?;
    let app = args.app.as_str();
    session.use_recorded_ingress(app).await?;
    let (outcome, chosen) = session
        .apps
        .rollback(app, args.release)
        .await
        .map_err(|e| apps_error(app, e))?;
    DeployReport::new(
        outcome,
        chosen.image,
        ROLLBACK_TRIGGER,
        Some(chosen.release),
    )
    .print(args.output.json)
}

// ------------------------------------------------------------ destroy

#[derive(Debug, Serialize)]
struct DestroyReport {
    app: String,
    removed: Vec<String>,
    record_deleted: bool,
}

async fn destroy(args: DestroyArgs) -> Result<(), CliError> {
    let mut session = Session::open(Vec::new(), None).await?;
    let app = args.app;
    session.use_recorded_ingress(&app).await?;
    let (removed, record_deleted) = session.apps.destroy(&app).await.map_err(|e| match e {
        AppsError::Deploy(e) => {
            CliError::failed(format!("Destroying app {app:?} failed"), e.to_string())
                .with_hint("run `berth destroy` again: it removes whatever is left")
        }
        e => apps_error(&app, e),
    })?;
    let report = DestroyReport {
        app,
        removed,
        record_deleted,
    };
    if args.output.json {
        return output::print_json(&report);
    }
    if report.removed.is_empty() && !report.record_deleted {
        return output::print_line(&format!(
            "nothing to remove: app {:?} has no containers and no record",
            report.app
        ));
    }
    let mut text = String::new();
    for line in &report.removed {
        text.push_str(&format!("removed {line}\n"));
    }
    if report.record_deleted {
        text.push_str(&format!("removed the record of app {:?}\n", report.app));
    }
    output::print_text(&text)
}

// ------------------------------------------------------------ schema

fn schema() -> Result<(), CliError> {
    output::print_json(&schemars::schema_for!(AppSpec))
}

// ------------------------------------------------------------ formatting

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `sha256:` and the first 12 hex digits.
pub(super) fn short_digest(digest: &str) -> &str {
    let end = digest.find(':').map_or(12, |colon| colon + 13);
    digest.get(..end).unwrap_or(digest)
}

/// `850ms`, `1.2s`, `2m03s`.
fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
    } else {
        let seconds = ms / 1000;
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    }
}

/// `2025-03-04 05:06:07Z`.
pub(super) fn utc_time(t: SystemTime) -> String {
    let seconds = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let rest = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
name: shop
image: 127.0.0.1:5000/berth/demo:v1
secret_env:
  TOKEN: s3cret
services:
  web:
    http_port: 8080
";

    #[test]
    fn yaml_and_json_specs_parse() {
        let spec = parse_spec("app.yaml", YAML).expect("yaml");
        assert_eq!(spec.name, "shop");
        assert_eq!(spec.services["web"].http_port, 8080);
        let json = r#"{"name": "shop", "image": "x:1", "services": {"web": {}}}"#;
        let spec = parse_spec("-", json).expect("json");
        assert_eq!(spec.services["web"].http_port, 8080);
    }

    #[test]
    fn parse_errors_name_file_line_column_and_field() {
        let bad = YAML.replace("    http_port: 8080", "    http_prot: 8080");
        let error = parse_spec("app.yaml", &bad).expect_err("unknown field");
        assert!(error.starts_with("app.yaml:7:5: "), "{error}");
        assert!(error.contains("services.web"), "{error}");
        assert!(error.contains("http_prot"), "{error}");
        assert!(!error.contains(" at line"), "{error}");

        let error = parse_spec("app.json", "{\"name\": \"a\",\n \"servces\": {}}")
            .expect_err("unknown field");
        assert!(error.starts_with("app.json:2:"), "{error}");
        assert!(error.contains("servces"), "{error}");

        let error = parse_spec("app.yaml", "  \n").expect_err("empty");
        assert!(error.contains("empty"), "{error}");
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(
            short_digest(&format!("sha256:{}", "ab".repeat(32))),
            "sha256:abababababab"
        );
        assert_eq!(short_digest("short"), "short");
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(1_250), "1.2s");
        assert_eq!(human_ms(123_000), "2m03s");
        assert_eq!(utc_time(UNIX_EPOCH), "1970-01-01 00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_528_767);
        assert_eq!(utc_time(t), "2024-03-04 05:06:07Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn the_schema_names_the_spec_fields() {
        let schema = serde_json::to_value(schemars::schema_for!(AppSpec)).expect("json");
        let properties = &schema["properties"];
        assert!(properties.get("services").is_some(), "{schema}");
        assert!(properties.get("secret_env_wo").is_none(), "{schema}");
    }
}

/// Property tests: the app spec file is the user's. No text may panic the
/// reader or the validation, and every problem names its field. `make
/// fuzz` runs more cases.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn spec_like() -> impl Strategy<Value = String> {
        let scalar = prop::sample::select(vec![
            "0",
            "-1",
            "1e400",
            "\"\"",
            "null",
            "[]",
            "{}",
            "true",
            "x",
            "'a b",
            "\"/\"",
            "99999999999999999999",
        ]);
        let field = prop::sample::select(vec![
            "instances",
            "http_port",
            "memory_mb",
            "cpus",
            "command",
            "public_port",
            "domains",
            "routes",
            "health_check",
            "env",
            "drain_seconds",
        ]);
        (
            prop::sample::select(vec!["shop", "Shop!", "", "a-"]),
            prop::sample::select(vec![
                "127.0.0.1:5000/berth/demo:v1",
                "UPPER",
                "",
                "x@sha256:1",
            ]),
            prop::collection::vec((field, scalar), 0..5),
        )
            .prop_map(|(name, image, fields)| {
                let mut text = format!("name: {name:?}\nimage: {image:?}\nservices:\n  web:\n");
                for (f, v) in fields {
                    text.push_str(&format!("    {f}: {v}\n"));
                }
                text
            })
    }

    fn exercise(text: &str) -> Result<(), TestCaseError> {
        for name in ["app.yaml", "app.json"] {
            if let Ok(spec) = parse_spec(name, text) {
                for e in spec.validate() {
                    prop_assert!(!e.field.is_empty(), "{:?}: {}", text, e.message);
                }
                if spec.validate().is_empty() {
                    let _ = spec.components();
                }
            }
        }
        Ok(())
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        for text in [
            format!("name: {}", "[".repeat(100_000)),
            format!("{{\"name\": {}", "[".repeat(100_000)),
            format!("name: {}x", "- ".repeat(50_000)),
            "a: &a [*a, *a, *a]\nb: *a\n".to_owned(),
        ] {
            assert!(parse_spec("app.yaml", &text).is_err());
        }
        let deep = format!("name: shop\nenv: {}\n", "[".repeat(65));
        let refused = parse_spec("app.yaml", &deep).unwrap_err();
        assert!(refused.contains("app.yaml:2: nests"), "{refused}");
        // Brackets in quotes and comments do not count.
        let quoted = format!(
            "name: shop # {}\nimage: \"{}\"\ncommand: '{}'\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        assert!(flow_nesting_beyond(&quoted, MAX_FLOW_NESTING).is_none());
    }

    proptest! {
        #[test]
        fn prop_any_text_parses_or_is_refused(text in any::<String>()) {
            exercise(&text)?;
        }

        #[test]
        fn prop_spec_like_files_never_panic_and_name_fields(text in spec_like()) {
            exercise(&text)?;
        }
    }
}
