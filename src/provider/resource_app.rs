//! `resource "berth_app"`: an app from one image with web services and
//! workers. Plan resolves the tag to the linux/amd64 digest (a moved tag is
//! a digest diff); apply deploys exactly the planned digest through the
//! engine, health-gated, rolling back by itself; refresh compares the
//! hosts' labelled containers with the state and reports drift in words.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::diag::{AttributePath, Diagnostic, Diagnostics};
use super::resource::{Plan, Resource};
use super::resource_registry_credential::store_diag;
use super::schema::{Attribute, Nesting, Schema, Type, Validator};
use super::value::{Number, Value};
use super::Context;
use crate::engine::apps::HOOK_DRIFT_MARK;
use crate::engine::spec::{
    check_name, AppSpec, Concurrency, HealthCheck, JobSpec, ServiceSpec, WorkerSpec,
};
use crate::engine::{plan as engine_plan, AppsError, DeployRequest, Engine, Record};
use crate::reference::Reference;
use crate::store::StoreError;

pub const TYPE_NAME: &str = "berth_app";

pub struct AppResource;

const PORT_RULE: Validator = Validator {
    description: "A port, 1 to 65535.",
    check: |v| match v {
        Value::Number(n) => match n.as_i64() {
            Some(1..=65535) => Ok(()),
            _ => Err(format!("{n} is not a port: use 1 to 65535")),
        },
        _ => Ok(()),
    },
};

const DRAIN_RULE: Validator = Validator {
    description: "0 to 3600 seconds.",
    check: |v| match v {
        Value::Number(n) => match n.as_i64() {
            Some(0..=3600) => Ok(()),
            _ => Err(format!(
                "{n} is out of range: use a whole number of seconds from 0 to 3600"
            )),
        },
        _ => Ok(()),
    },
};

const NAME_RULE: Validator = Validator {
    description: "Lowercase letters, digits and dashes, at most 40 characters.",
    check: |v| match v.as_str() {
        Some(s) => check_name(s),
        None => Ok(()),
    },
};

fn limits() -> Vec<Attribute> {
    vec![
        Attribute::number("cpus")
            .optional()
            .describe("CPU limit per instance, in cores (e.g. `0.5`). Unlimited when unset."),
        Attribute::number("memory_mb")
            .optional()
            .describe("Memory limit per instance, in MiB (at least 6). Unlimited when unset."),
        Attribute::typed("env", Type::map(Type::String))
            .optional()
            .describe("Environment for this component only; overrides the app's `env` and `secret_env`."),
        Attribute::string("command")
            .optional()
            .describe("Overrides the image's command. Split into arguments like a shell would (quotes work), but no shell runs."),
    ]
}

#[async_trait]
impl Resource for AppResource {
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        let mut service = vec![
            Attribute::number("http_port").optional().computed().default_value(Value::int(8080)).describe(
                "Container port the service answers HTTP on. Each instance publishes it on an ephemeral port of its host's publish address (see `endpoints`).",
            ),
            Attribute::number("instances").optional().computed().default_value(Value::int(1)).describe(
                "Number of instances, spread over the provider's hosts. Changing only this scales without a new release.",
            ),
            Attribute::number("public_port").optional().validate(PORT_RULE).describe(
                "Stable port: the service answers on it on the publish address of every host that runs one of its instances, through Berth's ingress, for as long as the app exists, whatever the release (see `urls`). Deploys switch it to the new instances with no failed request. Must differ from other apps' public ports on the same host and from the ingress' own `http_port`/`https_port`.",
            ),
            Attribute::typed("domains", Type::list(Type::String)).optional().describe(
                "Host names the service answers for on the ingress' HTTP and HTTPS ports (`80` and `443` unless the provider's `ingress` block says otherwise), with certificates obtained automatically (see the provider's `ingress.tls`); plain HTTP redirects to HTTPS. A name belongs to one app; a request for a name no app claims gets 404.",
            ),
            Attribute::typed("routes", Type::list(Type::String)).optional().describe(
                "Path prefixes (e.g. `[\"/api\"]`) sent to this service on its `public_port` and `domains`, so that two services of one app can share a port or a domain; the longest matching prefix wins, and `/` matches everything. Defaults to `[\"/\"]`.",
            ),
            Attribute::bool("strip_route_prefix").optional().describe(
                "Remove the matched route prefix before the request reaches the service (`/api/orders` arrives as `/orders`). Defaults to `false`.",
            ),
            Attribute::number("drain_seconds").optional().validate(DRAIN_RULE).describe(
                "How long in-flight requests to an old instance may run after traffic has moved to the new ones; the old instances stop once their requests are done, at the latest after this long. Defaults to `30`.",
            ),
            Attribute::nested(
                "health_check",
                Nesting::Single,
                vec![
                    Attribute::string("path").optional().computed().default_value(Value::string(crate::engine::spec::HealthCheck::default().path)).describe("HTTP path probed from outside the container; any 2xx or 3xx answer is healthy. Defaults to `/`."),
                    Attribute::number("interval_seconds").optional().computed().default_value(Value::Number(Number::Float(crate::engine::spec::HealthCheck::default().interval_seconds))).describe("Seconds between probes while a new instance starts; sub-second values work. Defaults to `0.25`. On a Swarm host the check runs inside every task for as long as it runs, at most every 5 seconds (each probe starts a process in the task)."),
                    Attribute::number("timeout_seconds").optional().computed().default_value(Value::Number(Number::Float(crate::engine::spec::HealthCheck::default().timeout_seconds))).describe("Seconds one probe may take. Defaults to `2`."),
                    Attribute::number("healthy_threshold").optional().computed().default_value(Value::int(crate::engine::spec::HealthCheck::default().healthy_threshold.into())).describe("Consecutive successful probes needed. Defaults to `1`."),
                    Attribute::number("unhealthy_threshold").optional().computed().default_value(Value::int(crate::engine::spec::HealthCheck::default().unhealthy_threshold.into())).describe("Consecutive failed probes after the start period that count as unhealthy. Defaults to `3`."),
                    Attribute::number("start_period_seconds").optional().computed().default_value(Value::Number(Number::Float(crate::engine::spec::HealthCheck::default().start_period_seconds))).describe("Seconds a new instance gets to become healthy before the deploy fails and rolls back. Defaults to `30`."),
                ],
            )
            .optional()
            .describe("How a new instance is judged healthy before traffic moves to it."),
        ];
        service.extend(limits());
        let mut worker = vec![Attribute::number("instances")
            .optional()
            .computed()
            .default_value(Value::int(1))
            .describe(
                "Number of instances. A worker is healthy while it runs without restarting.",
            )];
        worker.extend(limits());
        let mut job = vec![
            Attribute::string("command").required().describe(
                "The command the job runs, from the app's current release. Split into arguments like a shell would (quotes work), but no shell runs: write `sh -c '...'` for one.",
            ),
            Attribute::string("schedule").optional().describe(
                "When it runs, as cron: five fields `MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK` (`30 3 * * *`), six with a leading seconds field (`*/10 * * * * *`), or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. `berth serve` runs it (each scheduled time once, whatever the number of `berth serve` processes sharing the store). Unset: the job runs only on demand (`berth run APP JOB`).",
            ),
            Attribute::string("time_zone").optional().computed().default_value(Value::string("UTC")).describe(
                "IANA time zone of `schedule` (e.g. `Europe/Berlin`). A time skipped by a daylight-saving change runs when the change ends; a repeated hour runs fixed-hour jobs once. Defaults to `UTC`.",
            ),
            Attribute::number("timeout_seconds").optional().computed().default_value(Value::int(crate::engine::spec::DEFAULT_JOB_TIMEOUT as i64)).describe(
                "Seconds a run may take; then it is stopped and recorded as timed out. Defaults to `3600`.",
            ),
            Attribute::string("concurrency").optional().computed().default_value(Value::string("forbid")).describe(
                "What a scheduled run does while the last run of the job still runs: `forbid` skips it (recorded as skipped), `allow` runs both, `replace` stops the running one first. As Kubernetes CronJob's `concurrencyPolicy`. Defaults to `forbid`.",
            ),
            Attribute::number("starting_deadline_seconds").optional().computed().default_value(Value::int(crate::engine::spec::DEFAULT_STARTING_DEADLINE as i64)).describe(
                "A scheduled run missed (e.g. `berth serve` was down) by at most this many seconds runs late, once; older ones are recorded as missed, never run in a burst. Defaults to `60`.",
            ),
        ];
        job.extend(limits().into_iter().filter(|a| a.name != "command"));
        Schema::new(
            "An app deployed from one container image: web services and background workers on the provider's Docker hosts. `terraform plan` resolves the image tag to its linux/amd64 digest and shows `image_digest` change when the tag has moved; `apply` deploys exactly that digest with no downtime (pull first, pre-deploy command, start new instances, health-check them from outside, then stop the old ones) and rolls back by itself when anything fails. Changes made on a host by hand show up in `drift` at the next plan, and apply repairs them. Every container carries the label `io.berth.app=<name>`.",
            vec![
                Attribute::string("id").computed().use_state_for_unknown().describe("The app name."),
                Attribute::string("name").required().requires_replace().validate(NAME_RULE).describe(
                    "App name; names its containers (`docker ps --filter label=io.berth.app=NAME`).",
                ),
                Attribute::string("image").required().describe(
                    "Image to deploy: a tag (`ghcr.io/acme/web:1.4`) or a digest (`ghcr.io/acme/web@sha256:…`). Only linux/amd64 images deploy; others are refused at plan time.",
                ),
                Attribute::bool("track_tag").optional().computed().default_value(Value::Bool(true)).describe(
                    "When `true` every plan re-resolves the tag, so a moved tag shows as a new `image_digest`; for a digest resolved before, that is one `HEAD` request, which Docker Hub does not count as a pull. When `false` the digest found at create is kept until `image` changes.",
                ),
                Attribute::string("registry_credential_id").optional().describe(
                    "`id` of a `berth_registry_credential` for the image's registry, for private images. Hosts pull with the same credential.",
                ),
                Attribute::typed("env", Type::map(Type::String)).optional().describe(
                    "Environment for every service, worker and the pre-deploy command.",
                ),
                Attribute::typed("secret_env", Type::map(Type::String)).optional().sensitive().describe(
                    "Secret environment for every component. Never shown in plans or logs, but stored in the Terraform state; prefer `secret_env_wo`.",
                ),
                Attribute::typed("secret_env_wo", Type::map(Type::String)).optional().sensitive().write_only().describe(
                    "Write-only secret environment (Terraform 1.11+): reaches the containers but never the state. Change `secret_env_wo_version` to roll out new values.",
                ),
                Attribute::number("secret_env_wo_version").optional().describe(
                    "Version of `secret_env_wo`; changing it deploys a new release with the current values.",
                ),
                Attribute::string("pre_deploy_command").optional().describe(
                    "Command run once per release, from the new image with the new environment, before any traffic moves (migrations). The first deploy runs it too. A non-zero exit aborts the deploy and leaves the running release untouched.",
                ),
                Attribute::nested("services", Nesting::Map, service).optional().describe(
                    "Web services by name (lowercase letters, digits, dashes).",
                ),
                Attribute::nested("workers", Nesting::Map, worker).optional().describe(
                    "Background workers by name (lowercase letters, digits, dashes).",
                ),
                Attribute::nested("jobs", Nesting::Map, job).optional().describe(
                    "Jobs by name (lowercase letters, digits, dashes; not a service's or worker's name): commands run to completion in a container from the app's current release digest (never a tag resolved again), with the app's `env` and `secret_env`, on one of its hosts, on a `schedule` or on demand. Every run is journaled (`berth runs APP JOB`); finished containers are removed, the last 3 failed ones of each job kept for inspection. Changing a job never rolls out the services or workers.",
                ),
                Attribute::string("post_deploy_command").optional().describe(
                    "Command run once after a new release serves (traffic moved, old instances stopped), from the new image with the app's environment. A failure does not undo the release: it is reported as a warning of the apply and in the journal.",
                ),
                Attribute::string("failed_deploy_command").optional().describe(
                    "Command run after a deploy failed and was rolled back, from the image that failed, with the app's environment and the reason in `BERTH_DEPLOY_ERROR` (e.g. to notify someone). Not run when the image could not be pulled.",
                ),
                Attribute::string("image_digest").computed().describe(
                    "The linux/amd64 manifest digest deployed, or about to be: a moved tag shows here as a diff.",
                ),
                Attribute::number("release").computed().describe(
                    "Release number: increases with each new digest or spec; not with scaling or repairs.",
                ),
                Attribute::typed("endpoints", Type::map(Type::list(Type::String))).computed().describe(
                    "Service name → `address:port` of each running instance, in instance order. These change with every release: use `urls` for a stable address.",
                ),
                Attribute::typed("urls", Type::map(Type::list(Type::String))).computed().describe(
                    "Service name → its stable URLs through the ingress: `http://HOST:PORT` for `public_port` on each host that runs one of its instances, and `https://DOMAIN` for each of `domains`. Known at plan time; they do not change with releases.",
                ),
                Attribute::typed("drift", Type::list(Type::String)).computed().describe(
                    "Differences between the hosts and this app found at the last refresh, in words (an instance missing, stopped, crash-looping, running a foreign image, an extra container with Berth's labels, a changed spec). Empty when in sync; apply repairs them.",
                ),
            ],
        )
    }

    fn validate(&self, config: &Value) -> Diagnostics {
        let mut diags = Diagnostics::default();
        if !config.is_wholly_known() {
            return diags;
        }
        match spec_from(config, config) {
            Ok(spec) => {
                for e in spec.validate() {
                    diags.push(
                        Diagnostic::error("Invalid app", e.message.clone()).at(spec_path(&e.field)),
                    );
                }
                for w in spec.job_warnings(chrono::Utc::now()) {
                    diags.push(
                        Diagnostic::warning("Job schedule runs very often", w.message)
                            .at(spec_path(&w.field)),
                    );
                }
            }
            Err(d) => diags.extend(d),
        }
        if !config.get("secret_env_wo").is_null() && config.get("secret_env_wo_version").is_null() {
            diags.push(
                Diagnostic::error(
                    "Missing secret_env_wo_version",
                    "`secret_env_wo` is write-only, so Terraform cannot see it change. Set `secret_env_wo_version` (e.g. `1`) and change it whenever the values change.",
                )
                .at(AttributePath::root("secret_env_wo_version")),
            );
        }
        diags
    }

    async fn modify_plan(&self, ctx: &Context, plan: &mut Plan) -> Diagnostics {
        let mut diags = Diagnostics::default();
        let planned = plan.planned.clone();
        let image = planned.get("image");
        plan.set("id", planned.get("name").clone());
        plan.set("drift", Value::List(vec![]));
        match self.plan_urls(ctx, plan).await {
            Ok(urls) => plan.set("urls", urls),
            Err(d) => return d,
        }
        let unknown_all = |plan: &mut Plan| {
            for a in ["image_digest", "release", "endpoints"] {
                plan.set(a, Value::Unknown);
            }
        };
        let Some(image) = image.as_str() else {
            unknown_all(plan);
            return diags;
        };
        let prior = plan.prior.clone();
        let prior = &prior;
        let track = planned.get("track_tag").as_bool().unwrap_or(true);
        // A digest a deploy hook brought from another tag is not kept: the
        // apply deploys the configured image again.
        let from_hook = prior.get("drift").as_elements().is_some_and(|lines| {
            lines
                .iter()
                .any(|l| l.as_str().is_some_and(|l| l.contains(HOOK_DRIFT_MARK)))
        });
        let keep_digest = !track
            && !from_hook
            && prior.get("image").as_str() == Some(image)
            && prior.get("image_digest").as_str().is_some();
        let name = planned.get("name").as_str().unwrap_or_default().to_string();
        let prior_digest = prior
            .get("image_digest")
            .as_str()
            .unwrap_or_default()
            .to_string();
        let journaled = if keep_digest || name.is_empty() {
            None
        } else {
            match self
                .journaled_digest(ctx, plan, &name, image, &prior_digest)
                .await
            {
                Ok(d) => d,
                Err(d) => return d,
            }
        };
        let digest = if keep_digest {
            prior
                .get("image_digest")
                .as_str()
                .unwrap_or_default()
                .to_string()
        } else if let Some(d) = journaled {
            d
        } else {
            let reference = match Reference::parse(image) {
                Ok(r) => r,
                Err(e) => {
                    diags.push(
                        Diagnostic::error("Invalid image reference", e.to_string())
                            .at(AttributePath::root("image")),
                    );
                    return diags;
                }
            };
            if plan.config.get("registry_credential_id").is_unknown() {
                unknown_all(plan);
                return diags;
            }
            let resolved = match ctx
                .resolve_planned_image(&reference, plan.config.get("registry_credential_id"))
                .await
            {
                Ok(r) => r,
                Err(d) => return d,
            };
            if !name.is_empty() {
                journal_planned_digest(ctx, &name, image, &prior_digest, &resolved.digest).await;
            }
            resolved.digest
        };
        plan.set("image_digest", Value::string(&digest));
        if plan.is_create() {
            plan.set("release", Value::Unknown);
            plan.set("endpoints", Value::Unknown);
            return diags;
        }
        // An update: same release unless the digest or the spec changes.
        let had_drift = prior
            .get("drift")
            .as_elements()
            .is_some_and(|d| !d.is_empty());
        let same_release = prior.get("image_digest").as_str() == Some(digest.as_str())
            && same_spec_hashes(prior, &plan.planned, &plan.config);
        let anything = had_drift || !same_release || user_attrs_differ(prior, &plan.planned);
        if !anything {
            for a in ["release", "endpoints"] {
                plan.set(a, prior.get(a).clone());
            }
        } else {
            // A repair may make a new release too (an instance created
            // from another spec is replaced by a release of this one).
            plan.set(
                "release",
                if same_release && !had_drift {
                    prior.get("release").clone()
                } else {
                    Value::Unknown
                },
            );
            plan.set("endpoints", Value::Unknown);
        }
        diags
    }

    async fn create(&self, ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics> {
        Ok(self.create_warned(ctx, plan).await?.0)
    }

    async fn update(&self, ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics> {
        Ok(self.update_warned(ctx, plan).await?.0)
    }

    async fn create_warned(
        &self,
        ctx: &Context,
        plan: &Plan,
    ) -> Result<(Value, Diagnostics), Diagnostics> {
        self.deploy(ctx, plan, Record::New).await
    }

    async fn update_warned(
        &self,
        ctx: &Context,
        plan: &Plan,
    ) -> Result<(Value, Diagnostics), Diagnostics> {
        self.deploy(ctx, plan, Record::Replace).await
    }

    async fn read(&self, ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics> {
        let Some(name) = state.get("name").as_str() else {
            return Ok(None);
        };
        ctx.mark_refreshed(name);
        let apps = ctx.apps().await?;
        let engine = apps.engine();
        let observed = engine.observe(name, false).await.map_err(|e| {
            Diagnostics::from(Diagnostic::error(
                format!("Cannot read app {name:?}"),
                e.to_string(),
            ))
        })?;
        if observed.is_empty()
            && apps
                .store()
                .get_app(name.to_string())
                .await
                .map_err(store_diag)?
                .is_none()
        {
            // Neither the hosts nor Berth's records know it: gone.
            return Ok(None);
        }
        let spec = spec_from(state, state)?;
        let components = spec.components().map_err(|e| {
            Diagnostics::from(Diagnostic::error("Invalid app in state", e.to_string()))
        })?;
        let mut fields = state.as_entries().cloned().unwrap_or_default();
        let mut digest = state
            .get("image_digest")
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // A release from a deploy hook runs another digest than the state
        // says: the state takes it (it is what runs). A hook that deployed
        // the configured image (a new digest of its tag) leaves the plan
        // empty when the tag still points there; one that deployed another
        // tag shows a digest diff back to the tag's, said in words too.
        let mut from_hook = None;
        if let Some(hook) = apps
            .hook_release(name, &observed, &spec.image)
            .await
            .map_err(apps_diag)?
        {
            digest = hook.digest.clone();
            fields.insert("image_digest".into(), Value::string(&digest));
            if !hook.configured {
                from_hook = Some(hook.words(&spec.image));
            }
        }
        let drift = apps
            .drift(name, &components, &digest, &observed, false)
            .await
            .map_err(|e| {
                Diagnostics::from(Diagnostic::error(
                    format!("Cannot read the ingress of app {name:?}"),
                    e.to_string(),
                ))
            })?;
        let mut words: Vec<String> = from_hook.into_iter().collect();
        words.extend(drift.iter().map(|d| d.to_string()));
        fields.insert("urls".into(), urls_value(&engine.urls(&components)));
        fields.insert(
            "drift".into(),
            Value::List(words.iter().map(Value::string).collect()),
        );
        fields.insert(
            "endpoints".into(),
            endpoints_value(&Engine::endpoints(&observed)),
        );
        if let Some(r) = engine_plan::current_release(&observed) {
            fields.insert("release".into(), Value::int(r as i64));
        }
        Ok(Some(Value::Object(fields)))
    }

    async fn delete(&self, ctx: &Context, prior: &Value) -> Result<(), Diagnostics> {
        let Some(name) = prior.get("name").as_str() else {
            return Ok(());
        };
        ctx.apps().await?.destroy(name).await.map_err(|e| {
            Diagnostics::from(Diagnostic::error(
                format!("Destroying app {name:?} failed"),
                e.to_string(),
            ))
        })?;
        Ok(())
    }

    async fn import(&self, ctx: &Context, id: &str) -> Result<Value, Diagnostics> {
        let store = ctx.store().await?;
        let record = store.get_app(id.to_string()).await.map_err(store_diag)?.ok_or_else(|| {
            Diagnostics::from(Diagnostic::error(
                "App not found",
                format!("Berth has no record of an app named {id:?} in its state directory. Import takes the app name of an app Berth deployed with this state directory (see `berth status`)."),
            ))
        })?;
        let spec: AppSpec = serde_json::from_str(&record.spec_json).map_err(|e| {
            Diagnostics::from(Diagnostic::error("Unreadable app record", e.to_string()))
        })?;
        let engine = ctx.engine().await?;
        let observed = engine.observe(id, true).await.map_err(|e| {
            Diagnostics::from(Diagnostic::error(
                format!("Cannot read app {id:?}"),
                e.to_string(),
            ))
        })?;
        let digest = observed
            .iter()
            .find(|i| Some(i.release) == Some(engine_plan::current_release(&observed)))
            .map(|i| i.digest.clone());
        let urls = spec
            .components()
            .map(|c| engine.urls(&c))
            .unwrap_or_default();
        Ok(spec_to_state(
            &spec,
            digest,
            engine_plan::current_release(&observed),
            &Engine::endpoints(&observed),
            &urls,
        ))
    }
}

/// Journals the digest a plan showed for `name`, so the re-plan at apply
/// time deploys exactly it (see [`AppResource::journaled_digest`]). An
/// unchanged, recent entry needs no write (each write is an fsync'd
/// transaction). Best effort: without the journal the apply re-resolves.
async fn journal_planned_digest(
    ctx: &Context,
    name: &str,
    image: &str,
    prior_digest: &str,
    digest: &str,
) {
    let Ok(store) = ctx.store().await else {
        return;
    };
    let known = store
        .planned_digest(
            name.to_string(),
            image.to_string(),
            prior_digest.to_string(),
        )
        .await
        .ok()
        .flatten()
        .is_some_and(|(d, at)| d == digest && at.elapsed().is_ok_and(|e| e < JOURNAL_REFRESH));
    if !known {
        let _ = store
            .record_planned_digest(
                name.to_string(),
                image.to_string(),
                prior_digest.to_string(),
                digest.to_string(),
            )
            .await;
    }
}

/// How long an unchanged journal entry stands before a plan rewrites it
/// (keeps the create window below meaningful without a write per plan).
const JOURNAL_REFRESH: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// How long a plan's digest for a not-yet-created app is reused, so that
/// `terraform plan -out` then `apply` deploys what the plan showed.
const CREATE_PLAN_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl AppResource {
    /// The `urls` a plan shows (known from the configuration and the
    /// hosts), after checking that no other app on those hosts, and no
    /// other app of this plan, has the public ports and domains asked
    /// for. Unknown while the services are not known yet.
    async fn plan_urls(&self, ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics> {
        let planned = &plan.planned;
        if !planned.get("services").is_wholly_known() || !planned.get("name").is_wholly_known() {
            return Ok(Value::Unknown);
        }
        let spec = spec_from(planned, &plan.config)?;
        let Ok(components) = spec.components() else {
            return Ok(Value::Unknown);
        };
        let engine = ctx.engine().await?;
        let exposures: BTreeMap<String, crate::ingress::Exposure> = components
            .iter()
            .filter_map(|c| c.exposure.clone().map(|e| (c.name.clone(), e)))
            .collect();
        let mut diags = Diagnostics::default();
        let at =
            |service: &str, field: &str| AttributePath::root("services").key(service).attr(field);
        for c in crate::ingress::routes::setting_conflicts(&exposures, engine.ingress_settings()) {
            diags.push(
                Diagnostic::error("Public port or domain not available", c.to_string())
                    .at(at(&c.service, c.field)),
            );
        }
        if !exposures.is_empty() {
            let slots = engine_plan::placement(&components, &engine.host_names());
            // The hosts as they are; a host that cannot be read now is
            // checked again, authoritatively, by the apply.
            let views = engine.observe_ingress(false).await.unwrap_or_default();
            for (service, exposure) in &exposures {
                let hosts: std::collections::BTreeSet<&str> = slots
                    .iter()
                    .filter(|s| &s.component == service)
                    .map(|s| s.host.as_str())
                    .collect();
                for host in hosts {
                    if let Some(view) = views.get(host) {
                        let one = BTreeMap::from([(service.clone(), exposure.clone())]);
                        for c in
                            crate::ingress::routes::conflicts(host, &view.routes, &one, &spec.name)
                        {
                            diags.push(
                                Diagnostic::error("Public port or domain taken", c.to_string())
                                    .at(at(service, c.field)),
                            );
                        }
                    }
                    let listeners = exposure
                        .public_port
                        .map(|p| (format!("port {p}"), "public_port"))
                        .into_iter()
                        .chain(
                            exposure
                                .domains
                                .iter()
                                .map(|d| (format!("domain {d}"), "domains")),
                        );
                    for (listener, field) in listeners {
                        if let Some(other) = ctx.claim(host, &listener, &spec.name) {
                            diags.push(
                                Diagnostic::error(
                                    "Public port or domain claimed twice",
                                    format!("services[{service:?}].{field}: app {other:?} in this configuration also claims {listener} on host {host}: a port or domain belongs to one app. Change one of them."),
                                )
                                .at(at(service, field)),
                            );
                        }
                    }
                }
            }
        }
        if diags.has_errors() {
            return Err(diags);
        }
        Ok(urls_value(&engine.urls(&components)))
    }

    /// The digest a plan already resolved, when this is the re-plan
    /// terraform makes at apply time: terraform requires it to return
    /// exactly what the plan showed, even if the tag has moved since.
    async fn journaled_digest(
        &self,
        ctx: &Context,
        plan: &Plan,
        name: &str,
        image: &str,
        prior_digest: &str,
    ) -> Result<Option<String>, Diagnostics> {
        let apply_time = !plan.is_create() && !ctx.was_refreshed(name);
        if !apply_time && !plan.is_create() {
            return Ok(None);
        }
        let store = ctx.store().await?;
        let found = store
            .planned_digest(
                name.to_string(),
                image.to_string(),
                prior_digest.to_string(),
            )
            .await
            .map_err(store_diag)?;
        Ok(found.and_then(|(digest, at)| {
            let fresh = at
                .elapsed()
                .map(|e| e < CREATE_PLAN_WINDOW)
                .unwrap_or(false);
            (apply_time || fresh).then_some(digest)
        }))
    }

    async fn deploy(
        &self,
        ctx: &Context,
        plan: &Plan,
        record: Record,
    ) -> Result<(Value, Diagnostics), Diagnostics> {
        let spec = spec_from(&plan.planned, &plan.config)?;
        let digest = plan
            .planned
            .get("image_digest")
            .as_str()
            .unwrap_or_default()
            .to_string();
        let reference = Reference::parse(&spec.image).map_err(|e| {
            Diagnostics::from(
                Diagnostic::error("Invalid image reference", e.to_string())
                    .at(AttributePath::root("image")),
            )
        })?;
        let apps = ctx.apps().await?;
        let outcome = apps
            .deploy(DeployRequest {
                spec: spec.clone(),
                image: reference,
                digest: digest.clone(),
                trigger: "terraform".into(),
                record,
            })
            .await
            .map_err(|e| match e {
                AppsError::Store(StoreError::AppExists { .. }) => Diagnostics::from(
                    Diagnostic::error("App already exists", e.to_string())
                        .at(AttributePath::root("name")),
                ),
                AppsError::NoCredential { .. } | AppsError::WrongRegistry { .. } => {
                    Diagnostics::from(
                        Diagnostic::error("Registry credential not usable", e.to_string())
                            .at(AttributePath::root("registry_credential_id")),
                    )
                }
                e => Diagnostics::from(Diagnostic::error(
                    format!("Deploy of app {:?} failed", spec.name),
                    e.to_string(),
                )),
            })?;
        let mut fields = plan.planned.as_entries().cloned().unwrap_or_default();
        fields.insert("id".into(), Value::string(&spec.name));
        fields.insert("image_digest".into(), Value::string(&digest));
        fields.insert("release".into(), Value::int(outcome.release as i64));
        fields.insert("endpoints".into(), endpoints_value(&outcome.endpoints));
        fields.insert("urls".into(), urls_value(&outcome.urls));
        fields.insert("drift".into(), Value::List(vec![]));
        let mut warnings = Diagnostics::default();
        for w in &outcome.warnings {
            warnings.push(Diagnostic::warning(
                format!("App {:?} deployed, with a problem", spec.name),
                w.clone(),
            ));
        }
        Ok((Value::Object(fields), warnings))
    }
}

fn apps_diag(e: AppsError) -> Diagnostics {
    match e {
        AppsError::Store(e) => store_diag(e),
        e => Diagnostic::error("Berth could not read the app", e.to_string()).into(),
    }
}

fn urls_value(urls: &BTreeMap<String, Vec<String>>) -> Value {
    endpoints_value(urls)
}

fn endpoints_value(e: &BTreeMap<String, Vec<String>>) -> Value {
    Value::Map(
        e.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::List(v.iter().map(Value::string).collect()),
                )
            })
            .collect(),
    )
}

/// Whether the planned spec makes the same components (ignoring instance
/// counts) as the prior state: then no new release is needed.
fn same_spec_hashes(prior: &Value, planned: &Value, config: &Value) -> bool {
    let (Ok(a), Ok(b)) = (spec_from(prior, prior), spec_from(planned, config)) else {
        return false;
    };
    let hashes = |s: &AppSpec| -> Option<Vec<(String, String)>> {
        Some(
            s.components()
                .ok()?
                .into_iter()
                .map(|c| (c.name, c.spec_hash))
                .collect(),
        )
    };
    hashes(&a).is_some() && hashes(&a) == hashes(&b)
}

fn user_attrs_differ(prior: &Value, planned: &Value) -> bool {
    [
        "image",
        "track_tag",
        "registry_credential_id",
        "env",
        "secret_env",
        "secret_env_wo_version",
        "pre_deploy_command",
        "post_deploy_command",
        "failed_deploy_command",
        "services",
        "workers",
        "jobs",
    ]
    .iter()
    .any(|a| prior.get(a) != planned.get(a))
}

/// Maps a spec field path (`services["web"].health_check.path`) to an
/// attribute path.
fn spec_path(field: &str) -> AttributePath {
    let mut path = AttributePath::default();
    let mut rest = field;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
            continue;
        }
        if let Some(r) = rest.strip_prefix("[\"") {
            let end = r.find("\"]").unwrap_or(r.len());
            path = path.key(&r[..end]);
            rest = r.get(end + 2..).unwrap_or("");
            continue;
        }
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            if let Ok(i) = r[..end].parse::<i64>() {
                path = path.index(i);
            }
            rest = r.get(end + 1..).unwrap_or("");
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        path = path.attr(&rest[..end]);
        rest = &rest[end..];
    }
    path
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_entries()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn num_u(v: &Value, name: &str, path: &AttributePath) -> Result<Option<u64>, Diagnostics> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => Ok(Some(i as u64)),
            _ => Err(Diagnostic::error(
                format!("Invalid {name}"),
                format!("{n} is not a whole number of zero or more."),
            )
            .at(path.clone())
            .into()),
        },
        _ => Ok(None),
    }
}

fn num_f(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(n.as_f64()),
        _ => None,
    }
}

/// Builds the engine's spec from a state or plan object; write-only
/// secrets come from `config` (null in state).
pub fn spec_from(obj: &Value, config: &Value) -> Result<AppSpec, Diagnostics> {
    let mut services = BTreeMap::new();
    for (name, s) in obj.get("services").as_entries().into_iter().flatten() {
        let p = AttributePath::root("services").key(name);
        let hc_v = s.get("health_check");
        let mut hc = HealthCheck::default();
        if !hc_v.is_null() {
            if let Some(path) = hc_v.get("path").as_str() {
                hc.path = path.to_string();
            }
            for (field, slot) in [
                ("interval_seconds", &mut hc.interval_seconds),
                ("timeout_seconds", &mut hc.timeout_seconds),
                ("start_period_seconds", &mut hc.start_period_seconds),
            ] {
                if let Some(f) = num_f(hc_v.get(field)) {
                    *slot = f;
                }
            }
            let hp = p.clone().attr("health_check");
            if let Some(n) = num_u(
                hc_v.get("healthy_threshold"),
                "healthy_threshold",
                &hp.clone().attr("healthy_threshold"),
            )? {
                hc.healthy_threshold = n as u32;
            }
            if let Some(n) = num_u(
                hc_v.get("unhealthy_threshold"),
                "unhealthy_threshold",
                &hp.clone().attr("unhealthy_threshold"),
            )? {
                hc.unhealthy_threshold = n as u32;
            }
        }
        let port = num_u(
            s.get("http_port"),
            "http_port",
            &p.clone().attr("http_port"),
        )?
        .unwrap_or(8080);
        services.insert(
            name.clone(),
            ServiceSpec {
                command: s.get("command").as_str().map(String::from),
                http_port: u16::try_from(port).map_err(|_| {
                    Diagnostics::from(
                        Diagnostic::error(
                            "Invalid http_port",
                            format!("{port} is not a port: use 1 to 65535."),
                        )
                        .at(p.clone().attr("http_port")),
                    )
                })?,
                instances: num_u(
                    s.get("instances"),
                    "instances",
                    &p.clone().attr("instances"),
                )?
                .unwrap_or(1)
                .min(u32::MAX as u64) as u32,
                health_check: hc,
                cpus: num_f(s.get("cpus")),
                memory_mb: num_u(
                    s.get("memory_mb"),
                    "memory_mb",
                    &p.clone().attr("memory_mb"),
                )?,
                env: string_map(s.get("env")),
                public_port: match num_u(
                    s.get("public_port"),
                    "public_port",
                    &p.clone().attr("public_port"),
                )? {
                    Some(port) => Some(u16::try_from(port).map_err(|_| {
                        Diagnostics::from(
                            Diagnostic::error(
                                "Invalid public_port",
                                format!("{port} is not a port: use 1 to 65535."),
                            )
                            .at(p.clone().attr("public_port")),
                        )
                    })?),
                    None => None,
                },
                domains: string_list(s.get("domains")),
                routes: string_list(s.get("routes")),
                strip_route_prefix: s.get("strip_route_prefix").as_bool().unwrap_or(false),
                drain_seconds: num_u(
                    s.get("drain_seconds"),
                    "drain_seconds",
                    &p.clone().attr("drain_seconds"),
                )?
                .map(|d| d.min(u64::from(u32::MAX)) as u32)
                .unwrap_or(crate::engine::spec::DEFAULT_DRAIN_SECONDS),
            },
        );
    }
    let mut workers = BTreeMap::new();
    for (name, w) in obj.get("workers").as_entries().into_iter().flatten() {
        let p = AttributePath::root("workers").key(name);
        workers.insert(
            name.clone(),
            WorkerSpec {
                command: w.get("command").as_str().map(String::from),
                instances: num_u(
                    w.get("instances"),
                    "instances",
                    &p.clone().attr("instances"),
                )?
                .unwrap_or(1)
                .min(u32::MAX as u64) as u32,
                cpus: num_f(w.get("cpus")),
                memory_mb: num_u(
                    w.get("memory_mb"),
                    "memory_mb",
                    &p.clone().attr("memory_mb"),
                )?,
                env: string_map(w.get("env")),
            },
        );
    }
    let mut jobs = BTreeMap::new();
    for (name, j) in obj.get("jobs").as_entries().into_iter().flatten() {
        let p = AttributePath::root("jobs").key(name);
        let number = |attr: &str, default: u64| -> Result<u64, Diagnostics> {
            Ok(num_u(j.get(attr), attr, &p.clone().attr(attr))?.unwrap_or(default))
        };
        jobs.insert(
            name.clone(),
            JobSpec {
                command: j.get("command").as_str().unwrap_or_default().to_owned(),
                schedule: j.get("schedule").as_str().map(String::from),
                time_zone: j.get("time_zone").as_str().unwrap_or("UTC").to_owned(),
                timeout_seconds: number("timeout_seconds", crate::engine::spec::DEFAULT_JOB_TIMEOUT)?,
                concurrency: match j.get("concurrency").as_str() {
                    None => Concurrency::default(),
                    Some(c) => Concurrency::parse(c).ok_or_else(|| {
                        Diagnostics::from(
                            Diagnostic::error(
                                "Invalid concurrency",
                                format!("jobs[{name:?}].concurrency = {c:?} is not a policy: use \"forbid\" (skip a run while the last one runs), \"allow\" or \"replace\" (stop the last one)."),
                            )
                            .at(p.clone().attr("concurrency")),
                        )
                    })?,
                },
                starting_deadline_seconds: number(
                    "starting_deadline_seconds",
                    crate::engine::spec::DEFAULT_STARTING_DEADLINE,
                )?,
                cpus: num_f(j.get("cpus")),
                memory_mb: num_u(j.get("memory_mb"), "memory_mb", &p.clone().attr("memory_mb"))?,
                env: string_map(j.get("env")),
            },
        );
    }
    Ok(AppSpec {
        name: obj.get("name").as_str().unwrap_or_default().to_string(),
        image: obj.get("image").as_str().unwrap_or_default().to_string(),
        track_tag: obj.get("track_tag").as_bool().unwrap_or(true),
        registry_credential_id: obj.get("registry_credential_id").as_str().map(String::from),
        env: string_map(obj.get("env")),
        secret_env: string_map(obj.get("secret_env")),
        secret_env_version: obj.get("secret_env_wo_version").as_i64(),
        secret_env_wo: string_map(config.get("secret_env_wo")),
        pre_deploy_command: obj.get("pre_deploy_command").as_str().map(String::from),
        post_deploy_command: obj.get("post_deploy_command").as_str().map(String::from),
        failed_deploy_command: obj.get("failed_deploy_command").as_str().map(String::from),
        services,
        workers,
        jobs,
        ingress: None,
        host_mode: None,
    })
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_elements()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A state object for an imported app (secrets are not recoverable: null).
fn spec_to_state(
    spec: &AppSpec,
    digest: Option<String>,
    release: Option<u64>,
    endpoints: &BTreeMap<String, Vec<String>>,
    urls: &BTreeMap<String, Vec<String>>,
) -> Value {
    let map = |m: &BTreeMap<String, String>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::string(v)))
                    .collect(),
            )
        }
    };
    let opt_num = |n: Option<f64>| {
        n.map(|f| Value::Number(Number::Float(f)))
            .unwrap_or(Value::Null)
    };
    let opt_u = |n: Option<u64>| n.map(|i| Value::int(i as i64)).unwrap_or(Value::Null);
    let list = |items: &[String]| {
        if items.is_empty() {
            Value::Null
        } else {
            Value::List(items.iter().map(Value::string).collect())
        }
    };
    let defaults = HealthCheck::default();
    let services: BTreeMap<String, Value> = spec
        .services
        .iter()
        .map(|(name, s)| {
            let hc = &s.health_check;
            let hc_v = if *hc == defaults {
                Value::Null
            } else {
                super::value::object([
                    ("path", Value::string(&hc.path)),
                    (
                        "interval_seconds",
                        Value::Number(Number::Float(hc.interval_seconds)),
                    ),
                    (
                        "timeout_seconds",
                        Value::Number(Number::Float(hc.timeout_seconds)),
                    ),
                    ("healthy_threshold", Value::int(hc.healthy_threshold as i64)),
                    (
                        "unhealthy_threshold",
                        Value::int(hc.unhealthy_threshold as i64),
                    ),
                    (
                        "start_period_seconds",
                        Value::Number(Number::Float(hc.start_period_seconds)),
                    ),
                ])
            };
            (
                name.clone(),
                super::value::object([
                    ("command", Value::opt_string(s.command.clone())),
                    ("http_port", Value::int(s.http_port as i64)),
                    ("instances", Value::int(s.instances as i64)),
                    ("health_check", hc_v),
                    ("cpus", opt_num(s.cpus)),
                    ("memory_mb", opt_u(s.memory_mb)),
                    ("env", map(&s.env)),
                    ("public_port", opt_u(s.public_port.map(u64::from))),
                    ("domains", list(&s.domains)),
                    ("routes", list(&s.routes)),
                    (
                        "strip_route_prefix",
                        if s.strip_route_prefix {
                            Value::Bool(true)
                        } else {
                            Value::Null
                        },
                    ),
                    (
                        "drain_seconds",
                        if s.drain_seconds == crate::engine::spec::DEFAULT_DRAIN_SECONDS {
                            Value::Null
                        } else {
                            Value::int(i64::from(s.drain_seconds))
                        },
                    ),
                ]),
            )
        })
        .collect();
    let workers: BTreeMap<String, Value> = spec
        .workers
        .iter()
        .map(|(name, w)| {
            (
                name.clone(),
                super::value::object([
                    ("command", Value::opt_string(w.command.clone())),
                    ("instances", Value::int(w.instances as i64)),
                    ("cpus", opt_num(w.cpus)),
                    ("memory_mb", opt_u(w.memory_mb)),
                    ("env", map(&w.env)),
                ]),
            )
        })
        .collect();
    let jobs: BTreeMap<String, Value> = spec
        .jobs
        .iter()
        .map(|(name, j)| {
            (
                name.clone(),
                super::value::object([
                    ("command", Value::string(&j.command)),
                    ("schedule", Value::opt_string(j.schedule.clone())),
                    ("time_zone", Value::string(&j.time_zone)),
                    ("timeout_seconds", Value::int(j.timeout_seconds as i64)),
                    ("concurrency", Value::string(j.concurrency.as_str())),
                    (
                        "starting_deadline_seconds",
                        Value::int(j.starting_deadline_seconds as i64),
                    ),
                    ("cpus", opt_num(j.cpus)),
                    ("memory_mb", opt_u(j.memory_mb)),
                    ("env", map(&j.env)),
                ]),
            )
        })
        .collect();
    super::value::object([
        ("id", Value::string(&spec.name)),
        ("name", Value::string(&spec.name)),
        ("image", Value::string(&spec.image)),
        ("track_tag", Value::Bool(spec.track_tag)),
        (
            "registry_credential_id",
            Value::opt_string(spec.registry_credential_id.clone()),
        ),
        ("env", map(&spec.env)),
        ("secret_env", Value::Null),
        ("secret_env_wo", Value::Null),
        (
            "secret_env_wo_version",
            spec.secret_env_version
                .map(Value::int)
                .unwrap_or(Value::Null),
        ),
        (
            "pre_deploy_command",
            Value::opt_string(spec.pre_deploy_command.clone()),
        ),
        (
            "services",
            if services.is_empty() {
                Value::Null
            } else {
                Value::Map(services)
            },
        ),
        (
            "workers",
            if workers.is_empty() {
                Value::Null
            } else {
                Value::Map(workers)
            },
        ),
        (
            "jobs",
            if jobs.is_empty() {
                Value::Null
            } else {
                Value::Map(jobs)
            },
        ),
        (
            "post_deploy_command",
            Value::opt_string(spec.post_deploy_command.clone()),
        ),
        (
            "failed_deploy_command",
            Value::opt_string(spec.failed_deploy_command.clone()),
        ),
        ("image_digest", Value::opt_string(digest)),
        (
            "release",
            release.map(|r| Value::int(r as i64)).unwrap_or(Value::Null),
        ),
        ("endpoints", endpoints_value(endpoints)),
        ("urls", urls_value(urls)),
        ("drift", Value::List(vec![])),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_paths_become_attribute_paths() {
        assert_eq!(
            spec_path("services[\"web\"].health_check.path"),
            AttributePath::root("services")
                .key("web")
                .attr("health_check")
                .attr("path")
        );
        assert_eq!(spec_path("name"), AttributePath::root("name"));
        assert_eq!(
            spec_path("services[\"web\"].domains[1]"),
            AttributePath::root("services")
                .key("web")
                .attr("domains")
                .index(1)
        );
    }
}
