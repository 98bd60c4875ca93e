//! [`Observed`]: a managed container as the host's list call reports it,
//! and the pure mapping from the Docker Engine's container summary.

use std::collections::BTreeMap;

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};

/// A container's lifecycle state as Docker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Restarting,
    Paused,
    Exited,
    Dead,
    Removing,
    /// A state this version of Berth does not know (Docker's word for it).
    Other(String),
}

impl ContainerState {
    /// Reads Docker's word for a state (`running`, `exited`, …).
    pub fn parse(word: &str) -> ContainerState {
        match word.trim().to_ascii_lowercase().as_str() {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "restarting" => ContainerState::Restarting,
            "paused" => ContainerState::Paused,
            "exited" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            "removing" => ContainerState::Removing,
            other => ContainerState::Other(other.to_owned()),
        }
    }

    /// True for [`ContainerState::Running`] only; restarting and paused
    /// count as not running.
    pub fn is_running(&self) -> bool {
        matches!(self, ContainerState::Running)
    }
}

/// One published port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Published {
    /// Port inside the container, e.g. `8080`.
    pub container_port: u16,
    /// Host address it is published on, e.g. `127.0.0.1`.
    pub host_ip: String,
    /// Host port Docker picked.
    pub host_port: u16,
}

/// A container carrying `io.berth.managed=true`, as observed on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Full container id.
    pub id: String,
    /// Name without Docker's leading `/`.
    pub name: String,
    /// All labels; Berth's drift judgement reads these.
    pub labels: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Docker's human status, e.g. `Up 3 seconds`, `Exited (3) 2 minutes ago`.
    pub status: String,
    /// The image as the container was created with (Berth: pinned).
    pub image: String,
    /// Published ports, sorted, one per (container port, host ip).
    pub published: Vec<Published>,
    /// IPv4 address on each network the container is attached to, by
    /// network name (empty while it is not running).
    pub networks: BTreeMap<String, String>,
}

impl Observed {
    /// The value of a label, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// The container's IPv4 address on `network`, if attached and running.
    pub fn ip_on(&self, network: &str) -> Option<&str> {
        self.networks.get(network).map(String::as_str)
    }

    /// The host port a container port is published on (the first one).
    pub fn host_port(&self, container_port: u16) -> Option<u16> {
        self.published
            .iter()
            .find(|p| p.container_port == container_port)
            .map(|p| p.host_port)
    }
}

/// Maps one entry of the list call; `None` when it has no id.
pub(crate) fn observed_from_summary(summary: ContainerSummary) -> Option<Observed> {
    let id = summary.id?;
    let name = summary
        .names
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default();
    let state = match summary.state {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited,
        Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
        Some(ContainerSummaryStateEnum::REMOVING) => ContainerState::Removing,
        Some(other) => ContainerState::Other(other.to_string()),
        None => ContainerState::Other(String::new()),
    };
    let mut published: Vec<Published> = summary
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(Published {
                container_port: p.private_port,
                host_ip: p.ip.unwrap_or_default(),
                host_port: p.public_port?,
            })
        })
        .collect();
    published.sort();
    published.dedup();
    let networks = summary
        .network_settings
        .and_then(|settings| settings.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, endpoint)| {
            let ip = endpoint.ip_address.filter(|ip| !ip.is_empty())?;
            Some((name, ip))
        })
        .collect();
    Some(Observed {
        id,
        name,
        labels: summary.labels.unwrap_or_default().into_iter().collect(),
        state,
        status: summary.status.unwrap_or_default(),
        image: summary.image.unwrap_or_default(),
        published,
        networks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortSummary;
    use std::collections::HashMap;

    #[test]
    fn parses_states() {
        assert_eq!(ContainerState::parse("running"), ContainerState::Running);
        assert_eq!(ContainerState::parse("Exited"), ContainerState::Exited);
        assert_eq!(
            ContainerState::parse("stopping"),
            ContainerState::Other("stopping".into())
        );
        assert!(ContainerState::Running.is_running());
        assert!(!ContainerState::Restarting.is_running());
    }

    #[test]
    fn maps_summary() {
        let summary = ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/web-0".into()]),
            image: Some("r/x@sha256:00".into()),
            labels: Some(HashMap::from([("io.berth.app".into(), "shop".into())])),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            status: Some("Up 3 seconds".into()),
            ports: Some(vec![
                PortSummary {
                    ip: Some("127.0.0.1".into()),
                    private_port: 8080,
                    public_port: Some(49153),
                    typ: None,
                },
                PortSummary {
                    ip: None,
                    private_port: 9000,
                    public_port: None,
                    typ: None,
                },
                PortSummary {
                    ip: Some("127.0.0.1".into()),
                    private_port: 8080,
                    public_port: Some(49153),
                    typ: None,
                },
            ]),
            ..Default::default()
        };
        let observed = observed_from_summary(summary).unwrap();
        assert_eq!(observed.name, "web-0");
        assert_eq!(observed.state, ContainerState::Running);
        assert_eq!(observed.status, "Up 3 seconds");
        assert_eq!(observed.label("io.berth.app"), Some("shop"));
        assert_eq!(
            observed.published,
            vec![Published {
                container_port: 8080,
                host_ip: "127.0.0.1".into(),
                host_port: 49153
            }]
        );
        assert_eq!(observed.host_port(8080), Some(49153));
        assert_eq!(observed.host_port(9000), None);
    }

    #[test]
    fn summary_without_id_is_skipped() {
        assert!(observed_from_summary(ContainerSummary::default()).is_none());
    }
}
