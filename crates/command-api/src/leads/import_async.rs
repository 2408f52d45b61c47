//! `POST .../leads/import` with `Prefer: respond-async`: the upload is spooled
//! whole to the media store and queued as a job, answered `202` with the
//! job's `Location` as soon as the file is stored; the worker
//! ([`super::import_worker`]) imports it. Without the preference the import is
//! the synchronous one ([`super::import`]).

use crate::csv_upload::{too_large_file, ImportLimits};
use crate::kernel::Writer;
use axum::extract::multipart::Field;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lead_vault::imports::NewJob;
use serde_json::json;
use uuid::Uuid;
use web::ApiError;

pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// Whether the request asks `Prefer: respond-async` (RFC 7240: a list of
/// preferences, each maybe with parameters, in one header or several).
pub fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| {
            preference
                .split(';')
                .next()
                .is_some_and(|token| token.trim().eq_ignore_ascii_case("respond-async"))
        })
}

/// Where a job is shown.
pub fn location(campaign_id: Uuid, import_id: Uuid) -> String {
    format!("/v1/dev/marketing/campaigns/{campaign_id}/leads/imports/{import_id}")
}

/// Spools the `file` field, queues the job and answers `202`.
pub(crate) async fn accept(
    writer: &Writer,
    campaign_id: Uuid,
    mut field: Field<'_>,
    limits: ImportLimits,
) -> Result<Response, ApiError> {
    let state = writer.state();
    let id = Uuid::now_v7();
    let spool_key = id.to_string();
    // Dropped unfinished (any early return), the object is aborted.
    let mut spool = state
        .media
        .spool(&spool_key, limits.max_bytes)
        .await
        .map_err(ApiError::internal)?;
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => match spool.write(chunk).await {
                Ok(()) => {}
                Err(media::MediaError::TooLarge { .. }) => return Err(too_large_file(limits)),
                Err(other) => return Err(ApiError::internal(other)),
            },
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::bad_request(
                    "file",
                    format!("the upload broke off ({}); nothing was queued", e.body_text()),
                ))
            }
        }
    }
    if spool.size() == 0 {
        return Err(ApiError::bad_request(
            "file",
            "the file is not a lead CSV: it is empty; expected a header row with an `email` column",
        ));
    }
    let file_bytes = spool.finish().await.map_err(ApiError::internal)?;
    let mut metadata = writer.metadata(campaign_id);
    metadata["import_id"] = json!(id);
    let project = writer.caller().project.as_str().to_owned();
    let job = NewJob {
        id,
        project: &project,
        campaign_id,
        spool_key: &spool_key,
        file_bytes: i64::try_from(file_bytes).unwrap_or(i64::MAX),
        metadata: &metadata,
    };
    let inserted = async {
        let client = state.pool.get().await?;
        Ok::<_, ApiError>(lead_vault::imports::insert(&**client, &job).await?)
    }
    .await;
    let job = match inserted {
        Ok(job) => job,
        Err(error) => {
            let _ = state.media.delete_spooled(&spool_key).await;
            return Err(error);
        }
    };
    state.import_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        [
            (LOCATION, location(campaign_id, id)),
            (PREFERENCE_APPLIED, "respond-async".to_owned()),
        ],
        Json(job),
    )
        .into_response())
}
