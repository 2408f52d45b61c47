//! A private Postgres cluster for a test that stops and starts its database:
//! `initdb` into a temporary directory, `postgres` on a free loopback port. The
//! shared cluster (`TEST_DATABASE_URL`) is never touched, so the other tests keep
//! theirs.
//!
//! The binaries come from `PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/<version>/bin`, else `PATH`. Postgres refuses to run as
//! root, so under root every command runs as the `postgres` OS user (`runuser`)
//! and the directory is handed to that user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivateCluster {
    dir: PathBuf,
    port: u16,
    bin: Option<PathBuf>,
    running: bool,
    /// Leave the directory behind when the test panics, for its logs.
    keep_on_panic: bool,
}

impl PrivateCluster {
    /// Creates the cluster (trust authentication, user `postgres`, local and
    /// replication connections alike) and starts it.
    pub fn start() -> Self {
        let mut cluster = Self::empty();
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            true,
        );
        cluster.start_again();
        cluster
    }

    /// A streaming replica of `primary`: `pg_basebackup -R` (which writes the
    /// `primary_conninfo` and `standby.signal`) into a directory of its own,
    /// started as a hot standby on a port of its own.
    pub fn replica_of(primary: &PrivateCluster) -> Self {
        let mut replica = Self::empty();
        let data = replica.data_dir();
        let port = primary.port.to_string();
        replica.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
            true,
        );
        replica.start_again();
        replica
    }

    /// Removes the directory even when the test panics.
    pub fn removed_on_panic(mut self) -> Self {
        self.keep_on_panic = false;
        self
    }

    /// A directory (owned by `postgres` under root) and a free port, nothing started.
    fn empty() -> Self {
        let dir = std::env::temp_dir().join(format!("mk-test-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create cluster directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let cluster = Self {
            dir,
            port,
            bin: bin_dir(),
            running: false,
            keep_on_panic: true,
        };
        if is_root() {
            cluster.run("chown", &["-R", "postgres:postgres", cluster.dir_str()], false);
        }
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fast shutdown, as `pg_ctl stop` does by default: every session is ended
    /// with `57P01 admin_shutdown`, then the server exits. Returns once it has.
    pub fn stop(&mut self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"], true);
        self.running = false;
    }

    /// Starts the (stopped) cluster on the same port; returns once it accepts
    /// connections (`pg_ctl -w`).
    pub fn start_again(&mut self) {
        let data = self.data_dir();
        let log = self.dir.join("postgres.log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir_str()
        );
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
            true,
        );
        self.running = true;
    }

    /// The server log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().expect("UTF-8 temp path")
    }

    fn run(&self, program: &str, args: &[&str], postgres_tool: bool) {
        let program_path = match (&self.bin, postgres_tool) {
            (Some(bin), true) => bin.join(program),
            _ => PathBuf::from(program),
        };
        let mut command = if postgres_tool && is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program_path);
            command
        } else {
            Command::new(&program_path)
        };
        let output = command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program_path.display()));
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}\n{}\n{}",
            program_path.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let bin = self
                .bin
                .as_ref()
                .map_or_else(|| PathBuf::from("pg_ctl"), |b| b.join("pg_ctl"));
            let mut command = if is_root() {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(bin);
                command
            } else {
                Command::new(bin)
            };
            let _ = command
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
        if std::thread::panicking() && self.keep_on_panic {
            eprintln!("private cluster kept for inspection: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// Where `initdb`, `pg_ctl` and `postgres` are; `None`: on `PATH`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            Path::new(&bin).join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
