//! Conversions between the provider's types and the generated protocol
//! messages: schemas, functions, diagnostics, attribute paths, values.

use super::proto::tfplugin6 as pb;
use super::value;
use crate::provider::diag::{AttributePath, Diagnostic, Diagnostics, PathStep, Severity};
use crate::provider::schema::{AttrType, Attribute, FunctionSignature, Nesting, Schema, Type};
use crate::provider::value::Value;
use crate::provider::FunctionError;

pub fn schema(s: &Schema) -> pb::Schema {
    pb::Schema {
        version: s.version,
        block: Some(pb::schema::Block {
            version: s.version,
            attributes: s.attributes.iter().map(attribute).collect(),
            block_types: vec![],
            description: s.description.clone(),
            description_kind: pb::StringKind::Markdown as i32,
            deprecated: false,
        }),
    }
}

fn attribute(a: &Attribute) -> pb::schema::Attribute {
    let (ty, nested_type) = match &a.ty {
        AttrType::Plain(t) => (t.to_json().to_string().into_bytes(), None),
        AttrType::Nested {
            nesting,
            attributes,
        } => (
            Vec::new(),
            Some(pb::schema::Object {
                attributes: attributes.iter().map(attribute).collect(),
                nesting: match nesting {
                    Nesting::Single => pb::schema::object::NestingMode::Single,
                    Nesting::List => pb::schema::object::NestingMode::List,
                    Nesting::Set => pb::schema::object::NestingMode::Set,
                    Nesting::Map => pb::schema::object::NestingMode::Map,
                } as i32,
                ..Default::default()
            }),
        ),
    };
    pb::schema::Attribute {
        name: a.name.to_string(),
        r#type: ty,
        nested_type,
        description: a.full_description(),
        required: a.required,
        optional: a.optional,
        computed: a.computed,
        sensitive: a.sensitive,
        description_kind: pb::StringKind::Markdown as i32,
        deprecated: a.deprecated,
        write_only: a.write_only,
    }
}

pub fn function(f: &FunctionSignature) -> pb::Function {
    pb::Function {
        parameters: f
            .parameters
            .iter()
            .map(|p| pb::function::Parameter {
                name: p.name.to_string(),
                r#type: p.ty.to_json().to_string().into_bytes(),
                allow_null_value: false,
                allow_unknown_values: false,
                description: p.description.clone(),
                description_kind: pb::StringKind::Markdown as i32,
            })
            .collect(),
        variadic_parameter: None,
        r#return: Some(pb::function::Return {
            r#type: f.returns.to_json().to_string().into_bytes(),
        }),
        summary: f.summary.clone(),
        description: f.description.clone(),
        description_kind: pb::StringKind::Markdown as i32,
        deprecation_message: String::new(),
    }
}

pub fn function_error(e: FunctionError) -> pb::FunctionError {
    pb::FunctionError {
        text: e.text,
        function_argument: e.argument,
    }
}

pub fn diagnostics(d: Diagnostics) -> Vec<pb::Diagnostic> {
    d.0.into_iter().map(diagnostic).collect()
}

fn diagnostic(d: Diagnostic) -> pb::Diagnostic {
    let (attribute, detail) = match d.path {
        Some(full) => {
            let shown = elaborable(&full);
            // Deeper than terraform can point: it shows the lines of the
            // element (which include the offending one), the detail names
            // the exact attribute.
            let detail = if shown.0.len() < full.0.len() && !d.detail.contains(&full.to_string()) {
                format!("{full}: {}", d.detail)
            } else {
                d.detail
            };
            (Some(path(&shown)), detail)
        }
        None => (None, d.detail),
    };
    pb::Diagnostic {
        severity: match d.severity {
            Severity::Error => pb::diagnostic::Severity::Error,
            Severity::Warning => pb::diagnostic::Severity::Warning,
        } as i32,
        summary: d.summary,
        detail,
        attribute,
    }
}

/// The longest prefix of `p` that terraform turns into a source range.
/// Terraform walks diagnostic paths through nested *blocks* only; Berth's
/// schema has nested attributes, where it resolves the top-level attribute
/// and one index into it (the map element `services["web"]`, whose lines
/// it prints) and falls back to the whole resource for anything deeper.
pub fn elaborable(p: &AttributePath) -> AttributePath {
    let keep = match p.0.as_slice() {
        [PathStep::Attribute(_), PathStep::Key(_) | PathStep::Index(_), ..] => 2,
        [PathStep::Attribute(_), ..] => 1,
        _ => p.0.len(),
    };
    AttributePath(p.0.iter().take(keep).cloned().collect())
}

pub fn path(p: &AttributePath) -> pb::AttributePath {
    use pb::attribute_path::step::Selector;
    pb::AttributePath {
        steps: p
            .0
            .iter()
            .map(|s| pb::attribute_path::Step {
                selector: Some(match s {
                    PathStep::Attribute(a) => Selector::AttributeName(a.clone()),
                    PathStep::Key(k) => Selector::ElementKeyString(k.clone()),
                    PathStep::Index(i) => Selector::ElementKeyInt(*i),
                }),
            })
            .collect(),
    }
}

/// Decodes a DynamicValue (msgpack preferred, JSON otherwise).
pub fn decode(dv: Option<&pb::DynamicValue>, ty: &Type) -> Result<Value, value::DecodeError> {
    match dv {
        None => Ok(Value::Null),
        Some(dv) if !dv.msgpack.is_empty() => value::from_msgpack(&dv.msgpack, ty),
        Some(dv) => value::from_json(&dv.json, ty),
    }
}

pub fn encode(v: &Value, ty: &Type) -> pb::DynamicValue {
    pb::DynamicValue {
        msgpack: value::to_msgpack(v, ty),
        json: Vec::new(),
    }
}

/// A decode failure as a diagnostic: this is a protocol bug, not a user error.
pub fn decode_diagnostic(e: &value::DecodeError) -> Diagnostics {
    Diagnostic::error(
        "Provider could not read a value from Terraform",
        format!("{e}. This is a bug in the berth provider or an unsupported Terraform version; please report it with the Terraform version."),
    )
    .into()
}
