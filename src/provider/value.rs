//! Terraform values as the provider sees them: every value is known, null or
//! unknown, at any depth. Conversions to and from the wire live in
//! `crate::tfplugin::value`; this module has no protocol types.

use std::collections::BTreeMap;
use std::fmt;

/// A Terraform number. Most of Berth's numbers are counts and sizes, so
/// integers are kept exact; anything else is a float. Equal by value, as
/// Terraform compares numbers: `2` (as terraform sends it back) equals the
/// `2.0` a default was written as.
#[derive(Clone, Copy, Debug)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl PartialEq for Number {
    fn eq(&self, other: &Number) -> bool {
        match (*self, *other) {
            (Number::Int(a), Number::Int(b)) => a == b,
            (Number::Float(a), Number::Float(b)) => a == b,
            (Number::Int(i), Number::Float(f)) | (Number::Float(f), Number::Int(i)) => {
                f.fract() == 0.0 && f.abs() < 9.0e15 && f as i64 == i
            }
        }
    }
}

impl Number {
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Number::Int(i) => Some(i),
            Number::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            Number::Float(_) => None,
        }
    }
    pub fn as_f64(&self) -> f64 {
        match *self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

/// A value of some [`crate::provider::schema::Type`].
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// Not known until apply. Refinements terraform attaches are dropped.
    Unknown,
    #[default]
    Null,
    String(String),
    Number(Number),
    Bool(bool),
    List(Vec<Value>),
    Set(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Object(BTreeMap<String, Value>),
}

impl Value {
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }
    pub fn int(i: i64) -> Value {
        Value::Number(Number::Int(i))
    }
    /// A string, or null when `None`.
    pub fn opt_string(s: Option<impl Into<String>>) -> Value {
        s.map(|s| Value::String(s.into())).unwrap_or(Value::Null)
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }
    /// True when neither this value nor anything inside it is unknown.
    pub fn is_wholly_known(&self) -> bool {
        match self {
            Value::Unknown => false,
            Value::List(v) | Value::Set(v) => v.iter().all(Value::is_wholly_known),
            Value::Map(m) | Value::Object(m) => m.values().all(Value::is_wholly_known),
            _ => true,
        }
    }

    /// An attribute of an object value; null when absent or not an object.
    pub fn get(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        match self {
            Value::Object(m) => m.get(name).unwrap_or(&NULL),
            _ => &NULL,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }
    /// Elements of a list or set.
    pub fn as_elements(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Set(v) => Some(v),
            _ => None,
        }
    }
    /// Entries of a map or object.
    pub fn as_entries(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(m) | Value::Object(m) => Some(m),
            _ => None,
        }
    }
}

/// A short HCL-like rendering of a value, for docs and messages.
pub fn display(v: &Value) -> String {
    match v {
        Value::Unknown => "(known after apply)".into(),
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::List(items) | Value::Set(items) => {
            let inner: Vec<String> = items.iter().map(display).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Map(m) | Value::Object(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k} = {}", display(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Builds an object value from `(name, value)` pairs.
pub fn object<I, K>(fields: I) -> Value
where
    I: IntoIterator<Item = (K, Value)>,
    K: Into<String>,
{
    Value::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_equal_by_value() {
        assert_eq!(Number::Int(2), Number::Float(2.0));
        assert_eq!(Number::Float(30.0), Number::Int(30));
        assert_ne!(Number::Int(2), Number::Float(2.5));
        assert_ne!(Number::Int(2), Number::Int(3));
        assert_eq!(Number::Float(0.25), Number::Float(0.25));
        // What the health check's defaults round-trip as.
        assert_eq!(
            Value::Number(Number::Float(2.0)),
            Value::Number(Number::Int(2))
        );
    }

    #[test]
    fn wholly_known_looks_inside() {
        let v = object([("a", Value::List(vec![Value::string("x"), Value::Unknown]))]);
        assert!(!v.is_wholly_known());
        let v = object([("a", Value::List(vec![Value::string("x"), Value::Null]))]);
        assert!(v.is_wholly_known());
    }

    #[test]
    fn get_missing_is_null() {
        let v = object([("a", Value::string("x"))]);
        assert_eq!(v.get("a").as_str(), Some("x"));
        assert!(v.get("b").is_null());
        assert!(Value::Null.get("a").is_null());
    }

    #[test]
    fn integral_floats_are_integers() {
        assert_eq!(Number::Float(3.0).as_i64(), Some(3));
        assert_eq!(Number::Float(3.5).as_i64(), None);
    }
}
