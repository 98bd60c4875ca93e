//! [`ContainerSpec`]: what Berth asks a host to run, and its pure mapping to
//! the Docker Engine's create-container body. No I/O here, so the mapping
//! (labels, published port, limits, restart policy) is tested without a
//! daemon.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig as EngineHostConfig, NetworkingConfig,
    PortBinding, RestartPolicy as EngineRestartPolicy, RestartPolicyNameEnum,
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
            memory: self.memory_mb.map(|mb| (mb * MIB) as i64),
            nano_cpus: self.cpus.map(|cpus| (cpus * 1e9).round() as i64),
            network_mode: self.network.clone(),
            restart_policy: Some(EngineRestartPolicy {
                name: Some(match self.restart {
                    RestartPolicy::No => RestartPolicyNameEnum::NO,
                    RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
                    RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
                }),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        let networking_config = match (&self.network, self.network_aliases.is_empty()) {
            (Some(net), false) => Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net.clone(),
                    EndpointSettings {
                        aliases: Some(self.network_aliases.clone()),
                        ..Default::default()
                    },
                )])),
            }),
            _ => None,
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            networking_config,
            cmd: self.command.clone(),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(self.effective_labels().into_iter().collect()),
            exposed_ports: port_key.map(|key| vec![key]),
            host_config: Some(host_config),
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
