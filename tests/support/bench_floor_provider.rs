//! The benchmark's floor: a terraform plugin that serves Berth's exact
//! schemas but does no work. Its `berth_app` plans nothing, refreshes by
//! returning the state it is given and creates by filling in the computed
//! attributes; no registry, no Docker, no store. `make bench` plans the same
//! 100 apps with it and with Berth, so the report can tell terraform's own
//! per-resource cost for this schema apart from Berth's.
//!
//! Not a provider for anything else: it runs only under terraform, like the
//! real plugin (the same handshake, TLS and shutdown).

use async_trait::async_trait;
use berth::provider::diag::{Diagnostic, Diagnostics};
use berth::provider::resource::{Plan, Resource};
use berth::provider::resource_app::AppResource;
use berth::provider::schema::Schema;
use berth::provider::value::Value;
use berth::provider::{Context, Provider};
use berth::tfplugin::server::{run_plugin, ServeOptions};

/// `berth_app` with Berth's schema and none of its work.
struct FloorApp;

#[async_trait]
impl Resource for FloorApp {
    fn type_name(&self) -> &'static str {
        AppResource.type_name()
    }

    fn schema(&self) -> Schema {
        AppResource.schema()
    }

    async fn create(&self, _ctx: &Context, plan: &Plan) -> Result<Value, Diagnostics> {
        let mut state = plan.planned.as_entries().cloned().unwrap_or_default();
        let computed = [
            ("id", plan.planned.get("name").clone()),
            (
                "image_digest",
                Value::string(format!("sha256:{}", "0".repeat(64))),
            ),
            ("release", Value::int(1)),
            ("endpoints", Value::Map(Default::default())),
            ("urls", Value::Map(Default::default())),
            ("drift", Value::List(vec![])),
        ];
        for (name, value) in computed {
            state.insert(name.into(), value);
        }
        Ok(Value::Object(state))
    }

    async fn read(&self, _ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics> {
        Ok(Some(state.clone()))
    }

    async fn update(&self, _ctx: &Context, _plan: &Plan) -> Result<Value, Diagnostics> {
        Err(not_here("update"))
    }

    async fn delete(&self, _ctx: &Context, _prior: &Value) -> Result<(), Diagnostics> {
        Ok(())
    }
}

fn not_here(what: &str) -> Diagnostics {
    Diagnostic::error(
        format!("The benchmark's floor provider cannot {what}"),
        "It only creates, refreshes, plans and destroys apps for `make bench`.",
    )
    .into()
}

fn main() {
    let provider = Provider::from_parts(vec![], vec![Box::new(FloorApp)], vec![]);
    run_plugin("bench-floor-provider", ServeOptions::default(), provider)
}
