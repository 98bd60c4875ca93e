//! The go-plugin protocol as terraform drives it, against the real plugin
//! binary: magic cookie, handshake line, AutoMTLS with a P-521 CA client
//! certificate like terraform's, gRPC over TLS, `GRPCController.Shutdown`
//! and a prompt exit, refusal of foreign or missing client certificates,
//! SIGINT ignored, and debug (reattach) mode.
//!
//! tonic's client here speaks plain HTTP/2 to a relay inside the test, and
//! the relay carries each connection over rustls to the plugin, so every RPC
//! crosses the plugin's real TLS listener.

#[path = "support/plugin_client.rs"]
mod plugin_client;

use plugin_client::{client_tls, tls_relay, ClientIdentity};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth::tfplugin::proto::plugin::grpc_controller_client::GrpcControllerClient;
use berth::tfplugin::proto::plugin::Empty;
use berth::tfplugin::proto::tfplugin6::get_provider_schema;
use berth::tfplugin::proto::tfplugin6::provider_client::ProviderClient;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

const PLUGIN: &str = env!("CARGO_BIN_EXE_terraform-provider-berth");
const COOKIE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// Generous bound for CI; the measured values are printed.
const PROMPTLY: Duration = Duration::from_secs(2);

/// The handshake line, split and checked for go-plugin's format.
struct Handshake {
    addr: SocketAddr,
    server_cert: CertificateDer<'static>,
}

fn parse_handshake(line: &str) -> Handshake {
    let parts: Vec<&str> = line.split('|').collect();
    assert_eq!(parts.len(), 6, "handshake line {line:?}");
    assert_eq!(&parts[..3], ["1", "6", "tcp"], "handshake line {line:?}");
    assert_eq!(parts[4], "grpc", "handshake line {line:?}");
    let addr: SocketAddr = parts[3].parse().expect("address in handshake line");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    let cert = parts[5];
    assert!(
        !cert.is_empty() && !cert.contains('='),
        "certificate must be unpadded base64: {cert:?}"
    );
    assert!(cert
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
    let der = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(cert)
        .expect("standard base64 without padding");
    assert_eq!(der.first(), Some(&0x30), "DER starts with a SEQUENCE");
    Handshake {
        addr,
        server_cert: CertificateDer::from(der),
    }
}

struct Plugin {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Option<ChildStderr>,
    handshake: Handshake,
    started: Instant,
    handshake_after: Duration,
}

/// The plugin under test; `BERTH_PLUGIN_BIN` points the tests (and their
/// printed timings) at another build, such as the release binary.
fn plugin_binary() -> String {
    std::env::var("BERTH_PLUGIN_BIN").unwrap_or_else(|_| PLUGIN.to_owned())
}

fn plugin_command() -> Command {
    let mut command = Command::new(plugin_binary());
    for name in [
        "TF_LOG",
        "TF_LOG_PROVIDER",
        "TF_LOG_PROVIDER_BERTH",
        "TF_PLUGIN_MAGIC_COOKIE",
        "PLUGIN_CLIENT_CERT",
        "PLUGIN_MIN_PORT",
        "PLUGIN_MAX_PORT",
        "PLUGIN_PROTOCOL_VERSIONS",
    ] {
        command.env_remove(name);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn start_plugin(identity: &ClientIdentity, extra_env: &[(&str, &str)]) -> Plugin {
    let mut command = plugin_command();
    command
        .env("TF_PLUGIN_MAGIC_COOKIE", COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .env("PLUGIN_CLIENT_CERT", &identity.pem);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let started = Instant::now();
    let mut child = command.spawn().expect("plugin starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
        .await
        .expect("handshake line within 10 s")
        .unwrap();
    let handshake_after = started.elapsed();
    assert!(
        line.ends_with('\n'),
        "handshake line is a whole line: {line:?}"
    );
    let handshake = parse_handshake(line.trim_end_matches('\n'));
    Plugin {
        stderr: child.stderr.take(),
        child,
        stdout,
        handshake,
        started,
        handshake_after,
    }
}

async fn grpc_channel(relay: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{relay}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// Speaks the first bytes of HTTP/2 over TLS and waits for the server's
/// first frame: `Ok` when the plugin answers, `Err` when the TLS handshake
/// or the connection is refused.
async fn try_http2_over_tls(
    target: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    // Client preface and an empty SETTINGS frame.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    tls.write_all(&hello)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut frame_header = [0_u8; 9];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut frame_header))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    if frame_header[3] == 4 {
        Ok(())
    } else {
        Err(format!("unexpected first frame {frame_header:?}"))
    }
}

async fn wait_for_exit(plugin: &mut Plugin, within: Duration) -> std::process::ExitStatus {
    tokio::time::timeout(within, plugin.child.wait())
        .await
        .expect("plugin exits in time")
        .unwrap()
}

async fn rest_of_stdout(plugin: &mut Plugin) -> String {
    let mut rest = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        plugin.stdout.read_to_string(&mut rest),
    )
    .await
    .expect("stdout closes")
    .unwrap();
    rest
}

async fn stderr_text(plugin: &mut Plugin) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = plugin.stderr.take() {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), stderr.read_to_string(&mut text)).await;
    }
    text
}

#[tokio::test]
async fn terraform_like_session_over_mtls_then_shutdown_exits_promptly() {
    let identity = ClientIdentity::generate().unwrap();
    let mut plugin = start_plugin(&identity, &[]).await;
    eprintln!("handshake line after {:?}", plugin.handshake_after);

    let config = client_tls(&plugin.handshake.server_cert, Some(&identity)).unwrap();
    try_http2_over_tls(plugin.handshake.addr, config.clone())
        .await
        .expect("the pinned client certificate is accepted");

    let relay = tls_relay(plugin.handshake.addr, config).await.unwrap();
    let channel = grpc_channel(relay).await.expect("gRPC channel");
    let mut provider = ProviderClient::new(channel.clone());
    let schema = provider
        .get_provider_schema(get_provider_schema::Request::default())
        .await
        .expect("GetProviderSchema completes over TLS")
        .into_inner();
    assert!(
        schema.resource_schemas.contains_key("berth_app"),
        "the schema names berth_app: {:?}",
        schema.resource_schemas.keys().collect::<Vec<_>>()
    );

    let mut controller = GrpcControllerClient::new(channel);
    let asked = Instant::now();
    controller
        .shutdown(Empty {})
        .await
        .expect("Shutdown is answered before the plugin exits");
    let answered = asked.elapsed();
    let status = wait_for_exit(&mut plugin, PROMPTLY).await;
    let exited = asked.elapsed();
    eprintln!("Shutdown answered after {answered:?}, plugin exited after {exited:?}");
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        rest_of_stdout(&mut plugin).await,
        "",
        "stdout holds only the handshake line"
    );
    let _ = plugin.started;
}

#[tokio::test]
async fn foreign_or_missing_client_certificates_are_refused() {
    let identity = ClientIdentity::generate().unwrap();
    let mut plugin = start_plugin(&identity, &[]).await;
    let server_cert = plugin.handshake.server_cert.clone();
    let target = plugin.handshake.addr;

    let stranger = ClientIdentity::generate().unwrap();
    let foreign = client_tls(&server_cert, Some(&stranger)).unwrap();
    let refused = try_http2_over_tls(target, foreign.clone()).await;
    assert!(refused.is_err(), "a different certificate must be refused");

    let anonymous = client_tls(&server_cert, None).unwrap();
    let refused = try_http2_over_tls(target, anonymous.clone()).await;
    assert!(
        refused.is_err(),
        "a client without a certificate must be refused"
    );

    // The same through gRPC: the first RPC fails.
    for config in [foreign, anonymous] {
        let relay = tls_relay(target, config).await.unwrap();
        let outcome = match grpc_channel(relay).await {
            Err(_) => None,
            Ok(channel) => Some(
                ProviderClient::new(channel)
                    .get_provider_schema(get_provider_schema::Request::default())
                    .await,
            ),
        };
        if let Some(result) = outcome {
            let status = result.expect_err("RPC over a refused TLS connection fails");
            assert_ne!(status.code(), tonic::Code::Unimplemented, "{status:?}");
        }
    }

    // The plugin still serves its own client afterwards.
    let genuine = client_tls(&server_cert, Some(&identity)).unwrap();
    try_http2_over_tls(target, genuine.clone())
        .await
        .expect("the pinned certificate still works");
    let relay = tls_relay(target, genuine).await.unwrap();
    let channel = grpc_channel(relay).await.unwrap();
    GrpcControllerClient::new(channel)
        .shutdown(Empty {})
        .await
        .unwrap();
    assert!(wait_for_exit(&mut plugin, PROMPTLY).await.success());
    let stderr = stderr_text(&mut plugin).await;
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn sigint_is_ignored_and_the_port_range_is_honoured() {
    let identity = ClientIdentity::generate().unwrap();
    let mut plugin = start_plugin(
        &identity,
        &[("PLUGIN_MIN_PORT", "23100"), ("PLUGIN_MAX_PORT", "23900")],
    )
    .await;
    let port = plugin.handshake.addr.port();
    assert!(
        (23100..=23900).contains(&port),
        "port {port} outside the range"
    );

    let pid = plugin.child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        plugin.child.try_wait().unwrap().is_none(),
        "SIGINT must not stop the plugin"
    );

    let config = client_tls(&plugin.handshake.server_cert, Some(&identity)).unwrap();
    let relay = tls_relay(plugin.handshake.addr, config).await.unwrap();
    let channel = grpc_channel(relay).await.unwrap();
    GrpcControllerClient::new(channel)
        .shutdown(Empty {})
        .await
        .unwrap();
    assert!(wait_for_exit(&mut plugin, PROMPTLY).await.success());
}

#[tokio::test]
async fn without_the_magic_cookie_it_explains_and_fails() {
    let output = plugin_command().output().await.unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Terraform plugin"), "{stderr}");
    assert!(stderr.contains("--debug"), "{stderr}");

    let output = plugin_command()
        .env("TF_PLUGIN_MAGIC_COOKIE", "something else")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn protocol_version_six_is_required() {
    let output = plugin_command()
        .env("TF_PLUGIN_MAGIC_COOKIE", COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "4,5")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("version 6"), "{stderr}");
}

#[tokio::test]
async fn version_flag_prints_the_version() {
    let output = plugin_command().arg("--version").output().await.unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        format!("terraform-provider-berth {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn debug_mode_prints_reattach_config_and_serves_plain_grpc_until_interrupted() {
    let mut child = plugin_command().arg("--debug").spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut reattach = None;
    let mut printed = String::new();
    while reattach.is_none() {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
            .await
            .expect("instructions within 10 s")
            .unwrap();
        assert_ne!(read, 0, "stdout ended early: {printed}");
        printed.push_str(&line);
        if let Some(value) = line.trim().strip_prefix("TF_REATTACH_PROVIDERS=") {
            reattach = Some(value.trim_matches('\'').to_owned());
        }
    }
    assert!(printed.starts_with("Provider started."), "{printed}");
    let value = reattach.unwrap();
    let pid = child.id().unwrap();
    let prefix = format!(
        r#"{{"registry.terraform.io/berth/berth":{{"Protocol":"grpc","ProtocolVersion":6,"Pid":{pid},"Test":true,"Addr":{{"Network":"tcp","String":"127.0.0.1:"#
    );
    assert!(value.starts_with(&prefix), "{value}");
    let parsed: serde_json::Value = serde_json::from_str(&value).unwrap();
    let addr = parsed["registry.terraform.io/berth/berth"]["Addr"]["String"]
        .as_str()
        .unwrap()
        .to_owned();

    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let schema = ProviderClient::new(channel.clone())
        .get_provider_schema(get_provider_schema::Request::default())
        .await
        .expect("GetProviderSchema over the debug listener")
        .into_inner();
    assert!(
        schema.resource_schemas.contains_key("berth_app"),
        "the schema names berth_app"
    );
    // Terraform commands come and go; Shutdown does not end a debug plugin.
    GrpcControllerClient::new(channel)
        .shutdown(Empty {})
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(child.try_wait().unwrap().is_none());

    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(PROMPTLY, child.wait())
        .await
        .expect("Ctrl-C stops a debug plugin")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
