//! `resource "berth_registry_credential"`: a username and token for a
//! registry, verified against the registry before it is stored, kept
//! encrypted in Berth's store, never logged. Deleting it is refused while
//! an app uses it.

use async_trait::async_trait;

use super::diag::{AttributePath, Diagnostic, Diagnostics};
use super::resource::{Plan, Resource};
use super::schema::{Attribute, Schema};
use super::value::{object, Value};
use super::Context;
use crate::reference::normalize_registry;
use crate::registry::Secret;
use crate::store::{CredentialUpdate, NewCredential, StoreError};

pub const TYPE_NAME: &str = "berth_registry_credential";

pub struct RegistryCredentialResource;

#[async_trait]
impl Resource for RegistryCredentialResource {
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        Schema::new(
            "A username and token for a container registry, so apps and `berth_image` can use private images. Berth verifies the credential against the registry when it is created or changed, keeps the token encrypted in its store, and never writes it to logs. With `token_wo` (Terraform 1.11+) the token never reaches the Terraform state either. A credential cannot be deleted while an app uses it.",
            vec![
                Attribute::string("id").computed().use_state_for_unknown().describe(
                    "Identifier of the credential in Berth's store (`rc-…`). Pass it as `registry_credential_id`.",
                ),
                Attribute::string("name").required().describe(
                    "A name for people, e.g. `ghcr-ci`. Not used by Berth itself.",
                ),
                Attribute::string("registry").required().requires_replace().describe(
                    "Registry host as you would give it to `docker login`: `docker.io`, `ghcr.io`, `registry.gitlab.com`, `europe-docker.pkg.dev`, `registry.digitalocean.com` or `registry.example.com:5000`. `index.docker.io` and `registry-1.docker.io` are the same registry as `docker.io`.",
                ),
                Attribute::string("username").required().describe(
                    "User name at the registry. Docker Hub: your Docker ID. GHCR: your GitHub user. GitLab: the deploy token's username. Google Artifact Registry: `_json_key` (token = the service account key JSON) or `oauth2accesstoken` (token = an access token). DigitalOcean: any non-empty value (token = an API token).",
                ),
                Attribute::string("token").optional().sensitive().describe(
                    "Password or access token. Needs pull permission: `read:packages` on GHCR, `read_registry` on GitLab, an Artifact Registry reader role on Google, read access on Docker Hub and DigitalOcean. Stored in the Terraform state (marked sensitive); prefer `token_wo`. Exactly one of `token` and `token_wo` must be set.",
                ),
                Attribute::string("token_wo").optional().sensitive().write_only().describe(
                    "Write-only form of `token` (Terraform 1.11+): sent to Berth but never stored in the Terraform state or plan. Requires `token_wo_version`.",
                ),
                Attribute::number("token_wo_version").optional().describe(
                    "Version of `token_wo`. Terraform cannot see write-only values change, so change this number (e.g. increment it) to rotate the token.",
                ),
            ],
        )
    }

    fn validate(&self, config: &Value) -> Diagnostics {
        let mut diags = Diagnostics::default();
        let token = config.get("token");
        let token_wo = config.get("token_wo");
        let version = config.get("token_wo_version");
        // Unknown values may still turn out to be set: judge only known ones.
        if token.is_unknown() || token_wo.is_unknown() {
            return diags;
        }
        match (token.is_null(), token_wo.is_null()) {
            (true, true) => diags.push(
                Diagnostic::error(
                    "Missing token",
                    "Set exactly one of `token` or `token_wo` (with `token_wo_version`) to the registry password or access token.",
                )
                .at(AttributePath::root("token")),
            ),
            (false, false) => diags.push(
                Diagnostic::error(
                    "Conflicting tokens",
                    "Both `token` and `token_wo` are set. Keep one: `token_wo` (with `token_wo_version`) keeps the token out of the Terraform state.",
                )
                .at(AttributePath::root("token_wo")),
            ),
            _ => {}
        }
        if !token_wo.is_null() && version.is_null() {
            diags.push(
                Diagnostic::error(
                    "Missing token_wo_version",
                    "`token_wo` is write-only, so Terraform cannot notice when it changes. Set `token_wo_version` (e.g. `1`) and change it whenever you change the token.",
                )
                .at(AttributePath::root("token_wo_version")),
            );
        }
        if !version.is_null() && !version.is_unknown() && token_wo.is_null() {
            diags.push(
                Diagnostic::error(
                    "token_wo_version without token_wo",
                    "`token_wo_version` only versions `token_wo`. Remove it, or move the token to `token_wo`.",
                )
                .at(AttributePath::root("token_wo_version")),
            );
        }
        if let Some(r) = config.get("registry").as_str() {
            if let Err(e) = normalize_registry(r) {
                diags.push(
                    Diagnostic::error("Invalid registry", e).at(AttributePath::root("registry")),
                );
            }
        }
        diags
    }

    async fn create(&self, ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics> {
        let (registry, username, secret) = verified(ctx, plan).await?;
        let store = ctx.store().await?;
        let cred = store
            .insert_credential(NewCredential {
                name: str_attr(&plan.config, "name"),
                registry,
                username,
                secret,
                secret_version: plan.config.get("token_wo_version").as_i64(),
            })
            .await
            .map_err(store_diag)?;
        Ok(state(&cred.id, &plan.planned))
    }

    async fn read(&self, ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics> {
        let Some(id) = state.get("id").as_str() else {
            return Ok(None);
        };
        let store = ctx.store().await?;
        let Some(cred) = store
            .get_credential(id.to_string())
            .await
            .map_err(store_diag)?
        else {
            return Ok(None);
        };
        let mut fields = state.as_entries().cloned().unwrap_or_default();
        fields.insert("name".into(), Value::string(cred.name));
        fields.insert("username".into(), Value::string(cred.username));
        // Keep the registry as the user wrote it when it means the same.
        let written = state.get("registry").as_str().map(normalize_registry);
        if written != Some(Ok(cred.registry.clone())) {
            fields.insert("registry".into(), Value::string(cred.registry));
        }
        Ok(Some(Value::Object(fields)))
    }

    async fn update(&self, ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics> {
        let id = plan
            .prior
            .get("id")
            .as_str()
            .unwrap_or_default()
            .to_string();
        let token_changed = plan.planned.get("token") != plan.prior.get("token")
            || plan.planned.get("token_wo_version") != plan.prior.get("token_wo_version");
        let user_changed = plan.planned.get("username") != plan.prior.get("username");
        let mut update = CredentialUpdate {
            name: Some(str_attr(&plan.config, "name")),
            ..CredentialUpdate::default()
        };
        if token_changed || user_changed {
            let (_, username, secret) = verified(ctx, plan).await?;
            update.username = Some(username);
            update.secret = Some(secret);
            update.secret_version = Some(plan.config.get("token_wo_version").as_i64());
        }
        let store = ctx.store().await?;
        store
            .update_credential(id.clone(), update)
            .await
            .map_err(store_diag)?;
        Ok(state(&id, &plan.planned))
    }

    async fn delete(&self, ctx: &Context, prior: &Value) -> Result<(), Diagnostics> {
        let Some(id) = prior.get("id").as_str() else {
            return Ok(());
        };
        let store = ctx.store().await?;
        match store.delete_credential(id.to_string()).await {
            Ok(_) => Ok(()),
            Err(StoreError::CredentialInUse { apps, .. }) => Err(Diagnostic::error(
                "Registry credential is in use",
                format!(
                    "Credential {id} is used by {} {}. Point {} at another credential (or remove {}) first, then delete this one.",
                    if apps.len() == 1 { "app" } else { "apps" },
                    apps.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "),
                    if apps.len() == 1 { "it" } else { "them" },
                    if apps.len() == 1 { "the app" } else { "the apps" },
                ),
            )
            .into()),
            Err(e) => Err(store_diag(e)),
        }
    }

    async fn import(&self, ctx: &Context, id: &str) -> Result<Value, Diagnostics> {
        let store = ctx.store().await?;
        let cred = store
            .get_credential(id.to_string())
            .await
            .map_err(store_diag)?
            .ok_or_else(|| {
                Diagnostics::from(Diagnostic::error(
                    "Registry credential not found",
                    format!("Berth's store has no registry credential {id:?}. List them with `berth credentials list`, or check the provider's `state_dir`."),
                ))
            })?;
        Ok(object([
            ("id", Value::string(cred.id)),
            ("name", Value::string(cred.name)),
            ("registry", Value::string(cred.registry)),
            ("username", Value::string(cred.username)),
            ("token", Value::Null),
            ("token_wo", Value::Null),
            (
                "token_wo_version",
                cred.secret_version.map(Value::int).unwrap_or(Value::Null),
            ),
        ]))
    }
}

fn str_attr(v: &Value, name: &str) -> String {
    v.get(name).as_str().unwrap_or_default().to_string()
}

/// The planned state with its id filled in.
fn state(id: &str, planned: &Value) -> Value {
    let mut fields = planned.as_entries().cloned().unwrap_or_default();
    fields.insert("id".into(), Value::string(id));
    Value::Object(fields)
}

/// Checks the credential with the registry; the token comes from `token`
/// or, write-only, from the configuration's `token_wo`.
async fn verified(ctx: &Context, plan: &Plan) -> Result<(String, String, Secret), Diagnostics> {
    let written = str_attr(&plan.config, "registry");
    let registry = normalize_registry(&written).map_err(|e| {
        Diagnostics::from(
            Diagnostic::error("Invalid registry", e).at(AttributePath::root("registry")),
        )
    })?;
    let username = str_attr(&plan.config, "username");
    let token = plan
        .config
        .get("token")
        .as_str()
        .or_else(|| plan.config.get("token_wo").as_str())
        .map(Secret::new)
        .ok_or_else(|| {
            Diagnostics::from(
                Diagnostic::error(
                    "Missing token",
                    "Set `token`, or `token_wo` with `token_wo_version`.",
                )
                .at(AttributePath::root("token")),
            )
        })?;
    ctx.registry
        .verify_login(&registry, &username, &token)
        .await
        .map_err(|e| {
            Diagnostics::from(
                Diagnostic::error(
                    format!("Registry {registry} refused the credential"),
                    e.to_string(),
                )
                .at(AttributePath::root("username")),
            )
        })?;
    Ok((registry, username, token))
}

/// A store failure as a diagnostic.
pub fn store_diag(e: StoreError) -> Diagnostics {
    Diagnostic::error("Berth's store failed", e.to_string()).into()
}
