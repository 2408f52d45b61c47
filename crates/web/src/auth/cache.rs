//! The per-process cache of live API keys, so a request with a known key costs
//! no database round trip.
//!
//! The bound it keeps: a key revoked (or changed in any way, by any process or
//! by plain SQL) is refused by every process within [`TRUST_WINDOW`] of the
//! commit, which is under the promised second. How:
//!
//! - A trigger bumps the single row of `api_key_changes` in the same
//!   transaction as every change to `api_keys` (migration V2).
//! - Each process polls that row every [`POLL_INTERVAL`]; when the generation
//!   differs from the one its entries were read under, it drops them all.
//! - An entry is served only while the last poll that confirmed the generation
//!   was *sent* at most [`TRUST_WINDOW`] ago. A poll sent after a commit sees
//!   it, so a stale entry can only be served before `commit + TRUST_WINDOW`.
//!   If polling stalls (a slow or unreachable database), the cache stops being
//!   trusted and requests go to the database as if there were no cache: the
//!   bound never depends on the poll succeeding.
//! - A lookup that started before the entries were dropped cannot put back
//!   what it read: inserts carry the epoch they started in and are discarded
//!   if it has moved on.
//!
//! Only the SHA-256 of a secret is a key here, never the secret.
//!
//! An entry carries what the access guard needs: the key's scopes and when
//! the secret stops working (key expiry, or a rotation's grace period). Expiry
//! is checked on every request against the clock, so it needs no poll.

use super::Caller;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often each process reads the generation. Short enough that a healthy
/// process confirms its cache several times within [`TRUST_WINDOW`], so one
/// slow poll does not send every request to the database; one single-row
/// read per process at this rate costs nothing measurable.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long after the confirming poll was sent an entry may still be served.
/// The revocation bound: 800 ms leaves 200 ms of the promised second for the
/// request that is refused to be checked and answered.
pub const TRUST_WINDOW: Duration = Duration::from_millis(800);

/// A poll that takes longer is abandoned so the next one can start; the
/// cache has stopped being trusted long before.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Most entries held. The working set is the live keys in use, normally far
/// fewer, and every key change drops them all; the bound only stops a process
/// with very many keys from growing without limit. Unknown and revoked keys
/// are never cached (an attacker could fill such entries at will, and a
/// refusal is not the hot path), so only keys that exist compete for room (an
/// expired one stays, refused by its expiry, until the next key change).
pub const CAPACITY: usize = 10_000;

/// The SHA-256 of a secret.
pub type KeyHash = [u8; 32];

/// What the cache says about a key.
pub(crate) enum Lookup {
    Hit(Caller),
    /// Ask the database, then [`KeyCache::insert`] with this epoch.
    Miss(u64),
}

#[derive(Default)]
pub(crate) struct KeyCache {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// The generation the entries were read under; `None` until the first poll.
    generation: Option<i64>,
    /// When the last poll that saw `generation` was sent.
    confirmed: Option<Instant>,
    /// Moves whenever the entries are dropped.
    epoch: u64,
    entries: HashMap<KeyHash, Caller>,
}

/// Whether entries confirmed by a poll sent at `confirmed` may be served `now`.
fn trusted(confirmed: Option<Instant>, now: Instant) -> bool {
    confirmed.is_some_and(|sent| now.saturating_duration_since(sent) <= TRUST_WINDOW)
}

fn count(result: &'static str) {
    metrics::counter!("marketing_api_key_cache_lookups_total", "result" => result).increment(1);
}

impl KeyCache {
    pub(crate) fn get(&self, hash: &KeyHash, now: Instant) -> Lookup {
        let state = self.state.read().expect("key cache lock");
        if !trusted(state.confirmed, now) {
            count("unconfirmed");
            return Lookup::Miss(state.epoch);
        }
        match state.entries.get(hash) {
            Some(caller) => {
                count("hit");
                Lookup::Hit(caller.clone())
            }
            None => {
                count("miss");
                Lookup::Miss(state.epoch)
            }
        }
    }

    /// Caches a live key read from the database during `epoch`, unless the
    /// entries were dropped since: what was read may predate the change.
    pub(crate) fn insert(&self, epoch: u64, hash: KeyHash, caller: Caller) {
        let mut state = self.state.write().expect("key cache lock");
        if state.epoch != epoch {
            return;
        }
        if state.entries.len() >= CAPACITY && !state.entries.contains_key(&hash) {
            // Any entry will do: all of them go at the next key change anyway.
            if let Some(victim) = state.entries.keys().next().copied() {
                state.entries.remove(&victim);
            }
        }
        state.entries.insert(hash, caller);
    }

    /// Drops every entry at once (this process changed a key).
    pub(crate) fn invalidate(&self) {
        let mut state = self.state.write().expect("key cache lock");
        state.entries.clear();
        state.epoch += 1;
    }

    /// Records what a poll sent at `sent` read.
    pub(crate) fn observe(&self, generation: i64, sent: Instant) {
        let mut state = self.state.write().expect("key cache lock");
        if state.generation != Some(generation) {
            state.entries.clear();
            state.epoch += 1;
            state.generation = Some(generation);
        }
        state.confirmed = Some(sent);
    }

    pub(crate) fn holds(&self, hash: &KeyHash, now: Instant) -> bool {
        let state = self.state.read().expect("key cache lock");
        trusted(state.confirmed, now) && state.entries.contains_key(hash)
    }

    /// Reads the generation once.
    pub(crate) async fn poll(&self, pool: &Pool) -> anyhow::Result<()> {
        let client = pool.get().await?;
        let statement = client
            .prepare_cached("SELECT generation FROM api_key_changes")
            .await?;
        // Taken before the query is sent, so the trust window is measured from
        // no later than the moment the database read the row.
        let sent = Instant::now();
        let row = client.query_one(&statement, &[]).await?;
        self.observe(row.get(0), sent);
        Ok(())
    }

    /// Polls every [`POLL_INTERVAL`] until `stop`.
    pub(crate) fn spawn_poller(self: Arc<Self>, pool: Pool, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(POLL_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Logged on the change only: an outage would otherwise log five
            // lines a second.
            let mut failing = false;
            loop {
                let polled = tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => tokio::select! {
                        () = stop.cancelled() => return,
                        polled = tokio::time::timeout(POLL_TIMEOUT, self.poll(&pool)) => polled,
                    },
                };
                match polled {
                    Ok(Ok(())) if failing => {
                        tracing::info!("API key changes are read again; the key cache is in use");
                        failing = false;
                    }
                    Ok(Ok(())) => {}
                    Ok(Err(error)) if !failing => {
                        tracing::warn!(%error, "cannot read API key changes; keys are looked up per request");
                        failing = true;
                    }
                    Err(_) if !failing => {
                        tracing::warn!("reading API key changes timed out; keys are looked up per request");
                        failing = true;
                    }
                    _ => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::ProjectSlug;
    use uuid::Uuid;

    fn caller(name: &str) -> Caller {
        Caller {
            key_id: Uuid::now_v7(),
            key_name: name.to_owned(),
            project: ProjectSlug::parse("acme").unwrap(),
            scopes: crate::auth::Scopes::all(),
            expires_at: None,
        }
    }

    fn epoch(lookup: Lookup) -> u64 {
        match lookup {
            Lookup::Miss(epoch) => epoch,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    #[test]
    fn entries_are_served_only_within_the_trust_window_of_the_confirming_poll() {
        let sent = Instant::now();
        assert!(!trusted(None, sent), "never polled: never trusted");
        assert!(trusted(Some(sent), sent));
        assert!(trusted(Some(sent), sent + TRUST_WINDOW));
        assert!(!trusted(
            Some(sent),
            sent + TRUST_WINDOW + Duration::from_millis(1)
        ));

        let cache = KeyCache::default();
        let hash = [1; 32];
        cache.observe(7, sent);
        let e = epoch(cache.get(&hash, sent));
        cache.insert(e, hash, caller("a"));
        assert!(matches!(cache.get(&hash, sent + TRUST_WINDOW), Lookup::Hit(_)));
        assert!(
            matches!(cache.get(&hash, sent + TRUST_WINDOW * 2), Lookup::Miss(_)),
            "polling stalled: the database decides"
        );
        cache.observe(7, sent + TRUST_WINDOW * 2);
        assert!(
            matches!(cache.get(&hash, sent + TRUST_WINDOW * 2), Lookup::Hit(_)),
            "same generation: entries kept"
        );
    }

    #[test]
    fn a_new_generation_drops_everything_and_a_lookup_from_before_cannot_put_it_back() {
        let now = Instant::now();
        let cache = KeyCache::default();
        let hash = [2; 32];
        // Read before the first poll: that poll drops it too.
        let before_first_poll = epoch(cache.get(&hash, now));
        cache.insert(before_first_poll, hash, caller("a"));
        cache.observe(1, now);
        assert!(!cache.holds(&hash, now));

        let e = epoch(cache.get(&hash, now));
        cache.insert(e, hash, caller("a"));
        assert!(cache.holds(&hash, now));
        cache.observe(2, now);
        assert!(!cache.holds(&hash, now), "another generation: dropped");
        cache.insert(e, hash, caller("a"));
        assert!(!cache.holds(&hash, now), "read before the change: not cached");

        let e = epoch(cache.get(&hash, now));
        cache.insert(e, hash, caller("a"));
        cache.invalidate();
        assert!(!cache.holds(&hash, now), "changed here: dropped at once");
        cache.insert(e, hash, caller("a"));
        assert!(!cache.holds(&hash, now));
    }

    #[test]
    fn the_cache_is_bounded() {
        let now = Instant::now();
        let cache = KeyCache::default();
        cache.observe(1, now);
        for n in 0..CAPACITY + 10 {
            let mut hash = [0; 32];
            hash[..8].copy_from_slice(&(n as u64).to_le_bytes());
            let e = epoch(cache.get(&hash, now));
            cache.insert(e, hash, caller("k"));
        }
        assert_eq!(cache.state.read().unwrap().entries.len(), CAPACITY);
    }
}
