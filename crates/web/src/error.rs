//! One error type for every handler. Client mistakes get a precise message;
//! server faults get an opaque one (the details go to the log, with the request id).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::ValidationErrors;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400, naming the fields.
    #[error("invalid request: {0}")]
    Validation(ValidationErrors),
    /// 400 about the request as a whole (a header, a query parameter).
    #[error("{message}")]
    BadRequest { message: String, field: Option<String> },
    #[error("Invalid or missing API key")]
    Unauthorized,
    /// 403: the key is valid but lacks the scope the route needs.
    #[error("This API key lacks the scope {0}")]
    InsufficientScope(crate::auth::Scope),
    /// 429 with `Retry-After`: the key's rate limit (`crate::rate_limit`).
    #[error("Rate limit exceeded; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 404 with the resource's message, e.g. "Campaign not found".
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// 409 because a unique value (a lead's email in its campaign) is taken:
    /// the answer names the resource that holds it (`existing_id`), so a
    /// client can update that one instead.
    #[error("{message}")]
    Duplicate {
        message: String,
        existing_id: uuid::Uuid,
    },
    /// 412: `If-Match` named a version that is no longer current.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503 with `Retry-After`: a dependency (the database) cannot be reached
    /// right now. Nothing was done, so the client may retry the same request.
    #[error("{0}")]
    Unavailable(String),
    /// 500. The cause is logged, never sent.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

/// Seconds a client is told to wait (`Retry-After`) when the database is away.
/// Short on purpose: the service is usable again as soon as Postgres accepts
/// connections (every pooled connection is verified before it is handed out).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// The message of every 503 caused by the database.
pub const DATABASE_UNAVAILABLE: &str = "The database is unavailable; retry shortly";

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// A server fault; or `Unavailable` if its cause is that the database
    /// cannot be reached (see [`is_database_unavailable`]).
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        let error = error.into();
        if is_database_unavailable(error.as_ref()) {
            tracing::warn!(error = format!("{error:#}"), "database unavailable");
            Self::Unavailable(DATABASE_UNAVAILABLE.to_owned())
        } else {
            Self::Internal(error)
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::Duplicate { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation_failed",
            Self::BadRequest { .. } => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::RateLimited { .. } => "rate_limited",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) | Self::Duplicate { .. } => "conflict",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self::Validation(errors)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Self::internal(error)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::internal(error)
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::internal(error)
    }
}

impl From<event_store::StoreError> for ApiError {
    fn from(error: event_store::StoreError) -> Self {
        Self::internal(error)
    }
}

/// True if `error`, or anything in its chain of causes, says the database
/// cannot be reached or used right now, rather than that a statement is wrong:
/// - the pool timed out waiting for or creating a connection, or could not
///   create one at all (refused, unknown host, authentication during a restart);
/// - the connection was closed, or failed with an I/O error (reset, broken pipe);
/// - the server said so: SQLSTATE class `08` (connection exception), `57P0x`
///   (admin or crash shutdown, cannot connect now, database dropped, idle
///   session timeout) or class `53` (insufficient resources: too many
///   connections, disk full, out of memory).
///
/// Everything else (a constraint violation, a syntax error) stays a 500: a bug,
/// which retrying does not fix.
pub fn is_database_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    use deadpool_postgres::PoolError;
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(pool) = error.downcast_ref::<PoolError>() {
            match pool {
                PoolError::Timeout(_) | PoolError::Backend(_) | PoolError::Closed => return true,
                PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {}
            }
        }
        if let Some(postgres) = error.downcast_ref::<tokio_postgres::Error>() {
            if postgres.is_closed() {
                return true;
            }
            if let Some(db) = postgres.as_db_error() {
                let code = db.code().code();
                return code.starts_with("08") || code.starts_with("57P") || code.starts_with("53");
            }
            // No answer from the server: the connection itself failed.
            if std::error::Error::source(postgres).is_some_and(|cause| cause.is::<std::io::Error>()) {
                return true;
            }
        }
        next = error.source();
    }
    false
}

impl ApiError {
    /// The JSON envelope of this error, as its response carries it (also one
    /// item's `error` in a batch answer).
    pub fn body(&self) -> serde_json::Value {
        match self {
            Self::Validation(errors) => {
                let first = errors.first();
                json!({
                    "message": first.map_or_else(|| "Invalid request parameters".to_owned(), |e| e.message.clone()),
                    "code": self.code(),
                    "field": first.map(|e| e.field.clone()),
                    "errors": errors,
                })
            }
            Self::BadRequest { message, field } => {
                json!({ "message": message, "code": self.code(), "field": field })
            }
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                json!({ "message": "Something went wrong", "code": self.code() })
            }
            Self::Duplicate { message, existing_id } => {
                json!({ "message": message, "code": self.code(), "existing_id": existing_id })
            }
            other => json!({ "message": other.to_string(), "code": self.code() }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = self.body();
        let retry_after = match &self {
            Self::Unavailable(_) => Some(RETRY_AFTER_SECONDS),
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            return (
                status,
                [(axum::http::header::RETRY_AFTER, seconds.to_string())],
                Json(body),
            )
                .into_response();
        }
        (status, Json(body)).into_response()
    }
}

/// The error envelope, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct ErrorBody {
    /// Human-readable; the seed's exact texts for 401 and 404.
    #[schema(example = "Campaign not found")]
    pub message: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `not_found`.
    pub code: String,
    /// The offending field, for 400s.
    pub field: Option<String>,
    /// Every field error, for validation failures.
    pub errors: Option<Vec<FieldErrorBody>>,
    /// For a `409` on a unique value (a lead's email): the id of the resource
    /// that holds it.
    pub existing_id: Option<uuid::Uuid>,
}

#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct FieldErrorBody {
    pub field: String,
    pub message: String,
}
