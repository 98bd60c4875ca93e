//! Schemas as Berth declares them: attribute types, nesting, and the
//! plan-relevant flags (required/optional/computed/sensitive/write-only).
//! Every attribute carries a Markdown description; the docs under `docs/`
//! are generated from these, so the schema is the documentation.

use std::collections::BTreeMap;

/// A Terraform type constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    String,
    Number,
    Bool,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Type>),
    /// `dynamic`: the value carries its own type on the wire.
    Dynamic,
}

impl Type {
    pub fn list(element: Type) -> Type {
        Type::List(Box::new(element))
    }
    pub fn set(element: Type) -> Type {
        Type::Set(Box::new(element))
    }
    pub fn map(element: Type) -> Type {
        Type::Map(Box::new(element))
    }

    /// The JSON type descriptor terraform expects (`"string"`,
    /// `["list","string"]`, `["object",{...}]`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Value as J};
        match self {
            Type::String => J::from("string"),
            Type::Number => J::from("number"),
            Type::Bool => J::from("bool"),
            Type::Dynamic => J::from("dynamic"),
            Type::List(e) => json!(["list", e.to_json()]),
            Type::Set(e) => json!(["set", e.to_json()]),
            Type::Map(e) => json!(["map", e.to_json()]),
            Type::Object(attrs) => {
                let fields: serde_json::Map<String, J> = attrs
                    .iter()
                    .map(|(k, t)| (k.clone(), t.to_json()))
                    .collect();
                json!(["object", fields])
            }
        }
    }

    /// Parses a JSON type descriptor (as found in `dynamic` values).
    pub fn from_json(v: &serde_json::Value) -> Option<Type> {
        use serde_json::Value as J;
        match v {
            J::String(s) => match s.as_str() {
                "string" => Some(Type::String),
                "number" => Some(Type::Number),
                "bool" => Some(Type::Bool),
                "dynamic" => Some(Type::Dynamic),
                _ => None,
            },
            J::Array(parts) if parts.len() == 2 => {
                let kind = parts[0].as_str()?;
                match kind {
                    "list" => Some(Type::list(Type::from_json(&parts[1])?)),
                    "set" => Some(Type::set(Type::from_json(&parts[1])?)),
                    "map" => Some(Type::map(Type::from_json(&parts[1])?)),
                    "object" => {
                        let fields = parts[1].as_object()?;
                        let mut attrs = BTreeMap::new();
                        for (k, t) in fields {
                            attrs.insert(k.clone(), Type::from_json(t)?);
                        }
                        Some(Type::Object(attrs))
                    }
                    "tuple" => {
                        // Tuples only occur in dynamic values; treat as list of dynamic.
                        Some(Type::list(Type::Dynamic))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// How a nested attribute's objects are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nesting {
    Single,
    List,
    Set,
    Map,
}

/// What an attribute holds: a plain typed value or nested attributes.
#[derive(Clone, Debug)]
pub enum AttrType {
    Plain(Type),
    Nested {
        nesting: Nesting,
        attributes: Vec<Attribute>,
    },
}

/// One attribute of a schema, declared with the builder methods.
#[derive(Clone, Debug)]
pub struct Attribute {
    pub name: &'static str,
    pub ty: AttrType,
    pub description: String,
    pub required: bool,
    pub optional: bool,
    pub computed: bool,
    pub sensitive: bool,
    pub write_only: bool,
    pub deprecated: bool,
    /// Value planned when the configuration leaves an optional+computed
    /// attribute unset.
    pub default: Option<super::value::Value>,
    pub plan_modifiers: Vec<PlanModifier>,
    pub validators: Vec<Validator>,
}

/// Declared plan behaviour of an attribute; each describes itself for the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanModifier {
    /// A change to this attribute replaces the resource.
    RequiresReplace,
    /// A computed value that does not change once known: keep the prior
    /// value instead of "known after apply" on updates.
    UseStateForUnknown,
}

impl PlanModifier {
    pub fn description(&self) -> &'static str {
        match self {
            PlanModifier::RequiresReplace => "Changing this value replaces the resource.",
            PlanModifier::UseStateForUnknown => "Stays the same once known.",
        }
    }
}

/// A check on a known, non-null attribute value; `check` returns why the
/// value is wrong and how to fix it.
#[derive(Clone, Copy)]
pub struct Validator {
    pub description: &'static str,
    pub check: fn(&super::value::Value) -> Result<(), String>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description)
    }
}

impl Attribute {
    fn new(name: &'static str, ty: AttrType) -> Attribute {
        Attribute {
            name,
            ty,
            description: String::new(),
            required: false,
            optional: false,
            computed: false,
            sensitive: false,
            write_only: false,
            deprecated: false,
            default: None,
            plan_modifiers: Vec::new(),
            validators: Vec::new(),
        }
    }
    pub fn typed(name: &'static str, ty: Type) -> Attribute {
        Attribute::new(name, AttrType::Plain(ty))
    }
    pub fn string(name: &'static str) -> Attribute {
        Attribute::typed(name, Type::String)
    }
    pub fn number(name: &'static str) -> Attribute {
        Attribute::typed(name, Type::Number)
    }
    pub fn bool(name: &'static str) -> Attribute {
        Attribute::typed(name, Type::Bool)
    }
    pub fn nested(name: &'static str, nesting: Nesting, attributes: Vec<Attribute>) -> Attribute {
        Attribute::new(
            name,
            AttrType::Nested {
                nesting,
                attributes,
            },
        )
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
    pub fn computed(mut self) -> Self {
        self.computed = true;
        self
    }
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
    pub fn write_only(mut self) -> Self {
        self.write_only = true;
        self
    }
    pub fn default_value(mut self, v: super::value::Value) -> Self {
        self.default = Some(v);
        self
    }
    pub fn requires_replace(mut self) -> Self {
        self.plan_modifiers.push(PlanModifier::RequiresReplace);
        self
    }
    pub fn use_state_for_unknown(mut self) -> Self {
        self.plan_modifiers.push(PlanModifier::UseStateForUnknown);
        self
    }
    pub fn validate(mut self, v: Validator) -> Self {
        self.validators.push(v);
        self
    }
    pub fn has_modifier(&self, m: PlanModifier) -> bool {
        self.plan_modifiers.contains(&m)
    }

    /// The full description for docs and the schema: the attribute's own
    /// text followed by what its default, modifiers and validators do.
    pub fn full_description(&self) -> String {
        let mut d = self.description.trim_end().to_string();
        for v in &self.validators {
            d.push(' ');
            d.push_str(v.description);
        }
        if let Some(def) = &self.default {
            d.push_str(&format!(" Defaults to `{}`.", super::value::display(def)));
        }
        for m in &self.plan_modifiers {
            if *m == PlanModifier::RequiresReplace {
                d.push(' ');
                d.push_str(m.description());
            }
        }
        d
    }

    pub fn describe(mut self, markdown: impl Into<String>) -> Self {
        self.description = markdown.into();
        self
    }

    /// The attribute's value type as terraform sees it.
    pub fn value_type(&self) -> Type {
        match &self.ty {
            AttrType::Plain(t) => t.clone(),
            AttrType::Nested {
                nesting,
                attributes,
            } => {
                let obj = object_type(attributes);
                match nesting {
                    Nesting::Single => obj,
                    Nesting::List => Type::list(obj),
                    Nesting::Set => Type::set(obj),
                    Nesting::Map => Type::map(obj),
                }
            }
        }
    }
}

/// The object type of a list of attributes.
pub fn object_type(attributes: &[Attribute]) -> Type {
    Type::Object(
        attributes
            .iter()
            .map(|a| (a.name.to_string(), a.value_type()))
            .collect(),
    )
}

/// A resource, data source or provider schema.
#[derive(Clone, Debug)]
pub struct Schema {
    pub version: i64,
    pub description: String,
    pub attributes: Vec<Attribute>,
}

impl Schema {
    pub fn new(description: impl Into<String>, attributes: Vec<Attribute>) -> Schema {
        Schema {
            version: 0,
            description: description.into(),
            attributes,
        }
    }
    /// The object type of the whole schema (what a DynamicValue holds).
    pub fn value_type(&self) -> Type {
        object_type(&self.attributes)
    }
}

/// A provider function's signature and documentation.
#[derive(Clone, Debug)]
pub struct FunctionSignature {
    pub summary: String,
    pub description: String,
    pub parameters: Vec<Parameter>,
    pub returns: Type,
}

/// One positional parameter of a provider function.
#[derive(Clone, Debug)]
pub struct Parameter {
    pub name: &'static str,
    pub ty: Type,
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_descriptors_round_trip() {
        let t = Type::Object(BTreeMap::from([
            ("a".to_string(), Type::list(Type::String)),
            ("b".to_string(), Type::map(Type::Number)),
            ("c".to_string(), Type::set(Type::Bool)),
        ]));
        let j = t.to_json();
        assert_eq!(
            j.to_string(),
            r#"["object",{"a":["list","string"],"b":["map","number"],"c":["set","bool"]}]"#
        );
        assert_eq!(Type::from_json(&j), Some(t));
    }

    #[test]
    fn nested_attribute_types() {
        let inner = vec![Attribute::string("x").required()];
        let a = Attribute::nested("n", Nesting::Map, inner);
        assert_eq!(
            a.value_type().to_json().to_string(),
            r#"["map",["object",{"x":"string"}]]"#
        );
    }
}
