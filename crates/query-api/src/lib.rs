//! The query side: GET endpoints served straight from the read models. Resource
//! JSON is stored ready to send, so a read is one indexed query and no parsing.

pub mod analytics;
pub mod campaigns;
pub mod content;
pub mod history;
pub mod lead_imports;
pub mod leads;
mod params;
pub mod tasks;
mod under_campaign;

use axum::extract::FromRef;
use axum::Router;
use deadpool_postgres::Pool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use web::replica::ReadPool;
use web::ApiKeys;

/// A response whose body is JSON text already serialized: stored resources go
/// from the read model to the client without being parsed.
pub(crate) fn json_response(body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A list page from rows fetched with `LIMIT limit + 1` whose first column is
/// the resource's JSON text: the extra row only tells that there is more, and
/// `cursor_of` turns the page's last row into the keyset cursor for the next.
pub(crate) fn page_response<C: serde::Serialize>(
    rows: &[tokio_postgres::Row],
    limit: i64,
    cursor_of: impl Fn(&tokio_postgres::Row) -> C,
) -> axum::response::Response {
    let limit = usize::try_from(limit).unwrap_or(0);
    let page = &rows[..rows.len().min(limit)];
    let next_cursor = (rows.len() > limit)
        .then(|| {
            page.last()
                .map(|last| web::pagination::encode_cursor(&cursor_of(last)))
        })
        .flatten();
    let items: Vec<String> = page.iter().map(|row| row.get(0)).collect();
    json_response(web::pagination::list_body(&items, next_cursor))
}

#[derive(Clone)]
pub struct QueryState {
    /// The primary: for what is not a read model and has no read-after-write
    /// wait behind it (an asynchronous import's job, which the command side
    /// and its worker write directly).
    pub pool: Pool,
    /// The read models' connections: a streaming replica while it is close
    /// enough behind, else the primary (`READ_DATABASE_URL`).
    pub reads: ReadPool,
    pub keys: ApiKeys,
    /// Where content media files are stored, for downloads.
    pub media: media::MediaStore,
    /// Opens lead personal data in the audit history while a lead exists.
    pub vault: lead_vault::LeadVault,
    /// How the audit history reads the log (`EventStore::log_reader`).
    pub log: event_store::LogReader,
}

impl FromRef<QueryState> for ApiKeys {
    fn from_ref(state: &QueryState) -> Self {
        state.keys.clone()
    }
}

/// Each read route, declared once with its OpenAPI entry (see
/// `command_api::router` for why `routes!`).
fn routes() -> OpenApiRouter<QueryState> {
    OpenApiRouter::default()
        .routes(routes!(campaigns::list))
        .routes(routes!(campaigns::get_one))
        .routes(routes!(history::history))
        .routes(routes!(history::verify))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::get_one))
        .routes(routes!(content::list))
        .routes(routes!(content::get_one))
        .routes(routes!(content::download_media))
        .routes(routes!(analytics::rows))
        .routes(routes!(analytics::summary))
        .routes(routes!(leads::list))
        // A static segment wins over `{lead_id}`, so this is never read as a lead id.
        .routes(routes!(leads::export))
        .routes(routes!(leads::get_one))
        .routes(routes!(lead_imports::get_import))
        .routes(routes!(lead_imports::import_errors))
}

/// The OpenAPI entries of every read route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The read routes, at their full paths.
pub fn router(state: QueryState) -> Router {
    web::access::guard(routes(), state.keys.clone()).with_state(state)
}
