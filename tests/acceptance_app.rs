//! Acceptance tests for `berth_app`: the real terraform, the real Docker
//! Engine and the local registry, in steps (create → move the tag → plan
//! shows the digest diff → apply → drift → repair → import → destroy) and
//! the failure cases (unhealthy service, failing pre-deploy, arm64 image).

#[path = "support/counting_relay.rs"]
mod counting_relay;
mod support;

use berth::devtools::fixtures::{self, PLAIN_REGISTRY};
use counting_relay::CountingRelay;
use support::{
    app_containers, block_on, http_body, require_env, unique_app, unique_tag, AppGuard, Tf,
};

/// A one-service app; `extra` goes into the resource, `service_extra` into
/// the `web` service.
fn app_config_with(name: &str, image: &str, extra: &str, service_extra: &str) -> String {
    format!(
        r#"
resource "berth_app" "demo" {{
  name  = "{name}"
  image = "{image}"
{extra}
  services = {{
    web = {{
      http_port = 8080
{service_extra}
    }}
  }}
}}

output "endpoint" {{ value = try(berth_app.demo.endpoints["web"][0], "") }}
output "digest" {{ value = berth_app.demo.image_digest }}
output "release" {{ value = berth_app.demo.release }}
"#
    )
}

fn app_config(name: &str, image: &str, extra: &str) -> String {
    app_config_with(name, image, extra, "")
}

fn body(tf: &Tf) -> String {
    let ep = tf.output("endpoint");
    http_body(ep.as_str().expect("endpoint"), "/").unwrap_or_default()
}

#[test]
fn deploy_update_drift_repair_import_destroy() {
    require_env();
    let name = unique_app("acc-app");
    let _guard = AppGuard(name.clone());
    let tag = unique_tag("app");
    let v1 = block_on(fixtures::push_demo(
        PLAIN_REGISTRY,
        "berth/demo",
        &tag,
        "v1",
        None,
    ))
    .expect("v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let tf = Tf::new();
    tf.config(&app_config(&name, &image, ""));
    tf.init();

    // Create: the endpoint serves v1 and the plan after apply is empty.
    tf.apply();
    assert_eq!(tf.output("digest"), v1.digest.as_str());
    assert_eq!(tf.output("release"), 1);
    assert_eq!(body(&tf), "berth demo v1\n");
    tf.assert_converged();
    let ids = app_containers(&name);
    assert_eq!(ids.len(), 1, "one web instance: {ids:?}");

    // Move the tag: plan shows the digest diff; apply deploys v2.
    let v2 = block_on(fixtures::push_demo(
        PLAIN_REGISTRY,
        "berth/demo",
        &tag,
        "v2",
        None,
    ))
    .expect("v2");
    let plan = tf.plan_json();
    let change = &plan["resource_changes"][0]["change"];
    assert_eq!(
        change["before"]["image_digest"],
        v1.digest.as_str(),
        "{change}"
    );
    assert_eq!(
        change["after"]["image_digest"],
        v2.digest.as_str(),
        "{change}"
    );
    tf.apply();
    assert_eq!(body(&tf), "berth demo v2\n");
    assert_eq!(tf.output("release"), 2);
    tf.assert_converged();
    assert_eq!(
        app_containers(&name).len(),
        1,
        "the old instance was stopped"
    );

    // Remove the instance out of band: plan says why; apply repairs.
    let ids = app_containers(&name);
    let rm = std::process::Command::new("docker")
        .arg("rm")
        .arg("-f")
        .args(&ids)
        .output()
        .expect("docker rm");
    assert!(rm.status.success());
    let out = tf.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "plan must show changes:\n{text}"
    );
    assert!(text.contains("is missing on host local"), "{text}");
    let refresh = tf.ok(&["plan", "-refresh-only", "-input=false", "-no-color"]);
    assert!(refresh.contains("is missing on host local"), "{refresh}");
    tf.apply();
    assert_eq!(body(&tf), "berth demo v2\n");
    assert_eq!(tf.output("release"), 2, "a repair is not a new release");
    tf.assert_converged();

    // Import by app name into a fresh state: nothing to change.
    let fresh = tf.sibling();
    fresh.config(&app_config(&name, &image, ""));
    fresh.init();
    fresh.ok(&[
        "import",
        "-input=false",
        "-no-color",
        "berth_app.demo",
        &name,
    ]);
    let out = fresh.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "plan after import must be empty:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Destroy removes every container of the app; a second destroy succeeds.
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(app_containers(&name).is_empty());
    fresh.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

#[test]
fn unhealthy_release_fails_and_v1_keeps_serving() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-unhealthy");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    tf.config(&app_config(&name, &set.demo_v1.reference, ""));
    tf.init();
    tf.apply();
    assert_eq!(body(&tf), "berth demo v1\n");
    let endpoint = tf.output("endpoint");

    tf.config(&app_config_with(
        &name,
        &set.unhealthy.reference,
        "",
        "      health_check = { start_period_seconds = 3, unhealthy_threshold = 2 }",
    ));
    let out = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(out.contains("did not become healthy"), "{out}");
    // Failures after the start period are counted: unhealthy_threshold.
    assert!(
        out.contains("2 probes in a row failed after the start period"),
        "{out}"
    );
    assert!(out.contains("ROLL failed"), "{out}");
    assert!(out.contains("last probe"), "{out}");
    // v1 still serves, at the same endpoint.
    assert_eq!(
        http_body(endpoint.as_str().expect("endpoint"), "/").as_deref(),
        Some("berth demo v1\n")
    );
    assert_eq!(
        app_containers(&name).len(),
        1,
        "the new container was removed"
    );
}

#[test]
fn failing_pre_deploy_aborts_and_v1_is_untouched() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-predeploy");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    tf.config(&app_config(&name, &set.demo_v1.reference, ""));
    tf.init();
    tf.apply();
    let before = app_containers(&name);

    tf.config(&app_config(
        &name,
        &set.demo_v2.reference,
        "  pre_deploy_command = \"/bin/busybox sh -c 'echo migrating now; exit 3'\"\n",
    ));
    let out = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(out.contains("PRE_DEPLOY failed"), "{out}");
    assert!(out.contains("exited with code 3"), "{out}");
    assert!(out.contains("migrating now"), "{out}");
    assert_eq!(
        app_containers(&name),
        before,
        "the running release was not touched"
    );
    assert_eq!(body(&tf), "berth demo v1\n");
}

#[test]
fn arm64_only_image_fails_at_plan() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-arm");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    tf.config(&app_config(&name, &set.arm64_only.reference, ""));
    tf.init();
    let out = tf.fails(&["plan", "-input=false", "-no-color"]);
    assert!(out.contains("linux/arm64"), "{out}");
    assert!(out.contains("with berth_app.demo"), "{out}");
    assert!(app_containers(&name).is_empty());
}

#[test]
fn scaling_changes_instances_without_a_new_release() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-scale");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    let cfg = |n: u32| {
        format!(
            r#"
resource "berth_app" "demo" {{
  name  = "{name}"
  image = "{}"
  services = {{
    web = {{ instances = {n} }}
  }}
  workers = {{
    queue = {{ command = "/bin/busybox sleep 100000" }}
  }}
}}
output "release" {{ value = berth_app.demo.release }}
output "endpoints" {{ value = berth_app.demo.endpoints["web"] }}
"#,
            set.demo_v1.reference
        )
    };
    tf.config(&cfg(1));
    tf.init();
    tf.apply();
    assert_eq!(app_containers(&name).len(), 2, "web + worker");
    tf.config(&cfg(3));
    tf.apply();
    assert_eq!(tf.output("release"), 1);
    let eps = tf.output("endpoints");
    assert_eq!(eps.as_array().map(|a| a.len()), Some(3), "{eps}");
    for ep in eps.as_array().into_iter().flatten() {
        assert_eq!(
            http_body(ep.as_str().unwrap_or(""), "/").as_deref(),
            Some("berth demo v1\n")
        );
    }
    assert_eq!(app_containers(&name).len(), 4);
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(app_containers(&name).is_empty());
}

#[test]
fn apply_deploys_the_planned_digest_even_if_the_tag_moves_in_between() {
    require_env();
    let name = unique_app("acc-pinned");
    let _guard = AppGuard(name.clone());
    let tag = unique_tag("pinned");
    let v1 = block_on(fixtures::push_demo(
        PLAIN_REGISTRY,
        "berth/demo",
        &tag,
        "v1",
        None,
    ))
    .expect("v1");
    let tf = Tf::new();
    tf.config(&app_config(
        &name,
        &format!("{PLAIN_REGISTRY}/berth/demo:{tag}"),
        "",
    ));
    tf.init();
    tf.ok(&["plan", "-out=tfplan", "-input=false", "-no-color"]);
    block_on(fixtures::push_demo(
        PLAIN_REGISTRY,
        "berth/demo",
        &tag,
        "v2",
        None,
    ))
    .expect("v2");
    tf.ok(&["apply", "-input=false", "-no-color", "tfplan"]);
    assert_eq!(tf.output("digest"), v1.digest.as_str());
    assert_eq!(body(&tf), "berth demo v1\n");
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

#[test]
fn image_unknown_at_plan_time_gives_an_unknown_digest() {
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("acc-unknown");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    tf.config(&format!(
        r#"
resource "terraform_data" "image" {{
  input = "{}"
}}
{}"#,
        set.demo_v1.reference,
        app_config(&name, "${terraform_data.image.output}", "")
    ));
    tf.init();
    let plan = tf.plan_json();
    let after_unknown = &plan["resource_changes"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["type"] == "berth_app"))
        .expect("berth_app change")["change"]["after_unknown"];
    assert_eq!(after_unknown["image_digest"], true, "{after_unknown}");
    tf.apply();
    assert_eq!(tf.output("digest"), set.demo_v1.digest.as_str());
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

/// A plan resolves each image once, however many apps and data sources
/// name it, and a later plan of the same digest needs only a HEAD request
/// (counted by a relay in front of the real registry).
#[test]
fn a_plan_asks_the_registry_once_per_image() {
    require_env();
    let tag = unique_tag("once");
    block_on(fixtures::push_demo(
        PLAIN_REGISTRY,
        "berth/demo",
        &tag,
        "v1",
        None,
    ))
    .expect("push");
    let relay = CountingRelay::start(PLAIN_REGISTRY);
    let image = format!("{}/berth/demo:{tag}", relay.addr);
    let (a, b) = (unique_app("acc-once-a"), unique_app("acc-once-b"));
    let tf = Tf::new();
    tf.config(&format!(
        r#"
data "berth_image" "pinned" {{ image = "{image}" }}

resource "berth_app" "app" {{
  for_each = toset(["{a}", "{b}"])
  name     = each.key
  image    = "{image}"
  services = {{ web = {{ http_port = 8080 }} }}
}}
"#
    ));
    tf.init();
    let plan = tf.ok(&["plan", "-input=false", "-no-color"]);
    assert!(plan.contains("2 to add"), "{plan}");
    let asked = relay.requests(&format!("/manifests/{tag}"));
    let gets = |asked: &[String]| asked.iter().filter(|l| l.starts_with("GET ")).count();
    assert_eq!(
        gets(&asked),
        1,
        "one manifest GET for three uses: {asked:?}"
    );

    // The digest is remembered: the next plan sends only a HEAD request.
    tf.ok(&["plan", "-input=false", "-no-color"]);
    let again = relay.requests(&format!("/manifests/{tag}"));
    assert_eq!(gets(&again), 1, "no new GET: {again:?}");
    assert_eq!(again.len(), asked.len() + 1, "one HEAD: {again:?}");
}

/// The second plan of a configuration sends the registry requests the
/// first one made all at once, before terraform reaches each app (so a
/// far registry costs a round trip or two, not one per ten apps), and
/// asks no more than before: one HEAD per tag, and nothing at all for
/// `plan -refresh-only` or a destroy.
#[test]
fn a_plan_sends_the_last_plans_image_requests_early_and_no_more() {
    require_env();
    let tags: Vec<String> = (0..3).map(|i| unique_tag(&format!("early{i}"))).collect();
    for tag in &tags {
        block_on(fixtures::push_demo(
            PLAIN_REGISTRY,
            "berth/demo",
            tag,
            "v1",
            None,
        ))
        .expect("push");
    }
    let relay = CountingRelay::start(PLAIN_REGISTRY);
    let log = tempfile::NamedTempFile::new().expect("log file");
    let log_path = log.path().to_string_lossy().into_owned();
    let tf = Tf::new()
        .env("TF_LOG_PROVIDER", "DEBUG")
        .env("TF_LOG_PATH", &log_path);
    let apps: Vec<String> = tags
        .iter()
        .map(|tag| {
            format!(
                "\"{}\" = \"{}/berth/demo:{tag}\"",
                unique_app("acc-early"),
                relay.addr
            )
        })
        .collect();
    tf.config(&format!(
        r#"
resource "berth_app" "app" {{
  for_each = {{ {} }}
  name     = each.key
  image    = each.value
  services = {{ web = {{ http_port = 8080, instances = 0 }} }}
}}
"#,
        apps.join(", ")
    ));
    tf.init();
    tf.apply();
    let hints: Vec<std::path::PathBuf> = std::fs::read_dir(tf.state_dir.path().join("plan-hints"))
        .expect("the plan left its hints")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(hints.len(), 1, "{hints:?}");
    let remembered = std::fs::read_to_string(&hints[0]).expect("read hints");
    for tag in &tags {
        assert!(remembered.contains(tag.as_str()), "{tag} in {remembered}");
    }

    let early = || {
        std::fs::read_to_string(&log_path)
            .expect("read log")
            .lines()
            .filter(|l| l.contains("sent the image requests of the last plan"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // In the order the registry got them.
    let manifest_requests = || -> Vec<String> {
        relay
            .requests("/manifests/")
            .into_iter()
            .filter(|l| tags.iter().any(|tag| l.contains(tag.as_str())))
            .collect()
    };
    assert!(early().is_empty(), "nothing to send before the first plan");
    let before = manifest_requests().len();
    let plan = tf.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "the plan after apply is not empty:\n{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let sent = early();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].contains("images=3"), "{}", sent[0]);
    let asked = manifest_requests();
    let new: Vec<&String> = asked[before..].iter().collect();
    assert_eq!(new.len(), 3, "one request per tag: {new:?}");
    assert!(new.iter().all(|l| l.starts_with("HEAD ")), "{new:?}");

    let before = manifest_requests();
    tf.ok(&["plan", "-refresh-only", "-input=false", "-no-color"]);
    assert_eq!(
        manifest_requests(),
        before,
        "a refresh-only plan asked the registry"
    );
    assert_eq!(early().len(), 1, "a refresh-only plan sent requests early");

    // terraform's destroy plans the configuration once first (its
    // pre-destroy refresh): one HEAD per tag, as before, never more.
    let before = manifest_requests().len();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    let asked = manifest_requests();
    let new: Vec<&String> = asked[before..].iter().collect();
    assert!(
        new.len() <= 3 && new.iter().all(|l| l.starts_with("HEAD ")),
        "{new:?}"
    );
}
