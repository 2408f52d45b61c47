//! Webhooks and the event feed (docs/webhooks.md): for downstream systems
//! that do not run Kafka.
//!
//! * [`feed`]: `GET /events`, the project's public events in commit-safe log
//!   order, each the CloudEvent the publisher sends to Kafka (same id, type,
//!   source, subject; [`outbound`]) plus its `position` cursor.
//! * [`endpoints`], [`deliveries`]: the management API.
//! * [`Dispatcher`]: one log follower per shard ([`layout`]) that fans each
//!   event of its shard out into the delivery outbox ([`outbox`]) of every
//!   matching endpoint, and while it leads the shard, sends the shard's
//!   deliveries ([`sender`]): signed per Standard Webhooks ([`signature`]),
//!   only to public addresses ([`target`]), retried with backoff, per
//!   aggregate in log order; old rows are purged ([`retention`]).

pub mod config;
pub mod deliveries;
mod dispatcher;
pub mod endpoints;
pub mod feed;
pub mod layout;
pub mod outbound;
pub mod outbox;
pub mod retention;
pub mod sender;
pub mod signature;
pub mod target;

pub use config::WebhooksConfig;
pub use dispatcher::{DispatchError, Dispatcher};

use axum::extract::FromRef;
use axum::Router;
use deadpool_postgres::Pool;
use publisher::DataGate;
use std::sync::Arc;
use tokio::sync::Notify;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use web::idempotency::{idempotency, IdempotencyState};
use web::ApiKeys;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Creates or upgrades the webhook tables (endpoints, outbox, attempts).
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), migrations::MigrationError> {
    migrations::run_migrations(client, embedded::migrations::runner(), "webhooks_migrations").await
}

#[derive(Clone)]
pub struct WebhooksState {
    pub pool: Pool,
    /// How the feed reads the log (`EventStore::log_reader`).
    pub log: event_store::LogReader,
    pub keys: ApiKeys,
    /// What of lead events' personal data may leave (the publisher's rule).
    pub gate: Arc<dyn DataGate>,
    pub config: Arc<WebhooksConfig>,
    /// Wakes this process's dispatcher shards (a manual retry, an endpoint
    /// enabled), with `notify_waiters`.
    pub wake: Arc<Notify>,
}

impl FromRef<WebhooksState> for ApiKeys {
    fn from_ref(state: &WebhooksState) -> Self {
        state.keys.clone()
    }
}

/// The feed: a read, served where the query API is.
fn feed_routes() -> OpenApiRouter<WebhooksState> {
    OpenApiRouter::default().routes(routes!(feed::list))
}

/// Endpoint management and deliveries: served where the command API is.
fn management_routes() -> OpenApiRouter<WebhooksState> {
    OpenApiRouter::default()
        .routes(routes!(endpoints::create, endpoints::list))
        .routes(routes!(endpoints::get_one, endpoints::update, endpoints::delete))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::retry))
}

/// The OpenAPI entries of every route here.
pub fn openapi() -> utoipa::openapi::OpenApi {
    feed_routes().merge(management_routes()).into_openapi()
}

/// The feed route, at its full path.
pub fn feed_router(state: WebhooksState) -> Router {
    web::access::guard(feed_routes(), state.keys.clone()).with_state(state)
}

/// The management routes, at their full paths, with `Idempotency-Key` on
/// their POSTs as on every POST of the API.
pub fn management_router(state: WebhooksState) -> Router {
    let idempotency_state = IdempotencyState {
        pool: state.pool.clone(),
        keys: state.keys.clone(),
    };
    let routes = management_routes().layer(axum::middleware::from_fn_with_state(
        idempotency_state,
        idempotency,
    ));
    // Outermost: the access guard (key, rate limit, scope) before idempotency.
    web::access::guard(routes, state.keys.clone()).with_state(state)
}
