//! Acceptance tests for the Swarm backend (issue 13): the real terraform
//! against host b of the dev environment made a single-node Swarm manager
//! (tests/support/swarm.rs), with `mode = "swarm"` on the provider's host.

#[path = "support/latency_relay.rs"]
mod latency_relay;
#[path = "support/load.rs"]
mod load;
mod support;
#[path = "support/two_nodes.rs"]
mod two_nodes;

use berth::devtools::fixtures::{self, PLAIN_REGISTRY};
use load::Load;
use support::hosts::{docker, HOST_B};
use support::serve::Serve;
use support::swarm::{services_with, SwarmGuard};
use support::{block_on, curl, free_port, ingress_setting, squash, unique_app, unique_tag, Tf};

/// The provider with host b as its Swarm manager.
fn swarm_provider() -> String {
    format!(
        r#"
provider "berth" {{
  hosts = {{
    cluster = {{
      address = "{HOST_B}"
      mode    = "swarm"
    }}
  }}
}}
"#
    )
}

fn swarm_app(name: &str, image: &str, web_extra: &str) -> String {
    format!(
        r#"{provider}
resource "berth_app" "demo" {{
  name               = "{name}"
  image              = "{image}"
  env                = {{ GREETING = "hello" }}
  pre_deploy_command = "echo migrating"
  services = {{
    web = {{
      http_port = 8080
      instances = 2
      health_check = {{
        path                 = "/"
        interval_seconds     = 0.25
        timeout_seconds      = 1
        start_period_seconds = 3
      }}
      {web_extra}
    }}
  }}
}}

output "digest" {{ value = berth_app.demo.image_digest }}
output "release" {{ value = berth_app.demo.release }}
"#,
        provider = swarm_provider()
    )
}

/// What `web.APP` answers on the `berth-swarm` overlay network, asked from
/// a container attached to it (the demo image has busybox's wget).
fn answer(name: &str, image: &str) -> String {
    docker(
        HOST_B,
        &[
            "run",
            "--rm",
            "--network",
            "berth-swarm",
            "--label",
            "io.berth.test=1",
            "--entrypoint",
            "/bin/busybox",
            image,
            "wget",
            "-q",
            "-O-",
            &format!("http://web.{name}:8080/"),
        ],
    )
}

/// `docker service inspect` of one field.
fn service_field(service: &str, format: &str) -> String {
    docker(HOST_B, &["service", "inspect", service, "--format", format])
        .trim()
        .to_owned()
}

/// `terraform plan`: it must show changes (`why` names them in the
/// failure); returns what it printed, on one line.
fn plan_shows(tf: &Tf, why: &str) -> String {
    let out = tf.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    let text = squash(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(2), "the plan shows {why}: {text}");
    text
}

/// Pushes the demo image's `version` as `berth/demo:TAG`.
fn push_demo_tag(tag: &str, version: &str) -> fixtures::Pushed {
    block_on(fixtures::push_demo(
        PLAIN_REGISTRY,
        "berth/demo",
        tag,
        version,
        None,
    ))
    .expect(version)
}

/// [`swarm_app`] with the web service on `port` through the ingress on the
/// manager, at host b's publish address (127.0.0.2).
fn exposed_swarm_app(name: &str, image: &str, port: u16) -> String {
    swarm_app(name, image, &format!("public_port = {port}"))
        .replace(
            "mode    = \"swarm\"",
            "mode    = \"swarm\"\n      publish_address = \"127.0.0.2\"",
        )
        .replace(
            "provider \"berth\" {\n",
            &format!("provider \"berth\" {{\n{}", ingress_setting()),
        )
}

#[test]
fn swarm_create_update_rollback_drift_import_destroy() {
    let name = unique_app("acc-swarm");
    let _swarm = SwarmGuard::single_node(&name);
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let tag = unique_tag("swarm");
    let v1 = push_demo_tag(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let service = format!("{name}-web");
    let tf = Tf::new();
    tf.config(&swarm_app(&name, &image, ""));
    tf.init();

    // Create: one service per component, two replicas, pinned by digest,
    // on linux/amd64 nodes, with Berth's probe as its health check.
    tf.apply();
    assert_eq!(tf.output("digest"), v1.digest.as_str());
    assert_eq!(tf.output("release"), 1);
    assert_eq!(
        services_with(&format!("io.berth.app={name}")),
        vec![service.clone()]
    );
    assert_eq!(
        service_field(&service, "{{.Spec.TaskTemplate.ContainerSpec.Image}}"),
        format!("{PLAIN_REGISTRY}/berth/demo@{}", v1.digest)
    );
    assert_eq!(
        service_field(&service, "{{.Spec.Mode.Replicated.Replicas}}"),
        "2"
    );
    assert!(service_field(&service, "{{json .Spec.TaskTemplate.Placement}}").contains("amd64"));
    assert_eq!(
        service_field(
            &service,
            "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck.Test}}"
        ),
        r#"["CMD","/berth-probe","8080","/"]"#
    );
    assert_eq!(
        service_field(&service, "{{.Spec.UpdateConfig.Order}} {{.Spec.UpdateConfig.FailureAction}} {{.Spec.UpdateConfig.Parallelism}}"),
        "start-first rollback 1"
    );
    assert_eq!(answer(&name, &set.demo_v1.reference), "berth demo v1\n");
    // The pre-deploy job ran and was removed.
    assert!(services_with(&format!("io.berth.app={name}"))
        .iter()
        .all(|s| !s.contains("pre-deploy")));
    tf.assert_converged();

    // The tag moves: the plan shows the digest diff, apply rolls it out.
    let v2 = push_demo_tag(&tag, "v2");
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
    assert_eq!(tf.output("release"), 2);
    assert_eq!(answer(&name, &set.demo_v1.reference), "berth demo v2\n");
    let running = docker(
        HOST_B,
        &[
            "service",
            "ps",
            &service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Image}}",
        ],
    );
    assert_eq!(running.lines().count(), 2, "{running}");
    assert!(
        running.lines().all(|l| l.ends_with(&v2.digest)),
        "{running}"
    );
    tf.assert_converged();

    // An image that never answers: Swarm's gate (Berth's probe) keeps it
    // from replacing any task, the update is rolled back, and the error
    // says so with the failing tasks; v2 keeps serving.
    tf.config(&swarm_app(&name, &set.unhealthy.reference, ""));
    let err = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(
        err.contains(&format!("ROLL failed: Swarm service {service}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("rolled {service} back to its previous spec")),
        "{err}"
    );
    assert!(
        err.contains("Failing tasks:") || err.contains("task "),
        "{err}"
    );
    assert_eq!(answer(&name, &set.demo_v1.reference), "berth demo v2\n");
    assert!(
        service_field(&service, "{{.Spec.TaskTemplate.ContainerSpec.Image}}").ends_with(&v2.digest),
        "the service is back on v2"
    );
    // Back to the tag: nothing to deploy (terraform still holds the failed
    // plan's value in the `digest` output until an apply refreshes it).
    tf.config(&swarm_app(&name, &image, ""));
    tf.apply();
    assert_eq!(tf.output("digest"), v2.digest.as_str());
    assert_eq!(tf.output("release"), 2);
    tf.assert_converged();

    // Drift by hand: scaled and its env changed; the plan says so in words,
    // apply repairs both without a new release.
    docker(
        HOST_B,
        &[
            "service",
            "update",
            "-d",
            "--replicas",
            "3",
            "--env-add",
            "EXTRA=1",
            &service,
        ],
    );
    let text = plan_shows(&tf, "the drift");
    assert!(
        text.contains("is scaled to 3 replicas, the app wants 2"),
        "{text}"
    );
    assert!(text.contains("has a spec changed outside Berth"), "{text}");
    tf.apply();
    assert_eq!(tf.output("release"), 2, "a repair is not a new release");
    assert_eq!(
        service_field(&service, "{{.Spec.Mode.Replicated.Replicas}}"),
        "2"
    );
    assert!(
        !service_field(&service, "{{json .Spec.TaskTemplate.ContainerSpec.Env}}").contains("EXTRA")
    );
    tf.assert_converged();

    // The service removed by hand: drift, and apply creates it again.
    docker(HOST_B, &["service", "rm", &service]);
    let text = plan_shows(&tf, "the drift");
    assert!(
        text.contains(&format!(
            "Swarm service {service} (manager cluster) is missing"
        )),
        "{text}"
    );
    tf.apply();
    assert_eq!(answer(&name, &set.demo_v1.reference), "berth demo v2\n");
    tf.assert_converged();

    // The hook server drives the Swarm app unchanged: it deploys on the
    // hosts recorded at the last apply, and those carry the mode.
    let server = Serve::start(tf.state_dir.path(), "info");
    let with_hook = swarm_app(&name, &image, "").replace(
        "provider \"berth\" {",
        &format!("provider \"berth\" {{\n  hooks_url = \"{}\"", server.base),
    ) + "\nresource \"berth_deploy_hook\" \"ci\" {\n  app = berth_app.demo.name\n}\noutput \"url\" {\n  value     = berth_deploy_hook.ci.url\n  sensitive = true\n}\n";
    tf.config(&with_hook);
    tf.apply();
    let url = tf.output("url").as_str().expect("url").to_owned();
    let v3 = push_demo_tag(&tag, "v3");
    let (status, body) = call("POST", &url);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deploy"]["digest"], v3.digest.as_str(), "{body}");
    let status_url = format!(
        "{}{}",
        server.base,
        body["deploy"]["status_url"].as_str().expect("status_url")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let done = loop {
        let (code, body) = call("GET", &status_url);
        assert_eq!(code, 200, "{body}");
        let state = body["deploy"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !matches!(state.as_str(), "queued" | "running") {
            break body["deploy"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deploy still {state}: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(answer(&name, &set.demo_v1.reference), "berth demo v3\n");
    assert!(
        service_field(&service, "{{.Spec.TaskTemplate.ContainerSpec.Image}}").ends_with(&v3.digest),
        "the hook updated the Swarm service"
    );
    let plain = docker(
        HOST_B,
        &[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.berth.app={name}"),
            "--filter",
            "label=io.berth.slot",
        ],
    );
    assert!(
        plain.trim().is_empty(),
        "no container outside the swarm: {plain}"
    );
    // The refresh takes what runs: the hook's release of the tag's digest
    // (terraform's outputs catch up at the next apply).
    tf.apply();
    assert_eq!(tf.output("digest"), v3.digest.as_str());
    assert_eq!(tf.output("release"), 5);
    tf.assert_converged();
    drop(server);

    // Import by app name into a fresh state: nothing to change.
    let fresh = tf.sibling();
    fresh.config(&swarm_app(&name, &image, ""));
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

    // Destroy removes the app's services and nothing else.
    let other = format!("{name}-foreign");
    docker(
        HOST_B,
        &[
            "service",
            "create",
            "-d",
            "--name",
            &other,
            "--label",
            &format!("io.berth.app={name}-x"),
            &set.demo_v1.reference,
        ],
    );
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(services_with(&format!("io.berth.app={name}")).is_empty());
    assert_eq!(
        services_with(&format!("io.berth.app={name}-x")),
        vec![other.clone()]
    );
    docker(HOST_B, &["service", "rm", &other]);
    fresh.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

/// One HTTP call: status and body.
fn call(method: &str, url: &str) -> (u16, serde_json::Value) {
    let (code, out) = curl(&["-i", "-X", method, url]);
    assert_eq!(code, 0, "curl {method} {url} failed: {out}");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The `berth` command drives the Swarm backend from a spec file with
/// `host_mode: swarm` (`DOCKER_HOST` at the manager): apply makes the
/// service, `status` shows a scale by hand in words, apply repairs it,
/// destroy removes the app's services.
#[test]
fn the_berth_command_deploys_to_swarm_from_a_spec_file() {
    let name = unique_app("cli-swarm");
    let _swarm = SwarmGuard::single_node(&name);
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("push fixtures");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("app.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: {name}\nimage: {}\nhost_mode: swarm\nservices:\n  web:\n    http_port: 8080\n    health_check:\n      interval_seconds: 0.25\n      start_period_seconds: 3\n",
            set.demo_v1.reference
        ),
    )
    .expect("write spec");
    let spec = spec.display().to_string();
    let berth = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .env_remove("BERTH_LOG")
            .env("DOCKER_HOST", HOST_B)
            .env("BERTH_STATE_DIR", dir.path().join("state"))
            .env("BERTH_TEST_LABEL", "1")
            .output()
            .expect("run berth");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "berth {args:?} failed: {text}");
        text
    };
    let service = format!("{name}-web");
    let replicas = || {
        docker(
            HOST_B,
            &[
                "service",
                "inspect",
                &service,
                "--format",
                "{{.Spec.Mode.Replicated.Replicas}}",
            ],
        )
        .trim()
        .to_owned()
    };

    berth(&["apply", "-f", &spec]);
    assert_eq!(
        services_with(&format!("io.berth.app={name}")),
        vec![service.clone()]
    );
    assert_eq!(replicas(), "1");
    let status = berth(&["status", &name]);
    assert!(!status.contains("scaled"), "{status}");

    docker(
        HOST_B,
        &["service", "scale", "--detach", &format!("{service}=2")],
    );
    let status = squash(&berth(&["status", &name]));
    assert!(
        status.contains("is scaled to 2 replicas, the app wants 1"),
        "{status}"
    );
    berth(&["apply", "-f", &spec]);
    assert_eq!(replicas(), "1");

    berth(&["destroy", &name]);
    assert!(services_with(&format!("io.berth.app={name}")).is_empty());
}

/// terraform creates ten apps at a time: on a swarm without Berth's
/// overlay network and probe config yet, their deploys race to create
/// both, and each must either win or use the winner's (Swarm refuses the
/// second network of a name with a 500 "name conflicts with an existing
/// object": one app of 30 failed on it).
#[test]
fn the_first_apply_of_ten_apps_on_a_fresh_swarm_creates_one_network() {
    let name = unique_app("acc-swarm-ten");
    let _swarm = SwarmGuard::single_node(&name);
    let networks = || {
        docker(
            HOST_B,
            &[
                "network",
                "ls",
                "--filter",
                "name=berth-swarm",
                "--format",
                "{{.Name}}",
            ],
        )
        .split_whitespace()
        .filter(|n| *n == "berth-swarm")
        .count()
    };
    if networks() > 0 {
        // Left by an earlier test on a swarm this test did not create
        // (fails the test if a service still uses it).
        docker(HOST_B, &["network", "rm", "berth-swarm"]);
    }
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let tf = Tf::new();
    tf.config(&format!(
        r#"{provider}
resource "berth_app" "many" {{
  count = 10
  name  = "{name}-${{count.index}}"
  image = "{image}"
  services = {{
    web = {{
      http_port = 8080
      instances = 1
    }}
  }}
}}
"#,
        provider = swarm_provider(),
        image = set.demo_v1.reference
    ));
    tf.init();
    tf.apply();
    for i in 0..10 {
        assert_eq!(
            services_with(&format!("io.berth.app={name}-{i}")),
            vec![format!("{name}-{i}-web")]
        );
    }
    assert_eq!(networks(), 1);
    // The default health check runs inside each task at most every 5 s.
    assert_eq!(
        service_field(
            &format!("{name}-0-web"),
            "{{.Spec.TaskTemplate.ContainerSpec.Healthcheck.Interval}}"
        ),
        "5s"
    );
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    for i in 0..10 {
        assert!(services_with(&format!("io.berth.app={name}-{i}")).is_empty());
    }
}

/// The answer's body at `addr`, trimmed ("" when there is none).
fn body_at(addr: &str) -> String {
    let (code, out) = curl(&[&format!("http://{addr}/")]);
    if code == 0 {
        out.trim().to_owned()
    } else {
        String::new()
    }
}

/// What the ingress on host b holds for `app` (its routes line).
fn ingress_routes(app: &str) -> String {
    let cfg = docker(
        HOST_B,
        &[
            "exec",
            "berth-ingress",
            "head",
            "-n",
            "1",
            "/berth/haproxy.cfg",
        ],
    );
    let line = cfg.trim_start_matches("# berth-routes v1 ");
    let routes: serde_json::Value = serde_json::from_str(line).expect("the routes line");
    routes["routes"][app].clone().to_string()
}

#[test]
fn a_public_port_on_swarm_drops_no_request_through_a_rollout_and_a_rollback() {
    let name = unique_app("acc-swarm-port");
    let _swarm = SwarmGuard::single_node(&name);
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let tag = unique_tag("swarm-port");
    push_demo_tag(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let port = free_port();
    let addr = format!("127.0.0.2:{port}");
    let service = format!("{name}-web");
    let config = |image: &str| {
        // One instance: while its slot moves there is no other task to
        // send a request to, the hardest case for the switch.
        exposed_swarm_app(&name, image, port).replace("instances = 2", "instances = 1")
            + "\noutput \"urls\" { value = berth_app.demo.urls }\n"
    };
    let tf = Tf::new();
    tf.config(&config(&image));
    tf.init();

    // Create: the tasks publish 8080 in host mode on an ephemeral port, the
    // ingress on the manager answers on the public port.
    tf.apply();
    assert_eq!(body_at(&addr), "berth demo v1");
    assert_eq!(
        tf.output("urls")["web"],
        serde_json::json!([format!("http://{addr}")])
    );
    assert_eq!(
        service_field(&service, "{{json .Spec.EndpointSpec.Ports}}"),
        r#"[{"Name":"http","Protocol":"tcp","TargetPort":8080,"PublishMode":"host"}]"#
    );
    assert_eq!(
        service_field(
            &service,
            "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck.Test}}"
        ),
        r#"["CMD","/berth-probe","8080","/","3000"]"#,
        "a new task is held 3 s for the switch"
    );
    let routes = ingress_routes(&name);
    assert_eq!(
        routes.matches("\"address\"").count(),
        1,
        "one task routed: {routes}"
    );
    tf.assert_converged();

    // The tag moves: Swarm rolls the tasks one by one, the ingress follows
    // each slot, and no request fails.
    push_demo_tag(&tag, "v2");
    let load = Load::start(&addr, &addr, 4, 20.0);
    tf.apply();
    let report = load.stop();
    // One task at a time (Swarm's rolling update): v1 and v2 answer side
    // by side until the last slot moved, so a connection may see both.
    eprintln!(
        "rollout under load: {} requests at {:.0}/s, {} failed, bodies {:?}",
        report.total(),
        report.rate(),
        report.failed.len(),
        report.bodies
    );
    report.assert_served(100.0);
    assert!(
        report.bodies.contains_key("berth demo v2"),
        "{:?}",
        report.bodies
    );
    assert_eq!(body_at(&addr), "berth demo v2");
    tf.assert_converged();

    // An image that never answers: Swarm rolls back, the routes never
    // leave the v2 tasks, and no request fails or sees anything else.
    tf.config(&config(&set.unhealthy.reference));
    let load = Load::start(&addr, &addr, 4, 20.0);
    let err = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    let report = load.stop();
    eprintln!(
        "rollback under load: {} requests at {:.0}/s, {} failed",
        report.total(),
        report.rate(),
        report.failed.len()
    );
    assert!(
        err.contains(&format!("ROLL failed: Swarm service {service}")),
        "{err}"
    );
    report.assert_served(100.0);
    assert_eq!(
        report.bodies.keys().collect::<Vec<_>>(),
        vec!["berth demo v2"],
        "{:?}",
        report.bodies
    );
    tf.config(&config(&image));
    tf.apply();
    tf.assert_converged();

    // The ingress removed by hand: drift in words, and apply brings it back.
    docker(HOST_B, &["rm", "-f", "berth-ingress"]);
    assert_eq!(body_at(&addr), "");
    let text = plan_shows(&tf, "the drift");
    assert!(text.contains("ingress"), "{text}");
    tf.apply();
    assert_eq!(body_at(&addr), "berth demo v2");
    tf.assert_converged();

    // Destroy: the routes go first, then the services; the ingress (the
    // host's) stays, without the app's routes.
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(services_with(&format!("io.berth.app={name}")).is_empty());
    assert_eq!(body_at(&addr), "");
    assert_eq!(ingress_routes(&name), "null", "the app's routes are gone");
}

/// Node id of each running task of `service`, sorted.
fn task_nodes(service: &str) -> Vec<String> {
    let ids = docker(
        HOST_B,
        &[
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            service,
        ],
    );
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["inspect", "--format", "{{.NodeID}} {{.Status.State}}"];
    args.extend(ids);
    let mut nodes: Vec<String> = docker(HOST_B, &args)
        .lines()
        .filter(|l| l.ends_with(" running"))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn tasks_spread_over_two_nodes_and_move_when_one_stops() {
    let name = unique_app("acc-swarm-2n");
    let mut nodes = two_nodes::TwoNodes::start(&name);
    let (manager, worker) = nodes.node_ids();
    block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let tag = unique_tag("swarm-2n");
    push_demo_tag(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let port = free_port();
    let addr = format!("127.0.0.2:{port}");
    let service = format!("{name}-web");
    let tf = Tf::new();
    tf.config(&exposed_swarm_app(&name, &image, port));
    tf.init();

    // Two replicas, one on each node (Swarm spreads them); the ingress on
    // the manager sends requests to both, the worker's at its address.
    tf.apply();
    let mut both = vec![manager.clone(), worker.clone()];
    both.sort();
    assert_eq!(task_nodes(&service), both, "one task on each node");
    let routes = ingress_routes(&name);
    assert!(
        routes.contains(&format!("\"{}:", nodes.worker_addr())),
        "the worker's task is routed at the worker's address: {routes}"
    );
    for _ in 0..20 {
        assert_eq!(body_at(&addr), "berth demo v1");
    }
    tf.assert_converged();

    // The worker's daemon stops: Swarm starts its task again on the
    // manager; requests keep being answered by the task that runs.
    nodes.stop_worker();
    let begun = std::time::Instant::now();
    while task_nodes(&service) != vec![manager.clone(), manager.clone()] {
        assert!(
            begun.elapsed() < std::time::Duration::from_secs(120),
            "the worker's task was not rescheduled: {:?}",
            task_nodes(&service)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for _ in 0..10 {
        assert_eq!(body_at(&addr), "berth demo v1");
    }
    // The routes still name the stopped task: the plan says so, apply
    // sends every request to the two tasks on the manager.
    let text = plan_shows(&tf, "stale routes");
    assert!(
        text.contains("sends service") && text.contains(&format!("({}:", nodes.worker_addr())),
        "{text}"
    );
    tf.apply();
    let routes = ingress_routes(&name);
    assert!(!routes.contains(&nodes.worker_addr()), "{routes}");
    assert_eq!(routes.matches("\"address\"").count(), 2, "{routes}");
    assert_eq!(body_at(&addr), "berth demo v1");
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(services_with(&format!("io.berth.app={name}")).is_empty());
}
