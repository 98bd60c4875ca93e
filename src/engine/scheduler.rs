//! Cron for jobs, run by `berth serve`: reads the apps' jobs from the
//! store, and at each scheduled time claims the run (one row per job and
//! time, so several `berth serve` processes sharing a store run it once)
//! and runs it. After downtime the latest missed time runs late, once, if
//! it is at most the job's `starting_deadline_seconds` old; older ones are
//! journaled as missed ([`super::schedule::Schedule::due`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::apps::Apps;
use super::jobs::trigger;
use super::schedule::Schedule;
use super::spec::AppSpec;
use crate::store::JobRunState;

/// The longest sleep between two looks at the store (new or changed jobs
/// are picked up within it).
pub const RESCAN: Duration = Duration::from_secs(1);

/// A job with a schedule, as last read from the store.
struct Scheduled {
    app: String,
    job: String,
    schedule: Schedule,
    deadline: Duration,
}

/// The scheduler of one `berth serve` process.
pub struct Scheduler {
    apps: Arc<Apps>,
    /// Per (app, job): the scheduled time up to which runs were handled.
    cursors: HashMap<(String, String), DateTime<Utc>>,
    running: JoinSet<()>,
}

impl Scheduler {
    pub fn new(apps: Arc<Apps>) -> Scheduler {
        Scheduler {
            apps,
            cursors: HashMap::new(),
            running: JoinSet::new(),
        }
    }

    /// Schedules until `stop` turns true, then waits at most `grace` for
    /// the runs it started.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, grace: Duration) {
        info!("job scheduler started");
        loop {
            let next = match self.tick(Utc::now()).await {
                Ok(next) => next,
                Err(error) => {
                    warn!(%error, "the job scheduler could not read the store; trying again");
                    None
                }
            };
            let wait = next
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .unwrap_or(Duration::ZERO)
                .min(RESCAN);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            while self.running.try_join_next().is_some() {}
        }
        let left = self.running.len();
        if left > 0 {
            info!(runs = left, "waiting for running jobs");
            if tokio::time::timeout(grace, async {
                while self.running.join_next().await.is_some() {}
            })
            .await
            .is_err()
            {
                warn!(
                    "job runs still running after the grace period; their leases expire and they are journaled as lost"
                );
            }
        }
        info!("job scheduler stopped");
    }

    /// One pass at `now`: starts what is due, journals what was missed;
    /// the next scheduled time of any job.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
        let jobs = self.scheduled().await?;
        let mut next: Option<DateTime<Utc>> = None;
        for s in jobs {
            let key = (s.app.clone(), s.job.clone());
            let cursor = match self.cursors.get(&key) {
                Some(c) => *c,
                None => {
                    // First sight: carry on from the journal (after
                    // downtime), or from now for a job never scheduled.
                    let last = self
                        .apps
                        .store()
                        .last_scheduled_at(s.app.clone(), s.job.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                    last.map(DateTime::<Utc>::from).unwrap_or(now)
                }
            };
            let due = s.schedule.due(cursor, now, s.deadline);
            if due.missed_total > 0 {
                let times = due.missed.iter().map(|t| (*t).into()).collect();
                let reason = format!(
                    "due while no `berth serve` ran, more than {}s ago (starting_deadline_seconds){}",
                    s.deadline.as_secs(),
                    if due.missed_total > due.missed.len() as u64 {
                        format!("; {} missed in all", due.missed_total)
                    } else {
                        String::new()
                    }
                );
                if let Err(e) = self
                    .apps
                    .store()
                    .record_job_runs_not_run(
                        s.app.clone(),
                        s.job.clone(),
                        times,
                        JobRunState::Missed,
                        reason,
                    )
                    .await
                {
                    warn!(app = %s.app, job = %s.job, error = %e, "could not journal missed runs");
                }
                warn!(app = %s.app, job = %s.job, missed = due.missed_total, "scheduled runs were missed");
            }
            if let Some(at) = due.run {
                let apps = self.apps.clone();
                let (app, job) = (s.app.clone(), s.job.clone());
                self.running.spawn(async move {
                    match apps
                        .run_job(&app, &job, Some(at.into()), trigger::SCHEDULE)
                        .await
                    {
                        Ok(Some(run)) => {
                            info!(app = %app, job = %job, run = run.id, state = %run.state, "scheduled run ended")
                        }
                        Ok(None) => {}
                        Err(error) => {
                            warn!(app = %app, job = %job, %error, "scheduled run failed to start")
                        }
                    }
                });
            }
            self.cursors.insert(key, now.max(cursor));
            if let Some(n) = s.schedule.next_after(now) {
                next = Some(next.map_or(n, |m| m.min(n)));
            }
        }
        Ok(next)
    }

    /// Every job with a valid schedule, from the app records.
    async fn scheduled(&self) -> Result<Vec<Scheduled>, String> {
        let records = self
            .apps
            .store()
            .list_apps()
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for record in records {
            let Ok(spec) = serde_json::from_str::<AppSpec>(&record.spec_json) else {
                continue;
            };
            for (job, j) in spec.jobs {
                let Some(Ok(schedule)) = j.parsed_schedule() else {
                    continue;
                };
                out.push(Scheduled {
                    app: record.name.clone(),
                    job,
                    schedule,
                    deadline: Duration::from_secs(j.starting_deadline_seconds),
                });
            }
        }
        Ok(out)
    }
}
