//! Acceptance tests for the ingress (issue 8), with the real terraform, the
//! real Docker Engine and the real proxies (the dev environment's ingress
//! image: Debian's haproxy and caddy). Under a constant load of well over
//! 100 requests per second, half on kept-alive connections and half on
//! new ones, from a client that never retries, no request may fail during
//! an update, a scale up and down, a deploy that never becomes healthy, a
//! repair, and another app's deploy on the same host. Plus domains over
//! HTTPS with the ingress' local CA, the redirect from HTTP, 404 for an
//! unknown name, two services of one app on one domain by route, the
//! ingress removed by hand (shown, then repaired), two hosts, and the
//! refusals at plan and apply time.

#[path = "support/load.rs"]
mod load;
mod support;

use std::process::Command;
use std::sync::RwLock;

use berth::devtools::fixtures::PLAIN_REGISTRY;
use load::Load;
use support::{
    app_containers, curl, forget_routes, free_port, ingress_setting, require_env, unique_app,
    unique_tag, AppGuard, Tf, INGRESS_HTTPS_PORT, INGRESS_HTTP_PORT,
};

use support::hosts::{HOST_A, HOST_B};

/// Tests that remove the shared ingress by hand take this for writing;
/// the others, which need it to keep serving, for reading.
static INGRESS: RwLock<()> = RwLock::new(());

/// Load: 4 kept-alive and 4 new-connection workers at 20 requests/s each
/// (160/s asked; the test needs at least 100/s done).
const WORKERS: usize = 4;
const PER_WORKER_RATE: f64 = 20.0;
const MIN_RATE: f64 = 100.0;

fn provider() -> String {
    format!("provider \"berth\" {{\n{}}}\n", ingress_setting())
}

/// One app with a `web` service on `port`.
fn app(name: &str, image: &str, port: u16, instances: u32, service_extra: &str) -> String {
    app_with(
        name,
        image,
        &format!("public_port = {port}"),
        instances,
        service_extra,
    )
}

/// One app with a `web` service; `listener` sets its public port or domains.
fn app_with(
    name: &str,
    image: &str,
    listener: &str,
    instances: u32,
    service_extra: &str,
) -> String {
    format!(
        r#"
resource "berth_app" "{name}" {{
  name  = "{name}"
  image = "{image}"
  services = {{
    web = {{
      instances = {instances}
      {listener}
      health_check = {{ path = "/healthz" }}
{service_extra}
    }}
  }}
}}
"#
    )
}

fn push(tag: &str, version: &str) -> String {
    support::push_demo_tag(tag, version)
}

#[track_caller]
fn body_at(addr: &str) -> String {
    let (code, body) = curl(&[&format!("http://{addr}/")]);

    assert_eq!(code, 0, "curl http://{addr}/ failed: {body}");
    body.trim().to_owned()
}

fn docker(host: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .expect("run docker");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn haproxy_cfg(host: &str) -> String {
    let (ok, out) = docker(
        host,
        &["exec", "berth-ingress", "cat", "/berth/haproxy.cfg"],
    );
    assert!(ok, "reading the ingress configuration failed: {out}");
    out
}

#[test]
fn update_and_a_failed_deploy_drop_no_request() {
    require_env();
    let _shared = INGRESS.read().unwrap_or_else(|p| p.into_inner());
    let name = unique_app("ing-up");
    let _guard = AppGuard(name.clone());
    let tag = unique_tag("ing");
    push(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let port = free_port();
    let tf = Tf::new();
    let config = |image: &str| {
        format!(
            "{}{}\noutput \"urls\" {{ value = berth_app.{name}.urls }}\n",
            provider(),
            app(&name, image, port, 2, "")
        )
    };
    tf.config(&config(&image));
    tf.init();
    tf.apply();
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(body_at(&addr), "berth demo v1");
    assert_eq!(
        tf.output("urls")["web"],
        serde_json::json!([format!("http://{addr}")])
    );
    tf.assert_converged();

    // v1 → v2 under load: nothing fails; once a connection saw v2 it never
    // sees v1 again; after the apply every answer is v2.
    push(&tag, "v2");
    let load = Load::start(&addr, &addr, WORKERS, PER_WORKER_RATE);
    tf.apply();
    let after = Load::start(&addr, &addr, 1, 50.0);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = after.stop();
    let report = load.stop();
    report.assert_clean(MIN_RATE, "berth demo v1", "berth demo v2");
    assert!(
        report.bodies.contains_key("berth demo v2"),
        "{:?}",
        report.bodies
    );
    assert_eq!(
        after.bodies.keys().collect::<Vec<_>>(),
        vec!["berth demo v2"],
        "after the apply every answer is v2: {:?}",
        after.bodies
    );
    tf.assert_converged();

    // A deploy whose health check never passes: the apply fails, every
    // answer stays v2, and the ingress configuration is byte for byte as
    // it was.
    let before = haproxy_cfg(HOST_A);
    let unhealthy = format!("{PLAIN_REGISTRY}/berth/unhealthy:latest");
    tf.config(&config(&unhealthy).replace(
        "health_check = { path = \"/healthz\" }",
        "health_check = { path = \"/healthz\", start_period_seconds = 3, unhealthy_threshold = 2 }",
    ));
    let load = Load::start(&addr, &addr, WORKERS, PER_WORKER_RATE);
    let out = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    let report = load.stop();
    assert!(out.contains("did not become healthy"), "{out}");
    // Probed through the ingress: unhealthy_threshold counted the failures.
    assert!(
        out.contains("2 probes in a row failed after the start period"),
        "{out}"
    );
    report.assert_clean(MIN_RATE, "berth demo v1", "berth demo v2");
    assert_eq!(
        report.bodies.keys().collect::<Vec<_>>(),
        vec!["berth demo v2"],
        "{:?}",
        report.bodies
    );
    assert_eq!(
        haproxy_cfg(HOST_A),
        before,
        "a failure before the switch changes nothing"
    );
    tf.config(&config(&image));
    tf.assert_converged();

    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(app_containers(&name).is_empty());
    let (code, _) = curl(&[&format!("http://{addr}/")]);
    assert_ne!(code, 0, "the public port still answers after destroy");
}

#[test]
fn scaling_and_a_repair_drop_no_request() {
    require_env();
    let _shared = INGRESS.read().unwrap_or_else(|p| p.into_inner());
    let name = unique_app("ing-sc");
    let _guard = AppGuard(name.clone());
    let tag = unique_tag("ing");
    push(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tf = Tf::new();
    let config = |n: u32| format!("{}{}", provider(), app(&name, &image, port, n, ""));
    tf.config(&config(2));
    tf.init();
    tf.apply();
    let two = app_containers(&name);

    // 2 → 4 keeps the two that run (same ids), 4 → 1 stops three.
    let load = Load::start(&addr, &addr, WORKERS, PER_WORKER_RATE);
    tf.config(&config(4));
    tf.apply();
    let four = app_containers(&name);
    assert_eq!(four.len(), 4);
    assert!(
        two.iter().all(|id| four.contains(id)),
        "scale-up kept the running ones"
    );
    tf.config(&config(1));
    tf.apply();
    let report = load.stop();
    report.assert_clean(MIN_RATE, "-", "-");
    assert_eq!(app_containers(&name).len(), 1);
    tf.assert_converged();

    // An instance removed by hand: the plan says so; the apply that
    // repairs it drops nothing.
    tf.config(&config(2));
    tf.apply();
    let ids = app_containers(&name);
    let (ok, out) = docker(HOST_A, &["rm", "-f", &ids[0]]);
    assert!(ok, "{out}");
    let plan = tf.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "plan must show the missing instance"
    );
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("is missing on host local"),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let load = Load::start(&addr, &addr, WORKERS, PER_WORKER_RATE);
    tf.apply();
    let report = load.stop();
    report.assert_clean(MIN_RATE, "-", "-");
    assert_eq!(app_containers(&name).len(), 2);
    tf.assert_converged();
}

#[test]
fn another_apps_deploy_on_the_same_host_drops_no_request() {
    require_env();
    let _shared = INGRESS.read().unwrap_or_else(|p| p.into_inner());
    let (a, b) = (unique_app("ing-a"), unique_app("ing-b"));
    let _guards = (AppGuard(a.clone()), AppGuard(b.clone()));
    let (tag_a, tag_b) = (unique_tag("ing"), unique_tag("ing"));
    push(&tag_a, "v1");
    push(&tag_b, "v1");
    let (port_a, port_b) = (free_port(), free_port());
    let config = || {
        format!(
            "{}{}{}",
            provider(),
            app(
                &a,
                &format!("{PLAIN_REGISTRY}/berth/demo:{tag_a}"),
                port_a,
                1,
                ""
            ),
            app(
                &b,
                &format!("{PLAIN_REGISTRY}/berth/demo:{tag_b}"),
                port_b,
                1,
                ""
            )
        )
    };
    let tf = Tf::new();
    tf.config(&config());
    tf.init();
    tf.apply();
    let addr_a = format!("127.0.0.1:{port_a}");
    assert_eq!(body_at(&addr_a), "berth demo v1");

    // App b moves to v2 (and takes a new public port: a new listener on the
    // shared proxy) while app a is under load.
    push(&tag_b, "v2");
    let port_b2 = free_port();
    tf.config(&config().replace(
        &format!("public_port = {port_b}"),
        &format!("public_port = {port_b2}"),
    ));
    let load = Load::start(&addr_a, &addr_a, WORKERS, PER_WORKER_RATE);
    tf.apply();
    let report = load.stop();
    report.assert_clean(MIN_RATE, "-", "-");
    assert_eq!(
        report.bodies.keys().collect::<Vec<_>>(),
        vec!["berth demo v1"]
    );
    assert_eq!(body_at(&format!("127.0.0.1:{port_b2}")), "berth demo v2");
    tf.assert_converged();
}

#[test]
fn domains_over_https_with_routes_redirects_and_404() {
    require_env();
    let _shared = INGRESS.read().unwrap_or_else(|p| p.into_inner());
    let name = unique_app("ing-dom");
    let _guard = AppGuard(name.clone());
    let domain = format!("{name}.berth.test");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:v1");
    let tf = Tf::new();
    tf.config(&format!(
        r#"{}
resource "berth_app" "d" {{
  name  = "{name}"
  image = "{image}"
  services = {{
    web = {{ domains = ["{domain}"] }}
    api = {{
      domains            = ["{domain}"]
      routes             = ["/api"]
      strip_route_prefix = true
      command            = "/bin/busybox sh -c 'echo api > /tmp/index.html; exec /bin/busybox httpd -f -p 8080 -h /tmp'"
    }}
  }}
}}

output "urls" {{ value = berth_app.d.urls }}
"#,
        provider()
    ));
    tf.init();
    tf.apply();
    let urls = tf.output("urls");
    assert_eq!(
        urls["web"],
        serde_json::json!([format!("https://{domain}:{INGRESS_HTTPS_PORT}")])
    );
    assert_eq!(
        urls["api"],
        serde_json::json!([format!("https://{domain}:{INGRESS_HTTPS_PORT}/api")])
    );

    // Trust the ingress' local CA, then speak HTTPS to the name.
    let (ok, ca) = docker(
        HOST_A,
        &[
            "exec",
            "berth-ingress-tls",
            "cat",
            "/data/caddy/pki/authorities/local/root.crt",
        ],
    );
    assert!(ok && ca.contains("BEGIN CERTIFICATE"), "{ca}");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("root.crt");
    std::fs::write(&ca_file, ca).expect("write ca");
    let ca_path = ca_file.display().to_string();
    let https = format!("{domain}:{INGRESS_HTTPS_PORT}:127.0.0.1");
    let get = |path: &str| {
        curl(&[
            "--cacert",
            &ca_path,
            "--resolve",
            &https,
            "-w",
            " %{http_code}",
            &format!("https://{domain}:{INGRESS_HTTPS_PORT}{path}"),
        ])
    };
    let (code, out) = get("/");
    assert_eq!(
        (code, out.trim()),
        (0, "berth demo v1\n 200".trim()),
        "{out}"
    );
    let (code, out) = get("/api");
    assert_eq!((code, out.trim()), (0, "api\n 200"), "{out}");
    let (code, out) = get("/healthz");
    assert_eq!(
        (code, out.trim()),
        (0, "ok\n 200"),
        "the web service's own path"
    );

    // Plain HTTP redirects to HTTPS, keeping the path.
    let http = format!("{domain}:{INGRESS_HTTP_PORT}:127.0.0.1");
    let (code, out) = curl(&[
        "--resolve",
        &http,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &format!("http://{domain}:{INGRESS_HTTP_PORT}/x?y=1"),
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("308 https://{domain}:{INGRESS_HTTPS_PORT}/x?y=1")
    );

    // A name no app claims: 404, never another app's content.
    let other = format!("nobody-{name}.berth.test");
    let (code, out) = curl(&[
        "--resolve",
        &format!("{other}:{INGRESS_HTTP_PORT}:127.0.0.1"),
        "-w",
        " %{http_code}",
        &format!("http://{other}:{INGRESS_HTTP_PORT}/"),
    ]);
    assert_eq!(code, 0);
    assert!(out.ends_with(" 404"), "{out}");
    assert!(!out.contains("berth demo"), "{out}");
    tf.assert_converged();
}

#[test]
fn the_ingress_removed_by_hand_is_drift_and_apply_repairs_it() {
    require_env();
    let _exclusive = INGRESS.write().unwrap_or_else(|p| p.into_inner());
    let name = unique_app("ing-rm");
    let _guard = AppGuard(name.clone());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tf = Tf::new();
    tf.config(&format!(
        "{}{}",
        provider(),
        app(
            &name,
            &format!("{PLAIN_REGISTRY}/berth/demo:v1"),
            port,
            1,
            ""
        )
    ));
    tf.init();
    tf.apply();
    let ids = app_containers(&name);

    let (ok, out) = docker(HOST_A, &["rm", "-f", "berth-ingress"]);
    assert!(ok, "{out}");
    let plan = tf.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert_eq!(plan.status.code(), Some(2), "{text}");
    assert!(
        text.contains("the ingress is missing on host local"),
        "{text}"
    );
    tf.apply();
    assert_eq!(body_at(&addr), "berth demo v1");
    assert_eq!(
        app_containers(&name),
        ids,
        "the app's instances were not touched"
    );
    tf.assert_converged();

    // Edited by hand: the app's backend sent elsewhere.
    let (ok, out) = docker(
        HOST_A,
        &[
            "exec",
            "berth-ingress",
            "sh",
            "-c",
            &format!("sed -i 's/^  server {name}/  server x{name}/' /berth/haproxy.cfg"),
        ],
    );
    assert!(ok, "{out}");
    let plan = tf.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert_eq!(plan.status.code(), Some(2), "{text}");
    assert!(text.contains("differs from what Berth wrote"), "{text}");
    tf.apply();
    tf.assert_converged();
}

#[test]
fn every_host_running_an_instance_answers_on_the_public_port() {
    require_env();
    let _shared = INGRESS.read().unwrap_or_else(|p| p.into_inner());
    let name = unique_app("ing-2h");
    let _guard = AppGuard(name.clone());
    struct HostB(String);
    impl Drop for HostB {
        fn drop(&mut self) {
            forget_routes(HOST_B, &self.0);
            if let Ok(out) = Command::new("docker")
                .args(["-H", HOST_B, "ps", "-aq", "--filter"])
                .arg(format!("label=io.berth.app={}", self.0))
                .output()
            {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker")
                        .args(["-H", HOST_B, "rm", "-f", id])
                        .output();
                }
            }
        }
    }
    let _guard_b = HostB(name.clone());
    let port = free_port();
    let tf = Tf::new();
    tf.config(&format!(
        r#"provider "berth" {{
{}  hosts = {{
    a = {{ address = "{HOST_A}" }}
    b = {{ address = "{HOST_B}", publish_address = "127.0.0.2" }}
  }}
}}
{}
output "urls" {{ value = berth_app.{name}.urls }}
"#,
        ingress_setting(),
        app(
            &name,
            &format!("{PLAIN_REGISTRY}/berth/demo:v1"),
            port,
            2,
            ""
        )
    ));
    tf.init();
    tf.apply();
    assert_eq!(
        tf.output("urls")["web"],
        serde_json::json!([
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.2:{port}")
        ])
    );
    assert_eq!(body_at(&format!("127.0.0.1:{port}")), "berth demo v1");
    assert_eq!(body_at(&format!("127.0.0.2:{port}")), "berth demo v1");
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    // The last app gone from host b, its ingress stays, with no routes:
    // it is the host's (another Berth may be starting an app on it), and
    // the public port no longer answers.
    // (haproxy_cfg asserts that the ingress answers `docker exec`.)
    let cfg = haproxy_cfg(HOST_B);
    assert!(!cfg.contains(&name), "the app's routes are gone: {cfg}");
    let (code, _) = curl(&[&format!("http://127.0.0.2:{port}/")]);
    assert_ne!(code, 0, "the public port still answers after destroy");
}

#[test]
fn ports_and_domains_that_cannot_be_had_are_refused_at_the_attribute() {
    require_env();
    let _shared = INGRESS.read().unwrap_or_else(|p| p.into_inner());
    let (a, b) = (unique_app("ing-x"), unique_app("ing-y"));
    let _guards = (AppGuard(a.clone()), AppGuard(b.clone()));
    let image = format!("{PLAIN_REGISTRY}/berth/demo:v1");
    let port = free_port();
    let tf = Tf::new();
    tf.config(&format!("{}{}", provider(), app(&a, &image, port, 1, "")));
    tf.init();
    tf.apply();

    // Another app on the same host, the same port (a second state: it
    // only sees the host).
    let other = tf.sibling();
    other.config(&format!("{}{}", provider(), app(&b, &image, port, 1, "")));
    other.init();
    let out = other.fails(&["plan", "-input=false", "-no-color"]);
    assert!(
        out.contains(&format!(
            "port {port} on host local is taken by service \"web\" of app \"{a}\""
        )),
        "{out}"
    );
    assert!(out.contains("public_port"), "{out}");

    // The ingress' own port; out of range; an invalid name; two apps of
    // one plan claiming one name.
    for (listener, expected) in [
        (
            format!("public_port = {INGRESS_HTTPS_PORT}"),
            "is the ingress' own https_port",
        ),
        ("public_port = 70000".to_string(), "70000 is not a port"),
        (
            "domains = [\"Not_A_Name\"]".to_string(),
            "is not a host name",
        ),
    ] {
        let t = Tf::new();
        t.config(&format!(
            "{}{}",
            provider(),
            app_with(&b, &image, &listener, 1, "")
        ));
        t.init();
        let out = t.fails(&["plan", "-input=false", "-no-color"]);
        assert!(out.contains(expected), "{listener}: {out}");
        assert!(
            out.contains("line"),
            "{listener}: the error points at a line: {out}"
        );
    }
    let t = Tf::new();
    let shared = format!("domains = [\"{a}.berth.test\"]");
    t.config(&format!(
        "{}{}{}",
        provider(),
        app_with(&format!("{a}-1"), &image, &shared, 1, ""),
        app_with(&b, &image, &shared, 1, "")
    ));
    t.init();
    let out = t.fails(&["plan", "-input=false", "-no-color"]);
    assert!(out.contains("also claims domain"), "{out}");
}

#[test]
fn a_port_held_outside_berth_fails_the_apply_and_the_release_keeps_serving() {
    require_env();
    let _shared = INGRESS.read().unwrap_or_else(|p| p.into_inner());
    let name = unique_app("ing-busy");
    let _guard = AppGuard(name.clone());
    let image = format!("{PLAIN_REGISTRY}/berth/demo:v1");
    let port = free_port();
    let tf = Tf::new();
    tf.config(&format!(
        "{}{}",
        provider(),
        app(&name, &image, port, 1, "")
    ));
    tf.init();
    tf.apply();

    // Something that is not Berth's listens where the app wants to move.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = held.local_addr().expect("addr").port();
    tf.config(&format!(
        "{}{}",
        provider(),
        app(&name, &image, busy, 1, "")
    ));
    let out = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(
        out.contains(&format!("cannot listen on 127.0.0.1:{busy}")),
        "{out}"
    );
    assert!(out.contains("host local"), "{out}");
    assert!(out.contains("a process outside Docker"), "{out}");
    assert_eq!(body_at(&format!("127.0.0.1:{port}")), "berth demo v1");
    drop(held);
}

/// A `web` command for the demo image that serves like the image does,
/// plus `/cgi-bin/crash`: the first request to it makes the container
/// exit 3. Only requests sent through the public port after the switch
/// reach it, so it crashes inside the monitor window.
const CRASH_ON_TRAFFIC: &str = r##"command = "/bin/busybox sh -c '/bin/busybox mkdir -p /www/cgi-bin && printf \"#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho crashing\\necho > /tmp/crash\\n\" > /www/cgi-bin/crash && /bin/busybox chmod +x /www/cgi-bin/crash && /bin/busybox httpd -p 8080 -h /www && while [ ! -e /tmp/crash ]; do sleep 0.1; done; exit 3'""##;

#[test]
fn new_instances_failing_after_the_switch_send_traffic_back_to_the_old_ones() {
    require_env();
    let _shared = INGRESS.read().unwrap_or_else(|p| p.into_inner());
    let name = unique_app("ing-monitor");
    let _guard = AppGuard(name.clone());
    let tag = unique_tag("ingmon");
    push(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tf = Tf::new();
    tf.config(&format!(
        "{}{}",
        provider(),
        app(&name, &image, port, 1, "")
    ));
    tf.init();
    tf.apply();
    assert_eq!(body_at(&addr), "berth demo v1");
    let old = app_containers(&name);
    assert_eq!(old.len(), 1, "{old:?}");

    // The new release is healthy, takes traffic, and crashes on it.
    tf.config(&format!(
        "{}{}",
        provider(),
        app(&name, &image, port, 1, CRASH_ON_TRAFFIC)
    ));
    let mut apply = tf
        .command(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn apply");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut crashed = false;
    while apply.try_wait().expect("wait apply").is_none() {
        assert!(std::time::Instant::now() < deadline, "apply did not end");
        let (code, body) = curl(&["--max-time", "2", &format!("http://{addr}/cgi-bin/crash")]);
        crashed |= code == 0 && body.contains("crashing");
    }
    let out = apply.wait_with_output().expect("apply output");
    let text = support::squash(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(!out.status.success(), "the apply must fail: {text}");
    assert!(
        crashed,
        "no request reached the new instance after the switch"
    );
    assert!(text.contains("MONITOR failed after the switch"), "{text}");
    assert!(text.contains("of taking traffic"), "{text}");
    assert!(
        text.contains("Traffic went back to the previous instances"),
        "{text}"
    );
    // The old instance kept running the whole time and serves again; the
    // crashed release's container is gone.
    assert_eq!(app_containers(&name), old, "only the old instance is left");
    for _ in 0..20 {
        assert_eq!(body_at(&addr), "berth demo v1");
    }
    // Not a loop: the failed release stays failed until the next apply,
    // which shows the change again.
    let plan = tf.plan_json();
    let changes = plan["resource_changes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        changes
            .iter()
            .any(|c| c["change"]["actions"] == serde_json::json!(["update"])),
        "{plan}"
    );
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(app_containers(&name).is_empty());
}
