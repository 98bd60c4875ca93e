//! `berth`: the engine's command line. Everything it does lives in
//! [`berth::cli`]; this only parses the arguments (so `--help` and
//! `--version` do no other work), starts a single-threaded runtime and exits
//! with the command's code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = berth::cli::Cli::parse_args();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("berth: cannot start the async runtime: {error}");
            return ExitCode::from(berth::cli::EXIT_FAILED);
        }
    };
    runtime.block_on(berth::cli::run(cli))
}
