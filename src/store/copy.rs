//! What `berth store check` reports ([`StoreInfo`]) and what `berth store
//! copy` moves between two stores ([`StoreDump`], [`copy`]): every record
//! worth keeping, with its secrets opened in memory only, so the target
//! seals them with its own key (a SQLite store's key file to a team's
//! `BERTH_SECRET_KEY`). Leases are not copied: they are held by running
//! deploys, and a copy is made while none runs.

use std::collections::BTreeSet;

use super::error::StoreError;
use super::{AppRecord, Credential, HookRecord, JobRunRecord, KnownImage, Records, ReleaseRecord};

/// A store's backend, schema and record counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    /// `sqlite` or `postgresql`.
    pub backend: &'static str,
    /// Where it is (no password).
    pub location: String,
    /// The database server's version (PostgreSQL).
    pub server: Option<String>,
    /// The schema version found.
    pub schema_version: i64,
    /// The newest schema version this build knows.
    pub supported_version: i64,
    /// Records of each kind, in a fixed order.
    pub counts: Vec<(&'static str, u64)>,
    /// Problems found; empty when the store is sound.
    pub problems: Vec<String>,
}

/// An app record with its sealed data opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpedApp {
    pub record: AppRecord,
    pub sealed: Option<Vec<u8>>,
}

/// A remembered plan: the digest resolved for an app's image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDigest {
    pub app: String,
    pub image: String,
    pub prior: String,
    pub digest: String,
    pub planned_at: std::time::SystemTime,
}

/// Every record of a store but its leases, secrets opened.
#[derive(Clone, Debug, Default)]
pub struct StoreDump {
    pub credentials: Vec<Credential>,
    pub apps: Vec<DumpedApp>,
    pub hooks: Vec<HookRecord>,
    pub releases: Vec<ReleaseRecord>,
    pub job_runs: Vec<JobRunRecord>,
    pub known_images: Vec<(String, KnownImage)>,
    pub planned_digests: Vec<PlannedDigest>,
}

impl StoreDump {
    /// The identity of every record, by kind: what a copy must carry over.
    pub fn keys(&self) -> Vec<(&'static str, BTreeSet<String>)> {
        vec![
            (
                "registry credentials",
                self.credentials.iter().map(|c| c.id.clone()).collect(),
            ),
            (
                "apps",
                self.apps.iter().map(|a| a.record.name.clone()).collect(),
            ),
            (
                "deploy hooks",
                self.hooks.iter().map(|h| h.id.clone()).collect(),
            ),
            (
                "releases",
                self.releases
                    .iter()
                    .map(|r| format!("{}#{}", r.app, r.release))
                    .collect(),
            ),
            ("job runs", self.job_runs.iter().map(job_run_key).collect()),
            (
                "known images",
                self.known_images.iter().map(|(k, _)| k.clone()).collect(),
            ),
            (
                "planned digests",
                self.planned_digests
                    .iter()
                    .map(|p| format!("{} {} {}", p.app, p.image, p.prior))
                    .collect(),
            ),
        ]
    }
}

/// A job run's identity across stores: its id is the source's, but a
/// scheduled run is one per `(app, job, scheduled time)` anywhere.
pub fn job_run_key(run: &JobRunRecord) -> String {
    match run.scheduled_at {
        Some(t) => format!("{} {} @{}", run.app, run.job, super::common::millis(t)),
        None => format!("{} {} #{}", run.app, run.job, run.id),
    }
}

/// What a copy carried over, per kind of record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    pub counts: Vec<(&'static str, usize)>,
}

/// Copies every record of `from` into `to` (one transaction in `to`), then
/// reads `to` back and checks that each record of `from` is there.
/// Idempotent: a second copy changes nothing.
pub fn copy(from: &dyn Records, to: &dyn Records) -> Result<CopyReport, StoreError> {
    let dump = from.dump()?;
    to.load(&dump)?;
    let after = to.dump()?;
    let wanted = dump.keys();
    let found = after.keys();
    let mut counts = Vec::new();
    for ((kind, want), (_, have)) in wanted.iter().zip(found.iter()) {
        let missing: Vec<&String> = want.difference(have).collect();
        if !missing.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "after the copy the target lacks {} of the source's {} {kind} (e.g. {}); nothing in the source changed",
                missing.len(),
                want.len(),
                missing[0]
            )));
        }
        counts.push((*kind, want.len()));
    }
    Ok(CopyReport { counts })
}
