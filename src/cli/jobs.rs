//! `berth jobs APP` (an app's jobs with their next and last runs), `berth
//! runs APP [JOB]` (the runs journal) and `berth run APP JOB` (one run
//! now, waiting for its end).

use std::time::SystemTime;

use clap::Args;
use serde::Serialize;

use super::app::{apps_error, short_digest, store_error, utc_time, Session};
use super::output::{self, Columns, OutputArgs};
use super::CliError;
use crate::engine::jobs::{describe_failure, trigger};
use crate::store::{JobRunRecord, JobRunState};

/// Arguments of `berth jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The app
    #[arg(value_name = "APP")]
    app: String,

    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The app
    #[arg(value_name = "APP")]
    app: String,

    /// Only this job's runs (`post-deploy` and `failed-deploy` are the
    /// deploy commands')
    #[arg(value_name = "JOB")]
    job: Option<String>,

    /// Show at most this many runs
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: usize,

    #[command(flatten)]
    output: OutputArgs,
}

/// Arguments of `berth run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app
    #[arg(value_name = "APP")]
    app: String,

    /// The job
    #[arg(value_name = "JOB")]
    job: String,

    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Serialize)]
struct JobReport {
    name: String,
    command: String,
    schedule: Option<String>,
    time_zone: String,
    concurrency: &'static str,
    next_run: Option<String>,
    last_run: Option<JobRunRecord>,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn when(t: Option<SystemTime>) -> String {
    t.map(utc_time).unwrap_or_else(|| "-".to_owned())
}

pub async fn jobs(args: JobsArgs) -> Result<(), CliError> {
    let session = Session::open(Vec::new(), None).await?;
    let app = args.app.as_str();
    let recorded = session
        .apps
        .recorded(app)
        .await
        .map_err(|e| apps_error(app, e))?
        .ok_or_else(|| {
            CliError::failed(
                "App not found",
                format!("Berth's state has no record of an app named {app:?}"),
            )
        })?;
    let runs = session
        .store()
        .list_job_runs(app.to_owned(), None, 500)
        .await
        .map_err(store_error)?;
    let now = chrono::Utc::now();
    let reports: Vec<JobReport> = recorded
        .spec
        .jobs
        .iter()
        .map(|(name, j)| JobReport {
            name: name.clone(),
            command: j.command.clone(),
            schedule: j.schedule.clone(),
            time_zone: j.time_zone.clone(),
            concurrency: j.concurrency.as_str(),
            next_run: j
                .parsed_schedule()
                .and_then(Result::ok)
                .and_then(|s| s.next_after(now))
                .map(rfc3339),
            last_run: runs
                .iter()
                .find(|r| {
                    &r.job == name && !matches!(r.state, JobRunState::Skipped | JobRunState::Missed)
                })
                .cloned(),
        })
        .collect();
    if args.output.json {
        return output::print_json(&serde_json::json!({"app": app, "jobs": reports}));
    }
    if reports.is_empty() {
        return output::print_line(&format!("app {app:?} has no jobs"));
    }
    let mut columns = Columns::new(&[
        "JOB", "SCHEDULE", "NEXT RUN", "LAST RUN", "STATE", "COMMAND",
    ]);
    for r in &reports {
        columns.row(vec![
            r.name.clone(),
            r.schedule
                .as_ref()
                .map(|s| format!("{s} ({})", r.time_zone))
                .unwrap_or_else(|| "on demand".to_owned()),
            r.next_run.clone().unwrap_or_else(|| "-".to_owned()),
            when(r.last_run.as_ref().and_then(|l| l.started_at)),
            r.last_run
                .as_ref()
                .map(|l| l.state.to_string())
                .unwrap_or_else(|| "-".to_owned()),
            r.command.clone(),
        ]);
    }
    columns.print()
}

pub async fn runs(args: RunsArgs) -> Result<(), CliError> {
    let session = Session::open(Vec::new(), None).await?;
    let runs = session
        .store()
        .list_job_runs(args.app.clone(), args.job.clone(), args.limit)
        .await
        .map_err(store_error)?;
    if args.output.json {
        return output::print_json(&serde_json::json!({
            "app": args.app,
            "job": args.job,
            "runs": runs,
        }));
    }
    if runs.is_empty() {
        return output::print_line(&format!("no job runs of app {:?} in the journal", args.app));
    }
    let mut columns = Columns::new(&[
        "RUN",
        "JOB",
        "TRIGGER",
        "SCHEDULED",
        "STARTED",
        "STATE",
        "EXIT",
        "HOST",
        "DIGEST",
        "LAST LOG LINE",
    ]);
    for r in &runs {
        columns.row(vec![
            r.id.to_string(),
            r.job.clone(),
            r.trigger.clone(),
            when(r.scheduled_at),
            when(r.started_at),
            r.state.to_string(),
            r.exit_code
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            r.host.clone().unwrap_or_else(|| "-".to_owned()),
            r.digest
                .as_deref()
                .map(short_digest)
                .unwrap_or("-")
                .to_owned(),
            r.log_tail
                .last()
                .cloned()
                .or_else(|| r.reason.clone())
                .unwrap_or_default(),
        ]);
    }
    columns.print()
}

pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let session = Session::open(Vec::new(), None).await?;
    let app = args.app.as_str();
    let run = session
        .apps
        .run_job(app, &args.job, None, trigger::MANUAL)
        .await
        .map_err(|e| apps_error(app, e))?
        .ok_or_else(|| CliError::failed("The run was not started", "the journal refused it"))?;
    if args.output.json {
        output::print_json(&serde_json::json!({ "run": run }))?;
    } else {
        for line in &run.log_tail {
            output::print_line(line)?;
        }
        output::print_line(&format!(
            "run {} of job {:?} {}",
            run.id, args.job, run.state
        ))?;
    }
    if run.state == JobRunState::Succeeded {
        Ok(())
    } else {
        Err(CliError::failed(
            format!("Job {:?} of app {app:?} failed", args.job),
            describe_failure(&run, &format!("job {:?}", args.job)),
        )
        .with_hint(format!("`berth runs {app} {}` shows its runs", args.job)))
    }
}
