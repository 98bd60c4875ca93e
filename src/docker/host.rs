//! [`DockerHost`]: one Docker host's connection and every call Berth makes
//! to it. The bollard client is created on the first call (and the API
//! version negotiated then), shared by all clones, and every call is bounded
//! by a timeout of ours so a stuck daemon never stalls a deploy.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::StreamExt;
use tokio::sync::{Mutex, OnceCell};

use super::address::{HostAddress, SSH_PORT};
use super::error::{classify, DockerError, Failure};
use super::network::{NetworkInfo, Subnet};
use super::observed::{observed_from_summary, Observed};
use super::spec::{check_pinned, is_managed, with_managed, ContainerSpec, RestartPolicy};
use super::tls::{check_tls_material, client_config};
use super::{ExecOutput, HostConfig, JobOutcome, RegistryLogin, TlsFiles, DEFAULT_PUBLISH_ADDRESS};
use crate::labels;

/// Bound on opening the connection and negotiating the API version.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one ordinary API call (list, inspect, create, start, remove).
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one whole image pull.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Bound on reading a log tail.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of output a [`JobOutcome`] keeps.
pub const JOB_LOG_TAIL_LINES: usize = 100;
/// Time a stop may take beyond its grace period (the SIGKILL and cleanup).
const STOP_MARGIN: Duration = Duration::from_secs(30);
/// How long to wait for a killed job's exit status.
const KILL_WAIT: Duration = Duration::from_secs(15);
/// bollard's own per-request ceiling; ours above are tighter and name the
/// operation, this only guards against a call we forgot to bound.
const CLIENT_TIMEOUT_SECS: u64 = 60 * 60;
/// Platform Berth runs (design: pin for the host's platform, linux/amd64).
const PLATFORM: &str = "linux/amd64";
/// Most output an exec keeps (the ingress's probes and reads are small).
const EXEC_OUTPUT_LIMIT: usize = 4 * 1024 * 1024;
/// Most bytes a download of a container path may bring back.
const DOWNLOAD_LIMIT: usize = 16 * 1024 * 1024;

/// One Docker host: a shared, lazily opened connection. Cheap to clone.
#[derive(Clone)]
pub struct DockerHost {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    address: HostAddress,
    transport: Transport,
    publish_address: String,
    mode: super::HostMode,
    client: OnceCell<Connection>,
    /// Serializes `ensure_network` within this process: old daemons do not
    /// refuse a second network of the same name.
    network_lock: Mutex<()>,
    /// One pull per image at a time within this process: concurrent
    /// deploys of apps sharing an image wait for the first one's pull
    /// and find the image there, instead of each pulling it.
    pulls: std::sync::Mutex<std::collections::HashMap<String, Arc<Mutex<()>>>>,
}

/// How the connection is opened, decided (and checked) by
/// [`DockerHost::connect`] without I/O.
enum Transport {
    Unix {
        path: String,
    },
    /// Plain HTTP over TCP.
    Http,
    /// HTTPS with a client certificate, trusting `files.ca`.
    Tls {
        files: TlsFiles,
    },
    /// `docker system dial-stdio` over the `ssh` command; `destination` is
    /// what bollard hands to `ssh` (see [`ssh_destination`]).
    Ssh {
        destination: String,
    },
}

/// The bollard client and what must live as long as it.
struct Connection {
    docker: Docker,
}

/// The address bollard's SSH transport is given for `ssh://[user@]host[:port]`.
///
/// bollard passes everything after `ssh://` to the `ssh` command as its
/// destination, where `host:2222` would be read as a host name and
/// `[::1]` is not understood; so only port 22 and host names or IPv4
/// addresses can be expressed. Anything else is refused with the way around
/// it (a `Host` alias in `~/.ssh/config`, which `ssh` reads).
pub(crate) fn ssh_destination(user: Option<&str>, host: &str, port: u16) -> Result<String, String> {
    let alias_hint = |what: &str| {
        format!(
            "{what} cannot be passed to ssh by this build of Berth; add an alias to \
             ~/.ssh/config of the user running Berth (`Host docker-host` / `HostName {host}` / \
             `Port {port}`) and use ssh://{}docker-host",
            user.map(|u| format!("{u}@")).unwrap_or_default()
        )
    };
    if host.contains(':') {
        return Err(alias_hint("an IPv6 address"));
    }
    if port != SSH_PORT {
        return Err(alias_hint(&format!("port {port}")));
    }
    Ok(match user {
        Some(user) => format!("ssh://{user}@{host}"),
        None => format!("ssh://{host}"),
    })
}

impl fmt::Debug for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerHost")
            .field("name", &self.inner.name)
            .field("address", &self.inner.address.to_string())
            .field("publish_address", &self.inner.publish_address)
            .finish()
    }
}

impl DockerHost {
    /// Reads and checks `cfg`; no I/O (the connection opens on first use).
    pub fn connect(cfg: &HostConfig) -> Result<DockerHost, DockerError> {
        let invalid = |detail: String| DockerError::InvalidConfig {
            host: cfg.name.clone(),
            detail,
        };
        if cfg.name.trim().is_empty() {
            return Err(invalid(format!(
                "the host at `{}` has an empty name; give every host a name",
                cfg.address
            )));
        }
        let address = HostAddress::parse(&cfg.address, cfg.tls.is_some())
            .map_err(|e| invalid(format!("address: {e}")))?;
        let unsupported = |detail: String| DockerError::Unsupported {
            host: cfg.name.clone(),
            address: address.to_string(),
            detail,
        };
        let transport = match (&address, &cfg.tls) {
            (HostAddress::Unix { .. }, Some(_)) | (HostAddress::Ssh { .. }, Some(_)) => {
                return Err(invalid(
                    "TLS files apply to tcp:// addresses only; remove them or use tcp://".into(),
                ))
            }
            (HostAddress::Unix { path }, None) => Transport::Unix { path: path.clone() },
            (HostAddress::Tcp { .. }, None) => Transport::Http,
            (HostAddress::Tcp { .. }, Some(tls)) => {
                check_tls_material(tls).map_err(|e| invalid(format!("TLS: {e}")))?;
                Transport::Tls { files: tls.clone() }
            }
            (HostAddress::Ssh { user, host, .. }, None)
                if host.starts_with('-') || user.as_deref().is_some_and(|u| u.starts_with('-')) =>
            {
                return Err(invalid(
                    "a user or host starting with `-` would be read by ssh as an option".into(),
                ))
            }
            (HostAddress::Ssh { user, host, port }, None) => Transport::Ssh {
                destination: ssh_destination(user.as_deref(), host, *port).map_err(unsupported)?,
            },
        };
        let publish_address = match cfg.publish_address.trim() {
            "" => DEFAULT_PUBLISH_ADDRESS.to_owned(),
            other => other.to_owned(),
        };
        if publish_address.parse::<IpAddr>().is_err() {
            return Err(invalid(format!(
                "publish address `{publish_address}` is not an IP address (e.g. 127.0.0.1)"
            )));
        }
        Ok(DockerHost {
            inner: Arc::new(Inner {
                name: cfg.name.clone(),
                address,
                transport,
                publish_address,
                mode: cfg.mode,
                client: OnceCell::new(),
                network_lock: Mutex::new(()),
                pulls: Default::default(),
            }),
        })
    }

    /// Berth's name for the host.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How apps run on this host.
    pub fn mode(&self) -> super::HostMode {
        self.inner.mode
    }

    /// The address published ports listen on.
    pub fn publish_address(&self) -> &str {
        &self.inner.publish_address
    }

    /// The host's address, as read.
    pub fn address(&self) -> &HostAddress {
        &self.inner.address
    }

    /// Every container on the host carrying `io.berth.managed=true`, running
    /// or not, from ONE list call.
    pub async fn list_managed(&self) -> Result<Vec<Observed>, DockerError> {
        let docker = self.client().await?;
        let filters = HashMap::from([("label", vec![managed_filter()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .bounded(
                "listing",
                "managed containers",
                API_TIMEOUT,
                docker.list_containers(Some(options)),
            )
            .await?;
        Ok(list
            .into_iter()
            .filter_map(observed_from_summary)
            .filter(|o| is_managed(&o.labels))
            .collect())
    }

    /// Whether the host has the image `pinned` (`repo@sha256:…`).
    pub async fn has_image(&self, pinned: &str) -> Result<bool, DockerError> {
        check_pinned(pinned).map_err(|detail| self.invalid_spec(detail))?;
        let docker = self.client().await?;
        let what = format!("image {pinned}");
        match self
            .bounded(
                "inspecting",
                &what,
                API_TIMEOUT,
                docker.inspect_image(pinned),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Pulls `pinned` (`repo@sha256:…`; tags are refused) unless the host has
    /// it. `auth` is sent to the daemon only, never logged.
    pub async fn pull(&self, pinned: &str, auth: Option<RegistryLogin>) -> Result<(), DockerError> {
        let reference = check_pinned(pinned).map_err(|detail| self.invalid_spec(detail))?;
        let one_pull = {
            let mut pulls = self.inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
            pulls.entry(pinned.to_owned()).or_default().clone()
        };
        let _pulling = one_pull.lock().await;
        if self.has_image(pinned).await? {
            tracing::debug!(host = %self.name(), image = pinned, "image already present");
            return Ok(());
        }
        let docker = self.client().await?;
        let credentials = auth.map(|login| login.credentials(reference.registry()));
        tracing::info!(
            host = %self.name(),
            image = pinned,
            authenticated = credentials.is_some(),
            "pulling image"
        );
        let options = CreateImageOptionsBuilder::new()
            .from_image(pinned)
            .platform(PLATFORM)
            .build();
        let pull_failed = |detail: String| DockerError::PullFailed {
            host: self.name().to_owned(),
            image: pinned.to_owned(),
            detail,
        };
        let drive = async {
            let mut stream = Box::pin(docker.create_image(Some(options), None, credentials));
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let Some(detail) = info.error_detail {
                            return Err(pull_failed(
                                detail
                                    .message
                                    .unwrap_or_else(|| "the daemon reported an error".into()),
                            ));
                        }
                    }
                    Err(e) => {
                        return Err(match classify(&e) {
                            Failure::Transport(detail) => self.unreachable(detail),
                            Failure::Timeout => self.timeout("pulling", pinned, PULL_TIMEOUT),
                            Failure::Status(_, detail) | Failure::Other(detail) => {
                                pull_failed(detail)
                            }
                        })
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout(PULL_TIMEOUT, drive).await {
            Ok(result) => result?,
            Err(_) => return Err(self.timeout("pulling", pinned, PULL_TIMEOUT)),
        }
        if !self.has_image(pinned).await? {
            return Err(pull_failed(
                "the daemon reported the pull finished but does not have the image".into(),
            ));
        }
        tracing::info!(host = %self.name(), image = pinned, "pulled image");
        Ok(())
    }

    /// Creates and starts a container; returns its id. Adds
    /// `io.berth.managed=true` to its labels. If the start fails, the
    /// created container is removed again.
    pub async fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let id = self.create(spec).await?;
        self.start(&id, &spec.name).await?;
        Ok(id)
    }

    /// Creates a container without starting it (so files can be copied in
    /// first); returns its id. Adds `io.berth.managed=true` to its labels.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        spec.validate()
            .map_err(|detail| self.invalid_spec(format!("container `{}`: {detail}", spec.name)))?;
        let docker = self.client().await?;
        let body = spec.to_create_body(self.publish_address());
        tracing::info!(
            host = %self.name(),
            container = %spec.name,
            image = %spec.image,
            env_keys = ?spec.env_keys(),
            http_port = ?spec.http_port,
            ipv4_address = ?spec.ipv4_address,
            "creating container"
        );
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let what = format!("container `{}`", spec.name);
        let created = match self
            .bounded(
                "creating",
                &what,
                API_TIMEOUT,
                docker.create_container(Some(options), body),
            )
            .await
        {
            Ok(created) => created,
            Err(DockerError::NotFound { host, detail, .. }) => {
                return Err(DockerError::NotFound {
                    host,
                    what: format!(
                        "image or network needed by container `{}` (pull the image and ensure the network first)",
                        spec.name
                    ),
                    detail,
                })
            }
            Err(DockerError::Conflict { host, what, detail }) => {
                return Err(DockerError::Conflict {
                    host,
                    what,
                    detail: format!("{detail} — the name is taken; remove that container or pick another name"),
                })
            }
            Err(e) => return Err(e),
        };
        for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
            tracing::warn!(host = %self.name(), container = %spec.name, warning = %warning, "docker warning");
        }
        Ok(created.id)
    }

    /// Starts a container Berth created; if the start fails, the container
    /// is removed again.
    pub async fn start(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let what = format!("container `{name}`");
        if let Err(e) = self
            .bounded(
                "starting",
                &what,
                API_TIMEOUT,
                docker.start_container(id, None::<StartContainerOptions>),
            )
            .await
        {
            if let Err(cleanup) = self.force_remove(id).await {
                tracing::warn!(host = %self.name(), container = %name, error = %cleanup, "could not remove the container that failed to start");
            }
            return Err(e);
        }
        tracing::info!(host = %self.name(), container = %name, id = %id, "started container");
        Ok(())
    }

    /// Starts a stopped managed container again (the ingress after a stop
    /// by hand). One without Berth's label is refused.
    pub async fn restart_stopped(&self, id: &str) -> Result<(), DockerError> {
        let Some((full_id, what)) = self.inspect_managed("start", id).await? else {
            return Err(DockerError::NotFound {
                host: self.name().to_owned(),
                what: format!("container `{id}`"),
                detail: "it was removed".into(),
            });
        };
        let docker = self.client().await?;
        tracing::info!(host = %self.name(), container = %what, "starting container again");
        self.bounded(
            "starting",
            &what,
            API_TIMEOUT,
            docker.start_container(&full_id, None::<StartContainerOptions>),
        )
        .await
    }

    /// Stops a managed container: SIGTERM, `grace`, then SIGKILL. A container
    /// that is gone or already stopped is fine; one without Berth's label is
    /// refused with [`DockerError::NotManaged`].
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        let Some((full_id, what)) = self.inspect_managed("stop", id).await? else {
            return Ok(());
        };
        let docker = self.client().await?;
        let grace_secs = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(grace_secs).build();
        tracing::info!(host = %self.name(), container = %what, grace_secs, "stopping container");
        match self
            .bounded(
                "stopping",
                &what,
                grace.saturating_add(STOP_MARGIN),
                docker.stop_container(&full_id, Some(options)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes a managed container, running or not (force). A container
    /// that is gone is fine; one without Berth's label is refused with
    /// [`DockerError::NotManaged`].
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let Some((full_id, what)) = self.inspect_managed("remove", id).await? else {
            return Ok(());
        };
        tracing::info!(host = %self.name(), container = %what, "removing container");
        self.force_remove(&full_id).await
    }

    /// Runs a one-off container to completion: create, start, wait at most
    /// `timeout` (then kill it), read the log tail, remove it. The restart
    /// policy is forced to [`RestartPolicy::No`]. The container is removed
    /// even if this future is dropped half-way.
    pub async fn run_job(
        &self,
        spec: &ContainerSpec,
        timeout: Duration,
    ) -> Result<JobOutcome, DockerError> {
        self.run_job_with(spec, timeout, false, |_| {})
            .await
            .map(|(_, outcome)| outcome)
    }

    /// [`DockerHost::run_job`], but a run that fails (or times out) leaves
    /// its stopped container for inspection; `started` gets the
    /// container's id as soon as it runs. Returns the id too.
    pub async fn run_job_keeping_failure(
        &self,
        spec: &ContainerSpec,
        timeout: Duration,
        started: impl FnOnce(&str),
    ) -> Result<(String, JobOutcome), DockerError> {
        self.run_job_with(spec, timeout, true, started).await
    }

    async fn run_job_with(
        &self,
        spec: &ContainerSpec,
        timeout: Duration,
        keep_failure: bool,
        started: impl FnOnce(&str),
    ) -> Result<(String, JobOutcome), DockerError> {
        let mut job = spec.clone();
        job.restart = RestartPolicy::No;
        let id = self.create_and_start(&job).await?;
        let mut guard = RemoveOnDrop {
            host: Some(self.clone()),
            id: id.clone(),
        };
        started(&id);
        let waited = self.wait_job(&id, &job.name, timeout).await;
        let log_tail = self.log_tail(&id, JOB_LOG_TAIL_LINES).await;
        let failed = !matches!(waited, Ok((0, false)));
        if !(keep_failure && failed) {
            if let Err(e) = self.force_remove(&id).await {
                tracing::warn!(host = %self.name(), container = %job.name, error = %e, "could not remove the job container");
            }
        }
        guard.host = None;
        let (exit_code, timed_out) = waited?;
        tracing::info!(host = %self.name(), container = %job.name, exit_code, timed_out, "job finished");
        Ok((
            id,
            JobOutcome {
                exit_code,
                log_tail,
                timed_out,
            },
        ))
    }

    /// The last `lines` lines of a container's output (stdout and stderr).
    /// Best effort: empty when the container or host is not there.
    pub async fn log_tail(&self, id: &str, lines: usize) -> Vec<String> {
        if lines == 0 {
            return Vec::new();
        }
        let docker = match self.client().await {
            Ok(docker) => docker,
            Err(e) => {
                tracing::debug!(host = %self.name(), error = %e, "no log tail");
                return Vec::new();
            }
        };
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .tail(&lines.to_string())
            .build();
        let mut bytes = Vec::new();
        let read = async {
            let mut stream = Box::pin(docker.logs(id, Some(options)));
            while let Some(item) = stream.next().await {
                match item {
                    Ok(output) => bytes.extend_from_slice(&output.into_bytes()),
                    Err(e) => {
                        tracing::debug!(host = %self.name(), container = id, error = %e, "log tail cut short");
                        break;
                    }
                }
            }
        };
        if tokio::time::timeout(LOG_TIMEOUT, read).await.is_err() {
            tracing::debug!(host = %self.name(), container = id, "log tail timed out");
        }
        last_lines(&bytes, lines)
    }

    /// A container's output (stdout and stderr) since `since` (unix
    /// seconds), at most a few thousand lines. Best effort, like
    /// [`DockerHost::log_tail`].
    pub async fn log_since(&self, id: &str, since: i64) -> Vec<String> {
        let docker = match self.client().await {
            Ok(docker) => docker,
            Err(_) => return Vec::new(),
        };
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .since(i32::try_from(since).unwrap_or(i32::MAX))
            .tail("5000")
            .build();
        let mut bytes = Vec::new();
        let read = async {
            let mut stream = Box::pin(docker.logs(id, Some(options)));
            while let Some(Ok(output)) = stream.next().await {
                bytes.extend_from_slice(&output.into_bytes());
            }
        };
        let _ = tokio::time::timeout(LOG_TIMEOUT, read).await;
        last_lines(&bytes, 5000)
    }

    /// Creates the bridge network `name` with `labels` (plus
    /// `io.berth.managed=true`) unless it exists, and returns what Berth
    /// needs to know about it. A new network gets a subnet of its own
    /// (the one the daemon would pick, then fixed), dynamic addresses from
    /// its lower half and fixed addresses for Berth's instances from the
    /// upper half (see [`NetworkInfo`]). An existing network without
    /// Berth's label is refused with [`DockerError::NotManaged`].
    pub async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<NetworkInfo, DockerError> {
        let _serialized = self.inner.network_lock.lock().await;
        let what = format!("network `{name}`");
        if let Some(existing) = self.find_network(name).await? {
            self.check_network_managed(&what, &existing)?;
            return self.network_info(name).await;
        }
        let subnet = self.free_subnet().await?;
        let docker = self.client().await?;
        let mut labels = with_managed(labels);
        if let Some(subnet) = &subnet {
            labels.insert(labels::SUBNET.to_owned(), subnet.to_string());
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(labels.into_iter().collect()),
            ipam: subnet.as_ref().map(|subnet| Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.to_string()),
                    ip_range: Some(subnet.lower_half().to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        tracing::info!(host = %self.name(), network = name, subnet = ?subnet.map(|s| s.to_string()), "creating network");
        match self
            .bounded(
                "creating",
                &what,
                API_TIMEOUT,
                docker.create_network(request),
            )
            .await
        {
            Ok(_) => {}
            Err(DockerError::Conflict { .. }) => match self.find_network(name).await? {
                Some(existing) => self.check_network_managed(&what, &existing)?,
                None => {
                    return Err(DockerError::Conflict {
                        host: self.name().to_owned(),
                        what,
                        detail: "the daemon reported a conflict but has no such network; try again"
                            .into(),
                    })
                }
            },
            Err(e) => return Err(e),
        }
        self.network_info(name).await
    }

    /// The subnet the daemon would give a new network, found by creating a
    /// short-lived network and removing it again; `None` when the daemon
    /// reports none (Berth then lets it pick addresses).
    async fn free_subnet(&self) -> Result<Option<Subnet>, DockerError> {
        let docker = self.client().await?;
        let name = format!("berth-subnet-probe-{}", std::process::id());
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(with_managed(&BTreeMap::new()).into_iter().collect()),
            ..Default::default()
        };
        let what = format!("network `{name}`");
        let created = self
            .bounded(
                "creating",
                &what,
                API_TIMEOUT,
                docker.create_network(request),
            )
            .await?;
        let id = created.id;
        let inspected = self
            .bounded(
                "inspecting",
                &what,
                API_TIMEOUT,
                docker.inspect_network(&id, None),
            )
            .await;
        if let Err(e) = self
            .bounded("removing", &what, API_TIMEOUT, docker.remove_network(&id))
            .await
        {
            tracing::warn!(host = %self.name(), network = %name, error = %e, "could not remove the subnet probe network");
        }
        Ok(inspected?
            .ipam
            .and_then(|ipam| ipam.config)
            .into_iter()
            .flatten()
            .filter_map(|c| c.subnet)
            .find_map(|s| s.parse::<Subnet>().ok()))
    }

    /// The network's fixed-address range (when Berth created it with one)
    /// and the addresses its containers hold now.
    pub async fn network_info(&self, name: &str) -> Result<NetworkInfo, DockerError> {
        let docker = self.client().await?;
        let what = format!("network `{name}`");
        let inspected = self
            .bounded(
                "inspecting",
                &what,
                API_TIMEOUT,
                docker.inspect_network(name, None),
            )
            .await?;
        let labels = inspected.labels.unwrap_or_default();
        let subnet = labels
            .get(labels::SUBNET)
            .and_then(|s| s.parse::<Subnet>().ok());
        let used = inspected
            .containers
            .unwrap_or_default()
            .into_values()
            .filter_map(|endpoint| endpoint.ipv4_address)
            .filter_map(|a| a.split('/').next().and_then(|ip| ip.parse().ok()))
            .collect();
        Ok(NetworkInfo {
            name: name.to_owned(),
            subnet,
            used,
        })
    }

    /// Creates the named volume `name` with `labels` (plus
    /// `io.berth.managed=true`) unless it exists. An existing volume is
    /// used as it is (Docker keeps a volume's data across containers).
    pub async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let what = format!("volume `{name}`");
        match self
            .bounded(
                "inspecting",
                &what,
                API_TIMEOUT,
                docker.inspect_volume(name),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(with_managed(labels).into_iter().collect()),
            ..Default::default()
        };
        tracing::info!(host = %self.name(), volume = name, "creating volume");
        self.bounded(
            "creating",
            &what,
            API_TIMEOUT,
            docker.create_volume(request),
        )
        .await
        .map(|_| ())
    }

    /// Removes the named volume if it is Berth's; a missing one is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let what = format!("volume `{name}`");
        let volume = match self
            .bounded(
                "inspecting",
                &what,
                API_TIMEOUT,
                docker.inspect_volume(name),
            )
            .await
        {
            Ok(volume) => volume,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if !is_managed(&volume.labels) {
            return Err(DockerError::NotManaged {
                host: self.name().to_owned(),
                action: "remove".to_owned(),
                what,
            });
        }
        tracing::info!(host = %self.name(), volume = name, "removing volume");
        let options = RemoveVolumeOptionsBuilder::new().build();
        match self
            .bounded(
                "removing",
                &what,
                API_TIMEOUT,
                docker.remove_volume(name, Some(options)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs `argv` inside the running container `id` and returns its exit
    /// status and output, within `limit` (output beyond a few MiB is cut).
    /// The command is logged; its output is not (the caller decides).
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        limit: Duration,
    ) -> Result<ExecOutput, DockerError> {
        let docker = self.client().await?;
        let what = format!("a command in container `{id}`");
        tracing::debug!(host = %self.name(), container = id, command = ?argv.first(), "exec");
        let run = async {
            let created = docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        cmd: Some(argv.to_vec()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            if let StartExecResults::Attached { mut output, .. } = docker
                .start_exec(&created.id, None::<StartExecOptions>)
                .await?
            {
                while let Some(item) = output.next().await {
                    match item? {
                        bollard::container::LogOutput::StdErr { message } => {
                            if stderr.len() < EXEC_OUTPUT_LIMIT {
                                stderr.extend_from_slice(&message);
                            }
                        }
                        other => {
                            if stdout.len() < EXEC_OUTPUT_LIMIT {
                                stdout.extend_from_slice(&other.into_bytes());
                            }
                        }
                    }
                }
            }
            let inspected = docker.inspect_exec(&created.id).await?;
            Ok::<_, bollard::errors::Error>(ExecOutput {
                exit_code: inspected.exit_code.unwrap_or(-1),
                stdout,
                stderr,
            })
        };
        self.bounded("running", &what, limit, run).await
    }

    /// Extracts the tar archive `tar` into `dir` of container `id` (running
    /// or only created: Docker mounts its volumes for the copy).
    pub async fn upload(&self, id: &str, dir: &str, tar: Vec<u8>) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let what = format!("files into {dir} of container `{id}`");
        let options = UploadToContainerOptionsBuilder::new().path(dir).build();
        self.bounded(
            "copying",
            &what,
            API_TIMEOUT,
            docker.upload_to_container(id, Some(options), bollard::body_full(tar.into())),
        )
        .await
    }

    /// The tar archive of `path` in container `id`; `None` when the path
    /// (or the container) does not exist.
    pub async fn download(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>, DockerError> {
        let docker = self.client().await?;
        let what = format!("{path} of container `{id}`");
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let read = async {
            let mut bytes = Vec::new();
            let mut stream = Box::pin(docker.download_from_container(id, Some(options)));
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk?);
                if bytes.len() > DOWNLOAD_LIMIT {
                    break;
                }
            }
            Ok::<_, bollard::errors::Error>(bytes)
        };
        match self.bounded("reading", &what, API_TIMEOUT, read).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of the containers (Berth's or not) that publish host port
    /// `port`, to say what holds a port Berth needs.
    pub async fn port_holders(&self, port: u16) -> Result<Vec<String>, DockerError> {
        let docker = self.client().await?;
        let filters = HashMap::from([("publish", vec![port.to_string()])]);
        let options = ListContainersOptionsBuilder::new()
            .filters(&filters)
            .build();
        let list = self
            .bounded(
                "listing",
                &format!("containers publishing port {port}"),
                API_TIMEOUT,
                docker.list_containers(Some(options)),
            )
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect())
    }

    /// Removes every network carrying `io.berth.app=<app>` and
    /// `io.berth.managed=true`. Tries all; returns the first failure.
    pub async fn remove_networks(&self, app: &str) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let filters = HashMap::from([(
            "label",
            vec![format!("{}={app}", labels::APP), managed_filter()],
        )]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .bounded(
                "listing",
                &format!("networks of app `{app}`"),
                API_TIMEOUT,
                docker.list_networks(Some(options)),
            )
            .await?;
        let mut first_error = None;
        for network in networks {
            let labels = network.labels.unwrap_or_default();
            if !is_managed(&labels) || labels.get(labels::APP).map(String::as_str) != Some(app) {
                continue;
            }
            let name = network.name.unwrap_or_default();
            let Some(id) = network.id else { continue };
            let what = format!("network `{name}`");
            tracing::info!(host = %self.name(), network = %name, "removing network");
            match self
                .bounded("removing", &what, API_TIMEOUT, docker.remove_network(&id))
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(DockerError::Conflict { host, what, detail }) => {
                    first_error.get_or_insert(DockerError::Conflict {
                        host,
                        what,
                        detail: format!(
                            "{detail} — stop and remove the containers attached to it first"
                        ),
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    // ------------------------------------------------------------ internals

    /// The connection, opened (and the API version negotiated) on first use.
    /// A failure is not cached: the next call tries again.
    pub(super) async fn client(&self) -> Result<&Docker, DockerError> {
        let connection = self
            .inner
            .client
            .get_or_try_init(|| async {
                let docker = match &self.inner.transport {
                    Transport::Unix { path } => pooled_unix(path),
                    Transport::Http => pooled_http(&self.inner.address.to_string()),
                    Transport::Tls { files } => {
                        let config = client_config(files).map_err(|detail| {
                            DockerError::InvalidConfig {
                                host: self.name().to_owned(),
                                detail,
                            }
                        })?;
                        pooled_tls(&self.inner.address.to_string(), config)
                    }
                    Transport::Ssh { destination } => Docker::connect_with_ssh(
                        destination,
                        CLIENT_TIMEOUT_SECS,
                        API_DEFAULT_VERSION,
                        None,
                    ),
                }
                .map_err(|e| self.connect_error(e))?
                .with_request_modifier(url_safe_registry_auth);
                match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
                    Ok(Ok(docker)) => {
                        tracing::debug!(host = %self.name(), api = %docker.client_version(), "connected");
                        Ok(Connection { docker })
                    }
                    Ok(Err(e)) => Err(self.connect_error(e)),
                    Err(_) => Err(self.unreachable(format!(
                        "no answer within {}s",
                        CONNECT_TIMEOUT.as_secs()
                    ))),
                }
            })
            .await?;
        Ok(&connection.docker)
    }

    fn connect_error(&self, err: bollard::errors::Error) -> DockerError {
        match classify(&err) {
            Failure::Transport(detail) | Failure::Other(detail) => self.unreachable(detail),
            Failure::Status(status, detail) => {
                self.unreachable(format!("the API answered {status}: {detail}"))
            }
            Failure::Timeout => self.unreachable("the connection timed out".into()),
        }
    }

    /// Runs one bollard call within `limit`, turning failures into words.
    pub(super) async fn bounded<T, F>(
        &self,
        operation: &str,
        what: &str,
        limit: Duration,
        call: F,
    ) -> Result<T, DockerError>
    where
        F: Future<Output = Result<T, bollard::errors::Error>>,
    {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.api_error(operation, what, limit, e)),
            Err(_) => Err(self.timeout(operation, what, limit)),
        }
    }

    fn api_error(
        &self,
        operation: &str,
        what: &str,
        limit: Duration,
        err: bollard::errors::Error,
    ) -> DockerError {
        let host = self.name().to_owned();
        match classify(&err) {
            Failure::Transport(detail) => self.unreachable(detail),
            Failure::Timeout => self.timeout(operation, what, limit),
            Failure::Status(404, detail) => DockerError::NotFound {
                host,
                what: what.to_owned(),
                detail,
            },
            // 403: e.g. a network that still has endpoints.
            Failure::Status(403 | 409, detail) => DockerError::Conflict {
                host,
                what: what.to_owned(),
                detail,
            },
            Failure::Status(_, detail) | Failure::Other(detail) => DockerError::Api {
                host,
                operation: format!("{operation} {what}"),
                detail,
            },
        }
    }

    fn unreachable(&self, detail: String) -> DockerError {
        DockerError::Unreachable {
            host: self.name().to_owned(),
            address: self.inner.address.to_string(),
            detail,
        }
    }

    pub(super) fn timeout(&self, operation: &str, what: &str, after: Duration) -> DockerError {
        DockerError::Timeout {
            host: self.name().to_owned(),
            operation: format!("{operation} {what}"),
            after,
        }
    }

    pub(super) fn invalid_spec(&self, detail: String) -> DockerError {
        DockerError::InvalidSpec {
            host: self.name().to_owned(),
            detail,
        }
    }

    /// One inspect: `None` when the container is gone, its full id and a
    /// readable name when it is Berth's, [`DockerError::NotManaged`] else.
    async fn inspect_managed(
        &self,
        action: &str,
        id: &str,
    ) -> Result<Option<(String, String)>, DockerError> {
        let docker = self.client().await?;
        let what = format!("container `{id}`");
        let inspected = match self
            .bounded(
                "inspecting",
                &what,
                API_TIMEOUT,
                docker.inspect_container(id, None),
            )
            .await
        {
            Ok(inspected) => inspected,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let name = inspected
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| id.to_owned());
        let what = format!("container `{name}`");
        let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
        if !is_managed(&labels) {
            return Err(DockerError::NotManaged {
                host: self.name().to_owned(),
                action: action.to_owned(),
                what,
            });
        }
        Ok(Some((inspected.id.unwrap_or_else(|| id.to_owned()), what)))
    }

    /// Removes a container Berth itself just created (no label check).
    async fn force_remove(&self, id: &str) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let what = format!("container `{id}`");
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self
            .bounded(
                "removing",
                &what,
                API_TIMEOUT,
                docker.remove_container(id, Some(options)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(DockerError::Conflict { detail, .. }) if detail.contains("already in progress") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Waits for a job to exit; kills it after `timeout`. Returns the exit
    /// status and whether it timed out.
    async fn wait_job(
        &self,
        id: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(i64, bool), DockerError> {
        let what = format!("job container `{name}`");
        match self.wait_exit(id, &what, timeout).await? {
            Some(code) => Ok((code, false)),
            None => {
                tracing::warn!(host = %self.name(), container = name, timeout_secs = timeout.as_secs(), "job timed out; killing it");
                let docker = self.client().await?;
                let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
                match self
                    .bounded(
                        "killing",
                        &what,
                        API_TIMEOUT,
                        docker.kill_container(id, Some(options)),
                    )
                    .await
                {
                    // Gone, or exited just now (409: not running): fine.
                    Ok(()) | Err(DockerError::NotFound { .. } | DockerError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
                let code = self.wait_exit(id, &what, KILL_WAIT).await?.unwrap_or(-1);
                Ok((code, true))
            }
        }
    }

    /// The exit status once the container stops; `None` if it did not
    /// within `limit`.
    async fn wait_exit(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
    ) -> Result<Option<i64>, DockerError> {
        let docker = self.client().await?;
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut stream = Box::pin(docker.wait_container(id, Some(options)));
        match tokio::time::timeout(limit, stream.next()).await {
            Err(_) => Ok(None),
            Ok(Some(Ok(response))) => Ok(Some(response.status_code)),
            // bollard reports a non-zero exit as an error; it is an outcome.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                Ok(Some(code))
            }
            Ok(Some(Err(e))) => Err(self.api_error("waiting for", what, limit, e)),
            Ok(None) => Err(DockerError::Api {
                host: self.name().to_owned(),
                operation: format!("waiting for {what}"),
                detail: "the daemon closed the wait without an exit status".into(),
            }),
        }
    }

    pub(super) async fn find_network(
        &self,
        name: &str,
    ) -> Result<Option<bollard::models::Network>, DockerError> {
        let docker = self.client().await?;
        // The name filter matches substrings; compare exactly below.
        let filters = HashMap::from([("name", vec![name.to_owned()])]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .bounded(
                "listing",
                &format!("network `{name}`"),
                API_TIMEOUT,
                docker.list_networks(Some(options)),
            )
            .await?;
        Ok(networks
            .into_iter()
            .find(|n| n.name.as_deref() == Some(name)))
    }

    pub(super) fn check_network_managed(
        &self,
        what: &str,
        network: &bollard::models::Network,
    ) -> Result<(), DockerError> {
        match &network.labels {
            Some(labels) if is_managed(labels) => Ok(()),
            _ => Err(DockerError::NotManaged {
                host: self.name().to_owned(),
                action: "use".to_owned(),
                what: what.to_owned(),
            }),
        }
    }
}

fn managed_filter() -> String {
    format!("{}={}", labels::MANAGED, labels::MANAGED_VALUE)
}

/// The last `lines` lines of `bytes`, without line ends.
pub(super) fn last_lines(bytes: &[u8], lines: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect()
}

/// Removes a job container if `run_job` is dropped before it could.
struct RemoveOnDrop {
    host: Option<DockerHost>,
    id: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(host) = self.host.take() else {
            return;
        };
        let id = std::mem::take(&mut self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = host.force_remove(&id).await {
                    tracing::warn!(host = %host.name(), container = %id, error = %e, "could not remove an abandoned job container");
                }
            });
        }
    }
}

/// Docker decodes `X-Registry-Auth` (and `X-Registry-Config`) as URL-safe
/// base64 (Go's `base64.URLEncoding`), while bollard encodes them with the
/// standard alphabet: a password whose JSON encodes to `+` or `/` reached
/// the daemon as garbage, and the pull failed with "no basic auth
/// credentials". Both alphabets differ only in those two characters, so
/// the header is translated in place.
fn url_safe_registry_auth(mut request: bollard::BollardRequest) -> bollard::BollardRequest {
    for name in ["x-registry-auth", "x-registry-config"] {
        let Some(value) = request.headers().get(name) else {
            continue;
        };
        let Ok(text) = value.to_str() else {
            continue;
        };
        let translated = to_url_safe_base64(text);
        if let Ok(value) = hyper::header::HeaderValue::from_str(&translated) {
            request.headers_mut().insert(name, value);
        }
    }
    request
}

/// Standard base64 → URL-safe base64 (padding kept, as Go's URLEncoding).
fn to_url_safe_base64(standard: &str) -> String {
    standard
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect()
}

/// How long an idle kept-alive connection to a daemon stays open.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The daemon's unix socket with its connections kept alive and reused.
/// bollard's own unix client opens a new connection for every request
/// (its pool is off), which costs a round trip more per API call, and
/// far more when the socket is a tunnel to a distant host (`ssh -L`).
fn pooled_unix(path: &str) -> Result<Docker, bollard::errors::Error> {
    let socket = Arc::new(std::path::PathBuf::from(path.trim_start_matches("unix://")));
    if !socket.exists() {
        return Err(bollard::errors::Error::SocketNotFoundError(
            socket.display().to_string(),
        ));
    }
    pooled(
        hyperlocal::UnixConnector,
        "http://docker.sock".to_owned(),
        Some(socket),
    )
}

/// A plain `tcp://` daemon over kept-alive connections (bollard's own HTTP
/// client keeps none, as for unix sockets).
fn pooled_http(address: &str) -> Result<Docker, bollard::errors::Error> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let base = format!("http://{}", address.trim_start_matches("tcp://"));
    pooled(connector, base, None)
}

/// A `tcp://` daemon with `--tlsverify`, over kept-alive connections
/// (bollard's own TLS client keeps none, and reads the key from files).
fn pooled_tls(
    address: &str,
    config: rustls::ClientConfig,
) -> Result<Docker, bollard::errors::Error> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let base = format!("https://{}", address.trim_start_matches("tcp://"));
    pooled(connector, base, None)
}

/// A bollard client whose requests go through one pooled hyper client
/// over `connector`, to `base`, or to the unix `socket` when given.
fn pooled<C>(
    connector: C,
    base: String,
    socket: Option<Arc<std::path::PathBuf>>,
) -> Result<Docker, bollard::errors::Error>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector);
    Docker::connect_with_custom_transport(
        move |mut request: bollard::BollardRequest| {
            let (client, socket) = (client.clone(), socket.clone());
            async move {
                if let Some(socket) = socket {
                    let path = request
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    *request.uri_mut() = hyperlocal::Uri::new(&*socket, &path).into();
                }
                client
                    .request(request)
                    .await
                    .map_err(|err| bollard::errors::Error::HyperLegacyError { err })
            }
        },
        Some(base),
        CLIENT_TIMEOUT_SECS,
        API_DEFAULT_VERSION,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::TlsFiles;
    use crate::registry::Secret;

    #[test]
    fn registry_auth_goes_out_in_the_alphabet_docker_decodes() {
        use base64::Engine as _;
        let json = r#"{"username":"u","password":"??????~~~~~~"}"#;
        let standard = base64::engine::general_purpose::STANDARD.encode(json);
        assert!(
            standard.contains('/') || standard.contains('+'),
            "{standard}"
        );
        let sent = to_url_safe_base64(&standard);
        let decoded = base64::engine::general_purpose::URL_SAFE
            .decode(&sent)
            .expect("Docker's URL-safe decoding");
        assert_eq!(decoded, json.as_bytes());
    }

    #[test]
    fn connect_does_no_io() {
        let host =
            DockerHost::connect(&HostConfig::new("x", "unix:///nonexistent/docker.sock")).unwrap();
        assert_eq!(host.name(), "x");
        assert_eq!(host.publish_address(), "127.0.0.1");
    }

    #[test]
    fn connect_checks_the_config_without_io() {
        let mut cfg = HostConfig::new("p", "unix:///x.sock");
        cfg.publish_address = "localhost".into();
        assert!(matches!(
            DockerHost::connect(&cfg).unwrap_err(),
            DockerError::InvalidConfig { .. }
        ));
        assert!(matches!(
            DockerHost::connect(&HostConfig::new("", "unix:///x.sock")).unwrap_err(),
            DockerError::InvalidConfig { .. }
        ));
    }

    fn tls_material() -> TlsFiles {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["client.test".to_owned()]).unwrap();
        TlsFiles {
            ca: ca.cert.pem(),
            cert: client.cert.pem(),
            key: Secret::new(client.signing_key.serialize_pem()),
        }
    }

    #[test]
    fn tls_is_for_tcp_only_and_checked_up_front() {
        let mut cfg = HostConfig::new("t", "tcp://box");
        cfg.tls = Some(tls_material());
        let host = DockerHost::connect(&cfg).unwrap();
        assert_eq!(
            host.address().to_string(),
            "tcp://box:2376",
            "TLS default port"
        );
        assert!(matches!(host.inner.transport, Transport::Tls { .. }));

        for address in ["unix:///var/run/docker.sock", "ssh://deploy@box"] {
            let mut cfg = HostConfig::new("u", address);
            cfg.tls = Some(tls_material());
            let err = DockerHost::connect(&cfg).unwrap_err();
            assert!(err.to_string().contains("tcp:// addresses only"), "{err}");
        }

        let mut cfg = HostConfig::new("bad", "tcp://box:2376");
        let mut tls = tls_material();
        tls.ca = String::new();
        cfg.tls = Some(tls);
        let err = DockerHost::connect(&cfg).unwrap_err();
        assert!(matches!(err, DockerError::InvalidConfig { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("TLS: the CA certificate: holds no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn ssh_addresses_bollard_can_pass_to_ssh() {
        let host = DockerHost::connect(&HostConfig::new("s", "ssh://deploy@box:22")).unwrap();
        match &host.inner.transport {
            Transport::Ssh { destination } => assert_eq!(destination, "ssh://deploy@box"),
            _ => panic!("not ssh"),
        }
        assert_eq!(
            ssh_destination(None, "10.0.0.5", 22).unwrap(),
            "ssh://10.0.0.5"
        );

        let err = DockerHost::connect(&HostConfig::new("s", "ssh://deploy@box:2222")).unwrap_err();
        assert!(matches!(err, DockerError::Unsupported { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("port 2222"), "{text}");
        assert!(text.contains("`HostName box` / `Port 2222`"), "{text}");
        assert!(text.contains("ssh://deploy@docker-host"), "{text}");

        let err = DockerHost::connect(&HostConfig::new("s", "ssh://[::1]")).unwrap_err();
        assert!(err.to_string().contains("IPv6"), "{err}");

        for address in ["ssh://-oProxyCommand=x@box", "ssh://-box"] {
            let err = DockerHost::connect(&HostConfig::new("s", address)).unwrap_err();
            assert!(
                matches!(err, DockerError::InvalidConfig { .. }),
                "{address}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn ssh_runs_the_ssh_command_and_reports_its_failure() {
        // The real `ssh` command, in batch mode, to port 22 of 127.0.0.2:
        // refused where no sshd runs, denied (no key for `nobody`) where
        // one does; either way the host is unreachable, in words.
        let host = DockerHost::connect(&HostConfig::new("s", "ssh://nobody@127.0.0.2")).unwrap();
        let err = host.list_managed().await.unwrap_err();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string().contains("ssh://nobody@127.0.0.2:22"),
            "{err}"
        );
        assert!(err.to_string().contains("without a prompt"), "{err}");
    }

    #[tokio::test]
    async fn missing_socket_reads_as_words() {
        let host =
            DockerHost::connect(&HostConfig::new("local", "unix:///nonexistent/docker.sock"))
                .unwrap();
        let err = host.list_managed().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot reach Docker host `local` at unix:///nonexistent/docker.sock: \
             No such file or directory — is the Docker daemon running, and is the address right?"
        );
    }

    #[tokio::test]
    async fn refused_tcp_reads_as_words() {
        // A port nothing listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = DockerHost::connect(&HostConfig::new("far", format!("tcp://127.0.0.1:{port}")))
            .unwrap();
        let err = host.list_managed().await.unwrap_err();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines(b"a\nb\r\nc\n", 2), vec!["b", "c"]);
        assert_eq!(last_lines(b"", 5), Vec::<String>::new());
        assert_eq!(last_lines(b"x", 5), vec!["x"]);
    }
}
