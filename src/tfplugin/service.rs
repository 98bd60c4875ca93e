//! The tfplugin6 gRPC service. Each RPC decodes its request, dispatches to
//! [`crate::provider::Provider`], and encodes the answer; nothing else lives
//! here. RPCs for features Berth does not offer answer "unimplemented".

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::debug;

use super::convert;
use super::proto::tfplugin6 as pb;
use crate::provider::diag::Diagnostics;
use crate::provider::Provider;

/// The gRPC face of the provider.
#[derive(Clone)]
pub struct ProviderGrpc {
    provider: Arc<Provider>,
}

impl Default for ProviderGrpc {
    fn default() -> Self {
        ProviderGrpc::new()
    }
}

impl ProviderGrpc {
    pub fn new() -> ProviderGrpc {
        ProviderGrpc::with_provider(Provider::new())
    }

    pub fn with_provider(provider: Provider) -> ProviderGrpc {
        ProviderGrpc {
            provider: Arc::new(provider),
        }
    }

    /// The provider behind the service (the server ends it at `Shutdown`).
    pub fn provider(&self) -> Arc<Provider> {
        self.provider.clone()
    }

    fn schema_response(&self) -> pb::get_provider_schema::Response {
        let p = &self.provider;
        pb::get_provider_schema::Response {
            provider: Some(convert::schema(&p.provider_schema())),
            resource_schemas: p
                .resources()
                .map(|r| (r.type_name().to_string(), convert::schema(&r.schema())))
                .collect(),
            data_source_schemas: p
                .data_sources()
                .map(|d| (d.type_name().to_string(), convert::schema(&d.schema())))
                .collect(),
            diagnostics: vec![],
            provider_meta: None,
            server_capabilities: Some(capabilities()),
            functions: self.functions(),
            ephemeral_resource_schemas: Default::default(),
        }
    }

    fn functions(&self) -> std::collections::HashMap<String, pb::Function> {
        self.provider
            .functions()
            .map(|f| (f.name().to_string(), convert::function(&f.signature())))
            .collect()
    }
}

impl ProviderGrpc {
    /// The value type of a resource's schema, or the unknown-type diagnostic.
    fn resource_type(&self, type_name: &str) -> Result<ResourceType, Diagnostics> {
        match self.provider.resource_schema(type_name) {
            Some(schema) => Ok(ResourceType(schema)),
            None => Err(self
                .provider
                .validate_resource(type_name, &Default::default())),
        }
    }
}

/// A resource's value type, from the provider's schemas built once.
struct ResourceType(crate::provider::ResourceSchema);

impl std::ops::Deref for ResourceType {
    type Target = crate::provider::schema::Type;

    fn deref(&self) -> &Self::Target {
        &self.0 .1
    }
}

/// A result as (value, diagnostics); on error the fallback value is sent.
fn split(
    result: Result<pb::DynamicValue, Diagnostics>,
    fallback: Option<pb::DynamicValue>,
) -> (Option<pb::DynamicValue>, Diagnostics) {
    match result {
        Ok(v) => (Some(v), Diagnostics::default()),
        Err(d) => (fallback, d),
    }
}

fn capabilities() -> pb::ServerCapabilities {
    pb::ServerCapabilities {
        plan_destroy: false,
        // terraform may cache the schema instead of asking every process.
        get_provider_schema_optional: true,
        move_resource_state: false,
    }
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not implemented by the berth provider"
    )))
}

#[tonic::async_trait]
impl pb::provider_server::Provider for ProviderGrpc {
    async fn get_metadata(
        &self,
        _request: Request<pb::get_metadata::Request>,
    ) -> Result<Response<pb::get_metadata::Response>, Status> {
        let p = &self.provider;
        Ok(Response::new(pb::get_metadata::Response {
            server_capabilities: Some(capabilities()),
            diagnostics: vec![],
            data_sources: p
                .data_sources()
                .map(|d| pb::get_metadata::DataSourceMetadata {
                    type_name: d.type_name().to_string(),
                })
                .collect(),
            resources: p
                .resources()
                .map(|r| pb::get_metadata::ResourceMetadata {
                    type_name: r.type_name().to_string(),
                })
                .collect(),
            functions: p
                .functions()
                .map(|f| pb::get_metadata::FunctionMetadata {
                    name: f.name().to_string(),
                })
                .collect(),
            ephemeral_resources: vec![],
        }))
    }

    async fn get_provider_schema(
        &self,
        _request: Request<pb::get_provider_schema::Request>,
    ) -> Result<Response<pb::get_provider_schema::Response>, Status> {
        debug!("GetProviderSchema");
        Ok(Response::new(self.schema_response()))
    }

    async fn validate_provider_config(
        &self,
        request: Request<pb::validate_provider_config::Request>,
    ) -> Result<Response<pb::validate_provider_config::Response>, Status> {
        let ty = self.provider.provider_schema().value_type();
        let diags = match convert::decode(request.get_ref().config.as_ref(), &ty) {
            Ok(cfg) => self.provider.validate_provider_config(&cfg),
            Err(e) => convert::decode_diagnostic(&e),
        };
        Ok(Response::new(pb::validate_provider_config::Response {
            diagnostics: convert::diagnostics(diags),
        }))
    }

    async fn validate_resource_config(
        &self,
        request: Request<pb::validate_resource_config::Request>,
    ) -> Result<Response<pb::validate_resource_config::Response>, Status> {
        let req = request.get_ref();
        let diags = match self.resource_type(&req.type_name) {
            Ok(ty) => match convert::decode(req.config.as_ref(), &ty) {
                Ok(cfg) => self.provider.validate_resource(&req.type_name, &cfg),
                Err(e) => convert::decode_diagnostic(&e),
            },
            Err(d) => d,
        };
        Ok(Response::new(pb::validate_resource_config::Response {
            diagnostics: convert::diagnostics(diags),
        }))
    }

    async fn validate_data_resource_config(
        &self,
        request: Request<pb::validate_data_resource_config::Request>,
    ) -> Result<Response<pb::validate_data_resource_config::Response>, Status> {
        let req = request.get_ref();
        let diags = match self.provider.data_source(&req.type_name) {
            Some(ds) => match convert::decode(req.config.as_ref(), &ds.schema().value_type()) {
                Ok(cfg) => self.provider.validate_data_source(&req.type_name, &cfg),
                Err(e) => convert::decode_diagnostic(&e),
            },
            None => self
                .provider
                .validate_data_source(&req.type_name, &Default::default()),
        };
        Ok(Response::new(pb::validate_data_resource_config::Response {
            diagnostics: convert::diagnostics(diags),
        }))
    }

    async fn upgrade_resource_state(
        &self,
        request: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        // Every Berth schema is still at version 0: the stored JSON decodes
        // with the current schema (attributes it no longer has are dropped).
        let req = request.get_ref();
        let (state, diags) = match self.resource_type(&req.type_name) {
            Ok(ty) => {
                let raw = req
                    .raw_state
                    .as_ref()
                    .map(|r| r.json.as_slice())
                    .unwrap_or(&[]);
                match super::value::from_json(raw, &ty) {
                    Ok(v) => (Some(convert::encode(&v, &ty)), Diagnostics::default()),
                    Err(e) => (None, convert::decode_diagnostic(&e)),
                }
            }
            Err(d) => (None, d),
        };
        Ok(Response::new(pb::upgrade_resource_state::Response {
            upgraded_state: state,
            diagnostics: convert::diagnostics(diags),
        }))
    }

    async fn configure_provider(
        &self,
        request: Request<pb::configure_provider::Request>,
    ) -> Result<Response<pb::configure_provider::Response>, Status> {
        let req = request.get_ref();
        debug!(terraform_version = %req.terraform_version, "ConfigureProvider");
        let ty = self.provider.provider_schema().value_type();
        let diags = match convert::decode(req.config.as_ref(), &ty) {
            Ok(cfg) => self.provider.configure(&cfg),
            Err(e) => convert::decode_diagnostic(&e),
        };
        Ok(Response::new(pb::configure_provider::Response {
            diagnostics: convert::diagnostics(diags),
        }))
    }

    async fn read_resource(
        &self,
        request: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        let req = request.get_ref();
        debug!(type_name = %req.type_name, "ReadResource");
        let started = std::time::Instant::now();
        let result = match self.resource_type(&req.type_name) {
            Ok(ty) => match convert::decode(req.current_state.as_ref(), &ty) {
                Ok(current) => self
                    .provider
                    .read_resource(&req.type_name, &current)
                    .await
                    .map(|v| convert::encode(&v, &ty)),
                Err(e) => Err(convert::decode_diagnostic(&e)),
            },
            Err(d) => Err(d),
        };
        let (new_state, diags) = split(result, req.current_state.clone());
        debug!(type_name = %req.type_name, took_us = started.elapsed().as_micros() as u64, "ReadResource answered");
        Ok(Response::new(pb::read_resource::Response {
            new_state,
            diagnostics: convert::diagnostics(diags),
            private: req.private.clone(),
            deferred: None,
        }))
    }

    async fn plan_resource_change(
        &self,
        request: Request<pb::plan_resource_change::Request>,
    ) -> Result<Response<pb::plan_resource_change::Response>, Status> {
        let req = request.get_ref();
        debug!(type_name = %req.type_name, "PlanResourceChange");
        let started = std::time::Instant::now();
        let decoded = self.resource_type(&req.type_name).and_then(|ty| {
            let d = |v: Option<&pb::DynamicValue>| {
                convert::decode(v, &ty).map_err(|e| convert::decode_diagnostic(&e))
            };
            Ok((
                d(req.prior_state.as_ref())?,
                d(req.proposed_new_state.as_ref())?,
                d(req.config.as_ref())?,
                ty,
            ))
        });
        let (planned_state, requires_replace, diags) = match decoded {
            Ok((prior, proposed, config, ty)) => match self
                .provider
                .plan_resource(&req.type_name, &prior, &proposed, &config)
                .await
            {
                Ok((plan, warnings)) => (
                    Some(convert::encode(&plan.planned, &ty)),
                    plan.requires_replace.iter().map(convert::path).collect(),
                    warnings,
                ),
                Err(d) => (None, vec![], d),
            },
            Err(d) => (None, vec![], d),
        };
        debug!(type_name = %req.type_name, took_us = started.elapsed().as_micros() as u64, "PlanResourceChange answered");
        Ok(Response::new(pb::plan_resource_change::Response {
            planned_state,
            requires_replace,
            planned_private: req.prior_private.clone(),
            diagnostics: convert::diagnostics(diags),
            legacy_type_system: false,
            deferred: None,
        }))
    }

    async fn apply_resource_change(
        &self,
        request: Request<pb::apply_resource_change::Request>,
    ) -> Result<Response<pb::apply_resource_change::Response>, Status> {
        let req = request.get_ref();
        debug!(type_name = %req.type_name, "ApplyResourceChange");
        let decoded = self.resource_type(&req.type_name).and_then(|ty| {
            let d = |v: Option<&pb::DynamicValue>| {
                convert::decode(v, &ty).map_err(|e| convert::decode_diagnostic(&e))
            };
            Ok((
                d(req.prior_state.as_ref())?,
                d(req.planned_state.as_ref())?,
                d(req.config.as_ref())?,
                ty,
            ))
        });
        let result = match decoded {
            Ok((prior, planned, config, ty)) => self
                .provider
                .apply_resource(&req.type_name, &prior, &planned, &config)
                .await
                .map(|(v, warnings)| (convert::encode(&v, &ty), warnings)),
            Err(d) => Err(d),
        };
        // On failure terraform keeps what we return: the prior state, so
        // nothing that exists is forgotten.
        let (new_state, diags) = match result {
            Ok((state, warnings)) => (Some(state), warnings),
            Err(d) => (req.prior_state.clone(), d),
        };
        Ok(Response::new(pb::apply_resource_change::Response {
            new_state,
            private: req.planned_private.clone(),
            diagnostics: convert::diagnostics(diags),
            legacy_type_system: false,
        }))
    }

    async fn import_resource_state(
        &self,
        request: Request<pb::import_resource_state::Request>,
    ) -> Result<Response<pb::import_resource_state::Response>, Status> {
        let req = request.get_ref();
        debug!(type_name = %req.type_name, id = %req.id, "ImportResourceState");
        let result = match self.resource_type(&req.type_name) {
            Ok(ty) => self
                .provider
                .import_resource(&req.type_name, &req.id)
                .await
                .map(|(v, warnings)| (convert::encode(&v, &ty), warnings)),
            Err(d) => Err(d),
        };
        let (imported_resources, diags) = match result {
            Ok((state, warnings)) => (
                vec![pb::import_resource_state::ImportedResource {
                    type_name: req.type_name.clone(),
                    state: Some(state),
                    private: vec![],
                }],
                warnings,
            ),
            Err(d) => (vec![], d),
        };
        Ok(Response::new(pb::import_resource_state::Response {
            imported_resources,
            diagnostics: convert::diagnostics(diags),
            deferred: None,
        }))
    }

    async fn move_resource_state(
        &self,
        _request: Request<pb::move_resource_state::Request>,
    ) -> Result<Response<pb::move_resource_state::Response>, Status> {
        unimplemented("MoveResourceState")
    }

    async fn read_data_source(
        &self,
        request: Request<pb::read_data_source::Request>,
    ) -> Result<Response<pb::read_data_source::Response>, Status> {
        let req = request.get_ref();
        debug!(type_name = %req.type_name, "ReadDataSource");
        let Some(ds) = self.provider.data_source(&req.type_name) else {
            let diags = self
                .provider
                .validate_data_source(&req.type_name, &Default::default());
            return Ok(Response::new(pb::read_data_source::Response {
                state: None,
                diagnostics: convert::diagnostics(diags),
                deferred: None,
            }));
        };
        let ty = ds.schema().value_type();
        let (state, diags) = match convert::decode(req.config.as_ref(), &ty) {
            Ok(cfg) => match self.provider.read_data_source(&req.type_name, &cfg).await {
                Ok(v) => (Some(convert::encode(&v, &ty)), Diagnostics::default()),
                Err(d) => (None, d),
            },
            Err(e) => (None, convert::decode_diagnostic(&e)),
        };
        Ok(Response::new(pb::read_data_source::Response {
            state,
            diagnostics: convert::diagnostics(diags),
            deferred: None,
        }))
    }

    async fn validate_ephemeral_resource_config(
        &self,
        _request: Request<pb::validate_ephemeral_resource_config::Request>,
    ) -> Result<Response<pb::validate_ephemeral_resource_config::Response>, Status> {
        unimplemented("ValidateEphemeralResourceConfig")
    }

    async fn open_ephemeral_resource(
        &self,
        _request: Request<pb::open_ephemeral_resource::Request>,
    ) -> Result<Response<pb::open_ephemeral_resource::Response>, Status> {
        unimplemented("OpenEphemeralResource")
    }

    async fn renew_ephemeral_resource(
        &self,
        _request: Request<pb::renew_ephemeral_resource::Request>,
    ) -> Result<Response<pb::renew_ephemeral_resource::Response>, Status> {
        unimplemented("RenewEphemeralResource")
    }

    async fn close_ephemeral_resource(
        &self,
        _request: Request<pb::close_ephemeral_resource::Request>,
    ) -> Result<Response<pb::close_ephemeral_resource::Response>, Status> {
        unimplemented("CloseEphemeralResource")
    }

    async fn get_functions(
        &self,
        _request: Request<pb::get_functions::Request>,
    ) -> Result<Response<pb::get_functions::Response>, Status> {
        Ok(Response::new(pb::get_functions::Response {
            functions: self.functions(),
            diagnostics: vec![],
        }))
    }

    async fn call_function(
        &self,
        request: Request<pb::call_function::Request>,
    ) -> Result<Response<pb::call_function::Response>, Status> {
        let req = request.get_ref();
        let Some(f) = self.provider.function(&req.name) else {
            return Ok(Response::new(pb::call_function::Response {
                result: None,
                error: Some(pb::FunctionError {
                    text: format!("the berth provider has no function {:?}", req.name),
                    function_argument: None,
                }),
            }));
        };
        let sig = f.signature();
        let mut args = Vec::with_capacity(req.arguments.len());
        for (i, (arg, param)) in req.arguments.iter().zip(&sig.parameters).enumerate() {
            match convert::decode(Some(arg), &param.ty) {
                Ok(v) => args.push(v),
                Err(e) => {
                    return Ok(Response::new(pb::call_function::Response {
                        result: None,
                        error: Some(pb::FunctionError {
                            text: e.to_string(),
                            function_argument: Some(i as i64),
                        }),
                    }))
                }
            }
        }
        let (result, error) = match f.call(&args) {
            Ok(v) => (Some(convert::encode(&v, &sig.returns)), None),
            Err(e) => (None, Some(convert::function_error(e))),
        };
        Ok(Response::new(pb::call_function::Response { result, error }))
    }

    async fn stop_provider(
        &self,
        _request: Request<pb::stop_provider::Request>,
    ) -> Result<Response<pb::stop_provider::Response>, Status> {
        debug!("StopProvider");
        self.provider.stop();
        Ok(Response::new(pb::stop_provider::Response {
            error: String::new(),
        }))
    }
}
