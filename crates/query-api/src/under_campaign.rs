//! What every read of something under a campaign (tasks, content, leads)
//! shares: the campaign check and reading one item with its ETag.

use crate::{json_response, QueryState};
use axum::http::header::ETAG;
use axum::response::Response;
use uuid::Uuid;
use web::extract::{etag, parse_id};
use web::{ApiError, Caller};

pub(crate) const CAMPAIGN_NOT_FOUND: &str = "Campaign not found";

/// The campaign is live and the caller's; `Campaign not found` otherwise, so
/// ids of other projects cannot be probed.
pub(crate) async fn ensure_campaign(
    client: &deadpool_postgres::Client,
    campaign_id: Uuid,
    caller: &Caller,
) -> Result<(), ApiError> {
    let statement = client
        .prepare_cached("SELECT 1 FROM campaigns WHERE id = $1 AND project = $2")
        .await?;
    client
        .query_opt(&statement, &[&campaign_id, &caller.project.as_str()])
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound(CAMPAIGN_NOT_FOUND))
}

/// One item of `table` (a read model of rows owned by a campaign: `id`,
/// `campaign_id`, `project`, `version`, `body`), as stored, with its ETag.
/// The campaign is checked first, so a missing campaign and a missing item
/// answer their own 404s.
pub(crate) async fn get_item(
    state: &QueryState,
    caller: &Caller,
    (campaign_id, item_id): (String, String),
    table: &'static str,
    not_found: &'static str,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let item_id = parse_id(&item_id, not_found)?;
    let client = state.pool.get().await?;
    ensure_campaign(&client, campaign_id, caller).await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT body::text, version FROM {table} WHERE id = $1 AND campaign_id = $2 AND project = $3"
        ))
        .await?;
    let row = client
        .query_opt(&statement, &[&item_id, &campaign_id, &caller.project.as_str()])
        .await?
        .ok_or(ApiError::NotFound(not_found))?;
    let mut response = json_response(row.get(0));
    response
        .headers_mut()
        .insert(ETAG, etag(row.get(1)).parse().expect("valid etag"));
    Ok(response)
}

/// Declares the `get_one` handler of items under a campaign stored in `table`
/// (see [`get_item`]), with its OpenAPI entry: every such read answers the
/// same way, so only its path, names and 404s are its own.
macro_rules! get_one {
    (
        $(#[$doc:meta])*
        path = $path:literal, tag = $tag:literal, id = $id:literal,
        body = $body:ty,
        not_found = $not_found_doc:literal,
        table = $table:literal, $not_found:expr
    ) => {
        $(#[$doc])*
        #[utoipa::path(
            get, path = $path, tag = $tag,
            params(("campaign_id" = Uuid, Path), ($id = Uuid, Path)),
            responses(
                (status = 200, body = $body, headers(("ETag" = String))),
                (status = 401, body = web::error::ErrorBody),
                (status = 404, description = $not_found_doc, body = web::error::ErrorBody),
            ),
            security(("bearer" = []))
        )]
        pub async fn get_one(
            axum::extract::State(state): axum::extract::State<$crate::QueryState>,
            caller: web::Caller,
            axum::extract::Path(ids): axum::extract::Path<(String, String)>,
        ) -> Result<axum::response::Response, web::ApiError> {
            $crate::under_campaign::get_item(&state, &caller, ids, $table, $not_found).await
        }
    };
}
pub(crate) use get_one;
