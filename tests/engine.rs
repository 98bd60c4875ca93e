//! The engine against the real Docker Engine and registry, without
//! terraform: deploy leases (one deploy per app; a dead owner's lease
//! expires) and the releases journal.

#[path = "support/latency_relay.rs"]
mod latency_relay;
mod support;

use std::time::Duration;

use berth::devtools::fixtures::{self, PLAIN_REGISTRY};
use berth::docker::Hosts;
use berth::engine::spec::AppSpec;
use berth::engine::{DeployError, Engine, Target};
use berth::store::{LeaseOutcome, ReleaseOutcome, Store, StoreOptions};
use support::{app_containers, block_on, require_env, unique_app, AppGuard};

fn spec(name: &str, image: &str) -> AppSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "image": image,
        "services": {"web": {"http_port": 8080}}
    }))
    .expect("spec")
}

async fn engine(dir: &std::path::Path) -> Engine {
    let store = Store::open(StoreOptions::in_dir(dir.to_path_buf(), None))
        .await
        .expect("store");
    let hosts = Hosts::local(std::env::var("DOCKER_HOST").ok().as_deref()).expect("hosts");
    Engine::new(hosts, store).with_test_label(true)
}

fn target(name: &str, pushed: &fixtures::Pushed) -> Target {
    let repo = pushed
        .reference
        .rsplit_once(':')
        .map(|(r, _)| r)
        .unwrap_or(&pushed.reference);
    Target {
        spec: spec(name, &pushed.reference),
        digest: pushed.digest.clone(),
        pinned: format!("{repo}@{}", pushed.digest),
        login: None,
        trigger: "test".into(),
    }
}

#[test]
fn a_held_lease_makes_a_second_deploy_wait_then_fail_clearly() {
    require_env();
    let name = unique_app("eng-lease");
    let _guard = AppGuard(name.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let set = fixtures::push_all(PLAIN_REGISTRY).await.expect("fixtures");
        let engine = engine(dir.path())
            .await
            .with_lock_wait(Duration::from_millis(800));
        // Another deploy (another process) holds the lease.
        let held = engine
            .store
            .acquire_lease(
                name.clone(),
                "other-host:4242:abcdef".into(),
                Duration::from_secs(60),
            )
            .await
            .expect("lease");
        assert!(matches!(held, LeaseOutcome::Acquired { .. }), "{held:?}");
        let err = engine
            .deploy(&target(&name, &set.demo_v1))
            .await
            .unwrap_err();
        assert!(matches!(err, DeployError::Busy { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("another deploy"), "{msg}");
        assert!(msg.contains("other-host:4242:abcdef"), "{msg}");
        assert!(
            app_containers(&name).is_empty(),
            "nothing started while locked out"
        );
    });
}

#[test]
fn a_lease_left_by_a_dead_process_expires() {
    require_env();
    let name = unique_app("eng-expire");
    let _guard = AppGuard(name.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let set = fixtures::push_all(PLAIN_REGISTRY).await.expect("fixtures");
        let engine = engine(dir.path())
            .await
            .with_lock_wait(Duration::from_secs(10));
        // A killed process never releases: its lease just stops being renewed.
        engine
            .store
            .acquire_lease(
                name.clone(),
                "dead:1:000000".into(),
                Duration::from_millis(700),
            )
            .await
            .expect("lease");
        let out = engine
            .deploy(&target(&name, &set.demo_v1))
            .await
            .expect("deploy after expiry");
        assert_eq!(out.release, 1);
        // An engine built `with_test_label(true)` marks what it starts.
        for id in app_containers(&name) {
            let label = std::process::Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{index .Config.Labels \"io.berth.test\"}}",
                    &id,
                ])
                .output()
                .expect("docker inspect");
            assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "1", "{id}");
        }
        engine.destroy(&name).await.expect("destroy");
        assert!(app_containers(&name).is_empty());
    });
}

#[test]
fn releases_are_journaled_with_phases_and_outcomes() {
    require_env();
    let name = unique_app("eng-journal");
    let _guard = AppGuard(name.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let set = fixtures::push_all(PLAIN_REGISTRY).await.expect("fixtures");
        let engine = engine(dir.path()).await;
        engine
            .deploy(&target(&name, &set.demo_v1))
            .await
            .expect("v1");
        // Same digest and spec again: a no-op, not a release.
        let again = engine
            .deploy(&target(&name, &set.demo_v1))
            .await
            .expect("again");
        assert!(!again.new_release);
        assert_eq!(again.release, 1);
        // A failing release is journaled as failed.
        let mut bad = target(&name, &set.unhealthy);
        bad.spec
            .services
            .get_mut("web")
            .expect("web")
            .health_check
            .start_period_seconds = 1.5;
        assert!(engine.deploy(&bad).await.is_err());
        let releases = engine
            .store
            .list_releases(name.clone(), 10)
            .await
            .expect("releases");
        assert_eq!(releases.len(), 2, "{releases:?}");
        assert_eq!(releases[0].release, 2);
        assert_eq!(releases[0].outcome, ReleaseOutcome::Failed);
        assert!(releases[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("ROLL failed"));
        assert_eq!(releases[1].outcome, ReleaseOutcome::Succeeded);
        assert_eq!(releases[1].digest, set.demo_v1.digest);
        assert_eq!(releases[1].trigger, "test");
        let phases: Vec<&str> = releases[1].phases.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(phases, ["pull", "lock", "roll", "stop"]);
        engine.destroy(&name).await.expect("destroy");
    });
}

#[test]
fn components_reach_each_other_by_alias_on_the_shared_network() {
    require_env();
    let name = unique_app("eng-alias");
    let _guard = AppGuard(name.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let set = fixtures::push_all(PLAIN_REGISTRY).await.expect("fixtures");
        let engine = engine(dir.path()).await;
        let mut t = target(&name, &set.demo_v1);
        t.spec.workers.insert(
            "queue".into(),
            serde_json::from_value(serde_json::json!({"command": "/bin/busybox sleep 100000"}))
                .expect("worker"),
        );
        engine.deploy(&t).await.expect("deploy");
        let worker = std::process::Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=io.berth.app={name}"),
                "--filter",
                "label=io.berth.component=queue",
            ])
            .output()
            .expect("docker ps");
        let worker = String::from_utf8_lossy(&worker.stdout).trim().to_string();
        assert!(!worker.is_empty());
        let url = format!("http://web.{name}:8080/");
        let got = std::process::Command::new("docker")
            .args(["exec", &worker, "/bin/busybox", "wget", "-qO-", &url])
            .output()
            .expect("docker exec");
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            "berth demo v1\n",
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        engine.destroy(&name).await.expect("destroy");
        assert!(app_containers(&name).is_empty());
    });
}

#[test]
fn concurrent_first_deploys_of_many_apps_on_one_host_all_start() {
    // Each first deploy picks fixed addresses on Berth's network from the
    // same observation; a dozen at once must not fight over the same few.
    require_env();
    const APPS: usize = 12;
    let names: Vec<String> = (0..APPS).map(|_| unique_app("eng-many")).collect();
    let _guards: Vec<AppGuard> = names.iter().cloned().map(AppGuard).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let set = fixtures::push_all(PLAIN_REGISTRY).await.expect("fixtures");
        let engine = engine(dir.path()).await;
        let failed = deploy_all(&engine, &names, &set.demo_v1).await;
        assert!(
            failed.is_empty(),
            "{} of {APPS} failed: {failed:#?}",
            failed.len()
        );
        for name in &names {
            engine.destroy(name).await.expect("destroy");
        }
    });
}

/// Apps deployed at once that share an image make the host pull it once:
/// the rest wait for that pull (counted from the daemon's own events).
#[test]
fn concurrent_deploys_of_apps_sharing_an_image_pull_it_once() {
    require_env();
    const APPS: usize = 6;
    let names: Vec<String> = (0..APPS).map(|_| unique_app("eng-pull")).collect();
    let _guards: Vec<AppGuard> = names.iter().cloned().map(AppGuard).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    // A repository of its own: the daemon has never pulled this name.
    let repo = format!("berth/pull-once-{}", unique_app("r"));
    block_on(async {
        let pushed = fixtures::push_demo(PLAIN_REGISTRY, &repo, "v1", "v1", None)
            .await
            .expect("push");
        let engine = engine(dir.path()).await;
        let since = unix_now();
        let failed = deploy_all(&engine, &names, &pushed).await;
        let until = unix_now() + 1;
        assert!(failed.is_empty(), "{failed:#?}");
        let events = support::docker_cli(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            "type=image",
            "--filter",
            "event=pull",
            "--format",
            "{{.Actor.ID}}",
        ]);
        let pulls: Vec<&str> = events.lines().filter(|l| l.contains(&repo)).collect();
        assert_eq!(pulls.len(), 1, "pulls of {repo}: {events}");
        for name in &names {
            engine.destroy(name).await.expect("destroy");
        }
        let pinned = format!("{PLAIN_REGISTRY}/{repo}@{}", pushed.digest);
        let _ = std::process::Command::new("docker")
            .args(["rmi", &pinned])
            .output();
    });
}

/// The engine keeps one connection to a daemon and reuses it: a refresh
/// and a deploy through a relay in front of the socket open one or two,
/// not one per API call (each would cost a handshake on a far host).
#[test]
fn api_calls_to_a_daemon_reuse_its_connections() {
    require_env();
    let name = unique_app("eng-conn");
    let _guard = AppGuard(name.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let relay = latency_relay::LatencyRelay::unix(
            dir.path().join("docker.sock"),
            latency_relay::Endpoint::Unix("/var/run/docker.sock".into()),
            Duration::ZERO,
            Duration::from_secs(300),
        )
        .await
        .expect("relay");
        let set = fixtures::push_all(PLAIN_REGISTRY).await.expect("fixtures");
        let store = Store::open(StoreOptions::in_dir(dir.path().join("state"), None))
            .await
            .expect("store");
        let hosts = Hosts::local(Some(&relay.docker_host())).expect("hosts");
        let engine = Engine::new(hosts, store).with_test_label(true);
        engine
            .deploy(&target(&name, &set.demo_v1))
            .await
            .expect("deploy");
        engine.observe(&name, true).await.expect("observe");
        engine.destroy(&name).await.expect("destroy");
        let calls: u64 = relay.counts().values().sum();
        assert!(
            calls >= 10,
            "API calls through the relay: {:?}",
            relay.counts()
        );
        // A log stream or a pull may hold one connection while others go.
        assert!(
            relay.connections() <= 3,
            "{} connections for {calls} API calls",
            relay.connections()
        );
    });
}

/// Deploys `pushed` as each app of `names`, all at once; the errors.
async fn deploy_all(engine: &Engine, names: &[String], pushed: &fixtures::Pushed) -> Vec<String> {
    let results = futures::future::join_all(names.iter().map(|name| {
        let t = target(name, pushed);
        async move { engine.deploy(&t).await }
    }))
    .await;
    names
        .iter()
        .zip(results)
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[test]
fn a_deploy_longer_than_its_lease_keeps_the_lease_renewed_until_it_ends() {
    require_env();
    let name = unique_app("eng-renew");
    let _guard = AppGuard(name.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    block_on(async {
        let set = fixtures::push_all(PLAIN_REGISTRY).await.expect("fixtures");
        // Short enough to pass several times, long enough that a renewal
        // (every third of it) late by a loaded machine still lands.
        let ttl = Duration::from_secs(3);
        let engine = engine(dir.path()).await.with_lease_ttl(ttl);
        // A pre-deploy command makes this deploy last several lease lives.
        let mut t = target(&name, &set.demo_v1);
        t.spec.pre_deploy_command = Some("/bin/busybox sleep 13".into());
        let started = std::time::Instant::now();
        let deploy = engine.deploy(&t);
        tokio::pin!(deploy);
        // Another runner tries to take the lease all along; it must never
        // get it while the deploy runs, though the TTL passes many times.
        let mut tries = 0u32;
        let outcome = loop {
            tokio::select! {
                out = &mut deploy => break out,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    let got = engine
                        .store
                        .acquire_lease(name.clone(), "intruder:1:000000".into(), ttl)
                        .await
                        .expect("lease query");
                    assert!(
                        matches!(got, LeaseOutcome::HeldBy { .. }),
                        "another runner got the lease {:?} into the deploy",
                        started.elapsed()
                    );
                    tries += 1;
                }
            }
        };
        let out = outcome.expect("deploy");
        assert_eq!(out.release, 1);
        assert!(
            started.elapsed() > ttl * 4,
            "the deploy must outlast the lease several times to test renewal: {:?}",
            started.elapsed()
        );
        assert!(tries >= 10, "tried {tries} times");
        // Released at the end: the next runner gets it at once.
        let after = engine
            .store
            .acquire_lease(name.clone(), "next:1:000000".into(), ttl)
            .await
            .expect("lease");
        assert!(matches!(after, LeaseOutcome::Acquired { .. }), "{after:?}");
        engine
            .store
            .release_lease(name.clone(), "next:1:000000".into())
            .await
            .expect("release");
        engine.destroy(&name).await.expect("destroy");
    });
}
