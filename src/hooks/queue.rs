//! The deploy queue of the hook server: per app, at most one deploy runs
//! and one waits. A newer call replaces the waiting one (which ends as
//! `superseded`); a call for the digest already running or waiting joins
//! that deploy (same id), and one for the running digest also supersedes
//! the waiting one, so the last call's digest is what the app ends up
//! running. A running deploy is never cancelled.
//!
//! What a deploy does is the [`Runner`]'s business (the engine's state
//! machine, in the server); this module only orders them and remembers
//! how they ended, for the status URL.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinSet;

/// How many finished deploys the status URL can still report.
pub const KEPT_FINISHED: usize = 1000;

/// A deploy to run: an app at a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// `dep-` and 16 hex digits.
    pub id: String,
    pub app: String,
    /// The hook whose call made it.
    pub hook: String,
    /// The reference deployed (the app's tag, or the call's `imgURL`).
    pub image: String,
    /// Its linux/amd64 digest.
    pub digest: String,
}

/// How a deploy ended well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub release: u64,
    /// False when the app already ran this digest and spec.
    pub new_release: bool,
}

/// Where a deploy is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Queued,
    Running,
    Succeeded(Finished),
    Failed(String),
    /// Replaced, before it started, by a newer call's deploy.
    Superseded {
        by: String,
    },
}

impl Status {
    pub fn word(&self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded(_) => "succeeded",
            Status::Failed(_) => "failed",
            Status::Superseded { .. } => "superseded",
        }
    }

    fn is_final(&self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }
}

/// A deploy and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deploy {
    pub job: Job,
    pub status: Status,
}

/// Runs one deploy to its end.
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    async fn run(&self, job: &Job) -> Result<Finished, String>;
}

/// The server stopped taking deploys.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// One app's deploys: the running one and the one waiting.
struct Lane {
    running: Job,
    waiting: Option<Job>,
}

#[derive(Default)]
struct Inner {
    lanes: HashMap<String, Lane>,
    deploys: HashMap<String, Deploy>,
    /// Deploy ids, oldest first, to forget the oldest finished ones.
    order: VecDeque<String>,
    closed: bool,
}

impl Inner {
    fn set(&mut self, id: &str, status: Status) {
        if let Some(deploy) = self.deploys.get_mut(id) {
            deploy.status = status;
        }
    }

    fn add(&mut self, job: Job, status: Status) {
        self.order.push_back(job.id.clone());
        self.deploys.insert(job.id.clone(), Deploy { job, status });
        // Forget the oldest finished deploys beyond the bound (queued and
        // running ones are at most two per app and always kept).
        let mut excess = self.deploys.len().saturating_sub(KEPT_FINISHED);
        let mut kept = VecDeque::with_capacity(self.order.len());
        while let Some(id) = self.order.pop_front() {
            let done = self.deploys.get(&id).is_none_or(|d| d.status.is_final());
            if excess > 0 && done {
                self.deploys.remove(&id);
                excess -= 1;
            } else {
                kept.push_back(id);
            }
        }
        self.order = kept;
    }

    fn view(&self, id: &str) -> Deploy {
        self.deploys
            .get(id)
            .cloned()
            .expect("a lane's deploy is kept")
    }
}

/// The queue: cheap to share (`Arc` inside).
pub struct Queue {
    inner: Arc<Mutex<Inner>>,
    runner: Arc<dyn Runner>,
    workers: Mutex<JoinSet<()>>,
}

impl Queue {
    pub fn new(runner: Arc<dyn Runner>) -> Queue {
        Queue {
            inner: Arc::default(),
            runner,
            workers: Mutex::new(JoinSet::new()),
        }
    }

    /// A call's deploy of `job.app` at `job.digest`: started, queued, or an
    /// existing deploy of that digest joined (its id then differs from
    /// `job.id`).
    pub fn submit(&self, job: Job) -> Result<Deploy, Closed> {
        let mut inner = self.inner.lock().expect("queue lock");
        if inner.closed {
            return Err(Closed);
        }
        let app = job.app.clone();
        let Some(lane) = inner.lanes.get_mut(&app) else {
            inner.lanes.insert(
                app.clone(),
                Lane {
                    running: job.clone(),
                    waiting: None,
                },
            );
            inner.add(job.clone(), Status::Running);
            let deploy = inner.view(&job.id);
            drop(inner);
            self.spawn(job);
            return Ok(deploy);
        };
        if lane.running.digest == job.digest {
            // The last call asks for what runs: nothing may follow it.
            let running = lane.running.id.clone();
            if let Some(waiting) = lane.waiting.take() {
                inner.set(
                    &waiting.id,
                    Status::Superseded {
                        by: running.clone(),
                    },
                );
            }
            return Ok(inner.view(&running));
        }
        if let Some(waiting) = lane.waiting.as_ref().filter(|w| w.digest == job.digest) {
            let id = waiting.id.clone();
            return Ok(inner.view(&id));
        }
        let replaced = lane.waiting.replace(job.clone());
        if let Some(old) = replaced {
            inner.set(&old.id, Status::Superseded { by: job.id.clone() });
        }
        inner.add(job.clone(), Status::Queued);
        Ok(inner.view(&job.id))
    }

    /// The deploy `id` of `app`, if it is remembered.
    pub fn get(&self, app: &str, id: &str) -> Option<Deploy> {
        let inner = self.inner.lock().expect("queue lock");
        inner.deploys.get(id).filter(|d| d.job.app == app).cloned()
    }

    fn spawn(&self, first: Job) {
        let inner = self.inner.clone();
        let runner = self.runner.clone();
        self.workers
            .lock()
            .expect("workers lock")
            .spawn(async move {
                let mut job = first;
                loop {
                    let result = runner.run(&job).await;
                    let mut guard = inner.lock().expect("queue lock");
                    let status = match result {
                        Ok(finished) => Status::Succeeded(finished),
                        Err(error) => Status::Failed(error),
                    };
                    guard.set(&job.id, status);
                    let next = guard
                        .lanes
                        .get_mut(&job.app)
                        .and_then(|lane| lane.waiting.take());
                    match next {
                        Some(next) if !guard.closed => {
                            guard.set(&next.id, Status::Running);
                            if let Some(lane) = guard.lanes.get_mut(&job.app) {
                                lane.running = next.clone();
                            }
                            job = next;
                        }
                        _ => {
                            guard.lanes.remove(&job.app);
                            return;
                        }
                    }
                }
            });
    }

    /// Stops taking deploys, fails the waiting ones (they never start),
    /// and waits up to `grace` for the running ones to end. Returns how
    /// many were still running when `grace` ran out.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        {
            let mut inner = self.inner.lock().expect("queue lock");
            inner.closed = true;
            let waiting: Vec<String> = inner
                .lanes
                .values_mut()
                .filter_map(|lane| lane.waiting.take().map(|w| w.id))
                .collect();
            for id in waiting {
                inner.set(
                    &id,
                    Status::Failed("the hook server stopped before this deploy started".into()),
                );
            }
        }
        let mut workers = std::mem::take(&mut *self.workers.lock().expect("workers lock"));
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_ok() {
            0
        } else {
            workers.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{mpsc, oneshot};

    /// A runner whose deploys end when the test says so.
    struct Gate {
        started: mpsc::UnboundedSender<(Job, oneshot::Sender<Result<Finished, String>>)>,
    }

    #[async_trait]
    impl Runner for Gate {
        async fn run(&self, job: &Job) -> Result<Finished, String> {
            let (tx, rx) = oneshot::channel();
            self.started.send((job.clone(), tx)).expect("test alive");
            rx.await.unwrap_or_else(|_| Err("test dropped it".into()))
        }
    }

    fn job(n: u32, digest: &str) -> Job {
        Job {
            id: format!("dep-{n}"),
            app: "web".into(),
            hook: "dh-1".into(),
            image: format!("r/web:{digest}"),
            digest: digest.into(),
        }
    }

    fn ok(release: u64) -> Result<Finished, String> {
        Ok(Finished {
            release,
            new_release: true,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn one_runs_one_waits_and_the_last_call_wins() {
        let (tx, mut started) = mpsc::unbounded_channel();
        let queue = Queue::new(Arc::new(Gate { started: tx }));
        let first = queue.submit(job(1, "a")).unwrap();
        assert_eq!(first.status, Status::Running);
        let (running, finish_a) = started.recv().await.unwrap();
        assert_eq!(running.id, "dep-1");

        // 19 more calls while it runs: each replaces the waiting one.
        for n in 2..=20 {
            let d = queue.submit(job(n, &format!("d{n}"))).unwrap();
            assert_eq!(
                (d.job.id.as_str(), &d.status),
                (format!("dep-{n}").as_str(), &Status::Queued)
            );
        }
        for n in 2..20 {
            assert_eq!(
                queue.get("web", &format!("dep-{n}")).unwrap().status,
                Status::Superseded {
                    by: format!("dep-{}", n + 1)
                }
            );
        }
        // A call for the waiting digest joins it.
        assert_eq!(queue.submit(job(21, "d20")).unwrap().job.id, "dep-20");

        finish_a.send(ok(7)).unwrap();
        let (next, finish_last) = started.recv().await.unwrap();
        assert_eq!(next.id, "dep-20", "the last call's digest runs next");
        assert_eq!(
            queue.get("web", "dep-1").unwrap().status,
            Status::Succeeded(Finished {
                release: 7,
                new_release: true
            })
        );
        assert_eq!(queue.get("web", "dep-20").unwrap().status, Status::Running);
        finish_last.send(Err("unhealthy".into())).unwrap();
        assert_eq!(queue.shutdown(Duration::from_secs(5)).await, 0);
        assert_eq!(
            queue.get("web", "dep-20").unwrap().status,
            Status::Failed("unhealthy".into())
        );
        assert!(started.try_recv().is_err(), "nothing else ran");
        assert_eq!(
            queue.get("other-app", "dep-20"),
            None,
            "deploys answer for their app only"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_for_the_running_digest_joins_it_and_drops_the_waiting_one() {
        let (tx, mut started) = mpsc::unbounded_channel();
        let queue = Queue::new(Arc::new(Gate { started: tx }));
        queue.submit(job(1, "a")).unwrap();
        let (_, finish) = started.recv().await.unwrap();
        queue.submit(job(2, "b")).unwrap();
        let joined = queue.submit(job(3, "a")).unwrap();
        assert_eq!(
            (joined.job.id.as_str(), joined.status),
            ("dep-1", Status::Running)
        );
        assert_eq!(
            queue.get("web", "dep-2").unwrap().status,
            Status::Superseded { by: "dep-1".into() }
        );
        finish.send(ok(1)).unwrap();
        assert_eq!(queue.shutdown(Duration::from_secs(5)).await, 0);
        assert!(started.try_recv().is_err(), "b never ran");
    }

    #[tokio::test(start_paused = true)]
    async fn apps_do_not_wait_for_each_other_and_shutdown_is_bounded() {
        let (tx, mut started) = mpsc::unbounded_channel();
        let queue = Queue::new(Arc::new(Gate { started: tx }));
        queue.submit(job(1, "a")).unwrap();
        let mut other = job(2, "a");
        other.app = "api".into();
        assert_eq!(queue.submit(other).unwrap().status, Status::Running);
        let (_, _hold_web) = started.recv().await.unwrap();
        let (_, _hold_api) = started.recv().await.unwrap();
        queue.submit(job(3, "b")).unwrap();
        // Both keep running past the grace: shutdown says so and returns.
        assert_eq!(queue.shutdown(Duration::from_secs(30)).await, 2);
        assert_eq!(
            queue.get("web", "dep-3").unwrap().status,
            Status::Failed("the hook server stopped before this deploy started".into())
        );
        assert_eq!(queue.submit(job(4, "c")), Err(Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn finished_deploys_are_forgotten_beyond_the_bound() {
        let (tx, mut started) = mpsc::unbounded_channel();
        let queue = Queue::new(Arc::new(Gate { started: tx }));
        for n in 0..(KEPT_FINISHED as u32 + 5) {
            queue.submit(job(n, &format!("d{n}"))).unwrap();
            let (_, finish) = started.recv().await.unwrap();
            finish.send(ok(u64::from(n))).unwrap();
            // Let the worker record the end and leave the lane.
            let mut spins = 0;
            while queue.get("web", &format!("dep-{n}")).unwrap().status == Status::Running {
                spins += 1;
                assert!(spins < 10_000, "the worker never recorded the end");
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(queue.get("web", "dep-0"), None);
        assert!(queue
            .get("web", &format!("dep-{}", KEPT_FINISHED + 4))
            .is_some());
        assert!(queue.inner.lock().unwrap().deploys.len() <= KEPT_FINISHED);
    }
}
