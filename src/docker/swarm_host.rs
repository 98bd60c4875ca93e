//! The Swarm calls of a [`DockerHost`] that is a Swarm manager: the overlay
//! network, the probe config, services (list, create, update with its
//! version, roll back, remove), their tasks and logs, and one-off jobs as
//! replicated-job services. Pure mapping lives in `swarm`; this is the I/O.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use bollard::models::{ConfigSpec, NetworkCreateRequest, ServiceSpec, TaskState};
use bollard::query_parameters::{
    ListConfigsOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    LogsOptionsBuilder, UpdateServiceOptions,
};
use futures::StreamExt;

use super::host::last_lines;
use super::spec::with_managed;
use super::swarm::{update_version, ObservedService, ObservedTask};
use super::{DockerError, DockerHost, RegistryLogin, API_TIMEOUT, LOG_TIMEOUT};
use crate::labels;

/// Attempts at an update that lost the race to another writer of the
/// service ("update out of sequence": re-inspect and try again).
const UPDATE_ATTEMPTS: usize = 5;

fn managed_filter() -> HashMap<&'static str, Vec<String>> {
    HashMap::from([(
        "label",
        vec![format!("{}={}", labels::MANAGED, labels::MANAGED_VALUE)],
    )])
}

impl DockerHost {
    /// Checks that the daemon is an active Swarm manager, or says what to do.
    pub async fn check_swarm_manager(&self) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let info = self
            .bounded("reading", "the daemon's info", API_TIMEOUT, docker.info())
            .await?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm
            .local_node_state
            .map(|s| s.to_string())
            .unwrap_or_default();
        if state != "active" || swarm.control_available != Some(true) {
            let now = if state.is_empty() {
                "inactive".to_owned()
            } else {
                state
            };
            return Err(DockerError::InvalidConfig {
                host: self.name().to_owned(),
                detail: format!(
                    "the host is configured with mode = \"swarm\" but its daemon is not a Swarm manager (swarm state: {now}{}); point `address` at a manager node, run `docker swarm init` there, or set mode = \"containers\"",
                    if swarm.control_available == Some(false) && now == "active" { ", a worker" } else { "" }
                ),
            });
        }
        Ok(())
    }

    /// Node id → the address where a task's host-mode published ports are
    /// reached: the node's own address in the swarm, and for the manager
    /// Berth talks to, this host's publish address (where its daemon
    /// publishes ports; the ingress runs there too).
    pub async fn swarm_node_addresses(&self) -> Result<HashMap<String, String>, DockerError> {
        let docker = self.client().await?;
        let info = self
            .bounded("reading", "the daemon's info", API_TIMEOUT, docker.info())
            .await?;
        let local = info.swarm.and_then(|s| s.node_id).unwrap_or_default();
        let nodes = self
            .bounded(
                "listing",
                "the swarm's nodes",
                API_TIMEOUT,
                docker.list_nodes(None::<bollard::query_parameters::ListNodesOptions>),
            )
            .await?;
        let mut out = HashMap::new();
        for node in nodes {
            let Some(id) = node.id else { continue };
            let addr = if id == local {
                Some(self.publish_address().to_owned())
            } else {
                node.status.and_then(|s| s.addr).filter(|a| !a.is_empty())
            };
            if let Some(addr) = addr {
                out.insert(id, addr);
            }
        }
        Ok(out)
    }

    /// Creates the attachable overlay network `name` unless it exists.
    pub async fn ensure_overlay(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let what = format!("overlay network `{name}`");
        if let Some(existing) = self.find_network(name).await? {
            return self.check_network_managed(&what, &existing);
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("overlay".to_owned()),
            attachable: Some(true),
            labels: Some(with_managed(labels).into_iter().collect()),
            ..Default::default()
        };
        match self
            .bounded(
                "creating",
                &what,
                API_TIMEOUT,
                docker.create_network(request),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Another deploy created it meanwhile (terraform creates apps
            // ten at a time): Swarm refuses the second name with a 500
            // "name conflicts with an existing object", not a 409.
            Err(e) => match self.find_network(name).await? {
                Some(existing) => self.check_network_managed(&what, &existing),
                None => Err(e),
            },
        }
    }

    /// The Swarm config `name` holding `data`, created unless it exists
    /// (configs are immutable: a name is given to one content only).
    /// Returns its id.
    pub async fn ensure_config(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DockerError> {
        let docker = self.client().await?;
        let what = format!("Swarm config `{name}`");
        let find = || async {
            let filters = HashMap::from([("name", vec![name.to_owned()])]);
            let list = self
                .bounded(
                    "listing",
                    "Swarm configs",
                    API_TIMEOUT,
                    docker.list_configs(Some(
                        ListConfigsOptionsBuilder::new().filters(&filters).build(),
                    )),
                )
                .await?;
            Ok::<_, DockerError>(
                list.into_iter()
                    .find(|c| c.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
                    .and_then(|c| c.id),
            )
        };
        if let Some(id) = find().await? {
            return Ok(id);
        }
        let spec = ConfigSpec {
            name: Some(name.to_owned()),
            labels: Some(with_managed(labels).into_iter().collect()),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            templating: None,
        };
        match self
            .bounded("creating", &what, API_TIMEOUT, docker.create_config(spec))
            .await
        {
            Ok(created) => Ok(created.id),
            // Another deploy created it meanwhile: whatever the daemon
            // answered, the config that exists now is the one to use.
            Err(e) => match find().await? {
                Some(id) => Ok(id),
                None => Err(e),
            },
        }
    }

    /// Every service carrying Berth's label, with its tasks (one call for
    /// the services, one for the tasks).
    pub async fn list_managed_services(&self) -> Result<Vec<ObservedService>, DockerError> {
        self.list_services_where(None).await
    }

    /// The managed services of one app, with their tasks: asked of the
    /// daemon by the app's label, so a deploy's watch costs the same with
    /// one app on the swarm as with a hundred.
    pub async fn app_services(&self, app: &str) -> Result<Vec<ObservedService>, DockerError> {
        self.list_services_where(Some(("label", format!("{}={app}", labels::APP))))
            .await
    }

    /// One managed service by name, with its tasks; `None` when it is gone.
    pub async fn managed_service(
        &self,
        name: &str,
    ) -> Result<Option<ObservedService>, DockerError> {
        // The daemon's name filter matches prefixes: compare exactly.
        Ok(self
            .list_services_where(Some(("name", name.to_owned())))
            .await?
            .into_iter()
            .find(|s| s.name == name))
    }

    /// The managed services matching one more filter (none: all of them).
    async fn list_services_where(
        &self,
        filter: Option<(&'static str, String)>,
    ) -> Result<Vec<ObservedService>, DockerError> {
        // A service removed between the two calls (another app's destroy)
        // makes the task list answer 404: list both again.
        let mut attempt = 0;
        loop {
            match self.list_services_once(filter.clone()).await {
                Err(e) if e.is_not_found() && attempt < 4 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn list_services_once(
        &self,
        filter: Option<(&'static str, String)>,
    ) -> Result<Vec<ObservedService>, DockerError> {
        let docker = self.client().await?;
        let mut filters = managed_filter();
        if let Some((key, value)) = filter {
            filters.entry(key).or_default().push(value);
        }
        let services = self
            .bounded(
                "listing",
                "managed services",
                API_TIMEOUT,
                docker.list_services(Some(
                    ListServicesOptionsBuilder::new().filters(&filters).build(),
                )),
            )
            .await?;
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
        let filters = HashMap::from([("service", ids)]);
        let tasks = self
            .bounded(
                "listing",
                "the services' tasks",
                API_TIMEOUT,
                docker.list_tasks(Some(
                    ListTasksOptionsBuilder::new().filters(&filters).build(),
                )),
            )
            .await?;
        let mut by_service: HashMap<String, Vec<ObservedTask>> = HashMap::new();
        for t in tasks {
            if let Some(task) = ObservedTask::from_task(t) {
                by_service
                    .entry(task.service_id.clone())
                    .or_default()
                    .push(task);
            }
        }
        Ok(services
            .into_iter()
            .filter_map(|s| {
                let id = s.id.clone()?;
                let tasks = by_service.remove(&id).unwrap_or_default();
                ObservedService::from_service(s, tasks)
            })
            .collect())
    }

    /// Creates a service; returns its id. Registry credentials go with it.
    pub async fn create_service(
        &self,
        spec: ServiceSpec,
        auth: Option<RegistryLogin>,
    ) -> Result<String, DockerError> {
        let docker = self.client().await?;
        let what = format!("service `{}`", spec.name.clone().unwrap_or_default());
        let credentials = auth.map(|l| l.credentials(&image_registry(&spec)));
        let created = self
            .bounded(
                "creating",
                &what,
                API_TIMEOUT,
                docker.create_service(spec, credentials),
            )
            .await?;
        created.id.ok_or_else(|| DockerError::Api {
            host: self.name().to_owned(),
            operation: format!("creating {what}"),
            detail: "the daemon returned no service id".into(),
        })
    }

    /// Updates the service `name` to `spec` (the whole spec, as Swarm
    /// wants), at the version last read; when another writer got there
    /// first ("update out of sequence") re-reads the version and tries
    /// again, a bounded number of times. `rollback` asks Swarm to go back
    /// to the service's previous spec instead (`spec` is then the current
    /// one, as the API requires).
    pub async fn update_service(
        &self,
        name: &str,
        spec: ServiceSpec,
        auth: Option<RegistryLogin>,
        rollback: bool,
    ) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let what = format!("service `{name}`");
        let credentials = auth.map(|l| l.credentials(&image_registry(&spec)));
        let mut last = None;
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self
                .bounded(
                    "inspecting",
                    &what,
                    API_TIMEOUT,
                    docker.inspect_service(name, None),
                )
                .await?;
            let version = current.version.and_then(|v| v.index).unwrap_or(0);
            let version = update_version(version).map_err(|detail| DockerError::Api {
                host: self.name().to_owned(),
                operation: format!("updating {what}"),
                detail,
            })?;
            let body = if rollback {
                current.spec.unwrap_or_default()
            } else {
                spec.clone()
            };
            let options = UpdateServiceOptions {
                version,
                rollback: rollback.then(|| "previous".to_owned()),
                ..Default::default()
            };
            match self
                .bounded(
                    "updating",
                    &what,
                    API_TIMEOUT,
                    docker.update_service(name, body, options, credentials.clone()),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(DockerError::Api { detail, .. })
                    if super::swarm::is_update_out_of_sequence(500, &detail) =>
                {
                    tracing::debug!(host = %self.name(), service = name, "update out of sequence; reading the version again");
                    last = Some(detail);
                }
                Err(e) => return Err(e),
            }
        }
        Err(DockerError::Conflict {
            host: self.name().to_owned(),
            what,
            detail: format!(
                "another client kept changing the service ({}) while Berth updated it; try again",
                last.unwrap_or_default()
            ),
        })
    }

    /// Removes a service Berth manages; a gone one is fine.
    pub async fn remove_service(&self, name: &str) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let what = format!("service `{name}`");
        match self
            .bounded("removing", &what, API_TIMEOUT, docker.delete_service(name))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The last `lines` lines a service's tasks printed. Best effort.
    pub async fn service_log_tail(&self, name: &str, lines: usize) -> Vec<String> {
        let Ok(docker) = self.client().await else {
            return Vec::new();
        };
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut bytes = Vec::new();
        let read = async {
            let mut stream = Box::pin(docker.service_logs(name, Some(options)));
            while let Some(Ok(output)) = stream.next().await {
                bytes.extend_from_slice(&output.into_bytes());
            }
        };
        if tokio::time::timeout(LOG_TIMEOUT, read).await.is_err() {
            tracing::debug!(host = %self.name(), service = name, "service log tail timed out");
        }
        last_lines(&bytes, lines)
    }
}

/// The registry of a service's image, for its credentials.
fn image_registry(spec: &ServiceSpec) -> String {
    crate::reference::Reference::parse(&super::swarm::spec_image(spec))
        .map(|r| r.registry().to_owned())
        .unwrap_or_default()
}

/// A task state in Docker's words (`running`, `failed`, …).
pub(super) fn state_word(state: Option<TaskState>) -> String {
    state.map(|s| s.to_string()).unwrap_or_default()
}
