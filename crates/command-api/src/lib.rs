//! The command side. Each write: authenticate, parse, load the aggregate by
//! folding its stream, let it decide, append with the version it was loaded at
//! (retrying on a concurrent write unless the client pinned a version with
//! `If-Match`), then wait until the read models include the new events so the
//! client's next GET sees them.

pub mod analytics;
pub mod campaigns;
mod children;
pub mod content;
pub mod leads;
pub mod tasks;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{patch, post, put};
use axum::Router;
use deadpool_postgres::Pool;
use event_store::EventStore;
use projector::ReadModelProgress;
use std::sync::Arc;
use std::time::Duration;
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
    /// Where content media files are stored.
    pub media: media::MediaStore,
    /// Per-lead keys and email claims.
    pub vault: lead_vault::LeadVault,
    pub lead_import: leads::import::ImportLimits,
}

impl FromRef<CommandState> for ApiKeys {
    fn from_ref(state: &CommandState) -> Self {
        state.keys.clone()
    }
}

/// The write routes, relative to the base path.
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
    let uploads = Router::new()
        .route("/campaigns/{campaign_id}/content", post(content::create))
        .route(
            "/campaigns/{campaign_id}/content/{content_id}",
            put(content::update).delete(content::delete),
        )
        .layer(DefaultBodyLimit::max(
            usize::try_from(upload_limit).unwrap_or(usize::MAX),
        ))
        .layer(axum::middleware::from_fn_with_state(
            upload_idempotency,
            idempotency_for_uploads,
        ));
    Router::new()
        .route("/campaigns", post(campaigns::create))
        .route(
            "/campaigns/{campaign_id}",
            put(campaigns::update).delete(campaigns::delete),
        )
        .route("/campaigns/{campaign_id}/status", patch(campaigns::change_status))
        .route("/campaigns/{campaign_id}/tasks", post(tasks::create))
        .route(
            "/campaigns/{campaign_id}/tasks/{task_id}",
            put(tasks::update).delete(tasks::delete),
        )
        .route("/campaigns/{campaign_id}/analytics", post(analytics::track))
        .route("/campaigns/{campaign_id}/leads", post(leads::create))
        .route(
            "/campaigns/{campaign_id}/leads/{lead_id}",
            put(leads::update).delete(leads::delete),
        )
        .layer(axum::middleware::from_fn_with_state(
            idempotency_state,
            idempotency,
        ))
        .merge(uploads)
        // Added after the idempotency layer, so it is not wrapped: that layer
        // buffers JSON bodies, and an import streams its upload. Imports are
        // safe to retry without it (duplicates are skipped; see docs/leads.md).
        .route(
            "/campaigns/{campaign_id}/leads/import",
            post(leads::import::import).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .with_state(state)
}
