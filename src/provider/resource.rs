//! Managed resources: the small interface each resource implements
//! (schema, create/read/update/delete, optional import and plan tweaks) and
//! the plan behaviour the schema declares, applied the same way for every
//! resource, as terraform-plugin-framework does.

use async_trait::async_trait;

use super::diag::{AttributePath, Diagnostic, Diagnostics};
use super::schema::{AttrType, Attribute, Nesting, PlanModifier, Schema};
use super::value::Value;
use super::Context;

/// A plan being built for one resource instance.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Prior state; null on create.
    pub prior: Value,
    /// The configuration (may hold unknowns; write-only values are here).
    pub config: Value,
    /// The planned new state.
    pub planned: Value,
    /// Attributes whose change forces replacement.
    pub requires_replace: Vec<AttributePath>,
}

impl Plan {
    pub fn is_create(&self) -> bool {
        self.prior.is_null()
    }
    /// Sets a top-level attribute of the planned state.
    pub fn set(&mut self, name: &str, v: Value) {
        if let Value::Object(m) = &mut self.planned {
            m.insert(name.to_string(), v);
        }
    }
}

#[async_trait]
pub trait Resource: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn schema(&self) -> Schema;

    /// Checks beyond what the schema declares (e.g. "exactly one of").
    /// Unknown values are never an error.
    fn validate(&self, _config: &Value) -> Diagnostics {
        Diagnostics::default()
    }

    /// Adjusts a create or update plan after the schema's declared
    /// behaviour has been applied (e.g. resolve an image digest).
    async fn modify_plan(&self, _ctx: &Context, _plan: &mut Plan) -> Diagnostics {
        Diagnostics::default()
    }

    async fn create(&self, ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics>;
    /// [`Resource::create`] with the warnings terraform shows after it.
    async fn create_warned(
        &self,
        ctx: &Context,
        plan: &Plan,
    ) -> Result<(Value, Diagnostics), Diagnostics> {
        Ok((self.create(ctx, plan).await?, Diagnostics::default()))
    }
    /// [`Resource::update`] with the warnings terraform shows after it.
    async fn update_warned(
        &self,
        ctx: &Context,
        plan: &Plan,
    ) -> Result<(Value, Diagnostics), Diagnostics> {
        Ok((self.update(ctx, plan).await?, Diagnostics::default()))
    }
    /// Refreshes `state`; `Ok(None)` means the object is gone.
    async fn read(&self, ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics>;
    async fn update(&self, ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics>;
    async fn delete(&self, ctx: &Context, prior: &Value) -> Result<(), Diagnostics>;

    /// A warning every `terraform import` of this type gets (what an
    /// import cannot recover).
    fn import_warning(&self) -> Option<Diagnostic> {
        None
    }

    /// `terraform import`: the state for `id`, to be refreshed by `read`.
    async fn import(&self, _ctx: &Context, _id: &str) -> Result<Value, Diagnostics> {
        Err(Diagnostic::error(
            format!("{} cannot be imported", self.type_name()),
            "This resource type does not support `terraform import`.",
        )
        .into())
    }
}

/// Checks the schema's declared validators and required attributes on a
/// configuration. Unknown and null values are skipped.
pub fn validate_declared(schema: &Schema, config: &Value) -> Diagnostics {
    let mut diags = Diagnostics::default();
    for a in &schema.attributes {
        let v = config.get(a.name);
        if v.is_null() || !v.is_wholly_known() {
            continue;
        }
        for validator in &a.validators {
            if let Err(why) = (validator.check)(v) {
                diags.push(
                    Diagnostic::error(format!("Invalid value for {}", a.name), why)
                        .at(AttributePath::root(a.name)),
                );
            }
        }
    }
    diags
}

/// The plan the schema alone implies, given prior state, terraform's
/// proposed new state and the configuration:
/// - write-only attributes are null;
/// - unset optional attributes with a default get the default;
/// - on create, or when anything changed, computed attributes the
///   configuration leaves unset become unknown, except those declared
///   `UseStateForUnknown` that already have a value;
/// - a change to a `RequiresReplace` attribute is recorded.
pub fn plan_declared(schema: &Schema, prior: &Value, proposed: &Value, config: &Value) -> Plan {
    let mut planned = proposed.clone();
    let attrs = &schema.attributes;
    apply_defaults(attrs, &mut planned, config);
    if let Value::Object(m) = &mut planned {
        for a in attrs.iter().filter(|a| a.write_only) {
            m.insert(a.name.to_string(), Value::Null);
        }
    }
    let changed = prior.is_null() || !same_ignoring_computed(attrs, prior, &planned);
    if changed {
        if let Value::Object(m) = &mut planned {
            for a in attrs.iter().filter(|a| a.computed && a.default.is_none()) {
                if !config.get(a.name).is_null() {
                    continue;
                }
                let keep = a.has_modifier(PlanModifier::UseStateForUnknown)
                    && !prior.get(a.name).is_null();
                let v = if keep {
                    prior.get(a.name).clone()
                } else {
                    Value::Unknown
                };
                m.insert(a.name.to_string(), v);
            }
        }
    }
    let mut requires_replace = Vec::new();
    if !prior.is_null() {
        for a in attrs
            .iter()
            .filter(|a| a.has_modifier(PlanModifier::RequiresReplace))
        {
            if planned.get(a.name) != prior.get(a.name) {
                requires_replace.push(AttributePath::root(a.name));
            }
        }
    }
    Plan {
        prior: prior.clone(),
        config: config.clone(),
        planned,
        requires_replace,
    }
}

/// Fills declared defaults for attributes the configuration leaves unset,
/// at any depth of nested attributes.
fn apply_defaults(attrs: &[Attribute], planned: &mut Value, config: &Value) {
    let Value::Object(m) = planned else { return };
    for a in attrs {
        let cfg = config.get(a.name);
        if let Some(def) = &a.default {
            if cfg.is_null() {
                m.insert(a.name.to_string(), def.clone());
            }
        }
        let (
            AttrType::Nested {
                nesting,
                attributes,
            },
            Some(child),
        ) = (&a.ty, m.get_mut(a.name))
        else {
            continue;
        };
        match (nesting, child) {
            (Nesting::Single, child) => apply_defaults(attributes, child, cfg),
            (Nesting::Map, Value::Map(entries)) => {
                for (k, v) in entries.iter_mut() {
                    let c = cfg
                        .as_entries()
                        .and_then(|e| e.get(k))
                        .unwrap_or(&Value::Null);
                    apply_defaults(attributes, v, c);
                }
            }
            (Nesting::List | Nesting::Set, Value::List(items) | Value::Set(items)) => {
                for (i, v) in items.iter_mut().enumerate() {
                    let c = cfg
                        .as_elements()
                        .and_then(|e| e.get(i))
                        .unwrap_or(&Value::Null);
                    apply_defaults(attributes, v, c);
                }
            }
            _ => {}
        }
    }
}

/// Whether prior and planned agree on every attribute the user controls
/// (computed-only attributes are the provider's to change).
fn same_ignoring_computed(attrs: &[Attribute], prior: &Value, planned: &Value) -> bool {
    attrs
        .iter()
        .filter(|a| a.required || a.optional)
        .all(|a| prior.get(a.name) == planned.get(a.name))
}

/// Clears write-only attributes from a state before it goes back to
/// terraform (they must never be stored).
pub fn strip_write_only(schema: &Schema, state: &mut Value) {
    if let Value::Object(m) = state {
        for a in schema.attributes.iter().filter(|a| a.write_only) {
            m.insert(a.name.to_string(), Value::Null);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::schema::Attribute;
    use crate::provider::value::object;

    fn schema() -> Schema {
        Schema::new(
            "t",
            vec![
                Attribute::string("id").computed().use_state_for_unknown(),
                Attribute::string("name").required(),
                Attribute::string("registry").required().requires_replace(),
                Attribute::string("digest").computed(),
                Attribute::string("secret_wo").optional().write_only(),
                Attribute::bool("track")
                    .optional()
                    .computed()
                    .default_value(Value::Bool(true)),
            ],
        )
    }

    fn obj(pairs: &[(&str, Value)]) -> Value {
        object(pairs.iter().map(|(k, v)| (*k, v.clone())))
    }

    #[test]
    fn create_marks_computed_unknown_and_applies_defaults() {
        let cfg = obj(&[
            ("name", Value::string("a")),
            ("registry", Value::string("r")),
            ("secret_wo", Value::string("s3cr3t")),
        ]);
        // terraform proposes config values with computed nulls.
        let proposed = obj(&[
            ("name", Value::string("a")),
            ("registry", Value::string("r")),
            ("secret_wo", Value::string("s3cr3t")),
        ]);
        let p = plan_declared(&schema(), &Value::Null, &proposed, &cfg);
        assert!(p.planned.get("id").is_unknown());
        assert!(p.planned.get("digest").is_unknown());
        assert_eq!(p.planned.get("track"), &Value::Bool(true));
        assert!(
            p.planned.get("secret_wo").is_null(),
            "write-only must be null"
        );
        assert!(p.requires_replace.is_empty());
    }

    #[test]
    fn no_change_plans_the_prior_state() {
        // Decoded objects carry every attribute of the schema.
        let prior = obj(&[
            ("secret_wo", Value::Null),
            ("id", Value::string("x")),
            ("name", Value::string("a")),
            ("registry", Value::string("r")),
            ("digest", Value::string("d")),
            ("track", Value::Bool(true)),
        ]);
        let cfg = obj(&[
            ("name", Value::string("a")),
            ("registry", Value::string("r")),
        ]);
        let p = plan_declared(&schema(), &prior, &prior, &cfg);
        assert_eq!(p.planned, prior);
    }

    #[test]
    fn update_keeps_stable_ids_and_flags_replacement() {
        let prior = obj(&[
            ("id", Value::string("x")),
            ("name", Value::string("a")),
            ("registry", Value::string("r")),
            ("digest", Value::string("d")),
            ("track", Value::Bool(true)),
        ]);
        let mut proposed = prior.clone();
        if let Value::Object(m) = &mut proposed {
            m.insert("registry".into(), Value::string("r2"));
        }
        let cfg = obj(&[
            ("name", Value::string("a")),
            ("registry", Value::string("r2")),
        ]);
        let p = plan_declared(&schema(), &prior, &proposed, &cfg);
        assert_eq!(p.planned.get("id").as_str(), Some("x"));
        assert!(p.planned.get("digest").is_unknown());
        assert_eq!(p.requires_replace, vec![AttributePath::root("registry")]);
    }

    #[test]
    fn declared_validators_skip_unknowns() {
        let s = Schema::new(
            "t",
            vec![Attribute::string("name")
                .required()
                .validate(super::super::schema::Validator {
                    description: "Lowercase.",
                    check: |v| match v.as_str() {
                        Some(s) if s.chars().all(|c| c.is_ascii_lowercase()) => Ok(()),
                        _ => Err("must be lowercase".into()),
                    },
                })],
        );
        assert!(validate_declared(&s, &obj(&[("name", Value::Unknown)])).is_empty());
        let d = validate_declared(&s, &obj(&[("name", Value::string("AB"))]));
        assert_eq!(d.0[0].path, Some(AttributePath::root("name")));
    }
}
