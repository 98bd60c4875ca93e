//! The Swarm backend's steps (host `mode = "swarm"`): observe the app's
//! services, deploy a release through Swarm's rolling update supervised by
//! Berth, run the pre-deploy command as a one-off job on the cluster, and
//! destroy. The same lease, journal and phases as on hosts; placement is
//! Swarm's.
//!
//! A rollout, per component, one after the other:
//! 1. create the service, or update it (the whole spec at its version);
//!    Swarm starts each new task first and, with a health check, waits for
//!    Berth's probe (mounted from a Swarm config) to pass before it stops an
//!    old one;
//! 2. Berth watches until every replica runs the new image and Swarm calls
//!    the update completed, within [`convergence_deadline`]; a rollback
//!    that Swarm started itself (a task failed in its monitor window), a
//!    crash loop of a new service, or the deadline ends the watch;
//! 3. on failure Berth copies the failing tasks' errors and the service's
//!    last log lines first, then rolls back what it changed in this deploy
//!    (Swarm's `rollback` to the previous spec for updated services, removal
//!    for created ones) and waits for that to settle, then reports it all.
//!
//! With `public_port` or `domains`, the manager's ingress follows the
//! rollout ([`Engine::follow_routes`] at every poll): a new task is probed
//! through the ingress while Swarm holds it "starting" (see
//! `swarm::SWITCH_HOLD`), its slot's requests move to it as soon as it
//! answers, and the old task of the slot is out of the routes before Swarm
//! stops it. The routes end on the tasks that run (after a rollback too).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::deploy::{
    ms, public_spec_json, DeployError, Engine, Outcome, Phase, Target, PRE_DEPLOY_TIMEOUT,
};
use super::plan::Instance;
use super::spec::Component;
use super::swarm::{
    convergence_deadline, instances, service_drift, service_name, swarm_routes, swarm_service,
    ProbeConfig, SWARM_NETWORK,
};
use crate::docker::swarm::{probe_config_name, service_spec, ObservedService, PROBE_BINARY};
use crate::docker::{DockerError, DockerHost};
use crate::ingress::{AppRoutes, IngressHost};
use crate::labels;
use crate::store::{LeaseFence, ReleaseOutcome};

/// How often a rollout or a job is looked at.
const POLL: Duration = Duration::from_millis(300);
/// Failed tasks of a new service that make a crash loop.
const CRASH_LOOP_TASKS: usize = 3;
/// Log lines copied from a failing service.
const LOG_LINES: usize = 20;
/// The longest a probe of a starting task through the ingress may take
/// (the next poll probes it again).
const FOLLOW_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One service's rollout as Berth watches it.
struct Watched<'a> {
    name: &'a str,
    /// [`crate::docker::swarm::spec_fingerprint`] of the new spec.
    fingerprint: &'a str,
    replicas: u64,
    /// How long Swarm may make no progress.
    deadline: Duration,
    /// The service was created by this deploy (a crash loop fails it).
    created: bool,
}

/// The manager's ingress following an app's tasks during a deploy.
struct Follow<'a> {
    app: &'a str,
    components: &'a [Component],
    /// Starting tasks that answered Berth's probe through the ingress.
    approved: BTreeSet<String>,
    /// The routes last given to the ingress in this deploy.
    last: Option<AppRoutes>,
    /// Node id → address (see `DockerHost::swarm_node_addresses`).
    nodes: Arc<HashMap<String, String>>,
    /// What switching did, in words.
    steps: Vec<String>,
}

impl<'a> Follow<'a> {
    fn new(app: &'a str, components: &'a [Component]) -> Self {
        Follow {
            app,
            components,
            approved: BTreeSet::new(),
            last: None,
            nodes: Arc::default(),
            steps: Vec::new(),
        }
    }
}

fn exposed(components: &[Component]) -> bool {
    components
        .iter()
        .any(|c| c.exposure.as_ref().is_some_and(|e| e.is_exposed()))
}

/// Whether a probe's status line is a 2xx or 3xx answer.
fn answered_well(status_line: &str) -> bool {
    status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.len() == 3 && (code.starts_with('2') || code.starts_with('3')))
}

/// What went wrong in one service's rollout.
struct RollFailure {
    reason: String,
    tasks: Vec<String>,
    log_tail: Vec<String>,
    /// Swarm rolled back by itself.
    swarm_rolled_back: bool,
}

/// What a rollout did to a service, to undo it.
enum Changed {
    Created(String),
    Updated(String),
}

fn docker(phase: Phase) -> impl Fn(DockerError) -> DeployError {
    move |source| DeployError::Docker { phase, source }
}

impl Engine {
    /// The Swarm manager, when the configured host is one.
    pub fn swarm_manager(&self) -> Option<&DockerHost> {
        self.hosts.swarm()
    }

    /// Every managed service of the manager (with tasks), from the short
    /// cache: one list of services and one of tasks per refresh, however
    /// many apps.
    async fn swarm_list(
        &self,
        manager: &DockerHost,
    ) -> Result<Arc<Vec<ObservedService>>, DockerError> {
        let mut cache = self.swarm_cache.lock().await;
        if let Some((at, list)) = cache.as_ref() {
            if at.elapsed() < super::deploy::LIST_TTL {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(manager.list_managed_services().await?);
        *cache = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// The swarm's node addresses (see `DockerHost::swarm_node_addresses`),
    /// from the short cache unless `fresh`: one read per refresh, however
    /// many exposed apps.
    async fn swarm_nodes(
        &self,
        manager: &DockerHost,
        fresh: bool,
    ) -> Result<Arc<HashMap<String, String>>, DockerError> {
        let mut cache = self.swarm_nodes.lock().await;
        if let Some((at, nodes)) = cache.as_ref() {
            if !fresh && at.elapsed() < super::deploy::LIST_TTL {
                return Ok(nodes.clone());
            }
        }
        let nodes = Arc::new(manager.swarm_node_addresses().await?);
        *cache = Some((Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// The app's services on the manager: from the short cache of every
    /// app's unless `fresh`, when only the app's own are asked for (a
    /// deploy watches its services every poll; listing the whole swarm
    /// each time made ten deploys at once on a hundred services slow the
    /// daemon for all of them).
    pub async fn swarm_services(
        &self,
        manager: &DockerHost,
        app: &str,
        fresh: bool,
    ) -> Result<Vec<ObservedService>, DockerError> {
        if fresh {
            return manager.app_services(app).await;
        }
        Ok(self
            .swarm_list(manager)
            .await?
            .iter()
            .filter(|s| s.label(labels::APP) == Some(app))
            .cloned()
            .collect())
    }

    /// The app's current tasks as instances.
    pub(super) async fn observe_swarm(
        &self,
        manager: &DockerHost,
        app: &str,
        fresh: bool,
    ) -> Result<Vec<Instance>, DockerError> {
        let services = self.swarm_services(manager, app, fresh).await?;
        Ok(instances(manager.name(), &services))
    }

    /// The app's Swarm drift, in words.
    pub async fn swarm_drift(
        &self,
        manager: &DockerHost,
        app: &str,
        components: &[Component],
        digest: &str,
        fresh: bool,
    ) -> Result<Vec<super::plan::Drift>, DockerError> {
        let services = self.swarm_services(manager, app, fresh).await?;
        let mut drift = service_drift(app, manager.name(), components, digest, &services);
        let nodes = if exposed(components) {
            self.swarm_nodes(manager, fresh).await?
        } else {
            Arc::default()
        };
        let approved = BTreeSet::new();
        let desired = |_: &str| {
            swarm_routes(app, components, &services, &approved, &|t| {
                nodes.get(&t.node_id).cloned()
            })
        };
        drift.extend(
            self.ingress_drift_to(app, components, fresh, &desired)
                .await?,
        );
        Ok(drift)
    }

    /// Gives the manager's ingress the routes of the app's tasks as they
    /// are now ([`swarm_routes`]), after probing through it the starting
    /// tasks of a new spec that publish their port; switches only when
    /// the routes differ from the last ones given.
    async fn follow_routes(
        &self,
        manager: &DockerHost,
        f: &mut Follow<'_>,
    ) -> Result<(), DeployError> {
        let services = self
            .swarm_services(manager, f.app, true)
            .await
            .map_err(docker(Phase::Switch))?;
        let unknown_node = services
            .iter()
            .flat_map(|s| s.current_tasks())
            .any(|t| t.published_port.is_some() && !f.nodes.contains_key(&t.node_id));
        if unknown_node {
            f.nodes = self
                .swarm_nodes(manager, true)
                .await
                .map_err(docker(Phase::Switch))?;
        }
        let mut candidates = Vec::new();
        for c in f.components {
            let Ok(name) = service_name(f.app, &c.name) else {
                continue;
            };
            let (Some(_), Some(health)) = (
                c.exposure.as_ref().filter(|e| e.is_exposed()),
                c.health_check.as_ref(),
            ) else {
                continue;
            };
            let Some(s) = services.iter().find(|s| s.name == name) else {
                continue;
            };
            for t in s.current_tasks() {
                if t.state != "starting"
                    || t.fingerprint != s.fingerprint
                    || f.approved.contains(&t.id)
                {
                    continue;
                }
                let (Some(port), Some(addr)) = (t.published_port, f.nodes.get(&t.node_id)) else {
                    continue;
                };
                candidates.push((
                    t.id.clone(),
                    crate::ingress::routes::join_host_port(addr, port),
                    health.path.clone(),
                ));
            }
        }
        if !candidates.is_empty() {
            let (proxy, steps) = self.ingress_ready(manager).await?;
            f.steps.extend(steps);
            let ingress = IngressHost::new(manager, &self.ingress, self.test_label);
            for (id, address, path) in candidates {
                match ingress
                    .probe(&proxy, &address, &path, FOLLOW_PROBE_TIMEOUT)
                    .await
                {
                    Ok(Ok(line)) if answered_well(&line) => {
                        info!(app = %f.app, task = %id, %address, "a starting task answers through the ingress");
                        f.approved.insert(id);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(app = %f.app, task = %id, error = %e, "could not probe a starting task")
                    }
                }
            }
        }
        let nodes = &f.nodes;
        let routes = swarm_routes(f.app, f.components, &services, &f.approved, &|t| {
            nodes.get(&t.node_id).cloned()
        });
        if f.last.as_ref() == Some(&routes) {
            return Ok(());
        }
        if let Some(done) = self.switch_app(manager, f.app, routes.clone()).await? {
            f.steps.extend(done.steps);
            let tasks: usize = routes.services.values().map(|s| s.servers.len()).sum();
            f.steps.push(format!(
                "the ingress on Swarm manager {} sends the app's requests to {tasks} task(s)",
                manager.name()
            ));
        }
        f.last = Some(routes);
        Ok(())
    }

    /// What a deploy on the Swarm refuses before it takes the app's lease:
    /// names Swarm cannot take, and a host that is not a manager.
    pub(super) async fn check_swarm_deploy(
        &self,
        manager: &DockerHost,
        target: &Target,
        components: &[Component],
    ) -> Result<(), DeployError> {
        let app = &target.spec.name;
        let errs: Vec<super::spec::SpecError> = components
            .iter()
            .filter_map(|c| service_name(app, &c.name).err())
            .map(|e| super::spec::SpecError {
                field: "name".into(),
                message: e.to_string(),
            })
            .collect();
        if !errs.is_empty() {
            return Err(DeployError::InvalidSpec(errs));
        }
        manager
            .check_swarm_manager()
            .await
            .map_err(docker(Phase::Lock))
    }

    /// [`super::runtime::Runtime::converge`] on a Swarm: plan from the
    /// services, then PRE_DEPLOY and ROLL, journaled.
    pub(super) async fn locked_swarm_deploy(
        &self,
        manager: &DockerHost,
        target: &Target,
        components: &[Component],
        phases: &mut Vec<(String, u64)>,
        fence: LeaseFence,
    ) -> Result<Outcome, DeployError> {
        let app = target.spec.name.clone();
        self.close_abandoned_release(&app, &fence).await?;
        let services = self
            .swarm_services(manager, &app, true)
            .await
            .map_err(docker(Phase::Lock))?;
        let drift = service_drift(&app, manager.name(), components, &target.digest, &services);
        let extra: Vec<&ObservedService> = services
            .iter()
            .filter(|s| {
                s.label(labels::KIND) != Some(labels::kind::JOB)
                    && !components
                        .iter()
                        .any(|c| Some(c.name.as_str()) == s.label(labels::COMPONENT))
            })
            .collect();
        let current = services
            .iter()
            .filter_map(|s| s.label(labels::RELEASE)?.parse::<u64>().ok())
            .max();
        if drift.is_empty() {
            // The services are right; the routes may not be (an ingress
            // edited or removed by hand): the ingress follows the tasks.
            let t = Instant::now();
            let mut follow = Follow::new(&app, components);
            self.follow_routes(manager, &mut follow).await?;
            let steps = if follow.steps.is_empty() {
                vec!["nothing to do: the app already runs this digest and spec".into()]
            } else {
                phases.push(("switch".to_string(), ms(t)));
                follow
                    .steps
                    .iter()
                    .map(|s| format!("repair: {s}"))
                    .collect()
            };
            return Ok(Outcome {
                app,
                release: current.unwrap_or(0),
                new_release: false,
                digest: target.digest.clone(),
                endpoints: Default::default(),
                urls: self.urls(components),
                steps,
                phases: phases.clone(),
                warnings: Vec::new(),
            });
        }
        // A new release unless every service that exists already carries
        // this digest and spec (then this repairs a scale, a hand edit or a
        // removed service of the running release), or every service is gone
        // and the journal's last good release is this one.
        let same_release = |s: &ObservedService, c: &Component| {
            s.label(labels::DIGEST) == Some(target.digest.as_str())
                && s.label(labels::SPEC_HASH) == Some(c.spec_hash.as_str())
        };
        let existing: Vec<(&Component, &ObservedService)> = components
            .iter()
            .filter_map(|c| {
                let name = service_name(&app, &c.name).ok()?;
                services.iter().find(|s| s.name == name).map(|s| (c, s))
            })
            .collect();
        let mut new_release = existing.iter().any(|(c, s)| !same_release(s, c));
        let mut release = current;
        if !new_release && existing.is_empty() {
            let last = self
                .store
                .list_releases(app.clone(), 1)
                .await?
                .into_iter()
                .next();
            match last {
                Some(last)
                    if last.outcome == ReleaseOutcome::Succeeded
                        && last.digest == target.digest
                        && last.spec_json == public_spec_json(&target.spec) =>
                {
                    release = Some(last.release);
                }
                _ => new_release = true,
            }
        }
        let release = if new_release {
            let last = self.store.last_release_number(app.clone()).await?;
            last.max(current).unwrap_or(0) + 1
        } else {
            release.unwrap_or(1)
        };
        let mut steps: Vec<String> = drift.iter().map(|d| format!("repair: {d}")).collect();
        if new_release {
            steps = vec![format!(
                "new release {release} of {} on Swarm manager {}",
                target.digest,
                manager.name()
            )];
            self.journal_start(target, release, &fence).await?;
        }
        for s in &steps {
            info!(app = %app, step = %s, "swarm deploy step");
        }
        let result = self
            .swarm_execute(
                manager,
                target,
                components,
                release,
                new_release,
                &extra,
                phases,
                &mut steps,
            )
            .await;
        if new_release {
            self.journal_finish(&app, release, result.as_ref().err(), phases, fence)
                .await;
        }
        result?;
        Ok(Outcome {
            urls: self.urls(components),
            app,
            release,
            new_release,
            digest: target.digest.clone(),
            endpoints: Default::default(),
            steps,
            phases: phases.clone(),
            warnings: Vec::new(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn swarm_execute(
        &self,
        manager: &DockerHost,
        target: &Target,
        components: &[Component],
        release: u64,
        new_release: bool,
        extra: &[&ObservedService],
        phases: &mut Vec<(String, u64)>,
        steps: &mut Vec<String>,
    ) -> Result<(), DeployError> {
        let app = &target.spec.name;
        let network_labels = std::collections::BTreeMap::new();
        manager
            .ensure_overlay(SWARM_NETWORK, &network_labels)
            .await
            .map_err(docker(Phase::Roll))?;
        if new_release {
            if let Some(cmd) = target.spec.pre_deploy_command.as_deref() {
                let t = Instant::now();
                self.swarm_pre_deploy(manager, target, cmd, release).await?;
                phases.push(("pre_deploy".to_string(), ms(t)));
                steps.push("ran the pre-deploy command as a Swarm job".into());
            }
        }
        let probe = if components.iter().any(|c| c.health_check.is_some()) {
            let name = probe_config_name();
            let id = manager
                .ensure_config(&name, PROBE_BINARY, &Default::default())
                .await
                .map_err(docker(Phase::Roll))?;
            Some(ProbeConfig { id, name })
        } else {
            None
        };
        let t = Instant::now();
        let mut changed: Vec<Changed> = Vec::new();
        let mut follow = Follow::new(app, components);
        let following = exposed(components);
        if following {
            // The ingress first: one that cannot run (its image out of
            // reach, its port taken) fails the deploy before any service
            // changes.
            let (_, made) = self.ingress_ready(manager).await?;
            follow.steps.extend(made);
        }
        for comp in components {
            let desired = swarm_service(
                target,
                comp,
                release,
                SWARM_NETWORK,
                self.test_label,
                probe.as_ref(),
            )
            .map_err(|e| {
                DeployError::InvalidSpec(vec![super::spec::SpecError {
                    field: format!("{}s.{}", comp.kind.label(), comp.name),
                    message: e.to_string(),
                }])
            })?;
            let spec = service_spec(&desired);
            let fingerprint = crate::docker::swarm::spec_fingerprint(&spec);
            let exists = manager
                .managed_service(&desired.name)
                .await
                .map_err(docker(Phase::Roll))?;
            let replicas = desired.replicas;
            let deadline = convergence_deadline(replicas, &desired.update);
            match &exists {
                Some(_) => {
                    manager
                        .update_service(&desired.name, spec, target.login.clone(), false)
                        .await
                        .map_err(docker(Phase::Roll))?;
                    changed.push(Changed::Updated(desired.name.clone()));
                }
                None => {
                    manager
                        .create_service(spec, target.login.clone())
                        .await
                        .map_err(docker(Phase::Roll))?;
                    changed.push(Changed::Created(desired.name.clone()));
                }
            }
            info!(app = %app, service = %desired.name, replicas, deadline_s = deadline.as_secs(), "swarm rollout started");
            if let Err(failure) = self
                .supervise(
                    manager,
                    Watched {
                        name: &desired.name,
                        fingerprint: &fingerprint,
                        replicas,
                        deadline,
                        created: exists.is_none(),
                    },
                    following.then_some(&mut follow),
                )
                .await
            {
                phases.push(("roll".to_string(), ms(t)));
                let mut undone = self.undo(manager, &changed, &failure).await;
                // The routes go back with the services: to the tasks that
                // run now.
                if let Err(e) = self.follow_routes(manager, &mut follow).await {
                    undone.push_str(&format!("; the ingress could not follow the rollback: {e}"));
                }
                return Err(DeployError::SwarmRollout {
                    service: desired.name.clone(),
                    reason: failure.reason,
                    tasks: failure.tasks,
                    log_tail: failure.log_tail,
                    undone,
                });
            }
            steps.push(format!(
                "Swarm service {} runs {replicas} task(s) of release {release}",
                desired.name
            ));
        }
        phases.push(("roll".to_string(), ms(t)));
        let t = Instant::now();
        for s in extra {
            manager
                .remove_service(&s.name)
                .await
                .map_err(docker(Phase::Stop))?;
            steps.push(format!(
                "removed Swarm service {} (no longer in the app)",
                s.name
            ));
        }
        phases.push(("stop".to_string(), ms(t)));
        // The routes end on the tasks that run (none for services that
        // are no longer exposed or no longer there).
        let t = Instant::now();
        self.follow_routes(manager, &mut follow).await?;
        if !follow.steps.is_empty() {
            phases.push(("switch".to_string(), ms(t)));
        }
        steps.append(&mut follow.steps);
        Ok(())
    }

    /// Watches one service's rollout until it converged, failed, or ran out
    /// of time.
    async fn supervise(
        &self,
        manager: &DockerHost,
        rollout: Watched<'_>,
        mut follow: Option<&mut Follow<'_>>,
    ) -> Result<(), RollFailure> {
        let Watched {
            name,
            fingerprint,
            replicas,
            deadline,
            created,
        } = rollout;
        let start = tokio::time::Instant::now();
        // The deadline counts from the last progress (a task changed
        // state, or one is still pulling or starting), so a slow pull or
        // a busy scheduler is not a failure; an update that stands still
        // is. Bounded as a whole by the longest pull plus the deadline.
        let mut last_progress = start;
        let mut last_key = String::new();
        let hard_limit = crate::docker::PULL_TIMEOUT + deadline;
        loop {
            let s =
                match manager.managed_service(name).await {
                    Ok(Some(s)) => s,
                    Ok(None) => return Err(RollFailure {
                        reason:
                            "the service disappeared during the rollout (removed outside Berth?)"
                                .into(),
                        tasks: Vec::new(),
                        log_tail: Vec::new(),
                        swarm_rolled_back: false,
                    }),
                    Err(e) => {
                        // A daemon hiccup: keep watching until the deadline.
                        if start.elapsed() >= deadline {
                            return Err(self
                                .failure(
                                    manager,
                                    name,
                                    None,
                                    format!("Berth could not watch the rollout: {e}"),
                                )
                                .await);
                        }
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                };
            if let Some(f) = follow.as_deref_mut() {
                if let Err(e) = self.follow_routes(manager, f).await {
                    return Err(self
                        .failure(
                            manager,
                            name,
                            Some((&s, fingerprint)),
                            format!("the ingress could not follow the rollout: {e}"),
                        )
                        .await);
                }
            }
            let running_new = s.running_spec(fingerprint) as u64;
            let old_left = s
                .current_tasks()
                .filter(|t| t.fingerprint != fingerprint)
                .count();
            let current = s.current_tasks().count() as u64;
            match s.update_state.as_str() {
                "rollback_started" | "rollback_paused" | "rollback_completed" | "paused" => {
                    let why = if s.update_message.is_empty() {
                        format!("Swarm's update state is {}", s.update_state)
                    } else {
                        s.update_message.clone()
                    };
                    let mut f = self
                        .failure(
                            manager,
                            name,
                            Some((&s, fingerprint)),
                            format!("Swarm stopped the update and rolled back by itself: {why}"),
                        )
                        .await;
                    f.swarm_rolled_back = s.update_state != "paused";
                    return Err(f);
                }
                "" | "completed"
                    if running_new == replicas && current == replicas && old_left == 0 =>
                {
                    return Ok(())
                }
                _ => {}
            }
            if created {
                let failed_new = s
                    .tasks
                    .iter()
                    .filter(|t| {
                        // Failed, or shut down by Swarm as unhealthy (such a
                        // task ends `complete` or `shutdown`).
                        t.fingerprint == fingerprint
                            && t.desired_state != "running"
                            && matches!(
                                t.state.as_str(),
                                "failed" | "rejected" | "complete" | "shutdown"
                            )
                    })
                    .count();
                if failed_new >= CRASH_LOOP_TASKS {
                    return Err(self
                        .failure(
                            manager,
                            name,
                            Some((&s, fingerprint)),
                            format!(
                                "{failed_new} of its tasks failed one after another (a crash loop)"
                            ),
                        )
                        .await);
                }
            }
            let seen = format!(
                "{running_new} of {replicas} task(s) of the new spec run, {old_left} task(s) of the old spec remain, Swarm's update state: {}",
                if s.update_state.is_empty() { "none" } else { &s.update_state }
            );
            let mut key: Vec<String> = s
                .current_tasks()
                .map(|t| format!("{}={}", t.id, t.state))
                .collect();
            key.sort();
            let key = format!("{} {}", s.update_state, key.join(","));
            let busy = s.current_tasks().any(|t| {
                t.fingerprint == fingerprint && matches!(t.state.as_str(), "preparing" | "starting")
            });
            if key != last_key || busy {
                last_key = key;
                last_progress = tokio::time::Instant::now();
            }
            if last_progress.elapsed() >= deadline || start.elapsed() >= hard_limit {
                return Err(self
                    .failure(
                        manager,
                        name,
                        Some((&s, fingerprint)),
                        format!(
                            "Swarm made no progress for {}s, {}s after the update began ({seen})",
                            last_progress.elapsed().as_secs(),
                            start.elapsed().as_secs()
                        ),
                    )
                    .await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The failure with the failing tasks' errors and the service's last log
    /// lines, copied before anything is rolled back or removed.
    async fn failure(
        &self,
        manager: &DockerHost,
        name: &str,
        seen: Option<(&ObservedService, &str)>,
        reason: String,
    ) -> RollFailure {
        let tasks = match seen {
            Some((s, fingerprint)) => s.failures(Some(fingerprint)),
            None => Vec::new(),
        };
        let log_tail = manager.service_log_tail(name, LOG_LINES).await;
        RollFailure {
            reason,
            tasks,
            log_tail,
            swarm_rolled_back: false,
        }
    }

    /// Undoes this deploy's changes, newest first: what was updated goes
    /// back to its previous spec (unless Swarm did that itself), what was
    /// created is removed. Returns what was done, in words.
    async fn undo(
        &self,
        manager: &DockerHost,
        changed: &[Changed],
        failure: &RollFailure,
    ) -> String {
        let mut words = Vec::new();
        for (i, c) in changed.iter().enumerate().rev() {
            let last = i + 1 == changed.len();
            match c {
                Changed::Created(name) => match manager.remove_service(name).await {
                    Ok(()) => words.push(format!("removed the new service {name}")),
                    Err(e) => words.push(format!("could not remove the new service {name}: {e}")),
                },
                Changed::Updated(name) => {
                    if !(last && failure.swarm_rolled_back) {
                        if let Err(e) = manager
                            .update_service(name, Default::default(), None, true)
                            .await
                        {
                            words.push(format!("could not roll {name} back: {e}"));
                            continue;
                        }
                    }
                    match self.wait_rolled_back(manager, name).await {
                        Ok(()) => words.push(format!(
                            "rolled {name} back to its previous spec, which serves again"
                        )),
                        Err(state) => words.push(format!(
                            "asked Swarm to roll {name} back, but it had not finished ({state})"
                        )),
                    }
                }
            }
        }
        words.join("; ")
    }

    /// Waits (bounded) for a rollback to settle with every replica running.
    async fn wait_rolled_back(&self, manager: &DockerHost, name: &str) -> Result<(), String> {
        let start = tokio::time::Instant::now();
        let limit = Duration::from_secs(120);
        loop {
            let state = match manager.managed_service(name).await {
                Ok(Some(s)) => {
                    let running = s.current_tasks().filter(|t| t.state == "running").count() as u64;
                    let want = s.replicas.unwrap_or(0);
                    if s.update_state == "rollback_completed" && running >= want {
                        return Ok(());
                    }
                    format!(
                        "update state {}, {running} of {want} running",
                        s.update_state
                    )
                }
                Ok(None) => return Err("the service is gone".into()),
                Err(e) => e.to_string(),
            };
            if start.elapsed() >= limit {
                return Err(state);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The pre-deploy command as a replicated job of one task on the
    /// cluster, once per release, from the new image with the new env.
    async fn swarm_pre_deploy(
        &self,
        manager: &DockerHost,
        target: &Target,
        cmd: &str,
        release: u64,
    ) -> Result<(), DeployError> {
        let spec = &target.spec;
        let argv = super::spec::split_command("pre_deploy_command", cmd)
            .map_err(|e| DeployError::InvalidSpec(vec![e]))?;
        let mut env = spec.env.clone();
        env.extend(spec.secret_env.clone());
        env.extend(spec.secret_env_wo.clone());
        let name = format!("{}-pre-deploy-r{release}", spec.name);
        let mut l = super::deploy::base_labels(&spec.name, &target.digest, release);
        l.insert(labels::COMPONENT.to_owned(), "pre-deploy".to_owned());
        l.insert(labels::KIND.to_owned(), labels::kind::JOB.to_owned());
        if self.test_label {
            l.insert(labels::TEST.to_owned(), "1".to_owned());
        }
        let job = crate::docker::swarm::SwarmService {
            name: name.clone(),
            image: target.pinned.clone(),
            command: Some(argv),
            env,
            labels: l,
            replicas: 1,
            nano_cpus: None,
            memory_bytes: None,
            network: SWARM_NETWORK.to_owned(),
            alias: format!("pre-deploy.{}", spec.name),
            http_port: None,
            publish: false,
            update: super::swarm::update_policy(None),
            stop_grace: super::deploy::STOP_GRACE,
            health: None,
            job: true,
        };
        // A job left by a deploy that died: its outcome is unknown, run again.
        manager
            .remove_service(&name)
            .await
            .map_err(docker(Phase::PreDeploy))?;
        manager
            .create_service(service_spec(&job), target.login.clone())
            .await
            .map_err(docker(Phase::PreDeploy))?;
        let start = tokio::time::Instant::now();
        let outcome = loop {
            let seen = manager
                .managed_service(&name)
                .await
                .map_err(docker(Phase::PreDeploy))?;
            let task = seen.as_ref().and_then(|s| {
                s.tasks
                    .iter()
                    .max_by(|a, b| a.timestamp.cmp(&b.timestamp))
                    .cloned()
            });
            if let Some(t) = &task {
                match t.state.as_str() {
                    "complete" => break Ok(()),
                    "failed" | "rejected" => {
                        break Err(match t.exit_code {
                            Some(code) if code != 0 => format!("exited with code {code}"),
                            _ => format!("failed on the cluster: {}", t.words()),
                        })
                    }
                    _ => {}
                }
            }
            if start.elapsed() >= PRE_DEPLOY_TIMEOUT {
                break Err(format!(
                    "did not finish within {}s and was stopped",
                    PRE_DEPLOY_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        let log_tail = manager.service_log_tail(&name, LOG_LINES).await;
        if let Err(e) = manager.remove_service(&name).await {
            warn!(service = %name, error = %e, "could not remove the pre-deploy job");
        }
        outcome.map_err(|outcome| DeployError::PreDeploy { outcome, log_tail })
    }

    /// Removes every service of the app (its jobs included) and nothing
    /// else; the shared network and probe config stay.
    pub(super) async fn destroy_swarm(
        &self,
        manager: &DockerHost,
        app: &str,
    ) -> Result<Vec<String>, DeployError> {
        // The routes first, so nothing is sent to tasks being removed.
        let mut removed = Vec::new();
        let empty = AppRoutes {
            app: app.to_owned(),
            services: BTreeMap::new(),
        };
        if let Some(done) = self.switch_app(manager, app, empty).await? {
            removed.extend(done.steps);
        }
        let services = self
            .swarm_services(manager, app, true)
            .await
            .map_err(docker(Phase::Stop))?;
        for s in services {
            manager
                .remove_service(&s.name)
                .await
                .map_err(docker(Phase::Stop))?;
            removed.push(format!(
                "Swarm service {} on manager {}",
                s.name,
                manager.name()
            ));
        }
        self.forget_observations().await;
        Ok(removed)
    }
}
