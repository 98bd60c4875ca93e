//! Provider functions: `provider::berth::normalize_image(ref)`.

use super::schema::{FunctionSignature, Parameter, Type};
use super::value::Value;
use super::{Function, FunctionError};
use crate::reference::Reference;

/// `normalize_image(ref)`: the canonical form of an image reference.
pub struct NormalizeImage;

impl Function for NormalizeImage {
    fn name(&self) -> &'static str {
        "normalize_image"
    }

    fn signature(&self) -> FunctionSignature {
        FunctionSignature {
            summary: "Canonical form of an image reference".into(),
            description: "Returns the canonical form of a container image reference, following Docker's rules: the registry defaults to `docker.io`, single names on Docker Hub get `library/`, and the tag `latest` is added only when the reference has neither a tag nor a digest. For example `normalize_image(\"nginx\")` is `\"docker.io/library/nginx:latest\"`. An invalid reference is an error that says why. No registry is contacted.".into(),
            parameters: vec![Parameter {
                name: "ref",
                ty: Type::String,
                description: "An image reference such as `nginx`, `ghcr.io/acme/web:1.4` or `registry.example.com:5000/team/api@sha256:…`.".into(),
            }],
            returns: Type::String,
        }
    }

    fn call(&self, args: &[Value]) -> Result<Value, FunctionError> {
        let input = args.first().and_then(Value::as_str).ok_or(FunctionError {
            text: "normalize_image takes one string argument".into(),
            argument: Some(0),
        })?;
        Reference::parse(input)
            .map(|r| Value::string(r.to_string()))
            .map_err(|e| FunctionError {
                text: e.to_string(),
                argument: Some(0),
            })
    }
}
