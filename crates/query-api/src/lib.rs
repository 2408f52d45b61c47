//! The query side: GET endpoints served straight from the read models. Resource
//! JSON is stored ready to send, so a read is one indexed query and no parsing.

pub mod analytics;
pub mod campaigns;
pub mod content;
pub mod history;
pub mod leads;
pub mod tasks;

use axum::extract::FromRef;
use axum::routing::get;
use axum::Router;
use deadpool_postgres::Pool;
use web::ApiKeys;

#[derive(Clone)]
pub struct QueryState {
    pub pool: Pool,
    pub keys: ApiKeys,
    /// Where content media files are stored, for downloads.
    pub media: media::MediaStore,
    /// Opens lead personal data in the audit history while a lead exists.
    pub vault: lead_vault::LeadVault,
}

impl FromRef<QueryState> for ApiKeys {
    fn from_ref(state: &QueryState) -> Self {
        state.keys.clone()
    }
}

/// The read routes, relative to the base path.
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/campaigns", get(campaigns::list))
        .route("/campaigns/{campaign_id}", get(campaigns::get_one))
        .route("/campaigns/{campaign_id}/history", get(history::history))
        .route("/campaigns/{campaign_id}/tasks", get(tasks::list))
        .route("/campaigns/{campaign_id}/tasks/{task_id}", get(tasks::get_one))
        .route("/campaigns/{campaign_id}/content", get(content::list))
        .route(
            "/campaigns/{campaign_id}/content/{content_id}",
            get(content::get_one),
        )
        .route(
            "/campaigns/{campaign_id}/content/{content_id}/media",
            get(content::download_media),
        )
        .route("/campaigns/{campaign_id}/analytics", get(analytics::rows))
        .route(
            "/campaigns/{campaign_id}/analytics/summary",
            get(analytics::summary),
        )
        .route("/campaigns/{campaign_id}/leads", get(leads::list))
        // A static segment wins over `{lead_id}`, so this is never read as a lead id.
        .route("/campaigns/{campaign_id}/leads/export", get(leads::export))
        .route("/campaigns/{campaign_id}/leads/{lead_id}", get(leads::get_one))
        .with_state(state)
}
