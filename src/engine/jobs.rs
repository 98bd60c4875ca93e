//! Running jobs: an app's `jobs` (on a schedule or on demand) and its
//! post- and failed-deploy commands. A run is a container from the app's
//! current release digest (never a tag resolved again) with the app's env
//! and secrets, on one of the app's hosts, journaled in the job runs table
//! from claim to exit. Finished containers are removed; the last
//! [`KEEP_FAILED`] failed ones of each job stay for inspection.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::apps::{Apps, AppsError, Recorded};
use super::deploy::{short_id, Target, NETWORK, PRE_DEPLOY_TIMEOUT, STOP_GRACE};
use super::spec::{split_command, AppSpec, Concurrency, JobSpec};
use crate::docker::{ContainerSpec, DockerHost, JobOutcome, RegistryLogin, RestartPolicy};
use crate::labels;

use crate::store::{JobRunEnd, JobRunRecord, JobRunState, NewJobRun, ReleaseOutcome};

/// How long a run's lease lives without renewal (renewed every third).
pub const JOB_LEASE_TTL: Duration = Duration::from_secs(30);
/// Failed job containers kept per job and host.
pub const KEEP_FAILED: usize = 3;
/// The env var a failed-deploy command finds the failure in.
pub const DEPLOY_ERROR_ENV: &str = "BERTH_DEPLOY_ERROR";
/// Triggers, as journaled.
pub mod trigger {
    pub const SCHEDULE: &str = "schedule";
    pub const MANUAL: &str = "manual";
    pub const POST_DEPLOY: &str = "post-deploy";
    pub const FAILED_DEPLOY: &str = "failed-deploy";
}

/// What to run and from which image.
struct RunPlan<'a> {
    app: &'a str,
    job: &'a str,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    cpus: Option<f64>,
    memory_mb: Option<u64>,
    timeout: Duration,
    pinned: String,
    digest: String,
    release: Option<u64>,
    login: Option<RegistryLogin>,
    test_label: bool,
}

/// The release running now: its number, `repository@digest` and digest.
async fn current_release(apps: &Apps, app: &str) -> Result<(u64, String, String), AppsError> {
    let releases = apps.store().list_releases(app.to_owned(), 100).await?;
    releases
        .into_iter()
        .find(|r| r.outcome == ReleaseOutcome::Succeeded)
        .map(|r| (r.release, r.image, r.digest))
        .ok_or_else(|| {
            AppsError::Invalid(format!(
                "app {app:?} has no successful release yet: deploy it first, then its jobs run from that release"
            ))
        })
}

impl Apps {
    /// Runs job `job` of `app` now: for `scheduled_at` (by `berth serve`,
    /// honouring the job's concurrency policy; `Ok(None)` when another
    /// runner has that time, or it was skipped) or on demand.
    pub async fn run_job(
        &self,
        app: &str,
        job: &str,
        scheduled_at: Option<SystemTime>,
        trigger: &str,
    ) -> Result<Option<JobRunRecord>, AppsError> {
        let recorded = self
            .recorded(app)
            .await?
            .ok_or_else(|| AppsError::NotFound {
                app: app.to_owned(),
            })?;
        let Some(spec) = recorded.spec.jobs.get(job).cloned() else {
            let known: Vec<&String> = recorded.spec.jobs.keys().collect();
            return Err(AppsError::Invalid(format!(
                "app {app:?} has no job {job:?}; its jobs: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        };
        let on_hosts = self.on_recorded_hosts(&recorded.private)?.ok_or_else(|| {
            AppsError::Invalid(format!(
                "Berth's record of app {app:?} does not say which hosts it runs on: apply it once more"
            ))
        })?;
        if scheduled_at.is_some()
            && !self
                .make_room(&on_hosts, app, job, &spec, scheduled_at)
                .await?
        {
            return Ok(None);
        }
        let owner = crate::store::lease_owner();
        let Some(claimed) = self
            .store()
            .claim_job_run(NewJobRun {
                app: app.to_owned(),
                job: job.to_owned(),
                scheduled_at,
                trigger: trigger.to_owned(),
                owner: owner.clone(),
                ttl: JOB_LEASE_TTL,
            })
            .await?
        else {
            return Ok(None);
        };
        let result = self
            .run_claimed(&on_hosts, &recorded, &spec, job, &claimed, &owner)
            .await;
        if let Err(e) = &result {
            let end = JobRunEnd {
                state: JobRunState::Failed,
                exit_code: None,
                reason: Some(e.to_string()),
                log_tail: Vec::new(),
            };
            if let Err(store) = self.store().finish_job_run(claimed.id, owner, end).await {
                warn!(app, job, error = %store, "could not journal a failed job run");
            }
        }
        result?;
        self.job_run(app, job, claimed.id).await
    }

    /// Applies the concurrency policy before a scheduled run; `false` when
    /// the run is skipped.
    async fn make_room(
        &self,
        on_hosts: &Apps,
        app: &str,
        job: &str,
        spec: &JobSpec,
        scheduled_at: Option<SystemTime>,
    ) -> Result<bool, AppsError> {
        let running = self
            .store()
            .running_job_runs(app.to_owned(), job.to_owned())
            .await?;
        // Another runner got this very time first: it is that run.
        if running.iter().any(|r| r.scheduled_at == scheduled_at) {
            return Ok(false);
        }
        if running.is_empty() || spec.concurrency == Concurrency::Allow {
            return Ok(true);
        }
        if spec.concurrency == Concurrency::Forbid {
            let ids: Vec<String> = running.iter().map(|r| r.id.to_string()).collect();
            self.store()
                .record_job_runs_not_run(
                    app.to_owned(),
                    job.to_owned(),
                    scheduled_at.into_iter().collect(),
                    JobRunState::Skipped,
                    format!(
                        "run {} still running (concurrency = \"forbid\")",
                        ids.join(", ")
                    ),
                )
                .await?;
            info!(app, job, "scheduled run skipped: the last one still runs");
            return Ok(false);
        }
        for run in running {
            let stopped = self
                .store()
                .stop_job_run(
                    run.id,
                    JobRunState::Replaced,
                    "replaced by a newer scheduled run (concurrency = \"replace\")".to_owned(),
                )
                .await?;
            let (Some(host), Some(id)) = (run.host.as_deref(), run.container_id.as_deref()) else {
                continue;
            };
            if let (true, Some(host)) = (stopped, on_hosts.engine().hosts.get(host)) {
                if let Err(e) = host.stop(id, STOP_GRACE).await {
                    warn!(app, job, run = run.id, error = %e, "could not stop the replaced run");
                }
            }
        }
        Ok(true)
    }

    async fn run_claimed(
        &self,
        on_hosts: &Apps,
        recorded: &Recorded,
        spec: &JobSpec,
        job: &str,
        claimed: &JobRunRecord,
        owner: &str,
    ) -> Result<(), AppsError> {
        let app = recorded.spec.name.as_str();
        let (release, pinned, digest) = current_release(self, app).await?;
        let image = crate::reference::Reference::parse(&pinned)
            .map_err(|e| AppsError::Invalid(e.to_string()))?;
        let (_, login) = self.credentials(&recorded.spec, &image).await?;
        let command = split_command(&format!("jobs[{job:?}].command"), &spec.command)
            .map_err(|e| AppsError::Invalid(e.to_string()))?;
        let plan = RunPlan {
            app,
            job,
            command,
            env: recorded.spec.job_env(Some(spec)),
            cpus: spec.cpus,
            memory_mb: spec.memory_mb,
            timeout: Duration::from_secs(spec.timeout_seconds),
            pinned,
            digest,
            release: Some(release),
            login,
            test_label: self.engine().test_label,
        };
        let hosts: Vec<&DockerHost> = on_hosts.engine().hosts.iter().collect();
        let host = hosts
            .get(claimed.id as usize % hosts.len().max(1))
            .copied()
            .ok_or_else(|| AppsError::Invalid(format!("app {app:?} has no hosts")))?;
        let end = run_on(self, host, &plan, claimed.id, owner).await?;
        let state = end.state;
        if !self
            .store()
            .finish_job_run(claimed.id, owner.to_owned(), end)
            .await?
        {
            info!(
                app,
                job,
                run = claimed.id,
                "the run was ended by another (replaced or lost)"
            );
        }
        info!(app, job, run = claimed.id, %state, "job run finished");
        Ok(())
    }

    /// One run from the journal.
    async fn job_run(
        &self,
        app: &str,
        job: &str,
        id: u64,
    ) -> Result<Option<JobRunRecord>, AppsError> {
        Ok(self
            .store()
            .list_job_runs(app.to_owned(), Some(job.to_owned()), 50)
            .await?
            .into_iter()
            .find(|r| r.id == id))
    }

    /// Runs a deploy's own job (`post-deploy` after a release serves,
    /// `failed-deploy` after a failed one, with the reason in
    /// [`DEPLOY_ERROR_ENV`]) from `target`'s image, journaled like any run.
    /// A failure is a line of words, for the deploy's warnings.
    pub(super) async fn deploy_job(
        &self,
        target: &Target,
        which: &str,
        command: &str,
        release: Option<u64>,
        error: Option<&str>,
    ) -> Result<JobRunRecord, String> {
        let spec: &AppSpec = &target.spec;
        let app = spec.name.as_str();
        let field = format!("{}_command", which.replace('-', "_"));
        let argv = split_command(&field, command).map_err(|e| e.to_string())?;
        let mut env = spec.job_env(None);
        if let Some(e) = error {
            env.insert(DEPLOY_ERROR_ENV.to_owned(), e.to_owned());
        }
        let owner = crate::store::lease_owner();
        let claimed = self
            .store()
            .claim_job_run(NewJobRun {
                app: app.to_owned(),
                job: which.to_owned(),
                scheduled_at: None,
                trigger: which.to_owned(),
                owner: owner.clone(),
                ttl: JOB_LEASE_TTL,
            })
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the journal refused the run")?;
        let plan = RunPlan {
            app,
            job: which,
            command: argv,
            env,
            cpus: None,
            memory_mb: None,
            timeout: PRE_DEPLOY_TIMEOUT,
            pinned: target.pinned.clone(),
            digest: target.digest.clone(),
            release,
            login: target.login.clone(),
            test_label: self.engine().test_label,
        };
        let host = self
            .engine()
            .hosts
            .iter()
            .next()
            .ok_or("the app has no hosts")?;
        let end = match run_on(self, host, &plan, claimed.id, &owner).await {
            Ok(end) => end,
            Err(e) => JobRunEnd {
                state: JobRunState::Failed,
                exit_code: None,
                reason: Some(e.to_string()),
                log_tail: Vec::new(),
            },
        };
        self.store()
            .finish_job_run(claimed.id, owner, end)
            .await
            .map_err(|e| e.to_string())?;
        let run = self
            .job_run(app, which, claimed.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the run is not in the journal")?;
        if run.state == JobRunState::Succeeded {
            Ok(run)
        } else {
            Err(describe_failure(&run, &format!("the {which} command")))
        }
    }
}

/// A failed run in words, with its last log lines.
pub fn describe_failure(run: &JobRunRecord, what: &str) -> String {
    let how = match (run.state, run.exit_code) {
        (JobRunState::TimedOut, _) => "did not finish in time and was stopped".to_owned(),
        (_, Some(code)) => format!("exited with code {code}"),
        _ => format!(
            "failed: {}",
            run.reason.as_deref().unwrap_or("no reason recorded")
        ),
    };
    let tail = if run.log_tail.is_empty() {
        String::new()
    } else {
        format!(
            "; last log lines: {}",
            run.log_tail
                .iter()
                .rev()
                .take(5)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        )
    };
    format!("{what} (run {}) {how}{tail}", run.id)
}

/// Runs `plan` on `host` as run `id`, renewing its lease meanwhile; how it
/// ended. Removes older failed containers of the job beyond [`KEEP_FAILED`].
async fn run_on(
    apps: &Apps,
    host: &DockerHost,
    plan: &RunPlan<'_>,
    id: u64,
    owner: &str,
) -> Result<JobRunEnd, AppsError> {
    host.pull(&plan.pinned, plan.login.clone()).await?;
    host.ensure_network(NETWORK, &BTreeMap::new()).await?;
    let mut l = BTreeMap::from([
        (labels::MANAGED.to_owned(), labels::MANAGED_VALUE.to_owned()),
        (labels::APP.to_owned(), plan.app.to_owned()),
        (labels::DIGEST.to_owned(), plan.digest.clone()),
        (labels::KIND.to_owned(), labels::kind::JOB.to_owned()),
        (labels::COMPONENT.to_owned(), plan.job.to_owned()),
        (labels::JOB.to_owned(), plan.job.to_owned()),
        (labels::RUN.to_owned(), id.to_string()),
    ]);
    if let Some(r) = plan.release {
        l.insert(labels::RELEASE.to_owned(), r.to_string());
    }
    if plan.test_label {
        l.insert(labels::TEST.to_owned(), "1".to_owned());
    }
    let spec = ContainerSpec {
        name: format!("{}-{}-run{id}-{}", plan.app, plan.job, short_id()),
        image: plan.pinned.clone(),
        command: Some(plan.command.clone()),
        env: plan.env.clone(),
        labels: l,
        http_port: None,
        cpus: plan.cpus,
        memory_mb: plan.memory_mb,
        network: Some(NETWORK.to_owned()),
        restart: RestartPolicy::No,
        ..Default::default()
    };
    // Renew the run's lease while it runs, so other runners do not take
    // it for lost.
    let store = apps.store().clone();
    let owner_c = owner.to_owned();
    let renew = tokio::spawn(async move {
        loop {
            tokio::time::sleep(JOB_LEASE_TTL / 3).await;
            if !matches!(
                store
                    .renew_job_run(id, owner_c.clone(), JOB_LEASE_TTL)
                    .await,
                Ok(true)
            ) {
                return;
            }
        }
    });
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<String>();
    let record_container = {
        let store = apps.store().clone();
        let (owner, host_name, digest) = (
            owner.to_owned(),
            host.name().to_owned(),
            plan.digest.clone(),
        );
        let release = plan.release;
        async move {
            if let Ok(container) = started_rx.await {
                if let Err(e) = store
                    .set_job_run_container(id, owner, host_name, container, digest, release)
                    .await
                {
                    warn!(run = id, error = %e, "could not journal the run's container");
                }
            }
        }
    };
    let running = host.run_job_keeping_failure(&spec, plan.timeout, move |container| {
        let _ = started_tx.send(container.to_owned());
    });
    let (ran, ()) = tokio::join!(running, record_container);
    renew.abort();
    let (_, outcome) = ran?;
    let end = job_end(&outcome, plan.timeout);
    if end.state != JobRunState::Succeeded {
        prune_failed(host, plan.app, plan.job).await;
    }
    Ok(end)
}

fn job_end(outcome: &JobOutcome, timeout: Duration) -> JobRunEnd {
    let state = if outcome.timed_out {
        JobRunState::TimedOut
    } else if outcome.exit_code == 0 {
        JobRunState::Succeeded
    } else {
        JobRunState::Failed
    };
    JobRunEnd {
        state,
        exit_code: Some(outcome.exit_code),
        reason: outcome.timed_out.then(|| {
            format!(
                "ran longer than its timeout of {}s and was killed",
                timeout.as_secs()
            )
        }),
        log_tail: outcome.log_tail.clone(),
    }
}

/// Removes the job's stopped containers on `host` beyond the newest
/// [`KEEP_FAILED`] (by run id).
async fn prune_failed(host: &DockerHost, app: &str, job: &str) {
    let Ok(list) = host.list_managed().await else {
        return;
    };
    let mut kept: Vec<(u64, String)> = list
        .iter()
        .filter(|o| o.label(labels::APP) == Some(app) && o.label(labels::JOB) == Some(job))
        .filter(|o| o.state != crate::docker::ContainerState::Running)
        .filter_map(|o| Some((o.label(labels::RUN)?.parse().ok()?, o.id.clone())))
        .collect();
    kept.sort();
    let excess = kept.len().saturating_sub(KEEP_FAILED);
    for (_, id) in kept.into_iter().take(excess) {
        if let Err(e) = host.remove(&id).await {
            warn!(app, job, container = %id, error = %e, "could not remove an old failed job container");
        }
    }
}
