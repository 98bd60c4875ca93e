//! The deploy state machine for one app and one release: PULL on every host
//! (before any lock) → LOCK (a lease with owner and expiry) → observe and
//! plan → PRE_DEPLOY (from the new image, with the new env) → ROLL (start
//! new instances, probe them until healthy) → SWITCH (the ingress) →
//! MONITOR and DRAIN → STOP old → journal (the steps from ROLL on are in
//! `rollout`). Failure before the switch removes the new containers and
//! leaves the running release and the ingress untouched. Every step is
//! idempotent: a deploy that died half-way is finished by the next one,
//! because the plan is made from what runs, not from what was intended.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Mutex;
use tracing::{info, warn};

use super::plan::{self, Drift, Instance, InstanceHealth, Slot};
use super::spec::{AppSpec, Component, SpecError};
use crate::docker::{
    ContainerSpec, ContainerState, DockerError, DockerHost, HostAddress, Hosts, Observed,
    RegistryLogin, RestartPolicy,
};
use crate::ingress::{IngressError, IngressHost, IngressSettings, IngressView, PinImage};
use crate::labels;
use crate::store::{LeaseFence, LeaseOutcome, NewRelease, ReleaseOutcome, Store, StoreError};

/// How long a deploy waits for another deploy of the same app.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Seconds a deploy lease lives without renewal (default [`LEASE_TTL`]):
/// how long a runner killed on another machine blocks the others.
pub const LEASE_TTL_ENV: &str = "BERTH_LEASE_TTL";

/// Seconds a deploy waits for another deploy of the same app (default
/// [`DEFAULT_LOCK_WAIT`]) before it fails naming the holder.
pub const LOCK_WAIT_ENV: &str = "BERTH_LOCK_WAIT";
/// Lease lifetime; renewed while the deploy runs, so a killed process's
/// lease expires this long after its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(60);
/// Grace between SIGTERM and SIGKILL when stopping old instances.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest a pre-deploy job may run.
pub const PRE_DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a host's list result serves refreshes (one list call per host
/// per refresh, not per app).
pub(super) const LIST_TTL: Duration = Duration::from_secs(2);

/// What to deploy: the spec and the exact image.
#[derive(Clone, Debug)]
pub struct Target {
    pub spec: AppSpec,
    /// linux/amd64 manifest digest.
    pub digest: String,
    /// `repository@digest` to pull and run.
    pub pinned: String,
    /// Credentials for the pull, if the image is private.
    pub login: Option<RegistryLogin>,
    /// Who asked: `terraform`, `berth apply`, `hook`, `rollback`.
    pub trigger: String,
}

/// A finished deploy.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Outcome {
    pub app: String,
    pub release: u64,
    /// False when the app already matched (nothing was done) or only
    /// scaled or repaired within its release.
    pub new_release: bool,
    pub digest: String,
    /// Service name → `address:port` of each instance, in slot order.
    pub endpoints: BTreeMap<String, Vec<String>>,
    /// Service name → its stable URLs through the ingress.
    pub urls: BTreeMap<String, Vec<String>>,
    /// What was done, in words.
    pub steps: Vec<String>,
    /// Phase name and milliseconds.
    pub phases: Vec<(String, u64)>,
    /// What went wrong without undoing the release (a failed post-deploy
    /// command), in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The phases, named as in DESIGN.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pull,
    Lock,
    PreDeploy,
    Roll,
    Switch,
    Drain,
    Stop,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Pull => "PULL",
            Phase::Lock => "LOCK",
            Phase::PreDeploy => "PRE_DEPLOY",
            Phase::Roll => "ROLL",
            Phase::Switch => "SWITCH",
            Phase::Drain => "DRAIN",
            Phase::Stop => "STOP",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the app spec is invalid: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    InvalidSpec(Vec<SpecError>),
    #[error("{phase} failed: {source}")]
    Docker {
        phase: Phase,
        #[source]
        source: DockerError,
    },
    #[error("Berth's store failed: {0}")]
    Store(#[from] StoreError),
    #[error("another deploy of app {app:?} is running: its lease is held by {owner} since {since} (expires in {expires_in}s unless renewed); waited {waited}s. Try again when it has finished; a lease left by a killed process expires by itself")]
    Busy {
        app: String,
        /// The holder in words: process, host.
        owner: String,
        /// Since when, RFC 3339 (the store's clock).
        since: String,
        expires_in: u64,
        waited: u64,
    },
    #[error("PRE_DEPLOY failed: the pre-deploy command {outcome}. The running release was not touched.{}", log_lines(.log_tail))]
    PreDeploy {
        outcome: String,
        log_tail: Vec<String>,
    },
    #[error("ROLL failed: {instance} on host {host} did not become healthy within {waited:.1}s (last probe: {last_probe}). The new containers were removed; the running release keeps serving.{}", log_lines(.log_tail))]
    Unhealthy {
        instance: String,
        host: String,
        waited: f64,
        last_probe: String,
        log_tail: Vec<String>,
    },
    #[error("host {0:?} is not configured: an instance needs it. Configure it in the provider's `hosts`, or lower `instances`")]
    NoSuchHost(String),
    #[error("no Docker host is configured")]
    NoHosts,
    #[error("the plan starts an instance of {0:?}, a component the app does not have (a bug in Berth: please report it)")]
    UnknownComponent(String),
    #[error("{phase} failed: {source}")]
    Ingress {
        phase: Phase,
        #[source]
        source: IngressError,
    },
    #[error("SWITCH refused: {}. Nothing was changed on the hosts' ingress; the running release keeps serving", .0.join("; "))]
    IngressConflict(Vec<String>),
    #[error("MONITOR failed after the switch: {reason}. {}", if *.switched_back { "Traffic went back to the previous instances, which kept running; the new containers were removed." } else { "Switching traffic back failed too; the app is left as it is (a rollback is never rolled back): fix the cause and apply again." })]
    FailedAfterSwitch { reason: String, switched_back: bool },
    #[error("ROLL failed: Swarm service {service}: {reason}.{}{} {undone}.", tasks_words(.tasks), log_lines(.log_tail))]
    SwarmRollout {
        service: String,
        reason: String,
        /// The failing tasks' errors, copied before anything was removed.
        tasks: Vec<String>,
        log_tail: Vec<String>,
        /// What Berth did about it, in words.
        undone: String,
    },
    #[error("the ingress needs its image pinned, but this front end gave the engine no way to resolve images (a bug in Berth: please report it)")]
    NoImagePinner,
}

impl DeployError {
    /// Whether the deploy got as far as running its image (so a
    /// failed-deploy command from that image can run): not for a pull, a
    /// lock or a spec that failed.
    pub fn ran_the_image(&self) -> bool {
        match self {
            DeployError::PreDeploy { .. }
            | DeployError::SwarmRollout { .. }
            | DeployError::Unhealthy { .. }
            | DeployError::FailedAfterSwitch { .. } => true,
            DeployError::Docker { phase, .. } | DeployError::Ingress { phase, .. } => {
                !matches!(phase, Phase::Pull | Phase::Lock)
            }
            _ => false,
        }
    }
}

fn tasks_words(tasks: &[String]) -> String {
    if tasks.is_empty() {
        String::new()
    } else {
        format!("\nFailing tasks:\n  {}", tasks.join("\n  "))
    }
}

fn log_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        " The container printed no log lines.".to_string()
    } else {
        format!("\nLast log lines:\n  {}", lines.join("\n  "))
    }
}

/// All clients the engine needs, passed down as one value.
/// Set (to anything) in the environment of the provider or the CLI, it
/// makes them mark their containers with `io.berth.test=1`: the test
/// suites set it to find and remove everything they started.
pub const TEST_LABEL_ENV: &str = "BERTH_TEST_LABEL";

pub struct Engine {
    pub hosts: Hosts,
    pub store: Store,
    lock_wait: Duration,
    /// How long a deploy's lease lives without renewal (renewed every third).
    lease_ttl: Duration,
    list_cache: Mutex<BTreeMap<String, CachedList>>,
    view_cache: Mutex<BTreeMap<String, CachedView>>,
    /// The Swarm manager's managed services and when they were listed.
    pub(super) swarm_cache: Mutex<Option<CachedServices>>,
    /// The Swarm's node addresses and when they were read.
    pub(super) swarm_nodes: Mutex<Option<CachedNodes>>,
    /// Marks every container with `io.berth.test=1`, for test clean-up.
    pub(super) test_label: bool,
    /// The ingress settings of every host.
    pub(super) ingress: IngressSettings,
    /// How the ingress images are pinned (given by the front end).
    pub(super) pinner: Option<Arc<dyn PinImage>>,
}

/// One host's list result and when it was taken.
type CachedList = (Instant, Arc<Vec<Observed>>);
/// One host's ingress view and when it was read.
type CachedView = (Instant, Arc<IngressView>);
/// A Swarm manager's managed services and when they were listed.
pub(super) type CachedServices = (Instant, Arc<Vec<crate::docker::swarm::ObservedService>>);
/// A Swarm's node id → address and when it was read.
pub(super) type CachedNodes = (Instant, Arc<std::collections::HashMap<String, String>>);

impl Engine {
    pub fn new(hosts: Hosts, store: Store) -> Engine {
        Engine {
            hosts,
            store,
            lock_wait: DEFAULT_LOCK_WAIT,
            lease_ttl: LEASE_TTL,
            list_cache: Mutex::new(BTreeMap::new()),
            view_cache: Mutex::new(BTreeMap::new()),
            swarm_cache: Mutex::new(None),
            swarm_nodes: Mutex::new(None),
            test_label: false,
            ingress: IngressSettings::default(),
            pinner: None,
        }
    }

    /// The ingress settings for every host, and how to pin its images (the
    /// front end's registry client).
    pub fn with_ingress(mut self, settings: IngressSettings, pinner: Arc<dyn PinImage>) -> Engine {
        self.ingress = settings;
        self.pinner = Some(pinner);
        self
    }

    /// The ingress settings in use.
    pub fn ingress_settings(&self) -> &IngressSettings {
        &self.ingress
    }

    /// Replaces the ingress settings (the `berth` command reads them from
    /// an app's record once it knows the app).
    pub fn set_ingress_settings(&mut self, settings: IngressSettings) {
        self.ingress = settings;
    }

    /// Marks the containers this engine creates with `io.berth.test=1`, so
    /// test suites can find and remove everything they started.
    pub fn with_test_label(mut self, on: bool) -> Engine {
        self.test_label = on;
        self
    }

    /// Lease timing from the environment, when set: [`LEASE_TTL_ENV`] and
    /// [`LOCK_WAIT_ENV`] (whole seconds). An invalid value is an error
    /// naming the variable.
    pub fn with_lease_timing_from(
        mut self,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Engine, String> {
        let seconds = |var: &str, min: u64| -> Result<Option<Duration>, String> {
            let Some(value) = env(var) else {
                return Ok(None);
            };
            let text = value.to_string_lossy();
            match text.trim().parse::<u64>() {
                Ok(n) if n >= min => Ok(Some(Duration::from_secs(n))),
                _ => Err(format!(
                    "{var} is {text:?}: give a whole number of seconds, at least {min}"
                )),
            }
        };
        if let Some(ttl) = seconds(LEASE_TTL_ENV, 1)? {
            self = self.with_lease_ttl(ttl);
        }
        if let Some(wait) = seconds(LOCK_WAIT_ENV, 0)? {
            self = self.with_lock_wait(wait);
        }
        Ok(self)
    }

    /// The lease timing of `other` (for engines made per app).
    pub fn with_lease_timing_of(mut self, other: &Engine) -> Engine {
        self.lease_ttl = other.lease_ttl;
        self.lock_wait = other.lock_wait;
        self
    }

    /// Overrides how long a deploy waits for another one of the same app.
    pub fn with_lock_wait(mut self, wait: Duration) -> Engine {
        self.lock_wait = wait;
        self
    }

    /// Overrides how long a deploy lease lives between renewals
    /// ([`LEASE_TTL`] by default). A killed runner's lease blocks others
    /// this long, unless it ran on this machine (then it is taken over).
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Engine {
        self.lease_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    pub fn host_names(&self) -> Vec<String> {
        self.hosts.names().map(String::from).collect()
    }

    /// The app's containers on every host. `fresh` bypasses the short
    /// cache that lets a refresh of many apps make one list call per host.
    pub async fn observe(&self, app: &str, fresh: bool) -> Result<Vec<Instance>, DockerError> {
        self.runtime().observe(app, fresh).await
    }

    /// Every difference between `components` at `digest` and what runs
    /// (`observed`, from [`Engine::observe`]), the ingress included, in
    /// words.
    pub async fn drift(
        &self,
        app: &str,
        components: &[Component],
        digest: &str,
        observed: &[Instance],
        fresh: bool,
    ) -> Result<Vec<Drift>, DockerError> {
        self.runtime()
            .drift(app, components, digest, observed, fresh)
            .await
    }

    /// [`Engine::observe`] on plain Docker hosts.
    pub(super) async fn observe_containers(
        &self,
        app: &str,
        fresh: bool,
    ) -> Result<Vec<Instance>, DockerError> {
        let mut out = Vec::new();
        for host in self.hosts.iter() {
            let list = self.host_list(host, fresh).await?;
            out.extend(
                list.iter()
                    .filter(|o| o.label(labels::APP) == Some(app))
                    .filter(|o| o.label(labels::KIND) != Some(labels::kind::JOB))
                    .map(|o| instance(host, o)),
            );
        }
        Ok(out)
    }

    /// One host's managed containers, from the short cache unless `fresh`.
    pub(super) async fn host_list(
        &self,
        host: &DockerHost,
        fresh: bool,
    ) -> Result<Arc<Vec<Observed>>, DockerError> {
        // Holding the cache lock while listing makes concurrent refreshes
        // share one list call per host.
        let mut cache = self.list_cache.lock().await;
        let hit = cache
            .get(host.name())
            .filter(|(at, _)| !fresh && at.elapsed() < LIST_TTL)
            .map(|(_, list)| list.clone());
        match hit {
            Some(list) => Ok(list),
            None => {
                let list = Arc::new(host.list_managed().await?);
                cache.insert(host.name().to_string(), (Instant::now(), list.clone()));
                Ok(list)
            }
        }
    }

    /// The ingress of every host (containers and volume files), from the
    /// short cache unless `fresh`: one archive read per host with a proxy.
    pub async fn observe_ingress(
        &self,
        fresh: bool,
    ) -> Result<BTreeMap<String, Arc<IngressView>>, DockerError> {
        let mut out = BTreeMap::new();
        for host in self.hosts.iter() {
            let list = self.host_list(host, fresh).await?;
            let mut cache = self.view_cache.lock().await;
            let hit = cache
                .get(host.name())
                .filter(|(at, _)| !fresh && at.elapsed() < LIST_TTL)
                .map(|(_, v)| v.clone());
            let view = match hit {
                Some(view) => view,
                None => {
                    let view = Arc::new(
                        IngressHost::new(host, &self.ingress, self.test_label)
                            .view(&list)
                            .await?,
                    );
                    cache.insert(host.name().to_string(), (Instant::now(), view.clone()));
                    view
                }
            };
            out.insert(host.name().to_string(), view);
        }
        Ok(out)
    }

    /// Differences between the app's routes and each host's ingress.
    pub async fn ingress_drift(
        &self,
        app: &str,
        components: &[Component],
        observed: &[Instance],
        fresh: bool,
    ) -> Result<Vec<Drift>, DockerError> {
        let serving = plan::serving(observed);
        self.ingress_drift_to(app, components, fresh, &|host| {
            plan::desired_routes(app, components, &serving, host)
        })
        .await
    }

    /// [`Engine::ingress_drift`] against the routes `desired` gives for
    /// each host.
    pub(super) async fn ingress_drift_to(
        &self,
        app: &str,
        components: &[Component],
        fresh: bool,
        desired: &(dyn Fn(&str) -> crate::ingress::AppRoutes + Sync),
    ) -> Result<Vec<Drift>, DockerError> {
        if components.iter().all(|c| c.exposure.is_none()) {
            // Routes left behind by an earlier spec still count.
            let views = self.observe_ingress(fresh).await?;
            if !views.values().any(|v| v.routes.contains_key(app)) {
                return Ok(Vec::new());
            }
        }
        let views = self.observe_ingress(fresh).await?;
        let states: Vec<plan::IngressState> = self
            .hosts
            .iter()
            .filter_map(|host| {
                let view = views.get(host.name())?;
                let ingress = IngressHost::new(host, &self.ingress, self.test_label);
                Some(plan::IngressState {
                    host: host.name(),
                    view,
                    rendered: ingress.haproxy_cfg(&view.routes),
                    needs_tls: ingress.caddy_json(&view.routes).is_some(),
                    image: &self.ingress.image,
                })
            })
            .collect();
        Ok(plan::ingress_drift_to(app, &states, desired))
    }

    /// Service name → the stable URLs of its `public_port` (on each host
    /// that runs one of its instances) and `domains`. Pure: known from the
    /// spec and the hosts, before anything is deployed.
    pub fn urls(&self, components: &[Component]) -> BTreeMap<String, Vec<String>> {
        let slots = plan::placement(components, &self.host_names());
        let mut out = BTreeMap::new();
        for c in components {
            let Some(exposure) = &c.exposure else {
                continue;
            };
            let hosts: Vec<String> = self
                .hosts
                .iter()
                .filter(|h| {
                    slots
                        .iter()
                        .any(|s| s.component == c.name && s.host == h.name())
                })
                .map(url_host)
                .collect();
            let urls = crate::ingress::routes::urls(exposure, &hosts, &self.ingress);
            if !urls.is_empty() {
                out.insert(c.name.clone(), urls);
            }
        }
        out
    }

    pub(super) async fn forget_observations(&self) {
        self.list_cache.lock().await.clear();
        self.view_cache.lock().await.clear();
        *self.swarm_cache.lock().await = None;
        *self.swarm_nodes.lock().await = None;
    }

    /// The endpoints of an app's running services, in slot order.
    pub fn endpoints(observed: &[Instance]) -> BTreeMap<String, Vec<String>> {
        let mut by: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
        let current = plan::current_release(observed);
        for i in observed.iter().filter(|i| {
            i.kind == labels::kind::SERVICE
                && i.release == current
                && i.health == InstanceHealth::Running
        }) {
            if let Some(e) = &i.endpoint {
                by.entry(i.component.clone())
                    .or_default()
                    .push((i.slot.unwrap_or(u32::MAX), e.clone()));
            }
        }
        by.into_iter()
            .map(|(k, mut v)| {
                v.sort();
                (k, v.into_iter().map(|(_, e)| e).collect())
            })
            .collect()
    }

    /// Deploys `target`: converges the app onto exactly that digest and spec.
    pub async fn deploy(&self, target: &Target) -> Result<Outcome, DeployError> {
        let spec = &target.spec;
        let errs = spec.validate();
        if !errs.is_empty() {
            return Err(DeployError::InvalidSpec(errs));
        }
        let components = spec
            .components()
            .map_err(|e| DeployError::InvalidSpec(vec![e]))?;
        if self.hosts.is_empty() {
            return Err(DeployError::NoHosts);
        }
        let mut phases = Vec::new();
        let app = spec.name.clone();
        let runtime = self.runtime();
        // What needs no lock first (the pull, on every host at once).
        runtime.prepare(target, &components, &mut phases).await?;

        // LOCK, then the rest under the app's lease.
        let t = Instant::now();
        let lease = self.lock(&app).await?;
        phases.push(("lock".to_string(), ms(t)));
        let result = runtime
            .converge(target, &components, &mut phases, lease.fence())
            .await;
        lease.release(&self.store).await;
        self.forget_observations().await;
        result
    }

    /// [`super::runtime::Runtime::converge`] on plain Docker hosts.
    pub(super) async fn locked_deploy(
        &self,
        target: &Target,
        components: &[Component],
        phases: &mut Vec<(String, u64)>,
        fence: LeaseFence,
    ) -> Result<Outcome, DeployError> {
        let app = target.spec.name.clone();
        self.close_abandoned_release(&app, &fence).await?;
        let observed = self
            .observe(&app, true)
            .await
            .map_err(|source| DeployError::Docker {
                phase: Phase::Lock,
                source,
            })?;
        let mut plan = plan::plan(components, &target.digest, &self.host_names(), &observed);
        if plan.new_release && observed.is_empty() {
            // Every instance is gone (removed by hand, or a host was wiped):
            // if the journal's last good release is this digest and spec,
            // this is a repair of that release, not a new one.
            if let Some(last) = self
                .store
                .list_releases(app.clone(), 1)
                .await?
                .into_iter()
                .next()
            {
                if last.outcome == ReleaseOutcome::Succeeded
                    && last.digest == target.digest
                    && last.spec_json == public_spec_json(&target.spec)
                {
                    plan.new_release = false;
                    plan.current_release = Some(last.release);
                    plan.reasons = vec![format!(
                        "repair: every instance of release {} is missing; starting them again",
                        last.release
                    )];
                }
            }
        }
        if plan.is_noop() {
            // The instances are right; the ingress may not be.
            let ingress = self
                .ingress_drift(&app, components, &observed, true)
                .await
                .map_err(|source| DeployError::Docker {
                    phase: Phase::Lock,
                    source,
                })?;
            if ingress.is_empty() {
                return Ok(Outcome {
                    app,
                    release: plan.current_release.unwrap_or(0),
                    new_release: false,
                    digest: target.digest.clone(),
                    endpoints: Engine::endpoints(&observed),
                    urls: self.urls(components),
                    steps: vec!["nothing to do: the app already runs this digest and spec".into()],
                    phases: phases.clone(),
                    warnings: Vec::new(),
                });
            }
            plan.reasons = ingress.iter().map(|d| format!("repair: {d}")).collect();
            plan.keep = plan::serving(&observed).into_iter().cloned().collect();
        }
        for r in &plan.reasons {
            info!(app = %app, step = %r, "deploy step");
        }
        let release = if plan.new_release {
            let last = self.store.last_release_number(app.clone()).await?;
            last.max(plan.current_release).unwrap_or(0) + 1
        } else {
            plan.current_release.unwrap_or(1)
        };
        if plan.new_release {
            self.journal_start(target, release, &fence).await?;
        }
        let result = self
            .execute(target, components, &plan, release, phases)
            .await;
        if plan.new_release {
            self.journal_finish(&app, release, result.as_ref().err(), phases, fence)
                .await;
        }
        result
    }

    /// Journals a new release as running, under the lease `fence`.
    pub(super) async fn journal_start(
        &self,
        target: &Target,
        release: u64,
        fence: &LeaseFence,
    ) -> Result<(), DeployError> {
        self.store
            .start_release(
                NewRelease {
                    app: target.spec.name.clone(),
                    release,
                    digest: target.digest.clone(),
                    image: target.pinned.clone(),
                    spec_json: public_spec_json(&target.spec),
                    trigger: target.trigger.clone(),
                },
                fence.clone(),
            )
            .await?;
        Ok(())
    }

    /// Journals how a release ended (`error`: why it failed) with its
    /// phases. A journal that cannot be written is logged: the deploy's
    /// own result stands.
    pub(super) async fn journal_finish(
        &self,
        app: &str,
        release: u64,
        error: Option<&DeployError>,
        phases: &[(String, u64)],
        fence: LeaseFence,
    ) {
        let outcome = match error {
            None => ReleaseOutcome::Succeeded,
            Some(_) => ReleaseOutcome::Failed,
        };
        if let Err(e) = self
            .store
            .finish_release(
                app.to_owned(),
                release,
                outcome,
                error.map(|e| e.to_string()),
                phases.to_vec(),
                fence,
            )
            .await
        {
            warn!(app = %app, error = %e, "could not journal the release outcome");
        }
    }

    /// A release still journaled as running when we hold the lease was
    /// left by a deploy that died (its runner killed, or cut off from the
    /// store): journal it as failed, saying so, before deploying.
    pub(super) async fn close_abandoned_release(
        &self,
        app: &str,
        fence: &LeaseFence,
    ) -> Result<(), DeployError> {
        let Some(last) = self
            .store
            .list_releases(app.to_owned(), 1)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        if last.outcome != ReleaseOutcome::Running {
            return Ok(());
        }
        let reason = "the deploy of this release stopped before it finished (its runner was killed, or lost the store); the next deploy took over";
        warn!(app = %app, release = last.release, "journaling an abandoned release as failed");
        match self
            .store
            .finish_release(
                app.to_owned(),
                last.release,
                ReleaseOutcome::Failed,
                Some(reason.to_owned()),
                last.phases.clone(),
                fence.clone(),
            )
            .await
        {
            // Finished meanwhile: nothing to close.
            Ok(()) | Err(StoreError::ReleaseFinished { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn pre_deploy(
        &self,
        target: &Target,
        cmd: &str,
        release: u64,
    ) -> Result<(), DeployError> {
        let spec = &target.spec;
        let argv = super::spec::split_command("pre_deploy_command", cmd)
            .map_err(|e| DeployError::InvalidSpec(vec![e]))?;
        let mut env = spec.env.clone();
        env.extend(spec.secret_env.clone());
        let mut l = base_labels(&spec.name, &target.digest, release);
        l.insert(labels::KIND.into(), labels::kind::JOB.into());
        l.insert(labels::COMPONENT.into(), "pre-deploy".into());
        let host = self.hosts.iter().next().ok_or(DeployError::NoHosts)?;
        let job = ContainerSpec {
            name: format!("{}-pre-deploy-r{release}-{}", spec.name, short_id()),
            image: target.pinned.clone(),
            command: Some(argv),
            env,
            labels: l,
            http_port: None,
            cpus: None,
            memory_mb: None,
            network: Some(NETWORK.to_string()),
            restart: RestartPolicy::No,
            ..Default::default()
        };
        let out = host
            .run_job(&job, PRE_DEPLOY_TIMEOUT)
            .await
            .map_err(|source| DeployError::Docker {
                phase: Phase::PreDeploy,
                source,
            })?;
        if out.timed_out {
            return Err(DeployError::PreDeploy {
                outcome: format!(
                    "did not finish within {}s and was killed",
                    PRE_DEPLOY_TIMEOUT.as_secs()
                ),
                log_tail: out.log_tail,
            });
        }
        if out.exit_code != 0 {
            return Err(DeployError::PreDeploy {
                outcome: format!("exited with code {}", out.exit_code),
                log_tail: out.log_tail,
            });
        }
        Ok(())
    }

    /// Removes every container and network of the app, on every host, and
    /// nothing else. Succeeds when nothing is left (a gone app included).
    pub async fn destroy(&self, app: &str) -> Result<Vec<String>, DeployError> {
        let lease = self.lock(app).await?;
        let result = self.destroy_locked(app).await;
        lease.release(&self.store).await;
        self.forget_observations().await;
        result
    }

    async fn destroy_locked(&self, app: &str) -> Result<Vec<String>, DeployError> {
        self.runtime().destroy(app).await
    }

    /// [`super::runtime::Runtime::destroy`] on plain Docker hosts.
    pub(super) async fn destroy_containers(&self, app: &str) -> Result<Vec<String>, DeployError> {
        let mut removed = Vec::new();
        // The routes first, so nothing is sent to instances being removed.
        for host in self.hosts.iter() {
            let empty = crate::ingress::AppRoutes {
                app: app.to_owned(),
                services: BTreeMap::new(),
            };
            if let Some(done) = self.switch_app(host, app, empty).await? {
                removed.extend(done.steps);
            }
        }
        for host in self.hosts.iter() {
            let list = host
                .list_managed()
                .await
                .map_err(|source| DeployError::Docker {
                    phase: Phase::Stop,
                    source,
                })?;
            for o in list.iter().filter(|o| o.label(labels::APP) == Some(app)) {
                host.stop(&o.id, STOP_GRACE)
                    .await
                    .map_err(|source| DeployError::Docker {
                        phase: Phase::Stop,
                        source,
                    })?;
                host.remove(&o.id)
                    .await
                    .map_err(|source| DeployError::Docker {
                        phase: Phase::Stop,
                        source,
                    })?;
                removed.push(format!("{} on host {}", o.name, host.name()));
            }
            host.remove_networks(app)
                .await
                .map_err(|source| DeployError::Docker {
                    phase: Phase::Stop,
                    source,
                })?;
        }
        Ok(removed)
    }

    /// Takes the app's lease, waiting up to the lock wait for another
    /// deploy to finish, and keeps it renewed until released.
    pub(super) async fn lock(&self, app: &str) -> Result<Lease, DeployError> {
        let owner = crate::store::lease_owner();
        let ttl = self.lease_ttl;
        let start = Instant::now();
        let generation = loop {
            match self
                .store
                .acquire_lease(app.to_string(), owner.clone(), ttl)
                .await?
            {
                LeaseOutcome::Acquired { generation } => break generation,
                LeaseOutcome::HeldBy {
                    owner: holder,
                    expires_at,
                    since,
                } => {
                    // Left by a process of this machine that was killed:
                    // taken over at once instead of waiting out its TTL.
                    if crate::store::lease_owner_is_gone(&holder) {
                        if let Some(generation) = self
                            .store
                            .take_over_lease(app.to_string(), holder.clone(), owner.clone(), ttl)
                            .await?
                        {
                            info!(app = %app, previous = %holder, "took over the deploy lease of a process that is gone");
                            break generation;
                        }
                    }
                    if start.elapsed() >= self.lock_wait {
                        // The expiry is the store's clock (the database's
                        // for PostgreSQL); `since` says how long ago in it.
                        let expires_in = expires_at
                            .duration_since(SystemTime::now())
                            .map(|d| d.as_secs())
                            .unwrap_or(0);
                        return Err(DeployError::Busy {
                            app: app.to_string(),
                            owner: crate::store::describe_lease_owner(&holder),
                            since: chrono::DateTime::<chrono::Utc>::from(since)
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            expires_in,
                            waited: start.elapsed().as_secs(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let store = self.store.clone();
        let (app_c, owner_c) = (app.to_string(), owner.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if !matches!(
                    store.renew_lease(app_c.clone(), owner_c.clone(), ttl).await,
                    Ok(true)
                ) {
                    warn!(app = %app_c, "lost the deploy lease");
                    return;
                }
            }
        });
        Ok(Lease {
            app: app.to_string(),
            owner,
            generation,
            renew,
        })
    }
}

pub(super) struct Lease {
    app: String,
    owner: String,
    generation: u64,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// What the holder's release writes carry.
    pub(super) fn fence(&self) -> LeaseFence {
        LeaseFence {
            app: self.app.clone(),
            owner: self.owner.clone(),
            generation: self.generation,
        }
    }

    pub(super) async fn release(self, store: &Store) {
        self.renew.abort();
        if let Err(e) = store
            .release_lease(self.app.clone(), self.owner.clone())
            .await
        {
            warn!(app = %self.app, error = %e, "could not release the deploy lease; it expires by itself");
        }
    }
}

pub(super) fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

pub(super) fn short_id() -> String {
    let mut b = [0u8; 3];
    let _ = aws_lc_rs::rand::fill(&mut b);
    hex::encode(b)
}

/// The one network Berth attaches its containers to on each host. Not one
/// per app: every user-defined network takes an address pool, and Docker's
/// default pools run out after about 30. Components find each other by the
/// alias `COMPONENT.APP` (e.g. `web.shop`).
pub const NETWORK: &str = "berth";

/// The DNS alias of an app's component on [`NETWORK`].
pub fn component_alias(app: &str, component: &str) -> String {
    format!("{component}.{app}")
}

pub(super) fn base_labels(app: &str, digest: &str, release: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED.to_string(),
            labels::MANAGED_VALUE.to_string(),
        ),
        (labels::APP.to_string(), app.to_string()),
        (labels::DIGEST.to_string(), digest.to_string()),
        (labels::RELEASE.to_string(), release.to_string()),
    ])
}

pub(super) fn container_spec(
    target: &Target,
    comp: &Component,
    slot: &Slot,
    release: u64,
    network: &str,
    test_label: bool,
) -> ContainerSpec {
    let app = &target.spec.name;
    let mut l = base_labels(app, &target.digest, release);
    l.insert(labels::COMPONENT.into(), comp.name.clone());
    l.insert(labels::KIND.into(), comp.kind.label().into());
    l.insert(labels::SLOT.into(), slot.slot.to_string());
    l.insert(labels::SPEC_HASH.into(), comp.spec_hash.clone());
    l.insert(labels::HOST.into(), slot.host.clone());
    if test_label {
        l.insert(labels::TEST.into(), "1".into());
    }
    ContainerSpec {
        name: format!(
            "{app}-{}-{}-r{release}-{}",
            comp.name,
            slot.slot,
            short_id()
        ),
        image: target.pinned.clone(),
        command: comp.command.clone(),
        env: comp.env.clone(),
        labels: l,
        http_port: comp.http_port,
        cpus: comp.cpus,
        memory_mb: comp.memory_mb,
        network: Some(network.to_string()),
        network_aliases: vec![component_alias(app, &comp.name)],
        restart: RestartPolicy::UnlessStopped,
        ..Default::default()
    }
}

/// The spec as journaled: secret values replaced by their keys.
pub fn public_spec_json(spec: &AppSpec) -> String {
    let mut s = spec.clone();
    for v in s.secret_env.values_mut() {
        *v = "(secret)".into();
    }
    serde_json::to_string(&s).unwrap_or_default()
}

/// Converts a listed container into the engine's view of it.
pub(super) fn instance(host: &DockerHost, o: &Observed) -> Instance {
    let endpoint = o.published.first().map(|p| {
        let ip = if p.host_ip.is_empty() || p.host_ip == "0.0.0.0" {
            host.publish_address().to_string()
        } else {
            p.host_ip.clone()
        };
        format!("{ip}:{}", p.host_port)
    });
    Instance {
        id: o.id.clone(),
        name: o.name.clone(),
        host: host.name().to_string(),
        component: o.label(labels::COMPONENT).unwrap_or_default().to_string(),
        kind: o.label(labels::KIND).unwrap_or_default().to_string(),
        slot: o.label(labels::SLOT).and_then(|s| s.parse().ok()),
        release: o.label(labels::RELEASE).and_then(|s| s.parse().ok()),
        digest: o.label(labels::DIGEST).unwrap_or_default().to_string(),
        spec_hash: o.label(labels::SPEC_HASH).unwrap_or_default().to_string(),
        image: o.image.clone(),
        health: match &o.state {
            ContainerState::Running => InstanceHealth::Running,
            ContainerState::Restarting => InstanceHealth::Restarting,
            _ => InstanceHealth::Stopped(o.status.clone()),
        },
        endpoint,
        address: o.ip_on(NETWORK).map(str::to_owned),
    }
}

/// The address a host's stable URLs use: its publish address, or when that
/// is every address (`0.0.0.0`), the host's own name from its Docker
/// address (`localhost` for a local socket).
pub fn url_host(host: &DockerHost) -> String {
    match host.publish_address() {
        "0.0.0.0" | "::" => match host.address() {
            HostAddress::Tcp { host, .. } | HostAddress::Ssh { host, .. } => host.clone(),
            HostAddress::Unix { .. } => "localhost".to_owned(),
        },
        other => other.to_owned(),
    }
}
