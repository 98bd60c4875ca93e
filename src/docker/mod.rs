//! The only code that talks to Docker hosts (bollard).
//!
//! It owns: reading host addresses ([`HostAddress`]); one lazily opened,
//! shared connection per host ([`DockerHost`], cheap to clone, no I/O until
//! the first call); observing every managed container of a host with one
//! labelled list call ([`DockerHost::list_managed`]); pulling by digest;
//! creating, starting, stopping and removing containers; one-off jobs with
//! their exit code and log tail; the shared network with its fixed
//! addresses (`network`); named volumes; and, for the ingress, commands run
//! inside a container (`exec`) and files copied in and out of one. Every call is bounded
//! by a timeout, and every failure is a [`DockerError`] that names the host
//! and says what to try.
//!
//! Ownership: everything Berth creates carries `io.berth.managed=true`
//! (added here if the caller forgot), and Berth never stops or removes a
//! container, nor removes a network, without that label.
//!
//! Secrets: env values never reach logs (only keys), [`ContainerSpec`]'s
//! `Debug` prints keys only, registry passwords travel as
//! [`crate::registry::Secret`] and are never in an error.
//!
//! Transports: `unix://`; `tcp://` in plain HTTP, or HTTPS with a client
//! certificate when [`TlsFiles`] are given (the daemon's `--tlsverify`
//! setup; the PEM blocks are checked when the host is configured and
//! written to a private directory for bollard while the host lives, see
//! `tls`); and `ssh://[user@]host` through the `ssh` command and `docker
//! system dial-stdio` on the remote host, with the user's own ssh config,
//! keys and agent (port 22 only: other ports need a `Host` alias in
//! `~/.ssh/config`, see `host::ssh_destination`).
//!
//! Layout: `address` (pure address parsing), `tls` (checking TLS material,
//! the private directory), `spec` (the container spec and its pure mapping
//! to the Engine API), `observed` (the pure mapping of the list call),
//! `error` (errors and classification), `host` (the I/O).

mod address;
mod error;
mod host;
mod network;
mod observed;
mod spec;
pub mod swarm;
mod swarm_host;
mod tls;

use std::collections::BTreeMap;
use std::fmt;

pub use address::{AddressError, HostAddress};
pub use error::DockerError;
pub use host::{
    DockerHost, API_TIMEOUT, CONNECT_TIMEOUT, JOB_LOG_TAIL_LINES, LOG_TIMEOUT, PULL_TIMEOUT,
};
pub use network::{NetworkInfo, Subnet};
pub use observed::{ContainerState, Observed, Published};
pub use spec::{ContainerSpec, RestartPolicy};
pub use tls::{check_tls_material, TlsMaterialError, TlsPart};

use crate::registry::Secret;

/// Name of the host used when none is configured.
pub const LOCAL_HOST_NAME: &str = "local";
/// Address of the local daemon when `DOCKER_HOST` is not set.
pub const DEFAULT_LOCAL_ADDRESS: &str = "unix:///var/run/docker.sock";
/// Where published ports listen unless a host says otherwise.
pub const DEFAULT_PUBLISH_ADDRESS: &str = "127.0.0.1";

/// TLS material for a `tcp://` host, PEM-encoded (what `docker --tlsverify`
/// reads from `ca.pem`, `cert.pem` and `key.pem`).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsFiles {
    /// The CA that signed the daemon's certificate.
    pub ca: String,
    /// Berth's client certificate.
    pub cert: String,
    /// Berth's client key.
    pub key: Secret,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &format_args!("<{} bytes>", self.ca.len()))
            .field("cert", &format_args!("<{} bytes>", self.cert.len()))
            .field("key", &self.key)
            .finish()
    }
}

/// One configured Docker host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostConfig {
    /// Berth's name for it (`local`, `web-1`); unique.
    pub name: String,
    /// `unix:///path`, `tcp://host:port` or `ssh://user@host[:port]`.
    pub address: String,
    /// Host address published ports listen on; default `127.0.0.1`.
    pub publish_address: String,
    /// TLS files, for `tcp://` only.
    pub tls: Option<TlsFiles>,
    /// How apps run on it: containers Berth places, or Swarm services.
    #[serde(default)]
    pub mode: HostMode,
}

/// How apps run on a Docker host.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HostMode {
    /// Containers Berth places and switches itself (the default).
    #[default]
    Containers,
    /// The host is a Swarm manager: each component is a Swarm service,
    /// placed and rolled by Swarm, supervised by Berth.
    Swarm,
}

impl HostMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HostMode::Containers => "containers",
            HostMode::Swarm => "swarm",
        }
    }

    /// `containers` or `swarm`; `None` for anything else.
    pub fn parse(s: &str) -> Option<HostMode> {
        match s {
            "containers" => Some(HostMode::Containers),
            "swarm" => Some(HostMode::Swarm),
            _ => None,
        }
    }
}

impl HostConfig {
    /// A host with the default publish address and no TLS.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> HostConfig {
        HostConfig {
            name: name.into(),
            address: address.into(),
            publish_address: DEFAULT_PUBLISH_ADDRESS.to_owned(),
            tls: None,
            mode: HostMode::Containers,
        }
    }

    /// The host `local`: `docker_host_env` (the value of `DOCKER_HOST`, passed
    /// in by the caller) when set and non-empty, else the default socket.
    pub fn local(docker_host_env: Option<&str>) -> HostConfig {
        let address = docker_host_env
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .unwrap_or(DEFAULT_LOCAL_ADDRESS);
        HostConfig::new(LOCAL_HOST_NAME, address)
    }
}

/// Credentials for a pull from a private registry.
#[derive(Clone, Debug)]
pub struct RegistryLogin {
    pub username: String,
    /// Redacting `Debug`; read with `.expose()` only when sending.
    pub password: Secret,
    /// Registry host (`ghcr.io`, `127.0.0.1:5001`); when empty, the
    /// registry of the image being pulled.
    pub server: String,
}

impl RegistryLogin {
    /// The credentials as the daemon takes them, for an image of
    /// `registry` when the login names no server.
    pub(crate) fn credentials(self, registry: &str) -> bollard::auth::DockerCredentials {
        bollard::auth::DockerCredentials {
            username: Some(self.username),
            password: Some(self.password.expose().to_owned()),
            serveraddress: Some(if self.server.is_empty() {
                registry.to_owned()
            } else {
                self.server
            }),
            ..Default::default()
        }
    }
}

/// How a one-off job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOutcome {
    /// The process's exit status (137 after a kill at timeout; -1 if unknown).
    pub exit_code: i64,
    /// The last lines of its output (stdout and stderr interleaved).
    pub log_tail: Vec<String>,
    /// True when the job ran out of time and was killed.
    pub timed_out: bool,
}

impl JobOutcome {
    /// Exit 0 and not timed out.
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0 && !self.timed_out
    }
}

/// What a command run inside a container (`exec`) left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its exit status (-1 when the daemon did not report one).
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy), trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// All configured hosts by name (ordered by name), one shared connection
/// each.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    hosts: BTreeMap<String, DockerHost>,
    configs: Vec<HostConfig>,
}

impl Hosts {
    /// One [`DockerHost`] per config. Fails on an invalid or unsupported
    /// address or a duplicate name; does no I/O.
    pub fn from_config(configs: &[HostConfig]) -> Result<Hosts, DockerError> {
        let mut hosts = BTreeMap::new();
        for config in configs {
            let host = DockerHost::connect(config)?;
            if hosts.insert(config.name.clone(), host).is_some() {
                return Err(DockerError::InvalidConfig {
                    host: config.name.clone(),
                    detail: "this name is configured twice; host names must be unique".to_owned(),
                });
            }
        }
        if let Some(swarm) = configs.iter().find(|c| c.mode == HostMode::Swarm) {
            if configs.len() > 1 {
                return Err(DockerError::InvalidConfig {
                    host: swarm.name.clone(),
                    detail: "a host with mode = \"swarm\" is a whole cluster and must be the only host of a provider (Swarm places the tasks); configure plain hosts in another provider block (an alias)".to_owned(),
                });
            }
        }
        let mut configs = configs.to_vec();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Hosts { hosts, configs })
    }

    /// The configurations the hosts were made from, in name order (the
    /// engine records them with an app, for deploys without terraform).
    pub fn configs(&self) -> &[HostConfig] {
        &self.configs
    }

    /// The default: one host `local` at `docker_host_env` (the caller passes
    /// `std::env::var("DOCKER_HOST").ok()`) or `unix:///var/run/docker.sock`.
    pub fn local(docker_host_env: Option<&str>) -> Result<Hosts, DockerError> {
        Hosts::from_config(&[HostConfig::local(docker_host_env)])
    }

    /// `configs`, or [`Hosts::local`] when none are configured.
    /// The local host (`DOCKER_HOST`) in `mode`.
    pub fn local_in_mode(
        docker_host_env: Option<&str>,
        mode: HostMode,
    ) -> Result<Hosts, DockerError> {
        let mut config = HostConfig::local(docker_host_env);
        config.mode = mode;
        Hosts::from_config(&[config])
    }

    pub fn from_config_or_local(
        configs: &[HostConfig],
        docker_host_env: Option<&str>,
    ) -> Result<Hosts, DockerError> {
        if configs.is_empty() {
            Hosts::local(docker_host_env)
        } else {
            Hosts::from_config(configs)
        }
    }

    /// The host called `name`.
    /// The Swarm manager, when the host is one (then it is the only host).
    pub fn swarm(&self) -> Option<&DockerHost> {
        self.hosts.values().find(|h| h.mode() == HostMode::Swarm)
    }

    pub fn get(&self, name: &str) -> Option<&DockerHost> {
        self.hosts.get(name)
    }

    /// Host names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    /// The hosts, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &DockerHost> {
        self.hosts.values()
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_default_reads_docker_host_through_a_parameter() {
        assert_eq!(HostConfig::local(None).address, DEFAULT_LOCAL_ADDRESS);
        assert_eq!(HostConfig::local(Some("  ")).address, DEFAULT_LOCAL_ADDRESS);
        let cfg = HostConfig::local(Some("tcp://10.0.0.5:2375"));
        assert_eq!(cfg.name, "local");
        assert_eq!(cfg.address, "tcp://10.0.0.5:2375");
        assert_eq!(cfg.publish_address, "127.0.0.1");
    }

    #[test]
    fn hosts_are_ordered_and_unique() {
        let hosts = Hosts::from_config(&[
            HostConfig::new("web-2", "unix:///nonexistent/2.sock"),
            HostConfig::new("web-1", "unix:///nonexistent/1.sock"),
        ])
        .unwrap();
        assert_eq!(hosts.names().collect::<Vec<_>>(), vec!["web-1", "web-2"]);
        assert_eq!(hosts.get("web-1").unwrap().name(), "web-1");

        let err = Hosts::from_config(&[
            HostConfig::new("a", "unix:///x.sock"),
            HostConfig::new("a", "unix:///y.sock"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("configured twice"), "{err}");
    }

    #[test]
    fn empty_config_means_local() {
        let hosts = Hosts::from_config_or_local(&[], None).unwrap();
        assert_eq!(hosts.names().collect::<Vec<_>>(), vec!["local"]);
    }

    #[test]
    fn tls_debug_redacts_key() {
        let tls = TlsFiles {
            ca: "CA".into(),
            cert: "CERT".into(),
            key: Secret::new("PRIVATE KEY"),
        };
        let text = format!("{tls:?}");
        assert!(!text.contains("PRIVATE"));
    }
}
