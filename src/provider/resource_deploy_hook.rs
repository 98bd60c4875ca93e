//! `resource "berth_deploy_hook"`: a secret URL that deploys an app when
//! called (`berth serve` answers it). The key is made here, returned once
//! in the sensitive `url`, and stored only as a hash; `keepers` rotate it
//! the way `random_password` does.

use async_trait::async_trait;

use super::diag::{AttributePath, Diagnostic, Diagnostics};
use super::resource::{Plan, Resource};
use super::schema::{Attribute, Schema, Type, Validator};
use super::value::{object, Value};
use super::Context;
use crate::engine::hooks::{check_base_url, clear_text_warning, hook_url, key_of_url};
use crate::engine::spec::check_name;
use crate::engine::AppsError;

pub const TYPE_NAME: &str = "berth_deploy_hook";

pub struct DeployHookResource;

const APP_RULE: Validator = Validator {
    description: "The name of a `berth_app`.",
    check: |v| match v.as_str() {
        Some(s) => check_name(s),
        None => Ok(()),
    },
};

const BASE_URL_RULE: Validator = Validator {
    description: "An http:// or https:// URL without query string.",
    check: |v| match v.as_str() {
        Some(s) => check_base_url(s),
        None => Ok(()),
    },
};

const IMPORTED_NO_KEY: &str = "Berth stores only a hash of a deploy hook's key, so an imported hook has no `url`: the key cannot be recovered. Keep using the URL you have, or replace the hook (`terraform apply -replace=ADDRESS`) to get a new URL; the old one stops working then.";

#[async_trait]
impl Resource for DeployHookResource {
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        Schema::new(
            "A secret URL that deploys an app when called, for CI after it pushes an image (Render's deploy hook). `berth serve` answers it: `GET` or `POST` the `url` to deploy the app's configured image (its tag's current linux/amd64 digest), or append `&imgURL=` and a URL-encoded tag or digest of the same repository to deploy that one (another repository gets 404). The deploy runs in the background through the same zero-downtime, health-gated, self-rolling-back path as `terraform apply`, and is journaled with trigger `hook`. Several hooks per app are fine: rotate with overlap using `create_before_destroy`.",
            vec![
                Attribute::string("id").computed().use_state_for_unknown().describe(
                    "Identifier of the hook (`dh-…`); public: it is the path of the URL. Import a hook by it.",
                ),
                Attribute::string("app").required().requires_replace().validate(APP_RULE).describe(
                    "The name of the app the hook deploys, e.g. `berth_app.web.name` (which also makes Terraform create the app first). The app must have been deployed.",
                ),
                Attribute::string("base_url").optional().computed().validate(BASE_URL_RULE).describe(
                    "Where `berth serve` is reachable, e.g. `https://deploy.example.com`; defaults to the provider's `hooks_url`. Changing it changes `url`, not the key.",
                ),
                Attribute::typed("keepers", Type::map(Type::String)).optional().requires_replace().describe(
                    "Arbitrary values; any change issues a new key (a new hook), like `random_password`'s `keepers`. E.g. `{ rotated = \"2026-12\" }`.",
                ),
                Attribute::string("url").computed().sensitive().describe(
                    "The secret URL: `base_url` + `/deploy/{id}?key={key}`. Append `&imgURL=<url-encoded reference>` to deploy another tag or digest. The key (256 random bits) exists only here and in the Terraform state; Berth keeps a hash. Null for an imported hook: the key cannot be recovered.",
                ),
            ],
        )
    }

    async fn modify_plan(&self, ctx: &Context, plan: &mut Plan) -> Diagnostics {
        let mut diags = Diagnostics::default();
        let configured = plan.config.get("base_url");
        if configured.is_null() {
            match &ctx.config.hooks_url {
                Some(url) => plan.set("base_url", Value::string(url)),
                None => diags.push(
                    Diagnostic::error(
                        "Missing base_url",
                        "A deploy hook's URL starts with where `berth serve` is reachable. Set `base_url` (e.g. \"https://deploy.example.com\") here, or `hooks_url` in the provider block for every hook.",
                    )
                    .at(AttributePath::root("base_url")),
                ),
            }
        }
        if let Some(warning) = plan
            .planned
            .get("base_url")
            .as_str()
            .and_then(clear_text_warning)
        {
            diags.push(
                Diagnostic::warning("Deploy hook URL in clear text", warning)
                    .at(AttributePath::root("base_url")),
            );
        }
        diags
    }

    async fn create(&self, ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics> {
        let app = plan.planned.get("app").as_str().unwrap_or_default();
        let base = base_url(&plan.planned)?;
        let apps = ctx.apps().await?;
        let (hook, key) = apps.create_hook(app).await.map_err(|e| match e {
            AppsError::NotFound { .. } => Diagnostics::from(
                Diagnostic::error(
                    "App not found",
                    format!("Berth has no app named {app:?}, so there is nothing for a hook to deploy. Deploy the `berth_app` first, and reference it so Terraform orders the two: `app = berth_app.NAME.name`."),
                )
                .at(AttributePath::root("app")),
            ),
            e => hook_diag(e),
        })?;
        let mut fields = plan.planned.as_entries().cloned().unwrap_or_default();
        fields.insert("id".into(), Value::string(&hook.id));
        fields.insert(
            "url".into(),
            Value::string(hook_url(base, &hook.id, key.expose())),
        );
        Ok(Value::Object(fields))
    }

    async fn read(&self, ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics> {
        let Some(id) = state.get("id").as_str() else {
            return Ok(None);
        };
        let apps = ctx.apps().await?;
        let Some(hook) = apps.hook(id).await.map_err(hook_diag)? else {
            // Deleted outside terraform: its URL answers 404 now.
            return Ok(None);
        };
        let mut fields = state.as_entries().cloned().unwrap_or_default();
        fields.insert("app".into(), Value::string(hook.app));
        Ok(Some(Value::Object(fields)))
    }

    async fn update(&self, _ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics> {
        // Only `base_url` can change in place: the same key under it.
        let id = plan.prior.get("id").as_str().unwrap_or_default();
        let base = base_url(&plan.planned)?;
        let url = plan
            .prior
            .get("url")
            .as_str()
            .and_then(key_of_url)
            .map(|key| Value::string(hook_url(base, id, key)))
            .unwrap_or(Value::Null);
        let mut fields = plan.planned.as_entries().cloned().unwrap_or_default();
        fields.insert("id".into(), Value::string(id));
        fields.insert("url".into(), url);
        Ok(Value::Object(fields))
    }

    async fn delete(&self, ctx: &Context, prior: &Value) -> Result<(), Diagnostics> {
        let Some(id) = prior.get("id").as_str() else {
            return Ok(());
        };
        ctx.apps().await?.delete_hook(id).await.map_err(hook_diag)?;
        Ok(())
    }

    async fn import(&self, ctx: &Context, id: &str) -> Result<Value, Diagnostics> {
        let hook = ctx.apps().await?.hook(id).await.map_err(hook_diag)?.ok_or_else(|| {
            Diagnostics::from(Diagnostic::error(
                "Deploy hook not found",
                format!("Berth's store has no deploy hook {id:?}. A hook's id is the `dh-…` part of its URL's path; check it, and the provider's `state_dir`."),
            ))
        })?;
        Ok(object([
            ("id", Value::string(hook.id)),
            ("app", Value::string(hook.app)),
            (
                "base_url",
                ctx.config
                    .hooks_url
                    .as_ref()
                    .map(Value::string)
                    .unwrap_or(Value::Null),
            ),
            ("keepers", Value::Null),
            ("url", Value::Null),
        ]))
    }

    fn import_warning(&self) -> Option<Diagnostic> {
        Some(Diagnostic::warning(
            "The deploy hook's key cannot be recovered",
            IMPORTED_NO_KEY,
        ))
    }
}

fn base_url(planned: &Value) -> Result<&str, Diagnostics> {
    planned.get("base_url").as_str().ok_or_else(|| {
        Diagnostics::from(
            Diagnostic::error(
                "Missing base_url",
                "Set `base_url`, or `hooks_url` in the provider block.",
            )
            .at(AttributePath::root("base_url")),
        )
    })
}

fn hook_diag(e: AppsError) -> Diagnostics {
    Diagnostic::error("Deploy hook operation failed", e.to_string()).into()
}
