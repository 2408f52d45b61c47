//! Per-key rate limits across the deployment, without a database round trip
//! per request (docs/operations.md, "Rate limits").
//!
//! Each API process enforces its share of every key's limit, in memory (a
//! GCRA token bucket per key, the `governor` crate): with `n` live processes
//! serving the same routes, `RATE_LIMIT_PER_SECOND / n` per second with a
//! burst of `RATE_LIMIT_BURST / n` (rounded down, at least 1). The live
//! processes are known through a heartbeat: each writes its row of
//! `rate_limit_processes` every [`HEARTBEAT_INTERVAL`] and counts the rows
//! written within [`LIVE_WINDOW`]. How exact that is:
//!
//! - With requests spread evenly over the processes (a load balancer's round
//!   robin), a key gets its whole limit, less the rounding of the burst.
//! - A client whose requests all reach one process gets that process's share
//!   only: the limit errs on the strict side, never above what is configured.
//! - When a process starts, the others learn of it within one heartbeat, so
//!   for up to [`HEARTBEAT_INTERVAL`] the deployment may admit up to one
//!   share more; a process that dies without stopping cleanly is counted for
//!   up to [`LIVE_WINDOW`], when the others admit one share less. A change in
//!   the count starts every key afresh in this process (a full share).
//! - In a split deployment the command processes and the query processes each
//!   share the limit among themselves (a `serve` process counts for both):
//!   a key may make its limit of writes and its limit of reads.
//! - While the database is unreachable, the last count stays in force.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use deadpool_postgres::Pool;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often each process writes its heartbeat and recounts the others.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// A process whose last heartbeat is older than this is no longer counted.
pub const LIVE_WINDOW: Duration = Duration::from_secs(5);

/// Heartbeat rows older than this are deleted (by whichever process notices).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

pub const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Which routes a process serves: processes share a key's limit with those
/// that serve the same requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// `marketing serve`: every route.
    All,
    Commands,
    Queries,
}

impl Serves {
    fn as_str(self) -> &'static str {
        match self {
            Serves::All => "all",
            Serves::Commands => "commands",
            Serves::Queries => "queries",
        }
    }
}

type Limiter = RateLimiter<
    Uuid,
    governor::state::keyed::DefaultKeyedStateStore<Uuid>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// This process's share, rebuilt when the number of processes changes.
struct Share {
    processes: u32,
    burst: u32,
    /// Time to regain one request.
    period: Duration,
    limiter: Limiter,
}

impl Share {
    fn new(per_second: u32, burst: u32, processes: u32) -> Self {
        let processes = processes.max(1);
        let share_burst = (burst / processes).max(1);
        let period = Duration::from_secs_f64(f64::from(processes) / f64::from(per_second));
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a positive period")
            .allow_burst(NonZeroU32::new(share_burst).expect("at least 1"));
        Self {
            processes,
            burst: share_burst,
            period,
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn secs(&self, periods: u32, plus: Duration) -> u64 {
        (self.period * periods + plus).as_secs_f64().ceil() as u64
    }
}

pub struct RateLimits {
    per_second: u32,
    burst: u32,
    serves: Serves,
    /// This process's heartbeat row.
    process_id: Uuid,
    share: RwLock<Arc<Share>>,
}

/// What the limit said about one request, with what its headers tell.
pub enum Decision {
    Allowed {
        limit: u32,
        remaining: u32,
        reset_secs: u64,
    },
    Refused(Refusal),
}

pub struct Refusal {
    limit: u32,
    retry_after: Duration,
    reset_secs: u64,
}

impl Refusal {
    /// Whole seconds after which a retry to this process is admitted (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        (self.retry_after.as_secs_f64().ceil() as u64).max(1)
    }
}

impl Decision {
    /// `RateLimit-Limit`: the key's burst across the deployment;
    /// `RateLimit-Remaining`: what this process still admits, scaled to the
    /// deployment (exact when requests are spread evenly; 0 means the next
    /// request here is refused); `RateLimit-Reset`: seconds until this
    /// process's share is full again.
    pub fn set_headers(&self, headers: &mut HeaderMap) {
        let (limit, remaining, reset) = match self {
            Decision::Allowed {
                limit,
                remaining,
                reset_secs,
            } => (*limit, *remaining, *reset_secs),
            Decision::Refused(refusal) => (refusal.limit, 0, refusal.reset_secs),
        };
        headers.insert(LIMIT, HeaderValue::from(limit));
        headers.insert(REMAINING, HeaderValue::from(remaining));
        headers.insert(RESET, HeaderValue::from(reset));
    }
}

impl RateLimits {
    /// `None` when either number is 0: limits off.
    pub fn new(per_second: u32, burst: u32, serves: Serves) -> Option<Self> {
        if per_second == 0 || burst == 0 {
            return None;
        }
        Some(Self {
            per_second,
            burst,
            serves,
            process_id: Uuid::now_v7(),
            // Alone until the first heartbeat says otherwise.
            share: RwLock::new(Arc::new(Share::new(per_second, burst, 1))),
        })
    }

    /// How many processes this one believes share the limit.
    pub fn processes(&self) -> u32 {
        self.share().processes
    }

    fn share(&self) -> Arc<Share> {
        self.share.read().expect("rate limit lock").clone()
    }

    /// Takes one request from `key`'s share here. Every request counts once,
    /// whatever it carries (an import of a million rows, a whole export).
    pub fn check(&self, key: Uuid) -> Decision {
        let share = self.share();
        let scale = |n: u32| n.saturating_mul(share.processes).min(self.burst);
        match share.limiter.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision::Allowed {
                    limit: self.burst,
                    remaining: scale(remaining),
                    reset_secs: share.secs(share.burst.saturating_sub(remaining), Duration::ZERO),
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("marketing_rate_limited_total").increment(1);
                Decision::Refused(Refusal {
                    limit: self.burst,
                    retry_after,
                    reset_secs: share.secs(share.burst.saturating_sub(1), retry_after),
                })
            }
        }
    }

    /// Writes this process's heartbeat and recounts the live processes once.
    pub async fn heartbeat(&self, pool: &Pool) -> anyhow::Result<()> {
        let client = pool.get().await?;
        let live = client
            .query_one(
                "WITH beat AS (
                     INSERT INTO rate_limit_processes (id, serves, heartbeat_at) VALUES ($1, $2, now())
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
                 )
                 SELECT count(*) FILTER (WHERE id <> $1) FROM rate_limit_processes
                  WHERE heartbeat_at > now() - make_interval(secs => $3)
                    AND ($2 = 'all' OR serves = 'all' OR serves = $2)",
                &[
                    &self.process_id,
                    &self.serves.as_str(),
                    &LIVE_WINDOW.as_secs_f64(),
                ],
            )
            .await?;
        // The others, plus this one (the CTE's insert is not visible to the
        // statement's own read).
        let others: i64 = live.get(0);
        let processes = u32::try_from(others + 1).unwrap_or(u32::MAX);
        client
            .execute(
                "DELETE FROM rate_limit_processes WHERE heartbeat_at < now() - make_interval(secs => $1)",
                &[&FORGET_AFTER.as_secs_f64()],
            )
            .await?;
        let current = self.share();
        if current.processes != processes {
            tracing::info!(processes, "API processes sharing each key's rate limit");
            *self.share.write().expect("rate limit lock") =
                Arc::new(Share::new(self.per_second, self.burst, processes));
        } else {
            // Forget keys idle long enough to be full again.
            current.limiter.retain_recent();
        }
        metrics::gauge!("marketing_rate_limit_processes").set(f64::from(processes));
        Ok(())
    }

    /// Removes this process's heartbeat, so the others stop counting it now.
    async fn leave(&self, pool: &Pool) -> anyhow::Result<()> {
        let client = pool.get().await?;
        client
            .execute(
                "DELETE FROM rate_limit_processes WHERE id = $1",
                &[&self.process_id],
            )
            .await?;
        Ok(())
    }

    pub(crate) fn spawn_heartbeat(self: &Arc<Self>, pool: Pool, stop: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let beat = tokio::time::timeout(LIVE_WINDOW, this.heartbeat(&pool)).await;
                match beat {
                    Ok(Ok(())) => failing = false,
                    Ok(Err(error)) if !failing => {
                        tracing::warn!(%error, "cannot write the rate-limit heartbeat; keeping the last count");
                        failing = true;
                    }
                    Err(_) if !failing => {
                        tracing::warn!("the rate-limit heartbeat timed out; keeping the last count");
                        failing = true;
                    }
                    _ => {}
                }
            }
            if let Err(error) = this.leave(&pool).await {
                tracing::warn!(%error, "cannot remove the rate-limit heartbeat");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_takes_its_share_of_the_burst() {
        let share = Share::new(1, 20, 2);
        assert_eq!((share.burst, share.period), (10, Duration::from_secs(2)));
        let key = Uuid::now_v7();
        let started = std::time::Instant::now();
        let admitted = (0..30).filter(|_| share.limiter.check_key(&key).is_ok()).count();
        // 10 at once, then one per 2 s of however long the loop took.
        let refilled = (started.elapsed().as_secs_f64() / 2.0).floor() as usize;
        assert!(admitted >= 10 && admitted <= 10 + refilled, "{admitted}");
        assert_eq!(Share::new(10, 3, 4).burst, 1, "at least one");
    }

    #[test]
    fn zero_turns_limits_off() {
        assert!(RateLimits::new(0, 10, Serves::All).is_none());
        assert!(RateLimits::new(10, 0, Serves::All).is_none());
        assert!(RateLimits::new(10, 10, Serves::All).is_some());
    }
}
