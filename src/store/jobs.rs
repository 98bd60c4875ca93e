//! Job runs: one row per run of a job (scheduled, on demand, or a post- or
//! failed-deploy command), written by whoever runs it. A scheduled run is
//! claimed by inserting its row: `(app, job, scheduled_at)` is unique, so
//! of several `berth serve` processes sharing a store exactly one runs each
//! scheduled time. A running row carries a lease its runner renews; a row
//! whose lease ran out is marked lost (its runner went away).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// What became of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobRunState {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// Stopped for a newer run (`concurrency = "replace"`).
    Replaced,
    /// Not run: the last run still ran (`concurrency = "forbid"`).
    Skipped,
    /// Not run: due while no `berth serve` ran, past the starting deadline.
    Missed,
    /// Its runner stopped renewing its lease (killed, or lost the store).
    Lost,
}

impl JobRunState {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobRunState::Running => "running",
            JobRunState::Succeeded => "succeeded",
            JobRunState::Failed => "failed",
            JobRunState::TimedOut => "timed_out",
            JobRunState::Replaced => "replaced",
            JobRunState::Skipped => "skipped",
            JobRunState::Missed => "missed",
            JobRunState::Lost => "lost",
        }
    }

    /// A run that ran and did not succeed.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            JobRunState::Failed | JobRunState::TimedOut | JobRunState::Lost
        )
    }
}

impl std::fmt::Display for JobRunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobRunState {
    type Err = String;

    fn from_str(s: &str) -> Result<JobRunState, String> {
        Ok(match s {
            "running" => JobRunState::Running,
            "succeeded" => JobRunState::Succeeded,
            "failed" => JobRunState::Failed,
            "timed_out" => JobRunState::TimedOut,
            "replaced" => JobRunState::Replaced,
            "skipped" => JobRunState::Skipped,
            "missed" => JobRunState::Missed,
            "lost" => JobRunState::Lost,
            other => return Err(format!("unknown job run state {other:?}")),
        })
    }
}

/// A run to claim.
#[derive(Clone, Debug)]
pub struct NewJobRun {
    pub app: String,
    pub job: String,
    /// The scheduled time (unique per job); `None` for other triggers.
    pub scheduled_at: Option<SystemTime>,
    /// `schedule`, `manual`, `post-deploy`, `failed-deploy`.
    pub trigger: String,
    pub owner: String,
    pub ttl: Duration,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct JobRunEnd {
    pub state: JobRunState,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub log_tail: Vec<String>,
}

/// One run as journaled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct JobRunRecord {
    pub id: u64,
    pub app: String,
    pub job: String,
    #[serde(with = "opt_unix_millis")]
    pub scheduled_at: Option<SystemTime>,
    pub trigger: String,
    pub state: JobRunState,
    pub owner: Option<String>,
    pub host: Option<String>,
    pub container_id: Option<String>,
    pub digest: Option<String>,
    pub release: Option<u64>,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub log_tail: Vec<String>,
    #[serde(with = "opt_unix_millis")]
    pub started_at: Option<SystemTime>,
    #[serde(with = "opt_unix_millis")]
    pub finished_at: Option<SystemTime>,
}

/// Times as RFC 3339 strings in JSON output.
mod opt_unix_millis {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(
                &chrono::DateTime::<chrono::Utc>::from(*t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            None => s.serialize_none(),
        }
    }
}
