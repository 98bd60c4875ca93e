//! Every kind of drift, made for real on the Docker host behind Berth's
//! back, found by `terraform plan` in words and repaired by `apply`; and
//! the pre-deploy command: on the first deploy, seeing the new image, the
//! env and the secrets, and never on a scale or a repair.

mod support;

use std::collections::BTreeMap;

use berth::devtools::fixtures::{self, PLAIN_REGISTRY};
use support::{app_containers, block_on, http_body, require_env, unique_app, AppGuard, Tf};

/// `docker ARGS…` on host a, its output trimmed.
#[track_caller]
fn docker(args: &[&str]) -> String {
    support::hosts::docker(support::hosts::HOST_A, args)
        .trim()
        .to_owned()
}

/// The image reference a container was created from.
fn image_of(id: &str) -> String {
    docker(&["inspect", "--format", "{{.Config.Image}}", id])
}

fn labels_of(id: &str) -> BTreeMap<String, String> {
    serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        id,
    ]))
    .expect("labels")
}

/// Runs a container by hand carrying `labels` (Berth's, as if it made it).
fn run_with_labels(
    labels: &BTreeMap<String, String>,
    extra: &[&str],
    image: &str,
    cmd: &[&str],
) -> String {
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    for (k, v) in labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(image.into());
    args.extend(cmd.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&refs)
}

/// `terraform plan`: it must show changes, and say `words`.
fn plan_says(tf: &Tf, words: &str) {
    let out = tf.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "plan must show changes:\n{text}"
    );
    assert!(text.contains(words), "plan does not say {words:?}:\n{text}");
}

fn app(name: &str, image: &str, instances: u32, pre_deploy: &str) -> String {
    format!(
        r#"
resource "berth_app" "demo" {{
  name  = "{name}"
  image = "{image}"
  env   = {{ GREETING = "hello" }}
  secret_env = {{ TOKEN = "s3cret-token" }}
  {pre_deploy}
  services = {{
    web = {{
      http_port = 8080
      instances = {instances}
    }}
  }}
}}

output "endpoints" {{ value = berth_app.demo.endpoints["web"] }}
"#
    )
}

/// After apply: converged, `n` instances, each serving `body`.
fn serves(tf: &Tf, name: &str, n: usize, body: &str) {
    tf.assert_converged();
    assert_eq!(app_containers(name).len(), n, "instances");
    let endpoints = tf.output("endpoints");
    for ep in endpoints.as_array().expect("endpoints") {
        assert_eq!(
            http_body(ep.as_str().expect("endpoint"), "/").as_deref(),
            Some(body)
        );
    }
}

#[test]
fn every_kind_of_host_drift_is_found_in_words_and_repaired() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-drift");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    tf.config(&app(&name, &set.demo_v1.reference, 2, ""));
    tf.init();
    tf.apply();
    serves(&tf, &name, 2, "berth demo v1\n");
    let pick = || app_containers(&name)[0].clone();

    // Stopped by hand.
    docker(&["stop", "-t", "1", &pick()]);
    plan_says(&tf, "not running");
    tf.apply();
    serves(&tf, &name, 2, "berth demo v1\n");

    // Crash-looping: an instance replaced by one of its labels whose
    // command exits at once, restarted by Docker for ever.
    let victim = pick();
    let (labels, image) = (labels_of(&victim), image_of(&victim));
    docker(&["rm", "-f", &victim]);
    let looping = run_with_labels(
        &labels,
        &["--restart", "always"],
        &image,
        &["/bin/busybox", "false"],
    );
    // Until Docker's restart backoff (doubling from 100 ms) is long enough
    // that the container is seen restarting, not in the moment it runs:
    // after 5 restarts it waits 3.2 s between runs of a few milliseconds.
    // (At 3 it waits 800 ms, and a refresh that lists it in its running
    // moment sees no drift: the apply then had nothing to repair.)
    let begun = std::time::Instant::now();
    loop {
        let state = docker(&[
            "inspect",
            "--format",
            "{{.State.Restarting}} {{.RestartCount}}",
            &looping,
        ]);
        let (restarting, count) = state.split_once(' ').expect("state");
        if restarting == "true" && count.parse::<u32>().unwrap_or(0) >= 5 {
            break;
        }
        assert!(
            begun.elapsed() < std::time::Duration::from_secs(30),
            "never crash-looping: {state}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    plan_says(&tf, "crash-looping");
    tf.apply();
    serves(&tf, &name, 2, "berth demo v1\n");

    // A foreign image under an instance's labels.
    let victim = pick();
    let labels = labels_of(&victim);
    docker(&["rm", "-f", &victim]);
    run_with_labels(&labels, &[], &set.unhealthy.reference, &[]);
    plan_says(&tf, "foreign image");
    tf.apply();
    serves(&tf, &name, 2, "berth demo v1\n");

    // An extra container carrying Berth's labels (a slot the app has not).
    let model = pick();
    let (mut labels, image) = (labels_of(&model), image_of(&model));
    labels.insert("io.berth.slot".into(), "7".into());
    run_with_labels(&labels, &[], &image, &[]);
    plan_says(&tf, "extra container");
    tf.apply();
    serves(&tf, &name, 2, "berth demo v1\n");

    // A changed spec: an instance whose spec hash is not the app's.
    let victim = pick();
    let (mut labels, image) = (labels_of(&victim), image_of(&victim));
    docker(&["rm", "-f", &victim]);
    labels.insert("io.berth.spec-hash".into(), "edited-by-hand".into());
    run_with_labels(&labels, &[], &image, &[]);
    plan_says(&tf, "spec");
    tf.apply();
    serves(&tf, &name, 2, "berth demo v1\n");
    for id in app_containers(&name) {
        assert_ne!(labels_of(&id)["io.berth.spec-hash"], "edited-by-hand");
    }

    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(app_containers(&name).is_empty());
}

/// How many job containers Docker created for `app` between `since` and
/// now (`docker events`, bounded by `--until`).
fn jobs_created(app: &str, since: &str) -> usize {
    let until = docker(&["system", "info", "--format", "{{.SystemTime}}"]);
    docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--filter",
        "event=create",
        "--filter",
        &format!("label=io.berth.app={app}"),
        "--filter",
        "label=io.berth.kind=job",
        "--format",
        "{{.Actor.ID}}",
    ])
    .lines()
    .filter(|l| !l.is_empty())
    .count()
}

fn daemon_now() -> String {
    docker(&["system", "info", "--format", "{{.SystemTime}}"])
}

#[test]
fn pre_deploy_runs_on_the_first_deploy_with_the_new_image_env_and_secrets_and_never_on_scale_or_repair(
) {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-pre");
    let _guard = AppGuard(name.clone());
    // Succeeds only if it runs from the configured image (its page), with
    // the env and the secret env.
    let check = |version: &str| {
        format!(
            "pre_deploy_command = \"/bin/busybox sh -c 'test \\\"$GREETING\\\" = hello && test \\\"$TOKEN\\\" = s3cret-token && /bin/busybox grep -q \\\"berth demo {version}\\\" /www/index.html'\""
        )
    };
    let tf = Tf::new();

    // A pre-deploy that looks for v2 in the v1 image fails the first
    // deploy: the check can fail, and nothing runs.
    tf.config(&app(&name, &set.demo_v1.reference, 1, &check("v2")));
    tf.init();
    let out = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(out.contains("PRE_DEPLOY failed"), "{out}");
    assert!(
        app_containers(&name).is_empty(),
        "nothing of a failed first deploy runs"
    );

    // The first deploy, for real: the pre-deploy runs once and passes.
    let since = daemon_now();
    tf.config(&app(&name, &set.demo_v1.reference, 1, &check("v1")));
    tf.apply();
    assert_eq!(jobs_created(&name, &since), 1, "one pre-deploy job");
    serves(&tf, &name, 1, "berth demo v1\n");

    // Scale up and down, and a repair: no pre-deploy.
    let since = daemon_now();
    tf.config(&app(&name, &set.demo_v1.reference, 3, &check("v1")));
    tf.apply();
    serves(&tf, &name, 3, "berth demo v1\n");
    tf.config(&app(&name, &set.demo_v1.reference, 1, &check("v1")));
    tf.apply();
    serves(&tf, &name, 1, "berth demo v1\n");
    docker(&["rm", "-f", &app_containers(&name)[0]]);
    tf.apply();
    serves(&tf, &name, 1, "berth demo v1\n");
    assert_eq!(
        jobs_created(&name, &since),
        0,
        "no pre-deploy on scale or repair"
    );

    // A new image: the pre-deploy runs again, from the new image.
    let since = daemon_now();
    tf.config(&app(&name, &set.demo_v2.reference, 1, &check("v2")));
    tf.apply();
    assert_eq!(jobs_created(&name, &since), 1);
    serves(&tf, &name, 1, "berth demo v2\n");

    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

#[test]
fn destroy_after_the_containers_were_removed_by_hand() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-gone");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    tf.config(&app(&name, &set.demo_v1.reference, 2, ""));
    tf.init();
    tf.apply();
    let ids = app_containers(&name);
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    docker(&args);
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    let state = tf.ok(&["state", "list"]);
    assert!(!state.contains("berth_app.demo"), "{state}");
    // And once more, with nothing left: still fine.
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    let networks = docker(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !networks.lines().any(|n| n == format!("berth-{name}")),
        "the app's network is left: {networks}"
    );
}

#[test]
fn secret_env_wo_reaches_the_container_and_never_the_state_or_a_plan_file() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-wo");
    let _guard = AppGuard(name.clone());
    let secret = "wo-secret-7f3a9c";
    let cfg = |value: &str, version: u32| {
        format!(
            r#"
resource "berth_app" "demo" {{
  name                  = "{name}"
  image                 = "{}"
  secret_env_wo         = {{ API_KEY = "{value}" }}
  secret_env_wo_version = {version}
  services = {{
    web = {{ http_port = 8080 }}
  }}
}}
"#,
            set.demo_v1.reference
        )
    };
    let env_of = |name: &str| -> Vec<String> {
        let id = app_containers(name)
            .into_iter()
            .next()
            .expect("a container");
        serde_json::from_str(&docker(&[
            "inspect",
            "--format",
            "{{json .Config.Env}}",
            &id,
        ]))
        .expect("env")
    };
    let tf = Tf::new();
    tf.config(&cfg(secret, 1));
    tf.init();
    tf.ok(&["plan", "-input=false", "-no-color", "-out=wo.plan"]);
    tf.ok(&["apply", "-input=false", "-no-color", "wo.plan"]);
    assert!(env_of(&name).contains(&format!("API_KEY={secret}")));
    tf.assert_converged();

    // A new value with a new version: deployed, and again nowhere else.
    let rotated = "wo-secret-rotated-51be";
    tf.config(&cfg(rotated, 2));
    tf.ok(&["plan", "-input=false", "-no-color", "-out=wo2.plan"]);
    tf.ok(&["apply", "-input=false", "-no-color", "wo2.plan"]);
    assert!(env_of(&name).contains(&format!("API_KEY={rotated}")));

    let state = std::fs::read_to_string(tf.dir.path().join("terraform.tfstate")).expect("state");
    for value in [secret, rotated] {
        assert!(!state.contains(value), "{value} in the state");
    }
    // A plan file: neither the planned values, the prior state nor the
    // changes hold it. (Its snapshot of the configuration holds what the
    // .tf files say literally: terraform's, which is why the docs pass
    // write-only values through an ephemeral variable.)
    for file in ["wo.plan", "wo2.plan"] {
        let shown: serde_json::Value =
            serde_json::from_str(&tf.ok(&["show", "-json", file])).expect("show -json");
        for part in ["planned_values", "prior_state", "resource_changes"] {
            let text = shown[part].to_string();
            assert!(
                !text.contains(secret) && !text.contains(rotated),
                "{file}: {part}: {text}"
            );
        }
    }
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}
