//! What every read of something under a campaign (tasks, content, leads)
//! shares: the campaign check, reading one item with its ETag, and the steps
//! of a list around its own filters and query.

use crate::params::page;
use crate::{json_response, QueryState};
use axum::http::header::ETAG;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use tokio_postgres::Row;
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
    let client = state.reads.get().await?;
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
        path = $path:literal, tag = $tag:literal, scope = $scope:literal, id = $id:literal,
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
            security(("bearer" = [$scope]))
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

/// What one list of items under a campaign has of its own: the filters it
/// reads from the query parameters (the value implementing this), its keyset
/// cursor, and the query for one page. [`list_items`] does the rest, the same
/// for every list.
pub(crate) trait ItemList: Sized {
    /// Keyset position of the last item on a page, made from its row.
    type Cursor: Serialize + DeserializeOwned + for<'r> From<&'r Row>;

    /// The filters, or a 400 naming the parameter that is wrong.
    fn filters(params: &HashMap<String, String>) -> Result<Self, ApiError>;

    /// Up to `fetch` items of the campaign after `cursor`, in the list's
    /// order: the resource's JSON text first, then the cursor's columns.
    async fn rows(
        &self,
        client: &deadpool_postgres::Client,
        campaign_id: Uuid,
        caller: &Caller,
        cursor: Option<&Self::Cursor>,
        fetch: i64,
    ) -> Result<Vec<Row>, ApiError>;
}

/// One page of the list `L` of a campaign's items. Every parameter is checked
/// before the database is asked (a 400 needs no connection), and the campaign
/// before the items, so a missing campaign answers its own 404.
pub(crate) async fn list_items<L: ItemList>(
    state: &QueryState,
    caller: &Caller,
    campaign_id: String,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let campaign_id = parse_id(&campaign_id, CAMPAIGN_NOT_FOUND)?;
    let filters = L::filters(params)?;
    let (limit, cursor) = page::<L::Cursor>(params)?;
    let client = state.reads.get().await?;
    ensure_campaign(&client, campaign_id, caller).await?;
    let rows = filters
        .rows(&client, campaign_id, caller, cursor.as_ref(), limit + 1)
        .await?;
    Ok(crate::page_response(&rows, limit, |row| L::Cursor::from(row)))
}

/// Declares the `list` handler of items under a campaign (see [`list_items`]
/// and [`ItemList`]), with its OpenAPI entry and the page's schema: every such
/// list pages and answers the same way, so only its path, filters, 200, page
/// name and items are its own.
macro_rules! list {
    (
        $(#[$doc:meta])*
        path = $path:literal, tag = $tag:literal, scope = $scope:literal,
        filters($($filter:tt),* $(,)?),
        ok = $ok:literal,
        $(#[$page_doc:meta])*
        page = $body:ident of $resource:ty,
        items = $items:ty
    ) => {
        $(#[$doc])*
        #[utoipa::path(
            get, path = $path, tag = $tag,
            params(
                ("campaign_id" = Uuid, Path),
                $($filter,)*
                ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)"),
                ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
            ),
            responses(
                (status = 200, description = $ok, body = $body),
                (status = 400, body = web::error::ErrorBody), (status = 401, body = web::error::ErrorBody),
                (status = 404, description = "Campaign not found", body = web::error::ErrorBody),
            ),
            security(("bearer" = [$scope]))
        )]
        pub async fn list(
            axum::extract::State(state): axum::extract::State<$crate::QueryState>,
            caller: web::Caller,
            axum::extract::Path(campaign_id): axum::extract::Path<String>,
            axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
        ) -> Result<axum::response::Response, web::ApiError> {
            $crate::under_campaign::list_items::<$items>(&state, &caller, campaign_id, &params).await
        }

        $(#[$page_doc])*
        #[allow(dead_code)]
        #[derive(utoipa::ToSchema)]
        pub struct $body {
            pub data: Vec<$resource>,
            pub has_more: bool,
            pub next_cursor: Option<String>,
        }
    };
}
pub(crate) use list;
