//! `marketing`: one binary for every role. Thin on purpose: parse the command
//! line, set up telemetry, hand over to the library.

use clap::Parser;

/// mimalloc rather than glibc's malloc: a request or an import batch is
/// thousands of short-lived allocations (JSON values, strings, row buffers)
/// freed on other threads than the ones that made them, where glibc spent
/// more CPU than the code it served (its free-list consolidation and
/// arena locks; see docs/architecture.md, "Memory allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
