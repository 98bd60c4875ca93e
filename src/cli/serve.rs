//! `berth serve`: the deploy-hook server ([`crate::hooks`]) on a TCP
//! address, plain HTTP or TLS, until SIGTERM or Ctrl-C.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use hyper::header::HeaderName;

use super::CliError;
use crate::docker::Hosts;
use crate::engine::deploy::TEST_LABEL_ENV;
use crate::engine::scheduler::Scheduler;
use crate::engine::{Apps, Engine};
use crate::hooks::{tls_acceptor, ServeOptions, Server, DEFAULT_MAX_CONNECTIONS};
use crate::registry::{RegistryClient, RegistryOptions};
use crate::store::{process_env, Store, StoreOptions};

/// The default listen address: loopback (put a TLS reverse proxy or
/// `--tls-cert` in front before exposing it).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

pub const LONG_ABOUT: &str = "\
Serve the deploy hooks (`berth_deploy_hook`): a call to a hook's secret URL
deploys its app, as Berth recorded it at its last apply (secret values
included), with no downtime, through the same path as `terraform apply`.

  GET|POST /deploy/ID?key=KEY[&imgURL=REF]   deploy; 202 {\"deploy\": {...}}
  GET /deploy/ID/deploys/DEPLOY?key=KEY      that deploy's status
  GET /healthz                               200 when the server and store work

It also runs the apps' scheduled jobs (`jobs` with a `schedule`), each
scheduled time once even when several `berth serve` share the store; a run
missed while none ran starts late if it is at most the job's
starting_deadline_seconds old, older ones are journaled as missed
(--no-jobs: hooks only).

`imgURL` names another tag or digest of the app's repository (URL-encoded);
another repository, a wrong key or an unknown hook get the same 404. The
server shares Berth's state directory (BERTH_STATE_DIR) with the provider and
the `berth` command, and logs each call's hook id and outcome (never the key)
to stderr. SIGTERM stops it: it finishes the requests in flight and waits for
running deploys (at most --shutdown-grace).";

pub const AFTER_HELP: &str = "\
Examples:
  berth serve                                   # http://127.0.0.1:7070
  berth serve --listen 0.0.0.0:7443 --tls-cert cert.pem --tls-key key.pem
  berth serve --client-ip-header X-Real-IP      # behind a reverse proxy

examples/deploy-hooks/ has a hardened systemd unit and a reverse-proxy
configuration that keeps the key out of access logs.";

/// Arguments of `berth serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (`HOST:PORT`; port 0 picks a free one)
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: String,

    /// PEM certificate chain: serve HTTPS (needs --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Speak plain HTTP to this registry (`host[:port]`); repeatable
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,

    /// Take the caller's address from this header, set by the reverse
    /// proxy in front (for slowing down bad keys per caller)
    #[arg(long, value_name = "NAME")]
    client_ip_header: Option<String>,

    /// Connections served at once; more wait
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// On SIGTERM, wait at most this many seconds for running deploys
    /// and job runs
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    shutdown_grace: u64,

    /// Do not run the apps' scheduled jobs (serve deploy hooks only)
    #[arg(long)]
    no_jobs: bool,
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let client_ip_header = match &args.client_ip_header {
        Some(name) => Some(HeaderName::try_from(name.as_str()).map_err(|_| {
            CliError::usage(format!(
                "--client-ip-header: {name:?} is not a valid header name"
            ))
        })?),
        None => None,
    };
    if args.max_connections == 0 {
        return Err(CliError::usage("--max-connections: give at least 1"));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key).map_err(CliError::usage)?),
        _ => None,
    };
    let options = StoreOptions::from_env_with_store(None, None, &process_env)
        .map_err(super::app::store_open_error)?;
    let store = Store::open(options)
        .await
        .map_err(super::app::store_open_error)?;
    let registry = RegistryClient::new(RegistryOptions {
        insecure_registries: args.insecure_registries,
    });
    // The hosts come from each app's record; the engine here only carries
    // the store, the test label and how ingress images are pinned.
    let engine = Engine::new(Hosts::default(), store)
        .with_test_label(process_env(TEST_LABEL_ENV).is_some())
        .with_lease_timing_from(&process_env)
        .map_err(CliError::usage)?
        .with_ingress(Default::default(), std::sync::Arc::new(registry.clone()));
    let apps = std::sync::Arc::new(Apps::new(engine, registry));
    let server = Server::new(
        apps.clone(),
        ServeOptions {
            max_connections: args.max_connections,
            client_ip_header,
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
        },
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            CliError::failed(format!("Cannot listen on {}", args.listen), e.to_string())
                .with_hint("pick a free port with --listen HOST:PORT")
        })?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::failed("Cannot read the listen address", e.to_string()))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The one line on stdout: where it listens (port 0 resolved).
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "berth serve: listening on {scheme}://{address}");
    let _ = stdout.flush();
    drop(stdout);
    tracing::info!(%address, scheme, "serving deploy hooks");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grace = Duration::from_secs(args.shutdown_grace);
    let scheduler = (!args.no_jobs).then(|| tokio::spawn(Scheduler::new(apps).run(stop_rx, grace)));
    server.serve(listener, tls, stop_signal()).await;
    let _ = stop_tx.send(true);
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
