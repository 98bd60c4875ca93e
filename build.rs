//! Generates the gRPC stubs for the plugin protocol from `proto/` with a
//! vendored `protoc`, so building Berth needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; this only configures
    // prost-build for this process.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &["proto/tfplugin6.proto", "proto/grpc_controller.proto"],
            &["proto"],
        )?;
    Ok(())
}
