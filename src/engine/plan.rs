//! `plan(desired, observed)`: pure. Compares what should run (the spec's
//! components, the digest, the hosts) with the containers that carry
//! Berth's labels, and explains every difference in words. Judged by labels
//! (digest, spec hash, slot, release), never by inspected container fields.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::spec::Component;
use crate::ingress::{haproxy, AppRoutes, IngressView, Server};
use crate::labels;

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
    /// The container's address on Berth's network, while it runs (where
    /// the ingress sends its requests).
    pub address: Option<String>,
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
    /// The host runs exposed instances but has no ingress container.
    IngressMissing {
        host: String,
    },
    IngressNotRunning {
        host: String,
        status: String,
    },
    /// The ingress was created from another image than configured.
    IngressImage {
        host: String,
        image: String,
        expected: String,
    },
    /// The ingress configuration is not what Berth wrote (edited by hand).
    IngressEdited {
        host: String,
    },
    /// The app's routes on the host are not what they should be.
    RoutesStale {
        host: String,
        detail: String,
    },
    /// The host serves domains over HTTPS but its HTTPS front is missing
    /// or not running.
    TlsFront {
        host: String,
        status: String,
    },
    /// A Swarm service of the app differs from what Berth deployed.
    Service {
        service: String,
        /// Berth's name for the Swarm manager.
        host: String,
        what: String,
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
            Drift::IngressMissing { host } => write!(
                f,
                "the ingress is missing on host {host} (removed outside Berth?): the app's public ports and domains do not answer there"
            ),
            Drift::IngressNotRunning { host, status } => {
                write!(f, "the ingress on host {host} is not running ({status})")
            }
            Drift::IngressImage {
                host,
                image,
                expected,
            } => write!(
                f,
                "the ingress on host {host} runs image {image} instead of the configured {expected}"
            ),
            Drift::IngressEdited { host } => write!(
                f,
                "the ingress configuration on host {host} differs from what Berth wrote (edited by hand?)"
            ),
            Drift::RoutesStale { host, detail } => {
                write!(f, "the ingress on host {host} {detail}")
            }
            Drift::TlsFront { host, status } => write!(
                f,
                "the HTTPS front of the ingress on host {host} is {status}: the app's domains do not answer over HTTPS there"
            ),
            Drift::Service {
                service,
                host,
                what,
            } => write!(f, "Swarm service {service} (manager {host}) {what}"),
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

/// The routes `app` should have on `host`, sending each exposed
/// component's requests to the `serving` instances there (the running
/// instances of the release that takes traffic). Services with no such
/// instance on the host are left out; an app with none at all has empty
/// routes (nothing on that host).
pub fn desired_routes(
    app: &str,
    components: &[Component],
    serving: &[&Instance],
    host: &str,
) -> AppRoutes {
    let mut routes = AppRoutes {
        app: app.to_owned(),
        services: BTreeMap::new(),
    };
    for c in components {
        let Some(exposure) = &c.exposure else {
            continue;
        };
        let servers: Vec<Server> = serving
            .iter()
            .filter(|i| i.host == host && i.component == c.name)
            .filter_map(|i| {
                Some(Server {
                    name: i.name.clone(),
                    address: format!("{}:{}", i.address.as_deref()?, exposure.http_port),
                })
            })
            .collect();
        routes.route(&c.name, exposure, servers);
    }
    routes
}

/// The instances that take traffic now: the running ones of the current
/// release.
pub fn serving(observed: &[Instance]) -> Vec<&Instance> {
    let current = current_release(observed);
    observed
        .iter()
        .filter(|i| {
            i.kind == labels::kind::SERVICE
                && i.release == current
                && i.health == InstanceHealth::Running
        })
        .collect()
}

/// One host's ingress as the drift check needs it: what runs there, what
/// its configuration should be for the routes it holds, and the images it
/// should run.
pub struct IngressState<'a> {
    pub host: &'a str,
    pub view: &'a IngressView,
    /// The proxy configuration the held routes render to.
    pub rendered: String,
    /// Whether the held routes need an HTTPS front.
    pub needs_tls: bool,
    /// The configured proxy image.
    pub image: &'a str,
}

/// Differences between the app's routes and the ingress of each host, in
/// words: a missing or stopped ingress where exposed instances run, one
/// made from another image, a configuration edited by hand, and routes
/// that do not send the app's requests to the instances that serve.
pub fn ingress_drift(
    app: &str,
    components: &[Component],
    observed: &[Instance],
    hosts: &[IngressState],
) -> Vec<Drift> {
    let serving = serving(observed);
    ingress_drift_to(app, hosts, &|host| {
        desired_routes(app, components, &serving, host)
    })
}

/// [`ingress_drift`] against the routes `desired` gives for each host (the
/// Swarm backend's come from its tasks, see `swarm::swarm_routes`).
pub fn ingress_drift_to(
    app: &str,
    hosts: &[IngressState],
    desired: &dyn Fn(&str) -> AppRoutes,
) -> Vec<Drift> {
    let mut out = Vec::new();
    for state in hosts {
        let host = state.host.to_owned();
        let desired = desired(state.host);
        let held = state.view.routes.get(app);
        let wanted_here = !desired.services.is_empty();
        if !wanted_here && held.is_none() {
            continue;
        }
        match &state.view.proxy {
            None => {
                if wanted_here {
                    out.push(Drift::IngressMissing { host });
                }
                continue;
            }
            Some(proxy) => {
                if !proxy.state.is_running() {
                    out.push(Drift::IngressNotRunning {
                        host: host.clone(),
                        status: proxy.status.clone(),
                    });
                }
                if proxy.label(labels::IMAGE_REF) != Some(state.image) {
                    out.push(Drift::IngressImage {
                        host: host.clone(),
                        image: proxy
                            .label(labels::IMAGE_REF)
                            .unwrap_or(&proxy.image)
                            .to_owned(),
                        expected: state.image.to_owned(),
                    });
                }
            }
        }
        let own = held.unwrap_or(&desired);
        let written = state.view.haproxy_cfg.as_deref().unwrap_or("");
        if haproxy::app_sections(written, app, own)
            != haproxy::app_sections(&state.rendered, app, own)
            || state.view.unreadable
        {
            out.push(Drift::IngressEdited { host: host.clone() });
        }
        if state.needs_tls {
            match &state.view.tls {
                None => out.push(Drift::TlsFront {
                    host: host.clone(),
                    status: "missing".into(),
                }),
                Some(tls) if !tls.state.is_running() => out.push(Drift::TlsFront {
                    host: host.clone(),
                    status: format!("not running ({})", tls.status),
                }),
                Some(_) => {}
            }
        }
        if let Some(detail) = routes_difference(held, &desired) {
            out.push(Drift::RoutesStale { host, detail });
        }
    }
    out
}

/// What differs between the routes held and the routes wanted, in words.
pub(super) fn routes_difference(held: Option<&AppRoutes>, desired: &AppRoutes) -> Option<String> {
    let empty = AppRoutes {
        app: desired.app.clone(),
        services: BTreeMap::new(),
    };
    let held = held.unwrap_or(&empty);
    if held == desired {
        return None;
    }
    let mut words = Vec::new();
    for (name, want) in &desired.services {
        match held.services.get(name) {
            None => words.push(format!("does not route service {name:?}")),
            Some(have) if have.exposure != want.exposure => {
                words.push(format!("routes service {name:?} with other settings"))
            }
            Some(have) if have.servers != want.servers => words.push(format!(
                "sends service {name:?} to {} instead of {}",
                servers_words(&have.servers),
                servers_words(&want.servers)
            )),
            Some(_) => {}
        }
    }
    for name in held.services.keys() {
        if !desired.services.contains_key(name) {
            words.push(format!(
                "still routes service {name:?}, which has no instance there"
            ));
        }
    }
    if words.is_empty() {
        words.push("holds other routes for the app".into());
    }
    Some(words.join("; "))
}

fn servers_words(servers: &[Server]) -> String {
    if servers.is_empty() {
        "no instance".into()
    } else {
        servers
            .iter()
            .map(|s| format!("{} ({})", s.name, s.address))
            .collect::<Vec<_>>()
            .join(", ")
    }
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
            address: Some(format!("10.9.0.{}", 130 + slot)),
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

    fn exposed(instances: u32) -> Vec<Component> {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "name": "shop", "image": "r/x:1",
            "services": {"web": {"instances": instances, "public_port": 18080}}
        }))
        .unwrap();
        spec.components().unwrap()
    }

    #[test]
    fn desired_routes_send_each_host_to_its_own_instances() {
        let c = exposed(2);
        let h = c[0].spec_hash.clone();
        let obs = vec![
            inst("1", 0, "a", 3, "sha256:1", &h),
            inst("2", 1, "b", 3, "sha256:1", &h),
        ];
        let serving = serving(&obs);
        let a = desired_routes("shop", &c, &serving, "a");
        let servers = &a.services["web"].servers;
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].address, "10.9.0.130:8080");
        assert!(desired_routes("shop", &c, &serving, "nowhere")
            .services
            .is_empty());
        // Private services are never routed.
        assert!(desired_routes("shop", &comps(2), &serving, "a")
            .services
            .is_empty());
    }

    #[test]
    fn ingress_drift_in_words() {
        let c = exposed(1);
        let h = c[0].spec_hash.clone();
        let obs = vec![inst("1", 0, "a", 3, "sha256:1", &h)];
        let serving = serving(&obs);
        let mut view = IngressView::default();
        let rendered = "frontend port_18080\n  bind x\nbackend be_shop_web\n  server a\n";
        fn state<'a>(view: &'a IngressView, rendered: &str) -> Vec<IngressState<'a>> {
            vec![IngressState {
                host: "a",
                view,
                rendered: rendered.into(),
                needs_tls: false,
                image: "haproxy:3.0",
            }]
        }
        let d = ingress_drift("shop", &c, &obs, &state(&view, rendered));
        assert_eq!(d, vec![Drift::IngressMissing { host: "a".into() }]);

        let proxy = crate::docker::Observed {
            id: "p".into(),
            name: "berth-ingress".into(),
            labels: [(labels::IMAGE_REF.to_string(), "haproxy:3.0".to_string())].into(),
            state: crate::docker::ContainerState::Running,
            status: "Up".into(),
            image: "haproxy@sha256:1".into(),
            published: vec![],
            networks: BTreeMap::new(),
        };
        view.proxy = Some(proxy);
        // Another app's sections may differ: not this app's drift.
        view.haproxy_cfg = Some(format!("{rendered}backend be_blog_web\n  server b\n"));
        view.routes
            .insert("shop".into(), desired_routes("shop", &c, &serving, "a"));
        assert!(ingress_drift("shop", &c, &obs, &state(&view, rendered)).is_empty());

        view.haproxy_cfg = Some(rendered.replace("server a", "server edited"));
        view.routes
            .get_mut("shop")
            .unwrap()
            .services
            .get_mut("web")
            .unwrap()
            .servers[0]
            .address = "10.9.0.9:8080".into();
        let words: Vec<String> = ingress_drift("shop", &c, &obs, &state(&view, rendered))
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(words.len(), 2, "{words:?}");
        assert!(words[0].contains("edited by hand"), "{words:?}");
        assert!(words[1].contains("sends service \"web\" to shop-web-0-1 (10.9.0.9:8080) instead of shop-web-0-1 (10.9.0.130:8080)"), "{words:?}");
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
