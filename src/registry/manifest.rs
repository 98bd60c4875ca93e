//! Pure reading of what a registry returns: manifests and indexes (Docker
//! v2 schema 2 and OCI), the linux/amd64 choice in an index, the platform in
//! an image config, the compressed size of an image and content digests.
//! No I/O here; `resolve` feeds it bytes.

use std::fmt;

use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_CONFIG_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// What Berth asks registries for, in order of preference.
pub(crate) const ACCEPTED_MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
];

/// The one platform Berth deploys.
pub(crate) const TARGET_OS: &str = "linux";
pub(crate) const TARGET_ARCHITECTURE: &str = "amd64";

/// Docker's annotation on buildx attestation entries in an index.
const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// A content descriptor as found in manifests and indexes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub(crate) media_type: Option<String>,
    pub(crate) digest: String,
    pub(crate) size: i64,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
    #[serde(default)]
    pub(crate) annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// An OS/architecture pair, from an index entry or an image config.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct Platform {
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
}

impl Platform {
    fn is_target(&self) -> bool {
        self.os == TARGET_OS && self.architecture == TARGET_ARCHITECTURE
    }

    /// Buildx marks attestation manifests as `unknown/unknown`.
    fn is_unknown(&self) -> bool {
        self.os == "unknown" && self.architecture == "unknown"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = if self.os.is_empty() { "?" } else { &self.os };
        let architecture = if self.architecture.is_empty() {
            "?"
        } else {
            &self.architecture
        };
        write!(f, "{os}/{architecture}")?;
        match self.variant.as_deref() {
            Some(variant) if !variant.is_empty() => write!(f, "/{variant}"),
            _ => Ok(()),
        }
    }
}

/// A manifest document, by kind.
#[derive(Debug, PartialEq)]
pub(crate) enum Document {
    /// A multi-platform index (OCI image index or Docker manifest list).
    Index { manifests: Vec<Descriptor> },
    /// A single-platform image manifest.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Why a document is not something Berth can use. The message completes
/// "not a container image Berth can deploy: ...".
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum DocumentError {
    #[error("the manifest is not valid JSON ({0})")]
    Json(String),
    #[error(
        "it uses manifest schema version {0}, which Berth does not read (Docker schema 1 is \
         deprecated); push the image again with a current Docker or buildx"
    )]
    SchemaVersion(i64),
    #[error(
        "its manifest media type is `{0}`, not an OCI or Docker v2 image manifest or index \
         (it may be another kind of artifact, such as a Helm chart or a signature)"
    )]
    MediaType(String),
    #[error(
        "its config media type is `{0}`, not a container image config (it may be another kind of \
         artifact stored in a registry)"
    )]
    ConfigMediaType(String),
    #[error("the manifest has no `{0}` field")]
    MissingField(&'static str),
    #[error("the descriptor of {0} has a negative size")]
    NegativeSize(String),
    #[error("the image config is not valid JSON ({0})")]
    ConfigJson(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// Reads a manifest or index, accepting Docker v2 schema 2 and OCI media
/// types; an OCI document without `mediaType` is told apart by its fields.
pub(crate) fn parse_document(raw: &[u8]) -> Result<Document, DocumentError> {
    let document: RawDocument =
        serde_json::from_slice(raw).map_err(|e| DocumentError::Json(e.to_string()))?;
    match document.schema_version {
        Some(2) => {}
        Some(other) => return Err(DocumentError::SchemaVersion(other)),
        None => return Err(DocumentError::MissingField("schemaVersion")),
    }
    let is_index = match document.media_type.as_deref() {
        Some(OCI_IMAGE_INDEX_MEDIA_TYPE | IMAGE_MANIFEST_LIST_MEDIA_TYPE) => true,
        Some(OCI_IMAGE_MEDIA_TYPE | IMAGE_MANIFEST_MEDIA_TYPE) => false,
        Some(other) => return Err(DocumentError::MediaType(other.to_owned())),
        None => document.manifests.is_some(),
    };
    if is_index {
        let manifests = document
            .manifests
            .ok_or(DocumentError::MissingField("manifests"))?;
        return Ok(Document::Index { manifests });
    }
    let config = document
        .config
        .ok_or(DocumentError::MissingField("config"))?;
    if let Some(media_type) = config.media_type.as_deref() {
        if media_type != IMAGE_CONFIG_MEDIA_TYPE && media_type != IMAGE_DOCKER_CONFIG_MEDIA_TYPE {
            return Err(DocumentError::ConfigMediaType(media_type.to_owned()));
        }
    }
    Ok(Document::Image {
        config,
        layers: document.layers.unwrap_or_default(),
    })
}

/// Picks the linux/amd64 entry of an index. When there is none, returns the
/// platforms the index does offer (attestations and entries without a
/// platform left out), for the refusal.
///
/// Among several linux/amd64 entries, one without a variant (or `v1`) wins
/// over the microarchitecture levels `v2`..`v4`, which not every host runs.
pub(crate) fn select_linux_amd64(entries: &[Descriptor]) -> Result<&Descriptor, Vec<String>> {
    let variant_rank = |platform: &Platform| match platform.variant.as_deref() {
        None | Some("") | Some("v1") => 1,
        Some("v2") => 2,
        Some("v3") => 3,
        Some("v4") => 4,
        Some(_) => 5,
    };
    let chosen = entries
        .iter()
        .filter(|entry| !is_attestation(entry))
        .filter_map(|entry| {
            let platform = entry.platform.as_ref()?;
            platform
                .is_target()
                .then(|| (variant_rank(platform), entry))
        })
        .min_by_key(|(rank, _)| *rank);
    if let Some((_, entry)) = chosen {
        return Ok(entry);
    }
    let mut available: Vec<String> = Vec::new();
    for entry in entries.iter().filter(|entry| !is_attestation(entry)) {
        if let Some(platform) = &entry.platform {
            let name = platform.to_string();
            if !available.contains(&name) {
                available.push(name);
            }
        }
    }
    Err(available)
}

fn is_attestation(entry: &Descriptor) -> bool {
    let unknown_platform = entry.platform.as_ref().is_some_and(Platform::is_unknown);
    let attestation_annotation = entry
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(DOCKER_REFERENCE_TYPE))
        .is_some_and(|kind| kind == "attestation-manifest");
    unknown_platform || attestation_annotation
}

/// The platform an image config declares (`os`, `architecture`, `variant`).
pub(crate) fn config_platform(raw: &[u8]) -> Result<Platform, DocumentError> {
    serde_json::from_slice(raw).map_err(|e| DocumentError::ConfigJson(e.to_string()))
}

/// Whether a config platform is the one Berth deploys.
pub(crate) fn is_target_platform(platform: &Platform) -> bool {
    platform.is_target()
}

/// Compressed size of an image: its config plus all its layers, as the
/// manifest declares them. Saturates rather than overflowing (the result is
/// then far over any limit anyway).
pub(crate) fn compressed_size(
    config: &Descriptor,
    layers: &[Descriptor],
) -> Result<u64, DocumentError> {
    std::iter::once(config)
        .chain(layers)
        .try_fold(0u64, |total, descriptor| {
            let size = u64::try_from(descriptor.size)
                .map_err(|_| DocumentError::NegativeSize(descriptor.digest.clone()))?;
            Ok(total.saturating_add(size))
        })
}

/// `sha256:<hex>` of some content.
pub(crate) fn sha256_digest(content: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(content)))
}

/// Whether `content` hashes to `digest` (`sha256`, `sha384` or `sha512`).
/// An unknown algorithm never matches.
pub(crate) fn digest_matches(content: &[u8], digest: &str) -> bool {
    let Some((algorithm, expected)) = digest.split_once(':') else {
        return false;
    };
    let actual = match algorithm {
        "sha256" => hex::encode(Sha256::digest(content)),
        "sha384" => hex::encode(Sha384::digest(content)),
        "sha512" => hex::encode(Sha512::digest(content)),
        _ => return false,
    };
    actual.eq_ignore_ascii_case(expected)
}

/// A size in decimal gigabytes for messages: "12.5 GB", "10 GB".
pub(crate) fn format_gb(bytes: u64) -> String {
    // Tenths of a gigabyte, rounded half up, in integers to stay exact.
    let tenths = (u128::from(bytes) + 50_000_000) / 100_000_000;
    let (whole, fraction) = (tenths / 10, tenths % 10);
    if fraction == 0 {
        format!("{whole} GB")
    } else {
        format!("{whole}.{fraction} GB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, os: &str, architecture: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            digest: digest.to_owned(),
            size: 500,
            platform: Some(Platform {
                os: os.to_owned(),
                architecture: architecture.to_owned(),
                variant: variant.map(str::to_owned),
            }),
            annotations: None,
        }
    }

    #[test]
    fn picks_linux_amd64_from_an_index_ignoring_attestations() {
        let entries = vec![
            entry("sha256:arm", "linux", "arm64", Some("v8")),
            entry("sha256:att", "unknown", "unknown", None),
            entry("sha256:amd", "linux", "amd64", None),
        ];
        assert_eq!(
            select_linux_amd64(&entries).map(|e| &e.digest[..]),
            Ok("sha256:amd")
        );
    }

    #[test]
    fn prefers_the_baseline_amd64_variant() {
        let entries = vec![
            entry("sha256:v3", "linux", "amd64", Some("v3")),
            entry("sha256:base", "linux", "amd64", None),
        ];
        assert_eq!(
            select_linux_amd64(&entries).map(|e| &e.digest[..]),
            Ok("sha256:base")
        );
        let only_v2 = vec![entry("sha256:v2", "linux", "amd64", Some("v2"))];
        assert_eq!(
            select_linux_amd64(&only_v2).map(|e| &e.digest[..]),
            Ok("sha256:v2")
        );
    }

    #[test]
    fn lists_available_platforms_when_amd64_is_missing() {
        let mut attestation = entry("sha256:att2", "linux", "arm64", None);
        attestation.annotations = Some(
            [(
                DOCKER_REFERENCE_TYPE.to_owned(),
                "attestation-manifest".to_owned(),
            )]
            .into_iter()
            .collect(),
        );
        let entries = vec![
            entry("sha256:arm", "linux", "arm64", None),
            entry("sha256:att", "unknown", "unknown", None),
            entry("sha256:arm2", "linux", "arm64", None),
            entry("sha256:win", "windows", "amd64", None),
            entry("sha256:v7", "linux", "arm", Some("v7")),
            attestation,
        ];
        assert_eq!(
            select_linux_amd64(&entries),
            Err(vec![
                "linux/arm64".to_owned(),
                "windows/amd64".to_owned(),
                "linux/arm/v7".to_owned()
            ])
        );
        assert_eq!(select_linux_amd64(&[]), Err(Vec::new()));
    }

    #[test]
    fn parses_docker_and_oci_manifests_and_indexes() {
        let docker_manifest = br#"{"schemaVersion":2,
            "mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c","size":7},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:l","size":11}]}"#;
        let Document::Image { config, layers } = parse_document(docker_manifest).expect("parse")
        else {
            panic!("expected an image manifest");
        };
        assert_eq!(compressed_size(&config, &layers), Ok(18));

        let oci_index_without_media_type = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":3,
             "platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert!(matches!(
            parse_document(oci_index_without_media_type),
            Ok(Document::Index { manifests }) if manifests.len() == 1
        ));

        let docker_list = br#"{"schemaVersion":2,
            "mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(matches!(
            parse_document(docker_list),
            Ok(Document::Index { .. })
        ));

        let oci_manifest_without_layers = br#"{"schemaVersion":2,
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":7}}"#;
        assert!(matches!(
            parse_document(oci_manifest_without_layers),
            Ok(Document::Image { layers, .. }) if layers.is_empty()
        ));
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        assert_eq!(
            parse_document(br#"{"schemaVersion":1,"name":"x"}"#),
            Err(DocumentError::SchemaVersion(1))
        );
        assert!(matches!(
            parse_document(b"not json"),
            Err(DocumentError::Json(_))
        ));
        assert_eq!(
            parse_document(br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart"}"#),
            Err(DocumentError::MediaType(
                "application/vnd.cncf.helm.chart".to_owned()
            ))
        );
        let helm = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:c","size":7},
            "layers":[]}"#;
        assert_eq!(
            parse_document(helm),
            Err(DocumentError::ConfigMediaType(
                "application/vnd.cncf.helm.config.v1+json".to_owned()
            ))
        );
        assert_eq!(
            parse_document(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
            ),
            Err(DocumentError::MissingField("config"))
        );
    }

    #[test]
    fn size_sums_config_and_layers_and_rejects_negative_sizes() {
        let config = entry("sha256:c", "linux", "amd64", None);
        let mut layers = vec![
            entry("sha256:l1", "linux", "amd64", None),
            entry("sha256:l2", "linux", "amd64", None),
        ];
        assert_eq!(compressed_size(&config, &layers), Ok(1500));
        layers[1].size = i64::MAX;
        layers.push(entry("sha256:l3", "linux", "amd64", None));
        layers[2].size = i64::MAX;
        assert_eq!(compressed_size(&config, &layers), Ok(u64::MAX));
        layers[0].size = -1;
        assert_eq!(
            compressed_size(&config, &layers),
            Err(DocumentError::NegativeSize("sha256:l1".to_owned()))
        );
    }

    #[test]
    fn reads_the_config_platform() {
        let platform =
            config_platform(br#"{"architecture":"arm64","os":"linux","variant":"v8","rootfs":{}}"#)
                .expect("config");
        assert_eq!(platform.to_string(), "linux/arm64/v8");
        assert!(!is_target_platform(&platform));
        let amd = config_platform(br#"{"architecture":"amd64","os":"linux"}"#).expect("config");
        assert!(is_target_platform(&amd));
        let empty = config_platform(b"{}").expect("config");
        assert_eq!(empty.to_string(), "?/?");
    }

    #[test]
    fn digests_are_checked_by_their_algorithm() {
        let content = b"hello";
        let sha256 = sha256_digest(content);
        assert_eq!(
            sha256,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(digest_matches(content, &sha256));
        assert!(digest_matches(
            content,
            &sha256.to_uppercase().replace("SHA256", "sha256")
        ));
        assert!(!digest_matches(b"other", &sha256));
        assert!(digest_matches(
            content,
            &format!("sha512:{}", hex::encode(Sha512::digest(content)))
        ));
        assert!(!digest_matches(content, "md5:abc"));
        assert!(!digest_matches(content, "nonsense"));
    }

    #[test]
    fn sizes_read_in_gigabytes() {
        assert_eq!(format_gb(10_000_000_000), "10 GB");
        assert_eq!(format_gb(12_480_000_000), "12.5 GB");
        assert_eq!(format_gb(10_000_000_001), "10 GB");
        assert_eq!(format_gb(0), "0 GB");
        assert_eq!(format_gb(u64::MAX), "18446744073.7 GB");
    }
}

/// Property tests: manifests and indexes come from any registry, so no
/// document may panic the reader or the platform choice. `make fuzz` runs
/// them with many more cases.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// JSON documents shaped like manifests and indexes, with every field
    /// optionally missing, mistyped or odd.
    fn document_like() -> impl Strategy<Value = String> {
        let media = prop::sample::select(vec![
            OCI_IMAGE_INDEX_MEDIA_TYPE,
            IMAGE_MANIFEST_LIST_MEDIA_TYPE,
            OCI_IMAGE_MEDIA_TYPE,
            IMAGE_MANIFEST_MEDIA_TYPE,
            "application/json",
            "",
        ]);
        let descriptor = (
            prop::option::of(prop::sample::select(vec![
                "\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"",
                "\"sha256:x\"",
                "12",
                "null",
            ])),
            prop::option::of(prop::sample::select(vec![
                "0",
                "-1",
                "18446744073709551615",
                "1e30",
                "\"9\"",
            ])),
            prop::option::of(prop::sample::select(vec![
                r#"{"os":"linux","architecture":"amd64"}"#,
                r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#,
                r#"{"os":"unknown","architecture":"unknown"}"#,
                r#"{}"#,
                "[]",
            ])),
        )
            .prop_map(|(digest, size, platform)| {
                let mut fields = Vec::new();
                if let Some(d) = digest {
                    fields.push(format!("\"digest\":{d}"));
                }
                if let Some(s) = size {
                    fields.push(format!("\"size\":{s}"));
                }
                if let Some(p) = platform {
                    fields.push(format!("\"platform\":{p}"));
                }
                format!("{{{}}}", fields.join(","))
            });
        (
            prop::option::of(prop::sample::select(vec!["2", "1", "\"2\"", "null"])),
            prop::option::of(media),
            prop::option::of(prop::collection::vec(descriptor.clone(), 0..4)),
            prop::option::of(descriptor.clone()),
            prop::option::of(prop::collection::vec(descriptor, 0..4)),
        )
            .prop_map(|(version, media, manifests, config, layers)| {
                let mut fields = Vec::new();
                if let Some(v) = version {
                    fields.push(format!("\"schemaVersion\":{v}"));
                }
                if let Some(m) = media {
                    fields.push(format!("\"mediaType\":\"{m}\""));
                }
                if let Some(m) = manifests {
                    fields.push(format!("\"manifests\":[{}]", m.join(",")));
                }
                if let Some(c) = config {
                    fields.push(format!("\"config\":{c}"));
                }
                if let Some(l) = layers {
                    fields.push(format!("\"layers\":[{}]", l.join(",")));
                }
                format!("{{{}}}", fields.join(","))
            })
    }

    fn exercise(raw: &[u8]) {
        match parse_document(raw) {
            Ok(Document::Index { manifests }) => {
                let _ = select_linux_amd64(&manifests);
            }
            Ok(Document::Image { layers, .. }) => {
                let _ = layers.len();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let _ = config_platform(raw);
    }

    proptest! {
        #[test]
        fn prop_arbitrary_bytes_never_panic_the_manifest_reader(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            exercise(&bytes);
        }

        #[test]
        fn prop_manifest_like_documents_never_panic(doc in document_like()) {
            exercise(doc.as_bytes());
        }
    }
}
