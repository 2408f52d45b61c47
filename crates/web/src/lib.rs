//! HTTP plumbing shared by the command API and the query API, so both speak the
//! same contract (docs/api-design.md): one error type with a JSON envelope,
//! bearer-key authentication scoped to a project, extractors whose rejections use
//! that envelope, the middleware stack, cursors and idempotent POSTs.

pub mod access;
pub mod auth;
pub mod drain;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod middleware;
pub mod pagination;
pub mod rate_limit;
pub mod replica;
pub mod request_trace;
pub mod text_guard;

pub use auth::{ApiKeys, Caller, Scope, Scopes};
pub use error::ApiError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Creates or upgrades the API's own tables (keys, idempotency records).
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), migrations::MigrationError> {
    migrations::run_migrations(client, embedded::migrations::runner(), "api_migrations").await
}

/// The base path of every seed endpoint.
pub const BASE_PATH: &str = "/v1/dev/marketing";
