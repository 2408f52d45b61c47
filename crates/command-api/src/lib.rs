//! The command side. A handler parses its request and hands one command to the
//! write kernel ([`kernel`]), which loads the aggregate by folding its stream,
//! checks tenancy and `If-Match`, lets the domain decide, appends with the
//! version it was loaded at (retrying on a concurrent write unless the client
//! pinned a version), then waits until the read models include the new events so
//! the client's next GET sees them. The resource files hold only what is theirs:
//! parsing, the aggregate's [`kernel::Resource`] facts, and (for leads and
//! content) the work that shares the append.

pub mod analytics;
pub mod campaigns;
pub mod content;
pub mod csv_upload;
mod kernel;
pub mod leads;
pub mod tasks;
mod under_campaign;

pub use kernel::Writer;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::Router;
use deadpool_postgres::Pool;
use event_store::EventStore;
use projector::ReadModelProgress;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use web::idempotency::{idempotency, idempotency_for_uploads, IdempotencyState, UploadIdempotencyState};
use web::ApiKeys;

#[derive(Clone)]
pub struct CommandState {
    pub store: Arc<dyn EventStore>,
    pub progress: Arc<dyn ReadModelProgress>,
    pub keys: ApiKeys,
    pub pool: Pool,
    /// How long a write waits for the read models before answering anyway.
    pub read_after_write_timeout: Duration,
    /// The streaming replica reads may use (`READ_DATABASE_URL`): a write
    /// then also waits for it to replay the write.
    pub replica: Option<web::replica::Replica>,
    /// Where content media files are stored.
    pub media: media::MediaStore,
    /// Per-lead keys and email claims.
    pub vault: lead_vault::LeadVault,
    pub lead_import: csv_upload::ImportLimits,
    pub analytics_import: csv_upload::ImportLimits,
    /// Wakes this process's import worker when a job is queued here.
    pub import_wake: Arc<tokio::sync::Notify>,
    /// The currency of campaigns created without one.
    pub default_currency: domain::Currency,
}

impl FromRef<CommandState> for ApiKeys {
    fn from_ref(state: &CommandState) -> Self {
        state.keys.clone()
    }
}

/// The `Idempotency-Key` header of a JSON write, for its OpenAPI entry (the
/// layer that honours it is set up in [`router`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IdempotencyKeyHeader {
    /// Retries with the same key and body replay the first response
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
}

/// Each write route, declared once: `routes!` registers the handler at the path
/// of its `#[utoipa::path]` and adds that entry to the OpenAPI document, so the
/// router and the document cannot disagree. Three groups, because they take
/// different middleware (see [`router`]).
struct Routes {
    /// JSON bodies, behind the buffering idempotency layer.
    json: OpenApiRouter<CommandState>,
    /// Content writes: uploads up to the media limit, spooled for idempotency.
    uploads: OpenApiRouter<CommandState>,
    /// The streamed CSV imports.
    import: OpenApiRouter<CommandState>,
}

fn routes() -> Routes {
    Routes {
        json: OpenApiRouter::default()
            .routes(routes!(campaigns::create))
            .routes(routes!(campaigns::update, campaigns::delete))
            .routes(routes!(campaigns::change_status))
            .routes(routes!(tasks::create))
            .routes(routes!(tasks::update, tasks::delete))
            .routes(routes!(analytics::track))
            .routes(routes!(analytics::restate))
            .routes(routes!(leads::create))
            .routes(routes!(leads::update, leads::delete))
            // Static segments win over `{lead_id}`: never read as lead ids.
            .routes(routes!(leads::upsert::upsert_by_email))
            .routes(routes!(leads::batch::batch)),
        uploads: OpenApiRouter::default()
            .routes(routes!(content::create))
            .routes(routes!(content::update, content::delete)),
        import: OpenApiRouter::default()
            .routes(routes!(leads::import::import))
            .routes(routes!(analytics::import::import)),
    }
}

/// The OpenAPI entries of every write route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let Routes {
        json,
        uploads,
        import,
    } = routes();
    json.merge(uploads).merge(import).into_openapi()
}

/// The write routes, at their full paths.
pub fn router(state: CommandState) -> Router {
    let idempotency_state = IdempotencyState {
        pool: state.pool.clone(),
        keys: state.keys.clone(),
    };
    // Content routes take uploads: a body limit sized for the media limit, and
    // idempotency that spools the body to disk instead of buffering it.
    let upload_limit = state.media.max_bytes() + content::FORM_OVERHEAD;
    let upload_idempotency = UploadIdempotencyState {
        inner: idempotency_state.clone(),
        spool_dir: std::env::temp_dir().join("marketing-upload-spool"),
        max_body: upload_limit,
    };
    let Routes {
        json,
        uploads,
        import,
    } = routes();
    let uploads = uploads
        .layer(DefaultBodyLimit::max(
            usize::try_from(upload_limit).unwrap_or(usize::MAX),
        ))
        .layer(axum::middleware::from_fn_with_state(
            upload_idempotency,
            idempotency_for_uploads,
        ));
    let json = json.layer(axum::middleware::from_fn_with_state(
        idempotency_state,
        idempotency,
    ));
    // Not behind an idempotency layer: that layer buffers bodies, and an
    // import streams its upload. Imports are safe to retry without it
    // (duplicates are skipped; see docs/leads.md).
    let import = import.layer(DefaultBodyLimit::disable());
    // Outermost: the access guard (key, rate limit, scope) before idempotency.
    let keys = state.keys.clone();
    web::access::guard(json.merge(uploads).merge(import), keys).with_state(state)
}
