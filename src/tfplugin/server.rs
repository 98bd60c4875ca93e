//! The go-plugin side of the plugin protocol, as terraform 1.11 expects it:
//! the magic-cookie check, protocol version 6 negotiation, the listener on
//! 127.0.0.1 (within `PLUGIN_MIN_PORT`..`PLUGIN_MAX_PORT`), AutoMTLS (a fresh
//! self-signed server certificate; the client certificate pinned to the exact
//! DER terraform passed in `PLUGIN_CLIENT_CERT`), the one stdout handshake
//! line, serving `tfplugin6.Provider` and `plugin.GRPCController` with tonic,
//! the prompt exit after `Shutdown`, and debug (reattach) mode.
//!
//! Stdout carries the handshake line (or, in debug mode, the reattach
//! instructions) and nothing else; logs go to stderr through
//! [`super::logging`].

use std::fmt;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use super::proto::plugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use super::proto::plugin::Empty;
use super::proto::tfplugin6::provider_server::ProviderServer;
use super::service::ProviderGrpc;
use crate::provider::Provider;

/// The environment variable terraform sets to prove it launched the plugin.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
/// Terraform's magic cookie value (the same for every provider).
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's own protocol version, the first field of the handshake line.
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// The plugin protocol Berth speaks: tfplugin6.
pub const PLUGIN_PROTOCOL_VERSION: u32 = 6;
/// The provider's full source address, the key of `TF_REATTACH_PROVIDERS`.
pub const PROVIDER_ADDRESS: &str = "registry.terraform.io/berth/berth";
/// gRPC message limit in both directions, as in terraform's Go SDKs.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// How long a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After `Shutdown`, connections get this long to close gracefully (the
/// answer is sent, GOAWAY exchanged) before the process exits anyway.
/// terraform waits two seconds before killing a plugin; on loopback the
/// graceful close takes about a millisecond.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// How the plugin binary was asked to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Debug (reattach) mode: no magic cookie, no TLS, reattach instructions
    /// on stdout, run until interrupted.
    pub debug: bool,
}

/// Why the plugin could not serve. Each message tells the person reading
/// stderr what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Started by hand rather than by terraform.
    #[error(
        "this binary is a Terraform plugin: it is not meant to be run by hand.\n\
         Install it with `make install` and use it from terraform \
         (source = \"berth/berth\").\n\
         To use the deployment engine directly, run the `berth` command.\n\
         To attach a debugger, run it with `--debug` and follow the \
         TF_REATTACH_PROVIDERS instructions it prints."
    )]
    NotLaunchedByTerraform,
    /// Terraform offered no protocol version Berth speaks.
    #[error(
        "terraform offered plugin protocol versions {offered:?} \
         (PLUGIN_PROTOCOL_VERSIONS) but Berth speaks only version 6; \
         use terraform 1.0 or newer, or OpenTofu"
    )]
    UnsupportedProtocol {
        /// The value of `PLUGIN_PROTOCOL_VERSIONS`.
        offered: String,
    },
    /// `PLUGIN_MIN_PORT` or `PLUGIN_MAX_PORT` is not a port number, or the
    /// range is empty.
    #[error("invalid plugin port range: {0}")]
    PortRange(String),
    /// No port in the range could be bound.
    #[error("could not listen on 127.0.0.1 (ports {min}..={max}): {source}")]
    Listen {
        /// First port tried.
        min: u16,
        /// Last port tried.
        max: u16,
        /// The last bind error.
        source: io::Error,
    },
    /// `PLUGIN_CLIENT_CERT` holds no usable PEM certificate.
    #[error("PLUGIN_CLIENT_CERT does not hold a PEM certificate: {0}")]
    ClientCertificate(String),
    /// The server certificate could not be generated.
    #[error("could not generate the plugin's TLS certificate: {0}")]
    ServerCertificate(#[from] rcgen::Error),
    /// rustls refused the TLS configuration.
    #[error("could not configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The handshake line or debug instructions could not be written.
    #[error("could not write to stdout: {0}")]
    Stdout(#[source] io::Error),
    /// The interrupt handler could not be installed.
    #[error("could not install the signal handler: {0}")]
    Signal(#[source] io::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What go-plugin's client tells its plugin through the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeEnv {
    /// `TF_PLUGIN_MAGIC_COOKIE`.
    pub magic_cookie: Option<String>,
    /// `PLUGIN_PROTOCOL_VERSIONS`, comma-separated.
    pub protocol_versions: Option<String>,
    /// `PLUGIN_MIN_PORT`.
    pub min_port: Option<String>,
    /// `PLUGIN_MAX_PORT`.
    pub max_port: Option<String>,
    /// `PLUGIN_CLIENT_CERT` (PEM); absent when terraform disabled plugin
    /// TLS (`TF_DISABLE_PLUGIN_TLS`).
    pub client_cert: Option<String>,
}

impl HandshakeEnv {
    /// Reads the handshake variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        HandshakeEnv {
            magic_cookie: lookup(MAGIC_COOKIE_KEY),
            protocol_versions: lookup("PLUGIN_PROTOCOL_VERSIONS"),
            min_port: lookup("PLUGIN_MIN_PORT"),
            max_port: lookup("PLUGIN_MAX_PORT"),
            client_cert: lookup("PLUGIN_CLIENT_CERT").filter(|pem| !pem.trim().is_empty()),
        }
    }

    /// Reads the handshake variables from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Fails unless terraform launched us (the magic cookie).
    pub fn check_cookie(&self) -> Result<(), ServeError> {
        match self.magic_cookie.as_deref() {
            Some(MAGIC_COOKIE_VALUE) => Ok(()),
            _ => Err(ServeError::NotLaunchedByTerraform),
        }
    }

    /// Fails unless the offered versions include 6. Like go-plugin, entries
    /// that are not numbers are skipped.
    pub fn check_protocol_version(&self) -> Result<u32, ServeError> {
        let offered = self.protocol_versions.clone().unwrap_or_default();
        let speaks_six = offered
            .split(',')
            .filter_map(|entry| entry.trim().parse::<u32>().ok())
            .any(|version| version == PLUGIN_PROTOCOL_VERSION);
        if speaks_six {
            Ok(PLUGIN_PROTOCOL_VERSION)
        } else {
            Err(ServeError::UnsupportedProtocol { offered })
        }
    }

    /// The ports to try, in order: `0` (any) unless a range is given. Only
    /// a minimum means up to 65535; only a maximum means from 1.
    pub fn port_range(&self) -> Result<(u16, u16), ServeError> {
        fn parse(name: &str, value: Option<&str>) -> Result<Option<u16>, ServeError> {
            match value.map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(text) => text.parse::<u16>().map(Some).map_err(|_| {
                    ServeError::PortRange(format!("{name}={text:?} is not a port number"))
                }),
            }
        }
        let min = parse("PLUGIN_MIN_PORT", self.min_port.as_deref())?;
        let max = parse("PLUGIN_MAX_PORT", self.max_port.as_deref())?;
        let range = match (min, max) {
            (None, None) => (0, 0),
            (Some(min), None) => (min, u16::MAX),
            (None, Some(max)) => (1, max),
            (Some(min), Some(max)) => (min, max),
        };
        if range.0 > range.1 {
            return Err(ServeError::PortRange(format!(
                "PLUGIN_MIN_PORT {} is greater than PLUGIN_MAX_PORT {}",
                range.0, range.1
            )));
        }
        Ok(range)
    }
}

/// The go-plugin handshake line: `1|6|tcp|ADDR|grpc|CERT`, where CERT is
/// the server certificate's DER in unpadded standard base64 (empty without
/// TLS).
pub fn handshake_line(addr: SocketAddr, server_cert_der: Option<&[u8]>) -> String {
    let cert = server_cert_der
        .map(|der| base64::engine::general_purpose::STANDARD_NO_PAD.encode(der))
        .unwrap_or_default();
    format!("{CORE_PROTOCOL_VERSION}|{PLUGIN_PROTOCOL_VERSION}|tcp|{addr}|grpc|{cert}")
}

/// The `TF_REATTACH_PROVIDERS` value for a debug-mode plugin at `addr`.
pub fn reattach_config(addr: SocketAddr, pid: u32) -> String {
    // Written by hand to keep go-plugin's key order; no value needs escaping.
    format!(
        r#"{{"{PROVIDER_ADDRESS}":{{"Protocol":"grpc","ProtocolVersion":{PLUGIN_PROTOCOL_VERSION},"Pid":{pid},"Test":true,"Addr":{{"Network":"tcp","String":"{addr}"}}}}}}"#
    )
}

/// Runs a plugin process to its end: JSON logs on stderr, the async
/// runtime, [`serve`] with `provider`, then exit (terraform expects the
/// process gone right after Shutdown, and nothing else in flight needs
/// waiting for). Errors go to stderr after `program`, with status 1.
pub fn run_plugin(program: &str, opts: ServeOptions, provider: Provider) -> ! {
    super::logging::init(super::logging::PLUGIN_MODULE);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{program}: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(serve(opts, provider)) {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("{program}: {error}");
            std::process::exit(1);
        }
    }
}

/// Runs the plugin until terraform calls `GRPCController.Shutdown` (or, in
/// debug mode, until Ctrl-C). Returns `Ok` when the process should exit 0;
/// the caller exits right away rather than waiting for anything else.
///
/// `provider` is Berth's own ([`Provider::new`]) in the plugin binary;
/// the benchmark serves a do-nothing provider with Berth's schemas.
pub async fn serve(opts: ServeOptions, provider: Provider) -> Result<(), ServeError> {
    let provider = ProviderGrpc::with_provider(provider);
    let env = HandshakeEnv::from_env();
    if opts.debug {
        return serve_debug(provider).await;
    }
    env.check_cookie()?;
    env.check_protocol_version()?;
    let (min_port, max_port) = env.port_range()?;

    // go-plugin ignores SIGINT in plugins: terraform forwards Ctrl-C as
    // StopProvider and ends the plugin with Shutdown. SIGTERM keeps its
    // default (exit). Installed before the handshake so no Ctrl-C is missed.
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(ServeError::Signal)?;
    tokio::spawn(async move {
        let mut count = 0_u64;
        while interrupts.recv().await.is_some() {
            count += 1;
            tracing::trace!(count, "plugin received interrupt signal, ignoring");
        }
    });

    let tls = match env.client_cert.as_deref() {
        Some(pem) => Some(AutoTls::new(pem)?),
        None => {
            tracing::warn!("PLUGIN_CLIENT_CERT is not set: serving without TLS");
            None
        }
    };
    let listener = listen(min_port, max_port).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        min: min_port,
        max: max_port,
        source,
    })?;
    tracing::debug!(network = "tcp", address = %addr, tls = tls.is_some(), "plugin address");

    let line = handshake_line(addr, tls.as_ref().map(|t| t.server_cert_der.as_slice()));
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(ServeError::Stdout)?;
    drop(stdout);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let acceptor = tls.map(|t| TlsAcceptor::from(t.config));
    let ending = provider.provider();
    let outcome = run(
        listener,
        acceptor,
        provider,
        Controller::exiting(shutdown_tx),
        shutdown_rx,
    )
    .await;
    ending.finish();
    outcome
}

/// Debug mode: plain gRPC on 127.0.0.1, reattach instructions on stdout,
/// serve until SIGINT or SIGTERM. `Shutdown` calls are answered but do not
/// end the process, so several terraform commands can attach in turn.
async fn serve_debug(provider: ProviderGrpc) -> Result<(), ServeError> {
    let listener = listen(0, 0).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        min: 0,
        max: 0,
        source,
    })?;
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(ServeError::Signal)?;
    let mut terminations =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ServeError::Signal)?;

    let reattach = reattach_config(addr, std::process::id());
    let mut stdout = io::stdout().lock();
    write!(
        stdout,
        "Provider started. To attach Terraform CLI, set the TF_REATTACH_PROVIDERS \
         environment variable with the following:\n\n\
         \tTF_REATTACH_PROVIDERS='{reattach}'\n\n\
         Press Ctrl-C to stop the provider.\n"
    )
    .and_then(|()| stdout.flush())
    .map_err(ServeError::Stdout)?;
    drop(stdout);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stop = shutdown_tx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupts.recv() => {}
            _ = terminations.recv() => {}
        }
        tracing::info!("debug provider interrupted, stopping");
        let _ = stop.send(true);
    });
    run(
        listener,
        None,
        provider,
        Controller::staying(shutdown_tx),
        shutdown_rx,
    )
    .await
}

/// Binds 127.0.0.1 on the first free port of `min..=max` (`0` = any).
async fn listen(min: u16, max: u16) -> Result<TcpListener, ServeError> {
    let mut last_error = io::Error::new(io::ErrorKind::AddrNotAvailable, "no port tried");
    for port in min..=max {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = error,
        }
    }
    Err(ServeError::Listen {
        min,
        max,
        source: last_error,
    })
}

/// Serves both gRPC services on `listener` until `shutdown` turns true,
/// then allows [`SHUTDOWN_GRACE`] for connections to close gracefully.
async fn run(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    provider: ProviderGrpc,
    controller: Controller,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let provider = ProviderServer::new(provider)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let controller = GrpcControllerServer::new(controller)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (connections_tx, connections_rx) = mpsc::channel::<PluginConn>(16);
    let accept_loop = tokio::spawn(accept_connections(listener, acceptor, connections_tx));
    let incoming = futures::stream::unfold(connections_rx, |mut rx| async move {
        let conn = rx.recv().await?;
        Some((Ok::<_, io::Error>(conn), rx))
    });

    let mut requested = shutdown.clone();
    let signal = async move {
        let _ = requested.wait_for(|stop| *stop).await;
    };
    let server = tonic::transport::Server::builder()
        .add_service(provider)
        .add_service(controller)
        .serve_with_incoming_shutdown(incoming, signal);

    let mut requested = shutdown;
    let deadline = async move {
        let _ = requested.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let outcome = tokio::select! {
        result = server => result.map_err(ServeError::from),
        () = deadline => {
            tracing::debug!("connections still open after the shutdown grace, exiting anyway");
            Ok(())
        }
    };
    accept_loop.abort();
    outcome
}

/// Accepts TCP connections and, with TLS, completes each handshake in its
/// own task so a slow or refused client never holds up the next one.
async fn accept_connections(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    connections: mpsc::Sender<PluginConn>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "accepting a connection failed");
                continue;
            }
        };
        // gRPC is many small frames; do not let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let connections = connections.clone();
        match acceptor.clone() {
            None => {
                if connections
                    .send(PluginConn::Plain(tcp, peer))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = connections.send(PluginConn::Tls(Box::new(tls), peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%peer, %error, "refused a plugin connection: TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "refused a plugin connection: TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
}

/// `plugin.GRPCController`: terraform calls `Shutdown` when it is done with
/// the plugin process.
struct Controller {
    shutdown: watch::Sender<bool>,
    /// False in debug mode, where the process outlives terraform commands.
    exit_on_shutdown: bool,
}

impl Controller {
    fn exiting(shutdown: watch::Sender<bool>) -> Self {
        Controller {
            shutdown,
            exit_on_shutdown: true,
        }
    }

    fn staying(shutdown: watch::Sender<bool>) -> Self {
        Controller {
            shutdown,
            exit_on_shutdown: false,
        }
    }
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        if self.exit_on_shutdown {
            tracing::debug!("shutdown requested by terraform");
            // The server stops accepting and closes each connection once its
            // streams, this answer included, are done.
            self.shutdown.send_replace(true);
        } else {
            tracing::info!("shutdown requested; debug mode keeps serving until Ctrl-C");
        }
        Ok(Response::new(Empty {}))
    }
}

/// The server side of AutoMTLS: a fresh certificate and a rustls config
/// that accepts only terraform's client certificate.
struct AutoTls {
    server_cert_der: Vec<u8>,
    config: Arc<rustls::ServerConfig>,
}

impl AutoTls {
    fn new(client_cert_pem: &str) -> Result<Self, ServeError> {
        let client_cert = CertificateDer::pem_slice_iter(client_cert_pem.as_bytes())
            .next()
            .ok_or_else(|| ServeError::ClientCertificate("no CERTIFICATE block".to_owned()))?
            .map_err(|error| ServeError::ClientCertificate(error.to_string()))?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (server_cert, server_key) = generate_server_certificate()?;
        let server_cert_der = server_cert.as_ref().to_vec();
        let verifier = PinnedClientCert::new(client_cert, &provider);
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(vec![server_cert], server_key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(AutoTls {
            server_cert_der,
            config: Arc::new(config),
        })
    }
}

/// A self-signed certificate like go-plugin's (`localhost`, a CA that may
/// authenticate servers and clients, valid from yesterday for 30 years),
/// on ECDSA P-256, which is quick to generate.
fn generate_server_certificate(
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), ServeError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params.distinguished_name.remove(DnType::CommonName);
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Berth");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() / 86_400)
        .unwrap_or(0);
    let today = i64::try_from(today).unwrap_or(0);
    let (year, month, day) = super::logging::civil_from_days(today - 1);
    let year = i32::try_from(year).unwrap_or(2025);
    let month = u8::try_from(month).unwrap_or(1);
    let day = u8::try_from(day.min(28)).unwrap_or(1);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + 30, month, day);
    let cert = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key_der))
}

/// Accepts exactly one client certificate, byte for byte: the one terraform
/// generated for this plugin process and passed in `PLUGIN_CLIENT_CERT`.
///
/// Terraform's certificate is an ECDSA P-521 self-signed CA, which webpki's
/// stock verifier refuses as a client certificate; pinning the DER is also
/// stricter than chain validation. Handshake signatures are still verified,
/// with the aws-lc-rs provider's algorithms (which include P-521), so the
/// client must hold the certificate's private key.
struct PinnedClientCert {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClientCert {
    fn new(pinned: CertificateDer<'static>, provider: &CryptoProvider) -> Self {
        PinnedClientCert {
            pinned,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl fmt::Debug for PinnedClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedClientCert")
            .field("pinned_der_bytes", &self.pinned.as_ref().len())
            .finish()
    }
}

impl ClientCertVerifier for PinnedClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: Go's client then sends its one certificate as is.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// One accepted connection: TLS (the normal case) or plain TCP (debug mode,
/// or terraform with plugin TLS disabled).
enum PluginConn {
    Plain(TcpStream, SocketAddr),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, SocketAddr),
}

/// What tonic records about a connection: the peer's address.
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo {
    /// The client's address (terraform, on loopback).
    pub remote_addr: SocketAddr,
}

impl Connected for PluginConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            PluginConn::Plain(_, peer) | PluginConn::Tls(_, peer) => {
                PeerInfo { remote_addr: *peer }
            }
        }
    }
}

impl AsyncRead for PluginConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PluginConn::Plain(tcp, _) => Pin::new(tcp).poll_read(cx, buf),
            PluginConn::Tls(tls, _) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PluginConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PluginConn::Plain(tcp, _) => Pin::new(tcp).poll_write(cx, buf),
            PluginConn::Tls(tls, _) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PluginConn::Plain(tcp, _) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            PluginConn::Tls(tls, _) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PluginConn::Plain(tcp, _) => tcp.is_write_vectored(),
            PluginConn::Tls(tls, _) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PluginConn::Plain(tcp, _) => Pin::new(tcp).poll_flush(cx),
            PluginConn::Tls(tls, _) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PluginConn::Plain(tcp, _) => Pin::new(tcp).poll_shutdown(cx),
            PluginConn::Tls(tls, _) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HandshakeEnv {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        HandshakeEnv::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn cookie_must_match_exactly() {
        assert!(env(&[(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)])
            .check_cookie()
            .is_ok());
        let wrong = env(&[(MAGIC_COOKIE_KEY, "nope")])
            .check_cookie()
            .unwrap_err();
        assert!(wrong.to_string().contains("Terraform plugin"));
        assert!(env(&[]).check_cookie().is_err());
    }

    #[test]
    fn protocol_six_must_be_offered() {
        let ok = env(&[("PLUGIN_PROTOCOL_VERSIONS", "5,6")]);
        assert_eq!(ok.check_protocol_version().unwrap(), 6);
        let old = env(&[("PLUGIN_PROTOCOL_VERSIONS", "4,5")]);
        let message = old.check_protocol_version().unwrap_err().to_string();
        assert!(message.contains("\"4,5\"") && message.contains("version 6"));
        assert!(env(&[]).check_protocol_version().is_err());
    }

    #[test]
    fn port_range_follows_go_plugin() {
        assert_eq!(env(&[]).port_range().unwrap(), (0, 0));
        let both = env(&[("PLUGIN_MIN_PORT", "10000"), ("PLUGIN_MAX_PORT", "25000")]);
        assert_eq!(both.port_range().unwrap(), (10000, 25000));
        let backwards = env(&[("PLUGIN_MIN_PORT", "3"), ("PLUGIN_MAX_PORT", "2")]);
        assert!(backwards.port_range().is_err());
        assert!(env(&[("PLUGIN_MIN_PORT", "x")]).port_range().is_err());
    }

    #[test]
    fn handshake_line_and_reattach_config_shapes() {
        let addr: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(
            handshake_line(addr, Some(&[0xff, 0xfe])),
            "1|6|tcp|127.0.0.1:4242|grpc|//4"
        );
        assert_eq!(handshake_line(addr, None), "1|6|tcp|127.0.0.1:4242|grpc|");
        assert_eq!(
            reattach_config(addr, 77),
            r#"{"registry.terraform.io/berth/berth":{"Protocol":"grpc","ProtocolVersion":6,"Pid":77,"Test":true,"Addr":{"Network":"tcp","String":"127.0.0.1:4242"}}}"#
        );
    }
}
