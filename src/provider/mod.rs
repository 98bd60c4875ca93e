//! Terraform's view of Berth, with no protocol types: schemas with a
//! Markdown description on every attribute, typed values with
//! known/null/unknown, diagnostics with attribute paths, and one file per
//! data source, resource and function. `crate::tfplugin` decodes requests
//! into these types and encodes the answers.

pub mod config;
pub mod data_image;
pub mod diag;
pub mod docs;
pub mod functions;
pub mod prefetch;
pub mod resource;
pub mod resource_app;
pub mod resource_deploy_hook;
pub mod resource_registry_credential;
pub mod schema;
pub mod value;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryOptions, ResolvedImage};
use crate::store::{process_env, Store, StoreOptions};
use config::ProviderConfig;
use diag::{Diagnostic, Diagnostics};
use resource::{Plan, Resource};
use schema::{FunctionSignature, Schema};
use value::Value;

/// The Terraform source address of this provider.
pub const SOURCE_ADDRESS: &str = "registry.terraform.io/berth/berth";
/// The provider's local name and resource prefix.
pub const NAME: &str = "berth";

/// Everything a configured provider shares with its data sources and
/// resources: one registry client per process, the parsed configuration.
pub struct Context {
    pub config: ProviderConfig,
    pub registry: RegistryClient,
    /// Opened on first use (a configuration that resolves no image and
    /// has no Berth resource never touches the state directory).
    store: tokio::sync::OnceCell<Store>,
    /// Built on first use from the configured hosts (no I/O until then).
    apps: tokio::sync::OnceCell<crate::engine::Apps>,
    /// Resources refreshed (ReadResource) by this process. terraform
    /// refreshes before a real plan, never before the re-plan it makes at
    /// apply time: that is how the two are told apart.
    refreshed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Image resolutions by (reference, credential id), shared by every
    /// data source and app of one terraform command that names the same
    /// image: one registry round trip each, and one answer per plan.
    resolutions: Mutex<HashMap<ResolutionKey, Arc<Resolution>>>,
    /// Public ports and domains claimed by the apps planned by this
    /// process, by (host, port or domain): two apps of one configuration
    /// claiming the same are refused at plan time, before either exists.
    claims: Mutex<HashMap<(String, String), String>>,
    /// What the last plan of this configuration resolved, and what this
    /// process's plans resolve (see [`prefetch`]).
    hints: prefetch::PlanHints,
    /// Answers to the `HEAD` request for a reference (the digest it names
    /// now, `None` when it failed), by the same key as `resolutions`:
    /// sent early for the images the last plan resolved, awaited by the
    /// resolution that needs one, never sent twice.
    heads: Mutex<HashMap<ResolutionKey, (Instant, Arc<HeadAnswer>)>>,
    /// Early requests in flight per registry host, at most
    /// [`EARLY_REQUESTS_PER_REGISTRY`].
    gates: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

type HeadAnswer = tokio::sync::OnceCell<Option<String>>;

/// Early `HEAD` requests in flight to one registry at a time. A plan's own
/// requests (at most terraform's parallelism) do not wait for these.
const EARLY_REQUESTS_PER_REGISTRY: usize = 64;

/// A resource's schema and its value type, built once per process.
pub type ResourceSchema = Arc<(Schema, schema::Type)>;

/// A canonical image reference and the id of the credential used for it.
type ResolutionKey = (String, Option<String>);

pub use crate::engine::apps::StoredImages;

/// How long a resolution made by this process answers later questions
/// about the same reference. A provider process lives for one terraform
/// command; this bounds the reuse for long-lived ones (`terraform console`).
const RESOLUTION_REUSE: Duration = Duration::from_secs(60);

/// One image resolution, awaited by everyone who asks while it runs.
/// Only a success is kept: after a failure the next caller asks again.
struct Resolution {
    started: Instant,
    result: tokio::sync::OnceCell<ResolvedImage>,
}

impl Context {
    pub fn new(config: ProviderConfig) -> Context {
        let registry = RegistryClient::new(RegistryOptions {
            insecure_registries: config.insecure_registries.clone(),
        });
        Context {
            config,
            registry,
            store: tokio::sync::OnceCell::new(),
            apps: tokio::sync::OnceCell::new(),
            refreshed: Default::default(),
            resolutions: Default::default(),
            claims: Default::default(),
            hints: prefetch::PlanHints::default(),
            heads: Default::default(),
            gates: Default::default(),
        }
    }

    /// Keeps what plans resolve in the hint file at `path` (see
    /// [`prefetch`]).
    pub fn with_plan_hints(mut self, path: Option<std::path::PathBuf>) -> Context {
        self.hints = prefetch::PlanHints::at(path);
        self
    }

    /// Writes the hint file (at the end of the process), when this
    /// process planned apps.
    pub fn save_plan_hints(&self) {
        self.hints.save();
    }

    /// Records that `app` claims `listener` (a port or a domain) on
    /// `host`; the app that claimed it first in this process if another.
    pub fn claim(&self, host: &str, listener: &str, app: &str) -> Option<String> {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        let key = (host.to_owned(), listener.to_owned());
        match claims.get(&key) {
            Some(owner) if owner != app => Some(owner.clone()),
            _ => {
                claims.insert(key, app.to_owned());
                None
            }
        }
    }

    /// Resolves `reference` to its linux/amd64 image with the credential
    /// `credential_id` names (anonymous when null). A resolution of the
    /// same reference and credential that this process started less than
    /// a minute ago answers instead of a new registry request, so a plan
    /// asks the registry once per image however many apps and data
    /// sources name it, and they all see the same digest. Errors point at
    /// `image` (registry answers) or `registry_credential_id` (the
    /// credential).
    pub async fn resolve_image(
        &self,
        reference: &Reference,
        credential_id: &Value,
    ) -> Result<ResolvedImage, Diagnostics> {
        let credentials = self
            .credentials_for(
                credential_id,
                reference.registry(),
                diag::AttributePath::root("registry_credential_id"),
            )
            .await?;
        let key = (
            reference.to_string(),
            credential_id.as_str().map(str::to_owned),
        );
        let slot = {
            let mut slots = self
                .resolutions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match slots.get(&key) {
                Some(slot) if slot.started.elapsed() < RESOLUTION_REUSE => slot.clone(),
                _ => {
                    let slot = Arc::new(Resolution {
                        started: Instant::now(),
                        result: tokio::sync::OnceCell::new(),
                    });
                    slots.insert(key.clone(), slot.clone());
                    slot
                }
            }
        };
        slot.result
            .get_or_try_init(|| async {
                // Without a store (an unusable state directory) every plan
                // resolves in full; the resources report the store's error.
                match self.store().await {
                    Ok(store) => {
                        // The HEAD sent early, or sent now and shared.
                        let head = self
                            .head_answer(key.clone())
                            .get_or_init(|| async {
                                self.registry
                                    .manifest_digest(reference, &credentials)
                                    .await
                                    .ok()
                            })
                            .await
                            .clone();
                        self.registry
                            .resolve_known_after(
                                reference,
                                &credentials,
                                &StoredImages(store),
                                head,
                            )
                            .await
                    }
                    Err(_) => self.registry.resolve(reference, &credentials).await,
                }
            })
            .await
            .cloned()
            .map_err(|e| {
                Diagnostic::error(e.summary(), e.to_string())
                    .at(diag::AttributePath::root("image"))
                    .into()
            })
    }

    /// [`Context::resolve_image`] for a `berth_app`'s plan: notes the image
    /// for the next plan of this configuration and, the first time this
    /// process plans one, sends the `HEAD` requests for every image the
    /// last plan resolved, so that the apps terraform has not reached yet
    /// find their answers waiting instead of each waiting its turn.
    pub async fn resolve_planned_image(
        &self,
        reference: &Reference,
        credential_id: &Value,
    ) -> Result<ResolvedImage, Diagnostics> {
        let early = self.hints.note(prefetch::HintEntry {
            image: reference.to_string(),
            credential: credential_id.as_str().map(str::to_owned),
        });
        if !early.is_empty() {
            self.send_early(early).await;
        }
        self.resolve_image(reference, credential_id).await
    }

    /// Starts a `HEAD` request for each entry, bounded per registry; an
    /// entry that no longer names a usable reference or credential is
    /// skipped (its app, if any, asks and reports for itself).
    async fn send_early(&self, entries: Vec<prefetch::HintEntry>) {
        let mut sent = 0_usize;
        // A credential named by many entries is read from the store once
        // per registry (the check that it belongs there is per registry).
        let mut stored: HashMap<(Option<String>, String), Option<crate::registry::Credentials>> =
            HashMap::new();
        for entry in entries {
            let Ok(reference) = Reference::parse(&entry.image) else {
                continue;
            };
            let lookup = (entry.credential.clone(), reference.registry().to_owned());
            let credentials = match stored.get(&lookup) {
                Some(found) => found.clone(),
                None => {
                    let id = entry
                        .credential
                        .as_deref()
                        .map_or(Value::Null, Value::string);
                    let found = self
                        .credentials_for(
                            &id,
                            reference.registry(),
                            diag::AttributePath::root("registry_credential_id"),
                        )
                        .await
                        .ok();
                    stored.insert(lookup, found.clone());
                    found
                }
            };
            let Some(credentials) = credentials else {
                continue;
            };
            let answer = self.head_answer((reference.to_string(), entry.credential));
            if answer.initialized() {
                continue;
            }
            let gate = self.gate(reference.registry());
            let registry = self.registry.clone();
            sent += 1;
            tokio::spawn(async move {
                let Ok(_permit) = gate.acquire_owned().await else {
                    return;
                };
                answer
                    .get_or_init(|| async {
                        registry
                            .manifest_digest(&reference, &credentials)
                            .await
                            .ok()
                    })
                    .await;
            });
        }
        tracing::debug!(
            images = sent,
            "sent the image requests of the last plan of this configuration early"
        );
    }

    /// The `HEAD` answer slot for `key`: the one sent early or asked for
    /// by this process within [`RESOLUTION_REUSE`], else a new one.
    fn head_answer(&self, key: ResolutionKey) -> Arc<HeadAnswer> {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        match heads.get(&key) {
            Some((started, answer)) if started.elapsed() < RESOLUTION_REUSE => answer.clone(),
            _ => {
                let answer = Arc::new(HeadAnswer::new());
                heads.insert(key, (Instant::now(), answer.clone()));
                answer
            }
        }
    }

    fn gate(&self, registry: &str) -> Arc<tokio::sync::Semaphore> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates
            .entry(registry.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(EARLY_REQUESTS_PER_REGISTRY)))
            .clone()
    }

    /// Notes that `key` was refreshed by this process.
    pub fn mark_refreshed(&self, key: &str) {
        if let Ok(mut set) = self.refreshed.lock() {
            set.insert(key.to_string());
        }
    }

    /// Whether `key` was refreshed by this process.
    pub fn was_refreshed(&self, key: &str) -> bool {
        self.refreshed
            .lock()
            .map(|s| s.contains(key))
            .unwrap_or(false)
    }

    /// The deploy engine over the configured Docker hosts (default: one
    /// host `local` at `$DOCKER_HOST` or the local socket).
    pub async fn engine(&self) -> Result<&crate::engine::Engine, Diagnostics> {
        Ok(self.apps().await?.engine())
    }

    /// The app operations over the engine and this process's registry
    /// client.
    pub async fn apps(&self) -> Result<&crate::engine::Apps, Diagnostics> {
        let store = self.store().await?.clone();
        self.apps
            .get_or_try_init(|| async {
                let configs: Vec<crate::docker::HostConfig> = self
                    .config
                    .hosts
                    .iter()
                    .map(|(name, h)| {
                        let mut c = crate::docker::HostConfig::new(name.clone(), h.address.clone());
                        if let Some(p) = &h.publish_address {
                            c.publish_address = p.clone();
                        }
                        c.tls = h.tls.clone();
                        c.mode = h.mode;
                        c
                    })
                    .collect();
                let docker_host = std::env::var("DOCKER_HOST").ok();
                let hosts =
                    crate::docker::Hosts::from_config_or_local(&configs, docker_host.as_deref())
                        .map_err(|e| format!("{e}. Check the provider's `hosts`."))?;
                let engine = crate::engine::Engine::new(hosts, store)
                    .with_test_label(process_env(crate::engine::deploy::TEST_LABEL_ENV).is_some())
                    .with_lease_timing_from(&process_env)?
                    .with_ingress(self.config.ingress.clone(), Arc::new(self.registry.clone()));
                Ok::<_, String>(crate::engine::Apps::new(engine, self.registry.clone()))
            })
            .await
            .map_err(|e| Diagnostic::error("Cannot set up the Docker hosts", e).into())
    }

    /// Berth's store in the configured state directory.
    pub async fn store(&self) -> Result<&Store, Diagnostics> {
        self.store
            .get_or_try_init(|| async {
                let opts = StoreOptions::from_env_with_store(
                    self.config.state_dir.as_deref(),
                    self.config.store.as_ref(),
                    &process_env,
                )?;
                Store::open(opts).await
            })
            .await
            .map_err(|e| {
                let hint = if self.config.store.is_some() {
                    "The store is the provider's `store`."
                } else {
                    "The store is the provider's `store`, else `BERTH_STORE`, else `berth.db` in the state directory: the provider's `state_dir`, else `BERTH_STATE_DIR`, else `$XDG_DATA_HOME/berth` or `~/.local/share/berth`."
                };
                let diag = Diagnostic::error("Cannot open Berth's state", format!("{e}. {hint}"));
                if self.config.store.is_some() {
                    diag.at(diag::AttributePath::root("store")).into()
                } else {
                    diag.into()
                }
            })
    }

    /// The registry credential `id` from Berth's store; `path` is the
    /// attribute that names it, for the not-found diagnostic.
    pub async fn stored_credential(
        &self,
        id: &str,
        path: diag::AttributePath,
    ) -> Result<crate::store::Credential, Diagnostics> {
        self.store()
            .await?
            .get_credential(id.to_string())
            .await
            .map_err(resource_registry_credential::store_diag)?
            .ok_or_else(|| {
                Diagnostic::error(
                    "Registry credential not found",
                    format!("No registry credential {id:?} exists in Berth's store. Use the `id` of a `berth_registry_credential` resource."),
                )
                .at(path)
                .into()
            })
    }

    /// The credentials for `registry_credential_id` (anonymous when null),
    /// checked to belong to the image's registry. `path` is the attribute
    /// that holds the id, for diagnostics.
    pub async fn credentials_for(
        &self,
        id: &Value,
        image_registry: &str,
        path: diag::AttributePath,
    ) -> Result<crate::registry::Credentials, Diagnostics> {
        let Some(id) = id.as_str() else {
            return Ok(crate::registry::Credentials::Anonymous);
        };
        let cred = self.stored_credential(id, path.clone()).await?;
        let image_registry = crate::reference::normalize_registry(image_registry)
            .unwrap_or_else(|_| image_registry.to_string());
        if cred.registry != image_registry {
            return Err(Diagnostic::error(
                "Registry credential is for another registry",
                format!(
                    "Credential {id:?} ({}) is for registry {}, but the image is on {image_registry}. Use a credential for {image_registry}.",
                    cred.name, cred.registry
                ),
            )
            .at(path)
            .into());
        }
        Ok(crate::registry::Credentials::basic(
            cred.username,
            cred.secret,
        ))
    }
}

/// A data source: a schema and a read.
#[async_trait]
pub trait DataSource: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn schema(&self) -> Schema;
    /// Checks a configuration that may still hold unknown values; unknowns
    /// are never an error.
    fn validate(&self, _config: &Value) -> Diagnostics {
        Diagnostics::default()
    }
    /// Reads the data. `config` may hold unknowns when terraform defers.
    async fn read(&self, ctx: &Context, config: &Value) -> Result<Value, Diagnostics>;
}

/// A function's failure, pointing at the argument at fault when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionError {
    pub text: String,
    pub argument: Option<i64>,
}

/// A provider function (`provider::berth::NAME(...)`).
pub trait Function: Send + Sync {
    fn name(&self) -> &'static str;
    fn signature(&self) -> FunctionSignature;
    fn call(&self, args: &[Value]) -> Result<Value, FunctionError>;
}

/// The Berth provider: its schemas and the dispatch of each operation.
pub struct Provider {
    data_sources: BTreeMap<&'static str, Box<dyn DataSource>>,
    resources: BTreeMap<&'static str, Box<dyn Resource>>,
    functions: BTreeMap<&'static str, Box<dyn Function>>,
    /// Each resource's schema and value type, built once: every request
    /// decodes and encodes with them, several times per app in a plan.
    schemas: BTreeMap<&'static str, ResourceSchema>,
    context: RwLock<Option<Arc<Context>>>,
    stop: watch::Sender<bool>,
}

impl Default for Provider {
    fn default() -> Self {
        Provider::new()
    }
}

impl Provider {
    /// Berth's provider: its data sources, resources and functions.
    pub fn new() -> Provider {
        Provider::from_parts(
            vec![Box::new(data_image::ImageDataSource)],
            vec![
                Box::new(resource_app::AppResource),
                Box::new(resource_deploy_hook::DeployHookResource),
                Box::new(resource_registry_credential::RegistryCredentialResource),
            ],
            vec![Box::new(functions::NormalizeImage)],
        )
    }

    /// A provider made of the given parts, under Berth's provider
    /// configuration schema (the benchmark builds a do-nothing one).
    pub fn from_parts(
        data_sources: Vec<Box<dyn DataSource>>,
        resources: Vec<Box<dyn Resource>>,
        functions: Vec<Box<dyn Function>>,
    ) -> Provider {
        let schemas = resources
            .iter()
            .map(|r| {
                let schema = r.schema();
                let ty = schema.value_type();
                (r.type_name(), Arc::new((schema, ty)))
            })
            .collect();
        Provider {
            data_sources: data_sources
                .into_iter()
                .map(|d| (d.type_name(), d))
                .collect(),
            resources: resources.into_iter().map(|r| (r.type_name(), r)).collect(),
            schemas,
            functions: functions.into_iter().map(|f| (f.name(), f)).collect(),
            context: RwLock::new(None),
            stop: watch::channel(false).0,
        }
    }

    pub fn provider_schema(&self) -> Schema {
        config::schema()
    }
    pub fn data_sources(&self) -> impl Iterator<Item = &dyn DataSource> {
        self.data_sources.values().map(|d| d.as_ref())
    }
    pub fn resources(&self) -> impl Iterator<Item = &dyn Resource> {
        self.resources.values().map(|r| r.as_ref())
    }
    pub fn resource(&self, type_name: &str) -> Option<&dyn Resource> {
        self.resources.get(type_name).map(|r| r.as_ref())
    }
    pub fn functions(&self) -> impl Iterator<Item = &dyn Function> {
        self.functions.values().map(|f| f.as_ref())
    }
    pub fn data_source(&self, type_name: &str) -> Option<&dyn DataSource> {
        self.data_sources.get(type_name).map(|d| d.as_ref())
    }
    pub fn function(&self, name: &str) -> Option<&dyn Function> {
        self.functions.get(name).map(|f| f.as_ref())
    }

    pub fn validate_provider_config(&self, config: &Value) -> Diagnostics {
        match ProviderConfig::from_value(config) {
            Ok(_) => Diagnostics::default(),
            Err(d) => d,
        }
    }

    /// ConfigureProvider: parse the configuration and build the shared
    /// context. Cheap: clients connect lazily on first use.
    pub fn configure(&self, config: &Value) -> Diagnostics {
        match ProviderConfig::from_value(config) {
            Ok(cfg) => {
                let hints = plan_hints_path(&cfg, config);
                let ctx = Arc::new(Context::new(cfg).with_plan_hints(hints));
                if let Ok(mut slot) = self.context.write() {
                    *slot = Some(ctx);
                }
                Diagnostics::default()
            }
            Err(d) => d,
        }
    }

    /// The end of the process (terraform's `Shutdown`): remembers what its
    /// plans resolved for the next plan of this configuration.
    pub fn finish(&self) {
        if let Ok(slot) = self.context.read() {
            if let Some(ctx) = slot.as_ref() {
                ctx.save_plan_hints();
            }
        }
    }

    /// The configured context; an unconfigured provider (only in tests or
    /// when terraform skipped configuration) uses the defaults.
    pub fn context(&self) -> Arc<Context> {
        if let Ok(slot) = self.context.read() {
            if let Some(ctx) = slot.as_ref() {
                return ctx.clone();
            }
        }
        let ctx = Arc::new(Context::new(ProviderConfig::default()));
        if let Ok(mut slot) = self.context.write() {
            *slot = Some(ctx.clone());
        }
        ctx
    }

    /// StopProvider: cancel work in flight; the server keeps running.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Runs `work` unless StopProvider cancels it first.
    async fn cancellable<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, Diagnostics>>,
    ) -> Result<T, Diagnostics> {
        let mut stop = self.stop.subscribe();
        tokio::select! {
            r = work => r,
            _ = stop.wait_for(|s| *s) => Err(Diagnostic::error(
                format!("{what} was cancelled"),
                "Terraform asked the provider to stop (Ctrl-C or a timeout) before this finished. Nothing was changed; run the command again.",
            ).into()),
        }
    }

    pub fn validate_data_source(&self, type_name: &str, config: &Value) -> Diagnostics {
        match self.data_source(type_name) {
            Some(ds) => ds.validate(config),
            None => unknown_type("data source", type_name),
        }
    }

    pub async fn read_data_source(
        &self,
        type_name: &str,
        config: &Value,
    ) -> Result<Value, Diagnostics> {
        let ds = self
            .data_source(type_name)
            .ok_or_else(|| unknown_type("data source", type_name))?;
        let ctx = self.context();
        self.cancellable(&format!("Reading {type_name}"), ds.read(&ctx, config))
            .await
    }
}

impl Provider {
    /// The resource and its schema (built once), or the unknown-type error.
    fn resource_or_error(
        &self,
        type_name: &str,
    ) -> Result<(&dyn Resource, ResourceSchema), Diagnostics> {
        match (self.resource(type_name), self.resource_schema(type_name)) {
            (Some(r), Some(schemas)) => Ok((r, schemas)),
            _ => Err(unknown_type("resource", type_name)),
        }
    }

    /// The resource's schema and its value type, built once.
    pub fn resource_schema(&self, type_name: &str) -> Option<ResourceSchema> {
        self.schemas.get(type_name).cloned()
    }

    pub fn validate_resource(&self, type_name: &str, config: &Value) -> Diagnostics {
        match self.resource_or_error(type_name) {
            Ok((r, schemas)) => {
                let mut d = resource::validate_declared(&schemas.0, config);
                d.extend_distinct(r.validate(config));
                d
            }
            Err(d) => d,
        }
    }

    /// PlanResourceChange. A null proposed state is a destroy: planned null.
    /// With the plan, the warnings planning gave (terraform shows them).
    pub async fn plan_resource(
        &self,
        type_name: &str,
        prior: &Value,
        proposed: &Value,
        config: &Value,
    ) -> Result<(Plan, Diagnostics), Diagnostics> {
        let (r, schemas) = self.resource_or_error(type_name)?;
        let schema = &schemas.0;
        if proposed.is_null() {
            return Ok((
                Plan {
                    prior: prior.clone(),
                    config: config.clone(),
                    planned: Value::Null,
                    requires_replace: vec![],
                },
                Diagnostics::default(),
            ));
        }
        let mut plan = resource::plan_declared(schema, prior, proposed, config);
        let ctx = self.context();
        let diags = self
            .cancellable(&format!("Planning {type_name}"), async {
                let d = r.modify_plan(&ctx, &mut plan).await;
                if d.has_errors() {
                    Err(d)
                } else {
                    Ok(d)
                }
            })
            .await?;
        resource::strip_write_only(schema, &mut plan.planned);
        Ok((plan, diags))
    }

    /// ApplyResourceChange: create, update or delete as the plan says.
    pub async fn apply_resource(
        &self,
        type_name: &str,
        prior: &Value,
        planned: &Value,
        config: &Value,
    ) -> Result<(Value, Diagnostics), Diagnostics> {
        let (r, schemas) = self.resource_or_error(type_name)?;
        let ctx = self.context();
        let plan = Plan {
            prior: prior.clone(),
            config: config.clone(),
            planned: planned.clone(),
            requires_replace: vec![],
        };
        let what = format!("Applying {type_name}");
        let (mut state, warnings) = if planned.is_null() {
            self.cancellable(&what, r.delete(&ctx, prior)).await?;
            (Value::Null, Diagnostics::default())
        } else if prior.is_null() {
            self.cancellable(&what, r.create_warned(&ctx, &plan))
                .await?
        } else {
            self.cancellable(&what, r.update_warned(&ctx, &plan))
                .await?
        };
        resource::strip_write_only(&schemas.0, &mut state);
        Ok((state, warnings))
    }

    /// ReadResource: the refreshed state, or null when the object is gone.
    pub async fn read_resource(
        &self,
        type_name: &str,
        state: &Value,
    ) -> Result<Value, Diagnostics> {
        let (r, schemas) = self.resource_or_error(type_name)?;
        let ctx = self.context();
        let mut v = self
            .cancellable(&format!("Reading {type_name}"), r.read(&ctx, state))
            .await?
            .unwrap_or(Value::Null);
        resource::strip_write_only(&schemas.0, &mut v);
        Ok(v)
    }

    /// ImportResourceState: the imported state and the type's import
    /// warning, if it has one.
    pub async fn import_resource(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<(Value, Diagnostics), Diagnostics> {
        let (r, schemas) = self.resource_or_error(type_name)?;
        let ctx = self.context();
        let mut v = self
            .cancellable(&format!("Importing {type_name}"), r.import(&ctx, id))
            .await?;
        resource::strip_write_only(&schemas.0, &mut v);
        let mut warnings = Diagnostics::default();
        if let Some(warning) = r.import_warning() {
            warnings.push(warning);
        }
        Ok((v, warnings))
    }
}

/// Where this provider configuration keeps its plan hints: the state
/// directory's `plan-hints/`, by working directory (terraform runs
/// plugins in it), workspace and configuration. `None` without a state
/// directory or working directory: plans then send nothing early.
fn plan_hints_path(cfg: &ProviderConfig, config: &Value) -> Option<std::path::PathBuf> {
    let state_dir =
        crate::store::paths::resolve_state_dir(cfg.state_dir.as_deref(), &process_env).ok()?;
    let cwd = std::env::current_dir().ok()?;
    let workspace = prefetch::workspace(&cwd, &process_env);
    Some(prefetch::hint_path(
        &state_dir,
        &cwd,
        &workspace,
        &format!("{config:?}"),
    ))
}

fn unknown_type(kind: &str, type_name: &str) -> Diagnostics {
    Diagnostic::error(
        format!("Unknown {kind} type {type_name:?}"),
        format!("This version of the {NAME} provider has no {kind} called {type_name:?}. Check the spelling, or upgrade the provider."),
    )
    .into()
}
