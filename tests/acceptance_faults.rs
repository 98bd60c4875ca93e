//! Faults, with the real terraform and Docker: what happens when the
//! provider process dies in the middle of a deploy.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use berth::devtools::fixtures::{self, PLAIN_REGISTRY};
use support::{app_containers, block_on, http_body, require_env, unique_app, AppGuard, Tf};

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

/// Containers of `app` carrying `io.berth.release=<release>`.
fn release_containers(app: &str, release: u64) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=io.berth.app={app}"))
        .arg("--filter")
        .arg(format!("label=io.berth.release={release}"))
        .output()
        .expect("docker ps");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
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

#[test]
fn provider_killed_during_roll_then_apply_converges_without_waiting_for_the_lease() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-kill");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    tf.config(&config(&name, &set.demo_v1.reference, ""));
    tf.init();
    tf.apply();
    let endpoint = tf.output("endpoint").as_str().expect("endpoint").to_owned();
    assert_eq!(
        http_body(&endpoint, "/").as_deref(),
        Some("berth demo v1\n")
    );

    // Release 2 never becomes healthy and is probed for a minute: ROLL
    // lasts while the provider is killed.
    tf.config(&config(
        &name,
        &set.unhealthy.reference,
        "health_check = { start_period_seconds = 120 }",
    ));
    let mut apply = tf
        .command(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("terraform apply");
    let begun = Instant::now();
    while release_containers(&name, 2).is_empty() {
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
    // The plugin is terraform's child (found by parentage, killed by pid).
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
        release_containers(&name, 2).is_empty(),
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
