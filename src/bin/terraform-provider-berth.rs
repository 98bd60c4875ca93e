//! `terraform-provider-berth`: the Terraform plugin binary. Terraform starts
//! it; everything it does lives in [`berth::tfplugin::server`]. `--debug`
//! runs it for a debugger (reattach mode), `--version` prints the version.

use berth::tfplugin::{logging, server};

const USAGE: &str = "usage: terraform-provider-berth [--debug | --version]";

fn main() {
    let mut opts = server::ServeOptions::default();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--version" | "-version" => {
                println!("terraform-provider-berth {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "--debug" | "-debug" => opts.debug = true,
            "--help" | "-help" | "-h" => {
                eprintln!("{USAGE}");
                return;
            }
            other => {
                eprintln!("terraform-provider-berth: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    logging::init(logging::PLUGIN_MODULE);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("terraform-provider-berth: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    // Exit as soon as serving ends: terraform expects the process gone right
    // after Shutdown, and nothing else in flight needs waiting for.
    match runtime.block_on(server::serve(opts)) {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("terraform-provider-berth: {error}");
            std::process::exit(1);
        }
    }
}
