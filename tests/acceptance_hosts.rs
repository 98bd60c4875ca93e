//! Acceptance tests for several Docker hosts (issue 4): the real terraform
//! against the two daemons of the dev environment (`a` = the default
//! socket, `b` = the second daemon of tests/devenv.sh), and a `tcp://` host
//! with TLS against a throwaway dockerd run with `--tlsverify`.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use berth::devtools::fixtures::{self, PLAIN_REGISTRY};
use support::hosts::{
    docker, ids_on, require_two_daemons, TwoHostGuard, HOST_A, HOST_B, PUBLISH_B,
};
use support::{block_on, http_body, require_env, unique_app, Tf};

/// A provider with hosts a and b (`b` at `address_b`) and an app with a
/// `web` service of two instances; `web_extra` adds lines to the service,
/// `outputs` after the resource.
fn two_host_app(
    name: &str,
    address_b: &str,
    image: &str,
    web_extra: &str,
    outputs: &str,
) -> String {
    format!(
        r#"
provider "berth" {{
  hosts = {{
    a = {{ address = "{HOST_A}" }}
    b = {{
      address         = "{address_b}"
      publish_address = "{PUBLISH_B}"
    }}
  }}
}}

resource "berth_app" "demo" {{
  name  = "{name}"
  image = "{image}"
  services = {{
    web = {{
      http_port = 8080
      instances = 2
      {web_extra}
    }}
  }}
}}
{outputs}
"#
    )
}

#[test]
fn two_instances_land_one_on_each_daemon() {
    require_two_daemons();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("push fixtures");
    let name = unique_app("acc-hosts");
    let _guard = TwoHostGuard(name.clone());
    let tf = Tf::new();
    tf.config(&two_host_app(
        &name,
        HOST_B,
        &set.demo_v1.reference,
        "",
        "output \"endpoints\" { value = berth_app.demo.endpoints[\"web\"] }",
    ));
    tf.init();
    tf.apply();

    // One instance on each daemon, each serving v1 on its own endpoint.
    let on_a = ids_on(HOST_A, &name, None);
    let on_b = ids_on(HOST_B, &name, None);
    assert_eq!(on_a.len(), 1, "one instance on host a: {on_a:?}");
    assert_eq!(on_b.len(), 1, "one instance on host b: {on_b:?}");
    let endpoints: Vec<String> = tf
        .output("endpoints")
        .as_array()
        .expect("endpoints list")
        .iter()
        .map(|e| e.as_str().expect("endpoint").to_owned())
        .collect();
    assert_eq!(endpoints.len(), 2, "{endpoints:?}");
    assert_ne!(endpoints[0], endpoints[1]);
    for endpoint in &endpoints {
        assert_eq!(
            http_body(endpoint, "/").as_deref(),
            Some("berth demo v1\n"),
            "{endpoint}"
        );
    }
    // Each endpoint is the port its own daemon published.
    let published = |host: &str, id: &str| docker(host, &["port", id, "8080/tcp"]);
    let mut ports = [published(HOST_A, &on_a[0]), published(HOST_B, &on_b[0])]
        .map(|p| p.lines().next().unwrap_or_default().trim().to_owned());
    let mut listed = endpoints.clone();
    ports.sort();
    listed.sort();
    assert_eq!(ports.to_vec(), listed, "endpoints are the daemons' ports");

    tf.assert_converged();

    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(ids_on(HOST_A, &name, None).is_empty(), "left on host a");
    assert!(ids_on(HOST_B, &name, None).is_empty(), "left on host b");
}

// ------------------------------------------------------- tcp:// with TLS

/// A dockerd of its own listening on `tcp://127.0.0.1:PORT` with
/// `--tlsverify`, no bridge and no iptables: enough for the API. Stopped by
/// its pid, and its directories removed, when dropped.
struct TlsDaemon {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    bridge: String,
}

/// A bridge of the throwaway daemon's own. Never `--bridge none`: a dockerd
/// with bridging disabled deletes an existing `docker0` at start-up, which
/// pulls the default bridge out from under the main test daemon.
fn own_bridge() -> String {
    let name = format!("btls{}", std::process::id() % 100_000);
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !ip(&["link", "show", &name]) {
        assert!(
            ip(&["link", "add", &name, "type", "bridge"]),
            "ip link add {name}"
        );
        assert!(
            ip(&["addr", "add", "10.214.0.1/24", "dev", &name]),
            "ip addr add"
        );
    }
    assert!(ip(&["link", "set", &name, "up"]), "ip link set up");
    name
}

impl TlsDaemon {
    fn start(ca: &str, server_cert: &str, server_key: &str) -> TlsDaemon {
        // Short paths: containerd's sockets live under the exec root.
        let dir = tempfile::Builder::new()
            .prefix("btls")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let path = |name: &str| dir.path().join(name);
        for (name, text) in [
            ("ca.pem", ca),
            ("server.pem", server_cert),
            ("server-key.pem", server_key),
            ("daemon.json", "{}"),
        ] {
            std::fs::write(path(name), text).expect("write daemon file");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let log = std::fs::File::create(path("dockerd.log")).expect("log");
        let arg = |p: PathBuf| p.display().to_string();
        let bridge = own_bridge();
        let child = Command::new("dockerd")
            .args(["--host", &format!("tcp://127.0.0.1:{port}")])
            .args(["--tlsverify", "--tlscacert", &arg(path("ca.pem"))])
            .args(["--tlscert", &arg(path("server.pem"))])
            .args(["--tlskey", &arg(path("server-key.pem"))])
            .args(["--data-root", &arg(path("data"))])
            .args(["--exec-root", &arg(path("x"))])
            .args(["--pidfile", &arg(path("dockerd.pid"))])
            .args(["--config-file", &arg(path("daemon.json"))])
            .args([
                "--bridge",
                &bridge,
                "--iptables=false",
                "--ip-forward=false",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd (package docker.io)");
        let daemon = TlsDaemon {
            child,
            dir,
            port,
            bridge,
        };
        daemon.wait_until_listening();
        daemon
    }

    fn wait_until_listening(&self) {
        for _ in 0..120 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "dockerd --tlsverify did not listen on 127.0.0.1:{} within 30 s:\n{}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
        );
    }

    fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        // SIGTERM by pid (dockerd unmounts and stops its containerd), bounded.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let mut exited = false;
        for _ in 0..80 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, PEM.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SanType,
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    server_params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut client_params = CertificateParams::new(vec!["berth".to_owned()]).expect("params");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .expect("client cert");

    Pki {
        ca: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn tls_dirs_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("berth-docker-tls-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Berth's TLS transport against a real dockerd with `--tlsverify`: the
/// right client certificate lists containers; a client certificate from
/// another CA is refused by the daemon, and a wrong `ca_pem` makes Berth
/// refuse the daemon, both in words. The key is never written to a file.
#[test]
fn tcp_host_with_tls_against_dockerd_tlsverify() {
    use berth::docker::{DockerError, HostConfig, Hosts, TlsFiles};
    use berth::registry::Secret;

    let pki = pki();
    let daemon = TlsDaemon::start(&pki.ca, &pki.server_cert, &pki.server_key);
    let host_with = |ca: &str, cert: &str, key: &str| {
        let mut cfg = HostConfig::new("c", daemon.address());
        cfg.tls = Some(TlsFiles {
            ca: ca.to_owned(),
            cert: cert.to_owned(),
            key: Secret::new(key),
        });
        Hosts::from_config(&[cfg]).expect("config")
    };

    block_on(async {
        let hosts = host_with(&pki.ca, &pki.client_cert, &pki.client_key);
        let host = hosts.get("c").expect("host c");
        let listed = host.list_managed().await;
        assert!(listed.is_ok(), "{:?}\n{}", listed.err(), daemon.log());
        // The key stays in memory: no file of it anywhere.
        assert!(tls_dirs_of(std::process::id()).is_empty());
        // A second call reuses the connection.
        host.list_managed().await.expect("second list");
        drop(hosts);

        let other = pki_other_client();
        let hosts = host_with(&pki.ca, &other.0, &other.1);
        let err = hosts.get("c").expect("c").list_managed().await.unwrap_err();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");

        let wrong_ca = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).expect("ca");
        let hosts = host_with(&wrong_ca.cert.pem(), &pki.client_cert, &pki.client_key);
        let err = hosts.get("c").expect("c").list_managed().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{text}");
        assert!(text.contains("ca_pem must be the CA"), "{text}");
    });

    // The same through terraform: a health-checked web service and a
    // worker deployed to host c over TLS, serving, converged, destroyed.
    let name = unique_app("acc-tls");
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("push fixtures");
    let tf = Tf::new();
    for (file, text) in [
        ("ca.pem", &pki.ca),
        ("cert.pem", &pki.client_cert),
        ("key.pem", &pki.client_key),
    ] {
        std::fs::write(tf.dir.path().join(file), text).expect("write pem");
    }
    tf.config(&format!(
        r#"
provider "berth" {{
  hosts = {{
    c = {{
      address  = "{address}"
      ca_pem   = file("ca.pem")
      cert_pem = file("cert.pem")
      key_pem  = file("key.pem")
    }}
  }}
}}

resource "berth_app" "tls" {{
  name  = "{name}"
  image = "{image}"
  services = {{
    web = {{
      http_port    = 8080
      health_check = {{ path = "/healthz", healthy_threshold = 2 }}
    }}
  }}
  workers = {{
    queue = {{ command = "/bin/busybox sleep 100000" }}
  }}
}}

output "web" {{ value = berth_app.tls.endpoints["web"][0] }}
"#,
        address = daemon.address(),
        image = set.demo_v1.reference,
    ));
    tf.init();
    tf.apply();
    let web = tf.output("web");
    let web = web.as_str().expect("web endpoint");
    assert_eq!(
        http_body(web, "/").as_deref().map(str::trim),
        Some("berth demo v1"),
        "the service on the TLS host answers at {web}"
    );
    let cli_dir = tf.dir.path().display().to_string();
    let docker_c = |args: &[&str]| {
        let tls = [
            "--tlsverify".to_owned(),
            format!("--tlscacert={cli_dir}/ca.pem"),
            format!("--tlscert={cli_dir}/cert.pem"),
            format!("--tlskey={cli_dir}/key.pem"),
        ];
        let out = Command::new("docker")
            .args(["-H", &daemon.address()])
            .args(&tls)
            .args(args)
            .output()
            .expect("docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count()
    };
    let filter = format!("label=io.berth.app={name}");
    assert_eq!(
        docker_c(&["ps", "-q", "--filter", &filter]),
        2,
        "{}",
        daemon.log()
    );
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert_eq!(docker_c(&["ps", "-aq", "--filter", &filter]), 0);
    // The plugin has exited: none of its private TLS directories is left.
    let left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix("berth-docker-tls-")
                .and_then(|rest| rest.split_once('-'))
                .is_some_and(|(pid, _)| !PathBuf::from(format!("/proc/{pid}")).exists())
        })
        .collect();
    assert!(left.is_empty(), "TLS files left behind: {left:?}");
    drop(daemon);
}

/// A client certificate and key from a CA the daemon does not trust.
fn pki_other_client() -> (String, String) {
    let other = pki();
    (other.client_cert, other.client_key)
}

// ------------------------------------------------- hosts at plan time

#[test]
fn a_host_address_not_known_until_apply_plans_what_it_can_then_deploys() {
    // kreuzwerker/terraform-provider-docker#483: the host is created in
    // the same apply, so its address is unknown while planning.
    require_env();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("push fixtures");
    let name = unique_app("acc-unknown-host");
    let _guard = TwoHostGuard(name.clone());
    let tf = Tf::new();
    tf.config(&format!(
        r#"
resource "terraform_data" "host" {{
  input = "{HOST_A}"
}}

provider "berth" {{
  hosts = {{
    a = {{ address = terraform_data.host.output }}
  }}
}}

resource "berth_app" "demo" {{
  name  = "{name}"
  image = "{image}"
  services = {{
    web = {{ http_port = 8080 }}
  }}
}}

output "endpoint" {{ value = berth_app.demo.endpoints["web"][0] }}
"#,
        image = set.demo_v1.reference,
    ));
    tf.init();
    let plan = tf.plan_json();
    let app = plan["resource_changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["address"] == "berth_app.demo")
        .cloned()
        .expect("berth_app.demo in the plan");
    assert_eq!(app["change"]["actions"], serde_json::json!(["create"]));
    // What needs the host waits for it; what does not is known now.
    assert_eq!(app["change"]["after_unknown"]["endpoints"], true, "{app}");
    assert_eq!(
        app["change"]["after"]["image_digest"], set.demo_v1.digest,
        "the digest is resolved without the host: {app}"
    );
    tf.apply();
    let endpoint = tf.output("endpoint");
    assert_eq!(
        http_body(endpoint.as_str().expect("endpoint"), "/").as_deref(),
        Some("berth demo v1\n")
    );
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(ids_on(HOST_A, &name, None).is_empty(), "left on host a");
}

#[test]
fn an_unreachable_host_at_plan_time_is_named_with_the_reason() {
    require_two_daemons();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("push fixtures");
    let name = unique_app("acc-gone-host");
    let _guard = TwoHostGuard(name.clone());
    // A port nothing listens on: host b as if its machine went away.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = |b: &str| two_host_app(&name, b, &set.demo_v1.reference, "", "");
    let tf = Tf::new();
    tf.config(&config(HOST_B));
    tf.init();
    tf.apply();
    assert_eq!(ids_on(HOST_B, &name, None).len(), 1);

    let gone = format!("tcp://127.0.0.1:{dead}");
    tf.config(&config(&gone));
    for args in [
        &["plan", "-input=false", "-no-color"][..],
        &["apply", "-auto-approve", "-input=false", "-no-color"][..],
    ] {
        let out = tf.fails(args);
        assert!(out.contains("Docker host `b`"), "the host is named: {out}");
        assert!(out.contains(&gone), "the address is named: {out}");
        assert!(
            out.to_lowercase().contains("refused"),
            "the reason is named: {out}"
        );
    }
    // Nothing was touched on the host that answers.
    assert_eq!(ids_on(HOST_A, &name, None).len(), 1);
    tf.config(&config(HOST_B));
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(ids_on(HOST_A, &name, None).is_empty(), "left on host a");
    assert!(ids_on(HOST_B, &name, None).is_empty(), "left on host b");
}

#[test]
fn rollout_drift_and_a_failure_on_one_of_two_hosts() {
    require_two_daemons();
    let set = block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("push fixtures");
    let name = unique_app("acc-two-roll");
    let _guard = TwoHostGuard(name.clone());
    let config = |image: &str| {
        two_host_app(
            &name,
            HOST_B,
            image,
            "health_check = { path = \"/healthz\", healthy_threshold = 6 }",
            "output \"endpoints\" { value = berth_app.demo.endpoints[\"web\"] }",
        )
    };
    let serves = |tf: &Tf, want: &str| {
        let endpoints = tf.output("endpoints");
        let endpoints = endpoints.as_array().expect("endpoints");
        assert_eq!(endpoints.len(), 2, "{endpoints:?}");
        for e in endpoints {
            let e = e.as_str().expect("endpoint");
            assert_eq!(http_body(e, "/").as_deref(), Some(want), "{e}");
        }
    };
    let tf = Tf::new();
    tf.config(&config(&set.demo_v1.reference));
    tf.init();
    tf.apply();
    serves(&tf, "berth demo v1\n");
    let (a1, b1) = (
        ids_on(HOST_A, &name, Some(1)),
        ids_on(HOST_B, &name, Some(1)),
    );
    assert_eq!((a1.len(), b1.len()), (1, 1));

    // Drift on host b only: found there, repaired there; host a untouched.
    docker(HOST_B, &["rm", "-f", &b1[0]]);
    let out = tf.ok(&["plan", "-no-color", "-input=false"]);
    assert!(
        support::squash(&out).contains("is missing on host b (removed outside Berth?)"),
        "{out}"
    );
    assert!(
        !out.contains("on host a"),
        "nothing is said of host a: {out}"
    );
    tf.apply();
    assert_eq!(ids_on(HOST_A, &name, Some(1)), a1, "host a's instance kept");
    let b1 = ids_on(HOST_B, &name, Some(1));
    assert_eq!(b1.len(), 1, "host b repaired within release 1");
    serves(&tf, "berth demo v1\n");
    tf.assert_converged();

    // v2 where host b's new instance dies while it is probed: the whole
    // deploy fails and rolls back on both hosts; release 1 keeps serving.
    let events = Command::new("docker")
        .args(["-H", HOST_B, "events", "--format", "{{.ID}}"])
        .args(["--filter", "event=start"])
        .args(["--filter", &format!("label=io.berth.app={name}")])
        .args(["--filter", "label=io.berth.release=2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("docker events");
    let events_pid = events.id();
    let killer = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut events = events;
        let stdout = events.stdout.take().expect("events stdout");
        let id = std::io::BufReader::new(stdout).lines().next();
        let killed = match id {
            Some(Ok(id)) => Command::new("docker")
                .args(["-H", HOST_B, "kill", id.trim()])
                .stdout(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false),
            _ => false,
        };
        let _ = events.kill();
        let _ = events.wait();
        killed
    });
    tf.config(&config(&set.demo_v2.reference));
    let out = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    // The apply is over: stop waiting for an event that may not come.
    let _ = Command::new("kill")
        .arg(events_pid.to_string())
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        killer.join().expect("killer"),
        "no release 2 instance started on b"
    );
    assert!(
        out.contains("on host b"),
        "the failing host is named: {out}"
    );
    assert_eq!(ids_on(HOST_A, &name, Some(1)), a1, "host a: release 1 kept");
    assert_eq!(ids_on(HOST_B, &name, Some(1)), b1, "host b: release 1 kept");
    assert!(
        ids_on(HOST_A, &name, Some(2)).is_empty(),
        "no release 2 left on a"
    );
    assert!(
        ids_on(HOST_B, &name, Some(2)).is_empty(),
        "no release 2 left on b"
    );
    serves(&tf, "berth demo v1\n");

    // Without the fault the next apply rolls both hosts to v2.
    tf.apply();
    serves(&tf, "berth demo v2\n");
    assert!(ids_on(HOST_A, &name, Some(1)).is_empty());
    assert!(ids_on(HOST_B, &name, Some(1)).is_empty());
    let released = |host| {
        let out = docker(
            host,
            &[
                "ps",
                "--filter",
                &format!("label=io.berth.app={name}"),
                "--format",
                "{{.Label \"io.berth.release\"}}",
            ],
        );
        out.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(released(HOST_A).len(), 1);
    assert_eq!(
        released(HOST_A),
        released(HOST_B),
        "one release on both hosts"
    );
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(ids_on(HOST_A, &name, None).is_empty(), "left on host a");
    assert!(ids_on(HOST_B, &name, None).is_empty(), "left on host b");
}
