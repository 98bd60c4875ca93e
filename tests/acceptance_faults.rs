//! Faults, with the real terraform and Docker: what happens when the
//! provider process dies in the middle of a deploy.

#[path = "support/own_registry.rs"]
mod own_registry;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use berth::devtools::fixtures::{self, PLAIN_REGISTRY};
use own_registry::OwnRegistry;
use support::hosts::{ids_on, TwoHostGuard, DOCKER_B_PIDFILE, HOST_A, HOST_B};
use support::{app_containers, block_on, http_body, require_env, squash, unique_app, AppGuard, Tf};

fn config(name: &str, image: &str, health: &str) -> String {
    format!(
        r#"
resource "berth_app" "demo" {{
  name  = "{name}"
  image = "{image}"
  services = {{
    web = {{
      http_port = 8080
      {health}
    }}
  }}
}}

output "endpoint" {{ value = berth_app.demo.endpoints["web"][0] }}
"#
    )
}

/// The pids of the processes whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Applies `v1` (a config serving the demo v1), checks it serves, and
/// starts applying `rolling` (an unhealthy release probed for two
/// minutes) in the background; returns v1's endpoint and the apply.
fn serve_v1_then_roll(
    tf: &Tf,
    v1: &str,
    rolling: &str,
    capture: bool,
) -> (String, std::process::Child) {
    tf.config(v1);
    tf.init();
    tf.apply();
    let endpoint = tf.output("endpoint").as_str().expect("endpoint").to_owned();
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some("berth demo v1\n")
    );
    tf.config(rolling);
    let apply = tf
        .command(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("terraform apply");
    (endpoint, apply)
}

const ROLLING: &str = "health_check = { start_period_seconds = 120 }";

#[test]
fn provider_killed_during_roll_then_apply_converges_without_waiting_for_the_lease() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-kill");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    let (endpoint, mut apply) = serve_v1_then_roll(
        &tf,
        &config(&name, &set.demo_v1.reference, ""),
        &config(&name, &set.unhealthy.reference, ROLLING),
        false,
    );
    kill_plugin_during_release_2(&name, &mut apply);
    let status = apply.wait().expect("terraform exits");
    assert!(!status.success(), "apply must fail when its provider dies");

    // The running release never stopped serving.
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some("berth demo v1\n")
    );

    // The next apply takes over the dead process's lease at once (its log
    // says so) instead of waiting for it to expire, removes the orphan of
    // release 2, and deploys.
    let log = tf.dir.path().join("provider.log");
    tf.config(&config(&name, &set.demo_v2.reference, ""));
    let out = tf
        .command(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .env("TF_LOG_PROVIDER", "INFO")
        .env("TF_LOG_PATH", &log)
        .output()
        .expect("terraform apply");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let logged = std::fs::read_to_string(&log).expect("provider log");
    assert!(
        logged.contains("took over the deploy lease of a process that is gone"),
        "the lease was not taken over:\n{}",
        logged
            .lines()
            .filter(|l| l.contains("lease"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        ids_on(HOST_A, &name, Some(2)).is_empty(),
        "orphan of release 2 left"
    );
    assert_eq!(app_containers(&name).len(), 1, "one instance");
    let endpoint = tf.output("endpoint").as_str().expect("endpoint").to_owned();
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some("berth demo v2\n")
    );
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(app_containers(&name).is_empty());
}

#[test]
fn registry_gone_between_plan_and_pull_fails_clearly_and_v1_keeps_serving() {
    require_env();
    let user = "puller";
    let password = "pull-pass";
    let mut registry = OwnRegistry::start(user, password);
    let addr = registry.addr.clone();
    let name = unique_app("acc-regdown");
    let _guard = AppGuard(name.clone());
    // v1 and a v2 unique to this test, so the host has to pull it.
    let push = |tag: &str, version: &str| {
        block_on(fixtures::push_demo(
            &addr,
            "berth/private",
            tag,
            version,
            Some((user, password)),
        ))
        .expect("push")
    };
    push("v1", "v1");
    let v2 = push("v2", &format!("v2 {name}"));
    let app = |tag: &str| {
        format!(
            r#"
resource "berth_registry_credential" "ci" {{
  name     = "{name}"
  registry = "{addr}"
  username = "{user}"
  token    = "{password}"
}}
resource "berth_app" "demo" {{
  name                   = "{name}"
  image                  = "{addr}/berth/private:{tag}"
  registry_credential_id = berth_registry_credential.ci.id
  services = {{
    web = {{ http_port = 8080 }}
  }}
}}
output "endpoint" {{ value = berth_app.demo.endpoints["web"][0] }}
"#
        )
    };
    let tf = Tf::new();
    tf.config(&app("v1"));
    tf.init();
    tf.apply();
    let endpoint = tf.output("endpoint").as_str().expect("endpoint").to_owned();
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some("berth demo v1\n")
    );

    // Plan resolves v2 while the registry answers; then it stops.
    tf.config(&app("v2"));
    tf.ok(&["plan", "-input=false", "-no-color", "-out=v2.plan"]);
    let pinned = format!("{addr}/berth/private@{}", v2.digest);
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", &pinned])
        .output();
    registry.stop();
    let out = tf.fails(&["apply", "-input=false", "-no-color", "v2.plan"]);
    assert!(out.contains("PULL"), "names the phase: {out}");
    assert!(out.contains("local"), "names the host: {out}");
    assert!(out.contains(&addr), "names the registry: {out}");
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some("berth demo v1\n"),
        "the running release is untouched"
    );
    assert_eq!(app_containers(&name).len(), 1);

    // Back: the next apply converges.
    registry.set_password(password);
    tf.apply();
    let endpoint = tf.output("endpoint").as_str().expect("endpoint").to_owned();
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some(format!("berth demo v2 {name}\n").as_str())
    );
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

#[test]
fn a_read_only_or_full_state_directory_fails_clearly_and_corrupts_nothing() {
    // Inside a mount namespace of its own (`unshare -m`), Berth's state
    // directory is a 4 MiB tmpfs that the script makes read-only, then
    // full, then gives back; the `berth` command deploys through it.
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-disk");
    let _guard = AppGuard(name.clone());
    let work = tempfile::tempdir().expect("dir");
    let spec = |image: &str| {
        format!("name: {name}\nimage: {image}\nservices:\n  web:\n    http_port: 8080\n")
    };
    std::fs::write(work.path().join("v1.yaml"), spec(&set.demo_v1.reference)).expect("v1");
    std::fs::write(work.path().join("v2.yaml"), spec(&set.demo_v2.reference)).expect("v2");
    let state = work.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let script = r#"
set -u
berth() { "$BERTH" "$@"; }
serving() { docker ps -q --filter "label=io.berth.app=$APP" --filter "label=io.berth.release=$1" | wc -l; }
mount -t tmpfs -o size=4m tmpfs "$BERTH_STATE_DIR" || exit 90
berth apply -f "$WORK/v1.yaml" >/dev/null 2>&1; echo "v1=$?"
mount -o remount,ro "$BERTH_STATE_DIR"
berth apply -f "$WORK/v2.yaml" 2>"$WORK/ro.err" >/dev/null; echo "ro=$?"
echo "ro_serving=$(serving 1)"
mount -o remount,rw "$BERTH_STATE_DIR"
dd if=/dev/zero of="$BERTH_STATE_DIR/fill" bs=64k 2>/dev/null
berth apply -f "$WORK/v2.yaml" 2>"$WORK/full.err" >/dev/null; echo "full=$?"
echo "full_serving=$(serving 1)"
rm -f "$BERTH_STATE_DIR/fill"
echo "integrity=$(sqlite3 "$BERTH_STATE_DIR/berth.db" 'PRAGMA integrity_check')"
berth apply -f "$WORK/v2.yaml" >/dev/null 2>"$WORK/back.err"; echo "back=$?"
berth releases "$APP" --json > "$WORK/releases.json"; echo "releases=$?"
berth destroy "$APP" >/dev/null 2>&1; echo "destroy=$?"
"#;
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", script])
        .env("BERTH", env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_STATE_DIR", &state)
        .env("BERTH_TEST_LABEL", "1")
        .env_remove("BERTH_SECRET_KEY")
        .env("WORK", work.path())
        .env("APP", &name)
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let read = |file: &str| std::fs::read_to_string(work.path().join(file)).unwrap_or_default();
    let says = |line: &str| text.lines().any(|l| l == line);
    let context = format!(
        "{text}\nread-only: {}\nfull: {}\nback: {}\nstderr: {}",
        read("ro.err"),
        read("full.err"),
        read("back.err"),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(says("v1=0"), "{context}");
    // Read-only: refused with a message that says so; v1 serves on.
    assert!(says("ro=1"), "{context}");
    assert!(
        read("ro.err").to_lowercase().contains("read-only"),
        "{context}"
    );
    assert!(
        read("ro.err").contains(&state.display().to_string()),
        "{context}"
    );
    assert!(says("ro_serving=1"), "{context}");
    // Full: refused, says the disk is full; v1 serves on.
    assert!(says("full=1"), "{context}");
    assert!(read("full.err").contains("full"), "{context}");
    assert!(
        read("full.err").to_lowercase().contains("free some space"),
        "{context}"
    );
    assert!(says("full_serving=1"), "{context}");
    // The store is whole, and with space back the deploy goes through.
    assert!(says("integrity=ok"), "{context}");
    assert!(says("back=0"), "{context}");
    assert!(says("releases=0"), "{context}");
    let journal: serde_json::Value =
        serde_json::from_str(&read("releases.json")).expect("releases --json");
    assert_eq!(journal["releases"][0]["outcome"], "succeeded", "{journal}");
    assert_eq!(journal["releases"][0]["release"], 2, "{journal}");
    assert!(says("destroy=0"), "{context}");
}

/// Restarts the dev environment's second daemon (host b): SIGTERM to the
/// pid in its pidfile (a daemon tests/devenv.sh started), wait for it to
/// exit, start it again with `tests/devenv.sh up`.
fn restart_docker_b() {
    let pid = std::fs::read_to_string(DOCKER_B_PIDFILE).expect("host b's pidfile");
    let pid = pid.trim().to_owned();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(term.success(), "SIGTERM to dockerd b ({pid})");
    let begun = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            begun.elapsed() < Duration::from_secs(60),
            "dockerd b did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let up = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/devenv.sh"))
        .arg("up")
        .env("BERTH_DEV_SKIP_FIXTURES", "1")
        .output()
        .expect("devenv up");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
}

#[test]
fn docker_daemon_restarted_during_a_deploy_then_apply_converges() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-dockerd");
    let _guard = TwoHostGuard(name.clone());
    let app = |image: &str, health: &str| {
        format!(
            "provider \"berth\" {{\n  hosts = {{\n    b = {{\n      address         = \"{HOST_B}\"\n      publish_address = \"127.0.0.2\"\n    }}\n  }}\n}}\n{}",
            config(&name, image, health)
        )
    };
    let tf = Tf::new();
    let (_, apply) = serve_v1_then_roll(
        &tf,
        &app(&set.demo_v1.reference, ""),
        &app(&set.unhealthy.reference, ROLLING),
        true,
    );
    let begun = Instant::now();
    while ids_on(HOST_B, &name, Some(2)).is_empty() {
        assert!(
            begun.elapsed() < Duration::from_secs(60),
            "release 2 never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    restart_docker_b();
    let out = apply.wait_with_output().expect("terraform apply ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It fails, saying what failed on which host, within its bounds:
    // the daemon unreachable, or (on a kept-alive connection it still
    // answers while shutting down) the new container stopped on host b.
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("ROLL failed"), "{text}");
    assert!(
        text.contains("Docker host `b`")
            || squash(&text).contains("on host b did not become healthy"),
        "{text}"
    );

    // The next apply converges: v2, one instance, nothing of release 2.
    tf.config(&app(&set.demo_v2.reference, ""));
    tf.apply();
    assert!(
        ids_on(HOST_B, &name, Some(2)).is_empty(),
        "orphan of release 2"
    );
    assert_eq!(ids_on(HOST_B, &name, None).len(), 1, "one instance");
    let endpoint = tf.output("endpoint").as_str().expect("endpoint").to_owned();
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some("berth demo v2\n")
    );
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(ids_on(HOST_B, &name, None).is_empty());
}

/// An app whose every deploy lasts a few seconds (a pre-deploy command),
/// so two applies started together overlap.
fn slow_config(name: &str, image: &str, who: &str) -> String {
    format!(
        r#"
resource "berth_app" "demo" {{
  name               = "{name}"
  image              = "{image}"
  env                = {{ APPLIED_BY = "{who}" }}
  pre_deploy_command = "/bin/busybox sleep 3"
  services = {{
    web = {{ http_port = 8080 }}
  }}
}}
"#
    )
}

/// Runs `terraform apply` in both directories at once; their outputs.
fn apply_both(a: &Tf, b: &Tf) -> [std::process::Output; 2] {
    let spawn = |tf: &Tf| {
        tf.command(&["apply", "-auto-approve", "-input=false", "-no-color"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn terraform apply")
    };
    let (pa, pb) = (spawn(a), spawn(b));
    [
        pa.wait_with_output().expect("apply a"),
        pb.wait_with_output().expect("apply b"),
    ]
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The env var `APPLIED_BY` of a container.
fn applied_by(id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Env}}", id])
        .output()
        .expect("docker inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env: Vec<String> = serde_json::from_slice(&out.stdout).expect("env json");
    env.iter()
        .find_map(|e| e.strip_prefix("APPLIED_BY=").map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn two_concurrent_applies_of_one_app_serialize_and_never_take_over_each_other() {
    // Two working directories sharing one state directory's store.
    let a = Tf::new();
    let b = a.sibling();
    two_concurrent_applies_of_one_app(a, b);
}

#[test]
fn two_runners_on_one_postgresql_store_apply_one_app_one_at_a_time() {
    // Two runners as on two machines: each its own state directory, one
    // PostgreSQL store, the team key.
    let a = Tf::on_postgres();
    let b = a.second_runner();
    assert_ne!(a.state_dir.path(), b.state_dir.path());
    two_concurrent_applies_of_one_app(a, b);
}

fn two_concurrent_applies_of_one_app(a: Tf, b: Tf) {
    require_env();
    let name = unique_app("acc-twoapply");
    let _guard = AppGuard(name.clone());
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let image = &set.demo_v1.reference;
    a.config(&slow_config(&name, image, "a"));
    b.config(&slow_config(&name, image, "b"));
    a.init();
    b.init();

    // Both create the app at once: one does, the other is refused and
    // told to import; it never deploys over the first one's app.
    let [oa, ob] = apply_both(&a, &b);
    let ok: Vec<_> = [&oa, &ob].iter().map(|o| o.status.success()).collect();
    assert_eq!(
        ok.iter().filter(|s| **s).count(),
        1,
        "exactly one create succeeds:\n--- a\n{}\n--- b\n{}",
        text(&oa),
        text(&ob)
    );
    let (winner, loser, loser_out) = if ok[0] { (&a, &b, &ob) } else { (&b, &a, &oa) };
    let refused = support::squash(&text(loser_out));
    assert!(refused.contains("App already exists"), "{refused}");
    assert!(refused.contains("terraform import"), "{refused}");
    assert!(refused.contains("berth_app.demo"), "{refused}");
    let running = app_containers(&name);
    assert_eq!(running.len(), 1, "one instance of one release: {running:?}");
    assert_eq!(ids_on(HOST_A, &name, Some(1)).len(), 1);
    assert_eq!(ids_on(HOST_A, &name, Some(2)).len(), 0, "no second release");
    let won_by = if std::ptr::eq(winner, &a) { "a" } else { "b" };
    assert_eq!(applied_by(&running[0]), won_by);

    // The refused runner imports it: now both manage it, and both apply
    // a change at once. The lease serializes them: both succeed, one after
    // the other, and the app ends on the release journaled last.
    loser.ok(&["import", "-no-color", "berth_app.demo", &name]);
    a.config(&slow_config(&name, image, "a, again"));
    b.config(&slow_config(&name, image, "b, again"));
    let [oa, ob] = apply_both(&a, &b);
    assert!(oa.status.success(), "{}", text(&oa));
    assert!(ob.status.success(), "{}", text(&ob));
    let store = a.open_store();
    let releases = block_on(store.list_releases(name.clone(), 10)).expect("releases");
    let mut numbers: Vec<u64> = releases.iter().map(|r| r.release).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3], "{releases:?}");
    let last = releases.iter().max_by_key(|r| r.release).expect("last");
    assert_eq!(
        last.outcome,
        berth::store::ReleaseOutcome::Succeeded,
        "{last:?}"
    );
    // The second waited for the first's lease: its lock phase took
    // about a deploy's length, not nothing.
    let waited = last
        .phases
        .iter()
        .find(|(p, _)| p == "lock")
        .map(|(_, ms)| *ms)
        .unwrap_or(0);
    assert!(
        waited >= 1000,
        "the later deploy waited {waited} ms: {:?}",
        last.phases
    );
    let running = app_containers(&name);
    assert_eq!(running.len(), 1, "no orphan of either release: {running:?}");
    assert_eq!(ids_on(HOST_A, &name, Some(3)), running);
    let spec: serde_json::Value = serde_json::from_str(&last.spec_json).expect("spec json");
    assert_eq!(
        applied_by(&running[0]),
        spec["env"]["APPLIED_BY"].as_str().unwrap_or("?")
    );
    // Each runner's next plan shows the other's change as a diff to
    // undo, never an error.
    for tf in [&a, &b] {
        tf.ok(&["plan", "-no-color", "-input=false"]);
    }
    a.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    assert!(app_containers(&name).is_empty());
}

/// Waits (bounded) until release 2 of `name` has a container, then
/// SIGKILLs the provider plugin of `apply` (terraform's child, found by
/// parentage, killed by pid).
fn kill_plugin_during_release_2(name: &str, apply: &mut std::process::Child) {
    let begun = Instant::now();
    while ids_on(HOST_A, name, Some(2)).is_empty() {
        assert!(
            begun.elapsed() < Duration::from_secs(60),
            "release 2 never started"
        );
        assert!(
            apply.try_wait().expect("wait").is_none(),
            "apply ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let plugins: Vec<u32> = children(apply.id())
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.to_string_lossy().contains("terraform-provider-berth"))
        })
        .collect();
    assert_eq!(plugins.len(), 1, "one plugin process: {plugins:?}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &plugins[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
}

#[test]
fn a_runner_killed_holding_the_lease_blocks_another_runner_until_it_expires() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-pgkill");
    let _guard = AppGuard(name.clone());
    // Two runners as on two machines (different runner names: neither can
    // tell whether the other's process still runs), one PostgreSQL store.
    // A's leases live 20 s without renewal.
    let a = Tf::on_postgres()
        .env("BERTH_RUNNER", "runner-a")
        .env("BERTH_LEASE_TTL", "20");
    let (endpoint, mut apply) = serve_v1_then_roll(
        &a,
        &config(&name, &set.demo_v1.reference, ""),
        &config(&name, &set.unhealthy.reference, ROLLING),
        false,
    );
    kill_plugin_during_release_2(&name, &mut apply);
    let killed_at = Instant::now();
    assert!(!apply.wait().expect("terraform exits").success());

    // B takes the app over in its own working directory and state
    // directory. Waiting at most 1 s, it fails naming A's lease: which
    // runner, which process, since when.
    let b = a
        .second_runner()
        .env("BERTH_RUNNER", "runner-b")
        .env("BERTH_LOCK_WAIT", "1");
    b.config(&config(&name, &set.demo_v2.reference, ""));
    b.init();
    b.ok(&[
        "import",
        "-no-color",
        "-input=false",
        "berth_app.demo",
        &name,
    ]);
    let refused =
        support::squash(&b.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]));
    assert!(
        killed_at.elapsed() < Duration::from_secs(18),
        "too slow to see the lease held ({:?}); the test proves nothing",
        killed_at.elapsed()
    );
    assert!(refused.contains("another deploy of app"), "{refused}");
    assert!(refused.contains("on host runner-a"), "{refused}");
    assert!(refused.contains(" since 20"), "{refused}");
    // Release 1 still serves; nothing of B's was started.
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some("berth demo v1\n")
    );

    // With the default wait, B waits for A's lease to expire, takes it,
    // removes what A left of release 2 and deploys v2.
    let b = b.env("BERTH_LOCK_WAIT", "60");
    b.ok(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    let store = b.open_store();
    let releases = block_on(store.list_releases(name.clone(), 10)).expect("releases");
    let last = releases.first().expect("a release");
    assert_eq!(
        last.outcome,
        berth::store::ReleaseOutcome::Succeeded,
        "{last:?}"
    );
    let waited = last
        .phases
        .iter()
        .find(|(p, _)| p == "lock")
        .map(|(_, ms)| *ms)
        .unwrap_or(0);
    assert!(
        waited >= 1000,
        "B took the lease without waiting: {:?}",
        last.phases
    );
    // A's release 2 is journaled as failed by B, saying why.
    let abandoned = releases.iter().find(|r| r.release == 2).expect("release 2");
    assert_eq!(
        abandoned.outcome,
        berth::store::ReleaseOutcome::Failed,
        "{abandoned:?}"
    );
    assert!(
        abandoned
            .error
            .as_deref()
            .unwrap_or("")
            .contains("stopped before it finished"),
        "{abandoned:?}"
    );
    assert!(
        ids_on(HOST_A, &name, Some(2)).is_empty(),
        "orphan of release 2 left"
    );
    let endpoint = b.output("endpoint").as_str().expect("endpoint").to_owned();
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some("berth demo v2\n")
    );
    b.assert_converged();
    b.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(app_containers(&name).is_empty());
}
