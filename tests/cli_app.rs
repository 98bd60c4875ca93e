//! The app commands of the `berth` binary against the real parts: the local
//! Docker Engine and the plain registry of the dev environment
//! (`bash tests/devenv.sh up`). Each test has its own state directory and
//! app name, and removes what it started (`berth destroy`, then a guard that
//! removes any container still labelled with its app).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use berth::devtools::fixtures::{push_all, push_demo, FixtureSet, PLAIN_REGISTRY};
use serde_json::Value;

/// One test's scratch state: a state directory, an app name, and cleanup.
struct Scratch {
    dir: tempfile::TempDir,
    app: String,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("berth-cli-app-")
            .tempdir()
            .expect("tempdir");
        Scratch {
            dir,
            app: format!("cli-{test}-{}", std::process::id()),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes `name` in the scratch directory; returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write spec file");
        path.display().to_string()
    }

    /// Runs `berth args…` with this test's state directory and test label.
    fn berth(&self, args: &[&str]) -> Output {
        berth_in(&self.state_dir(), args, b"")
    }

    /// Like [`Scratch::berth`], and the command must succeed.
    fn ok(&self, args: &[&str]) -> Output {
        let output = self.berth(args);
        assert!(
            output.status.success(),
            "berth {args:?} failed ({}):\n{}\n{}",
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        output
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.berth(&["destroy", &self.app]);
        let filter = format!("label=io.berth.app={}", self.app);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        docker(&["network", "rm", &format!("berth-{}", self.app)]);
    }
}

fn berth_in(state_dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env_remove("BERTH_LOG")
        .env("BERTH_STATE_DIR", state_dir)
        .env("BERTH_TEST_LABEL", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth");
    {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let _ = pipe.write_all(stdin);
    }
    child.wait_with_output().expect("wait for berth")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            text(&output.stdout),
            text(&output.stderr)
        )
    })
}

/// Runs the docker CLI (test scaffolding only); returns stdout.
fn docker(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default()
}

/// Runs the docker CLI for what a test checks: it must succeed.
fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The fixture images in the plain registry, pushed once per test binary.
fn fixtures() -> &'static FixtureSet {
    static FIXTURES: OnceLock<FixtureSet> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        runtime()
            .block_on(push_all(PLAIN_REGISTRY))
            .expect("push fixtures (is `bash tests/devenv.sh up` done?)")
    })
}

/// `GET /` from `endpoint` (`address:port`), retried for a few seconds;
/// returns the body.
fn get(endpoint: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match try_get(endpoint) {
            Ok(body) => return body,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET http://{endpoint}/ failed: {last}");
}

fn try_get(endpoint: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(endpoint)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: berth-test\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_owned())
        }
        _ => Err(std::io::Error::other(format!(
            "unexpected answer: {response:?}"
        ))),
    }
}

fn endpoint(deploy: &Value) -> String {
    deploy["endpoints"]["web"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no web endpoint in {deploy}"))
        .to_owned()
}

fn spec(app: &str, image: &str, extra: &str) -> String {
    format!(
        "name: {app}\nimage: {image}\n{extra}services:\n  web:\n    http_port: 8080\n    health_check:\n      start_period_seconds: 20\n"
    )
}

// ------------------------------------------------------------ no Docker

#[test]
fn schema_is_json_naming_the_spec_fields() {
    let scratch = Scratch::new("schema");
    let output = scratch.ok(&["schema"]);
    let schema = json(&output);
    assert!(schema["properties"]["services"].is_object(), "{schema}");
    assert!(schema["properties"]["image"].is_object(), "{schema}");
}

#[test]
fn an_invalid_spec_exits_2_naming_the_field() {
    let scratch = Scratch::new("invalid");
    let bad_port = scratch.file(
        "app.yaml",
        &spec(&scratch.app, "127.0.0.1:5000/berth/demo:v1", "").replace("8080", "0"),
    );
    for command in ["plan", "apply"] {
        let output = scratch.berth(&[command, "-f", &bad_port]);
        assert_eq!(output.status.code(), Some(2), "{command}: {output:?}");
        assert!(output.stdout.is_empty(), "{command}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("app.yaml: services[\"web\"].http_port: must be between 1 and 65535"),
            "{stderr}"
        );
    }

    // Unknown fields name the file, the line and column, and the field;
    // `-f -` reads stdin.
    let typo = "name: x\nimage: 127.0.0.1:5000/berth/demo:v1\nservces:\n  web: {}\n";
    let output = berth_in(&scratch.state_dir(), &["plan", "-f", "-"], typo.as_bytes());
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("<stdin>:3:1: "), "{stderr}");
    assert!(stderr.contains("unknown field `servces`"), "{stderr}");

    let json_spec = scratch.file("app.json", "{\"name\": \"x\", \"image\": 5}");
    let output = scratch.berth(&["plan", "-f", &json_spec]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(text(&output.stderr).contains("app.json:1:"), "{output:?}");

    let output = scratch.berth(&["plan", "-f", "/nonexistent/app.yaml"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(text(&output.stderr).contains("/nonexistent/app.yaml"));
}

// ------------------------------------------------------------ real Docker

#[test]
fn apply_update_rollback_and_destroy_an_app() {
    let fixtures = fixtures();
    let scratch = Scratch::new("life");
    let app = scratch.app.clone();
    let secrets = "secret_env:\n  TOKEN: real-token\n";
    let v1 = scratch.file(
        "app.yaml",
        &spec(&app, "127.0.0.1:5000/berth/demo:v1", secrets),
    );

    // apply v1: serves v1.
    let deployed = json(&scratch.ok(&["apply", "-f", &v1, "--json"]));
    assert_eq!(deployed["release"], 1, "{deployed}");
    assert_eq!(deployed["digest"], fixtures.demo_v1.digest.as_str());
    assert_eq!(deployed["trigger"], "berth apply");
    assert!(deployed["phases"].as_array().is_some_and(|p| !p.is_empty()));
    assert_eq!(get(&endpoint(&deployed)), "berth demo v1\n");

    // plan after apply: nothing to do.
    let output = scratch.ok(&["plan", "-f", &v1]);
    assert!(text(&output.stdout).contains("no changes"), "{output:?}");
    let planned = json(&scratch.ok(&["plan", "-f", &v1, "--json"]));
    assert_eq!(planned["changes"], false, "{planned}");
    assert_eq!(planned["new_release"], false);
    assert_eq!(planned["drift"], serde_json::json!([]));

    // apply v2: release 2 serves v2.
    let v2 = scratch.file(
        "app-v2.yaml",
        &spec(&app, "127.0.0.1:5000/berth/demo:v2", secrets),
    );
    let planned = json(&scratch.ok(&["plan", "-f", &v2, "--json"]));
    assert_eq!(planned["new_release"], true, "{planned}");
    assert_eq!(planned["digest"], fixtures.demo_v2.digest.as_str());
    let deployed = json(&scratch.ok(&["apply", "-f", &v2, "--json"]));
    assert_eq!(deployed["release"], 2, "{deployed}");
    assert_eq!(get(&endpoint(&deployed)), "berth demo v2\n");

    // releases: newest first.
    let journal = json(&scratch.ok(&["releases", &app, "--json"]));
    let numbers: Vec<u64> = journal["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .filter_map(|r| r["release"].as_u64())
        .collect();
    assert_eq!(numbers, vec![2, 1], "{journal}");
    assert_eq!(journal["releases"][0]["outcome"], "succeeded");
    let listing = text(&scratch.ok(&["releases", &app]).stdout);
    let two = listing.find("\n2 ").expect("release 2 listed");
    let one = listing.find("\n1 ").expect("release 1 listed");
    assert!(two < one, "{listing}");

    // rollback: the journal has no secret values; Berth's sealed record of
    // the app does, so no spec file is needed.
    let rolled = json(&scratch.ok(&["rollback", &app, "--json"]));
    assert_eq!(rolled["release"], 3, "{rolled}");
    assert_eq!(rolled["rolled_back_to"], 1);
    assert_eq!(rolled["trigger"], "rollback");
    assert_eq!(rolled["digest"], fixtures.demo_v1.digest.as_str());
    assert_eq!(get(&endpoint(&rolled)), "berth demo v1\n");
    let filter = format!("label=io.berth.app={app}");
    let running = docker_ok(&["ps", "-q", "--filter", &filter]);
    let env = docker_ok(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        running.trim(),
    ]);
    assert!(env.contains("TOKEN=real-token"), "{env}");
    // ...kept sealed: the value is in no file of the state directory.
    for file in std::fs::read_dir(scratch.state_dir())
        .expect("state dir")
        .flatten()
    {
        let bytes = std::fs::read(file.path()).unwrap_or_default();
        assert!(
            !bytes.windows(10).any(|w| w == b"real-token"),
            "{} holds the secret in plain text",
            file.path().display()
        );
    }

    // status: one app with its instance; JSON shapes.
    let one = json(&scratch.ok(&["status", &app, "--json"]));
    assert_eq!(one["app"], app.as_str(), "{one}");
    assert_eq!(one["release"], 3);
    assert_eq!(one["running"], 1);
    assert_eq!(one["desired"], 1);
    assert_eq!(one["drift"], serde_json::json!([]));
    // Config drift is judged for an app with secret_env too: no note says
    // it cannot be.
    assert!(one.get("notes").is_none(), "{one}");
    let instance = &one["instances"][0];
    assert_eq!(instance["state"], "running", "{one}");
    assert_eq!(instance["host"], "local");
    assert_eq!(instance["endpoint"], rolled["endpoints"]["web"][0]);
    let all = json(&scratch.ok(&["status", "--json"]));
    let listed = all["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["app"] == app.as_str())
        .unwrap_or_else(|| panic!("{app} not in {all}"))
        .clone();
    assert_eq!(listed["release"], 3, "{listed}");
    assert_eq!(listed["running"], 1);
    assert_eq!(listed["drift"], 0);
    let human = text(&scratch.ok(&["status"]).stdout);
    assert!(human.starts_with("APP "), "{human}");
    assert!(human.contains(&app), "{human}");

    // destroy: nothing left; a second destroy is fine.
    let output = scratch.ok(&["destroy", &app]);
    assert!(text(&output.stdout).contains("removed"), "{output:?}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &filter]).trim(), "");
    let output = scratch.ok(&["destroy", &app]);
    assert!(
        text(&output.stdout).contains("nothing to remove"),
        "{output:?}"
    );
    let output = scratch.berth(&["status", &app]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
}

#[test]
fn track_tag_false_keeps_the_running_digest_when_the_tag_moves() {
    let fixtures = fixtures();
    let scratch = Scratch::new("track");
    let app = scratch.app.clone();
    let repository = format!("berth/{app}");
    let rt = runtime();
    rt.block_on(push_demo(PLAIN_REGISTRY, &repository, "live", "v1", None))
        .expect("push the live tag");
    let image = format!("{PLAIN_REGISTRY}/{repository}:live");
    let pinned = scratch.file("pinned.yaml", &spec(&app, &image, "track_tag: false\n"));
    let deployed = json(&scratch.ok(&["apply", "-f", &pinned, "--json"]));
    assert_eq!(deployed["digest"], fixtures.demo_v1.digest.as_str());

    // The tag moves to v2.
    rt.block_on(push_demo(PLAIN_REGISTRY, &repository, "live", "v2", None))
        .expect("move the live tag");
    let planned = json(&scratch.ok(&["plan", "-f", &pinned, "--json"]));
    assert_eq!(planned["changes"], false, "{planned}");
    assert_eq!(planned["digest"], fixtures.demo_v1.digest.as_str());

    // Tracking the tag sees the move.
    let tracking = scratch.file("tracking.yaml", &spec(&app, &image, ""));
    let planned = json(&scratch.ok(&["plan", "-f", &tracking, "--json"]));
    assert_eq!(planned["new_release"], true, "{planned}");
    assert_eq!(planned["digest"], fixtures.demo_v2.digest.as_str());
    let steps = planned["steps"].to_string();
    assert!(steps.contains(&fixtures.demo_v2.digest), "{steps}");
    scratch.ok(&["destroy", &app]);
}

/// The ingress settings every test gives the shared ingress of the host
/// (the same as `tests/support`'s).
const INGRESS: &str = "ingress:\n  image: 127.0.0.1:5000/berth/ingress:local\n  tls_image: 127.0.0.1:5000/berth/ingress:local\n  tls: internal\n  http_port: 18480\n  https_port: 18443\n";

#[test]
fn a_public_port_from_a_spec_file_shows_in_status_and_keeps_answering() {
    fixtures();
    let scratch = Scratch::new("ingress");
    let app = scratch.app.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let file = |name: &str, image: &str| {
        let text = format!(
            "{INGRESS}{}",
            spec(&app, image, "").replace(
                "    http_port: 8080\n",
                &format!("    http_port: 8080\n    public_port: {port}\n")
            )
        );
        scratch.file(name, &text)
    };
    let v1 = file("app.yaml", "127.0.0.1:5000/berth/demo:v1");
    let url = format!("http://127.0.0.1:{port}");
    let planned = json(&scratch.ok(&["plan", "-f", &v1, "--json"]));
    assert_eq!(
        planned["urls"]["web"],
        serde_json::json!([url]),
        "{planned}"
    );
    let deployed = json(&scratch.ok(&["apply", "-f", &v1, "--json"]));
    assert_eq!(
        deployed["urls"]["web"],
        serde_json::json!([url]),
        "{deployed}"
    );
    let stable = format!("127.0.0.1:{port}");
    assert_eq!(get(&stable), "berth demo v1\n");

    let status = json(&scratch.ok(&["status", &app, "--json"]));
    assert_eq!(status["urls"]["web"], serde_json::json!([url]), "{status}");
    assert_eq!(status["drift"], serde_json::json!([]), "{status}");
    let human = text(&scratch.ok(&["status", &app]).stdout);
    assert!(human.contains(&format!("urls       web  {url}")), "{human}");

    // A new release answers on the same address.
    let v2 = file("app-v2.yaml", "127.0.0.1:5000/berth/demo:v2");
    scratch.ok(&["apply", "-f", &v2]);
    assert_eq!(get(&stable), "berth demo v2\n");
    let planned = json(&scratch.ok(&["plan", "-f", &v2, "--json"]));
    assert_eq!(planned["changes"], false, "{planned}");

    scratch.ok(&["destroy", &app]);
    assert!(
        try_get(&stable).is_err(),
        "the public port answers after destroy"
    );
}

#[test]
fn two_berth_processes_switching_one_host_at_once_lose_no_route() {
    fixtures();
    // Each its own state directory (separate stores: no shared lease), the
    // same host and ingress: only the ingress' own lock and its
    // compare-and-swap keep one switch from undoing the other.
    let scratches: Vec<Scratch> = (0..2).map(|i| Scratch::new(&format!("race{i}"))).collect();
    let ports: Vec<u16> = scratches
        .iter()
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port()
        })
        .collect();
    for round in ["v1", "v2", "v1"] {
        let children: Vec<_> = scratches
            .iter()
            .zip(&ports)
            .map(|(scratch, port)| {
                let text = format!(
                    "{INGRESS}{}",
                    spec(
                        &scratch.app,
                        &format!("127.0.0.1:5000/berth/demo:{round}"),
                        ""
                    )
                    .replace(
                        "    http_port: 8080\n",
                        &format!("    http_port: 8080\n    public_port: {port}\n")
                    )
                );
                let file = scratch.file("app.yaml", &text);
                Command::new(env!("CARGO_BIN_EXE_berth"))
                    .args(["apply", "-f", &file])
                    .env("BERTH_STATE_DIR", scratch.state_dir())
                    .env("BERTH_TEST_LABEL", "1")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start berth")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait for berth");
            assert!(out.status.success(), "{round}: {}", text(&out.stderr));
        }
        for port in &ports {
            assert_eq!(
                get(&format!("127.0.0.1:{port}")),
                format!("berth demo {round}\n"),
                "after both applies of {round}, port {port} serves {round}"
            );
        }
    }
}
