//! The Kafka relay (docs/kafka.md): follows the whole event log from its
//! own checkpoint and produces every campaign-scoped event to the campaigns topic
//! and every lead event to the leads topic, as CloudEvents in binary mode.
//!
//! Guarantees, and what they rest on:
//!
//! * **Nothing lost.** The checkpoint (row `publisher` in
//!   `projection_checkpoints`) moves only over events whose delivery the broker
//!   acknowledged, and only over a gap-free prefix of the log; anything after it
//!   is produced again by the next round, session or process.
//! * **In order per key.** Records are produced in log order by an idempotent
//!   producer that never times records out (see [`kafka::producer_config`]), and
//!   keyed by campaign (campaigns topic) or lead (leads topic).
//! * **At least once.** A record acknowledged but not yet checkpointed when the
//!   publisher dies, loses its producer or its leadership is produced again.
//!   Consumers dedupe on `ce_id`; keeping the first copy of each id restores the
//!   log order per key (docs/kafka.md, "Delivery guarantees", explains why).
//! * **One active publisher.** A Postgres advisory lock held on a dedicated
//!   connection; standbys take over when it dies. Leadership, reading and the
//!   checkpoint's compare-and-set are the log follower's
//!   ([`event_store::follower`]), shared with the projector.
//!
//! Modules: [`route`] decides topic, key and subject from the stream prefix;
//! [`cloudevents`] encodes records; [`gate`] is the personal-data hook; [`kafka`]
//! configures librdkafka; [`Publisher`] runs it all.

pub mod cloudevents;
pub mod config;
pub mod gate;
pub mod kafka;
pub mod route;
mod runner;

pub use config::{parse_properties, ConfigError, PublisherConfig};
pub use gate::{AsStored, DataGate, GateError, RoutedEvent};
pub use route::{Route, RouteError, TopicKind};
pub use runner::{Activity, PublishError, Publisher};
