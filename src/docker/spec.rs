//! [`ContainerSpec`]: what Berth asks a host to run, and its pure mapping to
//! the Docker Engine's create-container body. No I/O here, so the mapping
//! (labels, published port, limits, restart policy) is tested without a
//! daemon.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig as EngineHostConfig,
    NetworkingConfig, PortBinding, RestartPolicy as EngineRestartPolicy, RestartPolicyNameEnum,
};

use crate::labels;
use crate::reference::Reference;

/// What Docker does when the container's process exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never restart (jobs).
    #[default]
    No,
    /// Restart always, also after a daemon restart, unless Berth stopped it.
    UnlessStopped,
    /// Restart only after a non-zero exit.
    OnFailure,
}

/// One container Berth wants on a host.
///
/// `Debug` prints env keys only: values may be secrets.
#[derive(Clone, Default, PartialEq)]
pub struct ContainerSpec {
    /// Container name, unique on the host.
    pub name: String,
    /// Pinned image: `registry/repository@sha256:…`.
    pub image: String,
    /// Overrides the image's `CMD` when set.
    pub command: Option<Vec<String>>,
    /// Environment; values may be secrets and are never logged.
    pub env: BTreeMap<String, String>,
    /// Labels; [`labels::MANAGED`] is added if missing.
    pub labels: BTreeMap<String, String>,
    /// Container port that serves HTTP, published on the host's publish
    /// address with an ephemeral host port.
    pub http_port: Option<u16>,
    /// CPU limit in cores (`0.5` = half a core).
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    pub memory_mb: Option<u64>,
    /// User-defined network to attach to.
    pub network: Option<String>,
    /// DNS names the container answers to on `network` (several containers
    /// may share one: Docker's DNS then round-robins).
    pub network_aliases: Vec<String>,
    /// A fixed IPv4 address on `network` (the network must have a
    /// configured subnet): it survives restarts of the container and of the
    /// daemon, so the ingress never routes to a stale address.
    pub ipv4_address: Option<String>,
    /// Runs in the host's network namespace (the ingress): `network`,
    /// `network_aliases`, `ipv4_address` and `http_port` do not apply.
    pub host_network: bool,
    /// Named volumes: (volume name, path in the container).
    pub volumes: Vec<(String, String)>,
    /// Overrides the image's entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's user when set (`0` for root).
    pub user: Option<String>,
    /// Restart policy.
    pub restart: RestartPolicy,
}

impl fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env_keys", &self.env_keys())
            .field("labels", &self.labels)
            .field("http_port", &self.http_port)
            .field("cpus", &self.cpus)
            .field("memory_mb", &self.memory_mb)
            .field("network", &self.network)
            .field("network_aliases", &self.network_aliases)
            .field("ipv4_address", &self.ipv4_address)
            .field("host_network", &self.host_network)
            .field("volumes", &self.volumes)
            .field("entrypoint", &self.entrypoint)
            .field("user", &self.user)
            .field("restart", &self.restart)
            .finish()
    }
}

impl ContainerSpec {
    /// The env keys, for logs (never the values).
    pub fn env_keys(&self) -> Vec<&str> {
        self.env.keys().map(String::as_str).collect()
    }

    /// Checks what the daemon would otherwise reject later or, worse, accept:
    /// an unpinned image, an empty name, nonsensical limits, bad env keys.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("the container name is empty".to_owned());
        }
        check_pinned(&self.image)?;
        if let Some(cpus) = self.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                return Err(format!("cpus must be a positive number, not {cpus}"));
            }
        }
        if self.memory_mb == Some(0) {
            return Err("memory_mb must be at least 1".to_owned());
        }
        if self.memory_mb.is_some_and(|mb| mb > i64::MAX as u64 / MIB) {
            return Err("memory_mb is too large".to_owned());
        }
        if self.http_port == Some(0) {
            return Err("http_port must be 1-65535".to_owned());
        }
        if self.host_network && (self.http_port.is_some() || self.network.is_some()) {
            return Err(
                "a container on the host's network publishes no port and joins no network"
                    .to_owned(),
            );
        }
        if let Some(ip) = &self.ipv4_address {
            if ip.parse::<std::net::Ipv4Addr>().is_err() || self.network.is_none() {
                return Err(format!(
                    "ipv4_address `{ip}` must be an IPv4 address on a network"
                ));
            }
        }
        if let Some(key) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(format!(
                "env key `{key}` is invalid: keys must be non-empty without `=`"
            ));
        }
        Ok(())
    }

    /// The labels the container gets: the caller's plus
    /// `io.berth.managed=true`.
    pub fn effective_labels(&self) -> BTreeMap<String, String> {
        with_managed(&self.labels)
    }

    /// The Docker Engine create body for this spec, publishing `http_port`
    /// on `publish_address` with an ephemeral host port.
    pub fn to_create_body(&self, publish_address: &str) -> ContainerCreateBody {
        if self.host_network {
            return self.host_network_body();
        }
        let port_key = self.http_port.map(|port| format!("{port}/tcp"));
        let port_bindings = port_key.as_ref().map(|key| {
            HashMap::from([(
                key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(publish_address.to_owned()),
                    // Empty: the daemon picks a free ephemeral port.
                    host_port: Some(String::new()),
                }]),
            )])
        });
        let host_config = EngineHostConfig {
            port_bindings,
            network_mode: self.network.clone(),
            ..self.common_host_config()
        };
        let wants_endpoint = !self.network_aliases.is_empty() || self.ipv4_address.is_some();
        let networking_config = match (&self.network, wants_endpoint) {
            (Some(net), true) => Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net.clone(),
                    EndpointSettings {
                        aliases: (!self.network_aliases.is_empty())
                            .then(|| self.network_aliases.clone()),
                        ipam_config: self.ipv4_address.as_ref().map(|ip| EndpointIpamConfig {
                            ipv4_address: Some(ip.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )])),
            }),
            _ => None,
        };
        ContainerCreateBody {
            networking_config,
            exposed_ports: port_key.map(|key| vec![key]),
            host_config: Some(host_config),
            ..self.common_body()
        }
    }

    /// The body of a container in the host's network namespace.
    fn host_network_body(&self) -> ContainerCreateBody {
        ContainerCreateBody {
            host_config: Some(EngineHostConfig {
                network_mode: Some("host".to_owned()),
                ..self.common_host_config()
            }),
            ..self.common_body()
        }
    }

    fn common_body(&self) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            user: self.user.clone(),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(self.effective_labels().into_iter().collect()),
            ..Default::default()
        }
    }

    fn common_host_config(&self) -> EngineHostConfig {
        EngineHostConfig {
            memory: self.memory_mb.map(|mb| (mb * MIB) as i64),
            nano_cpus: self.cpus.map(|cpus| (cpus * 1e9).round() as i64),
            binds: (!self.volumes.is_empty()).then(|| {
                self.volumes
                    .iter()
                    .map(|(volume, path)| format!("{volume}:{path}"))
                    .collect()
            }),
            restart_policy: Some(EngineRestartPolicy {
                name: Some(match self.restart {
                    RestartPolicy::No => RestartPolicyNameEnum::NO,
                    RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
                    RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
                }),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// `labels` plus `io.berth.managed=true` (overriding any other value).
pub(crate) fn with_managed(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = labels.clone();
    labels.insert(labels::MANAGED.to_owned(), labels::MANAGED_VALUE.to_owned());
    labels
}

/// Whether a label map marks something as Berth's.
pub(crate) fn is_managed<'a, I>(labels: I) -> bool
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    labels
        .into_iter()
        .any(|(k, v)| k == labels::MANAGED && v == labels::MANAGED_VALUE)
}

/// Accepts only `name@sha256:…` references: Berth runs digests, never tags.
pub(crate) fn check_pinned(image: &str) -> Result<Reference, String> {
    let reference = Reference::parse(image).map_err(|e| e.to_string())?;
    if reference.digest().is_none() {
        return Err(format!(
            "image `{image}` is not pinned by digest; Berth runs `repository@sha256:…` only"
        ));
    }
    Ok(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "127.0.0.1:5000/berth/demo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "web-0".into(),
            image: IMAGE.into(),
            env: BTreeMap::from([("SECRET".into(), "hunter2".into())]),
            labels: BTreeMap::from([(labels::APP.into(), "shop".into())]),
            http_port: Some(8080),
            cpus: Some(0.5),
            memory_mb: Some(256),
            network: Some("berth-shop".into()),
            restart: RestartPolicy::UnlessStopped,
            ..Default::default()
        }
    }

    #[test]
    fn maps_to_engine_body() {
        let body = spec().to_create_body("127.0.0.1");
        assert_eq!(body.image.as_deref(), Some(IMAGE));
        assert_eq!(body.env, Some(vec!["SECRET=hunter2".to_string()]));
        let labels = body.labels.unwrap();
        assert_eq!(
            labels.get(labels::MANAGED).map(String::as_str),
            Some("true")
        );
        assert_eq!(labels.get(labels::APP).map(String::as_str), Some("shop"));
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_string()]));
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(256 * 1024 * 1024));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("berth-shop"));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let bindings = host.port_bindings.unwrap();
        let binding = &bindings["8080/tcp"].as_ref().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some(""));
    }

    #[test]
    fn aliases_attach_to_the_network() {
        let spec = ContainerSpec {
            name: "web".into(),
            image: IMAGE.into(),
            network: Some("berth".into()),
            network_aliases: vec!["web.shop".into()],
            ..Default::default()
        };
        let body = spec.to_create_body("127.0.0.1");
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["berth"].aliases.as_deref(),
            Some(&["web.shop".to_string()][..])
        );
    }

    #[test]
    fn a_fixed_address_goes_with_the_network() {
        let spec = ContainerSpec {
            name: "web".into(),
            image: IMAGE.into(),
            network: Some("berth".into()),
            ipv4_address: Some("172.20.128.5".into()),
            ..Default::default()
        };
        assert!(spec.validate().is_ok());
        let body = spec.to_create_body("127.0.0.1");
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        let ipam = endpoints["berth"].ipam_config.as_ref().unwrap();
        assert_eq!(ipam.ipv4_address.as_deref(), Some("172.20.128.5"));
        assert_eq!(endpoints["berth"].aliases, None);
        let mut bad = spec.clone();
        bad.ipv4_address = Some("not-an-ip".into());
        assert!(bad.validate().is_err());
    }

    #[test]
    fn host_network_publishes_nothing_and_mounts_volumes() {
        let spec = ContainerSpec {
            name: "berth-ingress".into(),
            image: IMAGE.into(),
            host_network: true,
            volumes: vec![("berth-ingress".into(), "/berth".into())],
            entrypoint: Some(vec!["haproxy".into()]),
            command: Some(vec!["-W".into()]),
            user: Some("0".into()),
            restart: RestartPolicy::UnlessStopped,
            ..Default::default()
        };
        assert!(spec.validate().is_ok());
        let body = spec.to_create_body("127.0.0.1");
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.binds, Some(vec!["berth-ingress:/berth".to_string()]));
        assert_eq!(body.entrypoint, Some(vec!["haproxy".to_string()]));
        assert_eq!(body.user.as_deref(), Some("0"));
        assert_eq!(body.networking_config, None);
        let mut bad = spec.clone();
        bad.http_port = Some(8080);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn no_port_no_limits_maps_to_nothing() {
        let spec = ContainerSpec {
            name: "job".into(),
            image: IMAGE.into(),
            command: Some(vec!["echo".into(), "hi".into()]),
            ..Default::default()
        };
        let body = spec.to_create_body("127.0.0.1");
        assert_eq!(body.exposed_ports, None);
        assert_eq!(body.cmd, Some(vec!["echo".to_string(), "hi".to_string()]));
        let host = body.host_config.unwrap();
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.memory, None);
        assert_eq!(host.nano_cpus, None);
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
    }

    #[test]
    fn managed_label_wins_over_a_wrong_value() {
        let mut spec = spec();
        spec.labels.insert(labels::MANAGED.into(), "false".into());
        assert_eq!(spec.effective_labels()[labels::MANAGED], "true");
    }

    #[test]
    fn debug_hides_env_values() {
        let text = format!("{:?}", spec());
        assert!(text.contains("SECRET"));
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn validate_requires_a_digest_and_sane_limits() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.image = "127.0.0.1:5000/berth/demo:v1".into();
        assert!(s.validate().unwrap_err().contains("not pinned"));
        let mut s = spec();
        s.cpus = Some(-1.0);
        assert!(s.validate().is_err());
        let mut s = spec();
        s.memory_mb = Some(0);
        assert!(s.validate().is_err());
        let mut s = spec();
        s.env.insert("A=B".into(), "x".into());
        assert!(s.validate().is_err());
        let mut s = spec();
        s.name.clear();
        assert!(s.validate().is_err());
    }
}
