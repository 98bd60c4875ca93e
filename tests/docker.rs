//! `berth::docker` against the real Docker Engine of the dev environment
//! (`bash tests/devenv.sh up`) and the fixture images in its registries: pull
//! by digest (plain and authenticated), run the demo and fetch its page over
//! the ephemeral published port, observe it with the one labelled list call,
//! stop and remove it, run jobs (crash, success, timeout), refuse to touch
//! what Berth did not create, and manage app networks.
//!
//! Everything this binary creates carries `io.berth.test=1` and this run's
//! own `io.berth.app` value; a guard removes exactly that at the end, also
//! when an assertion fails (other test binaries may run at the same time,
//! so it never removes their containers).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth::devtools::fixtures::{
    push_all, push_demo, AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, DEMO_PORT, PLAIN_REGISTRY,
};
use berth::docker::{
    ContainerSpec, ContainerState, DockerError, DockerHost, HostConfig, RegistryLogin,
    RestartPolicy,
};
use berth::labels;
use berth::registry::Secret;

/// Removes every container and network carrying `io.berth.test=1` and this
/// run's app label, on drop (so also after a failed assertion).
struct Cleanup {
    app: String,
}

impl Cleanup {
    fn filters(&self) -> [String; 4] {
        [
            "--filter".into(),
            format!("label={}=1", labels::TEST),
            "--filter".into(),
            format!("label={}={}", labels::APP, self.app),
        ]
    }

    fn run(&self) {
        let filters = self.filters();
        let mut args = vec!["ps", "-aq"];
        args.extend(filters.iter().map(String::as_str));
        let ids = docker(&args);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", "-v", id]);
        }
        let mut args = vec!["network", "ls", "-q"];
        args.extend(filters.iter().map(String::as_str));
        let nets = docker(&args);
        for id in nets.split_whitespace() {
            docker(&["network", "rm", id]);
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// Runs the docker CLI (test scaffolding only); returns stdout.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("{}-{nanos}", std::process::id())
}

fn local_host() -> DockerHost {
    let docker_host = std::env::var("DOCKER_HOST").ok();
    DockerHost::connect(&HostConfig::local(docker_host.as_deref())).expect("local host config")
}

/// GET / from 127.0.0.1:`port`, retried while the server starts.
fn http_get(port: u16) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                let request = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
                if stream.write_all(request.as_bytes()).is_ok() {
                    let mut response = String::new();
                    if stream.read_to_string(&mut response).is_ok() && !response.is_empty() {
                        return response;
                    }
                }
                last = "connected but no answer".into();
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no HTTP answer on 127.0.0.1:{port}: {last}");
}

fn test_labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::TEST.to_owned(), "1".to_owned()),
        (labels::APP.to_owned(), app.to_owned()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_layer_against_the_real_engine() {
    let run = unique();
    let app = format!("dockertest-{run}");
    let cleanup = Cleanup { app: app.clone() };
    let host = local_host();
    let fixtures = push_all(PLAIN_REGISTRY)
        .await
        .expect("push fixtures (is `bash tests/devenv.sh up` done?)");

    // ---------------------------------------------------------------- pull
    // A repository only this test uses, so the pull below really pulls.
    push_demo(PLAIN_REGISTRY, "berth/docker-test", "v1", "v1", None)
        .await
        .expect("push berth/docker-test:v1");
    let pinned = format!(
        "{PLAIN_REGISTRY}/berth/docker-test@{}",
        fixtures.demo_v1.digest
    );
    docker(&["image", "rm", &pinned]);
    assert!(!host.has_image(&pinned).await.expect("has_image"));
    host.pull(&pinned, None)
        .await
        .expect("pull demo v1 by digest");
    assert!(host.has_image(&pinned).await.expect("has_image"));
    host.pull(&pinned, None)
        .await
        .expect("second pull is a no-op");

    let err = host
        .pull(&format!("{PLAIN_REGISTRY}/berth/demo:v1"), None)
        .await
        .expect_err("tags are refused");
    assert!(matches!(err, DockerError::InvalidSpec { .. }), "{err}");
    assert!(err.to_string().contains("not pinned"), "{err}");

    let missing = format!("{PLAIN_REGISTRY}/berth/demo@sha256:{}", "0".repeat(64));
    let err = host.pull(&missing, None).await.expect_err("no such digest");
    assert!(matches!(err, DockerError::PullFailed { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&missing), "names the image: {text}");
    assert!(text.contains("`local`"), "names the host: {text}");

    // Authenticated registry: right and wrong password.
    let private = push_demo(
        AUTH_REGISTRY,
        "berth/private",
        "v1",
        "v1",
        Some((AUTH_USER, AUTH_PASSWORD)),
    )
    .await
    .expect("push to the auth registry");
    let private_pinned = format!("{AUTH_REGISTRY}/berth/private@{}", private.digest);
    docker(&["image", "rm", &private_pinned]);
    let wrong = RegistryLogin {
        username: AUTH_USER.to_owned(),
        password: Secret::new("not-the-password-xyz"),
        server: String::new(),
    };
    let err = host
        .pull(&private_pinned, Some(wrong))
        .await
        .expect_err("wrong password");
    assert!(matches!(err, DockerError::PullFailed { .. }), "{err}");
    assert!(
        !err.to_string().contains("not-the-password-xyz") && !format!("{err:?}").contains("xyz"),
        "no password in errors: {err:?}"
    );
    let right = RegistryLogin {
        username: AUTH_USER.to_owned(),
        password: Secret::new(AUTH_PASSWORD),
        server: AUTH_REGISTRY.to_owned(),
    };
    host.pull(&private_pinned, Some(right))
        .await
        .expect("pull with credentials");
    assert!(host.has_image(&private_pinned).await.expect("has_image"));

    // ------------------------------------------------- a service container
    let mut web_labels = test_labels(&app);
    web_labels.insert(labels::KIND.to_owned(), labels::kind::SERVICE.to_owned());
    let web = ContainerSpec {
        name: format!("berth-{app}-web-0"),
        image: pinned.clone(),
        env: BTreeMap::from([("SECRET_TOKEN".to_owned(), "s3cr3t".to_owned())]),
        labels: web_labels,
        http_port: Some(DEMO_PORT),
        cpus: Some(0.5),
        memory_mb: Some(64),
        restart: RestartPolicy::UnlessStopped,
        ..Default::default()
    };
    let id = host.create_and_start(&web).await.expect("create and start");

    let observed = host.list_managed().await.expect("list managed");
    let me = observed
        .iter()
        .find(|o| o.id == id)
        .expect("list_managed sees the new container");
    assert_eq!(me.name, web.name);
    assert_eq!(me.state, ContainerState::Running);
    assert_eq!(me.label(labels::MANAGED), Some("true"), "added by Berth");
    assert_eq!(me.label(labels::TEST), Some("1"));
    assert_eq!(me.label(labels::APP), Some(app.as_str()));
    assert_eq!(me.image, pinned);
    assert!(me.status.starts_with("Up"), "{}", me.status);
    let published = me
        .published
        .iter()
        .find(|p| p.container_port == DEMO_PORT)
        .expect("port 8080 published");
    assert_eq!(published.host_ip, "127.0.0.1");
    assert_ne!(published.host_port, 0);

    let response = http_get(published.host_port);
    assert!(response.contains("berth demo v1"), "{response}");

    // Limits reached the daemon.
    let inspect = docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}}",
        &id,
    ]);
    assert_eq!(inspect, "67108864 500000000 unless-stopped");

    // A second container with the same name is a conflict, in words.
    let err = host.create_and_start(&web).await.expect_err("name taken");
    assert!(matches!(err, DockerError::Conflict { .. }), "{err}");

    host.stop(&id, Duration::from_secs(5)).await.expect("stop");
    let state = host
        .list_managed()
        .await
        .expect("list")
        .into_iter()
        .find(|o| o.id == id)
        .map(|o| o.state);
    assert_eq!(state, Some(ContainerState::Exited));
    host.stop(&id, Duration::from_secs(5))
        .await
        .expect("stopping a stopped container is fine");
    host.remove(&id).await.expect("remove");
    host.remove(&id)
        .await
        .expect("removing a gone container is fine");
    host.stop(&id, Duration::from_secs(1))
        .await
        .expect("stopping a gone container is fine");
    assert!(!host
        .list_managed()
        .await
        .expect("list")
        .iter()
        .any(|o| o.id == id));

    // ------------------------------------------------------------- jobs
    let crash_pinned = format!("{PLAIN_REGISTRY}/berth/crash@{}", fixtures.crash.digest);
    host.pull(&crash_pinned, None).await.expect("pull crash");
    let mut job_labels = test_labels(&app);
    job_labels.insert(labels::KIND.to_owned(), labels::kind::JOB.to_owned());
    let crash = ContainerSpec {
        name: format!("berth-{app}-job-crash"),
        image: crash_pinned,
        labels: job_labels.clone(),
        ..Default::default()
    };
    let outcome = host
        .run_job(&crash, Duration::from_secs(60))
        .await
        .expect("run crash job");
    assert_eq!(outcome.exit_code, 3, "{outcome:?}");
    assert!(!outcome.timed_out);
    assert!(!outcome.succeeded());
    assert!(
        outcome
            .log_tail
            .iter()
            .any(|l| l.contains("berth crash fixture")),
        "{outcome:?}"
    );

    let echo = ContainerSpec {
        name: format!("berth-{app}-job-echo"),
        image: pinned.clone(),
        command: Some(vec![
            "/bin/busybox".into(),
            "sh".into(),
            "-c".into(),
            "echo migrating; echo berth job done".into(),
        ]),
        env: BTreeMap::from([("DATABASE_URL".to_owned(), "postgres://x".to_owned())]),
        labels: job_labels.clone(),
        restart: RestartPolicy::UnlessStopped, // forced to No for jobs
        ..Default::default()
    };
    let outcome = host
        .run_job(&echo, Duration::from_secs(60))
        .await
        .expect("run echo job");
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert!(outcome.succeeded());
    assert_eq!(
        outcome.log_tail,
        vec!["migrating".to_owned(), "berth job done".to_owned()]
    );

    let slow = ContainerSpec {
        name: format!("berth-{app}-job-slow"),
        image: pinned.clone(),
        command: Some(vec!["/bin/busybox".into(), "sleep".into(), "300".into()]),
        labels: job_labels,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let outcome = host
        .run_job(&slow, Duration::from_secs(2))
        .await
        .expect("run slow job");
    assert!(outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.exit_code, 137, "killed: {outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // Job containers are gone afterwards.
    let names = docker_ok(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label={}={app}", labels::APP),
    ]);
    assert!(!names.contains("-job-"), "job containers left: {names}");

    // ------------------------- never touch what Berth did not create
    let foreign = docker_ok(&[
        "run",
        "-d",
        "--label",
        &format!("{}=1", labels::TEST),
        "--label",
        &format!("{}={app}", labels::APP),
        "--name",
        &format!("foreign-{app}"),
        &pinned,
        "/bin/busybox",
        "sleep",
        "300",
    ]);
    let err = host.remove(&foreign).await.expect_err("not managed");
    assert!(matches!(err, DockerError::NotManaged { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("foreign-{app}")),
        "names the container: {err}"
    );
    let err = host
        .stop(&foreign, Duration::from_secs(1))
        .await
        .expect_err("not managed");
    assert!(matches!(err, DockerError::NotManaged { .. }), "{err}");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &foreign]),
        "true",
        "still running"
    );
    assert!(
        !host
            .list_managed()
            .await
            .expect("list")
            .iter()
            .any(|o| o.id == foreign),
        "the list call sees managed containers only"
    );

    // ------------------------------------------------------------ networks
    let net = format!("berth-{app}");
    let net_labels = test_labels(&app);
    host.ensure_network(&net, &net_labels)
        .await
        .expect("create network");
    host.ensure_network(&net, &net_labels)
        .await
        .expect("ensure is idempotent");
    assert_eq!(
        docker_ok(&[
            "network",
            "inspect",
            "-f",
            &format!("{{{{index .Labels \"{}\"}}}}", labels::MANAGED),
            &net,
        ]),
        "true"
    );
    // A container on the network, then the network cannot go until it does.
    let on_net = ContainerSpec {
        name: format!("berth-{app}-net-0"),
        image: pinned.clone(),
        labels: test_labels(&app),
        network: Some(net.clone()),
        ..Default::default()
    };
    let on_net_id = host.create_and_start(&on_net).await.expect("start on net");
    let err = host
        .remove_networks(&app)
        .await
        .expect_err("network in use");
    assert!(matches!(err, DockerError::Conflict { .. }), "{err}");
    host.remove(&on_net_id).await.expect("remove");

    let foreign_net = format!("foreign-{app}");
    docker_ok(&[
        "network",
        "create",
        "--label",
        &format!("{}=1", labels::TEST),
        "--label",
        &format!("{}={app}", labels::APP),
        &foreign_net,
    ]);
    let err = host
        .ensure_network(&foreign_net, &net_labels)
        .await
        .expect_err("foreign network");
    assert!(matches!(err, DockerError::NotManaged { .. }), "{err}");

    host.remove_networks(&app).await.expect("remove networks");
    let left = docker_ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("label={}={app}", labels::APP),
    ]);
    assert_eq!(left.trim(), foreign_net, "only the unmanaged one is left");

    drop(cleanup);
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={}={app}", labels::APP)
        ])
        .trim(),
        "",
        "cleanup removed everything"
    );
}

#[tokio::test]
async fn unreachable_host_is_explained() {
    let host = DockerHost::connect(&HostConfig::new(
        "local",
        "unix:///nonexistent/berth/docker.sock",
    ))
    .expect("config is valid");
    let err = host.list_managed().await.expect_err("no daemon there");
    assert_eq!(
        err.to_string(),
        "cannot reach Docker host `local` at unix:///nonexistent/berth/docker.sock: \
         No such file or directory — is the Docker daemon running, and is the address right?"
    );
    assert!(err.is_host_unavailable());
    // log_tail is best effort.
    assert!(host.log_tail("nope", 10).await.is_empty());
}
