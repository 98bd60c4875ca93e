//! `terraform-provider-berth`: the Terraform plugin binary. Terraform starts
//! it; everything it does lives in [`berth::tfplugin::server`]. `--debug`
//! runs it for a debugger (reattach mode), `--version` prints the version.

use berth::provider::Provider;
use berth::tfplugin::server;

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
    server::run_plugin("terraform-provider-berth", opts, Provider::new())
}
