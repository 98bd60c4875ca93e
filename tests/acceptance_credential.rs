//! Acceptance tests for `berth_registry_credential`: the real terraform
//! against the htpasswd registry on 127.0.0.1:5001: verified on create,
//! usable by `berth_image`, importable, rotated through `token_wo_version`,
//! never in state (write-only) or logs, and undeletable while an app uses it.

#[path = "support/own_registry.rs"]
mod own_registry;
mod support;

use berth::devtools::fixtures::{self, AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, PLAIN_REGISTRY};
use own_registry::OwnRegistry;
use support::{app_containers, block_on, http_body, require_env, unique_app, AppGuard, Tf};

/// A password a registry accepts and whose base64 in Docker's
/// `X-Registry-Auth` has `/` and `+` whatever its offset in the JSON: six
/// `?` and six `~` in a row fill at least one whole base64 group each. And
/// the characters that need escaping in JSON and HCL, and the shell's.
const SYMBOL_PASSWORD: &str = r#"p@ss??????~~~~~~>>:"q\'$ {x}&%=+/!#"#;

/// `value` as an HCL string literal's contents.
fn hcl_escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "$${")
        .replace("%{", "%%{")
}

/// A credential for `registry` and an app from its private image.
fn private_app_config(name: &str, registry: &str, user: &str, token_attr: &str) -> String {
    format!(
        r#"
resource "berth_registry_credential" "ci" {{
  name     = "{name}"
  registry = "{registry}"
  username = "{user}"
{token_attr}
}}

resource "berth_app" "private" {{
  name                   = "{name}"
  image                  = "{registry}/berth/private:v1"
  registry_credential_id = berth_registry_credential.ci.id
  services = {{
    web = {{ http_port = 8080 }}
  }}
}}

output "endpoint" {{ value = berth_app.private.endpoints["web"][0] }}
"#
    )
}

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
fn a_symbol_heavy_password_deploys_a_private_app_through_terraform() {
    require_env();
    let user = "deployer";
    let registry = OwnRegistry::start(user, SYMBOL_PASSWORD);
    block_on(fixtures::push_demo(
        &registry.addr,
        "berth/private",
        "v1",
        "private v1",
        Some((user, SYMBOL_PASSWORD)),
    ))
    .expect("push the private image");
    let name = unique_app("acc-cred-sym");
    let _guard = AppGuard(name.clone());
    let tf = Tf::new();
    tf.config(&private_app_config(
        &name,
        &registry.addr,
        user,
        &format!("  token = \"{}\"", hcl_escape(SYMBOL_PASSWORD)),
    ));
    tf.init();
    // Plan resolved it before; the host's pull is what failed.
    tf.apply();
    let endpoint = tf.output("endpoint");
    assert_eq!(
        http_body(endpoint.as_str().expect("endpoint"), "/").as_deref(),
        Some("berth demo private v1\n"),
        "the app from the private image serves"
    );
    tf.assert_converged();
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(app_containers(&name).is_empty(), "containers left");
}

#[test]
fn rotation_to_a_new_token_passes_only_with_the_new_token() {
    require_env();
    let user = "rotator";
    let (old, new) = ("old-token-1", "new-token-2");
    let mut registry = OwnRegistry::start(user, old);
    block_on(fixtures::push_demo(
        &registry.addr,
        "berth/private",
        "v1",
        "rotation",
        Some((user, old)),
    ))
    .expect("push");
    let tf = Tf::new();
    let addr = registry.addr.clone();
    let cfg = |token: &str, version: u32| {
        format!(
            r#"
resource "berth_registry_credential" "ci" {{
  name             = "rotation"
  registry         = "{}"
  username         = "{user}"
  token_wo         = "{token}"
  token_wo_version = {version}
}}

data "berth_image" "private" {{
  image                  = "{}/berth/private:v1"
  registry_credential_id = berth_registry_credential.ci.id
}}
"#,
            addr, addr
        )
    };
    tf.config(&cfg(old, 1));
    tf.init();
    tf.apply();

    // The registry now takes only the new token.
    registry.set_password(new);
    // The stored (old) token no longer passes: the data source says so.
    let out = tf.fails(&["plan", "-input=false", "-no-color"]);
    assert!(out.contains(&addr), "{out}");
    // Rotating back to the old token is verified and refused ...
    tf.config(&cfg(old, 2));
    let out = tf.fails(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(out.contains("refused the credential"), "{out}");
    // ... the new one applies, and the image resolves with it.
    tf.config(&cfg(new, 3));
    tf.apply();
    tf.assert_converged();
    let state = std::fs::read_to_string(tf.dir.path().join("terraform.tfstate")).expect("state");
    assert!(
        !state.contains(new) && !state.contains(old),
        "a token in state"
    );
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

#[test]
fn delete_is_refused_while_an_app_uses_the_credential() {
    setup();
    let name = unique_app("acc-cred-use");
    let _guard = AppGuard(name.clone());
    // One configuration owns the credential ...
    let creds = Tf::new();
    creds.config(&format!(
        "resource \"berth_registry_credential\" \"ci\" {{\n  name     = \"{name}\"\n  registry = \"{AUTH_REGISTRY}\"\n  username = \"{AUTH_USER}\"\n  token    = \"{AUTH_PASSWORD}\"\n}}\noutput \"id\" {{ value = berth_registry_credential.ci.id }}\n"
    ));
    creds.init();
    creds.apply();
    let id = creds.output("id").as_str().expect("id").to_string();
    // ... another, sharing Berth's store, deploys a private app with it.
    let app = creds.sibling();
    app.config(&format!(
        "resource \"berth_app\" \"private\" {{\n  name                   = \"{name}\"\n  image                  = \"{AUTH_REGISTRY}/berth/private:v1\"\n  registry_credential_id = \"{id}\"\n  services = {{\n    web = {{ http_port = 8080 }}\n  }}\n}}\n"
    ));
    app.init();
    app.apply();
    assert!(!app_containers(&name).is_empty(), "the app runs");

    let out = creds.fails(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(out.contains("in use"), "{out}");
    assert!(out.contains(&format!("\"{name}\"")), "{out}");
    // The credential stays, in terraform's state and in Berth's store.
    let listed = creds.ok(&["state", "list"]);
    assert!(listed.contains("berth_registry_credential.ci"), "{listed}");
    assert!(!app_containers(&name).is_empty(), "the app still runs");
    app.assert_converged();

    app.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    creds.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}
