//! The sanctioned test double of the KurrentDB gRPC API.
//!
//! No KurrentDB server can run on the machines this project is built and tested
//! on (no container engine, no .NET), and no emulator of its API exists in any
//! registry. So this is an in-process tonic server of the part of KurrentDB's
//! `Streams` service that the event store's KurrentDB backend uses, generated
//! from the `.proto` files the `kurrentdb` client crate ships, and kept in
//! memory only. Run as a binary it is `kurrentdb-double --listen 127.0.0.1:PORT`
//! (`src/bin/kurrentdb-double.rs`). The tests that use it run unchanged against
//! a real server when `KURRENTDB_URL` is set.
//!
//! Served: `Append` (expected revision any, no stream, stream exists or exact; a
//! wrong expected version is a normal `WrongExpectedVersion` reply, and the same
//! event ids right after an exact expected revision are an idempotent success,
//! as on the server); `Read` of a stream forwards from an inclusive revision or
//! backwards (a missing stream is a "stream not found" message); `Read` of
//! `$all` forwards from an inclusive `{commit, prepare}` position or backwards,
//! optionally filtered by stream-name or event-type prefixes; subscriptions to
//! `$all`: a confirmation, the catch-up (exclusive of the start position), a
//! "caught up", then live events, and checkpoints when filtered. Anything else
//! (stream subscriptions, deletes, `BatchAppend`, regular-expression filters,
//! every other gRPC service, such as server features or gossip) is answered
//! `UNIMPLEMENTED` or `INVALID_ARGUMENT`, which the client handles.
//!
//! What it proves: the backend drives the real `kurrentdb` client over real
//! gRPC and HTTP/2; its mappings (versions to revisions, `LogPosition` to
//! `{commit, prepare}`, event ids, custom metadata); how it handles wrong
//! expected versions, missing streams and idempotent retries; inclusive reads
//! versus exclusive resumption; the catch-up-to-live handover; and that a
//! reader resumes from its own checkpoint after a dropped subscription.
//!
//! What it cannot prove: anything about the real server's positions (the
//! double numbers them `commit = prepare of the last event + 1`, shared by one
//! append's events), its system events and `$`-streams (none here), its
//! limits (event and append sizes, deadlines), its `Any` idempotency cache,
//! authentication, TLS, clustering, leader election and "not leader" errors,
//! persistence, or its speed.

mod log;
mod service;

/// The generated protocol types and server stubs (`build.rs`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod proto {
    pub mod event_store {
        pub mod client {
            tonic::include_proto!("event_store.client");
            pub mod streams {
                tonic::include_proto!("event_store.client.streams");
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running double. Dropping it stops the server (and with it every
/// subscription); its log is gone with it.
pub struct KurrentDbDouble {
    address: SocketAddr,
    server: JoinHandle<()>,
}

impl KurrentDbDouble {
    /// Starts the double on a free loopback port.
    pub async fn start() -> KurrentDbDouble {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the KurrentDB test double");
        Self::serve(listener)
    }

    /// Serves on `listener` until dropped.
    pub fn serve(listener: TcpListener) -> KurrentDbDouble {
        let address = listener.local_addr().expect("a bound listener has an address");
        let service = service::StreamsService {
            shared: Arc::new(log::Shared::new()),
        };
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(socket, _)| {
                // Appends and reads are small request/response exchanges.
                let _ = socket.set_nodelay(true);
                socket
            });
            Some((accepted, listener))
        });
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(proto::event_store::client::streams::streams_server::StreamsServer::new(service))
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = served {
                eprintln!("KurrentDB test double stopped: {error}");
            }
        });
        KurrentDbDouble { address, server }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The connection string the `kurrentdb` client takes: one node, no TLS,
    /// hence no cluster discovery.
    pub fn url(&self) -> String {
        format!("kurrentdb://{}?tls=false", self.address)
    }
}

impl Drop for KurrentDbDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}
