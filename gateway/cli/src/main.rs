//! `hurtigspor`: the gateway binary. The commands live in the library of
//! this package (`hurtigspor_cli`); the gateway in `hurtigspor-gateway`.

use clap::Parser;
use hurtigspor_cli::{Cli, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
