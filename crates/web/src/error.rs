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
    /// 404 with the resource's message, e.g. "Campaign not found".
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` named a version that is no longer current.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    /// 500. The cause is logged, never sent.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
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
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
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

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Internal(error.into())
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl From<event_store::StoreError> for ApiError {
    fn from(error: event_store::StoreError) -> Self {
        Self::Internal(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
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
            other => json!({ "message": other.to_string(), "code": self.code() }),
        };
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
}

#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct FieldErrorBody {
    pub field: String,
    pub message: String,
}
