//! The real `marketing` binary as child processes (feature `process`): one-shot
//! verbs (`migrate`, `api-key create`, ...) and long-running roles (`serve`,
//! `command-api`, `query-api`, `projector`, ...), each role on a free loopback
//! port, returned once its `/healthz` answers and SIGKILLed when dropped.
//!
//! The binary's path is the test's to give (`env!("CARGO_BIN_EXE_marketing")`
//! exists only in the `marketing` crate's own tests), so this crate does not
//! depend on that one.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a role may take to answer `/healthz`. Generous: on a loaded
/// machine opening pools and applying migrations is slow; a process that exits
/// instead fails the wait at once, with its log.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(120);

/// Variables a developer's shell (or a deployment's env file) may set that would
/// send the binary to other backends than the test's own: every command starts
/// without them, and a test that wants one sets it.
const FOREIGN_BACKENDS: &[&str] = &[
    "EVENT_STORE_URL",
    "KAFKA_BROKERS",
    "MEDIA_STORE_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

/// The binary, pointed at one database.
#[derive(Debug, Clone)]
pub struct Marketing {
    bin: PathBuf,
    database_url: String,
}

impl Marketing {
    pub fn new(bin: impl Into<PathBuf>, database_url: &str) -> Self {
        Self {
            bin: bin.into(),
            database_url: database_url.to_owned(),
        }
    }

    /// A command for the binary: `DATABASE_URL` set, [`FOREIGN_BACKENDS`] unset.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command.env("DATABASE_URL", &self.database_url);
        for name in FOREIGN_BACKENDS {
            command.env_remove(name);
        }
        command
    }

    /// Runs a one-shot verb to its end and asserts that it succeeded.
    pub fn run(&self, args: &[&str]) -> Output {
        let output = self
            .command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", self.bin.display()));
        assert!(output.status.success(), "marketing {args:?} failed: {output:?}");
        output
    }

    /// `marketing migrate`.
    pub fn migrate(&self) {
        self.run(&["migrate"]);
    }

    /// A new API key of `project` named `name`, with every scope: the secret,
    /// which `api-key create` prints as its last line.
    pub fn api_key(&self, project: &str, name: &str) -> String {
        let output = self.run(&["api-key", "create", "--project", project, "--name", name]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let secret = stdout.lines().last().unwrap_or_default().trim().to_owned();
        assert!(secret.starts_with("mk_"), "no key on the last line: {stdout}");
        secret
    }

    /// Starts `marketing <role>` on a free loopback port with `env` on top of
    /// [`Marketing::command`]'s, and returns it once `/healthz` answers.
    pub async fn spawn(&self, role: &str, env: &[(&str, &str)]) -> RoleProcess {
        self.spawn_with(role, |command| {
            command.envs(env.iter().copied());
        })
        .await
    }

    /// [`Marketing::spawn`], with the command configured by `configure`
    /// (`LISTEN_ADDR`, stdout and stderr are set after it, by this helper).
    pub async fn spawn_with(&self, role: &str, configure: impl FnOnce(&mut Command)) -> RoleProcess {
        let address = format!("127.0.0.1:{}", crate::free_port());
        let log =
            std::env::temp_dir().join(format!("marketing-{role}-{}.log", uuid::Uuid::new_v4().simple()));
        let stderr =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let mut command = self.command();
        command.arg(role);
        configure(&mut command);
        let child = command
            .env("LISTEN_ADDR", &address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start marketing {role}: {e}"));
        let mut process = RoleProcess {
            role: role.to_owned(),
            child,
            address,
            log,
        };
        process.wait_healthy().await;
        process
    }
}

/// A running role. Dropping it kills it (SIGKILL) and reaps it; its log
/// (stderr) is deleted then, unless the test is failing.
#[derive(Debug)]
pub struct RoleProcess {
    role: String,
    pub child: Child,
    /// `127.0.0.1:<port>`, its `LISTEN_ADDR`.
    pub address: String,
    log: PathBuf,
}

impl RoleProcess {
    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The sum of the samples on `/metrics` whose series starts with
    /// `series` (a name, or a name with its labels): counters the tests read
    /// to see what the process did, not how fast.
    pub async fn metric(&self, client: &reqwest::Client, series: &str) -> f64 {
        let text = client
            .get(format!("{}/metrics", self.base_url()))
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .unwrap_or_else(|e| panic!("{}: /metrics: {e}", self.role));
        let text = text
            .text()
            .await
            .unwrap_or_else(|e| panic!("{}: /metrics: {e}", self.role));
        text.lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (the graceful stop); the process is not waited for.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let url = format!("{}/healthz", self.base_url());
        let deadline = Instant::now() + HEALTH_DEADLINE;
        loop {
            let health = client.get(&url).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                panic!(
                    "marketing {} exited ({status}) before it was healthy; its log:\n{}",
                    self.role,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "marketing {} on {} did not become healthy within {HEALTH_DEADLINE:?}; its log:\n{}",
                self.role,
                self.address,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("log of marketing {} kept at {}", self.role, self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
