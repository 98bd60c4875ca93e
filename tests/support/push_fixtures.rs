//! `cargo run -q --example push-fixtures`: push every fixture image to the
//! dev environment's plain registry, and `berth/private:v1` (the demo v1
//! image) to the registry that wants basic auth. One line per image on
//! stdout: reference and manifest digest. `tests/devenv.sh up` runs this.

use berth::devtools::fixtures::{
    push_all, push_demo, Pushed, AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, PLAIN_REGISTRY,
};

fn print(pushed: &Pushed) {
    match &pushed.index_digest {
        Some(index) => println!(
            "{} {} (index; linux/amd64 {})",
            pushed.reference, index, pushed.digest
        ),
        None => println!("{} {}", pushed.reference, pushed.digest),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let set = push_all(PLAIN_REGISTRY).await?;
    for pushed in [
        &set.demo_v1,
        &set.demo_v2,
        &set.multi,
        &set.arm64_only,
        &set.unhealthy,
        &set.crash,
        &set.huge,
        &set.ingress,
    ] {
        print(pushed);
    }
    println!(
        "{} linux/arm64 {}",
        set.multi.reference, set.multi_arm64_digest
    );
    let private = push_demo(
        AUTH_REGISTRY,
        "berth/private",
        "v1",
        "v1",
        Some((AUTH_USER, AUTH_PASSWORD)),
    )
    .await?;
    print(&private);
    Ok(())
}
