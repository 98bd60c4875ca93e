//! Acceptance tests for `berth_registry_credential`: the real terraform
//! against the htpasswd registry on 127.0.0.1:5001: verified on create,
//! usable by `berth_image`, importable, rotated through `token_wo_version`,
//! never in state (write-only) or logs, and undeletable while an app uses it.

mod support;

use berth::devtools::fixtures::{self, AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, PLAIN_REGISTRY};
use support::{block_on, require_env, Tf};

fn cred_config(token_attr: &str) -> String {
    format!(
        r#"
resource "berth_registry_credential" "ci" {{
  name     = "ci"
  registry = "{AUTH_REGISTRY}"
  username = "{AUTH_USER}"
{token_attr}
}}

data "berth_image" "private" {{
  image                  = "{AUTH_REGISTRY}/berth/private:v1"
  registry_credential_id = berth_registry_credential.ci.id
}}

output "id" {{ value = berth_registry_credential.ci.id }}
output "digest" {{ value = data.berth_image.private.digest }}
"#
    )
}

fn setup() -> fixtures::FixtureSet {
    require_env();
    block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("fixtures")
}

#[test]
fn create_resolve_import_and_destroy() {
    let set = setup();
    let tf = Tf::new();
    tf.config(&cred_config(&format!("  token = \"{AUTH_PASSWORD}\"")));
    tf.init();
    tf.apply();
    let id = tf.output("id");
    let id = id.as_str().expect("id").to_string();
    assert!(id.starts_with("rc-"), "{id}");
    // The private image is demo v1 pushed to the auth registry.
    assert_eq!(tf.output("digest"), set.demo_v1.digest.as_str());
    tf.assert_converged();

    // Import by id into a fresh state sharing Berth's store.
    let fresh = tf.sibling();
    fresh.config(&format!(
        "resource \"berth_registry_credential\" \"ci\" {{\n  name     = \"ci\"\n  registry = \"{AUTH_REGISTRY}\"\n  username = \"{AUTH_USER}\"\n  token    = \"{AUTH_PASSWORD}\"\n}}\n"
    ));
    fresh.init();
    fresh.ok(&[
        "import",
        "-input=false",
        "-no-color",
        "berth_registry_credential.ci",
        &id,
    ]);
    let shown = fresh.ok(&["state", "show", "-no-color", "berth_registry_credential.ci"]);
    assert!(shown.contains(&id) && shown.contains(AUTH_USER), "{shown}");

    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    // Gone from the store: the imported copy refreshes out of state.
    let out = fresh.ok(&["plan", "-no-color", "-input=false"]);
    assert!(out.contains("will be created"), "{out}");
}

#[test]
fn wrong_token_is_refused_at_create() {
    setup();
    let tf = Tf::new();
    tf.config(&cred_config("  token = \"not-the-password\""));
    tf.init();
    let out = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(out.contains("refused the credential"), "{out}");
    assert!(out.contains(AUTH_USER), "{out}");
    assert!(!out.contains("not-the-password"), "the token leaked: {out}");
}

#[test]
fn write_only_token_never_reaches_state_and_rotates() {
    setup();
    let tf = Tf::new();
    let cfg = |token: &str, version: u32| {
        cred_config(&format!(
            "  token_wo         = \"{token}\"\n  token_wo_version = {version}"
        ))
    };
    tf.config(&cfg(AUTH_PASSWORD, 1));
    tf.init();
    tf.apply();
    let state = std::fs::read_to_string(tf.dir.path().join("terraform.tfstate")).expect("state");
    assert!(!state.contains(AUTH_PASSWORD), "token in state");
    tf.assert_converged();

    // Rotating to a wrong token is verified (and refused) ...
    tf.config(&cfg("wrong-token", 2));
    let out = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(out.contains("refused the credential"), "{out}");
    // ... and to the right one applied.
    tf.config(&cfg(AUTH_PASSWORD, 3));
    tf.apply();
    tf.assert_converged();
    let state = std::fs::read_to_string(tf.dir.path().join("terraform.tfstate")).expect("state");
    assert!(!state.contains(AUTH_PASSWORD), "token in state");
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

#[test]
fn token_never_appears_in_trace_logs() {
    setup();
    let tf = Tf::new();
    tf.config(&cred_config(&format!("  token = \"{AUTH_PASSWORD}\"")));
    tf.init();
    let out = tf
        .command(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .env("TF_LOG", "trace")
        .output()
        .expect("terraform");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("berth"), "trace output expected");
    // terraform itself logs the msgpack config it sends; look for the
    // provider's own lines and the plan/apply output instead.
    for line in all
        .lines()
        .filter(|l| l.contains("provider.terraform-provider-berth") || !l.contains("[TRACE]"))
    {
        assert!(!line.contains(AUTH_PASSWORD), "token in: {line}");
    }
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

#[test]
fn delete_is_refused_while_an_app_uses_the_credential() {
    setup();
    let tf = Tf::new();
    tf.config(&cred_config(&format!("  token = \"{AUTH_PASSWORD}\"")));
    tf.init();
    tf.apply();
    let id = tf.output("id").as_str().expect("id").to_string();
    // An app record that uses it, as berth_app writes one.
    let state_dir = tf.state_dir.path().to_path_buf();
    block_on(async {
        let opts = berth::store::StoreOptions {
            state_dir,
            secret_key: None,
        };
        let store = berth::store::Store::open(opts).await.expect("store");
        store
            .upsert_app("shop".into(), Some(id.clone()), "{}".into())
            .await
            .expect("app record");
    });
    let out = tf.fails(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(out.contains("in use"), "{out}");
    assert!(out.contains("\"shop\""), "{out}");
}
