//! Generates the gRPC stubs for the plugin protocol from `proto/` with a
//! vendored `protoc`, so building Berth needs no system protobuf compiler;
//! and builds Berth's Swarm health probe (`probe/berth-probe.c`, no libc)
//! with the C compiler Rust already links with.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; this only configures
    // prost-build for this process.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    build_probe()?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &["proto/tfplugin6.proto", "proto/grpc_controller.proto"],
            &["proto"],
        )?;
    Ok(())
}

/// `probe/berth-probe.c` → `$OUT_DIR/berth-probe`: a static x86-64 Linux
/// program without libc (a few KB), embedded in Berth and mounted into
/// Swarm tasks as their health check.
fn build_probe() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=probe/berth-probe.c");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("berth-probe");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = std::process::Command::new(&cc)
        .args([
            "-Os",
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-fno-pie",
            "-no-pie",
            "-Wl,--build-id=none",
            "-s",
            "-o",
        ])
        .arg(&out)
        .arg("probe/berth-probe.c")
        .status()
        .map_err(|e| format!("cannot run the C compiler `{cc}` for probe/berth-probe.c: {e}"))?;
    if !status.success() {
        return Err(format!("`{cc}` could not build probe/berth-probe.c ({status})").into());
    }
    Ok(())
}
