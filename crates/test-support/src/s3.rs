//! A real S3-compatible server on loopback (feature `s3`): `s3s-fs` from
//! crates.io, which `deploy/local/test.sh` installs and names in
//! `S3_SERVER_BIN`. It speaks the S3 REST API with SigV4 authentication and
//! keeps each bucket as a directory under its root and each object as a file
//! at `<root>/<bucket>/<key>`, so a test can see what really reached the store.
//!
//! The variable missing fails the test with a message saying how to provide
//! it: a test of S3 storage that passed without S3 would prove nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket every server starts with.
pub const BUCKET: &str = "marketing-media";
const ACCESS_KEY: &str = "marketing-test";
const SECRET_KEY: &str = "marketing-test-secret";
/// s3s-fs does not check the region; SigV4 signs one all the same.
const REGION: &str = "us-east-1";
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The `s3s-fs` binary: `S3_SERVER_BIN`.
pub fn s3_server_bin() -> PathBuf {
    std::env::var_os("S3_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "S3_SERVER_BIN is not set. This test stores media in a real S3-compatible server: \
                 run deploy/local/test.sh (it installs s3s-fs and sets S3_SERVER_BIN), or set \
                 S3_SERVER_BIN to an s3s-fs binary \
                 (cargo install s3s-fs --version 0.14.1 --locked --features binary)"
            )
        })
}

/// A private server on a free loopback port with a fresh root directory and
/// the bucket [`BUCKET`]; killed, and its root deleted, on drop.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    root: PathBuf,
}

impl S3Server {
    pub async fn start() -> Self {
        let bin = s3_server_bin();
        let root = std::env::temp_dir().join(format!("s3s-fs-{}", uuid::Uuid::new_v4().simple()));
        // A bucket of s3s-fs is a directory of its root (its CreateBucket is a
        // mkdir, and every request checks the directory), so making it is
        // creating the bucket.
        std::fs::create_dir_all(root.join(BUCKET))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        let port = crate::free_port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
        };
        server.wait_ready().await;
        server
    }

    /// Answering HTTP: any S3 answer will do (an unsigned request is refused).
    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + START_DEADLINE;
        while client.get(&self.endpoint).send().await.is_err() {
            if let Some(status) = self.child.try_wait().expect("poll s3s-fs") {
                panic!("s3s-fs exited ({status}) before it answered");
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs on {} did not answer within {START_DEADLINE:?}",
                self.endpoint
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `MEDIA_STORE_URL` for objects under `prefix` in [`BUCKET`].
    pub fn media_store_url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The variables with which `object_store`'s `AmazonS3Builder::from_env`
    /// reaches this server: its endpoint over plain HTTP (path-style requests,
    /// the builder's default with an endpoint), static credentials, a region.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }

    /// Where the server keeps the object `key` of [`BUCKET`].
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// The keys of every object in [`BUCKET`] under `prefix`, sorted, read
    /// from the server's directory (not through the API).
    pub fn object_keys(&self, prefix: &str) -> Vec<String> {
        let bucket = self.root.join(BUCKET);
        let mut keys = Vec::new();
        collect_files(&bucket.join(prefix), &mut keys);
        let mut keys: Vec<String> = keys
            .iter()
            .map(|path| {
                path.strip_prefix(&bucket)
                    .expect("under the bucket")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        keys.sort();
        keys
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("s3s-fs root kept at {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
