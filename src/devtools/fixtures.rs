//! Fixture images for tests and the quickstart, built by Berth's own code and
//! pushed to the local registries of `tests/devenv.sh`.
//!
//! This module owns the image contents (layers from the static busybox,
//! configs, manifests, the multi-platform index) and pushing them. Nothing
//! comes from the internet or a public base image, and nothing runs
//! `docker build`: layers are tar archives built in memory, so the same
//! content gives the same digest on every machine and every run (fixed
//! mtimes, uid/gid 0, sorted entries, gzip without timestamp).
//!
//! Every image shares one base layer (`/bin/busybox` plus applet symlinks)
//! and adds a small files layer, so a registry stores busybox once.

use std::sync::{Arc, OnceLock};

use flate2::{Compression, GzBuilder};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The plain-HTTP registry of the dev environment (no authentication).
pub const PLAIN_REGISTRY: &str = "127.0.0.1:5000";
/// The registry of the dev environment that wants HTTP basic auth.
pub const AUTH_REGISTRY: &str = "127.0.0.1:5001";
/// User name accepted by [`AUTH_REGISTRY`].
pub const AUTH_USER: &str = "berth";
/// Password of [`AUTH_USER`] on [`AUTH_REGISTRY`].
pub const AUTH_PASSWORD: &str = "berth-pass";

/// Where Debian's `busybox-static` puts the static binary every layer uses.
pub const BUSYBOX_PATH: &str = "/bin/busybox";
/// The port the demo images serve HTTP on (inside the container).
pub const DEMO_PORT: u16 = 8080;
/// Compressed size the `berth/huge` manifest claims for its foreign layer.
pub const HUGE_CLAIMED_LAYER_SIZE: u64 = 11_000_000_000;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER_FOREIGN_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/// 2024-01-01T00:00:00Z: the mtime of every tar entry and the `created` of
/// every config, so digests never depend on when the fixtures were built.
const FIXED_EPOCH: u64 = 1_704_067_200;
const FIXED_CREATED: &str = "2024-01-01T00:00:00Z";

/// Where the ingress image's programs come from: Debian's `haproxy` and
/// `caddy` packages and `bash` (installed by `tests/devenv.sh`).
pub const INGRESS_PROGRAMS: &[&str] = &["/usr/sbin/haproxy", "/usr/bin/caddy", "/bin/bash"];
/// Repository and tag of the ingress image in the plain registry.
pub const INGRESS_REPOSITORY: &str = "berth/ingress";
pub const INGRESS_TAG: &str = "local";

/// Applets reachable by name under `/bin` (symlinks to `busybox`).
const APPLETS: &[&str] = &[
    "cat", "echo", "env", "false", "httpd", "kill", "ls", "nc", "ps", "sh", "sleep", "true", "wget",
];

/// What went wrong building or pushing a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error(
        "cannot read the static busybox at {path}: {source}; \
         run `bash tests/devenv.sh up` (it installs Debian's busybox-static)"
    )]
    BusyboxMissing {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("building a fixture layer in memory failed: {0}")]
    Layer(#[source] std::io::Error),
    #[error("encoding fixture JSON failed: {0}")]
    Json(#[source] serde_json::Error),
    #[error("`{reference}` is not a valid image reference: {source}")]
    Reference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error(
        "{action} {reference} failed: {source}; \
         is the dev environment up? (`bash tests/devenv.sh status`)"
    )]
    Registry {
        action: &'static str,
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("invalid media type header {0:?}")]
    MediaType(&'static str),
    #[error("registry stored {reference} as {actual}, but the pushed manifest is {expected}")]
    DigestMismatch {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("the fixture build task failed: {0}")]
    Task(String),
    #[error(
        "cannot read {path} for the ingress image: {detail}; \
         run `bash tests/devenv.sh up` (it installs Debian's haproxy and caddy)"
    )]
    IngressProgram { path: String, detail: String },
}

/// One image (or index) pushed to a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// `registry/repository:tag`, e.g. `127.0.0.1:5000/berth/demo:v1`.
    pub reference: String,
    /// Digest of the image manifest, as the registry's `Docker-Content-Digest`
    /// reports it. For a multi-platform tag: the linux/amd64 manifest.
    pub digest: String,
    /// For a multi-platform tag, the digest of the index the tag points to.
    pub index_digest: Option<String>,
}

/// Every fixture image, as pushed by [`push_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureSet {
    /// `berth/demo:v1`: busybox httpd on 8080 answering `berth demo v1\n`.
    pub demo_v1: Pushed,
    /// `berth/demo:v2`: the same, answering `berth demo v2\n`.
    pub demo_v2: Pushed,
    /// `berth/multi:latest`: an OCI index, linux/amd64 (= demo v1) and
    /// linux/arm64; `digest` is the amd64 manifest, `index_digest` the index.
    pub multi: Pushed,
    /// Digest of the linux/arm64 manifest inside `berth/multi:latest`.
    pub multi_arm64_digest: String,
    /// `berth/arm64-only:latest`: a single linux/arm64 manifest.
    pub arm64_only: Pushed,
    /// `berth/unhealthy:latest`: runs forever, never answers HTTP.
    pub unhealthy: Pushed,
    /// `berth/crash:latest`: exits at once with status 3.
    pub crash: Pushed,
    /// `berth/huge:latest`: claims more than 10 GB of compressed layers.
    pub huge: Pushed,
    /// `berth/ingress:local`: HAProxy and Caddy from this machine's Debian
    /// packages, laid out like the official images, for offline tests and
    /// the quickstart (see [`push_ingress`]).
    pub ingress: Pushed,
}

/// Push the demo image whose page names `version` (body exactly
/// `berth demo {version}\n`) to `registry/repository:tag`. Any repository and
/// tag: tests use it to move a tag. Idempotent.
pub async fn push_demo(
    registry: &str,
    repository: &str,
    tag: &str,
    version: &str,
    auth: Option<(&str, &str)>,
) -> Result<Pushed, FixtureError> {
    let version = version.to_string();
    let image = build_blocking(move || demo_image(&version, Arch::Amd64)).await?;
    let target = Target::new(registry, auth);
    target.push_image(repository, Some(tag), &image).await
}

/// The unhealthy image's command: runs, stops on SIGTERM, never answers.
const UNHEALTHY_COMMAND: &[&str] = &[
    "/bin/busybox",
    "sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 1; done",
];

/// What [`push_variant`] pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The demo image (as [`push_demo`]).
    Demo,
    /// The demo image built for linux/arm64 only: refused by Berth.
    Arm64Only,
    /// The demo image's files under a command that never answers HTTP.
    Unhealthy,
}

/// Push a variant of the demo image naming `version` to
/// `registry/repository:tag`, for tests that need an unusable image in an
/// app's own repository (a deploy hook deploys nothing else). Idempotent.
pub async fn push_variant(
    registry: &str,
    repository: &str,
    tag: &str,
    version: &str,
    variant: Variant,
) -> Result<Pushed, FixtureError> {
    let version = version.to_string();
    let image = build_blocking(move || match variant {
        Variant::Demo => demo_image(&version, Arch::Amd64),
        Variant::Arm64Only => demo_image(&version, Arch::Arm64),
        Variant::Unhealthy => image(
            &format!("berth unhealthy {version}"),
            Arch::Amd64,
            UNHEALTHY_COMMAND,
            true,
            vec![base_layer()?, Arc::new(demo_files_layer(&version)?)],
            None,
        ),
    })
    .await?;
    Target::new(registry, None)
        .push_image(repository, Some(tag), &image)
        .await
}

/// Push every fixture image to `registry` (anonymously). Idempotent, and
/// fast when the registry already has them: tags already pointing at the
/// expected digest are left alone.
pub async fn push_all(registry: &str) -> Result<FixtureSet, FixtureError> {
    let built = build_blocking(build_all).await?;
    let target = Target::new(registry, None);

    let demo_v1 = target
        .push_image("berth/demo", Some("v1"), &built.demo_v1)
        .await?;
    let demo_v2 = target
        .push_image("berth/demo", Some("v2"), &built.demo_v2)
        .await?;

    let multi_amd64 = target
        .push_image("berth/multi", None, &built.demo_v1)
        .await?;
    let multi_arm64 = target
        .push_image("berth/multi", None, &built.demo_arm64)
        .await?;
    let multi_index = target
        .push_image("berth/multi", Some("latest"), &built.multi_index)
        .await?;
    let multi = Pushed {
        reference: multi_index.reference,
        digest: multi_amd64.digest,
        index_digest: Some(multi_index.digest),
    };

    Ok(FixtureSet {
        demo_v1,
        demo_v2,
        multi,
        multi_arm64_digest: multi_arm64.digest,
        arm64_only: target
            .push_image("berth/arm64-only", Some("latest"), &built.demo_arm64)
            .await?,
        unhealthy: target
            .push_image("berth/unhealthy", Some("latest"), &built.unhealthy)
            .await?,
        crash: target
            .push_image("berth/crash", Some("latest"), &built.crash)
            .await?,
        huge: target
            .push_image("berth/huge", Some("latest"), &built.huge)
            .await?,
        ingress: push_ingress(registry).await?,
    })
}

/// Push the ingress image, `berth/ingress:local`: Debian's `haproxy`,
/// `caddy` and `bash` with the shared libraries `ldd` names, busybox for
/// `sh`, `kill` and `timeout`, and the environment of the official images
/// (`XDG_CONFIG_HOME=/config`, `XDG_DATA_HOME=/data`). It has no command of
/// its own: Berth always gives one. Idempotent.
pub async fn push_ingress(registry: &str) -> Result<Pushed, FixtureError> {
    let image = build_blocking(ingress_image).await?;
    Target::new(registry, None)
        .push_image(INGRESS_REPOSITORY, Some(INGRESS_TAG), &image)
        .await
}

// ------------------------------------------------------------------ content

#[derive(Clone, Copy)]
enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    fn platform(self) -> Value {
        match self {
            Arch::Amd64 => json!({"architecture": "amd64", "os": "linux"}),
            Arch::Arm64 => json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
        }
    }
}

/// Content-addressed bytes (a layer, a config, a manifest).
struct Blob {
    media_type: &'static str,
    data: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        let digest = sha256_digest(&data);
        Blob {
            media_type,
            data,
            digest,
        }
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// A gzip-compressed tar layer and the digest of its uncompressed tar.
struct Layer {
    blob: Blob,
    diff_id: String,
}

/// A layer the manifest names by URL only; the registry never stores it.
struct ForeignLayer {
    digest: String,
    diff_id: String,
    size: u64,
    url: &'static str,
}

/// An image manifest or index ready to push: the blobs it needs first and
/// its own bytes.
struct Built {
    blobs: Vec<Arc<Layer>>,
    config: Option<Blob>,
    manifest: Blob,
}

struct BuiltAll {
    demo_v1: Built,
    demo_v2: Built,
    demo_arm64: Built,
    multi_index: Built,
    unhealthy: Built,
    crash: Built,
    huge: Built,
}

fn build_all() -> Result<BuiltAll, FixtureError> {
    let demo_v1 = demo_image("v1", Arch::Amd64)?;
    let demo_arm64 = demo_image("v1", Arch::Arm64)?;
    let multi_index = image_index(&[(&demo_v1, Arch::Amd64), (&demo_arm64, Arch::Arm64)])?;
    let base = base_layer()?;
    Ok(BuiltAll {
        demo_v2: demo_image("v2", Arch::Amd64)?,
        unhealthy: image(
            "berth unhealthy",
            Arch::Amd64,
            UNHEALTHY_COMMAND,
            true,
            vec![base.clone()],
            None,
        )?,
        crash: image(
            "berth crash",
            Arch::Amd64,
            &[
                "/bin/busybox",
                "sh",
                "-c",
                "echo 'berth crash fixture: exiting with status 3' >&2; exit 3",
            ],
            false,
            vec![base.clone()],
            None,
        )?,
        huge: image(
            "berth huge",
            Arch::Amd64,
            &demo_command(),
            true,
            vec![base, Arc::new(demo_files_layer("huge")?)],
            Some(ForeignLayer {
                digest: sha256_digest(b"berth huge fixture: compressed layer never stored"),
                diff_id: sha256_digest(b"berth huge fixture: uncompressed layer never stored"),
                size: HUGE_CLAIMED_LAYER_SIZE,
                url: "https://fixtures.berth.invalid/huge-layer.tar.gz",
            }),
        )?,
        demo_v1,
        demo_arm64,
        multi_index,
    })
}

/// `httpd -f -p 8080 -h /www`, under a shell that exits on SIGTERM: httpd
/// as PID 1 ignores SIGTERM, so `docker stop` would wait its full timeout
/// (10 s) on every stop. The shell's exit ends the container, httpd with it.
fn demo_command() -> [&'static str; 4] {
    [
        "/bin/busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM INT; /bin/busybox httpd -f -p 8080 -h /www & wait",
    ]
}

fn demo_image(version: &str, arch: Arch) -> Result<Built, FixtureError> {
    image(
        &format!("berth demo {version}"),
        arch,
        &demo_command(),
        true,
        vec![base_layer()?, Arc::new(demo_files_layer(version)?)],
        None,
    )
}

/// `/www/index.html` naming the version and `/www/healthz`.
fn demo_files_layer(version: &str) -> Result<Layer, FixtureError> {
    tar_gz_layer(vec![
        Entry::Dir("www".into()),
        Entry::File {
            path: "www/healthz".into(),
            mode: 0o644,
            data: b"ok\n".to_vec(),
        },
        Entry::File {
            path: "www/index.html".into(),
            mode: 0o644,
            data: format!("berth demo {version}\n").into_bytes(),
        },
    ])
}

/// The ingress image: a layer with the programs and their libraries on
/// top of the busybox base (with `timeout` and `mkdir` added).
fn ingress_image() -> Result<Built, FixtureError> {
    let mut files: Vec<String> = Vec::new();
    for program in INGRESS_PROGRAMS {
        files.push((*program).to_owned());
        files.extend(shared_libraries(program)?);
    }
    files.sort();
    files.dedup();
    let mut entries = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for file in &files {
        let data = std::fs::read(file).map_err(|e| FixtureError::IngressProgram {
            path: file.clone(),
            detail: e.to_string(),
        })?;
        let path = file.trim_start_matches('/').to_owned();
        let mut parent = std::path::Path::new(&path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.display().to_string());
            parent = dir.parent();
        }
        entries.push(Entry::File {
            path,
            mode: 0o755,
            data,
        });
    }
    entries.extend(dirs.into_iter().filter(|d| d != "bin").map(Entry::Dir));
    for dir in ["config", "data", "etc"] {
        entries.push(Entry::Dir(dir.into()));
    }
    entries.push(Entry::File {
        path: "etc/passwd".into(),
        mode: 0o644,
        data:
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
    });
    entries.push(Entry::File {
        path: "etc/group".into(),
        mode: 0o644,
        data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
    });
    // What Berth's commands in the ingress use (coreutils in the official
    // images).
    for applet in [
        "timeout",
        "mkdir",
        "mv",
        "cp",
        "rm",
        "head",
        "grep",
        "date",
        "sha256sum",
    ] {
        entries.push(Entry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    let programs = Arc::new(tar_gz_layer_at(entries, Compression::fast())?);
    let base = base_layer()?;
    let layers = vec![base, programs];
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = json!({
        "created": FIXED_CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "XDG_CONFIG_HOME=/config",
                "XDG_DATA_HOME=/data",
            ],
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": "berth ingress (Debian haproxy and caddy)"},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": FIXED_CREATED, "created_by": "berth devtools::fixtures"}],
    });
    let config = Blob::new(OCI_CONFIG, to_json(&config)?);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>(),
    });
    Ok(Built {
        blobs: layers,
        config: Some(config),
        manifest: Blob::new(OCI_MANIFEST, to_json(&manifest)?),
    })
}

/// The shared libraries (and the loader) `ldd` lists for `program`.
fn shared_libraries(program: &str) -> Result<Vec<String>, FixtureError> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| FixtureError::IngressProgram {
            path: program.to_owned(),
            detail: format!("ldd: {e}"),
        })?;
    if !out.status.success() {
        return Err(FixtureError::IngressProgram {
            path: program.to_owned(),
            detail: format!("ldd: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x…)`; vdso has no file.
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect())
}

/// `/bin/busybox` and its applet symlinks, built once per process (reading
/// and compressing busybox is the only slow part).
fn base_layer() -> Result<Arc<Layer>, FixtureError> {
    static BASE: OnceLock<Arc<Layer>> = OnceLock::new();
    if let Some(layer) = BASE.get() {
        return Ok(layer.clone());
    }
    let busybox = std::fs::read(BUSYBOX_PATH).map_err(|source| FixtureError::BusyboxMissing {
        path: BUSYBOX_PATH,
        source,
    })?;
    let mut entries = vec![
        Entry::Dir("bin".into()),
        Entry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            data: busybox,
        },
        Entry::Dir("tmp".into()),
    ];
    entries.extend(APPLETS.iter().map(|applet| Entry::Symlink {
        path: format!("bin/{applet}"),
        target: "busybox".into(),
    }));
    let layer = Arc::new(tar_gz_layer(entries)?);
    Ok(BASE.get_or_init(|| layer).clone())
}

fn image(
    title: &str,
    arch: Arch,
    cmd: &[&str],
    expose_demo_port: bool,
    layers: Vec<Arc<Layer>>,
    foreign: Option<ForeignLayer>,
) -> Result<Built, FixtureError> {
    let mut diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let mut layer_descriptors: Vec<Value> = layers.iter().map(|l| l.blob.descriptor()).collect();
    if let Some(foreign) = &foreign {
        diff_ids.push(&foreign.diff_id);
        layer_descriptors.push(json!({
            "mediaType": OCI_LAYER_FOREIGN_GZIP,
            "digest": foreign.digest,
            "size": foreign.size,
            "urls": [foreign.url],
        }));
    }

    let mut container = json!({
        "Cmd": cmd,
        "Env": ["PATH=/bin"],
        "WorkingDir": "/",
        "Labels": {"org.opencontainers.image.title": title},
    });
    if expose_demo_port {
        container["ExposedPorts"] = json!({ format!("{DEMO_PORT}/tcp"): {} });
    }
    let mut config = json!({
        "created": FIXED_CREATED,
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": FIXED_CREATED, "created_by": "berth devtools::fixtures"}],
    });
    let platform = arch.platform();
    if let (Value::Object(config), Value::Object(platform)) = (&mut config, platform) {
        config.extend(platform);
    }
    let config = Blob::new(OCI_CONFIG, to_json(&config)?);

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layer_descriptors,
    });
    Ok(Built {
        blobs: layers,
        config: Some(config),
        manifest: Blob::new(OCI_MANIFEST, to_json(&manifest)?),
    })
}

fn image_index(images: &[(&Built, Arch)]) -> Result<Built, FixtureError> {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(image, arch)| {
            let mut descriptor = image.manifest.descriptor();
            descriptor["platform"] = arch.platform();
            descriptor
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    Ok(Built {
        blobs: Vec::new(),
        config: None,
        manifest: Blob::new(OCI_INDEX, to_json(&index)?),
    })
}

enum Entry {
    Dir(String),
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir(path) => path,
            Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

/// A deterministic tar (sorted entries, fixed mtime, root-owned) and its
/// deterministic gzip (no name, no timestamp).
fn tar_gz_layer(entries: Vec<Entry>) -> Result<Layer, FixtureError> {
    tar_gz_layer_at(entries, Compression::default())
}

/// [`tar_gz_layer`] at another compression level (the ingress image's
/// programs are tens of MB: fast compression builds it in seconds).
fn tar_gz_layer_at(mut entries: Vec<Entry>, level: Compression) -> Result<Layer, FixtureError> {
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    let mut tar = tar::Builder::new(Vec::new());
    for entry in &entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(FIXED_EPOCH);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())
            }
            Entry::File { path, mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, path, data.as_slice())
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, path, target)
            }
        }
        .map_err(FixtureError::Layer)?;
    }
    let tar = tar.into_inner().map_err(FixtureError::Layer)?;
    let diff_id = sha256_digest(&tar);

    let mut gz = GzBuilder::new().mtime(0).write(Vec::new(), level);
    std::io::Write::write_all(&mut gz, &tar).map_err(FixtureError::Layer)?;
    let compressed = gz.finish().map_err(FixtureError::Layer)?;
    Ok(Layer {
        blob: Blob::new(OCI_LAYER_GZIP, compressed),
        diff_id,
    })
}

fn to_json(value: &Value) -> Result<Vec<u8>, FixtureError> {
    serde_json::to_vec(value).map_err(FixtureError::Json)
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Building compresses megabytes; keep it off the async worker threads.
async fn build_blocking<T: Send + 'static>(
    build: impl FnOnce() -> Result<T, FixtureError> + Send + 'static,
) -> Result<T, FixtureError> {
    tokio::task::spawn_blocking(build)
        .await
        .map_err(|e| FixtureError::Task(e.to_string()))?
}

// ------------------------------------------------------------------ pushing

struct Target {
    client: Client,
    registry: String,
    auth: RegistryAuth,
}

impl Target {
    fn new(registry: &str, auth: Option<(&str, &str)>) -> Self {
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let auth = match auth {
            Some((user, password)) => RegistryAuth::Basic(user.to_string(), password.to_string()),
            None => RegistryAuth::Anonymous,
        };
        Target {
            client,
            registry: registry.to_string(),
            auth,
        }
    }

    /// Push `image` as `repository:tag`, or by digest only when `tag` is
    /// `None` (the platform manifests of an index). Blobs the repository
    /// already has are not sent again; a tag already at the expected digest
    /// is left alone. Returns the digest the registry reports afterwards.
    async fn push_image(
        &self,
        repository: &str,
        tag: Option<&str>,
        image: &Built,
    ) -> Result<Pushed, FixtureError> {
        let expected = &image.manifest.digest;
        let reference = match tag {
            Some(tag) => format!("{}/{repository}:{tag}", self.registry),
            None => format!("{}/{repository}@{expected}", self.registry),
        };
        let parsed: Reference = reference
            .parse()
            .map_err(|source| FixtureError::Reference {
                reference: reference.clone(),
                source,
            })?;
        let registry_error = |action: &'static str| {
            let reference = reference.clone();
            move |source| FixtureError::Registry {
                action,
                reference,
                source,
            }
        };

        // Fast path: the tag already points at this content.
        let current = self.client.fetch_manifest_digest(&parsed, &self.auth).await;
        if current.as_ref().is_ok_and(|digest| digest == expected) {
            return Ok(Pushed {
                reference,
                digest: expected.clone(),
                index_digest: None,
            });
        }

        let blobs = image
            .blobs
            .iter()
            .map(|layer| &layer.blob)
            .chain(image.config.as_ref());
        for blob in blobs {
            let present = self
                .client
                .blob_exists(&parsed, &blob.digest)
                .await
                .map_err(registry_error("checking a blob of"))?;
            if !present {
                self.client
                    .push_blob(&parsed, blob.data.clone(), &blob.digest)
                    .await
                    .map_err(registry_error("pushing a blob of"))?;
            }
        }

        let content_type = image
            .manifest
            .media_type
            .parse()
            .map_err(|_| FixtureError::MediaType(image.manifest.media_type))?;
        self.client
            .push_manifest_raw(&parsed, image.manifest.data.clone(), content_type)
            .await
            .map_err(registry_error("pushing the manifest of"))?;

        let actual = self
            .client
            .fetch_manifest_digest(&parsed, &self.auth)
            .await
            .map_err(registry_error("reading back the digest of"))?;
        if &actual != expected {
            return Err(FixtureError::DigestMismatch {
                reference,
                expected: expected.clone(),
                actual,
            });
        }
        Ok(Pushed {
            reference,
            digest: actual,
            index_digest: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_deterministic() {
        let a = demo_files_layer("v1").unwrap();
        let b = demo_files_layer("v1").unwrap();
        assert_eq!(a.blob.digest, b.blob.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(a.blob.digest, demo_files_layer("v2").unwrap().blob.digest);
    }

    #[test]
    fn demo_layer_has_the_page_and_healthz() {
        let layer = demo_files_layer("v7").unwrap();
        let tar = flate2::read::GzDecoder::new(layer.blob.data.as_slice());
        let mut archive = tar::Archive::new(tar);
        let mut files = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
            assert_eq!(entry.header().mtime().unwrap(), FIXED_EPOCH);
            assert_eq!(entry.header().uid().unwrap(), 0);
            files.push((path, body));
        }
        assert_eq!(
            files,
            vec![
                ("www/".to_string(), String::new()),
                ("www/healthz".to_string(), "ok\n".to_string()),
                ("www/index.html".to_string(), "berth demo v7\n".to_string()),
            ]
        );
    }

    #[test]
    fn index_lists_both_platforms() {
        let amd64 = image("t", Arch::Amd64, &["x"], false, Vec::new(), None).unwrap();
        let arm64 = image("t", Arch::Arm64, &["x"], false, Vec::new(), None).unwrap();
        let index = image_index(&[(&amd64, Arch::Amd64), (&arm64, Arch::Arm64)]).unwrap();
        let index: Value = serde_json::from_slice(&index.manifest.data).unwrap();
        assert_eq!(index["manifests"][0]["digest"], amd64.manifest.digest);
        assert_eq!(index["manifests"][1]["platform"]["architecture"], "arm64");
        let config: Value = serde_json::from_slice(&arm64.config.unwrap().data).unwrap();
        assert_eq!(config["architecture"], "arm64");
    }
}
