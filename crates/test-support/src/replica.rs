//! A private primary and its streaming replica, for the replica-reads tests:
//! both are [`PrivateCluster`]s of their own (the primary `initdb`-ed with trust
//! authentication, replication included; the replica `pg_basebackup -R`-ed from
//! it), each on a free loopback port, so the shared cluster's configuration is
//! never touched. Both are stopped and their directories removed when this is
//! dropped, also when the test panics (their logs are printed then instead).

use crate::cluster::PrivateCluster;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

pub struct ReplicatedCluster {
    // Dropped in this order: the replica stops before its primary.
    pub replica: PrivateCluster,
    pub primary: PrivateCluster,
}

impl ReplicatedCluster {
    pub fn start() -> Self {
        let primary = PrivateCluster::start().removed_on_panic();
        let replica = PrivateCluster::replica_of(&primary).removed_on_panic();
        Self { replica, primary }
    }

    pub fn primary_url(&self) -> String {
        self.primary.url()
    }

    pub fn replica_url(&self) -> String {
        self.replica.url()
    }

    /// Stops replaying WAL (`pg_wal_replay_pause()`): the replica stays up and
    /// answers, with data that falls ever further behind.
    pub async fn pause_replay(&self) {
        self.on_replica("SELECT pg_wal_replay_pause()").await;
    }

    pub async fn resume_replay(&self) {
        self.on_replica("SELECT pg_wal_replay_resume()").await;
    }

    /// Returns once the replica has replayed everything the primary had
    /// flushed when this was called (up to `limit`; panics past it).
    pub async fn wait_for_replay(&self, limit: Duration) {
        let primary = connect(&self.primary_url()).await;
        let flushed: String = primary
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await
            .expect("primary's flush position")
            .get(0);
        let replica = connect(&self.replica_url()).await;
        let deadline = Instant::now() + limit;
        loop {
            let caught_up: bool = replica
                .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&flushed])
                .await
                .expect("replica's replay position")
                .get(0);
            if caught_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not replay {flushed} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn on_replica(&self, sql: &str) {
        connect(&self.replica_url())
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on the replica: {e}"));
    }
}

impl Drop for ReplicatedCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, cluster) in [("primary", &self.primary), ("replica", &self.replica)] {
                let log = cluster.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- {name} log (last lines) ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}
