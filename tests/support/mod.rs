//! Shared test harness: run the real `terraform` against the plugin built by
//! cargo, installed offline through a filesystem mirror, in a scratch
//! directory per test. Modelled on terraform-plugin-testing's steps: after
//! every apply the plan must be empty.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The plugin binary cargo built for this test run.
pub fn plugin_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_terraform-provider-berth"))
}

/// Prefix of the mirror directories under the temp dir; then the pid.
const MIRROR_PREFIX: &str = "berth-tf-";

/// Removes the mirror directories of test processes that no longer run
/// (each held a copy of the plugin, a quarter of a gigabyte in debug).
fn remove_stale_mirrors() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(MIRROR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A filesystem mirror holding this build of the plugin (a hard link when
/// the temp dir is on the same file system, else a copy), plus a CLI
/// config that installs `berth/berth` only from it (no network).
fn cli_config() -> &'static Path {
    static CFG: OnceLock<PathBuf> = OnceLock::new();
    CFG.get_or_init(|| {
        remove_stale_mirrors();
        let root =
            std::env::temp_dir().join(format!("{MIRROR_PREFIX}{}", std::process::id()));
        let dir = root.join(format!(
            "mirror/registry.terraform.io/berth/berth/{VERSION}/linux_amd64"
        ));
        std::fs::create_dir_all(&dir).expect("mirror dir");
        let target = dir.join(format!("terraform-provider-berth_v{VERSION}"));
        let _ = std::fs::remove_file(&target);
        if std::fs::hard_link(plugin_binary(), &target).is_err() {
            std::fs::copy(plugin_binary(), &target).expect("copy plugin into mirror");
        }
        let cfg = root.join("terraformrc");
        std::fs::write(
            &cfg,
            format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"berth/berth\"]\n  }}\n  direct {{\n    exclude = [\"berth/berth\"]\n  }}\n}}\n",
                root.join("mirror").display(),
            ),
        )
        .expect("write terraformrc");
        cfg
    })
}

/// A scratch terraform working directory, with its own Berth state
/// directory (store and secret key) unless it shares another's.
pub struct Tf {
    pub dir: tempfile::TempDir,
    pub state_dir: std::sync::Arc<tempfile::TempDir>,
    pub extra_env: Vec<(String, String)>,
    /// The PostgreSQL database of the store, when it is one (shared by
    /// siblings and second runners; dropped with the last of them).
    pub pg: Option<std::sync::Arc<berth::devtools::pg::TestDatabase>>,
}

/// Set to `postgres` to run a test binary's terraform on a PostgreSQL
/// store (`make test` does for some acceptance files).
pub const TEST_STORE_VAR: &str = "BERTH_TEST_STORE";

impl Default for Tf {
    fn default() -> Self {
        Tf::new()
    }
}

impl Tf {
    pub fn new() -> Tf {
        let mut tf = Tf::bare();
        if std::env::var(TEST_STORE_VAR).as_deref() == Ok("postgres") {
            tf.use_postgres();
        }
        tf
    }

    /// A working directory with a SQLite store of its own, whatever
    /// [`TEST_STORE_VAR`] says.
    fn bare() -> Tf {
        Tf {
            dir: tempfile::Builder::new()
                .prefix("berth-acc-")
                .tempdir()
                .expect("tempdir"),
            state_dir: std::sync::Arc::new(
                tempfile::Builder::new()
                    .prefix("berth-state-")
                    .tempdir()
                    .expect("tempdir"),
            ),
            extra_env: vec![("BERTH_TEST_LABEL".into(), "1".into())],
            pg: None,
        }
    }

    /// A working directory whose provider keeps its records in a fresh
    /// PostgreSQL database of the dev cluster, with a team key.
    pub fn on_postgres() -> Tf {
        let mut tf = Tf::new();
        if tf.pg.is_none() {
            tf.use_postgres();
        }
        tf
    }

    fn use_postgres(&mut self) {
        let db = berth::devtools::pg::TestDatabase::create();
        let key = berth::store::SecretKey::generate(berth::store::KeySource::Environment)
            .expect("key")
            .expose_base64();
        self.extra_env.push(("BERTH_STORE".into(), db.url()));
        self.extra_env.push(("BERTH_SECRET_KEY".into(), key));
        self.pg = Some(std::sync::Arc::new(db));
    }

    /// The environment that names this directory's store (`BERTH_STORE`,
    /// `BERTH_SECRET_KEY`; empty for the state directory's SQLite).
    pub fn store_env(&self) -> Vec<(String, String)> {
        self.extra_env
            .iter()
            .filter(|(k, _)| k == "BERTH_STORE" || k == "BERTH_SECRET_KEY")
            .cloned()
            .collect()
    }

    /// A second working directory sharing this one's Berth state (for
    /// import into a fresh terraform state).
    pub fn sibling(&self) -> Tf {
        let mut t = self.second_runner();
        t.state_dir = self.state_dir.clone();
        t
    }

    /// Another runner (another machine, as it were): a working directory
    /// and a state directory of its own, the same store when it is a
    /// shared one (PostgreSQL), with the same team key.
    pub fn second_runner(&self) -> Tf {
        let mut t = Tf {
            pg: self.pg.clone(),
            ..Tf::bare()
        };
        t.extra_env.extend(self.store_env());
        t
    }

    /// The options that open this directory's store from the test.
    pub fn store_options(&self) -> berth::store::StoreOptions {
        let env = self.store_env();
        let state_dir = self.state_dir.path().to_owned();
        let lookup = move |name: &str| -> Option<std::ffi::OsString> {
            if name == "BERTH_STATE_DIR" {
                return Some(state_dir.clone().into_os_string());
            }
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| std::ffi::OsString::from(v))
        };
        berth::store::StoreOptions::from_env_with_store(None, None, &lookup).expect("store options")
    }

    /// This directory's store, opened by the test.
    pub fn open_store(&self) -> berth::store::Store {
        block_on(berth::store::Store::open(self.store_options())).expect("open the store")
    }

    pub fn env(mut self, k: &str, v: &str) -> Tf {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    /// Writes `main.tf`, with the required_providers block prepended.
    pub fn config(&self, body: &str) -> &Tf {
        let text = format!(
            "terraform {{\n  required_providers {{\n    berth = {{ source = \"berth/berth\" }}\n  }}\n}}\n\n{body}\n"
        );
        std::fs::write(self.dir.path().join("main.tf"), text).expect("write main.tf");
        self
    }

    /// Writes `main.tf` exactly as given (for the examples).
    pub fn raw_config(&self, text: &str) -> &Tf {
        std::fs::write(self.dir.path().join("main.tf"), text).expect("write main.tf");
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("terraform");
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("TF_CLI_CONFIG_FILE", cli_config())
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env_remove("TF_LOG")
            .env_remove("TF_LOG_PATH")
            .env_remove("BERTH_SECRET_KEY")
            .env_remove("BERTH_STORE")
            .env("BERTH_STATE_DIR", self.state_dir.path());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs terraform; returns the output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run terraform")
    }

    /// Runs terraform and panics with its output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "terraform {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs terraform expecting failure; returns stdout+stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "terraform {args:?} should have failed:\n{text}"
        );
        squash(&text)
    }

    pub fn init(&self) -> String {
        self.ok(&["init", "-input=false", "-no-color"])
    }

    pub fn apply(&self) -> String {
        self.ok(&["apply", "-auto-approve", "-input=false", "-no-color"])
    }

    /// `plan -detailed-exitcode`: true when the plan has changes.
    pub fn plan_has_changes(&self) -> bool {
        let out = self.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
        match out.status.code() {
            Some(0) => false,
            Some(2) => true,
            _ => panic!(
                "terraform plan failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Asserts the two rules of terraform-plugin-testing: after an apply, a
    /// plan is empty, and so is a plan after a refresh.
    pub fn assert_converged(&self) {
        self.assert_plan_empty("plan after apply is not empty");
        self.ok(&[
            "apply",
            "-refresh-only",
            "-auto-approve",
            "-input=false",
            "-no-color",
        ]);
        self.assert_plan_empty("plan after refresh is not empty");
    }

    /// Panics with the plan unless it has no changes.
    fn assert_plan_empty(&self, why: &str) {
        let out = self.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
        match out.status.code() {
            Some(0) => {}
            Some(2) => panic!("{why}:\n{}", String::from_utf8_lossy(&out.stdout)),
            _ => panic!(
                "terraform plan failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// `terraform output -json NAME` parsed.
    pub fn output(&self, name: &str) -> serde_json::Value {
        let s = self.ok(&["output", "-json", name]);
        serde_json::from_str(&s).expect("output json")
    }

    /// Plans to a file and returns `terraform show -json` of it.
    pub fn plan_json(&self) -> serde_json::Value {
        self.ok(&["plan", "-out=tfplan", "-input=false", "-no-color"]);
        let s = self.ok(&["show", "-json", "tfplan"]);
        serde_json::from_str(&s).expect("plan json")
    }
}

/// Collapses runs of white space, so assertions do not depend on where
/// terraform wraps its messages.
pub fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A tag unique to this test process and call, so tests never share tags.
pub fn unique_tag(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000)
            .unwrap_or(0),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Fails fast, with the fix, when the dev environment is not up.
pub fn require_env() {
    let ok = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5000".parse().expect("addr"),
        std::time::Duration::from_secs(2),
    )
    .is_ok();
    assert!(
        ok,
        "the local registry on 127.0.0.1:5000 is not running: run `bash tests/devenv.sh up` (make test does)"
    );
}

/// A current-thread runtime for the async fixture helpers.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// GETs `path` from `addr` with bounded retries; returns the body.
pub fn http_body(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    for _ in 0..40 {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = String::new();
                if s.read_to_string(&mut buf).is_ok() && buf.starts_with("HTTP/1.") {
                    if let Some((_, body)) = buf.split_once("\r\n\r\n") {
                        return Some(body.to_string());
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    None
}

/// Containers (ids) carrying `io.berth.app=<app>`, on the local Docker.
pub fn app_containers(app: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.berth.app={app}"),
        ])
        .output()
        .expect("docker ps");
    // An empty list must mean no containers, not a failed command.
    assert!(
        out.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Runs the docker CLI on the default daemon; its stdout, after checking
/// that it succeeded.
pub fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes an app's containers and network when a test ends, even on panic.
pub struct AppGuard(pub String);

impl Drop for AppGuard {
    fn drop(&mut self) {
        forget_routes("unix:///var/run/docker.sock", &self.0);
        let ids = app_containers(&self.0);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("berth-{}", self.0)])
            .output();
    }
}

/// A unique app name for a test.
pub fn unique_app(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The ingress image of the dev environment (Debian's haproxy and caddy).
pub const INGRESS_IMAGE: &str = "127.0.0.1:5000/berth/ingress:local";
/// The ingress' HTTP and HTTPS ports in the tests. Every test uses the same
/// ingress settings: the ingress of a host is shared by all its apps, and
/// its settings are the provider's (tests with other ones would fight).
pub const INGRESS_HTTP_PORT: u16 = 18480;
pub const INGRESS_HTTPS_PORT: u16 = 18443;

/// The provider's `ingress` setting every test uses.
pub fn ingress_setting() -> String {
    format!(
        "  ingress = {{\n    image      = \"{INGRESS_IMAGE}\"\n    tls_image  = \"{INGRESS_IMAGE}\"\n    tls        = \"internal\"\n    http_port  = {INGRESS_HTTP_PORT}\n    https_port = {INGRESS_HTTPS_PORT}\n  }}\n"
    )
}

/// A TCP port free on 127.0.0.1 and 127.0.0.2 right now (bound, read,
/// released), for a test's `public_port`.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = a.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2 after 50 tries");
}

/// Removes an app from `docker_host` when a test ends, its routes on the
/// host's shared ingress included: `berth destroy APP` (which needs no
/// record of the app: it goes by labels) with a throwaway state directory.
pub fn forget_routes(docker_host: &str, app: &str) {
    let Ok(state) = tempfile::tempdir() else {
        return;
    };
    let _ = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["destroy", app])
        .env("BERTH_STATE_DIR", state.path())
        .env("DOCKER_HOST", docker_host)
        .env_remove("BERTH_SECRET_KEY")
        .output();
}

/// `curl ARGS…`: (exit code, stdout). Bounded by `--max-time 10`.
pub fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
pub mod hosts;
pub mod serve;
pub mod swarm;

/// Pushes the demo image answering `berth demo VERSION` as
/// `berth/demo:TAG` to the plain registry; its digest.
pub fn push_demo_tag(tag: &str, version: &str) -> String {
    block_on(berth::devtools::fixtures::push_demo(
        berth::devtools::fixtures::PLAIN_REGISTRY,
        "berth/demo",
        tag,
        version,
        None,
    ))
    .expect("push demo")
    .digest
}
