//! The desired state of one app: `AppSpec`, shared by both front ends (the
//! `berth_app` resource and the `berth` command's app spec file, whose JSON
//! Schema is generated from these types). Validation here is pure and every
//! error names the field and how to fix it.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::reference::Reference;

fn default_true() -> bool {
    true
}
fn default_port() -> u16 {
    8080
}
fn default_instances() -> u32 {
    1
}
/// How long in-flight requests to an old instance may run by default
/// after traffic has moved (the ingress' drain).
pub const DEFAULT_DRAIN_SECONDS: u32 = 30;
fn default_drain_seconds() -> u32 {
    DEFAULT_DRAIN_SECONDS
}
fn is_default_drain(v: &u32) -> bool {
    *v == DEFAULT_DRAIN_SECONDS
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// One app: an image, its services and workers.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// App name: lowercase letters, digits and dashes; names containers.
    pub name: String,
    /// Image reference: a tag or a digest.
    pub image: String,
    /// Re-resolve the tag on every plan (true) or keep the digest found at
    /// create until the image is changed on purpose (false).
    #[serde(default = "default_true")]
    pub track_tag: bool,
    /// Registry credential to pull with (id of a `berth_registry_credential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_credential_id: Option<String>,
    /// Environment for every component.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret environment for every component; never printed.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Bump to roll out changed write-only secrets (terraform's
    /// `secret_env_wo`); part of the release identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env_version: Option<i64>,
    /// Write-only secrets (terraform's `secret_env_wo`): they reach the
    /// containers but never state, files or the spec hash; only
    /// `secret_env_version` identifies them.
    #[serde(skip)]
    #[schemars(skip)]
    pub secret_env_wo: BTreeMap<String, String>,
    /// Command run once per release from the new image with the new env,
    /// before any traffic moves; a non-zero exit aborts the deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_deploy_command: Option<String>,
    /// Command run once after a new release serves (all traffic moved),
    /// from the new image; a failure is reported, the release stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_deploy_command: Option<String>,
    /// Command run after a deploy failed and was rolled back, from the
    /// image that failed, with the reason in `BERTH_DEPLOY_ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_deploy_command: Option<String>,
    /// Web services by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSpec>,
    /// Background workers by name.
    #[serde(default)]
    pub workers: BTreeMap<String, WorkerSpec>,
    /// Jobs by name: run from the app's current release on a schedule
    /// (by `berth serve`) or on demand (`berth run`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, JobSpec>,
    /// The `berth` command only: the ingress settings of the host (the
    /// provider sets them in its `ingress` block). Not part of the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<crate::ingress::IngressSettings>,
    /// The `berth` command only: how apps run on the Docker host
    /// (`DOCKER_HOST`): `containers` (the default) or `swarm` (the host is
    /// a Swarm manager; each component becomes a Swarm service). The
    /// provider sets it per host (`hosts[NAME].mode`). Not part of the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mode: Option<crate::docker::HostMode>,
}

impl fmt::Debug for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("track_tag", &self.track_tag)
            .field("registry_credential_id", &self.registry_credential_id)
            .field("env", &self.env)
            .field("secret_env", &self.secret_env.keys().collect::<Vec<_>>())
            .field(
                "secret_env_wo",
                &self.secret_env_wo.keys().collect::<Vec<_>>(),
            )
            .field("pre_deploy_command", &self.pre_deploy_command)
            .field("post_deploy_command", &self.post_deploy_command)
            .field("failed_deploy_command", &self.failed_deploy_command)
            .field("services", &self.services)
            .field("workers", &self.workers)
            .field("jobs", &self.jobs)
            .field("ingress", &self.ingress)
            .finish()
    }
}

/// A web service: instances answering HTTP on `http_port`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Overrides the image's command (split like a shell would, no shell run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Container port the service listens on.
    #[serde(default = "default_port")]
    pub http_port: u16,
    /// Number of instances.
    #[serde(default = "default_instances")]
    pub instances: u32,
    #[serde(default)]
    pub health_check: HealthCheck,
    /// CPU limit in cores (e.g. 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Environment for this service; overrides the app's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The service answers on this port of each host's publish address,
    /// through the ingress, whatever the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
    /// Host names the service answers for on the ingress' HTTP(S) ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Path prefixes routed to this service on its `public_port` and
    /// `domains` (default `/`); the longest prefix wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Remove the matched route prefix before the request reaches the
    /// service (`/api/x` arrives as `/x`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub strip_route_prefix: bool,
    /// Seconds in-flight requests to an old instance may run after traffic
    /// has moved to the new ones.
    #[serde(
        default = "default_drain_seconds",
        skip_serializing_if = "is_default_drain"
    )]
    pub drain_seconds: u32,
}

impl ServiceSpec {
    /// How the service is reached through the ingress, when it is.
    pub fn exposure(&self) -> Option<crate::ingress::Exposure> {
        let exposure = crate::ingress::Exposure {
            public_port: self.public_port,
            domains: self.domains.clone(),
            routes: if self.routes.is_empty() {
                vec!["/".to_owned()]
            } else {
                self.routes.clone()
            },
            strip_prefix: self.strip_route_prefix,
            drain_seconds: self.drain_seconds,
            health_path: self.health_check.path.clone(),
            http_port: self.http_port,
        };
        exposure.is_exposed().then_some(exposure)
    }
}

/// A background process: healthy while running and not restarting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default = "default_instances")]
    pub instances: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A job: a command run to completion from the app's current release,
/// with the app's env and secrets, on a schedule or on demand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The command (split like a shell would, no shell run).
    pub command: String,
    /// Cron schedule: five fields, six with leading seconds, or
    /// `@hourly`-style; unset, the job runs only on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone of `schedule`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Seconds a run may take before it is stopped.
    #[serde(default = "default_job_timeout")]
    pub timeout_seconds: u64,
    /// `forbid` (skip a run while the last one runs), `allow` or `replace`
    /// (stop the last one).
    #[serde(default)]
    pub concurrency: Concurrency,
    /// A run missed by at most this many seconds (e.g. `berth serve` was
    /// down) runs late, once; older ones are recorded as missed.
    #[serde(default = "default_starting_deadline")]
    pub starting_deadline_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Environment for this job; overrides the app's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// What a scheduled run does while the job's last run still runs
/// (Kubernetes CronJob's `concurrencyPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Skip the new run (recorded as skipped).
    #[default]
    Forbid,
    /// Run both.
    Allow,
    /// Stop the running one, then run.
    Replace,
}

impl Concurrency {
    pub fn parse(s: &str) -> Option<Concurrency> {
        match s {
            "forbid" => Some(Concurrency::Forbid),
            "allow" => Some(Concurrency::Allow),
            "replace" => Some(Concurrency::Replace),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
            Concurrency::Replace => "replace",
        }
    }
}

pub const DEFAULT_JOB_TIMEOUT: u64 = 3600;
pub const DEFAULT_STARTING_DEADLINE: u64 = 60;

fn default_time_zone() -> String {
    "UTC".to_owned()
}

fn default_job_timeout() -> u64 {
    DEFAULT_JOB_TIMEOUT
}

fn default_starting_deadline() -> u64 {
    DEFAULT_STARTING_DEADLINE
}

impl JobSpec {
    /// The parsed schedule, if it has one.
    pub fn parsed_schedule(
        &self,
    ) -> Option<Result<super::schedule::Schedule, super::schedule::ScheduleError>> {
        self.schedule
            .as_deref()
            .map(|s| super::schedule::Schedule::parse(s, &self.time_zone))
    }
}

/// How a new service instance is judged healthy, probed from outside the
/// container (no curl or HEALTHCHECK needed in the image).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// HTTP path probed; any 2xx or 3xx answer is healthy.
    pub path: String,
    /// Seconds between probes while an instance starts (sub-second allowed).
    pub interval_seconds: f64,
    /// Seconds one probe may take.
    pub timeout_seconds: f64,
    /// Consecutive successes needed.
    pub healthy_threshold: u32,
    /// Consecutive failures, after the start period, that fail the deploy.
    pub unhealthy_threshold: u32,
    /// Seconds a new instance gets to become healthy.
    pub start_period_seconds: f64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/".into(),
            interval_seconds: 0.25,
            timeout_seconds: 2.0,
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            start_period_seconds: 30.0,
        }
    }
}

/// Service or worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    Worker,
}

impl Kind {
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Service => crate::labels::kind::SERVICE,
            Kind::Worker => crate::labels::kind::WORKER,
        }
    }
}

/// A component as the engine runs it: kind, command, port, env, limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub name: String,
    pub kind: Kind,
    pub command: Option<Vec<String>>,
    pub http_port: Option<u16>,
    pub instances: u32,
    pub health_check: Option<HealthCheck>,
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    /// App env, then secret env, then component env (later wins).
    pub env: BTreeMap<String, String>,
    /// Hash of everything that makes a release differ, except the image
    /// and the instance count.
    pub spec_hash: String,
    /// How a service is reached through the ingress (not part of
    /// `spec_hash`: changing it reconfigures the ingress, no new release).
    pub exposure: Option<crate::ingress::Exposure>,
}

/// A validation failure: the field path and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn spec_err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// Name rule for apps, services and workers (they name containers).
pub fn check_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid name: use 1 to 40 lowercase letters, digits and dashes, not starting or ending with a dash (e.g. \"shop-web\")"
        ))
    }
}

fn check_env_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a valid environment variable name: use letters, digits and underscores, not starting with a digit"
        ))
    }
}

/// Splits a command line into argv like a shell would, without a shell.
pub fn split_command(field: &str, cmd: &str) -> Result<Vec<String>, SpecError> {
    let argv = shell_words::split(cmd).map_err(|e| {
        spec_err(
            field,
            format!("cannot split {cmd:?} into arguments: {e} (check the quotes)"),
        )
    })?;
    if argv.is_empty() {
        return Err(spec_err(
            field,
            "is empty: give a command, or leave it unset to use the image's",
        ));
    }
    Ok(argv)
}

impl AppSpec {
    /// Every problem with the spec, each naming its field.
    pub fn validate(&self) -> Vec<SpecError> {
        let mut errs = Vec::new();
        if let Err(m) = check_name(&self.name) {
            errs.push(spec_err("name", m));
        }
        if let Err(e) = Reference::parse(&self.image) {
            errs.push(spec_err("image", e.to_string()));
        }
        for (field, env) in [
            ("env", &self.env),
            ("secret_env", &self.secret_env),
            ("secret_env_wo", &self.secret_env_wo),
        ] {
            for key in env.keys() {
                if let Err(m) = check_env_key(key) {
                    errs.push(spec_err(format!("{field}[{key:?}]"), m));
                }
            }
        }
        for key in self.secret_env_wo.keys() {
            if self.secret_env.contains_key(key) {
                errs.push(spec_err(
                    format!("secret_env_wo[{key:?}]"),
                    format!(
                        "{key} is set in both secret_env and secret_env_wo: keep it in one of them (secret_env_wo keeps it out of Terraform's state)"
                    ),
                ));
            }
            if self.env.contains_key(key) {
                errs.push(spec_err(
                    format!("secret_env_wo[{key:?}]"),
                    format!(
                        "{key} is set in both env and secret_env_wo: a secret belongs in one place"
                    ),
                ));
            }
        }
        for key in self.secret_env.keys() {
            if self.env.contains_key(key) {
                errs.push(spec_err(
                    format!("secret_env[{key:?}]"),
                    format!(
                        "{key} is set in both env and secret_env: a secret belongs in one place"
                    ),
                ));
            }
        }
        for (field, cmd) in [
            ("pre_deploy_command", &self.pre_deploy_command),
            ("post_deploy_command", &self.post_deploy_command),
            ("failed_deploy_command", &self.failed_deploy_command),
        ] {
            if let Some(cmd) = cmd {
                if let Err(e) = split_command(field, cmd) {
                    errs.push(e);
                }
            }
        }
        errs.extend(self.check_jobs());
        if self.services.is_empty() && self.workers.is_empty() {
            errs.push(spec_err(
                "services",
                "the app has no services and no workers: add at least one (e.g. a service \"web\" with http_port = 8080)",
            ));
        }
        for (name, s) in &self.services {
            let field = format!("services[{name:?}]");
            if let Err(m) = check_name(name) {
                errs.push(spec_err(&field, m));
            }
            if s.http_port == 0 {
                errs.push(spec_err(
                    format!("{field}.http_port"),
                    "must be between 1 and 65535",
                ));
            }
            let hc = &s.health_check;
            if !hc.path.starts_with('/') {
                errs.push(spec_err(
                    format!("{field}.health_check.path"),
                    format!("{:?} must start with \"/\"", hc.path),
                ));
            }
            for (n, v, min) in [
                ("interval_seconds", hc.interval_seconds, 0.05),
                ("timeout_seconds", hc.timeout_seconds, 0.05),
                ("start_period_seconds", hc.start_period_seconds, 0.1),
            ] {
                if !(v >= min && v <= 3600.0) {
                    errs.push(spec_err(
                        format!("{field}.health_check.{n}"),
                        format!("{v} is out of range: use {min} to 3600 seconds"),
                    ));
                }
            }
            for (n, v) in [
                ("healthy_threshold", hc.healthy_threshold),
                ("unhealthy_threshold", hc.unhealthy_threshold),
            ] {
                if v == 0 {
                    errs.push(spec_err(
                        format!("{field}.health_check.{n}"),
                        "must be at least 1 (probes in a row)",
                    ));
                }
            }
            errs.extend(check_common(
                &field,
                s.command.as_deref(),
                s.instances,
                s.cpus,
                s.memory_mb,
                &s.env,
            ));
            errs.extend(check_exposure(&field, s));
        }
        errs.extend(check_shared_listeners(&self.services));
        if let Some(ingress) = &self.ingress {
            for (f, m) in ingress.validate() {
                errs.push(spec_err(format!("ingress.{f}"), m));
            }
        }
        for (name, w) in &self.workers {
            let field = format!("workers[{name:?}]");
            if let Err(m) = check_name(name) {
                errs.push(spec_err(&field, m));
            }
            if self.services.contains_key(name) {
                errs.push(spec_err(
                    &field,
                    format!("services[{name:?}] has the same name: service and worker names must differ (components reach each other by name)"),
                ));
            }
            errs.extend(check_common(
                &field,
                w.command.as_deref(),
                w.instances,
                w.cpus,
                w.memory_mb,
                &w.env,
            ));
        }
        errs
    }

    fn check_jobs(&self) -> Vec<SpecError> {
        let mut errs = Vec::new();
        for (name, j) in &self.jobs {
            let field = format!("jobs[{name:?}]");
            if let Err(m) = check_name(name) {
                errs.push(spec_err(&field, m));
            }
            for (kind, taken) in [
                ("services", self.services.contains_key(name)),
                ("workers", self.workers.contains_key(name)),
            ] {
                if taken {
                    errs.push(spec_err(
                        &field,
                        format!("{kind}[{name:?}] has the same name: job names must differ from service and worker names (they name containers)"),
                    ));
                }
            }
            if name == "pre-deploy" || name == "post-deploy" || name == "failed-deploy" {
                errs.push(spec_err(
                    &field,
                    format!("{name:?} is the name of Berth's own deploy job: choose another"),
                ));
            }
            if let Err(e) = split_command(&format!("{field}.command"), &j.command) {
                errs.push(e);
            }
            if j.time_zone.parse::<chrono_tz::Tz>().is_err() {
                errs.push(spec_err(
                    format!("{field}.time_zone"),
                    super::schedule::ScheduleError::TimeZone(j.time_zone.clone()).to_string(),
                ));
            } else if let Some(Err(e)) = j.parsed_schedule() {
                errs.push(spec_err(format!("{field}.schedule"), e.to_string()));
            }
            if j.timeout_seconds == 0 || j.timeout_seconds > 7 * 24 * 3600 {
                errs.push(spec_err(
                    format!("{field}.timeout_seconds"),
                    format!(
                        "{} is out of range: use 1 to 604800 seconds (a week)",
                        j.timeout_seconds
                    ),
                ));
            }
            if j.starting_deadline_seconds > 7 * 24 * 3600 {
                errs.push(spec_err(
                    format!("{field}.starting_deadline_seconds"),
                    "is more than a week: use 0 to 604800 seconds",
                ));
            }
            errs.extend(check_common(&field, None, 1, j.cpus, j.memory_mb, &j.env));
        }
        errs
    }

    /// Warnings about valid jobs that are probably not what was meant (a
    /// schedule that runs every minute), with their next three runs.
    pub fn job_warnings(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<SpecError> {
        let mut out = Vec::new();
        for (name, j) in &self.jobs {
            let Some(Ok(schedule)) = j.parsed_schedule() else {
                continue;
            };
            if let Some(why) = schedule.surprise() {
                let next: Vec<String> = schedule
                    .upcoming(now, 3)
                    .iter()
                    .map(|t| {
                        t.with_timezone(&schedule.time_zone())
                            .format("%Y-%m-%d %H:%M:%S %Z")
                            .to_string()
                    })
                    .collect();
                out.push(spec_err(
                    format!("jobs[{name:?}].schedule"),
                    format!(
                        "{:?} {why}: the next runs are {}. If that is what you meant, ignore this warning.",
                        schedule.text(),
                        next.join(", ")
                    ),
                ));
            }
        }
        out
    }

    /// The environment of a job (or a deploy job when `job` is `None`):
    /// the app's env, secrets, then the job's own.
    pub fn job_env(&self, job: Option<&JobSpec>) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.extend(self.secret_env.clone());
        env.extend(self.secret_env_wo.clone());
        if let Some(j) = job {
            env.extend(j.env.clone());
        }
        env
    }

    /// The components with merged env and spec hashes. Call on a valid spec.
    pub fn components(&self) -> Result<Vec<Component>, SpecError> {
        let mut out = Vec::new();
        for (name, s) in &self.services {
            let field = format!("services[{name:?}].command");
            let mut component = self.component(
                name,
                Kind::Service,
                s.command
                    .as_deref()
                    .map(|c| split_command(&field, c))
                    .transpose()?,
                Some(s.http_port),
                s.instances,
                Some(s.health_check.clone()),
                s.cpus,
                s.memory_mb,
                &s.env,
            );
            component.exposure = s.exposure();
            out.push(component);
        }
        for (name, w) in &self.workers {
            let field = format!("workers[{name:?}].command");
            out.push(
                self.component(
                    name,
                    Kind::Worker,
                    w.command
                        .as_deref()
                        .map(|c| split_command(&field, c))
                        .transpose()?,
                    None,
                    w.instances,
                    None,
                    w.cpus,
                    w.memory_mb,
                    &w.env,
                ),
            );
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn component(
        &self,
        name: &str,
        kind: Kind,
        command: Option<Vec<String>>,
        http_port: Option<u16>,
        instances: u32,
        health_check: Option<HealthCheck>,
        cpus: Option<f64>,
        memory_mb: Option<u64>,
        own_env: &BTreeMap<String, String>,
    ) -> Component {
        // Identity: everything but write-only secrets (only their version),
        // so a refresh, which cannot see them, agrees with apply.
        let mut hashed_env = self.env.clone();
        hashed_env.extend(self.secret_env.clone());
        hashed_env.extend(own_env.clone());
        let identity = serde_json::json!({
            "kind": kind.label(),
            "command": command,
            "http_port": http_port,
            "health_check": health_check,
            "cpus": cpus,
            "memory_mb": memory_mb,
            "env": hashed_env,
            "secret_env_version": self.secret_env_version,
            "pre_deploy_command": self.pre_deploy_command,
        });
        let spec_hash = hex::encode(&Sha256::digest(identity.to_string().as_bytes())[..8]);
        let mut env = self.env.clone();
        env.extend(self.secret_env.clone());
        env.extend(self.secret_env_wo.clone());
        env.extend(own_env.clone());
        Component {
            name: name.to_string(),
            kind,
            command,
            http_port,
            instances,
            health_check,
            cpus,
            memory_mb,
            env,
            spec_hash,
            exposure: None,
        }
    }
}

/// `public_port`, `domains`, `routes` and `drain_seconds` of one service.
fn check_exposure(field: &str, s: &ServiceSpec) -> Vec<SpecError> {
    let mut errs = Vec::new();
    if s.public_port == Some(0) {
        errs.push(spec_err(
            format!("{field}.public_port"),
            "0 is not a port: use 1 to 65535",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in s.domains.iter().enumerate() {
        if let Err(m) = crate::ingress::check_domain(d) {
            errs.push(spec_err(format!("{field}.domains[{i}]"), m));
        } else if !seen.insert(d) {
            errs.push(spec_err(
                format!("{field}.domains[{i}]"),
                format!("{d:?} is listed twice"),
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in s.routes.iter().enumerate() {
        if let Err(m) = crate::ingress::check_route(r) {
            errs.push(spec_err(format!("{field}.routes[{i}]"), m));
        } else if !seen.insert(r) {
            errs.push(spec_err(
                format!("{field}.routes[{i}]"),
                format!("{r:?} is listed twice"),
            ));
        }
    }
    if !s.routes.is_empty() && s.public_port.is_none() && s.domains.is_empty() {
        errs.push(spec_err(
            format!("{field}.routes"),
            "routes apply to the service's public_port and domains, and it has neither: set one, or remove routes",
        ));
    }
    if s.strip_route_prefix && s.routes.iter().all(|r| r == "/") {
        errs.push(spec_err(
            format!("{field}.strip_route_prefix"),
            "there is no route prefix to strip: set routes (e.g. [\"/api\"]), or remove strip_route_prefix",
        ));
    }
    if s.drain_seconds > 3600 {
        errs.push(spec_err(
            format!("{field}.drain_seconds"),
            format!("{} is out of range: use 0 to 3600 seconds", s.drain_seconds),
        ));
    }
    errs
}

/// Two services of one app may share a public port or a domain only with
/// different route prefixes.
fn check_shared_listeners(services: &BTreeMap<String, ServiceSpec>) -> Vec<SpecError> {
    let mut errs = Vec::new();
    let mut claimed: BTreeMap<(String, String), &str> = BTreeMap::new();
    for (name, s) in services {
        let Some(exposure) = s.exposure() else {
            continue;
        };
        let listeners = s
            .public_port
            .map(|p| (format!("port {p}"), "public_port".to_owned()))
            .into_iter()
            .chain(
                s.domains
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (format!("{d:?}"), format!("domains[{i}]"))),
            );
        for (listener, attr) in listeners {
            for route in &exposure.routes {
                match claimed.get(&(listener.clone(), route.clone())) {
                    Some(other) => errs.push(spec_err(
                        format!("services[{name:?}].{attr}"),
                        format!(
                            "{listener} with route {route:?} is also service {other:?}'s: services sharing a port or domain need different routes"
                        ),
                    )),
                    None => {
                        claimed.insert((listener.clone(), route.clone()), name);
                    }
                }
            }
        }
    }
    errs
}

fn check_common(
    field: &str,
    command: Option<&str>,
    instances: u32,
    cpus: Option<f64>,
    memory_mb: Option<u64>,
    env: &BTreeMap<String, String>,
) -> Vec<SpecError> {
    let mut errs = Vec::new();
    if let Some(cmd) = command {
        if let Err(e) = split_command(&format!("{field}.command"), cmd) {
            errs.push(e);
        }
    }
    if instances > 100 {
        errs.push(spec_err(
            format!("{field}.instances"),
            format!("{instances} is more than 100 instances; use 0 to 100"),
        ));
    }
    if let Some(c) = cpus {
        if !(c > 0.0 && c <= 256.0) {
            errs.push(spec_err(
                format!("{field}.cpus"),
                format!("{c} is out of range: use a number of cores above 0, e.g. 0.5"),
            ));
        }
    }
    if let Some(m) = memory_mb {
        if m < 6 {
            errs.push(spec_err(
                format!("{field}.memory_mb"),
                format!("{m} MiB is below Docker's minimum of 6 MiB"),
            ));
        }
    }
    for key in env.keys() {
        if let Err(m) = check_env_key(key) {
            errs.push(spec_err(format!("{field}.env[{key:?}]"), m));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> AppSpec {
        serde_json::from_value(serde_json::json!({
            "name": "shop",
            "image": "127.0.0.1:5000/berth/demo:v1",
            "env": {"A": "1", "B": "app"},
            "secret_env": {"TOKEN": "s3cret"},
            "services": {"web": {"instances": 2, "env": {"B": "web"}}},
            "workers": {"queue": {"command": "sleep 1000"}}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_and_merged_env() {
        let spec = sample();
        assert!(spec.validate().is_empty(), "{:?}", spec.validate());
        assert!(spec.track_tag);
        let comps = spec.components().unwrap();
        let web = comps.iter().find(|c| c.name == "web").unwrap();
        assert_eq!(web.http_port, Some(8080));
        assert_eq!(web.instances, 2);
        assert_eq!(web.env["B"], "web", "component env wins");
        assert_eq!(web.env["TOKEN"], "s3cret");
        let q = comps.iter().find(|c| c.name == "queue").unwrap();
        assert_eq!(
            q.command.as_deref(),
            Some(&["sleep".to_string(), "1000".into()][..])
        );
        assert_eq!(q.http_port, None);
    }

    #[test]
    fn instances_do_not_change_the_spec_hash_but_env_does() {
        let a = sample();
        let mut b = sample();
        b.services.get_mut("web").unwrap().instances = 5;
        let h = |s: &AppSpec| s.components().unwrap()[1].spec_hash.clone();
        assert_eq!(h(&a), h(&b));
        b.env.insert("A".into(), "2".into());
        assert_ne!(h(&a), h(&b));
    }

    #[test]
    fn errors_name_their_fields() {
        let mut s = sample();
        s.name = "Shop".into();
        s.services.get_mut("web").unwrap().health_check.path = "healthz".into();
        s.workers.get_mut("queue").unwrap().memory_mb = Some(1);
        s.env.insert("1BAD".into(), "x".into());
        let fields: Vec<String> = s.validate().into_iter().map(|e| e.field).collect();
        assert!(fields.contains(&"name".to_string()), "{fields:?}");
        assert!(
            fields.contains(&"services[\"web\"].health_check.path".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"workers[\"queue\"].memory_mb".to_string()),
            "{fields:?}"
        );
        assert!(fields.contains(&"env[\"1BAD\"]".to_string()), "{fields:?}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<AppSpec, _> = serde_json::from_value(serde_json::json!({
            "name": "a", "image": "x", "servces": {}
        }));
        assert!(r.unwrap_err().to_string().contains("servces"));
    }

    #[test]
    fn write_only_values_reach_env_but_not_the_hash() {
        let a = sample();
        let mut b = sample();
        b.secret_env_wo.insert("DB_PASSWORD".into(), "one".into());
        let mut c = b.clone();
        c.secret_env_wo.insert("DB_PASSWORD".into(), "two".into());
        let (cb, cc) = (b.components().unwrap(), c.components().unwrap());
        assert_eq!(cb[1].env["DB_PASSWORD"], "one");
        assert_eq!(cb[1].spec_hash, cc[1].spec_hash, "values are not hashed");
        assert_eq!(
            a.components().unwrap()[1].spec_hash,
            cb[1].spec_hash,
            "nor keys"
        );
        c.secret_env_version = Some(2);
        assert_ne!(
            c.components().unwrap()[1].spec_hash,
            cb[1].spec_hash,
            "version is"
        );
    }

    #[test]
    fn debug_hides_secret_values() {
        let d = format!("{:?}", sample());
        assert!(!d.contains("s3cret"), "{d}");
        assert!(d.contains("TOKEN"));
    }

    #[test]
    fn exposure_is_checked_and_kept_out_of_the_hash() {
        let mut s = sample();
        let web_hash = |s: &AppSpec| {
            s.components()
                .unwrap()
                .into_iter()
                .find(|c| c.name == "web")
                .unwrap()
                .spec_hash
        };
        let before = web_hash(&s);
        {
            let web = s.services.get_mut("web").unwrap();
            web.public_port = Some(18080);
            web.domains = vec!["shop.example".into()];
        }
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let web = s
            .components()
            .unwrap()
            .into_iter()
            .find(|c| c.name == "web")
            .unwrap();
        assert_eq!(web.spec_hash, before, "exposure is not release identity");
        let exposure = web.exposure.unwrap();
        assert_eq!(exposure.routes, vec!["/".to_string()]);
        assert_eq!(exposure.drain_seconds, DEFAULT_DRAIN_SECONDS);

        let mut api = s.services["web"].clone();
        api.routes = vec!["/".into()];
        s.services.insert("api".into(), api);
        let fields: Vec<String> = s.validate().into_iter().map(|e| e.field).collect();
        assert!(
            fields.contains(&"services[\"web\"].public_port".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"services[\"web\"].domains[0]".to_string()),
            "{fields:?}"
        );
        s.services.get_mut("api").unwrap().routes = vec!["/api".into()];
        assert!(s.validate().is_empty(), "{:?}", s.validate());

        let web = s.services.get_mut("web").unwrap();
        web.public_port = Some(0);
        web.domains = vec!["Bad_Name".into()];
        web.routes = vec!["api".into()];
        web.drain_seconds = 4000;
        let fields: Vec<String> = s.validate().into_iter().map(|e| e.field).collect();
        for f in ["public_port", "domains[0]", "routes[0]", "drain_seconds"] {
            assert!(
                fields.contains(&format!("services[\"web\"].{f}")),
                "{f}: {fields:?}"
            );
        }
    }

    #[test]
    fn empty_app_is_refused() {
        let mut s = sample();
        s.services.clear();
        s.workers.clear();
        assert!(s.validate().iter().any(|e| e.field == "services"));
    }
}
