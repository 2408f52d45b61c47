//! `marketing`: one binary for every role. Thin on purpose: parse the command
//! line, set up telemetry, hand over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = marketing::cli::Cli::parse();
    let telemetry = match marketing::telemetry::init(&cli.config, &cli.command) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = marketing::cli::run(cli).await;
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
