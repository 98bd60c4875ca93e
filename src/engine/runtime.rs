//! The engine's interface to where apps run ([`Runtime`]), owned by the
//! engine, and its two implementations: containers that Berth places on
//! Docker hosts itself ([`Containers`], a host's `mode = "containers"`)
//! and Swarm services that the cluster places ([`SwarmServices`],
//! `mode = "swarm"`).
//!
//! The engine keeps what both share: the spec and its validation, the
//! app's lease and the journal around every deploy and destroy, and the
//! ingress (its routes are data, `ingress::routes`; each runtime says which
//! instances take a service's requests). A runtime observes what runs,
//! finds the drift, prepares a deploy before the lease (pulls on hosts;
//! checks on Swarm, whose nodes pull), converges under the lease (plan from
//! what runs, the pre-deploy job, roll, scale, stop) and destroys.
//! Placement belongs to the runtime.

use super::deploy::{DeployError, Engine, Outcome, Phase, Target};
use super::plan::{self, Drift, Instance};
use super::spec::Component;
use crate::docker::{DockerError, DockerHost};
use crate::store::LeaseFence;

/// One backend of the engine.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// The app's instances as they run (from a short cache unless
    /// `fresh`, so a refresh of many apps lists each host once).
    async fn observe(&self, app: &str, fresh: bool) -> Result<Vec<Instance>, DockerError>;

    /// Every difference between `components` at `digest` and what runs
    /// (`observed`, from [`Runtime::observe`]), the ingress included, in
    /// words.
    async fn drift(
        &self,
        app: &str,
        components: &[Component],
        digest: &str,
        observed: &[Instance],
        fresh: bool,
    ) -> Result<Vec<Drift>, DockerError>;

    /// What a deploy does before it takes the app's lease: what can be
    /// refused without waiting for it, and what takes long and needs no
    /// lock (the image on every host).
    async fn prepare(
        &self,
        target: &Target,
        components: &[Component],
        phases: &mut Vec<(String, u64)>,
    ) -> Result<(), DeployError>;

    /// Under the app's lease (`fence`): plans from what runs, and converges
    /// the app onto `target` (a new release journaled, or a repair).
    async fn converge(
        &self,
        target: &Target,
        components: &[Component],
        phases: &mut Vec<(String, u64)>,
        fence: LeaseFence,
    ) -> Result<Outcome, DeployError>;

    /// Under the app's lease: removes the app's routes, then its instances,
    /// and nothing else. Succeeds when nothing is left.
    async fn destroy(&self, app: &str) -> Result<Vec<String>, DeployError>;
}

/// Containers on the configured Docker hosts, placed by Berth.
pub struct Containers<'a>(pub &'a Engine);

/// Services of the Swarm whose manager is the configured host.
pub struct SwarmServices<'a> {
    pub engine: &'a Engine,
    pub manager: &'a DockerHost,
}

impl Engine {
    /// The runtime of the configured hosts.
    pub fn runtime(&self) -> Box<dyn Runtime + '_> {
        match self.swarm_manager() {
            Some(manager) => Box::new(SwarmServices {
                engine: self,
                manager,
            }),
            None => Box::new(Containers(self)),
        }
    }
}

#[async_trait::async_trait]
impl Runtime for Containers<'_> {
    async fn observe(&self, app: &str, fresh: bool) -> Result<Vec<Instance>, DockerError> {
        self.0.observe_containers(app, fresh).await
    }

    async fn drift(
        &self,
        app: &str,
        components: &[Component],
        digest: &str,
        observed: &[Instance],
        fresh: bool,
    ) -> Result<Vec<Drift>, DockerError> {
        let mut drift = plan::drift(components, digest, &self.0.host_names(), observed);
        drift.extend(
            self.0
                .ingress_drift(app, components, observed, fresh)
                .await?,
        );
        Ok(drift)
    }

    async fn prepare(
        &self,
        target: &Target,
        _components: &[Component],
        phases: &mut Vec<(String, u64)>,
    ) -> Result<(), DeployError> {
        // PULL, on every host at once.
        let t = std::time::Instant::now();
        let pulls = futures::future::join_all(
            self.0
                .hosts
                .iter()
                .map(|h| h.pull(&target.pinned, target.login.clone())),
        )
        .await;
        for r in pulls {
            r.map_err(|source| DeployError::Docker {
                phase: Phase::Pull,
                source,
            })?;
        }
        phases.push(("pull".to_string(), super::deploy::ms(t)));
        Ok(())
    }

    async fn converge(
        &self,
        target: &Target,
        components: &[Component],
        phases: &mut Vec<(String, u64)>,
        fence: LeaseFence,
    ) -> Result<Outcome, DeployError> {
        self.0
            .locked_deploy(target, components, phases, fence)
            .await
    }

    async fn destroy(&self, app: &str) -> Result<Vec<String>, DeployError> {
        self.0.destroy_containers(app).await
    }
}

#[async_trait::async_trait]
impl Runtime for SwarmServices<'_> {
    async fn observe(&self, app: &str, fresh: bool) -> Result<Vec<Instance>, DockerError> {
        self.engine.observe_swarm(self.manager, app, fresh).await
    }

    async fn drift(
        &self,
        app: &str,
        components: &[Component],
        digest: &str,
        _observed: &[Instance],
        fresh: bool,
    ) -> Result<Vec<Drift>, DockerError> {
        self.engine
            .swarm_drift(self.manager, app, components, digest, fresh)
            .await
    }

    async fn prepare(
        &self,
        target: &Target,
        components: &[Component],
        _phases: &mut Vec<(String, u64)>,
    ) -> Result<(), DeployError> {
        // Swarm's nodes pull the pinned image themselves, with the
        // credentials sent along with the service.
        self.engine
            .check_swarm_deploy(self.manager, target, components)
            .await
    }

    async fn converge(
        &self,
        target: &Target,
        components: &[Component],
        phases: &mut Vec<(String, u64)>,
        fence: LeaseFence,
    ) -> Result<Outcome, DeployError> {
        self.engine
            .locked_swarm_deploy(self.manager, target, components, phases, fence)
            .await
    }

    async fn destroy(&self, app: &str) -> Result<Vec<String>, DeployError> {
        self.engine.destroy_swarm(self.manager, app).await
    }
}
