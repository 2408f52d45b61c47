//! A real Kafka-protocol broker for tests, and a real consumer to read back what
//! was produced.
//!
//! Tests either use the broker that `deploy/local/test.sh` starts for the whole
//! run ([`shared_brokers`], from `KAFKA_TEST_BROKERS`; each test then uses topics
//! of its own), or start a private one ([`Tansu::start`], from `TANSU_BIN`) when
//! they stop and restart it. Either variable missing fails the test with a
//! message saying how to provide it: a broker test that silently passed without a
//! broker would prove nothing.

use crate::free_port;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The broker shared by every test of a run: `KAFKA_TEST_BROKERS`.
pub fn shared_brokers() -> String {
    std::env::var("KAFKA_TEST_BROKERS").unwrap_or_else(|_| {
        panic!(
            "KAFKA_TEST_BROKERS is not set. These tests need a Kafka-protocol broker: run \
             deploy/local/test.sh (it starts tansu and sets KAFKA_TEST_BROKERS and TANSU_BIN), or \
             start one yourself and set KAFKA_TEST_BROKERS=127.0.0.1:<port>"
        )
    })
}

/// The `tansu` binary: `TANSU_BIN`.
pub fn tansu_bin() -> PathBuf {
    std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "TANSU_BIN is not set. This test starts and stops a broker of its own: run \
             deploy/local/test.sh (it installs tansu and sets TANSU_BIN), or set TANSU_BIN to a \
             tansu binary (cargo install tansu --version 0.6.0 --locked --features dynostore)"
            )
        })
}

/// A unique topic name, so tests sharing a broker never see each other's records.
pub fn unique_topic(label: &str) -> String {
    format!("test.{label}.{}", uuid::Uuid::new_v4().simple())
}

/// A private tansu broker on a loopback port of its own, with in-memory storage:
/// a restart comes back empty (no topics, no records, no producer state), which is
/// what the publisher has to survive. Killed on drop.
pub struct Tansu {
    port: u16,
    child: Option<Child>,
}

impl Tansu {
    pub fn start() -> Self {
        let mut tansu = Self {
            port: free_port(),
            child: None,
        };
        tansu.launch();
        tansu
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The broker's output, kept only if the test fails.
    fn log_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!("tansu-test-{}.log", self.port))
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open tansu log");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the broker vanishes mid-whatever, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process dies of SIGKILL too; no need to thaw it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the broker hangs with everything it holds; connections stay open
    /// but nothing is answered, as with a stalled machine or a network partition.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: a frozen broker carries on where it was.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("broker running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("broker log: {}", self.log_path().display());
        } else {
            let _ = std::fs::remove_file(self.log_path());
        }
    }
}

/// One record as a consumer saw it.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl ReadRecord {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("record value is JSON")
    }
}

/// A plain consumer with every partition of some topics assigned from the
/// beginning (no consumer group: tansu's group joins take ~20 s).
pub struct Reader {
    consumer: BaseConsumer,
    records: Vec<ReadRecord>,
}

impl Reader {
    /// Waits (up to 30 s) until every topic exists, then assigns all partitions.
    pub fn new(brokers: &str, topics: &[&str]) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("test-reader-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("create consumer");
        let mut assignment = TopicPartitionList::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for topic in topics {
            let partitions = loop {
                let partitions = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .ok()
                    .and_then(|metadata| {
                        metadata
                            .topics()
                            .iter()
                            .find(|t| t.name() == *topic && t.error().is_none())
                            .map(|t| t.partitions().len())
                    })
                    .unwrap_or(0);
                if partitions > 0 {
                    break partitions;
                }
                assert!(Instant::now() < deadline, "topic {topic} does not exist");
                std::thread::sleep(Duration::from_millis(100));
            };
            for partition in 0..partitions {
                assignment
                    .add_partition_offset(topic, partition as i32, Offset::Beginning)
                    .expect("valid offset");
            }
        }
        consumer.assign(&assignment).expect("assign partitions");
        Self {
            consumer,
            records: Vec::new(),
        }
    }

    /// Number of partitions assigned for `topic`.
    pub fn partitions(&self, topic: &str) -> usize {
        self.consumer
            .assignment()
            .expect("assignment")
            .elements_for_topic(topic)
            .len()
    }

    /// Reads until `done` holds for everything read so far, or `timeout` passes.
    /// Returns everything read so far by this reader, in arrival order.
    pub fn read_until(&mut self, timeout: Duration, done: impl Fn(&[ReadRecord]) -> bool) -> &[ReadRecord] {
        let deadline = Instant::now() + timeout;
        while !done(&self.records) && Instant::now() < deadline {
            self.poll_once();
        }
        &self.records
    }

    /// Reads everything the broker holds now: up to each assigned partition's
    /// high watermark, taken when called. Returns everything read so far.
    ///
    /// This is how a test sees *all* records (including any duplicate) without
    /// waiting "long enough". First wait for the records you expect
    /// ([`Reader::read_until`]): tansu's watermark was seen lagging a record it
    /// had already acknowledged, so the watermark alone is not proof of
    /// presence. Fails the test if the records below the watermarks do not
    /// arrive within `timeout`.
    pub fn read_to_end(&mut self, timeout: Duration) -> &[ReadRecord] {
        let deadline = Instant::now() + timeout;
        let assignment = self.consumer.assignment().expect("assignment");
        let mut ends: HashMap<(String, i32), i64> = HashMap::new();
        for element in assignment.elements() {
            let (topic, partition) = (element.topic().to_owned(), element.partition());
            let high = loop {
                match self
                    .consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(5))
                {
                    Ok((_, high)) => break high,
                    Err(error) => {
                        assert!(
                            Instant::now() < deadline,
                            "no watermarks for {topic}/{partition}: {error}"
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            };
            ends.insert((topic, partition), high);
        }
        loop {
            let mut next: HashMap<(String, i32), i64> = HashMap::new();
            for record in &self.records {
                let at = next.entry((record.topic.clone(), record.partition)).or_default();
                *at = (*at).max(record.offset + 1);
            }
            let behind: Vec<_> = ends
                .iter()
                .filter(|(key, high)| next.get(*key).copied().unwrap_or(0) < **high)
                .collect();
            if behind.is_empty() {
                return &self.records;
            }
            assert!(
                Instant::now() < deadline,
                "records below the high watermarks never arrived: {behind:?} (read up to {next:?})"
            );
            self.poll_once();
        }
    }

    /// Waits up to 100 ms for one record and keeps it.
    fn poll_once(&mut self) {
        match self.consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| {
                                let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                (h.key.to_owned(), value.unwrap_or_default())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.records.push(ReadRecord {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(error)) => eprintln!("consumer error (retrying): {error}"),
            None => {}
        }
    }

    /// Reads for `quiet` more and returns everything: to see that nothing else
    /// arrives after the expected records.
    pub fn read_for(&mut self, quiet: Duration) -> &[ReadRecord] {
        self.read_until(quiet, |_| false)
    }
}
