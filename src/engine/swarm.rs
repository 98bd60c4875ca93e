//! The Swarm backend's desired state, pure (issue 13, first part; not wired
//! to a host mode yet): what a component of an app becomes as a Swarm
//! service, in the engine's own terms ([`SwarmService`]), and how Berth
//! supervises Swarm's rolling update of it ([`UpdatePolicy`],
//! [`convergence_deadline`]), as it builds a `ContainerSpec` for the
//! containers backend. `crate::docker::swarm` turns it into Docker's
//! `ServiceSpec`.
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

use std::collections::BTreeMap;
use std::time::Duration;

use super::deploy::{component_alias, Target};
use super::spec::{Component, HealthCheck};
use crate::docker::swarm::{SwarmService, UpdatePolicy};
use crate::labels;

/// Swarm's limit on a service name.
pub const MAX_SERVICE_NAME: usize = 63;

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
    let monitor = match health {
        Some(h) => {
            secs(h.start_period_seconds)
                + secs(h.interval_seconds + h.timeout_seconds) * h.unhealthy_threshold.max(1)
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

/// How long Berth waits for Swarm to converge a rollout of `replicas`
/// tasks before it rolls back itself and says why: every batch's monitor
/// window, plus slack for pulls and scheduling.
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
) -> Result<SwarmService, SwarmSpecError> {
    let app = &target.spec.name;
    let name = service_name(app, &comp.name)?;
    let mut l = BTreeMap::from([
        (labels::MANAGED.to_owned(), labels::MANAGED_VALUE.to_owned()),
        (labels::APP.to_owned(), app.clone()),
        (labels::COMPONENT.to_owned(), comp.name.clone()),
        (labels::KIND.to_owned(), comp.kind.label().to_owned()),
        (labels::DIGEST.to_owned(), target.digest.clone()),
        (labels::RELEASE.to_owned(), release.to_string()),
        (labels::SPEC_HASH.to_owned(), comp.spec_hash.clone()),
    ]);
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
        update: update_policy(comp.health_check.as_ref()),
        stop_grace: super::deploy::STOP_GRACE,
    })
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
    fn the_monitor_window_covers_the_start_period_and_the_failing_probes() {
        let h = HealthCheck {
            start_period_seconds: 30.0,
            interval_seconds: 0.5,
            timeout_seconds: 1.5,
            unhealthy_threshold: 3,
            ..HealthCheck::default()
        };
        let p = update_policy(Some(&h));
        assert_eq!(p.monitor, Duration::from_secs(36));
        assert_eq!(p.parallelism, 1, "never 0: Docker's 0 means all at once");
        assert!(p.start_first && p.rollback_on_failure);
        // No health check, or a tiny one: Swarm still watches 5 s.
        assert_eq!(update_policy(None).monitor, MIN_MONITOR);
        let quick = HealthCheck {
            start_period_seconds: 0.0,
            interval_seconds: 0.1,
            timeout_seconds: 0.1,
            unhealthy_threshold: 1,
            ..HealthCheck::default()
        };
        assert_eq!(update_policy(Some(&quick)).monitor, MIN_MONITOR);
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
        let s = swarm_service(&t, web, 7, "berth", true).unwrap();
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
        assert!(
            s.update.monitor >= Duration::from_secs(10),
            "{:?}",
            s.update
        );
        let queue = comps.iter().find(|c| c.name == "queue").unwrap();
        let q = swarm_service(&t, queue, 7, "berth", false).unwrap();
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
}
