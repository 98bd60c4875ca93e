//! [`Apps`]: the one API every front end drives — the `berth_app`
//! resource, the `berth` command and the deploy-hook server. It owns the
//! rules above the deploy state machine: the app's registry credential
//! (and that it belongs to the image's registry), resolving an image to its
//! linux/amd64 digest, recording the app (its public spec; and, sealed, its
//! secret values and where it runs, so that a deploy without terraform has
//! the whole spec), deploying (forgetting an app whose first deploy
//! failed), status with drift in words, the releases journal, rollback and
//! destroy. No front end talks to Docker or the store for these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::deploy::{public_spec_json, DeployError, Engine, Outcome, Target};
use super::plan::{self, Drift, Instance};
use super::spec::{AppSpec, Component};
use crate::docker::{DockerError, HostConfig, Hosts, RegistryLogin};
use crate::ingress::IngressSettings;
use crate::reference::Reference;
use crate::registry::{
    Credentials, KnownImage, KnownImages, RegistryClient, RegistryError, ResolvedImage,
};
use crate::store::{AppRecord, ReleaseOutcome, ReleaseRecord, Store, StoreError};

/// The trigger a deploy hook's deploys are journaled with.
pub const HOOK_TRIGGER: &str = "hook";
/// The trigger of `berth rollback`.
pub const ROLLBACK_TRIGGER: &str = "rollback";

/// What the engine keeps private about an app, sealed in its record: the
/// secret values the public spec replaces by `(secret)`, the write-only
/// ones too (they reach Berth's store, never Terraform's state), and where
/// the app was last deployed.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Private {
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    #[serde(default)]
    pub secret_env_wo: BTreeMap<String, String>,
    /// The hosts the app was last deployed to (with their TLS material).
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// The ingress settings it was last deployed with.
    #[serde(default)]
    pub ingress: Option<IngressSettings>,
}

impl std::fmt::Debug for Private {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Private")
            .field("secret_env", &self.secret_env.keys().collect::<Vec<_>>())
            .field(
                "secret_env_wo",
                &self.secret_env_wo.keys().collect::<Vec<_>>(),
            )
            .field("hosts", &self.hosts)
            .field("ingress", &self.ingress)
            .finish()
    }
}

/// An app as Berth recorded it at its last deploy.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub record: AppRecord,
    /// The spec, secret values filled in from the sealed part.
    pub spec: AppSpec,
    pub private: Private,
}

impl Recorded {
    /// The `secret_env` keys whose values the record lacks (recorded by a
    /// Berth that did not keep them), sorted.
    pub fn missing_secrets(&self) -> Vec<&str> {
        self.spec
            .secret_env
            .keys()
            .filter(|k| !self.private.secret_env.contains_key(*k))
            .map(String::as_str)
            .collect()
    }
}

/// The release running now, when a deploy hook made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRelease {
    pub release: u64,
    /// The image the hook deployed (the app's tag, or the call's `imgURL`).
    pub image: String,
    pub digest: String,
    /// Whether that is the app's configured image (a new digest of its
    /// tag): then the app simply runs its tag's newer digest.
    pub configured: bool,
}

/// Words in every drift line about a hook's release of another image.
pub const HOOK_DRIFT_MARK: &str = "came from a deploy hook";

impl HookRelease {
    /// What a plan says about a hook release of another image.
    pub fn words(&self, configured_image: &str) -> String {
        format!(
            "release {} {HOOK_DRIFT_MARK}: {} ({}); the configured image is {configured_image}, which the next apply deploys again",
            self.release, self.image, self.digest
        )
    }
}

/// Whether two references name the same image (after normalization).
pub fn same_image(a: &str, b: &str) -> bool {
    match (Reference::parse(a), Reference::parse(b)) {
        (Ok(a), Ok(b)) => a.to_string() == b.to_string(),
        _ => a == b,
    }
}

/// A failure of an app operation, in words a front end can show as is.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("Berth's store failed: {0}")]
    Store(#[from] StoreError),
    #[error("{}", .0)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("no registry credential {id:?} exists in Berth's store; use the id of a `berth_registry_credential`")]
    NoCredential { id: String },
    #[error("registry credential {id:?} ({name}) is for registry {registry}, but the image is on {image_registry}; use a credential for {image_registry}")]
    WrongRegistry {
        id: String,
        name: String,
        registry: String,
        image_registry: String,
    },
    #[error("Berth has no record of an app named {app:?} (see `berth status`)")]
    NotFound { app: String },
    #[error("release {release} of app {app:?} cannot be deployed again: {why}")]
    Release {
        app: String,
        release: u64,
        why: String,
    },
    #[error("the record of app {app:?} cannot be read: {why}")]
    Unreadable { app: String, why: String },
    #[error("{0}")]
    Invalid(String),
}

/// A deploy to make.
pub struct DeployRequest {
    /// The whole spec, secret values (write-only ones too) included.
    pub spec: AppSpec,
    /// What is deployed: the spec's image, or another tag or digest of the
    /// same repository (a hook's `imgURL`); journaled with the release.
    pub image: Reference,
    /// Its linux/amd64 digest.
    pub digest: String,
    /// `terraform`, `berth apply`, `hook`, `rollback`.
    pub trigger: String,
    /// Whether the spec becomes the app's record.
    pub record: Record,
}

/// What a deploy does with the app's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Keeps it (a hook: the app keeps its configured image and spec).
    Keep,
    /// Creates or replaces it (`berth apply`, a terraform update, rollback).
    Replace,
    /// Creates it, refusing an app that exists (a terraform create: it must
    /// not take over an app that another configuration manages).
    New,
}

/// Berth's store as the registry layer's memory of resolved digests (see
/// [`RegistryClient::resolve_known`]).
pub struct StoredImages<'a>(pub &'a Store);

#[async_trait::async_trait]
impl KnownImages for StoredImages<'_> {
    async fn known(&self, top_digest: &str) -> Option<KnownImage> {
        self.0
            .known_image(top_digest.to_owned())
            .await
            .ok()
            .flatten()
    }

    async fn remember(&self, top_digest: &str, image: &KnownImage) {
        if let Err(error) = self
            .0
            .remember_image(top_digest.to_owned(), image.clone())
            .await
        {
            tracing::debug!(%error, top_digest, "could not remember a resolved image");
        }
    }
}

/// The app operations over one engine and one registry client.
pub struct Apps {
    engine: Engine,
    registry: RegistryClient,
}

impl Apps {
    pub fn new(engine: Engine, registry: RegistryClient) -> Apps {
        Apps { engine, registry }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn store(&self) -> &Store {
        &self.engine.store
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// The registry credentials for `spec`'s `registry_credential_id`
    /// (anonymous without one), checked to be for `image`'s registry, and
    /// the login hosts pull with.
    pub async fn credentials(
        &self,
        spec: &AppSpec,
        image: &Reference,
    ) -> Result<(Credentials, Option<RegistryLogin>), AppsError> {
        let Some(id) = &spec.registry_credential_id else {
            return Ok((Credentials::Anonymous, None));
        };
        let credential = self
            .store()
            .get_credential(id.clone())
            .await?
            .ok_or_else(|| AppsError::NoCredential { id: id.clone() })?;
        let registry = crate::reference::normalize_registry(image.registry())
            .unwrap_or_else(|_| image.registry().to_owned());
        if credential.registry != registry {
            return Err(AppsError::WrongRegistry {
                id: id.clone(),
                name: credential.name,
                registry: credential.registry,
                image_registry: registry,
            });
        }
        let login = RegistryLogin {
            username: credential.username.clone(),
            password: credential.secret.clone(),
            server: crate::registry::docker_server_address(&credential.registry),
        };
        Ok((
            Credentials::basic(credential.username, credential.secret),
            Some(login),
        ))
    }

    /// `image` resolved to its linux/amd64 image with `spec`'s credential;
    /// a digest resolved before costs one `HEAD` request.
    pub async fn resolve(
        &self,
        spec: &AppSpec,
        image: &Reference,
    ) -> Result<ResolvedImage, AppsError> {
        let (credentials, _) = self.credentials(spec, image).await?;
        Ok(self
            .registry
            .resolve_known(image, &credentials, &StoredImages(self.store()))
            .await?)
    }

    /// The app as recorded, its secret values filled in; `None` when Berth
    /// has no record of it.
    pub async fn recorded(&self, app: &str) -> Result<Option<Recorded>, AppsError> {
        let Some(record) = self.store().get_app(app.to_owned()).await? else {
            return Ok(None);
        };
        let unreadable = |why: String| AppsError::Unreadable {
            app: app.to_owned(),
            why,
        };
        let mut spec: AppSpec =
            serde_json::from_str(&record.spec_json).map_err(|e| unreadable(e.to_string()))?;
        let private: Private = match self.store().app_sealed(app.to_owned()).await? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?,
            None => Private::default(),
        };
        for (key, value) in spec.secret_env.iter_mut() {
            if let Some(real) = private.secret_env.get(key) {
                *value = real.clone();
            }
        }
        spec.secret_env_wo = private.secret_env_wo.clone();
        if spec.ingress.is_none() {
            spec.ingress = private.ingress.clone();
        }
        Ok(Some(Recorded {
            record,
            spec,
            private,
        }))
    }

    /// Records `spec` as the app's: the public spec, and sealed its secret
    /// values and this engine's hosts and ingress settings.
    pub async fn record(&self, spec: &AppSpec) -> Result<(), AppsError> {
        self.write_record(spec, Record::Replace).await
    }

    async fn write_record(&self, spec: &AppSpec, how: Record) -> Result<(), AppsError> {
        let (name, credential, json) = (
            spec.name.clone(),
            spec.registry_credential_id.clone(),
            public_spec_json(spec),
        );
        match how {
            Record::Keep => return Ok(()),
            Record::Replace => self.store().upsert_app(name, credential, json).await?,
            Record::New => self.store().create_app(name, credential, json).await?,
        };
        let private = Private {
            secret_env: spec.secret_env.clone(),
            secret_env_wo: spec.secret_env_wo.clone(),
            hosts: self.engine.hosts.configs().to_vec(),
            ingress: Some(self.engine.ingress_settings().clone()),
        };
        let bytes = serde_json::to_vec(&private).map_err(|e| AppsError::Invalid(e.to_string()))?;
        self.store()
            .set_app_sealed(spec.name.clone(), bytes)
            .await?;
        Ok(())
    }

    /// Deploys as `request` says: the pull login from the app's credential,
    /// the record first (so a credential in use cannot be deleted while the
    /// deploy runs), then the state machine. A first deploy that fails
    /// leaves no record behind (nothing of it runs).
    pub async fn deploy(&self, request: DeployRequest) -> Result<Outcome, AppsError> {
        let (_, login) = self.credentials(&request.spec, &request.image).await?;
        let app = request.spec.name.clone();
        let first = request.record == Record::New
            || (request.record == Record::Replace
                && self.store().get_app(app.clone()).await?.is_none());
        self.write_record(&request.spec, request.record).await?;
        let mut journaled = request.spec;
        journaled.image = request.image.to_string();
        let target = Target {
            pinned: request.image.with_digest(&request.digest).to_string(),
            digest: request.digest,
            spec: journaled,
            login,
            trigger: request.trigger,
        };
        match self.engine.deploy(&target).await {
            Ok(mut outcome) => {
                if let (true, Some(cmd)) = (outcome.new_release, &target.spec.post_deploy_command) {
                    match self
                        .deploy_job(&target, "post-deploy", cmd, Some(outcome.release), None)
                        .await
                    {
                        Ok(run) => outcome
                            .steps
                            .push(format!("post-deploy command ran (run {}): {cmd}", run.id)),
                        Err(why) => outcome.warnings.push(format!(
                            "{why}. Release {} stays: it serves; run the command again by hand if needed.",
                            outcome.release
                        )),
                    }
                }
                Ok(outcome)
            }
            Err(e) => {
                if let (true, Some(cmd)) = (e.ran_the_image(), &target.spec.failed_deploy_command) {
                    match self
                        .deploy_job(&target, "failed-deploy", cmd, None, Some(&e.to_string()))
                        .await
                    {
                        Ok(run) => {
                            tracing::info!(app = %app, run = run.id, "failed-deploy command ran")
                        }
                        Err(why) => {
                            tracing::warn!(app = %app, %why, "failed-deploy command failed")
                        }
                    }
                }
                if first {
                    if let Err(forget) = self.store().delete_app(app.clone()).await {
                        tracing::warn!(app = %app, error = %forget, "could not remove the record of a failed first deploy");
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Every difference between `components` at `digest` and the hosts:
    /// the instances and the ingress, in words.
    pub async fn drift(
        &self,
        app: &str,
        components: &[Component],
        digest: &str,
        observed: &[Instance],
        fresh: bool,
    ) -> Result<Vec<Drift>, AppsError> {
        Ok(self
            .engine
            .drift(app, components, digest, observed, fresh)
            .await?)
    }

    /// The release running now, as journaled.
    pub async fn current_release(
        &self,
        app: &str,
        observed: &[Instance],
    ) -> Result<Option<ReleaseRecord>, AppsError> {
        match plan::current_release(observed) {
            Some(n) => Ok(self.store().get_release(app.to_owned(), n).await?),
            None => Ok(None),
        }
    }

    /// The release running now if a deploy hook made it, and whether it
    /// runs `configured_image` (the app's tag) or another image.
    pub async fn hook_release(
        &self,
        app: &str,
        observed: &[Instance],
        configured_image: &str,
    ) -> Result<Option<HookRelease>, AppsError> {
        let Some(current) = self.current_release(app, observed).await? else {
            return Ok(None);
        };
        if current.trigger != HOOK_TRIGGER {
            return Ok(None);
        }
        let image = serde_json::from_str::<serde_json::Value>(&current.spec_json)
            .ok()
            .and_then(|v| v.get("image")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| current.image.clone());
        Ok(Some(HookRelease {
            release: current.release,
            configured: same_image(&image, configured_image),
            image,
            digest: current.digest,
        }))
    }

    /// Deploys release `release` again (default: the newest succeeded one
    /// before the one running now) as a new release with trigger
    /// `rollback`, with the secret values the app has now. Returns the
    /// outcome and the release rolled back to.
    pub async fn rollback(
        &self,
        app: &str,
        release: Option<u64>,
    ) -> Result<(Outcome, ReleaseRecord), AppsError> {
        let observed = self.engine.observe(app, true).await?;
        let current = plan::current_release(&observed);
        let chosen = match release {
            Some(n) => {
                let record = self
                    .store()
                    .get_release(app.to_owned(), n)
                    .await?
                    .ok_or_else(|| AppsError::Release {
                        app: app.to_owned(),
                        release: n,
                        why:
                            "the releases journal has no such release (`berth releases` lists them)"
                                .into(),
                    })?;
                if record.outcome != ReleaseOutcome::Succeeded {
                    return Err(AppsError::Release {
                        app: app.to_owned(),
                        release: n,
                        why: format!(
                            "it ended as {}: its image and spec never served",
                            record.outcome
                        ),
                    });
                }
                record
            }
            None => {
                let all = self.store().list_releases(app.to_owned(), 1000).await?;
                if all.is_empty() && observed.is_empty() {
                    return Err(AppsError::NotFound {
                        app: app.to_owned(),
                    });
                }
                all.into_iter()
                    .find(|r| {
                        r.outcome == ReleaseOutcome::Succeeded
                            && current.is_none_or(|c| r.release < c)
                    })
                    .ok_or_else(|| AppsError::Release {
                        app: app.to_owned(),
                        release: current.unwrap_or(0),
                        why: "the journal holds no succeeded release before the one running now"
                            .into(),
                    })?
            }
        };
        let unreadable = |why: String| AppsError::Release {
            app: app.to_owned(),
            release: chosen.release,
            why,
        };
        let mut spec: AppSpec = serde_json::from_str(&chosen.spec_json)
            .map_err(|e| unreadable(format!("its journaled spec is not a valid app spec: {e}")))?;
        if spec.name != app {
            return Err(unreadable(format!(
                "its journaled spec names app {:?}",
                spec.name
            )));
        }
        let image = Reference::parse(&chosen.image).map_err(|e| {
            unreadable(format!("its journaled image is not a valid reference: {e}"))
        })?;
        // The secret values are the app's current ones (the journal keeps
        // none); a release with a secret the app no longer has cannot run.
        let private = match self.recorded(app).await? {
            Some(r) => r.private,
            None => Private::default(),
        };
        for (key, value) in spec.secret_env.iter_mut() {
            match private.secret_env.get(key) {
                Some(real) => *value = real.clone(),
                None => {
                    return Err(unreadable(format!(
                        "it had the secret {key:?}, which Berth's record of the app no longer holds; apply a spec with it first"
                    )))
                }
            }
        }
        spec.secret_env_wo = private.secret_env_wo.clone();
        let outcome = self
            .deploy(DeployRequest {
                spec,
                image,
                digest: chosen.digest.clone(),
                trigger: ROLLBACK_TRIGGER.to_owned(),
                record: Record::Replace,
            })
            .await?;
        Ok((outcome, chosen))
    }

    /// Removes every container of the app, its routes and its record
    /// (secret values included). Its deploy hooks stay (they are
    /// terraform's to delete) but answer 404 while the app has no record.
    /// Returns what was removed, in words, and whether a record was.
    pub async fn destroy(&self, app: &str) -> Result<(Vec<String>, bool), AppsError> {
        let removed = self.engine.destroy(app).await?;
        let record_deleted = self.store().delete_app(app.to_owned()).await?;
        Ok((removed, record_deleted))
    }

    /// The app operations on the hosts and ingress settings an app was
    /// last deployed with (for a deploy without terraform: a hook's);
    /// `None` without a record of them.
    pub fn on_recorded_hosts(&self, private: &Private) -> Result<Option<Apps>, AppsError> {
        if private.hosts.is_empty() {
            return Ok(None);
        }
        let hosts = Hosts::from_config(&private.hosts)?;
        let mut engine = Engine::new(hosts, self.store().clone())
            .with_test_label(self.engine.test_label)
            .with_lease_timing_of(&self.engine);
        if let Some(pinner) = self.engine.pinner.clone() {
            engine = engine.with_ingress(private.ingress.clone().unwrap_or_default(), pinner);
        }
        Ok(Some(Apps::new(engine, self.registry.clone())))
    }
}
