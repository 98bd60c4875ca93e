//! `plan(desired, observed)`: pure. Compares what should run (the spec's
//! components, the digest, the hosts) with the containers that carry
//! Berth's labels, and explains every difference in words. Judged by labels
//! (digest, spec hash, slot, release), never by inspected container fields.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::spec::Component;

/// What the engine knows about one managed container, read from its labels
/// and the host's list call.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub host: String,
    pub component: String,
    pub kind: String,
    pub slot: Option<u32>,
    pub release: Option<u64>,
    pub digest: String,
    pub spec_hash: String,
    /// What the container runs, as the host reports it.
    pub image: String,
    pub health: InstanceHealth,
    /// Host address:port of the published HTTP port, for services.
    pub endpoint: Option<String>,
}

/// The container's condition as far as drift is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceHealth {
    Running,
    Restarting,
    Stopped(String),
}

/// Where one desired instance goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    pub component: String,
    pub slot: u32,
    pub host: String,
}

/// Instances of every component spread over the hosts: slot `i` of a
/// component goes to host `i mod n` (hosts in name order), so two instances
/// on two hosts land one on each.
pub fn placement(components: &[Component], hosts: &[String]) -> Vec<Slot> {
    let mut hosts: Vec<&String> = hosts.iter().collect();
    hosts.sort();
    let mut out = Vec::new();
    if hosts.is_empty() {
        return out;
    }
    for c in components {
        for i in 0..c.instances {
            out.push(Slot {
                component: c.name.clone(),
                slot: i,
                host: hosts[i as usize % hosts.len()].clone(),
            });
        }
    }
    out
}

/// One difference between desired and observed, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    Missing {
        component: String,
        slot: u32,
        host: String,
    },
    Stopped {
        name: String,
        host: String,
        status: String,
    },
    CrashLooping {
        name: String,
        host: String,
    },
    ForeignImage {
        name: String,
        host: String,
        image: String,
        expected: String,
    },
    WrongDigest {
        name: String,
        host: String,
        digest: String,
        expected: String,
    },
    SpecChanged {
        name: String,
        host: String,
    },
    Extra {
        name: String,
        host: String,
        why: String,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Missing {
                component,
                slot,
                host,
            } => write!(
                f,
                "instance {component}#{slot} is missing on host {host} (removed outside Berth?)"
            ),
            Drift::Stopped { name, host, status } => {
                write!(
                    f,
                    "container {name} on host {host} is not running ({status})"
                )
            }
            Drift::CrashLooping { name, host } => write!(
                f,
                "container {name} on host {host} is crash-looping (restarting)"
            ),
            Drift::ForeignImage {
                name,
                host,
                image,
                expected,
            } => write!(
                f,
                "container {name} on host {host} runs a foreign image {image} instead of {expected}"
            ),
            Drift::WrongDigest {
                name,
                host,
                digest,
                expected,
            } => write!(
                f,
                "container {name} on host {host} runs {digest}, expected {expected}"
            ),
            Drift::SpecChanged { name, host } => write!(
                f,
                "container {name} on host {host} was created from a different spec (config drift)"
            ),
            Drift::Extra { name, host, why } => {
                write!(
                    f,
                    "extra container {name} on host {host} carries Berth's labels ({why})"
                )
            }
        }
    }
}

/// What the engine must do to make observed match desired.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    /// True when a new release is needed (new digest or changed spec, or
    /// nothing runs yet): pre-deploy job, then every instance starts fresh.
    pub new_release: bool,
    /// Slots to start (all of them for a new release; missing or broken
    /// ones for a repair; added ones for a scale-up).
    pub start: Vec<Slot>,
    /// Containers that stay as they are.
    pub keep: Vec<Instance>,
    /// Containers to stop and remove once the started ones are healthy.
    pub remove: Vec<Instance>,
    /// The release the app runs now, if any.
    pub current_release: Option<u64>,
    /// Why, in words, one line per step.
    pub reasons: Vec<String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        !self.new_release && self.start.is_empty() && self.remove.is_empty()
    }
}

/// The release the app currently runs: the newest release among running
/// containers, else the newest of any.
pub fn current_release(observed: &[Instance]) -> Option<u64> {
    observed
        .iter()
        .filter(|i| i.health == InstanceHealth::Running)
        .filter_map(|i| i.release)
        .max()
        .or_else(|| observed.iter().filter_map(|i| i.release).max())
}

/// Differences between desired and observed, in words. `observed` holds the
/// app's containers on every host.
pub fn drift(
    components: &[Component],
    digest: &str,
    hosts: &[String],
    observed: &[Instance],
) -> Vec<Drift> {
    let release = current_release(observed);
    let desired = placement(components, hosts);
    let hashes: BTreeMap<&str, &str> = components
        .iter()
        .map(|c| (c.name.as_str(), c.spec_hash.as_str()))
        .collect();
    let mut matched = BTreeSet::new();
    let mut out = Vec::new();
    for slot in &desired {
        let found = observed.iter().find(|i| {
            i.component == slot.component && i.slot == Some(slot.slot) && i.release == release
        });
        let Some(inst) = found else {
            out.push(Drift::Missing {
                component: slot.component.clone(),
                slot: slot.slot,
                host: slot.host.clone(),
            });
            continue;
        };
        matched.insert(inst.id.clone());
        out.extend(instance_drift(
            inst,
            digest,
            hashes.get(inst.component.as_str()).copied(),
        ));
    }
    for inst in observed.iter().filter(|i| !matched.contains(&i.id)) {
        let why = if !hashes.contains_key(inst.component.as_str()) {
            format!("no component {:?} in the app", inst.component)
        } else if inst.release != release {
            format!(
                "left from release {}",
                inst.release
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "?".into())
            )
        } else {
            "more instances than configured".to_string()
        };
        out.push(Drift::Extra {
            name: inst.name.clone(),
            host: inst.host.clone(),
            why,
        });
    }
    out
}

fn instance_drift(inst: &Instance, digest: &str, spec_hash: Option<&str>) -> Vec<Drift> {
    let mut out = Vec::new();
    match &inst.health {
        InstanceHealth::Running => {}
        InstanceHealth::Restarting => out.push(Drift::CrashLooping {
            name: inst.name.clone(),
            host: inst.host.clone(),
        }),
        InstanceHealth::Stopped(status) => out.push(Drift::Stopped {
            name: inst.name.clone(),
            host: inst.host.clone(),
            status: status.clone(),
        }),
    }
    if !inst.image.contains(digest) && !inst.image.starts_with("sha256:") {
        out.push(Drift::ForeignImage {
            name: inst.name.clone(),
            host: inst.host.clone(),
            image: inst.image.clone(),
            expected: digest.to_string(),
        });
    } else if inst.digest != digest {
        out.push(Drift::WrongDigest {
            name: inst.name.clone(),
            host: inst.host.clone(),
            digest: inst.digest.clone(),
            expected: digest.to_string(),
        });
    }
    if spec_hash.is_some_and(|h| h != inst.spec_hash) {
        out.push(Drift::SpecChanged {
            name: inst.name.clone(),
            host: inst.host.clone(),
        });
    }
    out
}

/// The steps that converge observed onto desired.
pub fn plan(
    components: &[Component],
    digest: &str,
    hosts: &[String],
    observed: &[Instance],
) -> Plan {
    let current = current_release(observed);
    let desired = placement(components, hosts);
    let hashes: BTreeMap<&str, &str> = components
        .iter()
        .map(|c| (c.name.as_str(), c.spec_hash.as_str()))
        .collect();
    let live: Vec<&Instance> = observed.iter().filter(|i| i.release == current).collect();

    let mut reasons = Vec::new();
    let running_digests: BTreeSet<&str> = live.iter().map(|i| i.digest.as_str()).collect();
    let digest_changed = !live.is_empty() && !running_digests.iter().all(|d| *d == digest);
    let spec_changed = components.iter().any(|c| {
        live.iter()
            .any(|i| i.component == c.name && i.spec_hash != c.spec_hash)
    });
    let new_components: Vec<&str> = components
        .iter()
        .filter(|c| c.instances > 0 && !live.iter().any(|i| i.component == c.name))
        .map(|c| c.name.as_str())
        .collect();
    let new_release = live.is_empty() || digest_changed || spec_changed;

    if new_release {
        if live.is_empty() {
            reasons.push(format!("first release: deploy {digest}"));
        } else if digest_changed {
            let was: Vec<&str> = running_digests.into_iter().collect();
            reasons.push(format!(
                "new release: image {digest} (was {})",
                was.join(", ")
            ));
        }
        if spec_changed {
            reasons.push("new release: the spec of a component changed".to_string());
        }
        return Plan {
            new_release: true,
            start: desired,
            keep: vec![],
            remove: observed.to_vec(),
            current_release: current,
            reasons,
        };
    }

    let mut plan = Plan {
        current_release: current,
        ..Plan::default()
    };
    let mut matched = BTreeSet::new();
    for slot in &desired {
        let found = live
            .iter()
            .find(|i| i.component == slot.component && i.slot == Some(slot.slot));
        match found {
            Some(inst) => {
                matched.insert(inst.id.clone());
                let problems =
                    instance_drift(inst, digest, hashes.get(inst.component.as_str()).copied());
                if problems.is_empty() {
                    plan.keep.push((*inst).clone());
                } else {
                    for p in problems {
                        plan.reasons.push(format!("repair: {p}"));
                    }
                    plan.start.push(slot.clone());
                    plan.remove.push((*inst).clone());
                }
            }
            None => {
                if new_components.contains(&slot.component.as_str()) {
                    plan.reasons.push(format!(
                        "start {}#{} on host {}",
                        slot.component, slot.slot, slot.host
                    ));
                } else {
                    plan.reasons.push(format!(
                        "repair or scale up: instance {}#{} on host {} does not exist",
                        slot.component, slot.slot, slot.host
                    ));
                }
                plan.start.push(slot.clone());
            }
        }
    }
    for inst in observed.iter().filter(|i| !matched.contains(&i.id)) {
        if plan.remove.iter().any(|r| r.id == inst.id) {
            continue;
        }
        plan.reasons.push(format!(
            "remove {} on host {} (not part of the desired state)",
            inst.name, inst.host
        ));
        plan.remove.push(inst.clone());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::spec::AppSpec;

    fn comps(instances: u32) -> Vec<Component> {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "name": "shop", "image": "r/x:1",
            "services": {"web": {"instances": instances}}
        }))
        .unwrap();
        spec.components().unwrap()
    }

    fn inst(id: &str, slot: u32, host: &str, release: u64, digest: &str, hash: &str) -> Instance {
        Instance {
            id: id.into(),
            name: format!("shop-web-{slot}-{id}"),
            host: host.into(),
            component: "web".into(),
            kind: "service".into(),
            slot: Some(slot),
            release: Some(release),
            digest: digest.into(),
            spec_hash: hash.into(),
            image: format!("r/x@{digest}"),
            health: InstanceHealth::Running,
            endpoint: Some(format!("127.0.0.1:{}", 30000 + slot)),
        }
    }

    fn hosts() -> Vec<String> {
        vec!["b".into(), "a".into()]
    }

    #[test]
    fn placement_spreads_over_hosts() {
        let p = placement(&comps(3), &hosts());
        let on: Vec<&str> = p.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(on, vec!["a", "b", "a"]);
    }

    #[test]
    fn first_deploy_is_a_new_release() {
        let p = plan(&comps(2), "sha256:1", &hosts(), &[]);
        assert!(p.new_release);
        assert_eq!(p.start.len(), 2);
        assert!(p.reasons[0].contains("first release"));
    }

    #[test]
    fn converged_app_plans_nothing_and_has_no_drift() {
        let c = comps(2);
        let h = c[0].spec_hash.clone();
        let obs = vec![
            inst("1", 0, "a", 3, "sha256:1", &h),
            inst("2", 1, "b", 3, "sha256:1", &h),
        ];
        assert!(plan(&c, "sha256:1", &hosts(), &obs).is_noop());
        assert!(drift(&c, "sha256:1", &hosts(), &obs).is_empty());
    }

    #[test]
    fn moved_digest_is_a_new_release_replacing_everything() {
        let c = comps(2);
        let h = c[0].spec_hash.clone();
        let obs = vec![
            inst("1", 0, "a", 3, "sha256:1", &h),
            inst("2", 1, "b", 3, "sha256:1", &h),
        ];
        let p = plan(&c, "sha256:2", &hosts(), &obs);
        assert!(p.new_release);
        assert_eq!(p.remove.len(), 2);
        assert!(p.reasons[0].contains("sha256:2") && p.reasons[0].contains("was sha256:1"));
    }

    #[test]
    fn scaling_is_not_a_new_release() {
        let c = comps(3);
        let h = c[0].spec_hash.clone();
        let obs = vec![
            inst("1", 0, "a", 3, "sha256:1", &h),
            inst("2", 1, "b", 3, "sha256:1", &h),
        ];
        let p = plan(&c, "sha256:1", &hosts(), &obs);
        assert!(!p.new_release);
        assert_eq!(
            p.start,
            vec![Slot {
                component: "web".into(),
                slot: 2,
                host: "a".into()
            }]
        );
        assert!(p.remove.is_empty());
        let down = plan(&comps(1), "sha256:1", &hosts(), &obs);
        assert!(!down.new_release);
        assert_eq!(down.remove.len(), 1);
        assert_eq!(down.remove[0].slot, Some(1));
    }

    #[test]
    fn drift_names_missing_stopped_crashing_foreign_and_extra() {
        let c = comps(3);
        let h = c[0].spec_hash.clone();
        let mut stopped = inst("2", 1, "b", 3, "sha256:1", &h);
        stopped.health = InstanceHealth::Stopped("Exited (137) 2 seconds ago".into());
        let mut foreign = inst("3", 2, "a", 3, "sha256:1", &h);
        foreign.image = "nginx:latest".into();
        let mut crash = inst("4", 0, "a", 3, "sha256:1", &h);
        crash.health = InstanceHealth::Restarting;
        let extra = inst("5", 7, "b", 3, "sha256:1", &h);
        let obs = vec![crash, stopped, foreign, extra];
        let words: Vec<String> = drift(&c, "sha256:1", &hosts(), &obs)
            .iter()
            .map(|d| d.to_string())
            .collect();
        let all = words.join("\n");
        assert!(all.contains("crash-looping"), "{all}");
        assert!(all.contains("not running (Exited (137)"), "{all}");
        assert!(all.contains("foreign image nginx:latest"), "{all}");
        assert!(all.contains("extra container shop-web-7-5"), "{all}");
        let p = plan(&c, "sha256:1", &hosts(), &obs);
        assert!(!p.new_release);
        assert_eq!(p.start.len(), 3, "{p:?}");
        assert_eq!(p.remove.len(), 4);
    }

    #[test]
    fn missing_instance_is_drift_and_repaired() {
        let c = comps(2);
        let h = c[0].spec_hash.clone();
        let obs = vec![inst("1", 0, "a", 3, "sha256:1", &h)];
        let d = drift(&c, "sha256:1", &hosts(), &obs);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].to_string().contains("web#1 is missing on host b"),
            "{}",
            d[0]
        );
        let p = plan(&c, "sha256:1", &hosts(), &obs);
        assert_eq!(p.start.len(), 1);
    }

    #[test]
    fn changed_spec_is_config_drift_and_a_new_release() {
        let c = comps(1);
        let obs = vec![inst("1", 0, "a", 3, "sha256:1", "other")];
        let d = drift(&c, "sha256:1", &hosts(), &obs);
        assert!(d[0].to_string().contains("different spec"));
        assert!(plan(&c, "sha256:1", &hosts(), &obs).new_release);
    }
}
