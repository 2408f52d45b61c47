//! A fresh, empty Postgres database for each test, so tests run in parallel
//! without seeing each other's rows. Databases are named `mk_test_<uuid>`;
//! `.ci/run` drops leftovers from earlier runs before testing.

use std::net::TcpListener;
use tokio_postgres::NoTls;

/// A loopback port free a moment ago, for a server a test starts (the small
/// race with other processes picking it meanwhile is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Where test databases are created: `TEST_DATABASE_URL`, defaulting to the
/// machine's local Postgres (user `postgres`, trust auth).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub fn config(&self) -> tokio_postgres::Config {
        self.url.parse().expect("valid test database URL")
    }

    /// A plain connection (its driver task is spawned on the current runtime).
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to test database");
        tokio::spawn(connection);
        client
    }
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> TestDatabase {
    let admin = admin_url();
    let (client, connection) = tokio_postgres::connect(&admin, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach Postgres at {admin}: {e}; is it running?"));
    tokio::spawn(connection);
    let name = format!("mk_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
    TestDatabase {
        url: format!("{base}/{name}"),
        name,
    }
}

/// A Kafka-protocol broker and a consumer for tests (feature `kafka`).
#[cfg(feature = "kafka")]
pub mod kafka;

/// A private Postgres cluster, for tests that stop and restart the database.
pub mod cluster;

/// A private primary with a streaming replica, for the replica-reads tests.
pub mod replica;

/// A real HTTP server on loopback that records what is POSTed to it, for
/// webhook tests (feature `receiver`).
#[cfg(feature = "receiver")]
pub mod receiver;

/// The real `marketing` binary's verbs and roles as child processes (feature
/// `process`).
#[cfg(feature = "process")]
pub mod process;

/// A real S3-compatible server on loopback (feature `s3`).
#[cfg(feature = "s3")]
pub mod s3;

/// The sanctioned test double of the KurrentDB gRPC API: an in-process server
/// (and the `kurrentdb-double` binary) for the event store's KurrentDB backend.
pub mod kurrentdb;
