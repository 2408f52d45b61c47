//! The dispatcher's and the API's settings (the binary fills them from the
//! environment, see docs/webhooks.md), and the fixed limits.

use std::time::Duration;

/// A delivery that gets no 2xx within this is a failed attempt.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most webhook endpoints one project may have.
pub const MAX_ENDPOINTS_PER_PROJECT: i64 = 20;
/// Most entries in an endpoint's `events`.
pub const MAX_EVENT_TYPES: usize = 64;
/// Longest `description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// How long the secret before a rotation still signs deliveries (next to
/// the new one), so receivers can switch without losing any.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// Most deliveries one shard's sender has in flight at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// Most deliveries one shard's sender has in flight to one endpoint at once,
/// so that an endpoint that answers slowly (or not at all, until the
/// timeout) holds only these slots and the others keep flowing.
pub const MAX_IN_FLIGHT_PER_ENDPOINT: usize = 4;
/// How often the leader of shard 0 purges what the retention lets go.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// The most shards the dispatcher may have (the projections' limit).
pub const MAX_SHARDS: u32 = projector::MAX_SHARDS;

#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// Lets endpoints point at loopback, private and link-local addresses.
    pub allow_private_targets: bool,
    /// The pause before the first retry; it doubles with every failed
    /// attempt (with jitter), up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a delivery is retried before it is given up, and how long an
    /// endpoint may fail without a success before it is disabled.
    pub give_up_after: Duration,
    /// The longest the dispatcher sleeps between looks at the outbox when
    /// nothing is due (new events and manual retries in this process wake
    /// it sooner).
    pub idle_poll: Duration,
    /// Keys the dispatcher's checkpoint rows and locks (one per shard).
    pub name: String,
    /// How many shards the dispatcher runs (1 to [`MAX_SHARDS`]); the
    /// dispatcher processes divide them.
    pub shards: u32,
    /// How long attempts, and delivered or given-up deliveries, are kept.
    pub retention: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
            idle_poll: Duration::from_secs(1),
            name: "webhooks".to_owned(),
            shards: 2,
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl WebhooksConfig {
    /// The pause after the `attempts`-th failed attempt: `retry_base` doubled
    /// per earlier failure, at most `retry_max`, then a random point in its
    /// upper half, so receivers coming back are not hit by every retry at once.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let full = self
            .retry_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.retry_max);
        let half = full / 2;
        half + full.mul_f64(rand::random::<f64>() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let config = WebhooksConfig::default();
        for attempts in 1..=40 {
            let full = Duration::from_secs(5)
                .saturating_mul(2u32.saturating_pow(attempts - 1))
                .min(Duration::from_secs(3600));
            let pause = config.backoff(attempts);
            assert!(pause >= full / 2 && pause <= full, "{attempts}: {pause:?}");
        }
    }

    #[test]
    fn the_defaults_retry_for_more_than_a_day() {
        let config = WebhooksConfig::default();
        assert!(config.give_up_after >= Duration::from_secs(24 * 3600));
    }
}
