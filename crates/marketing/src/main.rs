//! `marketing`: one binary for every role. Thin on purpose: parse the command
//! line, set up telemetry, hand over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = marketing::cli::Cli::parse();
    marketing::telemetry::init_tracing(&cli.config, cli.command.default_log_level());
    match marketing::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
