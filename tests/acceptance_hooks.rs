//! Acceptance tests for deploy hooks (issue 9): the real terraform creates
//! an app and a `berth_deploy_hook`, a real `berth serve` process answers
//! the hook's URL (called with curl), and the real Docker Engine, registry
//! and ingress do the deploys. A call deploys the tag's new digest (the
//! plan stays empty) or `imgURL`'s other tag (the plan says so); another
//! repository, a wrong key and an unknown hook get the same 404 bytes; an
//! arm64-only image is refused before anything happens; an unhealthy one
//! fails and the old release keeps serving; 20 concurrent calls leave one
//! running and one waiting, and the last digest wins; `keepers` rotate the
//! key; destroy ends the URL; the key never reaches the server's trace
//! log or Berth's store file.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth::devtools::fixtures::{self, Variant, PLAIN_REGISTRY};
use support::{
    block_on, curl, free_port, ingress_setting, require_env, squash, unique_app, unique_tag,
    AppGuard, Tf,
};

/// The body of every "no such hook" answer.
const NOT_FOUND: &str =
    r#"{"error":{"code":"not_found","message":"no such deploy hook, or a wrong key"}}"#;

use support::serve::Serve as HookServer;

/// An HTTP answer: status, headers (lowercased names) and body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// `curl -i -X METHOD URL`.
fn call(method: &str, url: &str) -> Answer {
    let (code, out) = curl(&["-i", "-X", method, url]);
    assert_eq!(code, 0, "curl {method} failed: {out}");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls a deploy's status URL until it is final; bounded.
fn wait_final(base: &str, status_url: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let answer = call("GET", &format!("{base}{status_url}"));
        assert_eq!(answer.status, 200, "status URL: {}", answer.body);
        let deploy = answer.json()["deploy"].clone();
        let status = deploy["status"].as_str().unwrap_or_default().to_owned();
        if !matches!(status.as_str(), "queued" | "running") {
            return deploy;
        }
        assert!(
            Instant::now() < deadline,
            "deploy still {status} after 90 s: {deploy}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn push(repository: &str, tag: &str, version: &str, variant: Variant) -> String {
    block_on(fixtures::push_variant(
        PLAIN_REGISTRY,
        repository,
        tag,
        version,
        variant,
    ))
    .expect("push fixture")
    .digest
}

/// `berth CMD…` on `tf`'s Berth state, as JSON.
fn berth_json(tf: &Tf, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .arg("--json")
        .env("BERTH_STATE_DIR", tf.state_dir.path())
        .env_remove("BERTH_SECRET_KEY")
        .output()
        .expect("run berth");
    assert!(
        out.status.success(),
        "berth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("berth --json")
}

fn releases(tf: &Tf, app: &str) -> Vec<serde_json::Value> {
    berth_json(tf, &["releases", app])["releases"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The body the app answers on its stable public port.
#[track_caller]
fn serving(port: u16) -> String {
    let (code, body) = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!(code, 0, "curl of the public port failed: {body}");
    body.trim().to_owned()
}

/// The env of the app's running containers of its current release.
fn running_env(app: &str) -> Vec<String> {
    let ids = support::app_containers(app);
    let out = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.State.Running}} {{json .Config.Env}}",
        ])
        .args(&ids)
        .output()
        .expect("docker inspect");
    assert!(
        out.status.success(),
        "docker inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("true "))
        .flat_map(|env| serde_json::from_str::<Vec<String>>(env).unwrap_or_default())
        .collect()
}

fn provider(base: &str) -> String {
    format!(
        "provider \"berth\" {{\n  hooks_url = \"{base}\"\n{}}}\n",
        ingress_setting()
    )
}

fn app_and_hook(name: &str, image: &str, port: u16, keepers: &str) -> String {
    format!(
        r#"
resource "berth_app" "demo" {{
  name       = "{name}"
  image      = "{image}"
  secret_env = {{ HOOK_TEST_TOKEN = "s3cret-for-{name}" }}
  services = {{
    web = {{
      public_port  = {port}
      health_check = {{ path = "/healthz", start_period_seconds = 4 }}
    }}
  }}
}}

resource "berth_deploy_hook" "ci" {{
  app     = berth_app.demo.name
  {keepers}
}}

output "url" {{
  value     = berth_deploy_hook.ci.url
  sensitive = true
}}
output "hook_id" {{ value = berth_deploy_hook.ci.id }}
"#
    )
}

fn url_of(tf: &Tf) -> String {
    tf.output("url").as_str().expect("url").to_owned()
}

/// Bytes of every file in `dir`.
fn files_contain(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(path);
            }
        }
    }
    hits
}

/// Caddy (the dev environment's) running `examples/deploy-hooks/Caddyfile`
/// on a free loopback port, in front of `upstream`; killed when dropped.
struct CaddyProxy {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl CaddyProxy {
    fn start(upstream: &str) -> CaddyProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = dir.path().join("access.log");
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy-hooks/Caddyfile"),
        )
        .expect("the Caddyfile example");
        let upstream_host = upstream.trim_start_matches("http://");
        let text = example
            .replace(
                "deploy.example.com {",
                &format!("http://127.0.0.1:{port} {{"),
            )
            .replace("127.0.0.1:7070", upstream_host)
            .replace("/var/log/caddy/berth-hooks.log", &log.display().to_string());
        assert!(
            text.contains(upstream_host) && text.contains(&port.to_string()),
            "the example changed shape:\n{text}"
        );
        let config = dir.path().join("Caddyfile");
        std::fs::write(&config, format!("{{\n\tadmin off\n}}\n{text}")).expect("write Caddyfile");
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("caddy.err")).expect("err file"))
            .spawn()
            .expect("start caddy (bash tests/devenv.sh up installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "caddy did not listen within 20 s: {}",
                std::fs::read_to_string(dir.path().join("caddy.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        CaddyProxy {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// The access log once `ready` holds for it (Caddy writes it after the
    /// answer); bounded.
    fn log_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if ready(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no access log line within 10 s: {log:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for CaddyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hook_calls_deploy_refuse_and_never_leak_the_key() {
    require_env();
    let name = unique_app("hook");
    let _guard = AppGuard(name.clone());
    let repo = "berth/demo";
    let tag = unique_tag("hook");
    push(repo, &tag, "v1", Variant::Demo);
    let image = format!("{PLAIN_REGISTRY}/{repo}:{tag}");
    let port = free_port();
    let tf = Tf::new();
    let server = HookServer::start(tf.state_dir.path(), "trace");
    tf.config(&format!(
        "{}{}",
        provider(&server.base),
        app_and_hook(&name, &image, port, "")
    ));
    tf.init();
    tf.apply();
    tf.assert_converged();
    assert_eq!(serving(port), "berth demo v1");
    let url = url_of(&tf);
    let hook_id = tf.output("hook_id").as_str().expect("id").to_owned();
    assert!(
        url.starts_with(&format!("{}/deploy/{hook_id}?key=", server.base)),
        "{url}"
    );
    let key = url.rsplit_once("key=").expect("key").1.to_owned();
    assert_eq!(key.len(), 43, "256 bits, base64url");

    // The health check and the methods.
    let health = call("GET", &format!("{}/healthz", server.base));
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let put = call("PUT", &url);
    assert_eq!(put.status, 405, "{}", put.body);
    assert!(put.headers.contains("allow: get, post"), "{}", put.headers);

    // Push a new image to the tag; the call deploys it, journaled `hook`.
    let v2 = push(repo, &tag, "v2", Variant::Demo);
    let answer = call("POST", &url);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let deploy = answer.json()["deploy"].clone();
    assert_eq!(deploy["digest"], v2.as_str(), "{deploy}");
    assert!(
        deploy["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("dep-")),
        "{deploy}"
    );
    let done = wait_final(
        &server.base,
        deploy["status_url"].as_str().expect("status_url"),
    );
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(serving(port), "berth demo v2");
    let journal = releases(&tf, &name);
    assert_eq!(journal[0]["trigger"], "hook", "{journal:?}");
    assert_eq!(journal[0]["digest"], v2.as_str());
    assert_eq!(journal[0]["outcome"], "succeeded");
    // The secret env of the app came along from Berth's sealed record.
    let env = running_env(&name);
    assert!(
        env.iter()
            .any(|e| e == &format!("HOOK_TEST_TOKEN=s3cret-for-{name}")),
        "{env:?}"
    );
    // The tag's current digest: the app's configured image, plan empty.
    tf.assert_converged();

    // imgURL: another tag of the same repository is deployed, and the
    // next plan says in words that the running release came from a hook.
    let other_tag = unique_tag("hook-other");
    let v3 = push(repo, &other_tag, "v3", Variant::Demo);
    let other = format!("{PLAIN_REGISTRY}/{repo}:{other_tag}");
    let answer = call("GET", &format!("{url}&imgURL={}", encode(&other)));
    assert_eq!(answer.status, 202, "{}", answer.body);
    let deploy = answer.json()["deploy"].clone();
    assert_eq!(deploy["digest"], v3.as_str());
    let done = wait_final(&server.base, deploy["status_url"].as_str().unwrap());
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(serving(port), "berth demo v3");
    let plan = squash(&tf.ok(&["plan", "-input=false", "-no-color"]));
    assert!(
        plan.contains("came from a deploy hook"),
        "the plan should say the release came from a hook:\n{plan}"
    );
    let count = releases(&tf, &name).len();

    // Another repository, a wrong key (one character off), an unknown
    // hook, no key: the same 404, byte for byte, and nothing happens.
    let elsewhere = format!("{PLAIN_REGISTRY}/berth/multi:latest");
    let refusals = [
        format!("{url}&imgURL={}", encode(&elsewhere)),
        url.replace(&key, &wrong_key(&key)),
        url.replace(&hook_id, "dh-0000000000000000"),
        format!("{}/deploy/{hook_id}", server.base),
    ];
    for refused in &refusals {
        let answer = call("POST", refused);
        assert_eq!(answer.status, 404);
        assert_eq!(answer.body, NOT_FOUND);
    }

    // An image of the repository without linux/amd64: refused at once,
    // saying why; an invalid reference too.
    let arm_tag = unique_tag("hook-arm");
    push(repo, &arm_tag, "arm", Variant::Arm64Only);
    let arm = format!("{PLAIN_REGISTRY}/{repo}:{arm_tag}");
    let answer = call("POST", &format!("{url}&imgURL={}", encode(&arm)));
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(
        answer.json()["error"]["code"],
        "no_linux_amd64",
        "{}",
        answer.body
    );
    assert!(answer.body.contains("linux/arm64"), "{}", answer.body);
    let answer = call("POST", &format!("{url}&imgURL=Not%20An%20Image"));
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("imgURL"), "{}", answer.body);
    let missing = format!("{PLAIN_REGISTRY}/{repo}:{}", unique_tag("never-pushed"));
    let answer = call("POST", &format!("{url}&imgURL={}", encode(&missing)));
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "image_not_found");
    assert_eq!(releases(&tf, &name).len(), count, "nothing was deployed");
    assert_eq!(serving(port), "berth demo v3");

    // An image that never becomes healthy: the deploy fails, the old
    // release keeps serving.
    let sick_tag = unique_tag("hook-sick");
    push(repo, &sick_tag, "sick", Variant::Unhealthy);
    let sick = format!("{PLAIN_REGISTRY}/{repo}:{sick_tag}");
    let answer = call("POST", &format!("{url}&imgURL={}", encode(&sick)));
    assert_eq!(answer.status, 202, "{}", answer.body);
    let done = wait_final(
        &server.base,
        answer.json()["deploy"]["status_url"].as_str().unwrap(),
    );
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{done}"
    );
    assert_eq!(serving(port), "berth demo v3");
    let journal = releases(&tf, &name);
    assert_eq!(journal[0]["outcome"], "failed", "{:?}", journal[0]);

    // Back to the configured image; the plan converges again.
    tf.apply();
    tf.assert_converged();
    assert_eq!(serving(port), "berth demo v2");

    // The key is in no log line (at trace level) and no store file, while
    // the log does name the hook and the outcomes.
    let log = server.log();
    assert!(log.contains(&hook_id), "the log names the hook:\n{log}");
    assert!(log.contains("not_found"), "the log names the outcome");
    assert!(!log.contains(&key), "the key reached the server's log");
    assert!(
        files_contain(tf.state_dir.path(), &key).is_empty(),
        "the key reached Berth's state directory"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["releases", &name])
        .env("BERTH_STATE_DIR", tf.state_dir.path())
        .output()
        .expect("berth releases");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&key));

    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    let answer = call("POST", &url);
    assert_eq!((answer.status, answer.body.as_str()), (404, NOT_FOUND));
}

#[test]
fn twenty_concurrent_calls_run_one_queue_one_and_the_last_digest_wins() {
    require_env();
    let name = unique_app("hook-q");
    let _guard = AppGuard(name.clone());
    let repo = "berth/demo";
    let tag = unique_tag("hookq");
    push(repo, &tag, "q0", Variant::Demo);
    let port = free_port();
    let tf = Tf::new();
    let server = HookServer::start(tf.state_dir.path(), "info");
    tf.config(&format!(
        "{}{}",
        provider(&server.base),
        app_and_hook(&name, &format!("{PLAIN_REGISTRY}/{repo}:{tag}"), port, "")
    ));
    tf.init();
    tf.apply();
    let url = url_of(&tf);
    let before = releases(&tf, &name).len();
    let tags: Vec<(String, String)> = (1..=20)
        .map(|n| {
            let t = unique_tag(&format!("hookq{n}"));
            let digest = push(repo, &t, &format!("q{n}"), Variant::Demo);
            (t, digest)
        })
        .collect();
    let call_for = |t: &str| {
        format!(
            "{url}&imgURL={}",
            encode(&format!("{PLAIN_REGISTRY}/{repo}:{t}"))
        )
    };

    // The first call starts a deploy; 19 more arrive at once while it runs.
    let first = call("POST", &call_for(&tags[0].0));
    assert_eq!(first.status, 202, "{}", first.body);
    let first = first.json()["deploy"].clone();
    assert_eq!(first["status"], "running", "{first}");
    let answers: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = tags[1..]
            .iter()
            .map(|(t, _)| {
                let u = call_for(t);
                scope.spawn(move || call("POST", &u))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let a = h.join().expect("caller thread");
                assert_eq!(a.status, 202, "{}", a.body);
                a.json()["deploy"].clone()
            })
            .collect()
    });
    let ids: std::collections::BTreeSet<&str> =
        answers.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids.len(), 19, "each other digest is its own deploy");
    for a in &answers {
        assert_eq!(a["status"], "queued", "one runs, the others wait: {a}");
    }

    let finals: Vec<serde_json::Value> = answers
        .iter()
        .map(|a| wait_final(&server.base, a["status_url"].as_str().unwrap()))
        .collect();
    let first_done = wait_final(&server.base, first["status_url"].as_str().unwrap());
    assert_eq!(first_done["status"], "succeeded", "{first_done}");
    let ran: Vec<&serde_json::Value> = finals
        .iter()
        .filter(|d| d["status"] != "superseded")
        .collect();
    assert_eq!(ran.len(), 1, "exactly one waiting deploy ran: {finals:?}");
    let winner = ran[0];
    assert_eq!(winner["status"], "succeeded", "{winner}");
    // Every superseded deploy was replaced by a later one, ending at the
    // winner: the last call the server took.
    for d in finals.iter().filter(|d| d["status"] == "superseded") {
        let by = d["superseded_by"].as_str().expect("superseded_by");
        assert!(ids.contains(by), "{d}");
    }
    let version = tags
        .iter()
        .position(|(_, digest)| winner["digest"] == digest.as_str())
        .map(|i| i + 1)
        .expect("the winner's digest is one of the tags'");
    assert_eq!(serving(port), format!("berth demo q{version}"));
    let journal = releases(&tf, &name);
    assert_eq!(journal.len(), before + 2, "two deploys ran: {journal:?}");
    assert_eq!(journal[0]["digest"], winner["digest"]);
    assert_eq!(journal[1]["digest"], tags[0].1.as_str());
}

#[test]
fn keepers_rotate_the_key_and_bad_input_is_named() {
    require_env();
    let name = unique_app("hook-k");
    let _guard = AppGuard(name.clone());
    let tag = unique_tag("hookk");
    push("berth/demo", &tag, "k1", Variant::Demo);
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let port = free_port();
    let tf = Tf::new();
    let server = HookServer::start(tf.state_dir.path(), "info");
    let config = |keepers: &str| {
        format!(
            "{}{}",
            provider(&server.base),
            app_and_hook(&name, &image, port, keepers)
        )
    };
    tf.config(&config("keepers = { rotated = \"1\" }"));
    tf.init();
    tf.apply();
    tf.assert_converged();
    let old = url_of(&tf);
    let answer = call("POST", &old);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let done = wait_final(
        &server.base,
        answer.json()["deploy"]["status_url"].as_str().unwrap(),
    );
    // The app already runs this digest: nothing to do, no new release.
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["new_release"], false, "{done}");

    tf.config(&config("keepers = { rotated = \"2\" }"));
    let plan = squash(&tf.ok(&["plan", "-input=false", "-no-color"]));
    assert!(plan.contains("must be replaced"), "{plan}");
    tf.apply();
    tf.assert_converged();
    let new = url_of(&tf);
    assert_ne!(old, new);
    assert_eq!(call("POST", &old).status, 404, "the old key is gone");
    assert_eq!(call("POST", &new).status, 202, "the new one works");

    // Import by id: the key cannot be recovered, and terraform says so.
    let id = tf.output("hook_id").as_str().unwrap().to_owned();
    let sibling = tf.sibling();
    sibling.config(&format!(
        "provider \"berth\" {{\n  hooks_url = \"{}\"\n}}\nresource \"berth_deploy_hook\" \"ci\" {{\n  app = \"{name}\"\n}}\n",
        server.base
    ));
    sibling.init();
    let imported = squash(&sibling.ok(&[
        "import",
        "-input=false",
        "-no-color",
        "berth_deploy_hook.ci",
        &id,
    ]));
    assert!(imported.contains("cannot be recovered"), "{imported}");
    let imported = squash(&sibling.fails(&[
        "import",
        "-input=false",
        "-no-color",
        "berth_deploy_hook.ci",
        &id,
    ]));
    assert!(
        imported.contains("already managed") || imported.contains("Resource already"),
        "{imported}"
    );

    // Bad input names the attribute and the fix.
    let bad = Tf::new();
    bad.config(&format!(
        "provider \"berth\" {{}}\nresource \"berth_deploy_hook\" \"x\" {{\n  app = \"{name}\"\n}}\n"
    ));
    bad.init();
    let out = bad.fails(&["plan", "-input=false", "-no-color"]);
    assert!(
        out.contains("Missing base_url") && out.contains("hooks_url"),
        "{out}"
    );
    bad.config("resource \"berth_deploy_hook\" \"x\" {\n  app      = \"no-such-app\"\n  base_url = \"https://deploy.example.com?x=1\"\n}\n");
    let out = bad.fails(&["plan", "-input=false", "-no-color"]);
    assert!(
        out.contains("base_url") && out.contains("query string"),
        "{out}"
    );
    // Plain HTTP to another machine plans, with a warning at base_url
    // (a warning from plan modification: terraform shows it).
    bad.config("resource \"berth_deploy_hook\" \"x\" {\n  app      = \"no-such-app\"\n  base_url = \"http://deploy.example.com\"\n}\n");
    let out = bad.ok(&["plan", "-input=false", "-no-color"]);
    assert!(
        out.contains("Warning: Deploy hook URL in clear text") && out.contains("base_url"),
        "{out}"
    );
    bad.config("resource \"berth_deploy_hook\" \"x\" {\n  app      = \"no-such-app\"\n  base_url = \"https://deploy.example.com\"\n}\n");
    let out = bad.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(
        out.contains("App not found") && out.contains("no-such-app"),
        "{out}"
    );
    assert!(
        out.contains("with berth_deploy_hook.x"),
        "names the resource: {out}"
    );

    // The reverse-proxy example in front: a call through it deploys, and
    // its access log names the path but never the key.
    let proxy = CaddyProxy::start(&server.base);
    let through = new.replace(&server.base, &proxy.base);
    let answer = call("POST", &through);
    assert_eq!(answer.status, 202, "through the proxy: {}", answer.body);
    let logged = proxy.log_when(|log| log.contains("/deploy/"));
    assert!(logged.contains(&format!("/deploy/{id}")), "{logged}");
    let key = new.rsplit_once("key=").unwrap().1;
    assert!(!logged.contains(key), "the proxy logged the key:\n{logged}");
    drop(proxy);

    // Repeated bad keys from one address are slowed down, right key or not.
    let wrong = new.replace("key=", "key=x");
    let first_strike = std::time::Instant::now();
    let mut limited = None;
    for _ in 0..12 {
        let answer = call("POST", &wrong);
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, 404);
    }
    let limited = limited.expect("429 after repeated bad keys");
    assert!(
        limited.headers.contains("retry-after: "),
        "{}",
        limited.headers
    );
    // Right key too: 429, unless this slow machine took so long that the
    // address has earned a strike back (one per 6 s) since the first one.
    let right = call("POST", &new).status;
    if right != 429 {
        assert!(
            first_strike.elapsed() >= berth::hooks::limit::REFILL,
            "the limit did not hold for the address: {right} after {:?}",
            first_strike.elapsed()
        );
    }

    // Removing the hook ends its URL.
    tf.config(&format!(
        "{}{}",
        provider(&server.base),
        app_and_hook(&name, &image, port, "")
            .split("resource \"berth_deploy_hook\"")
            .next()
            .unwrap()
    ));
    tf.apply();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    drop(server);
    let server = HookServer::start(tf.state_dir.path(), "info");
    let answer = call(
        "POST",
        &new.replace(new.split("/deploy/").next().unwrap(), &server.base),
    );
    assert_eq!((answer.status, answer.body.as_str()), (404, NOT_FOUND));
}

/// The key with its last character changed. (Replacing it with a fixed
/// character was the key itself one time in sixteen: the last character of
/// 32 random bytes in unpadded base64url is one of 16.)
fn wrong_key(key: &str) -> String {
    let (head, last) = key.split_at(key.len() - 1);
    let other = if last == "A" { "Q" } else { "A" };
    let wrong = format!("{head}{other}");
    assert_ne!(wrong, key);
    wrong
}

/// Two runners and a hook server as on three machines: each its own state
/// directory, one PostgreSQL store, the team key. Runner A creates a
/// registry credential, an app and its hook; runner B deploys a private
/// app with A's credential; `berth serve` (the third) serves A's hook.
#[test]
fn a_credential_and_a_hook_made_by_one_runner_serve_the_others_on_postgresql() {
    use berth::devtools::fixtures::{AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER};
    require_env();
    let name = unique_app("pghook");
    let private = unique_app("pgpriv");
    let _guards = (AppGuard(name.clone()), AppGuard(private.clone()));
    let repo = "berth/demo";
    let tag = unique_tag("pghook");
    push(repo, &tag, "v1", Variant::Demo);
    let image = format!("{PLAIN_REGISTRY}/{repo}:{tag}");
    let port = free_port();
    let a = Tf::on_postgres();
    let serve_dir = tempfile::tempdir().expect("tempdir");
    let server = HookServer::start_env(serve_dir.path(), "info", &[], &a.store_env());
    a.config(&format!(
        r#"{}{}
resource "berth_registry_credential" "team" {{
  name     = "team"
  registry = "{AUTH_REGISTRY}"
  username = "{AUTH_USER}"
  token    = "{AUTH_PASSWORD}"
}}
output "credential_id" {{ value = berth_registry_credential.team.id }}
"#,
        provider(&server.base),
        app_and_hook(&name, &image, port, "")
    ));
    a.init();
    a.apply();
    assert_eq!(serving(port), "berth demo v1");
    let credential = a.output("credential_id").as_str().expect("id").to_owned();

    // B: its own state directory, A's credential by id.
    let b = a.second_runner();
    assert_ne!(a.state_dir.path(), b.state_dir.path());
    b.config(&format!(
        r#"
resource "berth_app" "private" {{
  name                   = "{private}"
  image                  = "{AUTH_REGISTRY}/berth/private:v1"
  registry_credential_id = "{credential}"
  services = {{
    web = {{ http_port = 8080 }}
  }}
}}
output "endpoint" {{ value = berth_app.private.endpoints["web"][0] }}
"#
    ));
    b.init();
    b.apply();
    let endpoint = b.output("endpoint").as_str().expect("endpoint").to_owned();
    // No health check: the process may take a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        match support::http_body(&endpoint, "/") {
            Some(body) => break body,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => panic!("the private app does not answer on {endpoint}"),
        }
    };
    assert!(body.starts_with("berth demo"), "{body}");
    // A cannot delete the credential B's app uses.
    a.config(&format!(
        "{}{}",
        provider(&server.base),
        app_and_hook(&name, &image, port, "")
    ));
    let refused = squash(&a.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]));
    assert!(refused.contains(&private), "{refused}");

    // The hook server on the third machine deploys A's app on a call.
    let v2 = push(repo, &tag, "v2", Variant::Demo);
    let answer = call("POST", &url_of(&a));
    assert_eq!(answer.status, 202, "{}", answer.body);
    let deploy = answer.json()["deploy"].clone();
    assert_eq!(deploy["digest"], v2.as_str(), "{deploy}");
    let done = wait_final(
        &server.base,
        deploy["status_url"].as_str().expect("status_url"),
    );
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(serving(port), "berth demo v2");
    // The secret env came from the shared store, sealed by A.
    let env = running_env(&name);
    assert!(
        env.iter()
            .any(|e| e == &format!("HOOK_TEST_TOKEN=s3cret-for-{name}")),
        "{env:?}"
    );
    // Both runners see the journal the hook server wrote.
    let journal = block_on(b.open_store().list_releases(name.clone(), 5)).expect("releases");
    assert_eq!(journal[0].trigger, "hook", "{journal:?}");
    assert_eq!(journal[0].digest, v2);

    b.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    a.config(&format!(
        "{}{}",
        provider(&server.base),
        app_and_hook(&name, &image, port, "")
    ));
    a.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(support::app_containers(&name).is_empty());
    assert!(support::app_containers(&private).is_empty());
}
