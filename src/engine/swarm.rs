//! The Swarm backend's desired and observed state, pure: what a component
//! of an app becomes as a Swarm service, in the engine's own terms
//! ([`SwarmService`]), how Berth supervises Swarm's rolling update of it
//! ([`UpdatePolicy`], [`convergence_deadline`]), what runs read back as
//! instances ([`instances`]) and the drift in words ([`service_drift`]).
//! `crate::docker::swarm` turns a service into Docker's `ServiceSpec`; the
//! steps that call the manager are in `swarm_runtime`.
//!
//! Choices, and why:
//! - One service per component, named `APP-COMPONENT` (Swarm's limit is 63
//!   characters), `instances` as replicas, the image pinned by the digest
//!   the plan showed (Berth resolves it; the daemon is never asked to
//!   resolve a tag), placement limited to linux/amd64 nodes.
//! - Rollout by Swarm: start-first (a new task runs before an old one
//!   stops), one task at a time, failure action rollback. The monitor
//!   window covers the health check's start period plus the probes that
//!   may fail after it, so a task that crash-loops is not reported
//!   "completed" before it failed (Swarm's default 5 s window does that);
//!   at least [`MIN_MONITOR`].
//! - Berth watches convergence with a deadline derived from the same
//!   numbers ([`convergence_deadline`]), because Swarm updates are known to
//!   hang (moby #35564); past it Berth rolls back itself.
//! - A stable address (`public_port`, `domains`) through Berth's ingress on
//!   the manager, as on hosts, not through Swarm's routing mesh: the mesh
//!   cuts the connections of a task that stops and needs the nodes'
//!   iptables. Each task publishes its `http_port` in host mode on an
//!   ephemeral port of its node; the ingress sends requests to
//!   `node:port` ([`swarm_routes`]). Swarm stops an old task as soon as
//!   the new one is healthy, so a new task of an exposed service is not
//!   healthy to Swarm before it is [`SWITCH_HOLD`] old (Berth's probe says
//!   "not yet"): meanwhile Berth probes it through the ingress and, once it
//!   answers, sends its slot's requests to it instead of the old task,
//!   which then finishes its in-flight requests before Swarm stops it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::deploy::{component_alias, Target};
use super::plan::{Drift, Instance, InstanceHealth};
use super::spec::{Component, HealthCheck};
use crate::docker::swarm::{ObservedService, ObservedTask, ProbeCheck, SwarmService, UpdatePolicy};
use crate::ingress::{AppRoutes, Server};
use crate::labels;

/// How old a new task of an exposed service must be before Swarm may call
/// it healthy (and stop the old task of its slot): Berth's time to see it
/// start, probe it through the ingress and switch its slot's requests to
/// it (a poll, a probe and a reload: well under a second here).
pub const SWITCH_HOLD: Duration = Duration::from_secs(3);

/// The attachable overlay network every Swarm service of Berth's joins
/// (`web.APP` resolves there, as on [`super::deploy::NETWORK`] on hosts).
pub const SWARM_NETWORK: &str = "berth-swarm";

/// The name of the Swarm config holding Berth's probe, and its id.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub id: String,
    pub name: String,
}

/// Swarm's limit on a service name.
pub const MAX_SERVICE_NAME: usize = 63;

/// The shortest interval of a task's health check on Swarm. On hosts
/// Berth probes from outside only while a new instance starts; Swarm runs
/// the check inside every task for as long as it runs, each probe a
/// process started in the container by the daemon. Measured here with 100
/// tasks on a 2-core node: at the default 0.25 s (400 starts a second) the
/// load went to 48, and at 2 s (50 a second) the daemon still used a whole
/// core, probes exceeded their 2 s timeout and Swarm killed healthy tasks
/// over and over. At 5 s a new task is seen healthy within 5 s of
/// answering, the cost of a rollout step.
pub const MIN_SWARM_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The interval of `health`'s check inside a Swarm task.
pub fn swarm_probe_interval(health: &HealthCheck) -> Duration {
    secs(health.interval_seconds).max(MIN_SWARM_PROBE_INTERVAL)
}

/// The shortest monitor window Berth asks Swarm for.
pub const MIN_MONITOR: Duration = Duration::from_secs(5);

/// Slack added to the convergence deadline: image pulls and scheduling.
pub const DEADLINE_SLACK: Duration = Duration::from_secs(60);

/// Why a component cannot become a Swarm service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SwarmSpecError {
    #[error("the Swarm service name `{name}` ({len} characters) is longer than Swarm's {MAX_SERVICE_NAME}: shorten the app's or the component's name")]
    NameTooLong { name: String, len: usize },
    #[error("`{field}` = {value} cannot be given to Swarm ({why})")]
    OutOfRange {
        field: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The service name of a component.
pub fn service_name(app: &str, component: &str) -> Result<String, SwarmSpecError> {
    let name = format!("{app}-{component}");
    if name.len() > MAX_SERVICE_NAME {
        return Err(SwarmSpecError::NameTooLong {
            len: name.len(),
            name,
        });
    }
    Ok(name)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// The update policy of a component: one task at a time, start-first,
/// rollback on failure, and a monitor window long enough to see a new task
/// fail its health check.
pub fn update_policy(health: Option<&HealthCheck>) -> UpdatePolicy {
    // A task with a health check counts as running only once healthy (the
    // start period is spent before that); the window then covers the
    // probes it takes to see it turn unhealthy.
    let monitor = match health {
        Some(h) => {
            (swarm_probe_interval(h) + secs(h.timeout_seconds)) * h.unhealthy_threshold.max(1)
        }
        None => MIN_MONITOR,
    };
    UpdatePolicy {
        parallelism: 1,
        delay: Duration::ZERO,
        monitor: monitor.max(MIN_MONITOR),
        start_first: true,
        rollback_on_failure: true,
    }
}

/// How long a rollout of `replicas` tasks may stand still before Berth
/// rolls back itself and says why: every batch's monitor window, plus slack
/// for scheduling. Counted from the last progress (a task changing state,
/// or one still pulling or starting), within the longest pull overall.
pub fn convergence_deadline(replicas: u64, policy: &UpdatePolicy) -> Duration {
    let batches = replicas.max(1).div_ceil(policy.parallelism.max(1));
    let per_batch = policy.monitor + policy.delay;
    per_batch * u32::try_from(batches).unwrap_or(u32::MAX) + DEADLINE_SLACK
}

/// A component of `target` as a Swarm service of release `release`.
pub fn swarm_service(
    target: &Target,
    comp: &Component,
    release: u64,
    network: &str,
    test_label: bool,
    probe: Option<&ProbeConfig>,
) -> Result<SwarmService, SwarmSpecError> {
    let app = &target.spec.name;
    let name = service_name(app, &comp.name)?;
    let exposed = comp.exposure.as_ref().is_some_and(|e| e.is_exposed());
    let mut l = super::deploy::base_labels(app, &target.digest, release);
    l.insert(labels::COMPONENT.to_owned(), comp.name.clone());
    l.insert(labels::KIND.to_owned(), comp.kind.label().to_owned());
    l.insert(labels::SPEC_HASH.to_owned(), comp.spec_hash.clone());
    if test_label {
        l.insert(labels::TEST.to_owned(), "1".to_owned());
    }
    let nano_cpus = comp
        .cpus
        .map(|c| {
            let n = (c * 1e9).round();
            if c > 0.0 && n >= 1.0 && n < i64::MAX as f64 {
                Ok(n as i64)
            } else {
                Err(SwarmSpecError::OutOfRange {
                    field: "cpus",
                    value: c.to_string(),
                    why: "give a positive number of CPUs",
                })
            }
        })
        .transpose()?;
    let memory_bytes = comp
        .memory_mb
        .map(|mb| {
            mb.checked_mul(1024 * 1024)
                .and_then(|b| i64::try_from(b).ok())
                .ok_or(SwarmSpecError::OutOfRange {
                    field: "memory_mb",
                    value: mb.to_string(),
                    why: "too large",
                })
        })
        .transpose()?;
    Ok(SwarmService {
        name,
        image: target.pinned.clone(),
        command: comp.command.clone(),
        env: comp.env.clone(),
        labels: l,
        replicas: u64::from(comp.instances),
        nano_cpus,
        memory_bytes,
        network: network.to_owned(),
        alias: component_alias(app, &comp.name),
        http_port: comp.http_port,
        publish: exposed,
        update: update_policy(comp.health_check.as_ref()),
        stop_grace: super::deploy::STOP_GRACE,
        health: match (comp.health_check.as_ref(), comp.http_port, probe) {
            (Some(h), Some(port), Some(p)) => Some(ProbeCheck {
                port,
                path: h.path.clone(),
                interval: swarm_probe_interval(h),
                timeout: secs(h.timeout_seconds),
                start_period: secs(h.start_period_seconds),
                retries: h.unhealthy_threshold.max(1),
                hold: exposed.then_some(SWITCH_HOLD),
                config_id: p.id.clone(),
                config_name: p.name.clone(),
            }),
            _ => None,
        },
        job: false,
    })
}

/// The app's services (its jobs left out), read back as instances: one per
/// current task, slot `n - 1` for Swarm's slot `n`, on the manager `host`.
pub fn instances(host: &str, services: &[ObservedService]) -> Vec<Instance> {
    let mut out = Vec::new();
    for s in services {
        if s.label(labels::KIND) == Some(labels::kind::JOB) {
            continue;
        }
        let label = |k: &str| s.label(k).unwrap_or_default().to_owned();
        for t in s.current_tasks() {
            out.push(Instance {
                id: if t.container_id.is_empty() {
                    t.id.clone()
                } else {
                    t.container_id.clone()
                },
                name: format!("{}.{}", s.name, t.slot.unwrap_or(0)),
                host: host.to_owned(),
                component: label(labels::COMPONENT),
                kind: label(labels::KIND),
                slot: t.slot.map(|n| n.saturating_sub(1) as u32),
                release: s.label(labels::RELEASE).and_then(|r| r.parse().ok()),
                digest: label(labels::DIGEST),
                spec_hash: label(labels::SPEC_HASH),
                image: t.image.clone(),
                health: match t.state.as_str() {
                    "running" => InstanceHealth::Running,
                    "failed" | "rejected" | "shutdown" | "complete" | "orphaned" | "remove" => {
                        InstanceHealth::Stopped(t.state.clone())
                    }
                    _ => InstanceHealth::Restarting,
                },
                endpoint: None,
                address: None,
            });
        }
    }
    out
}

/// The routes `app`'s exposed services should have in the manager's
/// ingress: per slot, the tasks of the service's current spec that take
/// traffic (Swarm runs them, or they are starting and `approved`: Berth's
/// probe through the ingress had an answer from them), or while there is
/// none, the slot's other tasks that run (the old release, until its
/// replacement takes over). `address` gives a task's node address (tasks
/// without one, or not yet published, are left out).
pub fn swarm_routes(
    app: &str,
    components: &[Component],
    services: &[ObservedService],
    approved: &BTreeSet<String>,
    address: &dyn Fn(&ObservedTask) -> Option<String>,
) -> AppRoutes {
    let mut routes = AppRoutes {
        app: app.to_owned(),
        services: BTreeMap::new(),
    };
    for c in components {
        let Some(exposure) = c.exposure.as_ref().filter(|e| e.is_exposed()) else {
            continue;
        };
        let Ok(name) = service_name(app, &c.name) else {
            continue;
        };
        let Some(s) = services.iter().find(|s| s.name == name) else {
            continue;
        };
        let mut by_slot: BTreeMap<u64, Vec<(&ObservedTask, String)>> = BTreeMap::new();
        for t in s.current_tasks() {
            let Some(addr) = address(t) else { continue };
            let Some(port) = t.published_port else {
                continue;
            };
            let routable =
                t.state == "running" || (t.state == "starting" && approved.contains(&t.id));
            if routable {
                by_slot
                    .entry(t.slot.unwrap_or(0))
                    .or_default()
                    .push((t, crate::ingress::routes::join_host_port(&addr, port)));
            }
        }
        let mut servers = Vec::new();
        for (slot, tasks) in by_slot {
            let current = tasks.iter().any(|(t, _)| t.fingerprint == s.fingerprint);
            for (t, address) in tasks {
                if current && t.fingerprint != s.fingerprint {
                    continue;
                }
                servers.push(Server {
                    name: format!("{}.{slot}.{}", s.name, &t.id[..t.id.len().min(12)]),
                    address,
                });
            }
        }
        routes.route(&c.name, exposure, servers);
    }
    routes
}

/// Every difference between `components` at `digest` and the app's Swarm
/// services on the manager `host`, in words.
pub fn service_drift(
    app: &str,
    host: &str,
    components: &[Component],
    digest: &str,
    services: &[ObservedService],
) -> Vec<Drift> {
    let mut out = Vec::new();
    let drift = |service: &str, what: String| Drift::Service {
        service: service.to_owned(),
        host: host.to_owned(),
        what,
    };
    for comp in components {
        let Ok(name) = service_name(app, &comp.name) else {
            continue;
        };
        let Some(s) = services.iter().find(|s| s.name == name) else {
            out.push(drift(&name, "is missing (removed outside Berth?)".into()));
            continue;
        };
        if s.label(labels::DIGEST) != Some(digest) {
            out.push(drift(
                &name,
                format!(
                    "runs {}, expected {digest}",
                    s.label(labels::DIGEST).unwrap_or("an unknown digest")
                ),
            ));
        } else if !s.image.ends_with(&format!("@{digest}")) {
            out.push(drift(
                &name,
                format!(
                    "runs image {} instead of the pinned {digest} (changed by hand?)",
                    s.image
                ),
            ));
        }
        if s.label(labels::SPEC_HASH) != Some(comp.spec_hash.as_str()) {
            out.push(drift(
                &name,
                "was created from a different spec (config drift)".into(),
            ));
        } else if s.label(labels::SWARM_SPEC) != Some(s.fingerprint.as_str()) {
            out.push(drift(
                &name,
                "has a spec changed outside Berth (image, command, env or limits)".into(),
            ));
        }
        let want = u64::from(comp.instances);
        match s.replicas {
            Some(n) if n != want => out.push(drift(
                &name,
                format!("is scaled to {n} replicas, the app wants {want} (scaled by hand?)"),
            )),
            _ => {
                let running = s.current_tasks().filter(|t| t.state == "running").count() as u64;
                if running < want && s.update_state != "updating" {
                    let last = s.failures(None).into_iter().next();
                    out.push(drift(
                        &name,
                        format!(
                            "has {running} of {want} tasks running{}",
                            last.map(|l| format!(" (last failure: {l})"))
                                .unwrap_or_default()
                        ),
                    ));
                }
            }
        }
    }
    for s in services {
        let component = s.label(labels::COMPONENT).unwrap_or_default();
        if s.label(labels::KIND) == Some(labels::kind::JOB) {
            continue;
        }
        if !components.iter().any(|c| c.name == component) {
            out.push(drift(
                &s.name,
                format!("is extra: the app has no component {component:?}"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_fit_swarm() {
        assert_eq!(service_name("shop", "web").unwrap(), "shop-web");
        let long = "a".repeat(60);
        let err = service_name(&long, "web").unwrap_err();
        assert!(err.to_string().contains("64 characters"), "{err}");
    }

    #[test]
    fn the_monitor_window_covers_the_failing_probes() {
        let h = HealthCheck {
            start_period_seconds: 30.0,
            interval_seconds: 5.5,
            timeout_seconds: 0.5,
            unhealthy_threshold: 3,
            ..HealthCheck::default()
        };
        let p = update_policy(Some(&h));
        // Not the start period: Swarm spends it before the task counts as
        // running (start-first waits for healthy).
        assert_eq!(p.monitor, Duration::from_secs(18));
        // Sub-second probes run every 5 s inside a task: the window covers
        // three of those.
        assert_eq!(
            update_policy(Some(&HealthCheck::default())).monitor,
            Duration::from_secs(21)
        );
        assert_eq!(p.parallelism, 1, "never 0: Docker's 0 means all at once");
        assert!(p.start_first && p.rollback_on_failure);
        // No health check: Swarm still watches 5 s.
        assert_eq!(update_policy(None).monitor, MIN_MONITOR);
        let quick = HealthCheck {
            start_period_seconds: 0.0,
            interval_seconds: 0.1,
            timeout_seconds: 0.1,
            unhealthy_threshold: 1,
            ..HealthCheck::default()
        };
        // A tiny one runs every 5 s: one probe and its timeout.
        assert_eq!(swarm_probe_interval(&quick), MIN_SWARM_PROBE_INTERVAL);
        assert_eq!(
            update_policy(Some(&quick)).monitor,
            Duration::from_millis(5100)
        );
    }

    fn target() -> Target {
        let spec: super::super::spec::AppSpec = serde_json::from_value(serde_json::json!({
            "name": "shop",
            "image": "127.0.0.1:5000/berth/demo:v1",
            "env": {"A": "1"},
            "secret_env": {"TOKEN": "s3cret"},
            "services": {"web": {
                "instances": 3,
                "cpus": 0.5,
                "memory_mb": 256,
                "health_check": {"path": "/healthz", "start_period_seconds": 10}
            }},
            "workers": {"queue": {"command": "sleep 1000"}}
        }))
        .unwrap();
        let digest = format!("sha256:{}", "ab".repeat(32));
        Target {
            pinned: format!("127.0.0.1:5000/berth/demo@{digest}"),
            digest,
            spec,
            login: None,
            trigger: "terraform".into(),
        }
    }

    #[test]
    fn a_component_becomes_a_pinned_replicated_service() {
        let t = target();
        let comps = t.spec.components().unwrap();
        let web = comps.iter().find(|c| c.name == "web").unwrap();
        let s = swarm_service(&t, web, 7, "berth", true, None).unwrap();
        assert_eq!(s.name, "shop-web");
        assert_eq!(s.image, t.pinned, "the digest the plan showed, never a tag");
        assert!(s.image.contains("@sha256:"));
        assert_eq!(s.replicas, 3);
        assert_eq!(s.nano_cpus, Some(500_000_000));
        assert_eq!(s.memory_bytes, Some(256 * 1024 * 1024));
        assert_eq!(s.env["TOKEN"], "s3cret");
        assert_eq!(s.env["A"], "1");
        assert_eq!(s.alias, "web.shop");
        assert_eq!(s.http_port, Some(8080));
        assert_eq!(s.labels[labels::RELEASE], "7");
        assert_eq!(s.labels[labels::DIGEST], t.digest);
        assert_eq!(s.labels[labels::TEST], "1");
        assert!(s.update.monitor >= MIN_MONITOR, "{:?}", s.update);
        // No probe config given: no health check in the spec (the runtime
        // always gives one when the component has a health check).
        assert_eq!(s.health, None);
        let probe = ProbeConfig {
            id: "cfg1".into(),
            name: "berth-probe-x".into(),
        };
        let checked = swarm_service(&t, web, 7, "berth", true, Some(&probe)).unwrap();
        let h = checked.health.unwrap();
        assert_eq!((h.port, h.path.as_str()), (8080, "/healthz"));
        assert_eq!(h.start_period, Duration::from_secs(10));
        assert_eq!(h.config_id, "cfg1");
        let queue = comps.iter().find(|c| c.name == "queue").unwrap();
        let q = swarm_service(&t, queue, 7, "berth", false, None).unwrap();
        assert_eq!(q.replicas, 1);
        assert_eq!(q.http_port, None);
        assert!(!q.labels.contains_key(labels::TEST));
        assert_eq!(q.labels[labels::KIND], labels::kind::WORKER);
    }

    #[test]
    fn the_deadline_grows_with_the_batches() {
        let p = update_policy(None);
        assert_eq!(convergence_deadline(1, &p), MIN_MONITOR + DEADLINE_SLACK);
        assert_eq!(
            convergence_deadline(4, &p),
            MIN_MONITOR * 4 + DEADLINE_SLACK
        );
        let two_at_once = UpdatePolicy {
            parallelism: 2,
            ..p.clone()
        };
        assert_eq!(
            convergence_deadline(3, &two_at_once),
            MIN_MONITOR * 2 + DEADLINE_SLACK
        );
        // Zero replicas still gets one window (a scale to zero converges).
        assert_eq!(convergence_deadline(0, &p), MIN_MONITOR + DEADLINE_SLACK);
    }

    fn observed(
        name: &str,
        comp: &str,
        digest: &str,
        spec_hash: &str,
        replicas: u64,
    ) -> ObservedService {
        let fingerprint = "fp1".to_owned();
        let task = |slot: u64, state: &str| crate::docker::swarm::ObservedTask {
            id: format!("task{slot}{state}"),
            service_id: "svc".into(),
            slot: Some(slot),
            node_id: "node".into(),
            state: state.into(),
            desired_state: if state == "running" {
                "running".into()
            } else {
                "shutdown".into()
            },
            message: "started".into(),
            error: if state == "failed" {
                "task: non-zero exit (3)".into()
            } else {
                String::new()
            },
            exit_code: (state == "failed").then_some(3),
            container_id: format!("c{slot}"),
            image: format!("r/demo@{digest}"),
            fingerprint: fingerprint.clone(),
            timestamp: format!("2026-12-01T00:00:0{slot}Z"),
            published_port: None,
        };
        ObservedService {
            id: "svc".into(),
            name: name.into(),
            labels: BTreeMap::from([
                (labels::APP.to_owned(), "shop".to_owned()),
                (labels::COMPONENT.to_owned(), comp.to_owned()),
                (labels::KIND.to_owned(), labels::kind::SERVICE.to_owned()),
                (labels::DIGEST.to_owned(), digest.to_owned()),
                (labels::RELEASE.to_owned(), "4".to_owned()),
                (labels::SPEC_HASH.to_owned(), spec_hash.to_owned()),
                (labels::SWARM_SPEC.to_owned(), fingerprint.clone()),
            ]),
            replicas: Some(replicas),
            image: format!("r/demo@{digest}"),
            fingerprint: fingerprint.clone(),
            update_state: "completed".into(),
            update_message: String::new(),
            tasks: (1..=replicas)
                .map(|n| task(n, "running"))
                .chain([task(9, "failed")])
                .collect(),
        }
    }

    /// A rollout of an exposed service, step by step: the ingress follows
    /// the slot that is being replaced, and never loses a slot.
    #[test]
    fn the_ingress_follows_each_slot_to_its_new_task() {
        let mut spec = target().spec;
        spec.services.get_mut("web").unwrap().public_port = Some(18080);
        let comps: Vec<Component> = spec.components().unwrap();
        let web = comps.iter().find(|c| c.name == "web").unwrap();
        let desired = swarm_service(
            &target(),
            web,
            4,
            SWARM_NETWORK,
            false,
            Some(&ProbeConfig {
                id: "cfg".into(),
                name: "berth-probe-x".into(),
            }),
        )
        .unwrap();
        assert!(desired.publish, "an exposed service publishes its port");
        assert_eq!(desired.health.as_ref().unwrap().hold, Some(SWITCH_HOLD));
        let mut s = observed("shop-web", "web", &target().digest, "h", 2);
        s.fingerprint = "new".into();
        let model = s.tasks[0].clone();
        let task = |id: &str, slot: u64, fp: &str, state: &str, port: Option<u16>| ObservedTask {
            id: format!("{id}000000000000"),
            slot: Some(slot),
            node_id: if id == "far" {
                "n2".into()
            } else {
                "n1".into()
            },
            state: state.into(),
            desired_state: "running".into(),
            fingerprint: fp.into(),
            published_port: port,
            ..model.clone()
        };
        let address = |t: &ObservedTask| match t.node_id.as_str() {
            "n1" => Some("127.0.0.2".to_owned()),
            "n2" => Some("10.0.0.7".to_owned()),
            _ => None,
        };
        let servers = |s: &ObservedService, approved: &[&str]| -> Vec<String> {
            let approved = approved
                .iter()
                .map(|a| format!("{a}000000000000"))
                .collect();
            let routes = swarm_routes("shop", &comps, std::slice::from_ref(s), &approved, &address);
            routes
                .services
                .get("web")
                .map(|r| {
                    r.servers
                        .iter()
                        .map(|s| format!("{} {}", s.name, s.address))
                        .collect()
                })
                .unwrap_or_default()
        };
        // Release 1 runs in both slots, one of them on another node.
        s.tasks = vec![
            task("old1", 1, "old", "running", Some(30001)),
            task("far", 2, "old", "running", Some(30002)),
        ];
        assert_eq!(
            servers(&s, &[]),
            [
                "shop-web.1.old100000000 127.0.0.2:30001",
                "shop-web.2.far000000000 10.0.0.7:30002"
            ]
        );
        // Slot 1's new task starts: not yet published, then published but
        // not yet answering: the old one keeps the slot.
        s.tasks.push(task("new1", 1, "new", "starting", None));
        assert_eq!(servers(&s, &["new1"]).len(), 2);
        s.tasks[2].published_port = Some(30003);
        assert_eq!(
            servers(&s, &[])[0],
            "shop-web.1.old100000000 127.0.0.2:30001"
        );
        // It answers Berth's probe: the slot moves to it, before Swarm
        // calls it healthy (and stops the old one).
        assert_eq!(
            servers(&s, &["new1"]),
            [
                "shop-web.1.new100000000 127.0.0.2:30003",
                "shop-web.2.far000000000 10.0.0.7:30002"
            ]
        );
        // Swarm calls it running: the same, approved or not.
        s.tasks[2].state = "running".into();
        assert_eq!(servers(&s, &[]), servers(&s, &["new1"]));
        // A task on a node whose address is unknown is left out; a service
        // with no routable task has no routes at all.
        s.tasks[1].node_id = "gone".into();
        assert_eq!(
            servers(&s, &[]),
            ["shop-web.1.new100000000 127.0.0.2:30003"]
        );
        s.tasks.clear();
        assert!(servers(&s, &[]).is_empty());
        let none = swarm_routes("shop", &comps, &[s], &BTreeSet::new(), &address);
        assert!(none.services.is_empty());
    }

    #[test]
    fn swarm_drift_in_words() {
        let t = target();
        let comps: Vec<Component> = t
            .spec
            .components()
            .unwrap()
            .into_iter()
            .filter(|c| c.name == "web")
            .collect();
        let web = &comps[0];
        let d = &t.digest;
        let ok = observed("shop-web", "web", d, &web.spec_hash, 3);
        assert!(service_drift("shop", "m", &comps, d, std::slice::from_ref(&ok)).is_empty());

        // The running release read back as instances, slots from 0.
        let inst = instances("m", std::slice::from_ref(&ok));
        assert_eq!(inst.len(), 3, "current tasks only, not the failed one");
        assert_eq!(inst[0].slot, Some(0));
        assert_eq!(inst[0].release, Some(4));
        assert_eq!(inst[0].host, "m");
        assert_eq!(super::super::plan::current_release(&inst), Some(4));

        let words = |s: Vec<ObservedService>| -> Vec<String> {
            service_drift("shop", "m", &comps, d, &s)
                .iter()
                .map(|d| d.to_string())
                .collect()
        };
        assert_eq!(
            words(vec![]),
            vec!["Swarm service shop-web (manager m) is missing (removed outside Berth?)"]
        );
        let mut scaled = ok.clone();
        scaled.replicas = Some(5);
        assert_eq!(
            words(vec![scaled]),
            vec!["Swarm service shop-web (manager m) is scaled to 5 replicas, the app wants 3 (scaled by hand?)"]
        );
        let mut edited = ok.clone();
        edited.fingerprint = "other".into();
        assert!(words(vec![edited])[0].contains("spec changed outside Berth"));
        let mut foreign = ok.clone();
        foreign.image = "r/demo:latest".into();
        assert!(words(vec![foreign])[0].contains("instead of the pinned"));
        let mut moved = ok.clone();
        moved
            .labels
            .insert(labels::DIGEST.into(), "sha256:old".into());
        assert_eq!(
            words(vec![moved]),
            vec![format!(
                "Swarm service shop-web (manager m) runs sha256:old, expected {d}"
            )]
        );
        let mut failing = ok.clone();
        failing.tasks.retain(|t| t.slot != Some(1));
        let w = words(vec![failing]);
        assert!(w[0].contains("has 2 of 3 tasks running"), "{w:?}");
        assert!(w[0].contains("non-zero exit (3), exit code 3"), "{w:?}");
        let extra = observed("shop-old", "old", d, "x", 1);
        assert_eq!(
            words(vec![ok.clone(), extra]),
            vec!["Swarm service shop-old (manager m) is extra: the app has no component \"old\""]
        );
        // A job service is neither an instance nor drift.
        let mut job = observed("shop-pre-deploy-r5", "pre-deploy", d, "x", 1);
        job.labels
            .insert(labels::KIND.into(), labels::kind::JOB.into());
        assert!(words(vec![ok.clone(), job.clone()]).is_empty());
        assert!(instances("m", &[job]).is_empty());
    }
}
