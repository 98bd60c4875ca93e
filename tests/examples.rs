//! `examples/` doubles as acceptance tests: the quickstart is applied for
//! real (as `make demo` does, under a unique app name), and every other
//! example must pass `terraform validate` with the real plugin.

mod support;

use std::path::Path;

use berth::devtools::fixtures::{self, PLAIN_REGISTRY};
use support::{
    app_containers, block_on, free_port, http_body, ingress_setting, require_env, unique_app,
    AppGuard, Tf,
};

fn example(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn quickstart_deploys_the_demo_and_converges() {
    require_env();
    block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures");
    let name = unique_app("quickstart");
    let _guard = AppGuard(name.clone());
    let port = free_port();
    let example_ingress =
        "  ingress = {\n    image = \"127.0.0.1:5000/berth/ingress:local\"\n  }\n";
    let text = example("quickstart/main.tf")
        .replace("\"quickstart\"", &format!("\"{name}\""))
        .replace("public_port = 8088", &format!("public_port = {port}"))
        // The tests' hosts share one ingress: every test gives it the same
        // settings (the example's image, the tests' ports).
        .replace(example_ingress, &ingress_setting());
    assert!(text.contains(&name), "the example names its app quickstart");
    assert!(
        text.contains(&format!("public_port = {port}"))
            && text.contains("tls        = \"internal\""),
        "the example's port and ingress are where the test expects them:\n{text}"
    );
    let tf = Tf::new();
    tf.raw_config(&text);
    tf.init();
    let out = tf.apply();
    assert!(out.contains("endpoints"), "{out}");
    let endpoints = tf.output("endpoints");
    let endpoints = endpoints.as_array().expect("endpoints list");
    assert_eq!(endpoints.len(), 2, "{endpoints:?}");
    for ep in endpoints {
        assert_eq!(
            http_body(ep.as_str().unwrap_or(""), "/").as_deref(),
            Some("berth demo v1\n")
        );
    }
    let url = tf.output("url");
    assert_eq!(url, format!("http://127.0.0.1:{port}").as_str());
    assert_eq!(
        http_body(&format!("127.0.0.1:{port}"), "/").as_deref(),
        Some("berth demo v1\n")
    );
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(app_containers(&name).is_empty());
}

#[test]
fn the_systemd_unit_of_berth_serve_verifies() {
    // systemd's own checker, with ExecStart pointing at this build.
    let unit = example("deploy-hooks/berth-serve.service");
    let berth = env!("CARGO_BIN_EXE_berth");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/berth serve"),
        "{unit}"
    );
    for hardening in [
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "StateDirectory=berth",
        "User=berth",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berth-serve.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/berth", berth)).expect("write unit");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("berth-serve.service:"),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn every_example_validates() {
    let dirs = [
        "provider/provider.tf",
        "data-sources/berth_image/data-source.tf",
        "functions/normalize_image/function.tf",
        "resources/berth_app/resource.tf",
        "resources/berth_deploy_hook/resource.tf",
        "resources/berth_registry_credential/resource.tf",
    ];
    // The app example refers to the credential example's resource.
    let shared = example("resources/berth_registry_credential/resource.tf");
    for rel in dirs {
        let tf = Tf::new();
        let mut body = example(rel);
        if rel.contains("berth_app") || rel.contains("berth_deploy_hook") {
            body.push_str(&shared);
        }
        if rel.contains("berth_deploy_hook") {
            // The hook example deploys the app example's app.
            body.push_str(&example("resources/berth_app/resource.tf"));
        }
        tf.config(&body);
        tf.init();
        tf.ok(&["validate", "-no-color"]);
    }
}
