//! The double's memory: one ordered log of every event, indexed by stream.

use prost::bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use uuid::Uuid;

/// One stored event. Positions follow the real server's shape: every event of
/// one append shares the append's commit position and has its own prepare
/// position, smaller than the commit (prepares are written before the commit
/// record). So `$all` order is `(commit, prepare)` and the two parts differ,
/// which a backend that confused them would trip over.
#[derive(Debug)]
pub struct Stored {
    pub id: Uuid,
    pub stream: Bytes,
    pub revision: u64,
    pub commit: u64,
    pub prepare: u64,
    pub metadata: HashMap<String, String>,
    pub custom_metadata: Bytes,
    pub data: Bytes,
}

impl Stored {
    pub fn position(&self) -> (u64, u64) {
        (self.commit, self.prepare)
    }
}

/// An event as a client proposed it.
pub struct Proposed {
    pub id: Uuid,
    pub metadata: HashMap<String, String>,
    pub custom_metadata: Bytes,
    pub data: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Any,
    NoStream,
    StreamExists,
    Revision(u64),
}

pub enum Appended {
    /// Written, or recognised as a retry of events already at those revisions.
    Written { revision: u64, position: (u64, u64) },
    /// Nothing was proposed: the stream's current revision, if it exists.
    Nothing { current: Option<u64> },
    /// The stream is not where the writer expected it.
    WrongExpectedVersion { current: Option<u64> },
}

#[derive(Default)]
pub struct Log {
    pub events: Vec<Arc<Stored>>,
    streams: HashMap<Bytes, Vec<usize>>,
    /// The next free "byte offset" of the imaginary transaction file.
    next_offset: u64,
}

impl Log {
    pub fn current(&self, stream: &[u8]) -> Option<u64> {
        self.streams.get(stream).map(|indexes| indexes.len() as u64 - 1)
    }

    /// The events of `stream`, oldest first.
    pub fn stream(&self, stream: &[u8]) -> Option<Vec<Arc<Stored>>> {
        self.streams
            .get(stream)
            .map(|indexes| indexes.iter().map(|&i| Arc::clone(&self.events[i])).collect())
    }

    /// Index of the first event at or after `position` in `$all` order.
    pub fn index_at_or_after(&self, position: (u64, u64)) -> usize {
        self.events.partition_point(|e| e.position() < position)
    }

    /// Index of the first event strictly after `position` in `$all` order.
    pub fn index_after(&self, position: (u64, u64)) -> usize {
        self.events.partition_point(|e| e.position() <= position)
    }

    pub fn append(&mut self, stream: Bytes, expected: Expected, proposed: Vec<Proposed>) -> Appended {
        let current = self.current(&stream);
        if let Some(done) = self.already_written(&stream, expected, &proposed) {
            return done;
        }
        let fits = match expected {
            Expected::Any => true,
            Expected::NoStream => current.is_none(),
            Expected::StreamExists => current.is_some(),
            Expected::Revision(r) => current == Some(r),
        };
        if !fits {
            return Appended::WrongExpectedVersion { current };
        }
        if proposed.is_empty() {
            return Appended::Nothing { current };
        }
        let first_revision = current.map_or(0, |c| c + 1);
        let base = self.next_offset.max(1);
        let count = proposed.len() as u64;
        let commit = base + count;
        self.next_offset = commit + 1;
        let created = created_ticks();
        let indexes = self.streams.entry(stream.clone()).or_default();
        for (offset, event) in proposed.into_iter().enumerate() {
            let mut metadata = event.metadata;
            metadata.insert("created".into(), created.clone());
            indexes.push(self.events.len());
            self.events.push(Arc::new(Stored {
                id: event.id,
                stream: stream.clone(),
                revision: first_revision + offset as u64,
                commit,
                prepare: base + offset as u64,
                metadata,
                custom_metadata: event.custom_metadata,
                data: event.data,
            }));
        }
        let last = self.events.last().expect("just appended");
        Appended::Written {
            revision: last.revision,
            position: last.position(),
        }
    }

    /// The server's idempotency for an exact expected revision: the same event
    /// ids already stored right after that revision make the write a success
    /// that writes nothing. (The real server also has a best-effort check for
    /// `Any`, based on a cache; the double does not imitate it.)
    fn already_written(&self, stream: &[u8], expected: Expected, proposed: &[Proposed]) -> Option<Appended> {
        let first = match expected {
            Expected::NoStream => 0,
            Expected::Revision(r) => r + 1,
            Expected::Any | Expected::StreamExists => return None,
        };
        let indexes = self.streams.get(stream)?;
        if proposed.is_empty() || indexes.len() < first as usize + proposed.len() {
            return None;
        }
        let stored = &indexes[first as usize..first as usize + proposed.len()];
        let same = stored
            .iter()
            .zip(proposed)
            .all(|(&i, p)| self.events[i].id == p.id);
        same.then(|| {
            let last = &self.events[*stored.last().expect("not empty")];
            Appended::Written {
                revision: last.revision,
                position: last.position(),
            }
        })
    }
}

/// .NET ticks (100 ns) since the Unix epoch, as the server's `created`.
fn created_ticks() -> String {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_nanos() / 100).to_string()
}

/// The log and a counter of its length that subscriptions wait on.
pub struct Shared {
    log: Mutex<Log>,
    pub appended: watch::Sender<usize>,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            log: Mutex::new(Log::default()),
            appended: watch::channel(0).0,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-written
        // (an append pushes only after every check), so a poisoned lock is
        // still a consistent log.
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn append(&self, stream: Bytes, expected: Expected, proposed: Vec<Proposed>) -> Appended {
        let mut log = self.lock();
        let outcome = log.append(stream, expected, proposed);
        let len = log.events.len();
        drop(log);
        self.appended.send_replace(len);
        outcome
    }
}
