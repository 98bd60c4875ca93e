//! The container labels Berth owns. Every key lives under `io.berth.`; code
//! anywhere else refers to these constants, never to the strings. Labels on
//! the hosts are the source of truth for what runs: drift is judged by
//! comparing them with the desired state, never by comparing inspected
//! container fields with configuration.

/// Prefix of every label Berth writes.
pub const PREFIX: &str = "io.berth.";
/// Present (value `true`) on everything Berth manages; the one label the
/// per-host list call filters on. Nothing without it is ever touched.
pub const MANAGED: &str = "io.berth.managed";
/// The app a container belongs to: `docker ps --filter label=io.berth.app=NAME`.
pub const APP: &str = "io.berth.app";
/// The service or worker name within the app (`web`, `queue`).
pub const COMPONENT: &str = "io.berth.component";
/// `service`, `worker`, `job` (a pre-deploy run), `ingress` (the host's
/// proxy) or `ingress-tls` (its HTTPS front for domains).
pub const KIND: &str = "io.berth.kind";
/// On job containers: the job's name (`report`, or `pre-deploy`,
/// `post-deploy`, `failed-deploy` for the deploy's own).
pub const JOB: &str = "io.berth.job";
/// On job containers: the run's id in the job runs journal.
pub const RUN: &str = "io.berth.run";
/// Instance slot within the component, `0`-based.
pub const SLOT: &str = "io.berth.slot";
/// Release id the container was started for.
pub const RELEASE: &str = "io.berth.release";
/// The linux/amd64 manifest digest it runs.
pub const DIGEST: &str = "io.berth.digest";
/// Hash of the component's desired spec (image aside) it was created from.
pub const SPEC_HASH: &str = "io.berth.spec-hash";
/// Name of the configured Docker host it was placed on.
pub const HOST: &str = "io.berth.host";
/// On Berth's network: the subnet it was created with (instances get
/// fixed addresses from its upper half).
pub const SUBNET: &str = "io.berth.subnet";
/// On the ingress containers: the image reference they were configured
/// with (the digest they run is in [`DIGEST`]).
pub const IMAGE_REF: &str = "io.berth.image-ref";
/// Set on containers and networks created by Berth's own tests.
pub const TEST: &str = "io.berth.test";
/// On a Swarm service: the fingerprint of the spec Berth wrote (image,
/// command, env, limits), to see changes made by hand.
pub const SWARM_SPEC: &str = "io.berth.swarm-spec";

/// The value of [`MANAGED`].
pub const MANAGED_VALUE: &str = "true";

/// Values of [`KIND`].
pub mod kind {
    pub const SERVICE: &str = "service";
    pub const WORKER: &str = "worker";
    pub const JOB: &str = "job";
    pub const INGRESS: &str = "ingress";
    pub const INGRESS_TLS: &str = "ingress-tls";
}
