//! Docker's side of the Swarm backend (issue 13, first part; not wired to a
//! host mode yet): [`SwarmService`] (what the engine asks for) as Docker's
//! `ServiceSpec`, pure, and the facts of the service API that callers must
//! respect:
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
    Limit, NetworkAttachmentConfig, Platform, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use std::collections::BTreeMap;

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
    pub update: UpdatePolicy,
    /// Seconds Swarm gives a task to stop after SIGTERM.
    pub stop_grace: Duration,
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
        command: service.command.clone(),
        env: Some(
            service
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        stop_grace_period: Some(nanos(service.stop_grace)),
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
    ServiceSpec {
        name: Some(service.name.clone()),
        labels: Some(string_map(&service.labels)),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources,
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
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
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::try_from(service.replicas).unwrap_or(i64::MAX)),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
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
}
