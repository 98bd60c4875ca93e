//! `data "berth_image"`: resolves an image reference to the linux/amd64
//! manifest digest Berth would deploy, checking platform and size.

use async_trait::async_trait;

use super::diag::{AttributePath, Diagnostic, Diagnostics};
use super::schema::{Attribute, Schema};
use super::value::{object, Value};
use super::{Context, DataSource};
use crate::reference::Reference;

pub struct ImageDataSource;

pub const TYPE_NAME: &str = "berth_image";

const INPUTS: [&str; 2] = ["image", "registry_credential_id"];

const OUTPUTS: [&str; 6] = [
    "reference",
    "digest",
    "index_digest",
    "platform",
    "size_bytes",
    "pinned_reference",
];

#[async_trait]
impl DataSource for ImageDataSource {
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        Schema::new(
            "Resolves a container image reference to the digest of its linux/amd64 image, the one Berth deploys. The registry is asked on every plan, so a tag that has moved shows up as a new `digest`. Images without a linux/amd64 variant, or over 10 GB compressed, are refused with an error that says what was found.",
            vec![
                Attribute::string("image").required().describe(
                    "The image to resolve: a tag (`ghcr.io/acme/web:1.4`) or a digest (`ghcr.io/acme/web@sha256:…`). Docker's rules apply: `nginx` means `docker.io/library/nginx:latest`.",
                ),
                Attribute::string("registry_credential_id").optional().describe(
                    "`id` of a `berth_registry_credential` for the image's registry, for private images. Without it the registry is asked anonymously.",
                ),
                Attribute::string("reference").computed().describe(
                    "The canonical form of `image`, e.g. `docker.io/library/nginx:latest`.",
                ),
                Attribute::string("digest").computed().describe(
                    "Digest of the linux/amd64 image manifest (`sha256:…`): what Berth deploys. For a multi-platform tag this is the amd64 entry of the index, not the index itself.",
                ),
                Attribute::string("index_digest").computed().describe(
                    "Digest of the multi-platform index (manifest list) when `image` names one; null for a single-platform image.",
                ),
                Attribute::string("platform").computed().describe(
                    "The platform that was resolved and checked against the image's configuration: always `linux/amd64`.",
                ),
                Attribute::number("size_bytes").computed().describe(
                    "Compressed size of the image in bytes: its configuration plus all layers, as stored in the registry.",
                ),
                Attribute::string("pinned_reference").computed().describe(
                    "The exact, immutable image as `registry/repository@digest`, usable with `docker pull`.",
                ),
            ],
        )
    }

    fn validate(&self, config: &Value) -> Diagnostics {
        let mut diags = Diagnostics::default();
        if let Some(image) = config.get("image").as_str() {
            if let Err(e) = Reference::parse(image) {
                diags.push(invalid_reference(&e.to_string()));
            }
        }
        diags
    }

    async fn read(&self, ctx: &Context, config: &Value) -> Result<Value, Diagnostics> {
        let image = match config.get("image") {
            Value::String(s) => s.clone(),
            Value::Unknown => return Ok(with_outputs(config, |_| Value::Unknown)),
            _ => {
                return Err(Diagnostic::error(
                    "Missing image",
                    "Set `image` to a reference such as `ghcr.io/acme/web:1.4`.",
                )
                .at(AttributePath::root("image"))
                .into())
            }
        };
        let reference = Reference::parse(&image)
            .map_err(|e| Diagnostics::from(invalid_reference(&e.to_string())))?;
        if config.get("registry_credential_id").is_unknown() {
            return Ok(with_outputs(config, |_| Value::Unknown));
        }
        let resolved = ctx
            .resolve_image(&reference, config.get("registry_credential_id"))
            .await?;
        Ok(with_outputs(config, |name| match name {
            "reference" => Value::string(&resolved.reference),
            "digest" => Value::string(&resolved.digest),
            "index_digest" => Value::opt_string(resolved.index_digest.as_deref()),
            "platform" => Value::string(&resolved.platform),
            "size_bytes" => Value::int(i64::try_from(resolved.size_bytes).unwrap_or(i64::MAX)),
            "pinned_reference" => Value::string(&resolved.pinned_reference),
            _ => Value::Null,
        }))
    }
}

fn invalid_reference(message: &str) -> Diagnostic {
    Diagnostic::error(
        "Invalid image reference",
        format!("{message}. Write the image as `[registry/]repository[:tag][@sha256:digest]`, e.g. `ghcr.io/acme/web:1.4`."),
    )
    .at(AttributePath::root("image"))
}

/// The configuration with every computed output filled in by `f`.
fn with_outputs(config: &Value, f: impl Fn(&str) -> Value) -> Value {
    let mut fields: Vec<(&str, Value)> = INPUTS
        .iter()
        .map(|name| (*name, config.get(name).clone()))
        .collect();
    fields.extend(OUTPUTS.iter().map(|name| (*name, f(name))));
    object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::config::ProviderConfig;

    #[tokio::test]
    async fn unknown_image_gives_unknown_outputs() {
        let ctx = Context::new(ProviderConfig::default());
        let cfg = object([("image", Value::Unknown)]);
        let out = ImageDataSource.read(&ctx, &cfg).await.unwrap();
        for name in OUTPUTS {
            assert!(out.get(name).is_unknown(), "{name}");
        }
    }

    #[test]
    fn invalid_reference_is_reported_at_image() {
        let d = ImageDataSource.validate(&object([("image", Value::string("Foo/Bar"))]));
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].path, Some(AttributePath::root("image")));
        assert!(d.0[0].detail.contains("Foo/Bar"), "{}", d.0[0].detail);
    }

    #[test]
    fn unknown_image_validates() {
        assert!(ImageDataSource
            .validate(&object([("image", Value::Unknown)]))
            .is_empty());
    }
}
