//! `docs/` is generated from the schema: this test fails when the committed
//! files differ from what the current schema renders. `make docs` (which sets
//! BERTH_UPDATE_DOCS=1) rewrites them.

use std::path::Path;

#[test]
fn docs_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rendered =
        berth::provider::docs::render(&berth::provider::Provider::new(), &root.join("examples"));
    let update = std::env::var_os("BERTH_UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for (rel, text) in &rendered {
        let path = root.join("docs").join(rel);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != *text {
            if update {
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, text).expect("write doc");
            } else {
                stale.push(rel.clone());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "docs/ is out of date for {stale:?}: run `make docs` and commit the result"
    );
}
