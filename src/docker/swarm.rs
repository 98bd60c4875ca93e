//! Docker's side of the Swarm backend: [`SwarmService`] (what the engine
//! asks for) as Docker's `ServiceSpec`, services and tasks as Berth reads
//! them back ([`ObservedService`], [`ObservedTask`]), pure; the I/O is in
//! `swarm_host`. Facts of the service API that callers must respect:
//! - every duration is nanoseconds; `Parallelism: 0` means all at once
//!   (Berth never sends 0);
//! - an update carries the whole spec and the version it was read at;
//!   Docker reports the version as `u64`, bollard's update options take an
//!   `i32` ([`update_version`]); a stale version is answered HTTP 500
//!   "update out of sequence": inspect again and retry
//!   ([`is_update_out_of_sequence`]).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, NetworkAttachmentConfig, Platform,
    Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecModeReplicatedJob,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile1,
    TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use sha2::Digest as _;

use std::collections::BTreeMap;

use crate::labels;

/// Where Berth's probe is mounted in every task with a health check.
pub const PROBE_PATH: &str = "/berth-probe";

/// Berth's HTTP probe: a static x86-64 Linux program of a few KB (no libc,
/// built from `probe/berth-probe.c`) that GETs `http://127.0.0.1:PORT/PATH`
/// inside the task and exits 0 on 2xx/3xx. Mounted from a Swarm config, it
/// is the task's HEALTHCHECK, so Swarm's own start-first gate waits for the
/// app's `health_check` even in images without a shell, curl or wget.
pub const PROBE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-probe"));

/// The name of the Swarm config holding [`PROBE_BINARY`]: its content's
/// hash, so a new build of the probe gets a config of its own.
pub fn probe_config_name() -> String {
    let sum = sha2::Sha256::digest(PROBE_BINARY);
    format!("berth-probe-{}", &hex::encode(sum)[..12])
}

/// A task's health check through Berth's probe.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeCheck {
    pub port: u16,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub retries: u32,
    /// A new task is not healthy before it is this old (the probe says
    /// "not yet" without asking): the time Berth has to route requests to
    /// it before Swarm stops an old task. Added to the start period, so
    /// the waits are never counted as failures.
    pub hold: Option<Duration>,
    /// The Swarm config holding the probe: id and name.
    pub config_id: String,
    pub config_name: String,
}

/// How Swarm rolls a service forward, as Berth asks for it.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdatePolicy {
    /// Tasks updated at once (never 0: Docker's 0 means all at once).
    pub parallelism: u64,
    /// Pause between batches.
    pub delay: Duration,
    /// How long a new task is watched for failure after it started.
    pub monitor: Duration,
    /// Start the new task before stopping the old one.
    pub start_first: bool,
    /// Roll back by itself when a task fails within the monitor window.
    pub rollback_on_failure: bool,
}

/// A component as a Swarm service: everything Docker's `ServiceSpec`
/// needs, in Berth's terms (the engine builds it, as it builds a
/// `ContainerSpec`).
#[derive(Clone, Debug, PartialEq)]
pub struct SwarmService {
    pub name: String,
    /// `repo@sha256:…`, the digest the plan showed.
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// On the service and on its tasks' containers.
    pub labels: BTreeMap<String, String>,
    pub replicas: u64,
    /// Billionths of a CPU.
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    /// The overlay network the tasks join, and their alias on it.
    pub network: String,
    pub alias: String,
    /// The port the tasks serve HTTP on (probed from outside over the
    /// overlay network: images need no probe tool inside).
    pub http_port: Option<u16>,
    /// Publish `http_port` in host mode on an ephemeral port of each
    /// task's node, for the manager's ingress (the stable address) to send
    /// requests to: not the routing mesh, whose connections break when a
    /// task stops (and which needs the node's iptables).
    pub publish: bool,
    pub update: UpdatePolicy,
    /// Seconds Swarm gives a task to stop after SIGTERM.
    pub stop_grace: Duration,
    /// The health check, through Berth's probe.
    pub health: Option<ProbeCheck>,
    /// A one-off job (pre-deploy): runs once to completion, never restarted.
    pub job: bool,
}

/// A duration as the service API wants it.
pub fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Docker's service version as bollard's update options take it.
pub fn update_version(version: u64) -> Result<i32, String> {
    i32::try_from(version).map_err(|_| {
        format!(
            "the service's version {version} does not fit the Docker client's 32-bit version field; \
             recreate the service (berth destroys and deploys it again)"
        )
    })
}

/// Whether a failed update was refused for a stale version.
pub fn is_update_out_of_sequence(status: u16, message: &str) -> bool {
    status == 500 && message.contains("update out of sequence")
}

fn string_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The service spec Docker gets for `service`.
pub fn service_spec(service: &SwarmService) -> ServiceSpec {
    let update = &service.update;
    let container = TaskSpecContainerSpec {
        image: Some(service.image.clone()),
        labels: Some(string_map(&service.labels)),
        // Swarm's `Command` replaces the image's ENTRYPOINT; Berth's
        // command replaces its CMD, as `docker run IMAGE CMD` does: `Args`.
        args: service.command.clone(),
        env: Some(
            service
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        stop_grace_period: Some(nanos(service.stop_grace)),
        health_check: service.health.as_ref().map(|h| {
            let mut test = vec![
                "CMD".to_owned(),
                PROBE_PATH.to_owned(),
                h.port.to_string(),
                h.path.clone(),
            ];
            if let Some(hold) = h.hold {
                test.push(hold.as_millis().to_string());
            }
            HealthConfig {
                test: Some(test),
                interval: Some(nanos(h.interval.max(Duration::from_millis(1)))),
                timeout: Some(nanos(h.timeout.max(Duration::from_millis(1)))),
                retries: Some(i64::from(h.retries.max(1))),
                start_period: Some(nanos(h.start_period + h.hold.unwrap_or_default())),
                start_interval: None,
            }
        }),
        configs: service.health.as_ref().map(|h| {
            vec![TaskSpecContainerSpecConfigs {
                file: Some(TaskSpecContainerSpecFile1 {
                    name: Some(PROBE_PATH.to_owned()),
                    uid: Some("0".to_owned()),
                    gid: Some("0".to_owned()),
                    mode: Some(0o555),
                }),
                runtime: None,
                config_id: Some(h.config_id.clone()),
                config_name: Some(h.config_name.clone()),
            }]
        }),
        ..Default::default()
    };
    let resources = (service.nano_cpus.is_some() || service.memory_bytes.is_some()).then(|| {
        TaskSpecResources {
            limits: Some(Limit {
                nano_cpus: service.nano_cpus,
                memory_bytes: service.memory_bytes,
                pids: None,
            }),
            reservations: None,
            ..Default::default()
        }
    });
    let mut spec = ServiceSpec {
        name: Some(service.name.clone()),
        labels: Some(string_map(&service.labels)),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources,
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(if service.job {
                    TaskSpecRestartPolicyConditionEnum::NONE
                } else {
                    TaskSpecRestartPolicyConditionEnum::ANY
                }),
                delay: Some(nanos(Duration::from_secs(1))),
                max_attempts: None,
                window: None,
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(vec![
                    "node.platform.os==linux".to_owned(),
                    "node.platform.arch==x86_64".to_owned(),
                ]),
                platforms: Some(vec![Platform {
                    architecture: Some("amd64".to_owned()),
                    os: Some("linux".to_owned()),
                }]),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(service.network.clone()),
                aliases: Some(vec![service.alias.clone()]),
                driver_opts: None,
            }]),
            ..Default::default()
        }),
        mode: Some(if service.job {
            ServiceSpecMode {
                replicated_job: Some(ServiceSpecModeReplicatedJob {
                    max_concurrent: Some(1),
                    total_completions: Some(1),
                }),
                ..Default::default()
            }
        } else {
            ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::try_from(service.replicas).unwrap_or(i64::MAX)),
                }),
                ..Default::default()
            }
        }),
        // DNS round robin: `web.APP` names the tasks themselves. Berth does
        // not publish through the routing mesh, so no virtual IP is needed
        // (and none depends on the node's iptables).
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: service
                .http_port
                .filter(|_| service.publish && !service.job)
                .map(|port| {
                    vec![EndpointPortConfig {
                        name: Some("http".to_owned()),
                        protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                        target_port: Some(i64::from(port)),
                        // No published port: each node picks an ephemeral
                        // one per task, shown in the task's status.
                        published_port: None,
                        publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    }]
                }),
        }),
        rollback_config: (!service.job).then(|| ServiceSpecRollbackConfig {
            parallelism: Some(i64::try_from(update.parallelism.max(1)).unwrap_or(1)),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(nanos(update.monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(if update.start_first {
                ServiceSpecRollbackConfigOrderEnum::START_FIRST
            } else {
                ServiceSpecRollbackConfigOrderEnum::STOP_FIRST
            }),
        }),
        update_config: (!service.job).then(|| ServiceSpecUpdateConfig {
            parallelism: Some(i64::try_from(update.parallelism.max(1)).unwrap_or(1)),
            delay: Some(nanos(update.delay)),
            failure_action: Some(if update.rollback_on_failure {
                ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK
            } else {
                ServiceSpecUpdateConfigFailureActionEnum::PAUSE
            }),
            monitor: Some(nanos(update.monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(if update.start_first {
                ServiceSpecUpdateConfigOrderEnum::START_FIRST
            } else {
                ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
            }),
        }),
        ..Default::default()
    };
    let fingerprint = spec_fingerprint(&spec);
    spec.labels
        .get_or_insert_with(HashMap::new)
        .insert(labels::SWARM_SPEC.to_owned(), fingerprint);
    spec
}

/// A hash of what Berth sets in a service and a hand edit may change: the
/// image, command, env and limits (not the replicas, which are compared on
/// their own, nor the labels). Computed the same way from the spec Berth
/// writes and from the spec the daemon reports. Not the health check:
/// Docker reports it as `Healthcheck`, which bollard's `HealthCheck` field
/// does not read back.
pub fn spec_fingerprint(spec: &ServiceSpec) -> String {
    task_fingerprint(&spec.task_template.clone().unwrap_or_default())
}

/// [`spec_fingerprint`] of a task's spec (each task keeps the spec it was
/// made from: the tasks of an update's new spec are told apart by it).
pub fn task_fingerprint(task: &TaskSpec) -> String {
    let task = task.clone();
    let c = task.container_spec.clone().unwrap_or_default();
    let mut env = c.env.clone().unwrap_or_default();
    env.sort();
    let limits = task.resources.and_then(|r| r.limits).unwrap_or_default();
    let facts = serde_json::json!({
        "image": c.image,
        "command": c.command.clone().unwrap_or_default(),
        "args": c.args.clone().unwrap_or_default(),
        "env": env,
        "nano_cpus": limits.nano_cpus.unwrap_or(0),
        "memory": limits.memory_bytes.unwrap_or(0),
    });
    hex::encode(&sha2::Sha256::digest(facts.to_string().as_bytes())[..12])
}

/// The image a service's tasks run.
pub(super) fn spec_image(spec: &ServiceSpec) -> String {
    spec.task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// A service Berth manages, as the daemon reports it.
#[derive(Clone, Debug)]
pub struct ObservedService {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `None` for a job.
    pub replicas: Option<u64>,
    pub image: String,
    /// [`spec_fingerprint`] of the spec as it is now.
    pub fingerprint: String,
    /// Swarm's update state (`updating`, `completed`, `rollback_started`,
    /// `rollback_completed`, `paused`, …), empty before any update.
    pub update_state: String,
    pub update_message: String,
    pub tasks: Vec<ObservedTask>,
}

impl ObservedService {
    pub(super) fn from_service(s: Service, tasks: Vec<ObservedTask>) -> Option<ObservedService> {
        let spec = s.spec?;
        let replicas = spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .map(|r| r.replicas.unwrap_or(1).max(0) as u64);
        let image = spec_image(&spec);
        let (update_state, update_message) = s
            .update_status
            .map(|u| {
                (
                    u.state.map(|s| s.to_string()).unwrap_or_default(),
                    u.message.unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        Some(ObservedService {
            id: s.id?,
            name: spec.name.clone()?,
            labels: spec
                .labels
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            replicas,
            image,
            fingerprint: spec_fingerprint(&spec),
            update_state,
            update_message,
            tasks,
        })
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Tasks Swarm wants running (the current ones, not the history).
    pub fn current_tasks(&self) -> impl Iterator<Item = &ObservedTask> {
        self.tasks.iter().filter(|t| t.desired_state == "running")
    }

    /// Current tasks running, made from the spec with `fingerprint`.
    pub fn running_spec(&self, fingerprint: &str) -> usize {
        self.current_tasks()
            .filter(|t| t.state == "running" && t.fingerprint == fingerprint)
            .count()
    }

    /// Tasks that ended badly, newest first, in words: failed or rejected
    /// ones, and with `of_spec` every task of that spec (fingerprint) that
    /// is no longer running (a new spec's task that Swarm shut down as
    /// unhealthy ends `complete` or `shutdown`).
    pub fn failures(&self, of_spec: Option<&str>) -> Vec<String> {
        let mut failed: Vec<&ObservedTask> = self
            .tasks
            .iter()
            .filter(|t| {
                matches!(t.state.as_str(), "failed" | "rejected")
                    || (of_spec == Some(t.fingerprint.as_str())
                        && !matches!(
                            t.state.as_str(),
                            "new"
                                | "pending"
                                | "assigned"
                                | "accepted"
                                | "preparing"
                                | "ready"
                                | "starting"
                                | "running"
                        ))
            })
            .collect();
        failed.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
        failed.iter().take(5).map(|t| t.words()).collect()
    }
}

/// One task of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedTask {
    pub id: String,
    pub service_id: String,
    /// Swarm's slot (1-based), `None` for a job.
    pub slot: Option<u64>,
    pub node_id: String,
    /// `new` … `running`, `complete`, `failed`, `rejected`, `shutdown`.
    pub state: String,
    pub desired_state: String,
    pub message: String,
    pub error: String,
    pub exit_code: Option<i64>,
    pub container_id: String,
    pub image: String,
    /// [`task_fingerprint`] of the spec it was made from.
    pub fingerprint: String,
    /// RFC 3339, as the daemon gives it.
    pub timestamp: String,
    /// The port of its node where the task's `http_port` is published
    /// (host mode), once its container has started.
    pub published_port: Option<u16>,
}

impl ObservedTask {
    pub(super) fn from_task(t: Task) -> Option<ObservedTask> {
        let status = t.status.unwrap_or_default();
        let container = status.container_status.clone().unwrap_or_default();
        let fingerprint = t.spec.as_ref().map(task_fingerprint).unwrap_or_default();
        Some(ObservedTask {
            fingerprint,
            id: t.id?,
            service_id: t.service_id?,
            slot: t.slot.and_then(|s| u64::try_from(s).ok()),
            node_id: t.node_id.unwrap_or_default(),
            state: super::swarm_host::state_word(status.state),
            desired_state: super::swarm_host::state_word(t.desired_state),
            message: status.message.unwrap_or_default(),
            error: status.err.unwrap_or_default(),
            exit_code: container.exit_code,
            container_id: container.container_id.unwrap_or_default(),
            image: t
                .spec
                .and_then(|s| s.container_spec)
                .and_then(|c| c.image)
                .unwrap_or_default(),
            timestamp: status.timestamp.map(|d| d.to_string()).unwrap_or_default(),
            published_port: status
                .port_status
                .and_then(|p| p.ports)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.published_port)
                .find_map(|p| u16::try_from(p).ok().filter(|p| *p != 0)),
        })
    }

    /// The task's end in words: `task 3f2a…: failed: task: non-zero exit (3)`.
    pub fn words(&self) -> String {
        let short = &self.id[..self.id.len().min(12)];
        let why = [self.error.as_str(), self.message.as_str()]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("no reason given");
        match self.exit_code {
            Some(code) if code != 0 => {
                format!("task {short}: {} ({why}, exit code {code})", self.state)
            }
            _ => format!("task {short}: {} ({why})", self.state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> SwarmService {
        SwarmService {
            name: "shop-web".into(),
            image: format!("127.0.0.1:5000/berth/demo@sha256:{}", "ab".repeat(32)),
            command: None,
            env: [
                ("B".to_owned(), "2".to_owned()),
                ("A".to_owned(), "1".to_owned()),
            ]
            .into_iter()
            .collect(),
            labels: [("io.berth.app".to_owned(), "shop".to_owned())]
                .into_iter()
                .collect(),
            replicas: 3,
            nano_cpus: Some(500_000_000),
            memory_bytes: None,
            network: "berth".into(),
            publish: false,
            alias: "web.shop".into(),
            http_port: Some(8080),
            update: UpdatePolicy {
                parallelism: 1,
                delay: Duration::ZERO,
                monitor: Duration::from_secs(36),
                start_first: true,
                rollback_on_failure: true,
            },
            stop_grace: Duration::from_secs(10),
            health: None,
            job: false,
        }
    }

    #[test]
    fn the_spec_pins_the_digest_on_linux_amd64_with_durations_in_nanoseconds() {
        let spec = service_spec(&service());
        let json = serde_json::to_value(&spec).unwrap();
        let task = &json["TaskTemplate"];
        assert_eq!(task["ContainerSpec"]["Image"], service().image);
        assert_eq!(
            task["ContainerSpec"]["Env"],
            serde_json::json!(["A=1", "B=2"])
        );
        assert_eq!(task["ContainerSpec"]["StopGracePeriod"], 10_000_000_000i64);
        assert_eq!(task["Placement"]["Platforms"][0]["Architecture"], "amd64");
        assert_eq!(task["Placement"]["Platforms"][0]["OS"], "linux");
        assert_eq!(task["Resources"]["Limits"]["NanoCPUs"], 500_000_000);
        assert_eq!(task["Networks"][0]["Aliases"][0], "web.shop");
        assert_eq!(json["Mode"]["Replicated"]["Replicas"], 3);
        let update = &json["UpdateConfig"];
        assert_eq!(update["Order"], "start-first");
        assert_eq!(update["FailureAction"], "rollback");
        assert_eq!(update["Parallelism"], 1);
        assert_eq!(update["Monitor"], 36_000_000_000i64);
        assert_eq!(json["Labels"]["io.berth.app"], "shop");
    }

    #[test]
    fn parallelism_is_never_all_at_once() {
        let mut s = service();
        s.update.parallelism = 0;
        let spec = service_spec(&s);
        assert_eq!(spec.update_config.unwrap().parallelism, Some(1));
    }

    #[test]
    fn versions_and_stale_updates() {
        assert_eq!(update_version(42), Ok(42));
        assert!(update_version(u64::from(u32::MAX))
            .unwrap_err()
            .contains("32-bit"));
        assert!(is_update_out_of_sequence(
            500,
            "rpc error: code = Unknown desc = update out of sequence"
        ));
        assert!(!is_update_out_of_sequence(409, "update out of sequence"));
    }

    #[test]
    fn command_health_check_job_and_fingerprint() {
        let mut s = service();
        s.command = Some(vec!["serve".into(), "--fast".into()]);
        s.health = Some(ProbeCheck {
            port: 8080,
            path: "/up".into(),
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
            start_period: Duration::from_secs(30),
            retries: 3,
            hold: None,
            config_id: "cfg".into(),
            config_name: "berth-probe-abc".into(),
        });
        let spec = service_spec(&s);
        let json = serde_json::to_value(&spec).unwrap();
        let c = &json["TaskTemplate"]["ContainerSpec"];
        // Berth's command replaces the image's CMD, not its ENTRYPOINT.
        assert_eq!(c["Args"], serde_json::json!(["serve", "--fast"]));
        assert!(c.get("Command").is_none(), "{c}");
        assert_eq!(
            c["HealthCheck"]["Test"],
            serde_json::json!(["CMD", PROBE_PATH, "8080", "/up"])
        );
        assert_eq!(c["HealthCheck"]["Interval"], 250_000_000);
        assert_eq!(c["Configs"][0]["File"]["Name"], PROBE_PATH);
        assert_eq!(c["Configs"][0]["File"]["Mode"], 0o555);
        assert_eq!(c["Configs"][0]["ConfigID"], "cfg");
        assert_eq!(json["EndpointSpec"]["Mode"], "dnsrr");
        assert!(
            json["EndpointSpec"].get("Ports").is_none(),
            "not exposed: nothing published"
        );
        assert_eq!(json["RollbackConfig"]["Order"], "start-first");
        // Exposed: the port published in host mode on an ephemeral port of
        // each node, and the probe holds a new task for the switch.
        let mut exposed = s.clone();
        exposed.publish = true;
        exposed.http_port = Some(8080);
        exposed.health.as_mut().unwrap().hold = Some(Duration::from_secs(3));
        let json = serde_json::to_value(service_spec(&exposed)).unwrap();
        assert_eq!(
            json["EndpointSpec"]["Ports"],
            serde_json::json!([{"Name": "http", "Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}])
        );
        let health = &json["TaskTemplate"]["ContainerSpec"]["HealthCheck"];
        assert_eq!(
            health["Test"],
            serde_json::json!(["CMD", PROBE_PATH, "8080", "/up", "3000"])
        );
        assert_eq!(
            health["StartPeriod"], 33_000_000_000i64,
            "the hold never counts as a failure"
        );
        assert_eq!(
            json["Labels"][labels::SWARM_SPEC],
            spec_fingerprint(&spec).as_str(),
            "the label is the fingerprint of the spec that carries it"
        );
        // A change Berth did not make changes the fingerprint; replicas do not.
        let mut other = spec.clone();
        other.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(9) }),
            ..Default::default()
        });
        assert_eq!(spec_fingerprint(&other), spec_fingerprint(&spec));
        let mut env = spec.clone();
        if let Some(c) = env
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
        {
            c.env.get_or_insert_with(Vec::new).push("EXTRA=1".into());
        }
        assert_ne!(spec_fingerprint(&env), spec_fingerprint(&spec));

        s.job = true;
        let job = serde_json::to_value(service_spec(&s)).unwrap();
        assert_eq!(job["Mode"]["ReplicatedJob"]["TotalCompletions"], 1);
        assert_eq!(job["TaskTemplate"]["RestartPolicy"]["Condition"], "none");
        assert!(job.get("UpdateConfig").is_none(), "{job}");
    }

    /// The embedded probe is a real program: run it against a socket of
    /// this test's own.
    #[test]
    fn the_probe_judges_the_status_line() {
        use std::io::{Read, Write};
        use std::os::unix::fs::PermissionsExt;
        assert!(PROBE_BINARY.starts_with(b"\x7fELF"));
        assert!(
            PROBE_BINARY.len() < 64 * 1024,
            "Swarm configs hold at most 500 KB"
        );
        assert!(probe_config_name().starts_with("berth-probe-"));
        let dir = std::env::temp_dir().join(format!("berth-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("probe");
        std::fs::write(&path, PROBE_BINARY).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let serve = |status: &'static str| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let handle = std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).unwrap();
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                conn.write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .unwrap();
                request
            });
            (port, handle)
        };
        let run = |port: &dyn ToString, path_: &str| {
            std::process::Command::new(&path)
                .arg(port.to_string())
                .arg(path_)
                .status()
                .unwrap()
                .code()
        };
        let (port, h) = serve("200 OK");
        assert_eq!(run(&port, "/healthz"), Some(0));
        assert!(h.join().unwrap().starts_with("GET /healthz HTTP/1.0\r\n"));
        let (port, h) = serve("302 Found");
        assert_eq!(run(&port, "/"), Some(0));
        h.join().unwrap();
        let (port, h) = serve("503 Service Unavailable");
        assert_eq!(run(&port, "/"), Some(1));
        h.join().unwrap();
        // Nothing listens: cannot connect.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(run(&closed, "/"), Some(4));
        assert_eq!(run(&"70000", "/"), Some(2), "not a port");
        // The hold: this machine's process 1 is older than a second, and
        // younger than three thousand years.
        let held = |port: &dyn ToString, hold: &str| {
            std::process::Command::new(&path)
                .args([port.to_string().as_str(), "/", hold])
                .status()
                .unwrap()
                .code()
        };
        let (port, h) = serve("200 OK");
        assert_eq!(held(&port, "1000"), Some(0), "old enough: asks");
        h.join().unwrap();
        assert_eq!(
            held(&closed, "99999999999999"),
            Some(8),
            "too young: not yet"
        );
        assert_eq!(held(&closed, "12x"), Some(2), "not a number");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
