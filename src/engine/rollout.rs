//! The steps of a deploy from ROLL on, once the lease is held and the plan
//! made: start the new instances (each at a fixed address on Berth's
//! network) and probe them until healthy; SWITCH each host's ingress to the
//! instances that now serve, in one reload per host; MONITOR the new ones
//! briefly while the old proxy workers DRAIN (finish their in-flight
//! requests); then STOP the old instances.
//!
//! Failure before the switch removes the new containers and leaves every
//! ingress as it was. Failure after it (a new instance dies during the
//! monitor window) switches back to the old instances, which are still
//! running, then removes the new ones; a switch back that fails is not
//! retried (a rollback is never rolled back) and says so.
//!
//! Services exposed through the ingress are probed from inside its proxy
//! container, over the path the traffic takes (it works for remote hosts,
//! where the instances' published ports are not reachable from here);
//! private services are probed on their published port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::{info, warn};

use super::deploy::{
    container_spec, ms, DeployError, Engine, Outcome, Phase, Target, NETWORK, STOP_GRACE,
};
use super::plan::{self, Instance, InstanceHealth, Plan, Slot};
use super::probe::{self, Probe};
use super::spec::{Component, HealthCheck, Kind};
use crate::docker::{ContainerState, DockerError, DockerHost, NetworkInfo};
use crate::ingress::{haproxy, routes, AppRoutes, IngressError, IngressHost, ProbeGate};
use crate::labels;

/// How long new instances must keep running after the switch before the
/// old ones are stopped (overlapping the drain).
pub const MONITOR_WINDOW: Duration = Duration::from_millis(1500);
/// Attempts at a free fixed address when another deploy took the one
/// picked (`Address already in use`).
const ADDRESS_ATTEMPTS: usize = 8;

/// An instance this deploy started.
pub(super) struct Started<'c> {
    pub host: DockerHost,
    pub id: String,
    pub name: String,
    pub comp: &'c Component,
    pub slot: Slot,
    /// Its fixed address on Berth's network (`None` on a network without
    /// a subnet of Berth's: read once it runs).
    pub address: Option<String>,
}

/// One host whose ingress this deploy switched.
pub(super) struct Switched {
    pub host: DockerHost,
    /// The app's routes there before (to switch back to).
    pub previous: AppRoutes,
    pub proxy_id: String,
    pub old_workers: Vec<u32>,
    pub steps: Vec<String>,
}

fn docker(phase: Phase) -> impl Fn(DockerError) -> DeployError {
    move |source| DeployError::Docker { phase, source }
}

impl Engine {
    pub(super) async fn execute(
        &self,
        target: &Target,
        components: &[Component],
        plan: &Plan,
        release: u64,
        phases: &mut Vec<(String, u64)>,
    ) -> Result<Outcome, DeployError> {
        let app = &target.spec.name;
        let mut steps = plan.reasons.clone();

        let mut networks = BTreeMap::new();
        for host in self.hosts.iter() {
            let info = host
                .ensure_network(NETWORK, &BTreeMap::new())
                .await
                .map_err(docker(Phase::Roll))?;
            networks.insert(host.name().to_string(), info);
        }

        // The ingress where exposed instances will run: new instances are
        // probed through it.
        let mut proxies = BTreeMap::new();
        for host_name in exposed_hosts(components, plan) {
            if let Some(host) = self.hosts.get(&host_name) {
                let (id, more) = self.ingress_ready(host).await?;
                steps.extend(more);
                proxies.insert(host_name, id);
            }
        }

        // PRE_DEPLOY, once per release, first release included.
        if plan.new_release {
            if let Some(cmd) = &target.spec.pre_deploy_command {
                let t = Instant::now();
                self.pre_deploy(target, cmd, release).await?;
                phases.push(("pre_deploy".to_string(), ms(t)));
                steps.push(format!("pre-deploy command ran: {cmd}"));
            }
        }

        // ROLL: start every new instance, then probe them all.
        let t = Instant::now();
        let mut started = Vec::new();
        let mut taken: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for slot in &plan.start {
            let comp = components
                .iter()
                .find(|c| c.name == slot.component)
                .ok_or_else(|| DeployError::UnknownComponent(slot.component.clone()))?;
            let host = self
                .hosts
                .get(&slot.host)
                .ok_or_else(|| DeployError::NoSuchHost(slot.host.clone()))?
                .clone();
            let network = &networks[host.name()];
            let taken = taken.entry(host.name().to_string()).or_default();
            match self
                .start_instance(target, comp, slot, release, &host, network, taken)
                .await
            {
                Ok(s) => started.push(s),
                Err(source) => {
                    self.remove_all(&started).await;
                    return Err(DeployError::Docker {
                        phase: Phase::Roll,
                        source,
                    });
                }
            }
        }
        let checks = join_all(
            started
                .iter()
                .map(|s| self.wait_healthy(s, proxies.get(s.host.name()))),
        )
        .await;
        let mut addresses = BTreeMap::new();
        for (s, check) in started.iter().zip(checks) {
            match check {
                Ok(address) => {
                    addresses.insert(s.id.clone(), address);
                }
                Err(e) => {
                    self.remove_all(&started).await;
                    return Err(e);
                }
            }
        }
        phases.push(("roll".to_string(), ms(t)));

        // SWITCH: each host's ingress to the instances that serve now.
        let t = Instant::now();
        let serving = serving_after(plan, &started, &addresses, release);
        let switched = match self.switch_hosts(app, components, &serving).await {
            Ok(switched) => switched,
            Err(e) => {
                self.remove_all(&started).await;
                return Err(e);
            }
        };
        if !switched.is_empty() {
            phases.push(("switch".to_string(), ms(t)));
            for s in &switched {
                steps.extend(s.steps.iter().cloned());
                steps.push(format!(
                    "switched the ingress on host {} to the new instances",
                    s.host.name()
                ));
            }
        }

        // MONITOR the new instances while the old proxy workers DRAIN.
        if !switched.is_empty() {
            let t = Instant::now();
            let drain = Duration::from_secs(u64::from(
                components
                    .iter()
                    .filter_map(|c| c.exposure.as_ref())
                    .map(|e| e.drain_seconds)
                    .max()
                    .unwrap_or(0),
            ));
            let (monitored, drained) =
                tokio::join!(self.monitor(&started), self.drain(&switched, drain));
            if let Err(reason) = monitored {
                let back = self.switch_back(app, &switched).await;
                if let Err(e) = &back {
                    warn!(app = %app, error = %e, "switching back failed");
                }
                self.remove_all(&started).await;
                return Err(DeployError::FailedAfterSwitch {
                    reason,
                    switched_back: back.is_ok(),
                });
            }
            steps.extend(drained);
            phases.push(("drain".to_string(), ms(t)));
        }

        // STOP the old instances.
        let t = Instant::now();
        let mut stop_errors = Vec::new();
        let stops = join_all(plan.remove.iter().map(|old| async move {
            match self.hosts.get(&old.host) {
                Some(h) => {
                    let r = h.stop(&old.id, STOP_GRACE).await;
                    let r2 = h.remove(&old.id).await;
                    r.and(r2).map_err(|e| format!("{}: {e}", old.name))
                }
                None => Err(format!(
                    "{}: host {} is no longer configured",
                    old.name, old.host
                )),
            }
        }))
        .await;
        for r in stops {
            if let Err(e) = r {
                warn!(app = %app, error = %e, "could not remove an old instance");
                stop_errors.push(e);
            }
        }
        phases.push(("stop".to_string(), ms(t)));
        for old in &plan.remove {
            steps.push(format!("stopped {} on host {}", old.name, old.host));
        }
        for e in stop_errors {
            steps.push(format!(
                "warning: could not remove {e}; the next plan shows it as drift"
            ));
        }

        let observed = self.observe(app, true).await.map_err(docker(Phase::Stop))?;
        Ok(Outcome {
            app: app.clone(),
            release,
            new_release: plan.new_release,
            digest: target.digest.clone(),
            endpoints: Engine::endpoints(&observed),
            urls: self.urls(components),
            steps,
            phases: phases.clone(),
            warnings: Vec::new(),
        })
    }

    /// Creates and starts one instance at a free fixed address (another
    /// when a concurrent deploy took it).
    #[allow(clippy::too_many_arguments)]
    async fn start_instance<'c>(
        &self,
        target: &Target,
        comp: &'c Component,
        slot: &Slot,
        release: u64,
        host: &DockerHost,
        network: &NetworkInfo,
        taken: &mut BTreeSet<Ipv4Addr>,
    ) -> Result<Started<'c>, DockerError> {
        let mut spec = container_spec(target, comp, slot, release, NETWORK, self.test_label);
        for attempt in 0.. {
            let address = network.free_address_from(taken, address_seed(&spec.name, attempt));
            if let Some(a) = address {
                taken.insert(a);
            }
            spec.ipv4_address = address.map(|a| a.to_string());
            match host.create_and_start(&spec).await {
                Ok(id) => {
                    return Ok(Started {
                        host: host.clone(),
                        id,
                        name: spec.name.clone(),
                        comp,
                        slot: slot.clone(),
                        address: spec.ipv4_address.clone(),
                    })
                }
                Err(e)
                    if address.is_some()
                        && attempt + 1 < ADDRESS_ATTEMPTS
                        && e.to_string().contains("ddress already in use") =>
                {
                    // Taken meanwhile by another deploy on this host; the
                    // failed container was removed again.
                    info!(host = %host.name(), address = ?address, "address taken meanwhile; trying the next");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    async fn remove_all(&self, started: &[Started<'_>]) {
        join_all(started.iter().map(|s| async move {
            if let Err(e) = s.host.remove(&s.id).await {
                warn!(container = %s.name, error = %e, "could not remove a new instance after a failed deploy");
            }
        }))
        .await;
    }

    /// Makes sure `host` runs its ingress (created, started or recreated
    /// with the routes it holds), so new instances can be probed through
    /// it. Returns the proxy container and what was done.
    pub(super) async fn ingress_ready(
        &self,
        host: &DockerHost,
    ) -> Result<(String, Vec<String>), DeployError> {
        let list = self
            .host_list(host, true)
            .await
            .map_err(docker(Phase::Roll))?;
        let ingress = IngressHost::new(host, &self.ingress, self.test_label);
        let view = crate::ingress::IngressView::containers(&list);
        if let Some(proxy) = view.proxy.as_ref().filter(|p| {
            p.state == ContainerState::Running
                && p.label(labels::IMAGE_REF) == Some(self.ingress.image.as_str())
        }) {
            return Ok((proxy.id.clone(), Vec::new()));
        }
        let pinner = self.pinner.as_deref().ok_or(DeployError::NoImagePinner)?;
        let out = ingress
            .switch(&list, None, pinner)
            .await
            .map_err(|source| DeployError::Ingress {
                phase: Phase::Roll,
                source,
            })?;
        self.forget_observations().await;
        Ok((out.proxy_id, out.steps))
    }

    /// Switches every host whose ingress should route the app differently
    /// now; on a failure, the hosts already switched go back.
    async fn switch_hosts(
        &self,
        app: &str,
        components: &[Component],
        serving: &[Instance],
    ) -> Result<Vec<Switched>, DeployError> {
        let serving: Vec<&Instance> = serving.iter().collect();
        let mut switched = Vec::new();
        for host in self.hosts.iter() {
            let desired = plan::desired_routes(app, components, &serving, host.name());
            match self.switch_app(host, app, desired).await {
                Ok(Some(s)) => switched.push(s),
                Ok(None) => {}
                Err(e) => {
                    if let Err(back) = self.switch_back(app, &switched).await {
                        warn!(app = %app, error = %back, "switching the other hosts back failed");
                    }
                    return Err(e);
                }
            }
        }
        Ok(switched)
    }

    /// Gives `app` the routes `desired` on `host` (empty: none; the
    /// ingress stays, with the other apps' routes or none). `None` when nothing had to
    /// change. The ingress serializes the switches of a host itself.
    pub(super) async fn switch_app(
        &self,
        host: &DockerHost,
        app: &str,
        desired: AppRoutes,
    ) -> Result<Option<Switched>, DeployError> {
        let result = self.switch_app_now(host, app, desired).await;
        self.forget_observations().await;
        result
    }

    async fn switch_app_now(
        &self,
        host: &DockerHost,
        app: &str,
        desired: AppRoutes,
    ) -> Result<Option<Switched>, DeployError> {
        let list = self
            .host_list(host, true)
            .await
            .map_err(docker(Phase::Switch))?;
        let ingress = IngressHost::new(host, &self.ingress, self.test_label);
        let view = ingress.view(&list).await.map_err(docker(Phase::Switch))?;
        let previous = view.routes.get(app).cloned().unwrap_or_else(|| AppRoutes {
            app: app.to_owned(),
            services: BTreeMap::new(),
        });
        let exposures = desired
            .services
            .iter()
            .map(|(k, v)| (k.clone(), v.exposure.clone()))
            .collect();
        let refused: Vec<String> = routes::setting_conflicts(&exposures, &self.ingress)
            .iter()
            .map(|c| c.to_string())
            .collect();
        if !refused.is_empty() {
            return Err(DeployError::IngressConflict(refused));
        }
        let mut routes = view.routes.clone();
        if desired.services.is_empty() {
            routes.remove(app);
        } else {
            routes.insert(app.to_owned(), desired.clone());
        }
        // The host's ingress is shared: an app's deploy touches it only when
        // the app's own part differs, or the ingress is not fit to serve it.
        let own_before = view.routes.get(app);
        let own_after = routes.get(app);
        let own_sections_ok = own_after.is_none_or(|own| {
            haproxy::app_sections(view.haproxy_cfg.as_deref().unwrap_or(""), app, own)
                == haproxy::app_sections(&ingress.haproxy_cfg(&routes), app, own)
        });
        let proxy_ok = view.proxy.as_ref().is_some_and(|p| {
            p.state == ContainerState::Running
                && p.label(labels::IMAGE_REF) == Some(self.ingress.image.as_str())
        });
        let has_domains = own_after.is_some_and(|own| {
            own.services
                .values()
                .any(|s| !s.exposure.domains.is_empty())
        });
        let tls_ok = !has_domains
            || match ingress.caddy_json(&routes) {
                Some(cfg) => {
                    view.caddy_json.as_deref() == Some(cfg.as_str())
                        && view.tls.as_ref().is_some_and(|t| {
                            t.state == ContainerState::Running
                                && t.label(labels::IMAGE_REF)
                                    == Some(self.ingress.tls_image.as_str())
                        })
                }
                None => true,
            };
        if own_before == own_after
            && own_sections_ok
            && !view.unreadable
            && (own_after.is_none() || (proxy_ok && tls_ok))
        {
            return Ok(None);
        }
        let pinner = self.pinner.as_deref().ok_or(DeployError::NoImagePinner)?;
        let out = ingress
            .switch_from(&list, Some(view), Some(&desired), pinner)
            .await
            .map_err(|source| match source {
                IngressError::Conflict(c) => {
                    DeployError::IngressConflict(c.iter().map(|c| c.to_string()).collect())
                }
                source => DeployError::Ingress {
                    phase: Phase::Switch,
                    source,
                },
            })?;
        info!(host = %host.name(), app = %app, reloaded = out.changed, "switched the ingress");
        Ok(Some(Switched {
            host: host.clone(),
            previous,
            proxy_id: out.proxy_id,
            old_workers: out.old_workers,
            steps: out.steps,
        }))
    }

    /// Puts the app's previous routes back on every host switched.
    async fn switch_back(&self, app: &str, switched: &[Switched]) -> Result<(), DeployError> {
        let mut first = None;
        for s in switched.iter().rev() {
            if let Err(e) = self.switch_app(&s.host, app, s.previous.clone()).await {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Watches the new instances for [`MONITOR_WINDOW`]: each must keep
    /// running. The reason, with its last log lines, when one does not.
    async fn monitor(&self, started: &[Started<'_>]) -> Result<(), String> {
        if started.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        loop {
            for host in started.iter().map(|s| &s.host).collect::<Vec<_>>() {
                let Ok(list) = host.list_managed().await else {
                    continue;
                };
                for s in started.iter().filter(|s| s.host.name() == host.name()) {
                    let state = list.iter().find(|o| o.id == s.id);
                    let bad = match state {
                        None => Some("disappeared".to_owned()),
                        Some(o) if o.state != ContainerState::Running => {
                            Some(format!("stopped running ({})", o.status))
                        }
                        Some(_) => None,
                    };
                    if let Some(what) = bad {
                        let tail = s.host.log_tail(&s.id, 10).await;
                        let logs = if tail.is_empty() {
                            String::new()
                        } else {
                            format!(" (last log lines: {})", tail.join(" | "))
                        };
                        return Err(format!(
                            "{} on host {} {what} within {:.1}s of taking traffic{logs}",
                            s.name,
                            s.host.name(),
                            start.elapsed().as_secs_f64()
                        ));
                    }
                }
            }
            if start.elapsed() >= MONITOR_WINDOW {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for the old proxy workers of every switched host to finish
    /// their in-flight requests, at most `limit`. Returns steps in words.
    async fn drain(&self, switched: &[Switched], limit: Duration) -> Vec<String> {
        let mut steps = Vec::new();
        for s in switched {
            let proxy = &s.proxy_id;
            let ingress = IngressHost::new(&s.host, &self.ingress, self.test_label);
            let t = Instant::now();
            match ingress.wait_drained(proxy, &s.old_workers, limit).await {
                Ok(true) => {
                    if !s.old_workers.is_empty() {
                        info!(host = %s.host.name(), ms = ms(t), "old proxy workers drained");
                    }
                }
                Ok(false) => steps.push(format!(
                    "warning: requests to the old instances on host {} were still running after drain_seconds ({}s); they were cut",
                    s.host.name(),
                    limit.as_secs()
                )),
                Err(e) => steps.push(format!(
                    "warning: could not watch the drain on host {}: {e}",
                    s.host.name()
                )),
            }
        }
        steps
    }

    /// Waits until a new instance is healthy and returns its address on
    /// Berth's network. Services answer HTTP on `health_check.path` —
    /// through the ingress when exposed (`proxy` is the host's proxy),
    /// else on their published port; workers keep running.
    async fn wait_healthy(
        &self,
        s: &Started<'_>,
        proxy: Option<&String>,
    ) -> Result<Option<String>, DeployError> {
        let comp = s.comp;
        let hc = comp.health_check.clone().unwrap_or_default();
        let interval = Duration::from_secs_f64(hc.interval_seconds);
        let deadline = Duration::from_secs_f64(hc.start_period_seconds);
        let timeout = Duration::from_secs_f64(hc.timeout_seconds);
        let through_ingress = proxy.filter(|_| comp.exposure.is_some());
        let ingress = IngressHost::new(&s.host, &self.ingress, self.test_label);
        let start = Instant::now();
        if let (Some(proxy), Kind::Service, Some(port)) =
            (through_ingress, comp.kind, comp.http_port)
        {
            // One probing command in the proxy for the whole wait, while
            // the container is watched for a crash.
            let address = match &s.address {
                Some(a) => a.clone(),
                None => self.wait_address(s, start, deadline).await?,
            };
            let target = format!("{address}:{port}");
            let probing = ingress.probe_until_healthy(
                proxy,
                &target,
                &hc.path,
                ProbeGate {
                    timeout,
                    interval,
                    healthy_threshold: hc.healthy_threshold,
                    unhealthy_threshold: hc.unhealthy_threshold,
                    start_period: deadline.saturating_sub(start.elapsed()),
                },
            );
            return tokio::select! {
                probed = probing => match probed.map_err(docker(Phase::Roll))? {
                    Ok(_) => Ok(Some(address)),
                    Err(last) => Err(self.unhealthy(s, start, last).await),
                },
                crashed = self.watch_running(s, start) => Err(crashed),
            };
        }
        let mut last = Probe::NoAnswer("not probed yet".into());
        let mut gate = Gate::new(&hc);
        let hard_deadline = gate.hard_deadline(&hc);
        let mut stable_checks = 0u32;
        let mut round = 0u64;
        // Read once, from the same list call that checks the container.
        let mut endpoint: Option<String> = None;
        let mut address = s.address.clone();
        while start.elapsed() < hard_deadline {
            round += 1;
            // Look at the container itself every few rounds (one list
            // call), so a crash fails fast instead of waiting out the start
            // period; every round until what to probe is known.
            let target_unknown = comp.kind == Kind::Service
                && if through_ingress.is_some() {
                    address.is_none()
                } else {
                    endpoint.is_none()
                };
            if comp.kind == Kind::Worker || round % 4 == 1 || target_unknown {
                let list = s.host.list_managed().await.map_err(docker(Phase::Roll))?;
                let Some(o) = list.iter().find(|o| o.id == s.id) else {
                    return Err(self
                        .unhealthy(s, start, "the container disappeared".into())
                        .await);
                };
                match o.state {
                    ContainerState::Running => {}
                    ContainerState::Restarting => {
                        return Err(self
                            .unhealthy(
                                s,
                                start,
                                format!("the container is restarting ({})", o.status),
                            )
                            .await)
                    }
                    _ => {
                        return Err(self
                            .unhealthy(s, start, format!("the container stopped ({})", o.status))
                            .await)
                    }
                }
                if let Some(port) = comp.http_port.and_then(|p| o.host_port(p)) {
                    endpoint = Some(format!("{}:{port}", s.host.publish_address()));
                }
                if address.is_none() {
                    address = o.ip_on(NETWORK).map(str::to_owned);
                }
            }
            match comp.kind {
                Kind::Worker => {
                    if start.elapsed() >= deadline {
                        break;
                    }
                    stable_checks += 1;
                    // Running through four checks about a second apart.
                    if stable_checks >= 4 {
                        return Ok(address);
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Kind::Service => {
                    let probed = match (through_ingress, &address, &endpoint, comp.http_port) {
                        (Some(proxy), Some(ip), _, Some(port)) => Some(
                            match ingress
                                .probe(proxy, &format!("{ip}:{port}"), &hc.path, timeout)
                                .await
                                .map_err(docker(Phase::Roll))?
                            {
                                Ok(line) => probe::parse_status(line.as_bytes()),
                                Err(why) => Probe::NoAnswer(why),
                            },
                        ),
                        (None, _, Some(addr), _) => {
                            Some(probe::http_get(addr, &hc.path, timeout).await)
                        }
                        _ => None,
                    };
                    if let Some(p) = probed {
                        last = p;
                        match gate.record(last.is_healthy(), start.elapsed() >= deadline) {
                            GateVerdict::Healthy => return Ok(address),
                            GateVerdict::Unhealthy => {
                                return Err(self.unhealthy(s, start, gate.why(&last)).await)
                            }
                            GateVerdict::Undecided => {}
                        }
                    } else if start.elapsed() >= deadline {
                        break;
                    }
                    tokio::time::sleep(interval).await;
                }
            }
        }
        Err(self.unhealthy(s, start, last.to_string()).await)
    }

    /// Returns once the new container is not running any more, with why.
    async fn watch_running(&self, s: &Started<'_>, start: Instant) -> DeployError {
        loop {
            match s.host.list_managed().await {
                Ok(list) => match list.iter().find(|o| o.id == s.id) {
                    None => {
                        return self
                            .unhealthy(s, start, "the container disappeared".into())
                            .await
                    }
                    Some(o) if o.state == ContainerState::Restarting => {
                        return self
                            .unhealthy(
                                s,
                                start,
                                format!("the container is restarting ({})", o.status),
                            )
                            .await
                    }
                    Some(o) if o.state != ContainerState::Running => {
                        return self
                            .unhealthy(s, start, format!("the container stopped ({})", o.status))
                            .await
                    }
                    Some(_) => {}
                },
                Err(e) => {
                    return DeployError::Docker {
                        phase: Phase::Roll,
                        source: e,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The container's address on Berth's network once it runs (on a
    /// network without Berth's subnet, where addresses are not fixed).
    async fn wait_address(
        &self,
        s: &Started<'_>,
        start: Instant,
        deadline: Duration,
    ) -> Result<String, DeployError> {
        while start.elapsed() < deadline {
            let list = s.host.list_managed().await.map_err(docker(Phase::Roll))?;
            match list.iter().find(|o| o.id == s.id) {
                Some(o) if o.state == ContainerState::Running => {
                    if let Some(ip) = o.ip_on(NETWORK) {
                        return Ok(ip.to_owned());
                    }
                }
                Some(o) => {
                    return Err(self
                        .unhealthy(
                            s,
                            start,
                            format!("the container is not running ({})", o.status),
                        )
                        .await)
                }
                None => {
                    return Err(self
                        .unhealthy(s, start, "the container disappeared".into())
                        .await)
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(self
            .unhealthy(s, start, "it got no address on Berth's network".into())
            .await)
    }

    async fn unhealthy(&self, s: &Started<'_>, start: Instant, last_probe: String) -> DeployError {
        DeployError::Unhealthy {
            instance: s.name.clone(),
            host: s.host.name().to_string(),
            waited: start.elapsed().as_secs_f64(),
            last_probe,
            log_tail: s.host.log_tail(&s.id, 20).await,
        }
    }
}

/// Where an instance's scan for a free address starts: spread by its
/// container name (unique per release and slot) and the attempt, so
/// concurrent deploys on one host rarely ask for the same address.
fn address_seed(container: &str, attempt: usize) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{container}#{attempt}").as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// The health gate's count of probes in a row: healthy after
/// `healthy_threshold` successes; unhealthy once `unhealthy_threshold`
/// probes failed in a row after the start period (failures before it do
/// not count, as in Docker's HEALTHCHECK).
#[derive(Debug)]
pub(crate) struct Gate {
    need_healthy: u32,
    need_unhealthy: u32,
    successes: u32,
    failures: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GateVerdict {
    Healthy,
    Unhealthy,
    Undecided,
}

impl Gate {
    pub(crate) fn new(hc: &HealthCheck) -> Gate {
        Gate {
            need_healthy: hc.healthy_threshold.max(1),
            need_unhealthy: hc.unhealthy_threshold.max(1),
            successes: 0,
            failures: 0,
        }
    }

    /// Counts one probe.
    pub(crate) fn record(&mut self, healthy: bool, after_start_period: bool) -> GateVerdict {
        if healthy {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= self.need_healthy {
                return GateVerdict::Healthy;
            }
        } else {
            self.successes = 0;
            if after_start_period {
                self.failures += 1;
                if self.failures >= self.need_unhealthy {
                    return GateVerdict::Unhealthy;
                }
            }
        }
        GateVerdict::Undecided
    }

    /// The wait's bound whatever the probes do (a flapping instance): the
    /// start period, then room for both thresholds' probes.
    pub(crate) fn hard_deadline(&self, hc: &HealthCheck) -> Duration {
        let per_probe = Duration::from_secs_f64(hc.interval_seconds + hc.timeout_seconds);
        Duration::from_secs_f64(hc.start_period_seconds)
            + per_probe * (self.need_healthy + self.need_unhealthy)
    }

    /// The last probe, and how many failed in a row after the start period.
    pub(crate) fn why(&self, last: &impl std::fmt::Display) -> String {
        format!(
            "{last}; {} probe{} in a row failed after the start period (unhealthy_threshold)",
            self.failures,
            if self.failures == 1 { "" } else { "s" }
        )
    }
}

/// Hosts where exposed instances will run after the plan.
fn exposed_hosts(components: &[Component], plan: &Plan) -> BTreeSet<String> {
    let exposed: BTreeSet<&str> = components
        .iter()
        .filter(|c| c.exposure.is_some() && c.instances > 0)
        .map(|c| c.name.as_str())
        .collect();
    plan.start
        .iter()
        .filter(|s| exposed.contains(s.component.as_str()))
        .map(|s| s.host.clone())
        .chain(
            plan.keep
                .iter()
                .filter(|i| exposed.contains(i.component.as_str()))
                .map(|i| i.host.clone()),
        )
        .collect()
}

/// The instances that take traffic after the switch: the ones kept and
/// the ones started, as the engine sees instances.
fn serving_after(
    plan: &Plan,
    started: &[Started<'_>],
    addresses: &BTreeMap<String, Option<String>>,
    release: u64,
) -> Vec<Instance> {
    let mut out: Vec<Instance> = plan
        .keep
        .iter()
        .filter(|i| !plan.remove.iter().any(|r| r.id == i.id))
        .cloned()
        .collect();
    for s in started {
        out.push(Instance {
            id: s.id.clone(),
            name: s.name.clone(),
            host: s.host.name().to_string(),
            component: s.comp.name.clone(),
            kind: s.comp.kind.label().to_string(),
            slot: Some(s.slot.slot),
            release: Some(release),
            digest: String::new(),
            spec_hash: s.comp.spec_hash.clone(),
            image: String::new(),
            health: InstanceHealth::Running,
            endpoint: None,
            address: addresses
                .get(&s.id)
                .cloned()
                .flatten()
                .or_else(|| s.address.clone()),
        });
    }
    out
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    fn hc(healthy: u32, unhealthy: u32) -> HealthCheck {
        HealthCheck {
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            ..HealthCheck::default()
        }
    }

    #[test]
    fn failures_count_only_after_the_start_period_and_in_a_row() {
        let mut gate = Gate::new(&hc(2, 3));
        for _ in 0..10 {
            assert_eq!(gate.record(false, false), GateVerdict::Undecided);
        }
        assert_eq!(gate.record(false, true), GateVerdict::Undecided);
        assert_eq!(gate.record(false, true), GateVerdict::Undecided);
        // A success breaks the run of failures ...
        assert_eq!(gate.record(true, true), GateVerdict::Undecided);
        assert_eq!(gate.record(false, true), GateVerdict::Undecided);
        assert_eq!(gate.record(false, true), GateVerdict::Undecided);
        // ... so the third failure in a row is the one that counts.
        assert_eq!(gate.record(false, true), GateVerdict::Unhealthy);
        assert!(gate.why(&"HTTP 500").contains("3 probes in a row failed"));
    }

    #[test]
    fn successes_in_a_row_make_it_healthy() {
        let mut gate = Gate::new(&hc(2, 1));
        assert_eq!(gate.record(true, false), GateVerdict::Undecided);
        assert_eq!(gate.record(false, false), GateVerdict::Undecided);
        assert_eq!(gate.record(true, false), GateVerdict::Undecided);
        assert_eq!(gate.record(true, false), GateVerdict::Healthy);
        let mut once = Gate::new(&hc(1, 1));
        assert_eq!(once.record(false, true), GateVerdict::Unhealthy);
    }

    #[test]
    fn the_wait_is_bounded_past_the_start_period() {
        let check = HealthCheck {
            interval_seconds: 0.25,
            timeout_seconds: 1.0,
            start_period_seconds: 10.0,
            ..hc(1, 3)
        };
        let gate = Gate::new(&check);
        assert_eq!(gate.hard_deadline(&check), Duration::from_secs(15));
    }
}
