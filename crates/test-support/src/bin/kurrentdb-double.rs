//! `kurrentdb-double --listen 127.0.0.1:PORT`: the sanctioned test double of the
//! KurrentDB gRPC API (`test_support::kurrentdb`, which says what it proves and
//! what it cannot), serving until killed. Memory only.

use std::net::SocketAddr;

fn listen_address() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--listen"), Some(address), None) => address
            .parse()
            .map_err(|e| format!("--listen {address}: not a socket address: {e}")),
        _ => Err("usage: kurrentdb-double --listen 127.0.0.1:PORT".into()),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let address = match listen_address() {
        Ok(address) => address,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {address}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let double = test_support::kurrentdb::KurrentDbDouble::serve(listener);
    println!(
        "KurrentDB test double listening on {} ({})",
        double.address(),
        double.url()
    );
    // Serves until killed: the server task never ends on its own.
    std::future::pending::<()>().await;
    std::process::ExitCode::SUCCESS
}
