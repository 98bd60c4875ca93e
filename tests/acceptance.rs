//! Acceptance tests: the real `terraform` CLI against the plugin cargo built,
//! installed offline from a filesystem mirror, resolving images in the real
//! local registries that `tests/devenv.sh up` starts.

mod support;

use berth::devtools::fixtures::{self, PLAIN_REGISTRY};
use support::{block_on, require_env, unique_tag, Tf};

fn fixtures() -> fixtures::FixtureSet {
    require_env();
    block_on(fixtures::push_all(PLAIN_REGISTRY)).expect("push fixtures")
}

#[test]
fn data_source_resolves_digest_and_follows_a_moved_tag() {
    fixtures();
    let tag = unique_tag("moving");
    let v1 = block_on(fixtures::push_demo(
        PLAIN_REGISTRY,
        "berth/demo",
        &tag,
        "v1",
        None,
    ))
    .expect("push v1");
    let tf = Tf::new();
    tf.config(&format!(
        r#"
data "berth_image" "demo" {{
  image = "{PLAIN_REGISTRY}/berth/demo:{tag}"
}}

output "digest" {{ value = data.berth_image.demo.digest }}
output "index_digest_is_null" {{ value = data.berth_image.demo.index_digest == null }}
output "reference" {{ value = data.berth_image.demo.reference }}
output "pinned" {{ value = data.berth_image.demo.pinned_reference }}
output "platform" {{ value = data.berth_image.demo.platform }}
output "size" {{ value = data.berth_image.demo.size_bytes }}
output "normalized" {{ value = provider::berth::normalize_image("nginx") }}
"#
    ));
    let init = tf.init();
    assert!(init.contains("berth/berth"), "{init}");
    tf.ok(&["validate", "-no-color"]);
    tf.apply();

    // The digest is the registry's Docker-Content-Digest for the manifest.
    assert_eq!(tf.output("digest"), v1.digest.as_str());
    assert_eq!(tf.output("index_digest_is_null"), true);
    assert_eq!(
        tf.output("reference"),
        format!("{PLAIN_REGISTRY}/berth/demo:{tag}").as_str()
    );
    assert_eq!(
        tf.output("pinned"),
        format!("{PLAIN_REGISTRY}/berth/demo@{}", v1.digest).as_str()
    );
    assert_eq!(tf.output("platform"), "linux/amd64");
    assert!(tf.output("size").as_u64().unwrap_or(0) > 100_000);
    assert_eq!(tf.output("normalized"), "docker.io/library/nginx:latest");
    tf.assert_converged();

    // Move the tag: the next plan shows the new digest.
    let v2 = block_on(fixtures::push_demo(
        PLAIN_REGISTRY,
        "berth/demo",
        &tag,
        "v2",
        None,
    ))
    .expect("push v2");
    assert_ne!(v1.digest, v2.digest);
    let plan = tf.plan_json();
    let change = &plan["output_changes"]["digest"];
    assert_eq!(change["before"], v1.digest.as_str(), "{change}");
    assert_eq!(change["after"], v2.digest.as_str(), "{change}");
    tf.apply();
    assert_eq!(tf.output("digest"), v2.digest.as_str());
    tf.assert_converged();
}

#[test]
fn multi_platform_index_resolves_to_the_amd64_manifest() {
    let set = fixtures();
    let tf = Tf::new();
    tf.config(&format!(
        r#"
data "berth_image" "multi" {{
  image = "{PLAIN_REGISTRY}/berth/multi:latest"
}}
output "digest" {{ value = data.berth_image.multi.digest }}
output "index_digest" {{ value = data.berth_image.multi.index_digest }}
"#
    ));
    tf.init();
    tf.apply();
    assert_eq!(tf.output("digest"), set.multi.digest.as_str());
    assert_eq!(
        tf.output("index_digest"),
        set.multi.index_digest.as_deref().expect("index digest")
    );
    tf.assert_converged();
}

/// Plans a data source for `image` and returns terraform's error output.
fn refusal(image: &str) -> String {
    let tf = Tf::new();
    tf.config(&format!(
        "data \"berth_image\" \"x\" {{\n  image = \"{image}\"\n}}\n"
    ));
    tf.init();
    tf.fails(&["plan", "-input=false", "-no-color"])
}

/// The diagnostic points at the `image` attribute of the data source.
fn assert_at_image(out: &str) {
    assert!(out.contains("with data.berth_image.x"), "{out}");
    assert!(out.contains("in data \"berth_image\" \"x\""), "{out}");
    assert!(out.contains("image = "), "{out}");
}

#[test]
fn arm64_only_image_is_refused_naming_its_platforms() {
    fixtures();
    let out = refusal(&format!("{PLAIN_REGISTRY}/berth/arm64-only:latest"));
    assert_at_image(&out);
    assert!(out.contains("linux/amd64"), "{out}");
    assert!(out.contains("linux/arm64"), "{out}");
}

#[test]
fn image_over_10_gb_is_refused() {
    fixtures();
    let out = refusal(&format!("{PLAIN_REGISTRY}/berth/huge:latest"));
    assert_at_image(&out);
    assert!(out.contains("10 GB"), "{out}");
}

#[test]
fn missing_tag_is_refused() {
    fixtures();
    let out = refusal(&format!("{PLAIN_REGISTRY}/berth/demo:no-such-tag"));
    assert_at_image(&out);
    assert!(out.contains("no-such-tag"), "{out}");
}

#[test]
fn unreachable_registry_is_refused_naming_the_address() {
    let out = refusal("127.0.0.1:5999/berth/demo:v1");
    assert_at_image(&out);
    assert!(out.contains("127.0.0.1:5999"), "{out}");
}

#[test]
fn private_image_without_credential_says_a_credential_is_needed() {
    fixtures();
    let out = refusal(&format!("{}/berth/private:v1", fixtures::AUTH_REGISTRY));
    assert_at_image(&out);
    assert!(out.contains("berth_registry_credential"), "{out}");
}

#[test]
fn invalid_reference_fails_validate_at_the_attribute() {
    let tf = Tf::new();
    tf.config("data \"berth_image\" \"x\" {\n  image = \"Foo/Bar:latest\"\n}\n");
    tf.init();
    let out = tf.fails(&["validate", "-no-color"]);
    assert_at_image(&out);
    assert!(out.contains("lowercase"), "{out}");
}

#[test]
fn unknown_image_at_plan_time_gives_unknown_outputs() {
    fixtures();
    let tf = Tf::new();
    tf.config(&format!(
        r#"
resource "terraform_data" "tag" {{
  input = "v1"
}}
data "berth_image" "x" {{
  image = "{PLAIN_REGISTRY}/berth/demo:${{terraform_data.tag.output}}"
}}
output "digest" {{ value = data.berth_image.x.digest }}
"#
    ));
    tf.init();
    let plan = tf.plan_json();
    assert_eq!(
        plan["output_changes"]["digest"]["after_unknown"], true,
        "{plan}"
    );
    tf.apply();
    assert!(tf
        .output("digest")
        .as_str()
        .unwrap_or("")
        .starts_with("sha256:"));
}

#[test]
fn function_errors_name_the_reason() {
    let tf = Tf::new();
    tf.config("output \"x\" {\n  value = provider::berth::normalize_image(\"acme/Web\")\n}\n");
    tf.init();
    let out = tf.fails(&["plan", "-input=false", "-no-color"]);
    assert!(out.contains("normalize_image"), "{out}");
    assert!(out.contains("lowercase"), "{out}");
}

#[test]
fn schema_describes_every_attribute() {
    let tf = Tf::new();
    tf.config("provider \"berth\" {}\n");
    tf.init();
    let s: serde_json::Value =
        serde_json::from_str(&tf.ok(&["providers", "schema", "-json"])).expect("schema json");
    let p = &s["provider_schemas"]["registry.terraform.io/berth/berth"];
    assert!(p.is_object(), "{s}");
    let mut checked = 0;
    let mut blocks = vec![("provider".to_string(), &p["provider"]["block"])];
    for kind in ["resource_schemas", "data_source_schemas"] {
        if let Some(m) = p[kind].as_object() {
            for (name, schema) in m {
                blocks.push((name.clone(), &schema["block"]));
            }
        }
    }
    assert!(blocks.iter().any(|(n, _)| n == "berth_image"));
    fn walk(owner: &str, attrs: &serde_json::Value, checked: &mut usize) {
        for (name, a) in attrs.as_object().into_iter().flatten() {
            let d = a["description"].as_str().unwrap_or("");
            assert!(!d.trim().is_empty(), "{owner}.{name} has no description");
            *checked += 1;
            walk(
                &format!("{owner}.{name}"),
                &a["nested_type"]["attributes"],
                checked,
            );
        }
    }
    for (name, block) in blocks {
        assert!(
            !block["description"].as_str().unwrap_or("").is_empty(),
            "{name} has no description"
        );
        walk(&name, &block["attributes"], &mut checked);
    }
    let functions = p["functions"].as_object().expect("functions");
    for (name, f) in functions {
        assert!(
            !f["description"].as_str().unwrap_or("").is_empty(),
            "{name}"
        );
    }
    assert!(checked >= 10, "only {checked} attributes");
}
