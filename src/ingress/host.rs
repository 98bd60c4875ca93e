//! The ingress on one Docker host: reading what it routes, creating its
//! containers, switching its configuration, watching the drain, and
//! probing new instances from inside it. Every call goes through the
//! Docker API (`docker` layer); the caller serializes switches per host.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use super::haproxy;
use sha2::Digest as _;

use super::routes::{self, AppRoutes, Conflict, HostRoutes};
use super::{
    caddy, IngressSettings, PROXY_CONTAINER, TLS_ADMIN_SOCKET, TLS_CONFIG_VOLUME, TLS_CONTAINER,
    TLS_DATA_VOLUME, VOLUME, VOLUME_PATH,
};
use crate::docker::{
    ContainerSpec, ContainerState, DockerError, DockerHost, Observed, RestartPolicy,
};
use crate::labels;

/// Bound on one command run in an ingress container.
const EXEC_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a new worker (or a new container's first worker) may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the workers are looked at while waiting.
const POLL: Duration = Duration::from_millis(50);
/// A shell function printing the proxy's worker processes (children of
/// its master, PID 1), for the commands run in the container.
/// Only `haproxy` processes count: commands run in the container leave
/// orphans (a `sleep`, a `timeout`) that PID 1 adopts for a moment.
const WORKERS_FN: &str = "workers() { for d in /proc/[0-9]*; do read -r pid comm state ppid rest < \"$d/stat\" 2>/dev/null && [ \"$ppid\" = 1 ] && [ \"$comm\" = '(haproxy)' ] && printf '%s ' \"$pid\"; done; };";
/// How long a switch waits for another Berth's switch on the same host.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// A lock older than this was left by a process that died.
const LOCK_STALE: Duration = Duration::from_secs(60);

/// Attempts at a switch that lost the race to another Berth's switch.
const SWAP_ATTEMPTS: usize = 5;

/// Why a swap did not happen.
enum Swap {
    /// The file changed since it was read (another Berth switched).
    Raced,
    Failed(IngressError),
}

impl From<IngressError> for Swap {
    fn from(e: IngressError) -> Swap {
        Swap::Failed(e)
    }
}

/// The swap command (see [`IngressHost::swap`]); its arguments: lock owner,
/// the sha256 of the configuration read (`none` when there was none), the
/// age of a stale lock in seconds, the number of 100 ms waits for the lock.
/// Exit codes: 0 done (`old PIDS` printed), 1 lock busy, 3 configuration
/// refused (old files back), 4 no new worker, 5 files not written, 6 the
/// configuration changed since it was read.
fn swap_script(names: &[&str], reload: bool) -> String {
    let list = names.join(" ");
    let drop_caddy = if names.contains(&"caddy.json") {
        ""
    } else {
        "rm -f caddy.json; "
    };
    let reload_part = if reload {
        format!(
            "if ! out=$(haproxy -c -f {VOLUME_PATH}/haproxy.cfg 2>&1); then \
               for f in {list}; do [ -f \"$f.old\" ] && mv -f \"$f.old\" \"$f\"; done; printf '%s\\n' \"$out\"; done_ 3; fi; \
             kill -USR2 1 || done_ 5; i=0; \
             while [ $i -lt {polls} ]; do for p in $(workers); do case \"$before \" in *\" $p \"*) ;; *) echo \"old$before\"; done_ 0;; esac; done; \
               sleep 0.05; i=$((i+1)); done; \
             for f in {list}; do [ -f \"$f.old\" ] && mv -f \"$f.old\" \"$f\"; done; done_ 4",
            polls = RELOAD_TIMEOUT.as_millis() / 50,
        )
    } else {
        "done_ 0".to_owned()
    };
    format!(
        "owner=$0; expected=$1; stale=$2; waits=$3; cd {VOLUME_PATH} || exit 5; {WORKERS_FN} \
         done_() {{ rm -f *.\"$owner\".new; rm -rf {VOLUME_PATH}/lock; exit $1; }}; \
         n=0; while ! mkdir {VOLUME_PATH}/lock 2>/dev/null; do \
           now=$(date +%s); read -r since holder < {VOLUME_PATH}/lock/owner 2>/dev/null || {{ since=$now; holder=unknown; }}; \
           if [ $((now - since)) -gt \"$stale\" ]; then rm -rf {VOLUME_PATH}/lock; continue; fi; \
           n=$((n+1)); [ $n -gt \"$waits\" ] && {{ rm -f *.\"$owner\".new; echo \"$holder since $since\"; exit 1; }}; sleep 0.1; done; \
         echo \"$(date +%s) $owner\" > {VOLUME_PATH}/lock/owner; \
         if [ -f haproxy.cfg ]; then sum=$(sha256sum haproxy.cfg); sum=${{sum%% *}}; else sum=none; fi; \
         [ \"$sum\" = \"$expected\" ] || done_ 6; \
         before=\" $(workers)\"; \
         for f in {list}; do [ -f \"$f\" ] && cp -f \"$f\" \"$f.old\"; mv -f \"$f.$owner.new\" \"$f\" || done_ 5; done; {drop_caddy}\
         {reload_part}"
    )
}

/// What creating the proxy came to.
enum Created {
    /// Created and started, with the routes it now holds.
    Started(String, HostRoutes),
    /// Another Berth created it first.
    Taken,
}

/// Pins an image reference to its linux/amd64 digest; the front ends
/// implement it with their registry client. Asked only when a container
/// is created, so a moved tag never restarts a running ingress.
#[async_trait::async_trait]
pub trait PinImage: Send + Sync {
    /// `reference` as `repository@sha256:…`, or why it cannot be.
    async fn pin(&self, reference: &str) -> Result<String, String>;
}

/// What the ingress of a host is now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressView {
    /// The proxy container, if there is one.
    pub proxy: Option<Observed>,
    /// The HTTPS front, if there is one.
    pub tls: Option<Observed>,
    /// Every app's routes, as the proxy's configuration file holds them.
    pub routes: HostRoutes,
    /// The proxy's configuration file, as the volume holds it.
    pub haproxy_cfg: Option<String>,
    /// The HTTPS front's configuration file.
    pub caddy_json: Option<String>,
    /// A configuration file exists but holds no routes Berth can read
    /// (replaced by hand): every app's drift says so.
    pub unreadable: bool,
    /// The settings the configuration was last written with.
    pub settings: Option<IngressSettings>,
}

impl IngressView {
    /// Reads the ingress part of a host's list result (no I/O).
    pub fn containers(list: &[Observed]) -> IngressView {
        let find = |kind: &str| {
            list.iter()
                .find(|o| o.label(labels::KIND) == Some(kind))
                .cloned()
        };
        IngressView {
            proxy: find(labels::kind::INGRESS),
            tls: find(labels::kind::INGRESS_TLS),
            ..IngressView::default()
        }
    }

    /// Whether the proxy runs.
    pub fn proxy_running(&self) -> bool {
        self.proxy
            .as_ref()
            .is_some_and(|p| p.state == ContainerState::Running)
    }
}

/// What a switch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwitchOutcome {
    /// The proxy container now (it may have been created by the switch).
    pub proxy_id: String,
    /// The proxy was reloaded (or created) with a new configuration.
    pub changed: bool,
    /// The proxy's workers from before the reload: they finish their
    /// in-flight requests, then exit (the drain).
    pub old_workers: Vec<u32>,
    /// What was done, in words.
    pub steps: Vec<String>,
}

/// A failure of the ingress, in words naming the host.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("the ingress on host {host} refused its new configuration (the running one keeps serving): {detail}. This is a bug in Berth: please report it")]
    Refused { host: String, detail: String },
    #[error("the ingress on host {host} cannot listen on {address}:{port}: the port is in use by {holder}. The running release keeps serving; free the port, or pick another `public_port`")]
    PortInUse {
        host: String,
        address: String,
        port: u16,
        holder: String,
    },
    #[error("the ingress on host {host} did not take its new configuration within {}s (the running one keeps serving){}", RELOAD_TIMEOUT.as_secs(), log_lines(.log_tail))]
    ReloadFailed { host: String, log_tail: Vec<String> },
    #[error("the HTTPS front of the ingress on host {host} refused its new configuration (the running one keeps serving): {detail}")]
    TlsRefused { host: String, detail: String },
    #[error("the ingress on host {host} is being changed by another Berth ({holder}); waited {}s. Try again when it has finished; a lock left by a killed process expires after {}s", LOCK_WAIT.as_secs(), LOCK_STALE.as_secs())]
    Busy { host: String, holder: String },
    #[error("{}", .0.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; "))]
    Conflict(Vec<Conflict>),
    #[error("the ingress image {reference} for host {host} cannot be used: {detail}. Check the ingress `image`/`tls_image` setting (hosts without internet access need an image from a registry they reach)")]
    Image {
        host: String,
        reference: String,
        detail: String,
    },
}

fn log_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("\nLast log lines:\n  {}", lines.join("\n  "))
    }
}

/// Times a deploy tries to create a host's missing proxy when another
/// Berth's creation takes the name and then removes the container.
const CREATE_ATTEMPTS: u32 = 3;

/// The ingress of one host.
pub struct IngressHost<'a> {
    host: &'a DockerHost,
    settings: &'a IngressSettings,
    test_label: bool,
}

/// How [`IngressHost::probe_until_healthy`] decides, from the app's
/// health check.
#[derive(Clone, Copy, Debug)]
pub struct ProbeGate {
    pub timeout: Duration,
    pub interval: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// What is left of the start period.
    pub start_period: Duration,
}

impl ProbeGate {
    /// The start period, then room for both thresholds' probes.
    fn hard_limit(&self) -> Duration {
        self.start_period
            + (self.interval + self.timeout)
                * (self.healthy_threshold.max(1) + self.unhealthy_threshold.max(1))
    }
}

impl<'a> IngressHost<'a> {
    pub fn new(host: &'a DockerHost, settings: &'a IngressSettings, test_label: bool) -> Self {
        IngressHost {
            host,
            settings,
            test_label,
        }
    }

    /// The ingress as it is: its containers (from `list`, the host's list
    /// result) and, when the proxy exists, the files of its volume (one
    /// archive read).
    pub async fn view(&self, list: &[Observed]) -> Result<IngressView, DockerError> {
        let containers = IngressView::containers(list);
        match &containers.proxy {
            Some(proxy) => self.view_of(proxy, containers.tls.clone()).await,
            None => Ok(containers),
        }
    }

    /// The view of a host whose proxy container is `proxy`.
    async fn view_of(
        &self,
        proxy: &Observed,
        tls: Option<Observed>,
    ) -> Result<IngressView, DockerError> {
        let mut view = IngressView {
            proxy: Some(proxy.clone()),
            tls,
            ..IngressView::default()
        };
        let Some(tar) = self.host.download(&proxy.id, VOLUME_PATH).await? else {
            return Ok(view);
        };
        let files = parse_files(&tar);
        view.routes = files.routes;
        view.unreadable = files.unreadable;
        view.haproxy_cfg = files.haproxy_cfg;
        view.caddy_json = files.caddy_json;
        view.settings = files.settings;
        Ok(view)
    }

    /// The proxy configuration `routes` render to on this host.
    pub fn haproxy_cfg(&self, routes: &HostRoutes) -> String {
        haproxy::render(routes, self.settings, self.host.publish_address())
    }

    /// The HTTPS front's configuration, if the host needs one.
    pub fn caddy_json(&self, routes: &HostRoutes) -> Option<String> {
        caddy::render(routes, self.settings, self.host.publish_address())
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
    }

    /// Gives `change.app` the routes `change.routes` on this host (empty:
    /// none), or with no change makes sure the ingress runs: creates the
    /// proxy when it is missing or was made from another image (keeping
    /// every app's routes, which live in the volume), starts a stopped one,
    /// and under the host's ingress lock (in the volume: it holds across
    /// Berth processes whatever store they use) re-reads the routes,
    /// checks that no other app has the public ports and domains asked
    /// for, writes the files that differ and reloads. On any failure the
    /// files are put back as they were and the running configuration keeps
    /// serving.
    pub async fn switch(
        &self,
        list: &[Observed],
        change: Option<&AppRoutes>,
        images: &dyn PinImage,
    ) -> Result<SwitchOutcome, IngressError> {
        self.switch_from(list, None, change, images).await
    }

    /// [`IngressHost::switch`] from a view just read (saves reading the
    /// volume again; a race with another Berth is caught all the same).
    pub async fn switch_from(
        &self,
        list: &[Observed],
        read: Option<IngressView>,
        change: Option<&AppRoutes>,
        images: &dyn PinImage,
    ) -> Result<SwitchOutcome, IngressError> {
        let mut outcome = SwitchOutcome::default();
        let mut containers = IngressView::containers(list);
        // Taking an app's routes away changes nothing else: not the image,
        // not the settings the others were written with.
        let removal = change.is_some_and(|c| c.services.is_empty());
        if let Some(old) = containers.proxy.as_ref().filter(|p| {
            !removal && p.label(labels::IMAGE_REF) != Some(self.settings.image.as_str())
        }) {
            // Made from another image: a brief interruption on this host.
            self.host.remove(&old.id).await?;
            containers.proxy = None;
            outcome.steps.push(format!(
                "recreated the ingress on host {} for its new image (a brief interruption)",
                self.host.name()
            ));
        }
        let proxy = match containers.proxy.clone() {
            Some(p) => p,
            None => {
                // Another Berth may create the proxy meanwhile (then this
                // goes on with that one), or create it and remove it again
                // when it failed to start: then this creates it itself, a
                // bounded number of times.
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self.create_proxy(change, images).await? {
                        Created::Started(id, routes) => {
                            outcome.proxy_id = id;
                            outcome.changed = true;
                            outcome
                                .steps
                                .push(format!("started the ingress on host {}", self.host.name()));
                            let view = IngressView {
                                routes,
                                ..containers.clone()
                            };
                            self.switch_tls(&view, images, &mut outcome).await?;
                            return Ok(outcome);
                        }
                        Created::Taken => {
                            let list = self.host.list_managed().await?;
                            if let Some(p) = IngressView::containers(&list).proxy {
                                break p;
                            }
                            if attempt == CREATE_ATTEMPTS {
                                return Err(IngressError::ReloadFailed {
                                    host: self.host.name().to_owned(),
                                    log_tail: vec![format!(
                                        "the ingress container vanished while being created, {attempt} times (another Berth created and removed it)"
                                    )],
                                });
                            }
                        }
                    }
                }
            }
        };
        outcome.proxy_id = proxy.id.clone();
        if proxy.state != ContainerState::Running {
            self.host.restart_stopped(&proxy.id).await?;
            self.wait_first_worker(&proxy.id).await?;
            outcome.steps.push(format!(
                "started the stopped ingress on host {} again",
                self.host.name()
            ));
        }
        // Read, render, and swap in one command that takes the host's lock
        // and checks the file is still the one read (compare and swap); on
        // a race with another Berth, read again.
        let mut attempt = 0;
        let mut read = read.filter(|v| {
            proxy.state == ContainerState::Running
                && v.proxy.as_ref().map(|p| &p.id) == Some(&proxy.id)
        });
        loop {
            attempt += 1;
            let view = match read.take() {
                Some(view) => view,
                None => self.view_of(&proxy, containers.tls.clone()).await?,
            };
            let recorded_settings = view.settings.clone();
            let recorded;
            let this = match (&recorded_settings, removal) {
                (Some(settings), true) => {
                    recorded = IngressHost::new(self.host, settings, self.test_label);
                    &recorded
                }
                _ => self,
            };
            let routes = apply_change(&view.routes, change, self.host.name())?;
            // The last app leaving keeps the ingress running, with no
            // routes: it is the host's, not an app's, and another Berth may
            // be starting an app on it at this moment (removing it then
            // cut that deploy's probes and switch).
            let cfg = this.haproxy_cfg(&routes);
            let same = view.haproxy_cfg.as_deref() == Some(cfg.as_str()) && !view.unreadable;
            if !same || proxy.state != ContainerState::Running {
                let caddy = this.caddy_json(&routes);
                let files = volume_files(&cfg, caddy.as_deref());
                match this.swap(&proxy.id, &view, &files, true).await {
                    Ok(old) => {
                        outcome.old_workers = old;
                        outcome.changed = true;
                    }
                    Err(Swap::Raced) if attempt < SWAP_ATTEMPTS => continue,
                    Err(Swap::Raced) => {
                        return Err(IngressError::Busy {
                            host: self.host.name().to_owned(),
                            holder: format!(
                                "its configuration changed under {SWAP_ATTEMPTS} attempts in a row"
                            ),
                        })
                    }
                    Err(Swap::Failed(e)) => return Err(e),
                }
            }
            let view = IngressView { routes, ..view };
            this.switch_tls(&view, images, &mut outcome).await?;
            return Ok(outcome);
        }
    }

    /// Removes both containers (the volumes stay: the routes files are
    /// empty by then, and Caddy's certificates are worth keeping).
    pub async fn remove(&self, view: &IngressView) -> Result<(), DockerError> {
        for c in [&view.tls, &view.proxy].into_iter().flatten() {
            self.host.remove(&c.id).await?;
        }
        Ok(())
    }

    /// The proxy's worker processes now (children of its master, PID 1).
    pub async fn workers(&self, proxy_id: &str) -> Result<Vec<u32>, DockerError> {
        let script = format!("{WORKERS_FN} workers; true");
        let out = self
            .host
            .exec(proxy_id, &argv(&["sh", "-c", &script]), EXEC_TIMEOUT)
            .await?;
        let mut pids: Vec<u32> = out
            .stdout_text()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// Waits until none of `old` workers is left (they exit once their
    /// in-flight requests are done), at most `limit`. True when drained.
    pub async fn wait_drained(
        &self,
        proxy_id: &str,
        old: &[u32],
        limit: Duration,
    ) -> Result<bool, DockerError> {
        if old.is_empty() {
            return Ok(true);
        }
        let start = Instant::now();
        loop {
            let now = self.workers(proxy_id).await?;
            if !old.iter().any(|p| now.contains(p)) {
                return Ok(true);
            }
            if start.elapsed() >= limit {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GETs `path` from `address` (`ip:port`) from inside the proxy
    /// container, the way the proxy reaches it: `Ok` with the status line
    /// of the answer, `Err` with why there was none.
    pub async fn probe(
        &self,
        proxy_id: &str,
        address: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Result<String, String>, DockerError> {
        let (ip, port) = address.rsplit_once(':').unwrap_or((address, "80"));
        // bash's /dev/tcp: the official HAProxy image (Debian) has bash
        // and coreutils' timeout, but no HTTP client.
        let script = "exec 3<>\"/dev/tcp/$0/$1\" || exit 7; printf 'GET %s HTTP/1.1\\r\\nHost: %s:%s\\r\\nUser-Agent: berth-probe\\r\\nConnection: close\\r\\n\\r\\n' \"$2\" \"$0\" \"$1\" >&3; IFS= read -r line <&3; printf '%s\\n' \"$line\"";
        let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
        let out = self
            .host
            .exec(
                proxy_id,
                &argv(&[
                    "timeout",
                    &secs.to_string(),
                    "bash",
                    "-c",
                    script,
                    ip,
                    port,
                    path,
                ]),
                timeout + EXEC_TIMEOUT,
            )
            .await?;
        let line = out
            .stdout_text()
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        Ok(match out.exit_code {
            0 if !line.is_empty() => Ok(line),
            0 => Err("the connection closed without an answer".into()),
            7 => Err(format!(
                "connection refused or unreachable ({})",
                first_line(&out.stderr_text())
            )),
            124 | 143 => Err(format!("timed out after {secs}s")),
            code => Err(format!(
                "probe exited with {code}: {}",
                first_line(&out.stderr_text())
            )),
        })
    }

    /// Probes `address` from inside the proxy container every
    /// `gate.interval` until `gate.healthy_threshold` answers in a row are
    /// 2xx or 3xx (`Ok` with the last answer), or, after the start period,
    /// `gate.unhealthy_threshold` in a row were not, or the gate's bound
    /// has passed (`Err` with the last answer, in words): one command for
    /// the whole wait, where one per probe would cost three API calls
    /// each. A refused connection during the start period is tried again
    /// after 50 ms.
    pub async fn probe_until_healthy(
        &self,
        proxy_id: &str,
        address: &str,
        path: &str,
        gate: ProbeGate,
    ) -> Result<Result<String, String>, DockerError> {
        let (ip, port) = address.rsplit_once(':').unwrap_or((address, "80"));
        let secs = gate.timeout.as_secs_f64().ceil().max(1.0) as u64;
        // The same count as the engine's own gate (engine::rollout::Gate):
        // `need` successes in a row; after the start period (`limit`),
        // `bad_need` failures in a row; `hard` bounds a flapping instance.
        let script = "ip=$0; port=$1; path=$2; pause=$3; need=$4; limit=$5; t=$6; bad_need=$7; hard=$8; \
            start=$(date +%s); ok=0; bad=0; last='not probed yet'; \
            while :; do \
              line=$(timeout \"$t\" bash -c 'exec 3<>\"/dev/tcp/$0/$1\" || exit 7; printf \"GET %s HTTP/1.1\\r\\nHost: %s:%s\\r\\nUser-Agent: berth-probe\\r\\nConnection: close\\r\\n\\r\\n\" \"$2\" \"$0\" \"$1\" >&3; IFS= read -r l <&3; printf \"%s\\n\" \"$l\"' \"$ip\" \"$port\" \"$path\" 2>/dev/null); rc=$?; \
              set -- ${line%$'\\r'}; \
              elapsed=$(( $(date +%s) - start )); \
              case \"$2\" in \
                2??|3??) ok=$((ok+1)); bad=0; last=\"HTTP $2\";; \
                '') ok=0; [ $elapsed -ge \"$limit\" ] && bad=$((bad+1)); case $rc in 7) last='no answer: connection refused';; 124|143) last=\"no answer: timed out after ${t}s\";; *) last='no answer: the connection closed without an answer';; esac;; \
                *) ok=0; [ $elapsed -ge \"$limit\" ] && bad=$((bad+1)); last=\"HTTP $2\";; \
              esac; \
              [ $ok -ge \"$need\" ] && { echo \"healthy $last\"; exit 0; }; \
              [ $bad -ge \"$bad_need\" ] && { echo \"unhealthy $last; $bad probes in a row failed after the start period (unhealthy_threshold)\"; exit 1; }; \
              [ $elapsed -ge \"$hard\" ] && { echo \"unhealthy $last\"; exit 1; }; \
              if [ \"$rc\" = 7 ] && [ $elapsed -lt \"$limit\" ]; then sleep 0.05; else sleep \"$pause\"; fi; \
            done";
        let limit_secs = gate.start_period.as_secs_f64().ceil().max(1.0) as u64;
        let hard = gate.hard_limit();
        let hard_secs = hard.as_secs_f64().ceil().max(1.0) as u64;
        let out = self
            .host
            .exec(
                proxy_id,
                &argv(&[
                    "bash",
                    "-c",
                    script,
                    ip,
                    port,
                    path,
                    &format!("{:.3}", gate.interval.as_secs_f64()),
                    &gate.healthy_threshold.max(1).to_string(),
                    &limit_secs.to_string(),
                    &secs.to_string(),
                    &gate.unhealthy_threshold.max(1).to_string(),
                    &hard_secs.to_string(),
                ]),
                hard + gate.timeout + EXEC_TIMEOUT,
            )
            .await?;
        let line = out.stdout_text();
        let line = line.lines().last().unwrap_or("").trim();
        Ok(match (out.exit_code, line.split_once(' ')) {
            (0, Some(("healthy", last))) => Ok(last.to_owned()),
            (_, Some((_, last))) => Err(last.to_owned()),
            _ => Err(format!(
                "the probe ended with {}: {}",
                out.exit_code,
                first_line(&out.stderr_text())
            )),
        })
    }

    // ------------------------------------------------------------ internals

    async fn pin(&self, images: &dyn PinImage, reference: &str) -> Result<String, IngressError> {
        images
            .pin(reference)
            .await
            .map_err(|detail| IngressError::Image {
                host: self.host.name().to_owned(),
                reference: reference.to_owned(),
                detail,
            })
    }

    fn base_labels(&self, kind: &str, image_ref: &str, pinned: &str) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            (labels::MANAGED.to_owned(), labels::MANAGED_VALUE.to_owned()),
            (labels::KIND.to_owned(), kind.to_owned()),
            (labels::HOST.to_owned(), self.host.name().to_owned()),
            (labels::IMAGE_REF.to_owned(), image_ref.to_owned()),
        ]);
        if let Some((_, digest)) = pinned.split_once('@') {
            l.insert(labels::DIGEST.to_owned(), digest.to_owned());
        }
        if self.test_label {
            l.insert(labels::TEST.to_owned(), "1".to_owned());
        }
        l
    }

    /// Creates the proxy container, reads the routes its volume already
    /// holds (a proxy removed by hand leaves them there), applies `change`,
    /// writes the files and starts it.
    async fn create_proxy(
        &self,
        change: Option<&AppRoutes>,
        images: &dyn PinImage,
    ) -> Result<Created, IngressError> {
        let pinned = self.pin(images, &self.settings.image).await?;
        let volume_labels = self.base_labels(labels::kind::INGRESS, &self.settings.image, &pinned);
        self.host.ensure_volume(VOLUME, &volume_labels).await?;
        self.host.pull(&pinned, None).await?;
        let spec = ContainerSpec {
            name: PROXY_CONTAINER.to_owned(),
            image: pinned.clone(),
            entrypoint: Some(argv(&["haproxy"])),
            command: Some(argv(&[
                "-W",
                "-db",
                "-f",
                &format!("{VOLUME_PATH}/haproxy.cfg"),
            ])),
            labels: self.base_labels(labels::kind::INGRESS, &self.settings.image, &pinned),
            host_network: true,
            volumes: vec![(VOLUME.to_owned(), VOLUME_PATH.to_owned())],
            // Binding ports below 1024 in the host's namespace; the
            // workers drop to `nobody` (see `haproxy`).
            user: Some("0".to_owned()),
            restart: RestartPolicy::UnlessStopped,
            ..Default::default()
        };
        let id = match self.host.create(&spec).await {
            Ok(id) => id,
            Err(DockerError::Conflict { .. }) => return Ok(Created::Taken),
            Err(e) => return Err(e.into()),
        };
        let made = async {
            let held = match self.host.download(&id, VOLUME_PATH).await? {
                Some(tar) => parse_files(&tar).routes,
                None => HostRoutes::new(),
            };
            let routes = apply_change(&held, change, self.host.name())?;
            let cfg = self.haproxy_cfg(&routes);
            let caddy = self.caddy_json(&routes);
            let mut files = volume_files(&cfg, caddy.as_deref());
            if caddy.is_none() {
                files.retain(|(path, _)| path != "caddy.json");
            }
            self.host.upload(&id, VOLUME_PATH, tar_of(&files)).await?;
            self.host.start(&id, PROXY_CONTAINER).await?;
            self.wait_first_worker(&id).await?;
            Ok::<_, IngressError>(routes)
        }
        .await;
        match made {
            Ok(routes) => Ok(Created::Started(id, routes)),
            Err(e) => {
                if let Err(cleanup) = self.host.remove(&id).await {
                    tracing::warn!(host = %self.host.name(), error = %cleanup, "could not remove the ingress that failed to start");
                }
                Err(e)
            }
        }
    }

    async fn wait_first_worker(&self, id: &str) -> Result<(), IngressError> {
        let start = Instant::now();
        while start.elapsed() < RELOAD_TIMEOUT {
            match self.workers(id).await {
                Ok(w) if !w.is_empty() => return Ok(()),
                Ok(_) => {}
                // Not running (yet, or any more): the log says why.
                Err(DockerError::Conflict { .. }) => break,
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(POLL).await;
        }
        Err(self.start_failure(id).await)
    }

    /// Puts `files` in place and, when `reload`, reloads: one command that
    /// takes the host's ingress lock (a directory made atomically by
    /// `mkdir` in the volume, which holds across Berth processes whatever
    /// store they use; one older than [`LOCK_STALE`] was left by a process
    /// that died and is taken over), checks the configuration file is
    /// still the one `view` read (else [`Swap::Raced`]), moves the new
    /// files in, checks the configuration (the old files go back if HAProxy
    /// refuses it), signals the reload, waits for the new worker, and
    /// releases the lock. Returns the workers from before.
    async fn swap(
        &self,
        proxy_id: &str,
        view: &IngressView,
        files: &[(String, Vec<u8>)],
        reload: bool,
    ) -> Result<Vec<u32>, Swap> {
        // A reload that cannot bind a port pauses every listener of the
        // running worker while it retries (refused connections for a
        // second or more): test the new ports first, with HAProxy itself.
        let new_cfg = files
            .iter()
            .find(|(p, _)| p == "haproxy.cfg")
            .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        let old_binds = binds(view.haproxy_cfg.as_deref().unwrap_or(""));
        let new_binds: Vec<String> = binds(&new_cfg)
            .into_iter()
            .filter(|b| !old_binds.contains(b))
            .collect();
        if reload && !new_binds.is_empty() {
            self.check_binds(proxy_id, &new_binds).await?;
        }
        let since = unix_now();
        // Staged under names of this attempt's own: two Berths staging at
        // once must not swap in each other's files.
        let owner = format!("{}-{}", std::process::id(), lock_token());
        let staged: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(path, data)| (format!("{path}.{owner}.new"), data.clone()))
            .collect();
        self.host
            .upload(proxy_id, VOLUME_PATH, tar_of(&staged))
            .await
            .map_err(IngressError::from)?;
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        let expected = match &view.haproxy_cfg {
            Some(cfg) => hex::encode(sha2::Sha256::digest(cfg.as_bytes())),
            None => "none".to_owned(),
        };
        let script = swap_script(&names, reload);
        let out = self
            .host
            .exec(
                proxy_id,
                &argv(&[
                    "sh",
                    "-c",
                    &script,
                    &owner,
                    &expected,
                    &LOCK_STALE.as_secs().to_string(),
                    &(LOCK_WAIT.as_millis() / 100).to_string(),
                ]),
                LOCK_WAIT + RELOAD_TIMEOUT + EXEC_TIMEOUT,
            )
            .await
            .map_err(IngressError::from)?;
        let stdout = out.stdout_text();
        match out.exit_code {
            0 => Ok(stdout
                .lines()
                .find_map(|l| l.strip_prefix("old"))
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()),
            6 => Err(Swap::Raced),
            1 => Err(Swap::Failed(IngressError::Busy {
                host: self.host.name().to_owned(),
                holder: stdout
                    .lines()
                    .last()
                    .unwrap_or("another process")
                    .to_owned(),
            })),
            3 => Err(Swap::Failed(IngressError::Refused {
                host: self.host.name().to_owned(),
                detail: stdout.trim().to_owned(),
            })),
            4 => {
                let log = self.host.log_since(proxy_id, since).await;
                Err(Swap::Failed(self.reload_failure(log).await))
            }
            code => Err(Swap::Failed(IngressError::Refused {
                host: self.host.name().to_owned(),
                detail: format!(
                    "writing the configuration ended with {code}: {} {}",
                    stdout.trim(),
                    out.stderr_text()
                ),
            })),
        }
    }

    /// Binds `addresses` (`ip:port`) for a moment with a throwaway HAProxy
    /// in the proxy container; the first one that cannot be had, as the
    /// reload would have found it.
    async fn check_binds(&self, proxy_id: &str, addresses: &[String]) -> Result<(), IngressError> {
        let mut cfg = String::from(
            "defaults\n  mode http\n  timeout client 1s\n  timeout server 1s\n  timeout connect 1s\nfrontend bind_test\n",
        );
        for a in addresses {
            cfg.push_str(&format!("  bind {a}\n"));
        }
        cfg.push_str("  http-request return status 503\n");
        let script = "f=/tmp/berth-bind-test-$$.cfg; printf '%s' \"$0\" > $f && timeout 1 haproxy -db -f $f; rc=$?; rm -f $f; exit $rc";
        let out = self
            .host
            .exec(proxy_id, &argv(&["sh", "-c", script, &cfg]), EXEC_TIMEOUT)
            .await?;
        let text = format!("{}\n{}", out.stdout_text(), out.stderr_text());
        // Still running when `timeout` stopped it: every address bound.
        if matches!(out.exit_code, 124 | 143) {
            return Ok(());
        }
        match text.lines().find_map(bind_failure) {
            Some(failure) => Err(self.port_in_use(failure).await),
            None => Err(IngressError::Refused {
                host: self.host.name().to_owned(),
                detail: format!(
                    "testing the new ports ({}) ended with {}: {}",
                    addresses.join(", "),
                    out.exit_code,
                    last_line(&text)
                ),
            }),
        }
    }

    async fn port_in_use(&self, (address, port): (String, u16)) -> IngressError {
        let holder = match self.host.port_holders(port).await {
            Ok(names) if !names.is_empty() => format!("the container(s) {}", names.join(", ")),
            _ => format!("a process outside Docker (see `ss -ltnp 'sport = :{port}'` on the host)"),
        };
        IngressError::PortInUse {
            host: self.host.name().to_owned(),
            address,
            port,
            holder,
        }
    }

    async fn reload_failure(&self, log: Vec<String>) -> IngressError {
        if let Some(failure) = log.iter().rev().find_map(|l| bind_failure(l)) {
            return self.port_in_use(failure).await;
        }
        let alerts: Vec<String> = log
            .iter()
            .filter(|l| l.contains("[ALERT]"))
            .cloned()
            .collect();
        IngressError::ReloadFailed {
            host: self.host.name().to_owned(),
            log_tail: if alerts.is_empty() {
                log[log.len().saturating_sub(10)..].to_vec()
            } else {
                alerts
            },
        }
    }

    async fn start_failure(&self, id: &str) -> IngressError {
        let tail = self.host.log_tail(id, 100).await;
        let failure = self.reload_failure(tail).await;
        // A container that cannot bind its ports restarts forever: remove
        // it, so the next apply starts from scratch.
        if let Err(e) = self.host.remove(id).await {
            tracing::warn!(host = %self.host.name(), error = %e, "could not remove the ingress that failed to start");
        }
        failure
    }

    /// Brings the HTTPS front in line with `view.routes` (the routes now
    /// written): started, reloaded or removed.
    async fn switch_tls(
        &self,
        view: &IngressView,
        images: &dyn PinImage,
        outcome: &mut SwitchOutcome,
    ) -> Result<(), IngressError> {
        let caddy = self.caddy_json(&view.routes);
        let caddy = caddy.as_deref();
        let current = view
            .tls
            .as_ref()
            .filter(|c| c.label(labels::IMAGE_REF) == Some(self.settings.tls_image.as_str()));
        let Some(caddy) = caddy else {
            if let Some(tls) = &view.tls {
                self.host.remove(&tls.id).await?;
                outcome.steps.push(format!(
                    "removed the HTTPS front on host {} (no domains left)",
                    self.host.name()
                ));
            }
            return Ok(());
        };
        if let (Some(old), None) = (&view.tls, current) {
            self.host.remove(&old.id).await?;
        }
        match current {
            None => {
                let pinned = self.pin(images, &self.settings.tls_image).await?;
                let labels =
                    self.base_labels(labels::kind::INGRESS_TLS, &self.settings.tls_image, &pinned);
                self.host.ensure_volume(TLS_DATA_VOLUME, &labels).await?;
                self.host.ensure_volume(TLS_CONFIG_VOLUME, &labels).await?;
                self.host.pull(&pinned, None).await?;
                let spec = ContainerSpec {
                    name: TLS_CONTAINER.to_owned(),
                    image: pinned.clone(),
                    entrypoint: Some(argv(&["caddy"])),
                    command: Some(argv(&[
                        "run",
                        "--config",
                        &format!("{VOLUME_PATH}/caddy.json"),
                    ])),
                    labels,
                    host_network: true,
                    volumes: vec![
                        (VOLUME.to_owned(), VOLUME_PATH.to_owned()),
                        (TLS_DATA_VOLUME.to_owned(), "/data".to_owned()),
                        (TLS_CONFIG_VOLUME.to_owned(), "/config".to_owned()),
                    ],
                    user: Some("0".to_owned()),
                    env: BTreeMap::from([
                        ("XDG_CONFIG_HOME".to_owned(), "/config".to_owned()),
                        ("XDG_DATA_HOME".to_owned(), "/data".to_owned()),
                    ]),
                    restart: RestartPolicy::UnlessStopped,
                    ..Default::default()
                };
                match self.host.create_and_start(&spec).await {
                    Ok(id) => {
                        self.wait_tls_up(&id).await?;
                        outcome.steps.push(format!(
                            "started the HTTPS front on host {}",
                            self.host.name()
                        ));
                    }
                    // Another Berth started it meanwhile; it reads the same
                    // configuration file: have it read that once more.
                    Err(DockerError::Conflict { .. }) => {
                        if let Some(tls) = self
                            .host
                            .list_managed()
                            .await?
                            .into_iter()
                            .find(|o| o.label(labels::KIND) == Some(labels::kind::INGRESS_TLS))
                        {
                            self.wait_tls_up(&tls.id).await?;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Some(tls) => {
                if tls.state != ContainerState::Running {
                    self.host.restart_stopped(&tls.id).await?;
                    self.wait_tls_up(&tls.id).await?;
                } else if view.caddy_json.as_deref() != Some(caddy) {
                    let out = self
                        .host
                        .exec(
                            &tls.id,
                            &argv(&[
                                "caddy",
                                "reload",
                                "--config",
                                &format!("{VOLUME_PATH}/caddy.json"),
                                "--address",
                                &format!("unix/{TLS_ADMIN_SOCKET}"),
                            ]),
                            EXEC_TIMEOUT,
                        )
                        .await?;
                    if out.exit_code != 0 {
                        return Err(IngressError::TlsRefused {
                            host: self.host.name().to_owned(),
                            detail: last_line(&out.stderr_text()),
                        });
                    }
                    outcome.steps.push(format!(
                        "reloaded the HTTPS front on host {} for its new domains",
                        self.host.name()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Waits until Caddy's admin socket answers a reload of the same file
    /// (a no-op for Caddy), so a started front is known to serve.
    async fn wait_tls_up(&self, id: &str) -> Result<(), IngressError> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < RELOAD_TIMEOUT {
            match self
                .host
                .exec(
                    id,
                    &argv(&[
                        "caddy",
                        "reload",
                        "--config",
                        &format!("{VOLUME_PATH}/caddy.json"),
                        "--address",
                        &format!("unix/{TLS_ADMIN_SOCKET}"),
                    ]),
                    EXEC_TIMEOUT,
                )
                .await
            {
                Ok(out) if out.exit_code == 0 => return Ok(()),
                Ok(out) => last = last_line(&out.stderr_text()),
                Err(DockerError::Conflict { .. }) => break,
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut tail = self.host.log_tail(id, 20).await;
        if !last.is_empty() {
            tail.push(last);
        }
        Err(IngressError::TlsRefused {
            host: self.host.name().to_owned(),
            detail: tail.join("; "),
        })
    }
}

/// `held` with `change` applied (an app's routes replaced, or removed when
/// empty), refused when another app has a port or domain asked for.
fn apply_change(
    held: &HostRoutes,
    change: Option<&AppRoutes>,
    host: &str,
) -> Result<HostRoutes, IngressError> {
    let mut routes = held.clone();
    let Some(change) = change else {
        return Ok(routes);
    };
    if change.services.is_empty() {
        routes.remove(&change.app);
        return Ok(routes);
    }
    let exposures = change
        .services
        .iter()
        .map(|(k, v)| (k.clone(), v.exposure.clone()))
        .collect();
    let conflicts = routes::conflicts(host, held, &exposures, &change.app);
    if !conflicts.is_empty() {
        return Err(IngressError::Conflict(conflicts));
    }
    routes.insert(change.app.clone(), change.clone());
    Ok(routes)
}

/// What the files of the volume say.
struct VolumeFiles {
    routes: HostRoutes,
    unreadable: bool,
    settings: Option<IngressSettings>,
    haproxy_cfg: Option<String>,
    caddy_json: Option<String>,
}

fn parse_files(tar: &[u8]) -> VolumeFiles {
    volume_files_from(files_of(tar))
}

fn volume_files_from(files: Vec<(String, Vec<u8>)>) -> VolumeFiles {
    let mut out = VolumeFiles {
        routes: HostRoutes::new(),
        unreadable: false,
        settings: None,
        haproxy_cfg: None,
        caddy_json: None,
    };
    for (path, data) in files {
        let text = String::from_utf8_lossy(&data).into_owned();
        match path.as_str() {
            "haproxy.cfg" => {
                match haproxy::routes_in(&text) {
                    Some((routes, settings)) => {
                        out.routes = routes;
                        out.settings = Some(settings);
                    }
                    None => out.unreadable = true,
                }
                out.haproxy_cfg = Some(text);
            }
            "caddy.json" => out.caddy_json = Some(text),
            _ => {}
        }
    }
    out
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A random token naming this holder of the lock.
fn lock_token() -> String {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    hex::encode(b)
}

/// The files of the ingress volume: the proxy configuration (which holds
/// the routes) and the HTTPS front's, if any.
fn volume_files(cfg: &str, caddy: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![("haproxy.cfg".to_owned(), cfg.as_bytes().to_vec())];
    if let Some(caddy) = caddy {
        files.push(("caddy.json".to_owned(), caddy.as_bytes().to_vec()));
    }
    files
}

/// A tar archive of `files` (paths relative to the volume), with the
/// `run/` directory for the proxy's socket.
fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    let _ = tar.append_data(&mut header, "run/", std::io::empty());
    for (path, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        let _ = tar.append_data(&mut header, path, data.as_slice());
    }
    tar.into_inner().unwrap_or_default()
}

/// The regular files of a tar archive downloaded from `VOLUME_PATH`, with
/// paths relative to it.
fn files_of(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar);
    let Ok(entries) = archive.entries() else {
        return out;
    };
    let root = VOLUME_PATH.trim_start_matches('/');
    for entry in entries.flatten() {
        let mut entry = entry;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let Ok(path) = entry.path().map(|p| p.display().to_string()) else {
            continue;
        };
        let rel = path
            .strip_prefix(root)
            .map(|p| p.trim_start_matches('/'))
            .unwrap_or(&path)
            .to_owned();
        let mut data = Vec::new();
        if entry.read_to_end(&mut data).is_ok() {
            out.push((rel, data));
        }
    }
    out
}

/// The TCP addresses a configuration binds (`bind ip:port` lines).
fn binds(cfg: &str) -> Vec<String> {
    cfg.lines()
        .filter_map(|l| l.trim_start().strip_prefix("bind "))
        .filter(|b| !b.starts_with("unix@"))
        .map(|b| b.trim().to_owned())
        .collect()
}

/// The address and port of HAProxy's "cannot bind socket … for [ADDR:PORT]".
fn bind_failure(line: &str) -> Option<(String, u16)> {
    if !line.contains("cannot bind") {
        return None;
    }
    let inside = line.rsplit_once('[')?.1.split(']').next()?;
    let (address, port) = inside.rsplit_once(':')?;
    Some((
        address.trim_matches(['[', ']']).to_owned(),
        port.parse().ok()?,
    ))
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_owned()
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_failures_name_the_port() {
        let line = "[ALERT]    (1) : Binding [/berth/haproxy.cfg:30] for frontend port_18080: cannot bind socket (Address already in use) for [127.0.0.1:18080]";
        assert_eq!(bind_failure(line), Some(("127.0.0.1".into(), 18080)));
        assert_eq!(bind_failure("[NOTICE] Loading success."), None);
    }

    #[test]
    fn binds_are_the_tcp_listeners() {
        let cfg = "frontend internal\n  bind unix@/berth/run/http.sock mode 666\nfrontend port_1\n  bind 127.0.0.1:18080\n";
        assert_eq!(binds(cfg), vec!["127.0.0.1:18080".to_string()]);
    }

    #[test]
    fn files_round_trip_through_tar() {
        let files = vec![
            ("haproxy.cfg".to_owned(), b"global\n".to_vec()),
            ("caddy.json".to_owned(), b"{}".to_vec()),
        ];
        // Docker's archive of a directory names entries after it.
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in &files {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, format!("berth/{path}"), data.as_slice())
                .unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        assert_eq!(files_of(&bytes), files);
        // Ours carries the directories too, and parses back the same.
        assert_eq!(files_of(&tar_of(&files)), files);
    }
}
