//! Dividing many readers (the shards of every projection) between the
//! processes that run them.
//!
//! Every process holds one lease connection, taken out of the pool, on which it
//! takes one session-level advisory lock per reader it leads, plus one
//! *membership* lock that tells the others it is alive. So:
//! - a process that dies, or whose connection dies, releases every reader it led
//!   at once (Postgres drops session locks with the session), and stops counting
//!   as a member;
//! - a process leads at most its fair share, `ceil(readers / members)`; a
//!   process that starts finds the others over their share once it counts, and
//!   they each stand down from readers until they are back at it, which the
//!   newcomer (or anyone under its share) then takes;
//! - 100 readers cost one connection per process, not 100.
//!
//! The lock keys are the readers' own ([`crate::follower::lock_key`]), so a
//! process of an earlier version, which takes them on connections of their own,
//! still excludes and is excluded by this one.

use deadpool_postgres::{ClientWrapper, Object, Pool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// `classid` of the membership locks (the two-key form puts its first key
/// there, and `objsubid = 2` tells them from the one-key reader locks).
const MEMBER_CLASS: i32 = 0x6d6b_6d62;

/// How long a member count is trusted before it is read again.
const MEMBERS_TTL: Duration = Duration::from_millis(500);

/// One process's leases on the readers it leads.
pub struct Leases {
    pool: Pool,
    /// How many readers this process runs (and every process runs them all).
    readers: usize,
    held: AtomicUsize,
    connection: Mutex<Option<Arc<ClientWrapper>>>,
    /// The last member count read, and when.
    members: StdMutex<(usize, Option<Instant>)>,
    member_id: i32,
    /// The membership lock's `classid`: processes count only the members of
    /// their own group ([`Leases::for_group`]).
    class: i32,
}

/// Leadership of one reader, on the shared lease connection.
pub struct Lease {
    leases: Arc<Leases>,
    connection: Arc<ClientWrapper>,
    key: i64,
    released: bool,
}

impl Leases {
    /// Leases for a process that runs `readers` readers (the projections'
    /// shards).
    pub fn new(pool: Pool, readers: usize) -> Arc<Self> {
        Self::with_class(pool, readers, MEMBER_CLASS)
    }

    /// Leases of another group of readers (the webhook dispatcher's shards),
    /// divided among the processes that run that group: a process that runs
    /// only projectors must not count towards the dispatcher's fair share,
    /// or a lone dispatcher would lead only part of its shards.
    pub fn for_group(pool: Pool, readers: usize, group: &str) -> Arc<Self> {
        // A classid of its own per group (never the projections' one).
        let class = (crate::follower::lock_key("members:", group) >> 32) as i32;
        let class = if class == MEMBER_CLASS { class ^ 1 } else { class };
        Self::with_class(pool, readers, class)
    }

    fn with_class(pool: Pool, readers: usize, class: i32) -> Arc<Self> {
        Arc::new(Self {
            pool,
            readers: readers.max(1),
            held: AtomicUsize::new(0),
            connection: Mutex::new(None),
            members: StdMutex::new((1, None)),
            member_id: rand_member_id(),
            class,
        })
    }

    /// How many readers this process leads now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// The lease connection, opened (and the membership lock taken) if there is
    /// none or the last one died, which took every lease with it.
    async fn connection(&self) -> Result<Arc<ClientWrapper>, crate::StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        let connection = Object::take(self.pool.get().await?);
        connection
            .execute("SELECT pg_advisory_lock($1, $2)", &[&self.class, &self.member_id])
            .await?;
        let connection = Arc::new(connection);
        *slot = Some(connection.clone());
        *self.members.lock().expect("members lock") = (1, None);
        Ok(connection)
    }

    /// How many processes hold a lease connection on this database, read at
    /// most every [`MEMBERS_TTL`].
    async fn members(&self, connection: &ClientWrapper) -> Result<usize, crate::StoreError> {
        {
            let (count, read_at) = *self.members.lock().expect("members lock");
            if read_at.is_some_and(|at| at.elapsed() < MEMBERS_TTL) {
                return Ok(count);
            }
        }
        let count: i64 = connection
            .query_one(
                "SELECT count(*) FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 2
                   AND classid = $1::int4::oid
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&self.class],
            )
            .await?
            .get(0);
        let count = usize::try_from(count).unwrap_or(1).max(1);
        *self.members.lock().expect("members lock") = (count, Some(Instant::now()));
        Ok(count)
    }

    /// The most readers this process should lead while `members` processes run.
    fn share(&self, members: usize) -> usize {
        self.readers.div_ceil(members)
    }

    /// Leads the reader `key` if this process is under its share and no other
    /// process leads it.
    pub async fn try_acquire(self: &Arc<Self>, key: i64) -> Result<Option<Lease>, crate::StoreError> {
        let connection = self.connection().await?;
        let members = self.members(&connection).await?;
        let share = self.share(members);
        // Reserve a place first, so followers asking at once cannot overshoot.
        if self
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                (held < share).then_some(held + 1)
            })
            .is_err()
        {
            return Ok(None);
        }
        let acquired: bool = match connection
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
        {
            Ok(row) => row.get(0),
            Err(error) => {
                self.held.fetch_sub(1, Ordering::SeqCst);
                return Err(error.into());
            }
        };
        if !acquired {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return Ok(None);
        }
        Ok(Some(Lease {
            leases: self.clone(),
            connection,
            key,
            released: false,
        }))
    }
}

impl Lease {
    /// The lease connection is gone, and with it the lock.
    pub fn is_lost(&self) -> bool {
        self.connection.is_closed()
    }

    /// Whether this process leads more than its share and this lease should
    /// go. At most `held - share` leases answer yes, however many ask at once.
    pub async fn should_yield(&mut self) -> bool {
        let Ok(members) = self.leases.members(&self.connection).await else {
            return false;
        };
        let share = self.leases.share(members);
        let yielded = self
            .leases
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                (held > share).then(|| held - 1)
            })
            .is_ok();
        if yielded {
            self.released = true;
            self.unlock().await;
        }
        yielded
    }

    /// Gives the reader up.
    pub async fn release(mut self) {
        if !self.released {
            self.released = true;
            self.leases.held.fetch_sub(1, Ordering::SeqCst);
            self.unlock().await;
        }
    }

    async fn unlock(&self) {
        if let Err(error) = self
            .connection
            .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
            .await
        {
            // The connection is gone, and the lock with it.
            tracing::debug!(%error, key = self.key, "cannot unlock a lease");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.leases.held.fetch_sub(1, Ordering::SeqCst);
        // Dropped without `release` (a task cancelled mid-term): unlock in the
        // background, or the lock would outlive the leadership.
        let connection = self.connection.clone();
        let key = self.key;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = connection.execute("SELECT pg_advisory_unlock($1)", &[&key]).await;
            });
        }
    }
}

/// A member id unlikely to be another live process's (a clash would make the
/// two count as one, which only skews the share, never safety).
fn rand_member_id() -> i32 {
    (uuid::Uuid::new_v4().as_u128() as i32) & i32::MAX
}
