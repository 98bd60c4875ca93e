//! cty's wire encodings of values: MessagePack (the normal case) and JSON
//! (stored state handed to UpgradeResourceState). Decoding is driven by the
//! schema type, as in terraform's own decoder.
//!
//! MessagePack facts: null is nil; an unknown value is an extension (type 0
//! classically, type 12 when terraform attaches refinements; any extension is
//! taken as unknown); numbers arrive as ints, floats or decimal strings;
//! `dynamic` values are a two-element array `[type JSON, value]`; objects and
//! maps are msgpack maps; sets and lists are arrays.

use std::collections::BTreeMap;

use rmpv::Value as Mp;

use crate::provider::schema::Type;
use crate::provider::value::{Number, Value};

/// The wire bytes could not be read as a value of the expected type.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode value at {path}: {reason}")]
pub struct DecodeError {
    path: String,
    reason: String,
}

fn err(path: &str, reason: impl Into<String>) -> DecodeError {
    DecodeError {
        path: if path.is_empty() {
            "(root)".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

/// How deep a value decoded from terraform may nest.
const MAX_DEPTH: usize = 64;

/// What terraform writes for an unknown value: fixext1, type 0, data 0.
const UNKNOWN_EXT: i8 = 0;

/// Decodes MessagePack bytes as a value of type `ty`. Empty input is null.
pub fn from_msgpack(bytes: &[u8], ty: &Type) -> Result<Value, DecodeError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mut rd = bytes;
    // Bounded: unbounded nesting overflowed the stack (found by the
    // property tests). Berth's schema nests a few levels.
    let mp = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
        .map_err(|e| err("", e.to_string()))?;
    mp_to_value(&mp, ty, "")
}

fn mp_to_value(mp: &Mp, ty: &Type, path: &str) -> Result<Value, DecodeError> {
    match mp {
        Mp::Nil => return Ok(Value::Null),
        Mp::Ext(_, _) => return Ok(Value::Unknown),
        _ => {}
    }
    match ty {
        Type::String => match mp {
            Mp::String(s) => s
                .as_str()
                .map(Value::string)
                .ok_or_else(|| err(path, "string is not valid UTF-8")),
            other => Err(err(path, format!("expected string, found {other}"))),
        },
        Type::Number => match mp {
            Mp::Integer(i) => {
                if let Some(v) = i.as_i64() {
                    Ok(Value::int(v))
                } else {
                    Ok(Value::Number(Number::Float(i.as_f64().unwrap_or(f64::MAX))))
                }
            }
            Mp::F32(f) => Ok(Value::Number(Number::Float(f64::from(*f)))),
            Mp::F64(f) => Ok(Value::Number(Number::Float(*f))),
            Mp::String(s) => parse_decimal(s.as_str().unwrap_or(""), path),
            other => Err(err(path, format!("expected number, found {other}"))),
        },
        Type::Bool => match mp {
            Mp::Boolean(b) => Ok(Value::Bool(*b)),
            other => Err(err(path, format!("expected bool, found {other}"))),
        },
        Type::List(e) | Type::Set(e) => match mp {
            Mp::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(mp_to_value(item, e, &format!("{path}[{i}]"))?);
                }
                Ok(if matches!(ty, Type::List(_)) {
                    Value::List(out)
                } else {
                    Value::Set(out)
                })
            }
            other => Err(err(path, format!("expected array, found {other}"))),
        },
        Type::Map(e) => match mp {
            Mp::Map(entries) => {
                let mut out = BTreeMap::new();
                for (k, v) in entries {
                    let key = k
                        .as_str()
                        .ok_or_else(|| err(path, "map key is not a string"))?;
                    out.insert(
                        key.to_string(),
                        mp_to_value(v, e, &format!("{path}[{key:?}]"))?,
                    );
                }
                Ok(Value::Map(out))
            }
            other => Err(err(path, format!("expected map, found {other}"))),
        },
        Type::Object(attrs) => match mp {
            Mp::Map(entries) => {
                let mut out = BTreeMap::new();
                for (k, v) in entries {
                    let key = k
                        .as_str()
                        .ok_or_else(|| err(path, "attribute name is not a string"))?;
                    // Attributes the schema does not know (a newer state) are dropped.
                    if let Some(at) = attrs.get(key) {
                        out.insert(key.to_string(), mp_to_value(v, at, &join(path, key))?);
                    }
                }
                for name in attrs.keys() {
                    out.entry(name.clone()).or_insert(Value::Null);
                }
                Ok(Value::Object(out))
            }
            other => Err(err(path, format!("expected object, found {other}"))),
        },
        Type::Dynamic => match mp {
            Mp::Array(pair) if pair.len() == 2 => {
                let type_bytes = match &pair[0] {
                    Mp::Binary(b) => b.clone(),
                    Mp::String(s) => s.as_bytes().to_vec(),
                    _ => return Err(err(path, "dynamic value without a type")),
                };
                let tj: serde_json::Value = serde_json::from_slice(&type_bytes)
                    .map_err(|e| err(path, format!("dynamic type: {e}")))?;
                let inner = Type::from_json(&tj)
                    .ok_or_else(|| err(path, format!("unsupported dynamic type {tj}")))?;
                mp_to_value(&pair[1], &inner, path)
            }
            other => Err(err(path, format!("expected dynamic pair, found {other}"))),
        },
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn parse_decimal(s: &str, path: &str) -> Result<Value, DecodeError> {
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Value::int(i));
    }
    s.parse::<f64>()
        .map(|f| Value::Number(Number::Float(f)))
        .map_err(|_| err(path, format!("{s:?} is not a number")))
}

/// Encodes a value of type `ty` as MessagePack.
pub fn to_msgpack(value: &Value, ty: &Type) -> Vec<u8> {
    let mp = value_to_mp(value, ty);
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &mp);
    out
}

fn value_to_mp(value: &Value, ty: &Type) -> Mp {
    if let Type::Dynamic = ty {
        // A dynamic attribute must carry its concrete type; Berth only ever
        // sends strings through dynamic slots.
        return match value {
            Value::Null => Mp::Nil,
            Value::Unknown => Mp::Ext(UNKNOWN_EXT, vec![0]),
            v => Mp::Array(vec![
                Mp::Binary(b"\"string\"".to_vec()),
                value_to_mp(v, &Type::String),
            ]),
        };
    }
    match value {
        Value::Null => Mp::Nil,
        Value::Unknown => Mp::Ext(UNKNOWN_EXT, vec![0]),
        Value::String(s) => Mp::String(s.clone().into()),
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(Number::Int(i)) => Mp::Integer((*i).into()),
        Value::Number(Number::Float(f)) => match Number::Float(*f).as_i64() {
            Some(i) => Mp::Integer(i.into()),
            None => Mp::F64(*f),
        },
        Value::List(items) | Value::Set(items) => {
            let et = match ty {
                Type::List(e) | Type::Set(e) => e.as_ref(),
                _ => &Type::Dynamic,
            };
            Mp::Array(items.iter().map(|v| value_to_mp(v, et)).collect())
        }
        Value::Map(entries) => {
            let et = match ty {
                Type::Map(e) => e.as_ref(),
                _ => &Type::Dynamic,
            };
            Mp::Map(
                entries
                    .iter()
                    .map(|(k, v)| (Mp::String(k.clone().into()), value_to_mp(v, et)))
                    .collect(),
            )
        }
        Value::Object(fields) => {
            let Type::Object(attrs) = ty else {
                return Mp::Nil;
            };
            // Every attribute of the type is written, null when missing.
            Mp::Map(
                attrs
                    .iter()
                    .map(|(name, at)| {
                        let v = fields.get(name).unwrap_or(&Value::Null);
                        (Mp::String(name.clone().into()), value_to_mp(v, at))
                    })
                    .collect(),
            )
        }
    }
}

/// Decodes cty JSON (as in state files) as a value of type `ty`.
pub fn from_json(bytes: &[u8], ty: &Type) -> Result<Value, DecodeError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let j: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| err("", e.to_string()))?;
    json_to_value(&j, ty, "")
}

fn json_to_value(j: &serde_json::Value, ty: &Type, path: &str) -> Result<Value, DecodeError> {
    use serde_json::Value as J;
    if j.is_null() {
        return Ok(Value::Null);
    }
    match (ty, j) {
        (Type::String, J::String(s)) => Ok(Value::string(s.clone())),
        (Type::Number, J::Number(n)) => Ok(match n.as_i64() {
            Some(i) => Value::int(i),
            None => Value::Number(Number::Float(n.as_f64().unwrap_or(0.0))),
        }),
        (Type::Number, J::String(s)) => parse_decimal(s, path),
        (Type::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (Type::List(e) | Type::Set(e), J::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(json_to_value(item, e, &format!("{path}[{i}]"))?);
            }
            Ok(if matches!(ty, Type::List(_)) {
                Value::List(out)
            } else {
                Value::Set(out)
            })
        }
        (Type::Map(e), J::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                out.insert(k.clone(), json_to_value(v, e, &format!("{path}[{k:?}]"))?);
            }
            Ok(Value::Map(out))
        }
        (Type::Object(attrs), J::Object(m)) => {
            let mut out = BTreeMap::new();
            for (name, at) in attrs {
                let v = match m.get(name) {
                    Some(v) => json_to_value(v, at, &join(path, name))?,
                    None => Value::Null,
                };
                out.insert(name.clone(), v);
            }
            Ok(Value::Object(out))
        }
        (Type::Dynamic, J::Object(m)) if m.contains_key("type") && m.contains_key("value") => {
            let inner =
                Type::from_json(&m["type"]).ok_or_else(|| err(path, "unsupported dynamic type"))?;
            json_to_value(&m["value"], &inner, path)
        }
        (Type::Dynamic, J::String(s)) => Ok(Value::string(s.clone())),
        (t, other) => Err(err(
            path,
            format!("expected {}, found {other}", t.to_json()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::value::object;

    fn obj_type() -> Type {
        Type::Object(BTreeMap::from([
            ("name".into(), Type::String),
            ("count".into(), Type::Number),
            ("on".into(), Type::Bool),
            ("tags".into(), Type::map(Type::String)),
            ("ports".into(), Type::list(Type::Number)),
            (
                "svc".into(),
                Type::set(Type::Object(BTreeMap::from([("p".into(), Type::String)]))),
            ),
        ]))
    }

    #[test]
    fn msgpack_round_trip_with_nulls_and_unknowns() {
        let ty = obj_type();
        let v = object([
            ("name", Value::string("web")),
            ("count", Value::int(3)),
            ("on", Value::Unknown),
            (
                "tags",
                Value::Map(BTreeMap::from([("a".into(), Value::string("b"))])),
            ),
            ("ports", Value::List(vec![Value::int(80), Value::Unknown])),
            ("svc", Value::Set(vec![object([("p", Value::Null)])])),
        ]);
        let bytes = to_msgpack(&v, &ty);
        assert_eq!(from_msgpack(&bytes, &ty).unwrap(), v);
    }

    #[test]
    fn unknown_is_written_as_terraform_does() {
        assert_eq!(to_msgpack(&Value::Unknown, &Type::String), vec![0xd4, 0, 0]);
    }

    #[test]
    fn refined_unknowns_decode_as_unknown() {
        // ext type 12 with a refinement payload, as terraform sends for a
        // "known not null" unknown string.
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &Mp::Ext(12, vec![0x81, 0x01, 0xc3])).unwrap();
        assert_eq!(from_msgpack(&bytes, &Type::String).unwrap(), Value::Unknown);
    }

    #[test]
    fn numbers_in_every_wire_form() {
        for mp in [Mp::from(7), Mp::F64(7.0), Mp::String("7".into())] {
            let mut b = Vec::new();
            rmpv::encode::write_value(&mut b, &mp).unwrap();
            assert_eq!(from_msgpack(&b, &Type::Number).unwrap().as_i64(), Some(7));
        }
        let mut b = Vec::new();
        rmpv::encode::write_value(&mut b, &Mp::String("1.5".into())).unwrap();
        assert_eq!(
            from_msgpack(&b, &Type::Number).unwrap(),
            Value::Number(Number::Float(1.5))
        );
    }

    #[test]
    fn dynamic_values_carry_their_type() {
        let mut b = Vec::new();
        rmpv::encode::write_value(
            &mut b,
            &Mp::Array(vec![
                Mp::Binary(b"\"string\"".to_vec()),
                Mp::String("x".into()),
            ]),
        )
        .unwrap();
        assert_eq!(
            from_msgpack(&b, &Type::Dynamic).unwrap(),
            Value::string("x")
        );
    }

    #[test]
    fn missing_attributes_are_null_and_extra_ones_dropped() {
        let ty = Type::Object(BTreeMap::from([("a".into(), Type::String)]));
        let mut b = Vec::new();
        rmpv::encode::write_value(
            &mut b,
            &Mp::Map(vec![(Mp::String("zzz".into()), Mp::Boolean(true))]),
        )
        .unwrap();
        assert_eq!(from_msgpack(&b, &ty).unwrap(), object([("a", Value::Null)]));
    }

    #[test]
    fn type_mismatch_names_the_path() {
        let ty = obj_type();
        let mut b = Vec::new();
        rmpv::encode::write_value(
            &mut b,
            &Mp::Map(vec![(Mp::String("count".into()), Mp::Boolean(true))]),
        )
        .unwrap();
        let e = from_msgpack(&b, &ty).unwrap_err().to_string();
        assert!(e.contains("count"), "{e}");
    }

    #[test]
    fn json_state_decodes() {
        let ty = obj_type();
        let v = from_json(
            br#"{"name":"web","count":2,"on":true,"tags":{"a":"b"},"ports":[1],"svc":null,"old":1}"#,
            &ty,
        )
        .unwrap();
        assert_eq!(v.get("count").as_i64(), Some(2));
        assert!(v.get("svc").is_null());
    }

    #[test]
    fn garbage_never_panics() {
        for bytes in [&b"\xc1"[..], b"\x92", b"\xdc\xff\xff", b"\x81\xa1a"] {
            let _ = from_msgpack(bytes, &obj_type());
        }
    }
}

/// Property tests: the decoders take terraform's bytes, so no input may
/// panic them, and what Berth encodes decodes to the same value.
/// `make fuzz` runs them with many more cases.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn shape() -> Type {
        Type::Object(BTreeMap::from([
            ("name".into(), Type::String),
            ("count".into(), Type::Number),
            ("on".into(), Type::Bool),
            ("tags".into(), Type::map(Type::String)),
            ("ports".into(), Type::list(Type::Number)),
            ("any".into(), Type::Dynamic),
        ]))
    }

    fn unknown_or_null(known: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
        prop_oneof![
            1 => Just(Value::Null),
            1 => Just(Value::Unknown),
            6 => known,
        ]
        .boxed()
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::int),
            // Finite floats that are not whole (whole ones read back as ints).
            (-1.0e12f64..1.0e12).prop_filter_map("not whole", |f| {
                (f.fract() != 0.0).then_some(Value::Number(Number::Float(f)))
            }),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        (
            unknown_or_null(any::<String>().prop_map(Value::String)),
            unknown_or_null(number()),
            unknown_or_null(any::<bool>().prop_map(Value::Bool)),
            unknown_or_null(
                prop::collection::btree_map(
                    any::<String>(),
                    any::<String>().prop_map(Value::String),
                    0..4,
                )
                .prop_map(Value::Map),
            ),
            unknown_or_null(prop::collection::vec(number(), 0..4).prop_map(Value::List)),
        )
            .prop_map(|(name, count, on, tags, ports)| {
                Value::Object(BTreeMap::from([
                    ("name".into(), name),
                    ("count".into(), count),
                    ("on".into(), on),
                    ("tags".into(), tags),
                    ("ports".into(), ports),
                    ("any".into(), Value::Null),
                ]))
            })
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // 0x91: an array of one, 200,000 times; `[` as deep in JSON.
        let mut bytes = vec![0x91_u8; 200_000];
        bytes.push(0xc0);
        assert!(from_msgpack(&bytes, &shape()).is_err());
        assert!(from_msgpack(&bytes, &Type::Dynamic).is_err());
        let json = "[".repeat(200_000);
        assert!(from_json(json.as_bytes(), &Type::Dynamic).is_err());
    }

    proptest! {
        #[test]
        fn prop_msgpack_round_trips(v in value()) {
            let ty = shape();
            let bytes = to_msgpack(&v, &ty);
            let back = from_msgpack(&bytes, &ty).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, v);
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let ty = shape();
            let _ = from_msgpack(&bytes, &ty);
            let _ = from_json(&bytes, &ty);
            let _ = from_msgpack(&bytes, &Type::Dynamic);
            let _ = from_json(&bytes, &Type::Dynamic);
        }

        #[test]
        fn prop_corrupted_encodings_never_panic(
            v in value(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let ty = shape();
            let mut bytes = to_msgpack(&v, &ty);
            for (at, byte) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            let _ = from_msgpack(&bytes, &ty);
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = from_msgpack(&bytes, &ty);
        }
    }
}
