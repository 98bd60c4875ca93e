//! `make bench`: Berth's speed targets, each printed as a ratio against a
//! baseline measured in the same run (the machine is shared and noisy, so
//! absolute times mean little on their own). Every timed pair runs
//! alternately, after a warm-up, and the medians are compared.
//!
//! Measurements (issues 2 and 4):
//! 1. `terraform plan` of 100 `data.berth_image` reads over the same plan
//!    with 100 built-in `terraform_data` resources.
//! 2. Marginal plan cost per data source: (plan of 100 − plan of 1) / 99.
//! 3. Plugin start → handshake line, `Shutdown` → exit, and peak memory.
//! 4. Deploy of a new digest through the engine over the same done by hand
//!    with the docker CLI.
//! 5. `terraform plan` of 100 deployed `berth_app`s over 100 applied
//!    `terraform_data`, and the marginal cost per app. The same plan with
//!    `bench-floor-provider` (Berth's schema, no work) shows how much of
//!    that is terraform's own, and what Berth adds per app over it.
//! 6. Docker API calls made by a refresh of 100 apps on 2 hosts, counted
//!    by a proxy in front of each daemon.
//! 7. The ingress (issue 8): latency through it over direct to the
//!    instance, p50 and p99, at a fixed request rate; a deploy of a new
//!    digest with the switch over the docker CLI floor, drain excluded; and
//!    failed requests during a deploy under load.
//!
//! 8. Plans at distance (issue 14): the registry 50 ms and the Docker host
//!    10 ms away (each way, through relays on loopback), plans of 100 and of
//!    10 deployed apps over the floor provider's; pulls per host when 100
//!    new apps share one image; plans of 1,000 apps per app over 100, and
//!    the plugin's peak memory at 1,000.
//!
//! A MISS never fails the process: it exits 0 unless the bench itself
//! broke. Containers it starts carry `io.berth.test=1` and app names
//! starting `bench-<pid>-`; they are removed at the end, even after an
//! error.

#[path = "latency_relay.rs"]
mod latency_relay;
#[path = "load.rs"]
mod load;
#[path = "plugin_client.rs"]
mod plugin_client;
use latency_relay::{Endpoint, LatencyRelay};
use plugin_client::{client_tls, tls_relay, ClientIdentity};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use berth::devtools::fixtures::{push_demo, Pushed, PLAIN_REGISTRY};
use berth::docker::{HostConfig, HostMode, Hosts};
use berth::engine::apps::{Apps, DeployRequest, Record};
use berth::engine::spec::AppSpec;
use berth::engine::{Engine, Target};
use berth::reference::Reference;
use berth::registry::{RegistryClient, RegistryOptions};
use berth::store::{Store, StoreOptions};
use berth::tfplugin::proto::plugin::grpc_controller_client::GrpcControllerClient;
use berth::tfplugin::proto::plugin::Empty;
use berth::tfplugin::proto::tfplugin6::get_provider_schema;
use berth::tfplugin::proto::tfplugin6::provider_client::ProviderClient;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The provider addresses of Berth and of the do-nothing floor provider
/// (`bench-floor-provider`: Berth's schemas, none of its work).
const BERTH: &str = "berth/berth";
const FLOOR: &str = "berth/floor";
const COOKIE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// The repository every bench image goes to.
const BENCH_REPO: &str = "berth/bench";
/// Data sources / apps in the "many" configurations.
const MANY: usize = 100;
/// `berth_app`s in the "many" app configurations unless `BERTH_BENCH_APPS`
/// says otherwise (apps share one network per host, so 100 fit).
const DEFAULT_APPS: usize = MANY;
/// Alternating rounds per plan comparison (after one warm-up of each).
const PLAN_ROUNDS: usize = 7;
const APP_PLAN_ROUNDS: usize = 7;
/// Plugin launches for the start-up and shutdown timings.
const PLUGIN_LAUNCHES: usize = 15;
/// Alternating rounds of the deploy comparison.
const DEPLOY_ROUNDS: usize = 5;
/// Ingress latency: alternating rounds, requests per round, and their rate.
const LATENCY_ROUNDS: usize = 5;
const LATENCY_REQUESTS: usize = 400;
const LATENCY_RATE: f64 = 200.0;
/// Hook calls timed for the 202's latency, and their rate per second.
const HOOK_CALLS: usize = 1000;
const HOOK_RATE: f64 = 200.0;
const PLAN_TIMEOUT: Duration = Duration::from_secs(180);
/// Host b of the dev environment, made a Swarm manager by the swarm section.
const SWARM_HOST: &str = "unix:///run/berth-dev/docker-b.sock";
/// Timed deploys per side in the swarm section.
const SWARM_DEPLOY_ROUNDS: usize = 3;
const APPLY_TIMEOUT: Duration = Duration::from_secs(420);
/// The distance section: the registry and the Docker host this far away
/// (each way), and the smaller configuration's apps.
const REGISTRY_DELAY: Duration = Duration::from_millis(50);
const HOST_DELAY: Duration = Duration::from_millis(10);
const FEW: usize = 10;
const DISTANCE_ROUNDS: usize = 5;
/// Apps in the scale section's big configuration (BERTH_BENCH_SCALE_APPS).
const HUGE: usize = 1000;
const SCALE_ROUNDS: usize = 3;
/// Every relay the bench starts stops by itself after this long.
const RELAY_LIFETIME: Duration = Duration::from_secs(3600);

fn main() -> ExitCode {
    // The engine labels what it starts `io.berth.test=1` only when this is
    // set; set it before the runtime starts any thread.
    std::env::set_var("BERTH_TEST_LABEL", "1");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ------------------------------------------------------------------ report

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Miss,
    Info,
    Error,
}

/// One line of the table: `name: value (detail) target …  PASS|MISS`.
struct Row {
    name: String,
    value: String,
    detail: String,
    target: String,
    verdict: Verdict,
}

impl Row {
    fn new(name: &str, value: String, detail: String, target: &str, pass: Option<bool>) -> Row {
        Row {
            name: name.to_owned(),
            value,
            detail,
            target: target.to_owned(),
            verdict: match pass {
                Some(true) => Verdict::Pass,
                Some(false) => Verdict::Miss,
                None => Verdict::Info,
            },
        }
    }

    fn error(name: &str, error: &anyhow::Error) -> Row {
        Row {
            name: name.to_owned(),
            value: "ERROR".to_owned(),
            detail: format!("{error:#}"),
            target: String::new(),
            verdict: Verdict::Error,
        }
    }

    fn line(&self, width: usize) -> String {
        let verdict = match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "INFO",
            Verdict::Error => "ERROR",
        };
        let mut line = format!("{:<width$} {}", format!("{}:", self.name), self.value);
        if !self.detail.is_empty() {
            let _ = write!(line, " ({})", self.detail);
        }
        if !self.target.is_empty() {
            let _ = write!(line, " target {}", self.target);
        }
        let _ = write!(line, "  {verdict}");
        line
    }
}

/// Bench-wide notes printed under the table (fairness choices, fallbacks).
type Notes = Vec<String>;

/// Samples in milliseconds.
#[derive(Clone, Debug, Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    fn push_ms(&mut self, ms: f64) {
        self.0.push(ms);
    }

    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    fn spread(&self) -> String {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("n={} range {min:.0}–{max:.0} ms", self.0.len())
    }
}

fn ratio_row(name: &str, ours: &Samples, base: &Samples, target: f64, base_name: &str) -> Row {
    let (o, b) = (ours.median(), base.median());
    let ratio = o / b;
    Row::new(
        name,
        format!("{ratio:.2}"),
        format!(
            "ours {o:.0} ms / {base_name} {b:.0} ms; medians, ours {}, baseline {}",
            ours.spread(),
            base.spread()
        ),
        &format!("≤ {target}"),
        Some(ratio <= target),
    )
}

fn marginal_row(
    name: &str,
    n: usize,
    many: &Samples,
    one: &Samples,
    target_ms: f64,
    per: &str,
) -> Row {
    let (m, o) = (many.median(), one.median());
    let marginal = (m - o) / (n as f64 - 1.0);
    Row::new(
        name,
        format!("{marginal:.2} ms/{per}"),
        format!("(plan {n} {m:.0} ms − plan 1 {o:.0} ms) / {}", n - 1),
        &format!("≤ {target_ms} ms"),
        Some(marginal <= target_ms),
    )
}

/// Terraform's own cost for `n` apps: the do-nothing provider with
/// Berth's schema over the same baseline (no target: not Berth's work).
fn floor_row(n: usize, floor: &Samples, base: &Samples) -> Row {
    let (f, b) = (floor.median(), base.median());
    Row::new(
        &format!("  terraform's own: floor provider, {n} berth_app / {n} terraform_data"),
        format!("{:.2}", f / b),
        format!(
            "floor {f:.0} ms / baseline {b:.0} ms; floor {}",
            floor.spread()
        ),
        "",
        None,
    )
}

/// What Berth adds per app over the do-nothing provider: its registry,
/// Docker and store work, and its own CPU.
fn over_floor_row(n: usize, ours: &Samples, floor: &Samples) -> Row {
    let (o, f) = (ours.median(), floor.median());
    Row::new(
        "  Berth's own work over the floor, per app",
        format!("{:.2} ms/app", (o - f) / n as f64),
        format!("plan {n} {o:.0} ms − floor {f:.0} ms"),
        "",
        None,
    )
}

async fn run() -> anyhow::Result<bool> {
    let started = Instant::now();
    let pid = std::process::id();
    let bench = Bench::new(pid)?;
    eprintln!(
        "bench: plugin {}, terraform work under {}",
        bench.plugin.display(),
        bench.root.path().display()
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Notes = Vec::new();

    // BERTH_BENCH_ONLY=a,b runs only the sections named (plugin, data,
    // deploy, ingress, hooks, apps, jobs, distance, scale, swarm), to look
    // at one closely.
    let only: Option<Vec<String>> = std::env::var("BERTH_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    if wanted("plugin") {
        section(&mut rows, "plugin", bench.plugin_lifecycle(&mut notes)).await;
    }
    if wanted("data") {
        section(
            &mut rows,
            "plan 100 data.berth_image",
            bench.data_sources(&mut notes),
        )
        .await;
    }
    if wanted("deploy") {
        section(
            &mut rows,
            "deploy new digest",
            bench.deploy_vs_docker(&mut notes),
        )
        .await;
    }
    if wanted("ingress") {
        section(&mut rows, "ingress", bench.ingress(&mut notes)).await;
    }
    if wanted("hooks") {
        section(&mut rows, "deploy hooks", bench.hooks(&mut notes)).await;
    }
    if wanted("apps") {
        section(&mut rows, "plan N berth_app", bench.apps(&mut notes)).await;
    }
    if wanted("jobs") {
        section(&mut rows, "jobs", bench.jobs(&mut notes)).await;
    }
    if wanted("distance") {
        section(&mut rows, "plans at distance", bench.distance(&mut notes)).await;
    }
    if wanted("scale") {
        section(&mut rows, "plans of 1,000 apps", bench.scale(&mut notes)).await;
    }
    if wanted("swarm") {
        section(&mut rows, "swarm", bench.swarm(&mut notes)).await;
    }
    let cleanup = bench.cleanup().await;
    if let Err(e) = &cleanup {
        rows.push(Row::error("cleanup", e));
    }

    let width = rows.iter().map(|r| r.name.len() + 1).max().unwrap_or(10);
    println!();
    println!(
        "Berth bench ({} s, 2-core shared machine: compare ratios, not times)",
        started.elapsed().as_secs()
    );
    for row in &rows {
        println!("{}", row.line(width));
    }
    if !notes.is_empty() {
        println!();
        for note in &notes {
            println!("note: {note}");
        }
    }
    Ok(rows.iter().all(|r| r.verdict != Verdict::Error))
}

/// Runs one measurement; an error becomes an ERROR row instead of ending
/// the bench.
async fn section(
    rows: &mut Vec<Row>,
    name: &str,
    work: impl std::future::Future<Output = anyhow::Result<Vec<Row>>>,
) {
    eprintln!("bench: {name} …");
    match work.await {
        Ok(mut new) => {
            for row in &new {
                eprintln!("bench:   {}", row.line(0));
            }
            rows.append(&mut new);
        }
        Err(e) => {
            eprintln!("bench:   {name} failed: {e:#}");
            rows.push(Row::error(name, &e));
        }
    }
}

// --------------------------------------------------------------- terraform

struct Bench {
    pid: u32,
    root: tempfile::TempDir,
    plugin: PathBuf,
    cli_config: PathBuf,
    /// App name prefix of everything this run deploys.
    app_prefix: String,
    /// Containers the docker CLI side started (removed at the end).
    docker_ids: Mutex<Vec<String>>,
    /// Working directories with applied `berth_app`s, destroyed at the end.
    applied: Mutex<Vec<Workdir>>,
    /// Databases of PostgreSQL stores, kept until the cleanup destroyed
    /// their apps.
    databases: std::sync::Mutex<Vec<berth::devtools::pg::TestDatabase>>,
    /// Median plugin start → handshake (ms), to estimate its share of plans.
    handshake_ms: Mutex<Option<f64>>,
    /// The user-defined network the docker CLI side runs containers on.
    cli_network: String,
}

/// A terraform working directory with its own Berth state directory.
#[derive(Clone)]
struct Workdir {
    dir: PathBuf,
    state_dir: PathBuf,
    cli_config: PathBuf,
    /// More environment for terraform (and so the provider).
    env: Vec<(String, String)>,
}

impl Workdir {
    /// Writes `main.tf`; `berth_source` is the provider address the
    /// local name `berth` stands for (none: no provider block).
    fn write(&self, body: &str, berth_source: Option<&str>) -> anyhow::Result<()> {
        let header = match berth_source {
            Some(source) => format!(
                "terraform {{\n  required_providers {{\n    berth = {{ source = \"{source}\" }}\n  }}\n}}\n\n"
            ),
            None => String::new(),
        };
        std::fs::write(self.dir.join("main.tf"), format!("{header}{body}\n"))
            .with_context(|| format!("writing {}/main.tf", self.dir.display()))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("terraform");
        cmd.args(args)
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env_remove("TF_LOG")
            .env_remove("TF_LOG_PATH")
            .env_remove("BERTH_SECRET_KEY")
            .env("BERTH_TEST_LABEL", "1")
            .env("BERTH_STATE_DIR", &self.state_dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs terraform; fails unless its exit code is in `ok_codes`.
    /// Returns the wall time, the exit code and stdout.
    async fn run_codes(
        &self,
        args: &[&str],
        ok_codes: &[i32],
        limit: Duration,
    ) -> anyhow::Result<(Duration, i32, String)> {
        let child = self.command(args).spawn().context("starting terraform")?;
        let begun = Instant::now();
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| {
                anyhow!(
                    "terraform {args:?} in {} took over {limit:?}",
                    self.dir.display()
                )
            })??;
        let took = begun.elapsed();
        let code = out.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !ok_codes.contains(&code) {
            bail!(
                "terraform {args:?} in {} failed ({}):\n{}\n{}",
                self.dir.display(),
                out.status,
                tail(&stdout, 30),
                tail(&String::from_utf8_lossy(&out.stderr), 30)
            );
        }
        Ok((took, code, stdout))
    }

    async fn ok(&self, args: &[&str], limit: Duration) -> anyhow::Result<Duration> {
        Ok(self.run_codes(args, &[0], limit).await?.0)
    }

    async fn init(&self) -> anyhow::Result<()> {
        self.ok(&["init", "-input=false", "-no-color"], PLAN_TIMEOUT)
            .await
            .map(|_| ())
    }

    async fn plan(&self) -> anyhow::Result<Duration> {
        self.ok(&["plan", "-input=false", "-no-color"], PLAN_TIMEOUT)
            .await
    }

    /// `terraform destroy`, for a section's own clean-up.
    async fn destroy_quietly(&self) -> anyhow::Result<Duration> {
        self.ok(
            &["destroy", "-auto-approve", "-input=false", "-no-color"],
            APPLY_TIMEOUT,
        )
        .await
    }

    async fn apply(&self) -> anyhow::Result<Duration> {
        self.ok(
            &["apply", "-auto-approve", "-input=false", "-no-color"],
            APPLY_TIMEOUT,
        )
        .await
    }
}

/// "Berth … and …, floor … and …" for samples of `[ours, floor, ours,
/// floor]` (two sizes of one configuration).
fn pair_spreads(samples: &[Samples]) -> String {
    format!(
        "Berth {} and {}, floor {} and {}",
        samples[0].spread(),
        samples[2].spread(),
        samples[1].spread(),
        samples[3].spread()
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Plans every working directory in turn, alternating the order each
/// round, after one warm-up plan of each. Returns samples per directory.
async fn alternate_plans(dirs: &[&Workdir], rounds: usize) -> anyhow::Result<Vec<Samples>> {
    for dir in dirs {
        dir.plan().await?;
    }
    let mut samples = vec![Samples::default(); dirs.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..dirs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            samples[i].push(dirs[i].plan().await?);
        }
    }
    Ok(samples)
}

impl Bench {
    fn new(pid: u32) -> anyhow::Result<Bench> {
        // `cargo run --release --example bench` runs target/release/examples/bench;
        // the plugin `make bench` built is two levels up.
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let release = exe
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| anyhow!("unexpected bench location {}", exe.display()))?;
        let plugin = release.join("terraform-provider-berth");
        if !plugin.is_file() {
            bail!(
                "{} is missing: run `make bench` (it builds the release binaries first)",
                plugin.display()
            );
        }
        let floor = release.join("examples/bench-floor-provider");
        if !floor.is_file() {
            bail!(
                "{} is missing: run `make bench` (it builds it first)",
                floor.display()
            );
        }
        let root = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
        for (binary, name) in [(&plugin, "berth"), (&floor, "floor")] {
            let mirror = root.path().join(format!(
                "mirror/registry.terraform.io/berth/{name}/{VERSION}/linux_amd64"
            ));
            std::fs::create_dir_all(&mirror)?;
            std::fs::copy(
                binary,
                mirror.join(format!("terraform-provider-{name}_v{VERSION}")),
            )
            .with_context(|| format!("copying {} into the mirror", binary.display()))?;
        }
        std::fs::create_dir_all(root.path().join("cache"))?;
        let cli_config = root.path().join("terraformrc");
        std::fs::write(
            &cli_config,
            format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"{BERTH}\", \"{FLOOR}\"]\n  }}\n  direct {{\n    exclude = [\"{BERTH}\", \"{FLOOR}\"]\n  }}\n}}\nplugin_cache_dir = \"{}\"\n",
                root.path().join("mirror").display(),
                root.path().join("cache").display()
            ),
        )?;
        let reachable = std::net::TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], 5000)),
            Duration::from_secs(2),
        )
        .is_ok();
        if !reachable {
            bail!("the registry on {PLAIN_REGISTRY} is not running: run `bash tests/devenv.sh up` (make bench does)");
        }
        Ok(Bench {
            pid,
            root,
            plugin,
            cli_config,
            app_prefix: format!("bench-{pid}-"),
            docker_ids: Mutex::new(Vec::new()),
            applied: Mutex::new(Vec::new()),
            databases: std::sync::Mutex::new(Vec::new()),
            handshake_ms: Mutex::new(None),
            cli_network: format!("berth-bench-{pid}-cli"),
        })
    }

    /// "; plugin start-up ≈ launches × handshake = X ms of the Y ms gap".
    fn startup_share(&self, launches: usize, gap_ms: f64) -> String {
        match self.handshake_ms.lock().ok().and_then(|h| *h) {
            Some(hs) => format!(
                "; plugin start-up ≈ {launches} × {hs:.0} ms = {:.0} ms of the {gap_ms:.0} ms gap to the baseline",
                launches as f64 * hs
            ),
            None => String::new(),
        }
    }

    fn workdir(&self, name: &str) -> anyhow::Result<Workdir> {
        let dir = self.root.path().join(name);
        let state_dir = self.root.path().join(format!("{name}-state"));
        std::fs::create_dir_all(&dir)?;
        Ok(Workdir {
            dir,
            state_dir,
            cli_config: self.cli_config.clone(),
            env: Vec::new(),
        })
    }

    /// `berth/bench:t0` … `t{n-1}`, all the demo v1 image (the same
    /// blobs; after the first run every push is one HEAD request).
    async fn push_tags(&self, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            push_demo(PLAIN_REGISTRY, BENCH_REPO, &format!("t{i}"), "v1", None)
                .await
                .with_context(|| format!("pushing {PLAIN_REGISTRY}/{BENCH_REPO}:t{i}"))?;
        }
        Ok(())
    }

    // ------------------------------------------------- 1, 2: data sources

    async fn data_sources(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        self.push_tags(MANY).await?;
        let data = |n: usize| {
            format!(
                "data \"berth_image\" \"img\" {{\n  count = {n}\n  image = \"{PLAIN_REGISTRY}/{BENCH_REPO}:t${{count.index}}\"\n}}"
            )
        };
        let many = self.workdir("data-100")?;
        many.write(&data(MANY), Some(BERTH))?;
        let one = self.workdir("data-1")?;
        one.write(&data(1), Some(BERTH))?;
        let base = self.workdir("terraform-data-100")?;
        base.write(
            &format!("resource \"terraform_data\" \"d\" {{\n  count = {MANY}\n  input = \"t${{count.index}}\"\n}}"),
            None,
        )?;
        for dir in [&many, &one, &base] {
            dir.init().await?;
        }
        let samples = alternate_plans(&[&many, &base, &one], PLAN_ROUNDS).await?;
        let (ours, baseline, single) = (&samples[0], &samples[1], &samples[2]);

        // Untimed: how many plugin processes terraform starts per plan and
        // how much memory they reach.
        let (sampled, _) = sample_plugins(&many).await?;
        notes.push(format!(
            "data sources: the baseline plans {MANY} new terraform_data (no state; terraform used ≥ {} ms CPU in a sampled run); {}{}",
            sample_plugins(&base).await?.0.terraform_cpu_ms,
            sampled.describe(),
            self.startup_share(sampled.launches, ours.median() - baseline.median())
        ));
        let mut rows = vec![
            ratio_row(
                "plan 100 data.berth_image / 100 terraform_data",
                ours,
                baseline,
                3.0,
                "baseline",
            ),
            marginal_row(
                "marginal cost per data source",
                MANY,
                ours,
                single,
                3.0,
                "data source",
            ),
            Row::new(
                "plan 1 data.berth_image / 100 terraform_data",
                format!("{:.2}", single.median() / baseline.median()),
                format!(
                    "ours {:.0} ms / baseline {:.0} ms",
                    single.median(),
                    baseline.median()
                ),
                "",
                None,
            ),
        ];
        rows.push(sampled.memory_row("plugin peak memory during plan 100 data sources"));
        Ok(rows)
    }

    // ------------------------------------------------- 3: plugin lifecycle

    async fn plugin_lifecycle(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let identity = ClientIdentity::generate()?;
        let mut handshake = Samples::default();
        let mut shutdown = Samples::default();
        let mut spawn_floor = Samples::default();
        let mut hwm_kb = Vec::new();
        // One warm-up launch (page cache), then the timed ones; a process
        // spawn of /bin/true alternates with them as the floor.
        launch_plugin(&self.plugin, &identity).await?;
        for _ in 0..PLUGIN_LAUNCHES {
            let run = launch_plugin(&self.plugin, &identity).await?;
            handshake.push(run.handshake);
            shutdown.push(run.shutdown);
            hwm_kb.push(run.vm_hwm_kb);
            let begun = Instant::now();
            let status = Command::new("/bin/true").status().await?;
            if status.success() {
                spawn_floor.push(begun.elapsed());
            }
        }
        hwm_kb.sort_unstable();
        let peak = hwm_kb.last().copied().unwrap_or(0);
        notes.push(format!(
            "plugin: timings from spawn to the handshake line on stdout, and from sending GRPCController/Shutdown (over mTLS, through a loopback relay) to the exit seen by wait(); floor = spawn→exit of /bin/true, median {:.1} ms",
            spawn_floor.median()
        ));
        let hs = handshake.median();
        let sd = shutdown.median();
        if let Ok(mut stored) = self.handshake_ms.lock() {
            *stored = Some(hs);
        }
        Ok(vec![
            Row::new(
                "plugin start → handshake line",
                format!("{hs:.1} ms"),
                format!(
                    "median, {}; /bin/true spawn floor {:.1} ms",
                    handshake.spread_fine(),
                    spawn_floor.median()
                ),
                "< 10 ms",
                Some(hs < 10.0),
            ),
            Row::new(
                "plugin Shutdown → exit",
                format!("{sd:.1} ms"),
                format!("median, {}", shutdown.spread_fine()),
                "< 10 ms",
                Some(sd < 10.0),
            ),
            Row::new(
                "plugin peak memory (VmHWM before Shutdown)",
                format!("{:.1} MiB", peak as f64 / 1024.0),
                "after GetProviderSchema, max over launches".to_owned(),
                "",
                None,
            ),
        ])
    }

    // ------------------------------------------------- 4: deploy vs docker

    /// v1: the demo image (pulled on the host); v2: a demo image unique to
    /// this run (its own small files layer on the shared busybox base), so
    /// removing it by digest really removes it and each side pulls it for
    /// real. Also the docker CLI side's network (a user-defined bridge like
    /// the engine's per-app network; the default bridge need not exist on
    /// a devenv daemon).
    async fn push_v1_v2(
        &self,
        v1_tag: &str,
        v2_prefix: &str,
        v2_version: &str,
    ) -> anyhow::Result<(Pushed, Pushed, String)> {
        let v1 = push_demo(PLAIN_REGISTRY, BENCH_REPO, v1_tag, "v1", None).await?;
        let v2_tag = format!("{v2_prefix}-{}", self.pid);
        let v2 = push_demo(
            PLAIN_REGISTRY,
            BENCH_REPO,
            &v2_tag,
            &format!("{v2_version} {}", self.pid),
            None,
        )
        .await?;
        docker(&[
            "pull",
            "-q",
            &format!("{PLAIN_REGISTRY}/{BENCH_REPO}@{}", v1.digest),
        ])
        .await?;
        if docker(&["network", "inspect", &self.cli_network])
            .await
            .is_err()
        {
            docker(&[
                "network",
                "create",
                "--label",
                "io.berth.test=1",
                &self.cli_network,
            ])
            .await?;
        }
        Ok((v1, v2, v2_tag))
    }

    async fn deploy_vs_docker(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let (v1, v2, v2_tag) = self
            .push_v1_v2("deploy-v1", "deploy-v2", "v2 bench")
            .await?;
        let repo = format!("{PLAIN_REGISTRY}/{BENCH_REPO}");
        let v1_pinned = format!("{repo}@{}", v1.digest);
        let v2_pinned = format!("{repo}@{}", v2.digest);

        let engine = local_engine(&self.root.path().join("engine-state")).await?;

        let mut ours = Samples::default();
        let mut floor = Samples::default();
        let mut phases: BTreeMap<String, Samples> = BTreeMap::new();
        for round in 0..=DEPLOY_ROUNDS {
            let warmup = round == 0;
            // Alternate which side goes first.
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                if side == 0 {
                    let app = format!("{}d{round}", self.app_prefix);
                    let (took, outcome_phases) = self
                        .engine_deploy_once(
                            &engine,
                            &app,
                            &format!("{repo}:{v2_tag}"),
                            (&v1, &v1_pinned),
                            (&v2, &v2_pinned),
                            None,
                        )
                        .await?;
                    if !warmup {
                        ours.push(took);
                        for (phase, ms) in outcome_phases {
                            phases
                                .entry(phase)
                                .or_default()
                                .push(Duration::from_millis(ms));
                        }
                    }
                } else {
                    let took = self.docker_deploy_once(&v1_pinned, &v2_pinned).await?;
                    if !warmup {
                        floor.push(took);
                    }
                }
            }
        }
        let _ = docker(&["image", "rm", &v2_pinned]).await;
        notes.push(format!(
            "deploy: the v2 image (unique to this run, {}) is removed from the host by digest before each side's timed run, so both pull it (only its small layer, config and manifest: the busybox base layer is shared and stays); v1 stays pulled. The docker CLI floor: pull by digest, run -d --network (a user-defined bridge) -p 127.0.0.1::8080 --label io.berth.test=1, docker port, poll GET / every 10 ms until 200, rm -f the v1 container. Berth uses the default health check (probe every 0.25 s) and stops v1 with SIGTERM",
            short(&v2.digest)
        ));
        let breakdown: Vec<String> = phases
            .iter()
            .map(|(phase, s)| format!("{phase} {:.0}", s.median()))
            .collect();
        Ok(vec![
            ratio_row(
                "deploy new digest / docker CLI by hand",
                &ours,
                &floor,
                1.3,
                "docker CLI",
            ),
            Row::new(
                "deploy phases (engine, median ms)",
                breakdown.join(", "),
                String::new(),
                "",
                None,
            ),
        ])
    }

    /// Deploys v1 (untimed), removes v2 from the host, deploys v2 (timed),
    /// destroys the app (untimed).
    async fn engine_deploy_once(
        &self,
        engine: &Engine,
        app: &str,
        image: &str,
        v1: (&Pushed, &str),
        v2: (&Pushed, &str),
        public_port: Option<u16>,
    ) -> anyhow::Result<(Duration, Vec<(String, u64)>)> {
        let mut web = serde_json::json!({"http_port": 8080});
        if let Some(port) = public_port {
            web["public_port"] = serde_json::json!(port);
        }
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "name": app,
            "image": image,
            "services": {"web": web},
        }))?;
        let target = |pushed: &Pushed, pinned: &str| Target {
            spec: spec.clone(),
            digest: pushed.digest.clone(),
            pinned: pinned.to_owned(),
            login: None,
            trigger: "bench".to_owned(),
        };
        engine
            .deploy(&target(v1.0, v1.1))
            .await
            .with_context(|| format!("deploying v1 of {app}"))?;
        remove_image(v2.1).await?;
        let begun = Instant::now();
        let result = engine.deploy(&target(v2.0, v2.1)).await;
        let took = begun.elapsed();
        let outcome = result.with_context(|| format!("deploying v2 of {app}"));
        let destroyed = engine.destroy(app).await;
        let outcome = outcome?;
        destroyed.with_context(|| format!("destroying {app}"))?;
        if !outcome.new_release {
            bail!(
                "deploying v2 of {app} made no new release: {:?}",
                outcome.steps
            );
        }
        Ok((took, outcome.phases))
    }

    /// The same by hand: v1 running (untimed), v2 not on the host; timed:
    /// pull v2, run it, wait for HTTP 200, remove v1.
    async fn docker_deploy_once(&self, v1: &str, v2: &str) -> anyhow::Result<Duration> {
        let old = self.docker_run(v1).await?;
        wait_http_200(&docker_endpoint(&old).await?, Duration::from_secs(30)).await?;
        remove_image(v2).await?;

        let begun = Instant::now();
        docker(&["pull", "-q", v2]).await?;
        let new = self.docker_run(v2).await?;
        let endpoint = docker_endpoint(&new).await?;
        wait_http_200(&endpoint, Duration::from_secs(30)).await?;
        docker(&["rm", "-f", &old]).await?;
        let took = begun.elapsed();

        docker(&["rm", "-f", &new]).await?;
        Ok(took)
    }

    async fn docker_run(&self, image: &str) -> anyhow::Result<String> {
        let id = docker(&[
            "run",
            "-d",
            "--label",
            "io.berth.test=1",
            "--label",
            &format!("io.berth.bench={}", self.pid),
            "--network",
            &self.cli_network,
            "-p",
            "127.0.0.1::8080",
            image,
        ])
        .await?;
        if let Ok(mut ids) = self.docker_ids.lock() {
            ids.push(id.clone());
        }
        Ok(id)
    }

    // ------------------------------------------------------- 7: ingress

    async fn ingress(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let v1 = push_demo(PLAIN_REGISTRY, BENCH_REPO, "deploy-v1", "v1", None).await?;
        let v2_tag = format!("ingress-v2-{}", self.pid);
        let v2 = push_demo(
            PLAIN_REGISTRY,
            BENCH_REPO,
            &v2_tag,
            &format!("v2 ingress bench {}", self.pid),
            None,
        )
        .await?;
        let repo = format!("{PLAIN_REGISTRY}/{BENCH_REPO}");
        let v1_pinned = format!("{repo}@{}", v1.digest);
        let v2_pinned = format!("{repo}@{}", v2.digest);
        docker(&["pull", "-q", &v1_pinned]).await?;
        let _ = docker(&[
            "network",
            "create",
            "--label",
            "io.berth.test=1",
            &self.cli_network,
        ])
        .await;
        let store = Store::open(StoreOptions::in_dir(
            self.root.path().join("ingress-state"),
            None,
        ))
        .await?;
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let registry = berth::registry::RegistryClient::new(Default::default());
        let settings = berth::ingress::IngressSettings {
            image: format!("{PLAIN_REGISTRY}/berth/ingress:local"),
            tls_image: format!("{PLAIN_REGISTRY}/berth/ingress:local"),
            ..Default::default()
        };
        let engine = Engine::new(Hosts::local(docker_host.as_deref())?, store)
            .with_test_label(true)
            .with_ingress(settings, Arc::new(registry));
        let mut rows = Vec::new();

        // Latency: one instance, behind a public port; the same requests
        // (a new connection each: the demo's busybox httpd keeps none
        // alive) alternately straight to the instance and through the
        // ingress, at a fixed rate.
        let app = format!("{}lat", self.app_prefix);
        let port = free_local_port()?;
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "name": app, "image": format!("{repo}:deploy-v1"),
            "services": {"web": {"http_port": 8080, "public_port": port}},
        }))?;
        let outcome = engine
            .deploy(&Target {
                spec,
                digest: v1.digest.clone(),
                pinned: v1_pinned.clone(),
                login: None,
                trigger: "bench".into(),
            })
            .await
            .context("deploying the latency app")?;
        let direct = outcome.endpoints["web"][0].clone();
        let through = format!("127.0.0.1:{port}");
        let (mut p50, mut p99) = (
            (Samples::default(), Samples::default()),
            (Samples::default(), Samples::default()),
        );
        for round in 0..=LATENCY_ROUNDS {
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                let addr = if side == 0 { &direct } else { &through };
                let mut lat = latencies(addr, LATENCY_REQUESTS, LATENCY_RATE).await?;
                if round == 0 {
                    continue;
                }
                lat.sort_by(f64::total_cmp);
                let (a, b) = if side == 0 {
                    (&mut p50.0, &mut p99.0)
                } else {
                    (&mut p50.1, &mut p99.1)
                };
                a.push_ms(lat[lat.len() / 2]);
                b.push_ms(lat[lat.len() * 99 / 100]);
            }
        }
        engine.destroy(&app).await?;
        let overhead = p50.1.median() - p50.0.median();
        rows.push(Row::new(
            "ingress: p50 latency over direct (ms)",
            format!(
                "{overhead:.2} ms (ingress {:.2} ms, direct {:.2} ms)",
                p50.1.median(),
                p50.0.median()
            ),
            String::new(),
            "< 0.5 ms",
            Some(overhead < 0.5),
        ));
        rows.push(Row::new(
            "ingress: p99 latency, ingress / direct",
            format!(
                "{:.2} ({:.2} ms / {:.2} ms)",
                p99.1.median() / p99.0.median().max(0.001),
                p99.1.median(),
                p99.0.median()
            ),
            String::new(),
            "",
            None,
        ));
        notes.push(format!(
            "ingress latency: {LATENCY_ROUNDS} alternating rounds of {LATENCY_REQUESTS} GET / at {LATENCY_RATE}/s, each on a new connection, straight to the instance's published port and through the ingress' public port; medians of each round's p50 and p99"
        ));

        // Deploy with the switch over the docker CLI floor, drain (and the
        // monitor window it overlaps) excluded.
        let mut ours = Samples::default();
        let mut floor = Samples::default();
        let mut breakdown: BTreeMap<String, Samples> = BTreeMap::new();
        for round in 0..=DEPLOY_ROUNDS {
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                if side == 0 {
                    let app = format!("{}i{round}", self.app_prefix);
                    let (took, phases) = self
                        .engine_deploy_once(
                            &engine,
                            &app,
                            &format!("{repo}:{v2_tag}"),
                            (&v1, &v1_pinned),
                            (&v2, &v2_pinned),
                            Some(free_local_port()?),
                        )
                        .await?;
                    let drain: u64 = phases
                        .iter()
                        .filter(|(p, _)| p == "drain")
                        .map(|(_, ms)| *ms)
                        .sum();
                    if round > 0 {
                        ours.push(took.saturating_sub(Duration::from_millis(drain)));
                        for (phase, ms) in phases {
                            breakdown
                                .entry(phase)
                                .or_default()
                                .push(Duration::from_millis(ms));
                        }
                    }
                } else {
                    let took = self.docker_deploy_once(&v1_pinned, &v2_pinned).await?;
                    if round > 0 {
                        floor.push(took);
                    }
                }
            }
        }
        rows.push(ratio_row(
            "deploy with ingress switch (drain excluded) / docker CLI",
            &ours,
            &floor,
            1.3,
            "docker CLI",
        ));
        rows.push(Row::new(
            "  its phases (engine, median ms)",
            breakdown
                .iter()
                .map(|(phase, s)| format!("{phase} {:.0}", s.median()))
                .collect::<Vec<_>>()
                .join(", "),
            String::new(),
            "",
            None,
        ));

        // Failed requests during a deploy under load.
        let app = format!("{}load", self.app_prefix);
        let port = free_local_port()?;
        let spec = |digest: &str, pinned: &str| -> anyhow::Result<Target> {
            Ok(Target {
                spec: serde_json::from_value(serde_json::json!({
                    "name": app, "image": format!("{repo}:{v2_tag}"),
                    "services": {"web": {"http_port": 8080, "public_port": port, "instances": 2}},
                }))?,
                digest: digest.to_owned(),
                pinned: pinned.to_owned(),
                login: None,
                trigger: "bench".into(),
            })
        };
        engine.deploy(&spec(&v1.digest, &v1_pinned)?).await?;
        let addr = format!("127.0.0.1:{port}");
        let running = load::Load::start(&addr, &addr, 4, 50.0);
        let deployed = engine.deploy(&spec(&v2.digest, &v2_pinned)?).await;
        let report = running.stop();
        engine.destroy(&app).await?;
        deployed.context("deploying v2 under load")?;
        rows.push(Row::new(
            "failed requests during a deploy under load",
            format!(
                "{} of {} ({:.0} requests/s, half kept alive)",
                report.failed.len(),
                report.total(),
                report.rate()
            ),
            String::new(),
            "0",
            Some(report.failed.is_empty()),
        ));
        let _ = docker(&["image", "rm", &v2_pinned]).await;
        Ok(rows)
    }

    // --------------------------------------------------- 8: deploy hooks

    /// A real `berth serve` process on the bench's store: hook call → the
    /// new digest serving, over the docker CLI floor; then the latency of
    /// the 202 at HOOK_RATE calls per second.
    async fn hooks(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let berth_bin = self.plugin.with_file_name("berth");
        if !berth_bin.is_file() {
            bail!(
                "{} is missing: run `make bench` (it builds the release binaries first)",
                berth_bin.display()
            );
        }
        let (v1, v2, v2_tag) = self
            .push_v1_v2("hook-v1", "hook-v2", "v2 hook bench")
            .await?;
        let repo = format!("{PLAIN_REGISTRY}/{BENCH_REPO}");
        let v1_pinned = format!("{repo}@{}", v1.digest);
        let v2_pinned = format!("{repo}@{}", v2.digest);

        let state_dir = self.root.path().join("hooks-state");
        let apps = local_apps(&state_dir).await?;
        let app = format!("{}hook", self.app_prefix);
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "name": app,
            "image": format!("{repo}:hook-v1"),
            "services": {"web": {"http_port": 8080}},
        }))?;
        let deploy_v1 = || async {
            apps.deploy(DeployRequest {
                spec: spec.clone(),
                image: Reference::parse(&spec.image)?,
                digest: v1.digest.clone(),
                trigger: "bench".to_owned(),
                record: Record::Replace,
            })
            .await
            .with_context(|| format!("deploying v1 of {app}"))
        };
        deploy_v1().await?;
        let (hook, key) = apps.create_hook(&app).await?;

        let log = self.root.path().join("berth-serve.log");
        let port = free_local_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut server = start_serve(&berth_bin, &state_dir, &listen, &log).await?;
        let path = format!("/deploy/{}?key={}", hook.id, key.expose());

        let measured = self
            .hook_rounds(&listen, &path, &v2, &v2_pinned, &v1_pinned, &deploy_v1)
            .await;
        let latency = match &measured {
            Ok(_) => {
                self.hook_latency(&listen, &format!("{path}&imgURL={repo}:{v2_tag}"))
                    .await
            }
            Err(_) => Ok(Vec::new()),
        };

        // Stop the server (SIGTERM, bounded), then the app.
        stop_serve(&mut server).await;
        let destroyed = apps.destroy(&app).await;
        let (ours, floor) = measured?;
        let latencies = latency?;
        destroyed.with_context(|| format!("destroying {app}"))?;
        let _ = docker(&["image", "rm", &v2_pinned]).await;

        notes.push(format!(
            "hooks: a `berth serve` process (release build) on the bench's own store; timed from the hook call (imgURL = the v2 digest, removed from the host first, as in the deploy rows) until its status URL, polled every 10 ms, says succeeded; the floor is the docker CLI deploy of the deploy rows. Latency: {HOOK_CALLS} calls at {HOOK_RATE:.0}/s, each on a new connection, scheduled open-loop, imgURL naming the tag of the running digest (one registry HEAD each; most calls join the running no-op deploy)"
        ));
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            sorted
                .get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let p99 = pct(0.99);
        Ok(vec![
            ratio_row(
                "hook call → new digest serving / docker CLI by hand",
                &ours,
                &floor,
                1.3,
                "docker CLI",
            ),
            Row::new(
                &format!("hook 202 latency p99 at {HOOK_RATE:.0} calls/s"),
                format!("{p99:.1} ms"),
                format!(
                    "p50 {:.1} ms, max {:.1} ms, {} calls, all 202",
                    pct(0.5),
                    sorted.last().copied().unwrap_or(f64::NAN),
                    sorted.len()
                ),
                "< 50 ms",
                Some(p99 < 50.0),
            ),
        ])
    }

    /// Scheduling jitter of `berth serve` (scheduled time → container
    /// started, from the daemon's own start events) at [`JOB_COUNT`] jobs
    /// due at once, over `docker run -d` of the same image at once (launch →
    /// started); and the scheduler's idle CPU and memory with
    /// [`IDLE_JOBS`] jobs scheduled.
    async fn jobs(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let berth_bin = self.plugin.with_file_name("berth");
        if !berth_bin.is_file() {
            bail!("{} is missing: run `make bench`", berth_bin.display());
        }
        let (v1, _, _) = self
            .push_v1_v2("jobs-v1", "jobs-v2", "v2 jobs bench")
            .await?;
        let repo = format!("{PLAIN_REGISTRY}/{BENCH_REPO}");
        let pinned = format!("{repo}@{}", v1.digest);
        let state_dir = self.root.path().join("jobs-state");
        let apps = local_apps(&state_dir).await?;
        let deploy = |app: String, jobs: serde_json::Value| {
            let apps = &apps;
            let digest = v1.digest.clone();
            let image = format!("{repo}:jobs-v1");
            async move {
                let spec: AppSpec = serde_json::from_value(serde_json::json!({
                    "name": app,
                    "image": image,
                    "workers": {"idle": {"command": "/bin/busybox sleep 100000"}},
                    "jobs": jobs,
                }))?;
                apps.deploy(DeployRequest {
                    image: Reference::parse(&spec.image)?,
                    spec,
                    digest,
                    trigger: "bench".to_owned(),
                    record: Record::Replace,
                })
                .await
                .with_context(|| format!("deploying {app}"))
            }
        };
        // Idle: many jobs due far away (03:00 UTC daily).
        let idle_app = format!("{}jobsidle", self.app_prefix);
        let daily: serde_json::Map<String, serde_json::Value> = (0..IDLE_JOBS)
            .map(|i| {
                (
                    format!("daily-{i}"),
                    serde_json::json!({"command": "/bin/busybox true", "schedule": "0 3 * * *"}),
                )
            })
            .collect();
        deploy(idle_app.clone(), serde_json::Value::Object(daily)).await?;
        let log = self.root.path().join("jobs-serve.log");
        let listen = format!("127.0.0.1:{}", free_local_port()?);
        let mut server = start_serve(&berth_bin, &state_dir, &listen, &log).await?;
        let measured = self
            .jobs_measure(&server, &deploy, &pinned, apps.store())
            .await;
        stop_serve(&mut server).await;
        let jit_app = format!("{}jobsjit", self.app_prefix);
        for app in [&idle_app, &jit_app] {
            let _ = apps.destroy(app).await;
        }
        let ((cpu, rss_mb), (ours, floor)) = measured?;
        notes.push(format!(
            "jobs: {JOB_COUNT} jobs of one app due at the same second (`*/{JOB_EVERY} * * * * *`), {JOB_ROUNDS} rounds; ours = scheduled time → the daemon's `start` event of the run's container; floor = {JOB_COUNT} `docker run -d` launched at once → their `start` events. Idle: a release `berth serve` with {IDLE_JOBS} daily jobs, CPU over {IDLE_SECONDS} s from /proc"
        ));
        Ok(vec![
            ratio_row(
                &format!("job scheduled → started, {JOB_COUNT} at once / docker run"),
                &ours,
                &floor,
                1.2,
                "docker run",
            ),
            Row::new(
                &format!("berth serve idle with {IDLE_JOBS} jobs: CPU"),
                format!("{cpu:.2} %"),
                format!("of one core over {IDLE_SECONDS} s"),
                "< 1 %",
                Some(cpu < 1.0),
            ),
            Row::new(
                &format!("berth serve idle with {IDLE_JOBS} jobs: memory"),
                format!("{rss_mb:.1} MB"),
                "peak resident (VmHWM)".to_owned(),
                "< 30 MB",
                Some(rss_mb < 30.0),
            ),
        ])
    }

    async fn jobs_measure<F, Fut>(
        &self,
        server: &tokio::process::Child,
        deploy: &F,
        pinned: &str,
        store: &Store,
    ) -> anyhow::Result<((f64, f64), (Samples, Samples))>
    where
        F: Fn(String, serde_json::Value) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<berth::engine::Outcome>>,
    {
        let pid = server.id().context("berth serve's pid")?;
        let ticks = |pid: u32| -> anyhow::Result<u64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            Ok(f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0))
        };
        // Let it read the store once, then measure the idle scheduler.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t0 = ticks(pid)?;
        tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
        let cpu = (ticks(pid)? - t0) as f64 / 100.0 / IDLE_SECONDS as f64 * 100.0;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);

        // Jitter: JOB_COUNT jobs due together.
        let app = format!("{}jobsjit", self.app_prefix);
        let every: serde_json::Map<String, serde_json::Value> = (0..JOB_COUNT)
            .map(|i| {
                (
                    format!("tick-{i}"),
                    serde_json::json!({
                        "command": "/bin/busybox true",
                        "schedule": format!("*/{JOB_EVERY} * * * * *"),
                        "concurrency": "allow",
                    }),
                )
            })
            .collect();
        let since = unix_now();
        deploy(app.clone(), serde_json::Value::Object(every)).await?;
        let begun = Instant::now();
        loop {
            let runs = store.list_job_runs(app.clone(), None, 1000).await?;
            let done = runs
                .iter()
                .filter(|r| r.state == berth::store::JobRunState::Succeeded)
                .count();
            if done >= JOB_COUNT * (JOB_ROUNDS + 1) {
                break;
            }
            if begun.elapsed() > Duration::from_secs(120) {
                bail!("only {done} job runs succeeded within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let runs = store.list_job_runs(app.clone(), None, 1000).await?;
        let started =
            start_events(since, &format!("label=io.berth.app={app}"), "io.berth.run").await?;
        let mut ours = Samples::default();
        // The first round may have caught the app half-recorded: skip it.
        let first = runs.iter().filter_map(|r| r.scheduled_at).min();
        for r in &runs {
            let (Some(at), Some(t)) = (r.scheduled_at, started.get(&r.id.to_string())) else {
                continue;
            };
            if Some(at) == first {
                continue;
            }
            let at = at.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
            ours.push_ms((t - at) * 1000.0);
        }
        let mut floor = Samples::default();
        for round in 0..JOB_ROUNDS {
            let label = format!("berth.bench.floor={}-{round}", self.pid);
            let since = unix_now();
            let launched = unix_now_f64();
            let runs = (0..JOB_COUNT).map(|i| {
                let label = label.clone();
                async move {
                    docker(&[
                        "run",
                        "-d",
                        "--label",
                        "io.berth.test=1",
                        "--label",
                        &label,
                        "--label",
                        &format!("berth.bench.i={i}"),
                        pinned,
                        "/bin/busybox",
                        "true",
                    ])
                    .await
                }
            });
            let ids: Vec<String> = futures::future::join_all(runs)
                .await
                .into_iter()
                .collect::<anyhow::Result<_>>()?;
            let started = start_events(since, &format!("label={label}"), "berth.bench.i").await?;
            for t in started.values() {
                floor.push_ms((t - launched) * 1000.0);
            }
            let mut rm = vec!["rm", "-f"];
            rm.extend(ids.iter().map(|s| s.trim()));
            let _ = docker(&rm).await;
        }
        Ok(((cpu, rss_kb / 1024.0), (ours, floor)))
    }

    async fn hook_rounds<F, Fut>(
        &self,
        listen: &str,
        path: &str,
        v2: &Pushed,
        v2_pinned: &str,
        v1_pinned: &str,
        deploy_v1: &F,
    ) -> anyhow::Result<(Samples, Samples)>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<berth::engine::Outcome>>,
    {
        let (mut ours, mut floor) = (Samples::default(), Samples::default());
        let call = format!("{path}&imgURL={}", encode_query(v2_pinned));
        for round in 0..=DEPLOY_ROUNDS {
            let warmup = round == 0;
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                if side == 0 {
                    remove_image(v2_pinned).await?;
                    let begun = Instant::now();
                    let (status, body) = http_get(listen, &call).await?;
                    if status != 202 {
                        bail!("the hook call answered {status}: {body}");
                    }
                    let answer: serde_json::Value = serde_json::from_str(&body)?;
                    if answer["deploy"]["digest"] != v2.digest.as_str() {
                        bail!("the hook deploys another digest: {body}");
                    }
                    let status_url = answer["deploy"]["status_url"]
                        .as_str()
                        .context("no status_url in the 202")?
                        .to_owned();
                    let last = loop {
                        let (code, body) = http_get(listen, &status_url).await?;
                        let value: serde_json::Value = serde_json::from_str(&body)
                            .with_context(|| format!("status answered {code}: {body}"))?;
                        let word = value["deploy"]["status"].as_str().unwrap_or("").to_owned();
                        if !matches!(word.as_str(), "queued" | "running") {
                            break value;
                        }
                        if begun.elapsed() > APPLY_TIMEOUT {
                            bail!("the hook deploy did not finish within {APPLY_TIMEOUT:?}");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    };
                    let took = begun.elapsed();
                    if last["deploy"]["status"] != "succeeded"
                        || last["deploy"]["new_release"] != true
                    {
                        bail!("the hook deploy did not make a new release: {last}");
                    }
                    if !warmup {
                        ours.push(took);
                    }
                    // Back to v1 (untimed), so v2 is in no container
                    // when the floor removes it.
                    deploy_v1().await?;
                } else {
                    let took = self.docker_deploy_once(v1_pinned, v2_pinned).await?;
                    if !warmup {
                        floor.push(took);
                    }
                }
            }
        }
        Ok((ours, floor))
    }

    /// HOOK_CALLS calls of `path`, started at HOOK_RATE per second whatever
    /// the earlier ones do; each latency until its 202, in ms.
    async fn hook_latency(&self, listen: &str, path: &str) -> anyhow::Result<Vec<f64>> {
        // Warm: the tag resolved once, the no-op deploy done once.
        let (status, body) = http_get(listen, path).await?;
        if status != 202 {
            bail!("the warm-up hook call answered {status}: {body}");
        }
        let pause = Duration::from_secs_f64(1.0 / HOOK_RATE);
        let start = tokio::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..HOOK_CALLS {
            tokio::time::sleep_until(start + pause * i as u32).await;
            let (listen, path) = (listen.to_owned(), path.to_owned());
            calls.spawn(async move {
                let begun = Instant::now();
                let answer = http_get(&listen, &path).await;
                (begun.elapsed().as_secs_f64() * 1000.0, answer)
            });
        }
        let mut out = Vec::with_capacity(HOOK_CALLS);
        while let Some(done) = calls.join_next().await {
            let (ms, answer) = done?;
            let (status, body) = answer?;
            if status != 202 {
                bail!("a hook call answered {status}: {body}");
            }
            out.push(ms);
        }
        Ok(out)
    }

    // ------------------------------------------------- 5, 6: berth_app

    async fn apps(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let n_apps = std::env::var("BERTH_BENCH_APPS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_APPS)
            .clamp(2, MANY);
        if n_apps < MANY {
            notes.push(format!(
                "apps: measured with {n_apps} berth_app, not {MANY}, because BERTH_BENCH_APPS says so"
            ));
        }
        self.push_tags(MANY).await?;
        let apps = |n: usize, prefix: &str, provider: &str| {
            format!(
                "{provider}\nresource \"berth_app\" \"app\" {{\n  count = {n}\n  name  = \"{prefix}${{count.index}}\"\n  image = \"{PLAIN_REGISTRY}/{BENCH_REPO}:t${{count.index}}\"\n  services = {{\n    web = {{\n      http_port = 8080\n      instances = 1\n    }}\n  }}\n}}"
            )
        };
        let many_prefix = format!("{}a", self.app_prefix);
        let one_prefix = format!("{}o", self.app_prefix);
        let many = self.workdir("apps-many")?;
        many.write(&apps(n_apps, &many_prefix, ""), Some(BERTH))?;
        let one = self.workdir("apps-1")?;
        one.write(&apps(1, &one_prefix, ""), Some(BERTH))?;
        let base = self.workdir("terraform-data-applied")?;
        base.write(
            &format!("resource \"terraform_data\" \"d\" {{\n  count = {n_apps}\n  input = \"t${{count.index}}\"\n}}"),
            None,
        )?;
        // The same apps on the do-nothing provider: terraform's own cost.
        let floor = self.workdir("apps-floor")?;
        floor.write(&apps(n_apps, &many_prefix, ""), Some(FLOOR))?;
        for dir in [&many, &one, &base, &floor] {
            dir.init().await?;
        }
        floor.apply().await?;
        if let Ok(mut applied) = self.applied.lock() {
            applied.push(many.clone());
            applied.push(one.clone());
        }
        base.apply().await?;
        one.apply().await?;
        eprintln!("bench:   applying {n_apps} berth_app (one instance each) …");
        let took = many.apply().await?;
        notes.push(format!(
            "apps: `terraform apply` of {n_apps} berth_app took {:.1} s (untimed setup); the baseline plans {n_apps} applied terraform_data (refresh of state)",
            took.as_secs_f64()
        ));
        let (_, code, out) = many
            .run_codes(
                &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
                &[0, 2],
                PLAN_TIMEOUT,
            )
            .await?;
        if code == 2 {
            notes.push(format!(
                "apps: the plan after apply is NOT empty (a perpetual diff): {}",
                tail(&out, 5).replace('\n', " | ")
            ));
        }

        let samples = alternate_plans(&[&many, &base, &one, &floor], APP_PLAN_ROUNDS).await?;
        let (ours, baseline, single, floor) = (&samples[0], &samples[1], &samples[2], &samples[3]);
        let (sampled, _) = sample_plugins(&many).await?;
        notes.push(format!(
            "apps: baseline terraform used ≥ {} ms CPU in a sampled run; {}{}",
            sample_plugins(&base).await?.0.terraform_cpu_ms,
            sampled.describe(),
            self.startup_share(sampled.launches, ours.median() - baseline.median())
        ));
        let mut rows = vec![
            ratio_row(
                &format!("plan {n_apps} berth_app / {n_apps} terraform_data"),
                ours,
                baseline,
                3.5,
                "baseline",
            ),
            marginal_row("marginal cost per app", n_apps, ours, single, 5.0, "app"),
            floor_row(n_apps, floor, baseline),
            over_floor_row(n_apps, ours, floor),
            sampled.memory_row(&format!("plugin peak memory during plan {n_apps} apps")),
        ];

        match self.apps_on_postgres(n_apps, &many, &apps, notes).await {
            Ok(mut more) => rows.append(&mut more),
            Err(e) => rows.push(Row::error("plan on PostgreSQL", &e)),
        }

        let counted = self
            .count_refresh_calls(
                [(&many, n_apps, &many_prefix), (&one, 1, &one_prefix)],
                &apps,
                notes,
            )
            .await;
        match counted {
            Ok(mut more) => rows.append(&mut more),
            Err(e) => rows.push(Row::error("docker API calls per refresh", &e)),
        }
        Ok(rows)
    }

    /// The same `n_apps` deployed with the store on the dev PostgreSQL (a
    /// database of their own, over TLS): their plan against the SQLite
    /// plan of `sqlite` (alternated), and the store's transactions per app
    /// per plan (the server's count) at `n_apps` and at one app.
    async fn apps_on_postgres(
        &self,
        n_apps: usize,
        sqlite: &Workdir,
        apps: &dyn Fn(usize, &str, &str) -> String,
        notes: &mut Notes,
    ) -> anyhow::Result<Vec<Row>> {
        let db = berth::devtools::pg::TestDatabase::create();
        let key = berth::store::SecretKey::generate(berth::store::KeySource::Environment)?
            .expose_base64();
        let provider = format!("provider \"berth\" {{\n  store = \"{}\"\n}}\n", db.url());
        let pg_prefix = format!("{}p", self.app_prefix);
        let one_prefix = format!("{}q", self.app_prefix);
        let mut many = self.workdir("apps-many-pg")?;
        let mut one = self.workdir("apps-1-pg")?;
        for dir in [&mut many, &mut one] {
            dir.env.push(("BERTH_SECRET_KEY".into(), key.clone()));
        }
        many.write(&apps(n_apps, &pg_prefix, &provider), Some(BERTH))?;
        one.write(&apps(1, &one_prefix, &provider), Some(BERTH))?;
        many.init().await?;
        one.init().await?;
        if let Ok(mut applied) = self.applied.lock() {
            applied.push(many.clone());
            applied.push(one.clone());
        }
        one.apply().await?;
        eprintln!("bench:   applying {n_apps} berth_app on PostgreSQL …");
        many.apply().await?;
        let samples = alternate_plans(&[&many, sqlite], APP_PLAN_ROUNDS).await?;
        // Transactions committed on the store's database by one plan.
        let commits_per_plan = |dir: &Workdir| {
            let dir = dir.clone();
            let db = &db;
            async move {
                let before = db.commits();
                dir.run_codes(
                    &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
                    &[0, 2],
                    PLAN_TIMEOUT,
                )
                .await?;
                // The statistics collector reports within a moment.
                tokio::time::sleep(Duration::from_millis(800)).await;
                anyhow::Ok(db.commits().saturating_sub(before))
            }
        };
        let at_many = commits_per_plan(&many).await?;
        let at_one = commits_per_plan(&one).await?;
        let per_app_many = at_many as f64 / n_apps as f64;
        let per_app_one = at_one as f64;
        notes.push(format!(
            "store: {n_apps} apps on PostgreSQL (database {}, TLS verify-full); a plan committed {at_many} transactions on it ({per_app_many:.2} per app), a plan of 1 app {at_one}",
            db.name
        ));
        if let Ok(mut databases) = self.databases.lock() {
            databases.push(db);
        }
        Ok(vec![
            ratio_row(
                &format!("plan {n_apps} berth_app, PostgreSQL store / SQLite store"),
                &samples[0],
                &samples[1],
                1.1,
                "SQLite",
            ),
            Row::new(
                "store transactions per app per plan",
                format!("{per_app_many:.2} at {n_apps} apps, {per_app_one:.2} at 1"),
                "PostgreSQL's xact_commit for the store's database".into(),
                "constant",
                Some(per_app_many <= per_app_one * 1.1 + 0.5),
            ),
        ])
    }

    /// Measurement 6: `plan -refresh-only` with the provider's hosts behind
    /// counting proxies, for each `(working directory, apps, name prefix)`.
    async fn count_refresh_calls(
        &self,
        cases: [(&Workdir, usize, &str); 2],
        apps: &dyn Fn(usize, &str, &str) -> String,
        notes: &mut Notes,
    ) -> anyhow::Result<Vec<Row>> {
        let default_socket = default_docker_socket();
        let (host_b, b_note) = match second_daemon().await {
            Some(socket) => (socket.clone(), format!("host b is the second dockerd at {}", socket.display())),
            None => (
                default_socket.clone(),
                "the second dockerd (host b) is not up: the proxy runs twice in front of the same daemon, as two hosts".to_owned(),
            ),
        };
        notes.push(format!("docker API calls: {b_note}"));
        let counting = |name: &str, upstream: PathBuf| {
            LatencyRelay::unix(
                self.root.path().join(name),
                Endpoint::Unix(upstream),
                Duration::ZERO,
                RELAY_LIFETIME,
            )
        };
        let proxy_a = counting("proxy-a.sock", default_socket).await?;
        let proxy_b = counting("proxy-b.sock", host_b).await?;
        // "local" keeps the name the apps were deployed to; "second" sorts
        // after it, so placement (slot 0 → first host) is unchanged.
        let provider = format!(
            "provider \"berth\" {{\n  hosts = {{\n    local  = {{ address = \"{}\" }}\n    second = {{ address = \"{}\" }}\n  }}\n}}\n",
            proxy_a.docker_host(),
            proxy_b.docker_host()
        );
        let mut rows = Vec::new();
        for (dir, n, prefix) in cases {
            dir.write(&apps(n, prefix, &provider), Some(BERTH))?;
            proxy_a.reset();
            proxy_b.reset();
            let result = dir
                .run_codes(
                    &["plan", "-refresh-only", "-input=false", "-no-color"],
                    &[0],
                    PLAN_TIMEOUT,
                )
                .await;
            let (a, b) = (proxy_a.counts(), proxy_b.counts());
            dir.write(&apps(n, prefix, ""), Some(BERTH))?;
            if let Err(e) = result {
                notes.push(format!(
                    "docker API calls: the refresh of {n} app(s) failed: {e:#}"
                ));
            }
            let (ta, tb): (u64, u64) = (a.values().sum(), b.values().sum());
            let per_host = (ta + tb) as f64 / 2.0;
            let per_app = (ta + tb) as f64 / n as f64;
            let mut paths: BTreeMap<String, u64> = BTreeMap::new();
            for (k, v) in a.iter().chain(b.iter()) {
                *paths.entry(k.clone()).or_default() += v;
            }
            let breakdown: Vec<String> = paths.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
            rows.push(Row::new(
                &format!("docker API calls, refresh of {n} app(s) on 2 hosts"),
                format!("{per_host:.1} calls/host, {per_app:.2} calls/app"),
                format!(
                    "host local {ta}, host second {tb}; {}",
                    breakdown.join(", ")
                ),
                if n > 1 {
                    "a small constant per host (≤ 10 calls/host)"
                } else {
                    ""
                },
                if n > 1 { Some(ta.max(tb) <= 10) } else { None },
            ));
        }
        Ok(rows)
    }

    // ------------------------------------------------------- distance

    /// Plans at internet distance (issue 14): the registry behind a relay
    /// adding [`REGISTRY_DELAY`] each way, the Docker host behind one adding
    /// [`HOST_DELAY`]; plans of 10 and of 100 deployed apps, each over the
    /// floor provider's plan of the same configuration. The 100 apps name
    /// 100 tags of one image, so the apply that deploys them (through a
    /// counting relay in front of the daemon) shows the pulls per host.
    async fn distance(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        self.push_tags(MANY).await?;
        let registry = LatencyRelay::tcp(
            Endpoint::Tcp(PLAIN_REGISTRY.to_owned()),
            REGISTRY_DELAY,
            RELAY_LIFETIME,
        )
        .await?;
        let far_host = LatencyRelay::unix(
            self.root.path().join("docker-far.sock"),
            Endpoint::Unix(default_docker_socket()),
            HOST_DELAY,
            RELAY_LIFETIME,
        )
        .await?;
        let counted_host = LatencyRelay::unix(
            self.root.path().join("docker-counted.sock"),
            Endpoint::Unix(default_docker_socket()),
            Duration::ZERO,
            RELAY_LIFETIME,
        )
        .await?;
        let rtt_ms = 2.0 * REGISTRY_DELAY.as_secs_f64() * 1000.0;
        // `host: None` is the daemon itself and the registry itself, for
        // the clean-up after the relays are gone (a destroy plans too).
        let apps = |n: usize, prefix: &str, host: Option<&str>| {
            let provider = host.map_or(String::new(), |h| {
                format!("provider \"berth\" {{\n  hosts = {{\n    local = {{ address = \"{h}\" }}\n  }}\n}}\n")
            });
            let registry = if host.is_some() {
                registry.addr()
            } else {
                PLAIN_REGISTRY
            };
            format!(
                "{provider}resource \"berth_app\" \"app\" {{\n  count = {n}\n  name  = \"{prefix}${{count.index}}\"\n  image = \"{registry}/{BENCH_REPO}:t${{count.index}}\"\n  services = {{\n    web = {{\n      http_port = 8080\n      instances = 1\n    }}\n  }}\n}}"
            )
        };
        let far = far_host.docker_host();
        let counted = counted_host.docker_host();
        let mut dirs = Vec::new();
        for (n, tag) in [(MANY, "m"), (FEW, "f")] {
            let prefix = format!("{}d{tag}", self.app_prefix);
            let (ours, floor) = self
                .berth_and_floor(
                    &format!("distance-{n}"),
                    &apps(n, &prefix, Some(&counted)),
                    &apps(n, &prefix, Some(&far)),
                )
                .await?;
            counted_host.reset();
            eprintln!("bench:   applying {n} berth_app through the relays …");
            let took = ours.apply().await;
            let pulls = counted_host.count("POST /images/create");
            // Plans go to the far host; the clean-up (after the relays are
            // gone) to the daemon itself.
            ours.write(&apps(n, &prefix, Some(&far)), Some(BERTH))?;
            let took = took?;
            notes.push(format!(
                "distance: `terraform apply` of {n} new berth_app (one image under {n} tags) took {:.1} s; the daemon was asked to pull {pulls} time(s)",
                took.as_secs_f64()
            ));
            dirs.push((n, ours, floor, pulls, prefix));
        }
        let result = self
            .distance_plans(&dirs, [&registry, &far_host], rtt_ms, notes)
            .await;
        for (n, ours, _, _, prefix) in &dirs {
            ours.write(&apps(*n, prefix, None), Some(BERTH))?;
        }
        let mut rows = result?;
        let (_, _, _, pulls, _) = &dirs[0];
        rows.push(Row::new(
            &format!("image pulls per host, apply of {MANY} new apps sharing one image"),
            format!("{pulls}"),
            "POST /images/create counted by a relay in front of the daemon".into(),
            "1",
            Some(*pulls == 1),
        ));
        Ok(rows)
    }

    async fn distance_plans(
        &self,
        dirs: &[(usize, Workdir, Workdir, u64, String)],
        relays: [&LatencyRelay; 2],
        rtt_ms: f64,
        notes: &mut Notes,
    ) -> anyhow::Result<Vec<Row>> {
        let registry = relays[0];
        let [(many, ours_many, floor_many, ..), (few, ours_few, floor_few, ..)] = dirs else {
            bail!("the distance section needs two configurations");
        };
        let samples = alternate_plans(
            &[ours_many, floor_many, ours_few, floor_few],
            DISTANCE_ROUNDS,
        )
        .await?;
        // BERTH_BENCH_TRACE=DIR: the provider's debug log of one plan of
        // each size at distance, to see where a plan waits.
        if let Some(trace) = std::env::var_os("BERTH_BENCH_TRACE") {
            for (n, dir) in [(many, ours_many), (few, ours_few)] {
                let mut traced = dir.clone();
                let log = PathBuf::from(&trace).join(format!("plan-{n}.log"));
                traced.env.push(("TF_LOG_PROVIDER".into(), "DEBUG".into()));
                traced
                    .env
                    .push(("TF_LOG_PATH".into(), log.display().to_string()));
                traced.plan().await?;
                notes.push(format!(
                    "distance: a plan of {n} apps traced in {}",
                    log.display()
                ));
            }
        }
        let over = |ours: &Samples, floor: &Samples| ours.median() - floor.median();
        let (at_many, at_few) = (
            over(&samples[0], &samples[1]),
            over(&samples[2], &samples[3]),
        );
        // What one plan of the many asks the registry.
        registry.reset();
        ours_many.plan().await?;
        let heads = registry.count("HEAD /v2/");
        let gets = registry.count("GET /v2/");
        notes.push(format!(
            "distance: registry relay {} ms each way, host relay {} ms each way; one plan of {many} apps asked the registry {heads} HEAD and {gets} GET over {} connection(s)",
            REGISTRY_DELAY.as_millis(),
            HOST_DELAY.as_millis(),
            registry.connections()
        ));
        // The same plans with both relays at no delay: what of the time
        // over the floor is distance, and what is Berth's own work.
        for relay in relays {
            relay.set_delay(Duration::ZERO);
        }
        let near = alternate_plans(
            &[ours_many, floor_many, ours_few, floor_few],
            DISTANCE_ROUNDS,
        )
        .await;
        relays[0].set_delay(REGISTRY_DELAY);
        relays[1].set_delay(HOST_DELAY);
        let near = near?;
        let (near_many, near_few) = (over(&near[0], &near[1]), over(&near[2], &near[3]));
        let (wait_many, wait_few) = (at_many - near_many, at_few - near_few);
        Ok(vec![
            Row::new(
                &format!("plan at distance, over the floor: {many} apps / {few} apps"),
                format!("{:.2}", at_many / at_few),
                format!(
                    "{at_many:.0} ms / {at_few:.0} ms over the floor; {}",
                    pair_spreads(&samples)
                ),
                "≤ 1.3",
                Some(at_many / at_few <= 1.3),
            ),
            Row::new(
                &format!("  of which distance: {many} apps / {few} apps"),
                format!("{:.2}", wait_many / wait_few),
                format!(
                    "{wait_many:.0} ms / {wait_few:.0} ms: over the floor at distance minus over the floor on loopback ({near_many:.0} ms at {many}, {near_few:.0} ms at {few})"
                ),
                "",
                None,
            ),
            Row::new(
                &format!("plan of {many} apps at distance, in registry round trips"),
                format!("{:.1}", at_many / rtt_ms),
                format!("{at_many:.0} ms over the floor / {rtt_ms:.0} ms round trip"),
                "≤ 4",
                Some(at_many / rtt_ms <= 4.0),
            ),
        ])
    }

    /// Working directories `name` (Berth, `ours`) and `name-floor` (the
    /// floor provider, `floor`, applied), both initialized; Berth's is
    /// destroyed at the clean-up and left for the caller to apply.
    async fn berth_and_floor(
        &self,
        name: &str,
        ours: &str,
        floor: &str,
    ) -> anyhow::Result<(Workdir, Workdir)> {
        let (ours_dir, floor_dir) = (self.workdir(name)?, self.workdir(&format!("{name}-floor"))?);
        ours_dir.write(ours, Some(BERTH))?;
        floor_dir.write(floor, Some(FLOOR))?;
        ours_dir.init().await?;
        floor_dir.init().await?;
        floor_dir.apply().await?;
        if let Ok(mut applied) = self.applied.lock() {
            applied.push(ours_dir.clone());
        }
        Ok((ours_dir, floor_dir))
    }

    // ---------------------------------------------------------- scale

    /// 1,000 apps in one configuration (issue 14), without delay: Berth's
    /// plan over the floor per app, at 1,000 over at 100, and the plugin's
    /// peak memory. The apps run no instance (1,000 containers do not fit
    /// this machine); their refresh, drift and image resolution are the
    /// same work as with instances.
    async fn scale(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let huge = std::env::var("BERTH_BENCH_SCALE_APPS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(HUGE)
            .max(MANY + 1);
        self.push_tags(huge).await?;
        let apps = |n: usize, prefix: &str| {
            format!(
                "resource \"berth_app\" \"app\" {{\n  count = {n}\n  name  = \"{prefix}${{count.index}}\"\n  image = \"{PLAIN_REGISTRY}/{BENCH_REPO}:t${{count.index}}\"\n  services = {{\n    web = {{\n      http_port = 8080\n      instances = 0\n    }}\n  }}\n}}"
            )
        };
        let mut dirs = Vec::new();
        for (n, tag) in [(huge, "h"), (MANY, "c")] {
            let prefix = format!("{}s{tag}", self.app_prefix);
            let config = apps(n, &prefix);
            let (ours, floor) = self
                .berth_and_floor(&format!("scale-{n}"), &config, &config)
                .await?;
            eprintln!("bench:   applying {n} berth_app without instances …");
            let took = ours.apply().await?;
            notes.push(format!(
                "scale: `terraform apply` of {n} berth_app (no instances) took {:.1} s",
                took.as_secs_f64()
            ));
            dirs.push((ours, floor));
        }
        let samples = alternate_plans(
            &[&dirs[0].0, &dirs[0].1, &dirs[1].0, &dirs[1].1],
            SCALE_ROUNDS,
        )
        .await?;
        let per_app =
            |ours: &Samples, floor: &Samples, n: usize| (ours.median() - floor.median()) / n as f64;
        let at_huge = per_app(&samples[0], &samples[1], huge);
        let at_many = per_app(&samples[2], &samples[3], MANY);
        let (sampled, _) = sample_plugins(&dirs[0].0).await?;
        notes.push(format!("scale: {huge} apps: {}", sampled.describe()));
        Ok(vec![
            Row::new(
                &format!("plan per app over the floor: {huge} apps / {MANY} apps"),
                format!("{:.2}", at_huge / at_many),
                format!(
                    "{at_huge:.2} ms/app / {at_many:.2} ms/app; {}",
                    pair_spreads(&samples)
                ),
                "≤ 1.1",
                Some(at_huge / at_many <= 1.1),
            ),
            Row::new(
                &format!("plugin peak memory during plan of {huge} apps"),
                format!("{:.1} MiB", sampled.peak_kb as f64 / 1024.0),
                format!(
                    "VmHWM sampled every 10 ms, {} plugin process(es)",
                    sampled.launches
                ),
                "< 40 MiB",
                Some(sampled.peak_kb < 40 * 1024),
            ),
        ])
    }

    // ---------------------------------------------------------- swarm

    /// The Swarm backend on host b made a single-node manager for the
    /// section (left as found): a deploy of a new digest through Berth over
    /// `docker service update --image` of a service with the same update
    /// settings, and a plan of N Swarm apps over N container apps on the
    /// same daemon.
    async fn swarm(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let state = docker(&[
            "-H",
            SWARM_HOST,
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}}",
        ])
        .await?;
        let created = match state.as_str() {
            "inactive" => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                docker(&[
                    "-H",
                    SWARM_HOST,
                    "swarm",
                    "init",
                    "--advertise-addr",
                    "127.0.0.1",
                    "--listen-addr",
                    &format!("127.0.0.1:{port}"),
                ])
                .await?;
                true
            }
            "active" => false,
            other => bail!("host b's swarm is {other:?}"),
        };
        let result = self.swarm_measure(notes).await;
        // The section's services, by name prefix; then the swarm as found.
        let prefix = format!("{}s", self.app_prefix);
        if let Ok(names) = docker(&[
            "-H",
            SWARM_HOST,
            "service",
            "ls",
            "--filter",
            &format!("name={prefix}"),
            "--format",
            "{{.Name}}",
        ])
        .await
        {
            let names: Vec<&str> = names.split_whitespace().collect();
            if !names.is_empty() {
                let mut args = vec!["-H", SWARM_HOST, "service", "rm"];
                args.extend(names);
                let _ = docker(&args).await;
            }
        }
        if created {
            let _ = docker(&["-H", SWARM_HOST, "swarm", "leave", "--force"]).await;
        }
        result
    }

    async fn swarm_measure(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let (v1, v2, v2_tag) = self
            .push_v1_v2("deploy-v1", "swarm-v2", "v2 swarm bench")
            .await?;
        let repo = format!("{PLAIN_REGISTRY}/{BENCH_REPO}");
        let v1_pinned = format!("{repo}@{}", v1.digest);
        let v2_pinned = format!("{repo}@{}", v2.digest);
        let mut host = HostConfig::new("swarm", SWARM_HOST);
        host.mode = HostMode::Swarm;
        let store = Store::open(StoreOptions::in_dir(
            self.root.path().join("swarm-state"),
            None,
        ))
        .await?;
        let engine = Engine::new(Hosts::from_config(&[host])?, store).with_test_label(true);
        let spec = |app: &str| -> anyhow::Result<AppSpec> {
            Ok(serde_json::from_value(serde_json::json!({
                "name": app,
                "image": format!("{repo}:{v2_tag}"),
                "services": {"web": {"http_port": 8080, "health_check": {"path": "/"}}},
            }))?)
        };
        let target = |spec: &AppSpec, pushed: &Pushed, pinned: &str| Target {
            spec: spec.clone(),
            digest: pushed.digest.clone(),
            pinned: pinned.to_owned(),
            login: None,
            trigger: "bench".to_owned(),
        };
        let remove_v2 = || async {
            let _ = docker(&["-H", SWARM_HOST, "image", "rm", &v2_pinned]).await;
            Ok::<_, anyhow::Error>(())
        };
        let mut ours = Samples::default();
        let mut floor = Samples::default();
        for round in 0..=SWARM_DEPLOY_ROUNDS {
            let warmup = round == 0;
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                let app = format!("{}s{round}x{side}", self.app_prefix);
                let spec = spec(&app)?;
                // Untimed: v1 through Berth (the same service spec both sides).
                engine
                    .deploy(&target(&spec, &v1, &v1_pinned))
                    .await
                    .with_context(|| format!("deploying v1 of {app}"))?;
                remove_v2().await?;
                let begun = Instant::now();
                if side == 0 {
                    engine
                        .deploy(&target(&spec, &v2, &v2_pinned))
                        .await
                        .with_context(|| format!("deploying v2 of {app}"))?;
                } else {
                    docker(&[
                        "-H",
                        SWARM_HOST,
                        "service",
                        "update",
                        "--quiet",
                        "--image",
                        &v2_pinned,
                        &format!("{app}-web"),
                    ])
                    .await?;
                }
                let took = begun.elapsed();
                engine
                    .destroy(&app)
                    .await
                    .with_context(|| format!("destroying {app}"))?;
                if !warmup {
                    if side == 0 {
                        ours.push(took)
                    } else {
                        floor.push(took)
                    }
                }
            }
        }
        let policy = berth::engine::swarm::update_policy(Some(&Default::default()));
        notes.push(format!("swarm: host b as a single-node Swarm manager; one replica with the default health check (Berth's probe as HEALTHCHECK every {} s, monitor {:.2} s derived from it), created by Berth on both sides; the v2 image removed from the daemon before each timed run. Berth: Engine::deploy of v2 (lease, journal, update, supervision until every task runs the new spec and Swarm calls the update completed). By hand: `docker service update --image V2` of the same service, which waits for convergence as the CLI judges it", berth::engine::swarm::MIN_SWARM_PROBE_INTERVAL.as_secs(), policy.monitor.as_secs_f64()));
        let mut rows = vec![ratio_row(
            "swarm deploy new digest / docker service update --image",
            &ours,
            &floor,
            1.1,
            "docker service update",
        )];

        match self.swarm_plans(notes).await {
            Ok(mut more) => rows.append(&mut more),
            Err(e) => rows.push(Row::error("plan of Swarm apps / container apps", &e)),
        }
        Ok(rows)
    }

    /// Plan of N Swarm apps over N container apps, both on host b.
    async fn swarm_plans(&self, notes: &mut Notes) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        let n = std::env::var("BERTH_BENCH_SWARM_APPS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(MANY)
            .clamp(2, MANY);
        self.push_tags(n).await?;
        let apps = |prefix: &str, provider: &str| {
            format!(
                "{provider}\nresource \"berth_app\" \"app\" {{\n  count = {n}\n  name  = \"{prefix}${{count.index}}\"\n  image = \"{PLAIN_REGISTRY}/{BENCH_REPO}:t${{count.index}}\"\n  services = {{\n    web = {{\n      http_port = 8080\n      instances = 1\n    }}\n  }}\n}}"
            )
        };
        let swarm_dir = self.workdir("swarm-apps")?;
        swarm_dir.write(
            &apps(
                &format!("{}sw", self.app_prefix),
                &format!("provider \"berth\" {{\n  hosts = {{\n    cluster = {{\n      address = \"{SWARM_HOST}\"\n      mode = \"swarm\"\n    }}\n  }}\n}}"),
            ),
            Some(BERTH),
        )?;
        let plain_dir = self.workdir("swarm-host-b-apps")?;
        plain_dir.write(
            &apps(
                &format!("{}sc", self.app_prefix),
                &format!("provider \"berth\" {{\n  hosts = {{\n    b = {{\n      address = \"{SWARM_HOST}\"\n      publish_address = \"127.0.0.2\"\n    }}\n  }}\n}}"),
            ),
            Some(BERTH),
        )?;
        for dir in [&swarm_dir, &plain_dir] {
            dir.init().await?;
        }
        let mut applied_ok = Vec::new();
        for dir in [&swarm_dir, &plain_dir] {
            let took = dir.apply().await;
            let took = match took {
                Ok(t) => t,
                Err(e) => {
                    for d in &applied_ok {
                        let _ = Workdir::destroy_quietly(d).await;
                    }
                    let _ = Workdir::destroy_quietly(dir).await;
                    return Err(e);
                }
            };
            notes.push(format!(
                "swarm: `terraform apply` of {n} apps in {} took {:.1} s (untimed setup)",
                dir.dir.file_name().and_then(|f| f.to_str()).unwrap_or("?"),
                took.as_secs_f64()
            ));
            applied_ok.push(dir.clone());
        }
        let samples = alternate_plans(&[&swarm_dir, &plain_dir], APP_PLAN_ROUNDS).await;
        for d in &applied_ok {
            if let Err(e) = Workdir::destroy_quietly(d).await {
                notes.push(format!(
                    "swarm: destroying {} failed: {e:#}",
                    d.dir.display()
                ));
            }
        }
        let samples = samples?;
        rows.push(ratio_row(
            &format!("plan {n} Swarm apps / {n} container apps (host b)"),
            &samples[0],
            &samples[1],
            1.2,
            "container apps",
        ));
        Ok(rows)
    }

    /// Destroys what the bench deployed: `terraform destroy` in every
    /// working directory with apps, then a label guard for anything left.
    async fn cleanup(&self) -> anyhow::Result<()> {
        let applied: Vec<Workdir> = self.applied.lock().map(|v| v.clone()).unwrap_or_default();
        let mut errors = Vec::new();
        for dir in applied {
            if let Err(e) = dir
                .ok(
                    &["destroy", "-auto-approve", "-input=false", "-no-color"],
                    APPLY_TIMEOUT,
                )
                .await
            {
                errors.push(format!("{e:#}"));
            }
        }
        let ids: Vec<String> = self
            .docker_ids
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        // Containers: ours by app-name prefix or by the bench's pid label,
        // always carrying io.berth.test=1.
        let listing = docker(&[
            "ps",
            "-a",
            "--filter",
            "label=io.berth.test=1",
            "--format",
            "{{.ID}} {{.Label \"io.berth.app\"}} {{.Label \"io.berth.bench\"}}",
        ])
        .await?;
        let pid = self.pid.to_string();
        let mut leftovers: BTreeSet<String> = BTreeSet::new();
        for line in listing.lines() {
            let mut parts = line.split(' ');
            let (Some(id), app, bench) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let ours = app.is_some_and(|a| a.starts_with(&self.app_prefix))
                || bench == Some(pid.as_str())
                || ids.iter().any(|i| i.starts_with(id));
            if ours {
                leftovers.insert(id.to_owned());
            }
        }
        if !leftovers.is_empty() {
            eprintln!("bench: removing {} leftover container(s)", leftovers.len());
            let mut args = vec!["rm", "-f"];
            args.extend(leftovers.iter().map(String::as_str));
            if let Err(e) = docker(&args).await {
                errors.push(format!("{e:#}"));
            }
        }
        let networks = docker(&["network", "ls", "--format", "{{.Name}}"]).await?;
        let ours: Vec<&str> = networks
            .lines()
            .filter(|n| {
                n.starts_with(&format!("berth-{}", self.app_prefix)) || *n == self.cli_network
            })
            .collect();
        if !ours.is_empty() {
            let mut args = vec!["network", "rm"];
            args.extend(ours);
            if let Err(e) = docker(&args).await {
                errors.push(format!("{e:#}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(errors.join("; ")))
        }
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

// ---------------------------------------------------- plugin processes

/// What a sampler saw of the plugin processes terraform started.
struct PluginSample {
    launches: usize,
    peak_kb: u64,
    /// CPU (user + system) the plugin processes used, as last sampled.
    cpu_ms: u64,
    /// CPU terraform itself used, as last sampled.
    terraform_cpu_ms: u64,
    wall: Duration,
}

impl PluginSample {
    fn describe(&self) -> String {
        format!(
            "terraform started the plugin {} time(s) during one sampled plan ({:.0} ms wall), CPU ≥ {} ms in the plugin and ≥ {} ms in terraform itself (10 ms ticks, last sample)",
            self.launches,
            self.wall.as_secs_f64() * 1000.0,
            self.cpu_ms,
            self.terraform_cpu_ms
        )
    }

    fn memory_row(&self, name: &str) -> Row {
        Row::new(
            name,
            format!("{:.1} MiB", self.peak_kb as f64 / 1024.0),
            format!(
                "VmHWM sampled every 10 ms, {} plugin process(es)",
                self.launches
            ),
            "",
            None,
        )
    }
}

/// Runs one (untimed) plan while a thread samples `/proc` for plugin
/// processes whose parent is this terraform.
async fn sample_plugins(dir: &Workdir) -> anyhow::Result<(PluginSample, String)> {
    let child = dir
        .command(&["plan", "-input=false", "-no-color"])
        .spawn()
        .context("starting terraform")?;
    let tf_pid = child.id().unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_sampler = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut seen: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut terraform_ticks = 0;
        while !stop_sampler.load(Ordering::Relaxed) {
            terraform_ticks = cpu_ticks(tf_pid).unwrap_or(0).max(terraform_ticks);
            for (pid, hwm, ticks) in plugin_children(tf_pid) {
                let e = seen.entry(pid).or_default();
                *e = (e.0.max(hwm), e.1.max(ticks));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (seen, terraform_ticks)
    });
    let begun = Instant::now();
    let out = tokio::time::timeout(PLAN_TIMEOUT, child.wait_with_output()).await;
    let wall = begun.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (seen, terraform_ticks) = sampler
        .join()
        .map_err(|_| anyhow!("the /proc sampler thread panicked"))?;
    let out = out.map_err(|_| anyhow!("sampled plan took over {PLAN_TIMEOUT:?}"))??;
    if !out.status.success() {
        bail!(
            "sampled plan failed: {}",
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    Ok((
        PluginSample {
            launches: seen.len(),
            peak_kb: seen.values().map(|v| v.0).max().unwrap_or(0),
            cpu_ms: seen.values().map(|v| v.1).sum::<u64>() * 10,
            terraform_cpu_ms: terraform_ticks * 10,
            wall,
        },
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// `(pid, VmHWM kB, CPU ticks)` of `terraform-provider-berth` processes
/// whose parent is `parent`.
fn plugin_children(parent: u32) -> Vec<(u32, u64, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        // The kernel truncates the name to 15 bytes.
        let named = status.lines().any(|l| {
            l.strip_prefix("Name:")
                .is_some_and(|n| n.trim() == "terraform-provi")
        });
        let child_of = status.lines().any(|l| {
            l.strip_prefix("PPid:")
                .is_some_and(|p| p.trim() == parent.to_string())
        });
        if named && child_of {
            out.push((
                pid,
                status_kb(&status, "VmHWM:").unwrap_or(0),
                cpu_ticks(pid).unwrap_or(0),
            ));
        }
    }
    out
}

/// utime + stime of a process, in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

// ------------------------------------------------------ go-plugin client

/// One plugin launch's timings and memory.
struct LaunchRun {
    handshake: Duration,
    shutdown: Duration,
    vm_hwm_kb: u64,
}

/// Starts the plugin as terraform does, reads the handshake line, asks for
/// the provider schema over mTLS, reads VmHWM, then sends `Shutdown` and
/// waits for the exit.
async fn launch_plugin(plugin: &Path, identity: &ClientIdentity) -> anyhow::Result<LaunchRun> {
    let mut command = Command::new(plugin);
    for name in [
        "TF_LOG",
        "TF_LOG_PROVIDER",
        "PLUGIN_MIN_PORT",
        "PLUGIN_MAX_PORT",
    ] {
        command.env_remove(name);
    }
    command
        .env("TF_PLUGIN_MAGIC_COOKIE", COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "6")
        .env("PLUGIN_CLIENT_CERT", &identity.pem)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let begun = Instant::now();
    let mut child = command.spawn().context("starting the plugin")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
        .await
        .map_err(|_| anyhow!("no handshake line within 10 s"))??;
    let handshake = begun.elapsed();

    let parts: Vec<&str> = line.trim_end().split('|').collect();
    if parts.len() != 6 || parts[2] != "tcp" {
        bail!("unexpected handshake line {line:?}");
    }
    let addr: SocketAddr = parts[3].parse().context("address in the handshake line")?;
    let server_cert = CertificateDer::from(
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(parts[5])
            .context("certificate in the handshake line")?,
    );
    let tls = client_tls(&server_cert, Some(identity))?;
    let relay = tls_relay(addr, tls).await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{relay}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    ProviderClient::new(channel.clone())
        .get_provider_schema(get_provider_schema::Request::default())
        .await
        .context("GetProviderSchema")?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("the plugin already exited"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let vm_hwm_kb = status_kb(&status, "VmHWM:").unwrap_or(0);

    let mut controller = GrpcControllerClient::new(channel);
    let asked = Instant::now();
    controller.shutdown(Empty {}).await.context("Shutdown")?;
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .map_err(|_| anyhow!("the plugin did not exit within 5 s of Shutdown"))??;
    let shutdown = asked.elapsed();
    if !exit.success() {
        bail!("the plugin exited with {exit} after Shutdown");
    }
    Ok(LaunchRun {
        handshake,
        shutdown,
        vm_hwm_kb,
    })
}

impl Samples {
    fn spread_fine(&self) -> String {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("n={} range {min:.1}–{max:.1} ms", self.0.len())
    }
}

// ------------------------------------------------------------- docker CLI

/// Runs the docker CLI; returns trimmed stdout or fails with stderr.
async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Removes `pinned` (repo@digest) from the host and checks it is gone.
async fn remove_image(pinned: &str) -> anyhow::Result<()> {
    let _ = docker(&["image", "rm", pinned]).await;
    if docker(&["image", "inspect", "--format", "{{.Id}}", pinned])
        .await
        .is_ok()
    {
        bail!("{pinned} is still on the host after `docker image rm` (is a container using it?)");
    }
    Ok(())
}

async fn docker_endpoint(id: &str) -> anyhow::Result<String> {
    let port = docker(&["port", id, "8080/tcp"]).await?;
    port.lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("container {id} publishes no 127.0.0.1 port: {port:?}"))
}

/// Polls `GET /` every 10 ms until the answer is 200.
async fn wait_http_200(addr: &str, within: Duration) -> anyhow::Result<()> {
    let begun = Instant::now();
    loop {
        if http_status_is_200(addr).await {
            return Ok(());
        }
        if begun.elapsed() > within {
            bail!("{addr} did not answer 200 within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn http_status_is_200(addr: &str) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut head = [0_u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// `GET path` on a new connection to `addr`: status and body (bounded).
async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| anyhow!("GET on {addr} did not finish within 10 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer from {addr}: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status line from {addr}: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Percent-encodes a query value (`@` and `:` of an image reference).
fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A TCP port free on 127.0.0.1 right now.
/// Jobs due together in the jitter measurement, their period (s), rounds.
const JOB_COUNT: usize = 20;
const JOB_EVERY: u64 = 15;
const JOB_ROUNDS: usize = 3;
/// Jobs scheduled during the idle measurement, and its length.
const IDLE_JOBS: usize = 100;
const IDLE_SECONDS: u64 = 10;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The daemon's `start` events since `since` (unix s) of containers
/// matching `filter`: label `key`'s value → event time (unix s).
async fn start_events(
    since: u64,
    filter: &str,
    key: &str,
) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let until = unix_now() + 1;
    let format = format!("{{{{.TimeNano}}}} {{{{index .Actor.Attributes \"{key}\"}}}}");
    let out = docker(&[
        "events",
        "--since",
        &since.saturating_sub(1).to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "type=container",
        "--filter",
        "event=start",
        "--filter",
        filter,
        "--format",
        &format,
    ])
    .await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (nanos, value) = l.split_once(' ')?;
            Some((value.trim().to_owned(), nanos.parse::<f64>().ok()? / 1e9))
        })
        .collect())
}

/// An engine on the local Docker host (DOCKER_HOST or the default socket)
/// over a store of its own in `state_dir`, marking what it starts with the
/// test label.
async fn local_engine(state_dir: &Path) -> anyhow::Result<Engine> {
    let store = Store::open(StoreOptions::in_dir(state_dir.to_path_buf(), None)).await?;
    let docker_host = std::env::var("DOCKER_HOST").ok();
    Ok(Engine::new(Hosts::local(docker_host.as_deref())?, store).with_test_label(true))
}

/// The app operations over [`local_engine`] and a registry client with no
/// extra insecure registries.
async fn local_apps(state_dir: &Path) -> anyhow::Result<Apps> {
    Ok(Apps::new(
        local_engine(state_dir).await?,
        RegistryClient::new(RegistryOptions {
            insecure_registries: Vec::new(),
        }),
    ))
}

/// Starts `berth serve --listen LISTEN` on `state_dir` (log in `log`) and
/// waits (at most 20 s) until it says it listens.
async fn start_serve(
    berth_bin: &Path,
    state_dir: &Path,
    listen: &str,
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let mut server = Command::new(berth_bin)
        .args(["serve", "--listen", listen])
        .env("BERTH_STATE_DIR", state_dir)
        .env("BERTH_TEST_LABEL", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting berth serve")?;
    let stdout = server.stdout.take().context("berth serve's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("berth serve: listening on") {
                return Ok::<_, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    if !matches!(ready, Ok(Ok(true))) {
        bail!(
            "berth serve did not say it listens on {listen} within 20 s: {}",
            tail(&std::fs::read_to_string(log).unwrap_or_default(), 10)
        );
    }
    Ok(server)
}

/// SIGTERM to a `berth serve` (by its pid), then at most 20 s to exit.
async fn stop_serve(server: &mut tokio::process::Child) {
    if let Some(id) = server.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &id.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .is_err()
    {
        let _ = server.kill().await;
    }
}

fn free_local_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Latencies of `n` GET / to `addr` at `rate` per second, each on a new
/// connection.
async fn latencies(addr: &str, n: usize, rate: f64) -> anyhow::Result<Vec<f64>> {
    let pause = Duration::from_secs_f64(1.0 / rate);
    let mut out = Vec::with_capacity(n);
    let mut next = Instant::now();
    for _ in 0..n {
        let begun = Instant::now();
        if !http_status_is_200(addr).await {
            bail!("GET / from {addr} did not answer 200");
        }
        out.push(begun.elapsed().as_secs_f64() * 1000.0);
        next += pause;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    Ok(out)
}

/// The local daemon's socket: `DOCKER_HOST` when it names a unix socket.
fn default_docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// The second dockerd ("host b") if `tests/devenv.sh status` reports it
/// answering: its unix socket, checked with `docker -H … version`.
async fn second_daemon() -> Option<PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/devenv.sh");
    let out = Command::new("bash")
        .args([script, "status"])
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        let about_b =
            lower.starts_with("host b") || lower.contains("host-b") || lower.contains("docker b");
        if !about_b || !lower.contains("answering") || lower.contains("not answering") {
            continue;
        }
        let socket = line.split_whitespace().find_map(|w| {
            let w = w.trim_matches(|c: char| c == ',' || c == ';' || c == '(' || c == ')');
            let path = w.strip_prefix("unix://").unwrap_or(w);
            (path.starts_with('/') && path.ends_with(".sock")).then(|| PathBuf::from(path))
        })?;
        let host = format!("unix://{}", socket.display());
        let ok = Command::new("docker")
            .args(["-H", &host, "version", "--format", "{{.Server.Version}}"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ok {
            return Some(socket);
        }
    }
    None
}
