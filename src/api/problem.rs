//! RFC 9457 problem details: [`ApiError`], the one mapping of error kinds to
//! HTTP ([`http_status`]) and the one `IntoResponse` every error a client
//! sees goes through.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, ErrorKind};
use crate::serve::query::QueryError;

/// A problem a client caused or can wait out; rendered as RFC 9457 JSON.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{name}: {reason}")]
    InvalidParameter { name: String, reason: String },
    /// Several fields at fault at once (a record's body).
    #[error("{}", .0.iter().map(|p| format!("{}: {}", p.name, p.reason)).collect::<Vec<_>>().join("; "))]
    InvalidParameters(Vec<InvalidParam>),
    /// An event's fields at fault, every one named (422).
    #[error("{}", .0.iter().map(|p| format!("{}: {}", p.name, p.reason)).collect::<Vec<_>>().join("; "))]
    InvalidEvent(Vec<InvalidParam>),
    /// It clashes with what is there (a repeated idempotency key).
    #[error("{0}")]
    Conflict(String),
    /// The body is over the limit, in bytes.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// No key, or one that does not work (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's key may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Over the caller's rate (429): retry after this many seconds.
    #[error("{what}: more than {limit} requests per {window} s; retry in {retry_after} s")]
    RateLimited {
        what: String,
        limit: u32,
        window: u32,
        retry_after: u64,
    },
    /// Too much expensive work at once (503): retry after this many seconds.
    #[error("{0}")]
    Busy(String),
    /// The request line or headers are over the limit (414 or 431).
    #[error("{1}")]
    HeadTooLarge(StatusCode, String),
    /// An error answered by the framework (an extractor's rejection, a
    /// body over its limit), with its status and its own text.
    #[error("{1}")]
    Rejected(StatusCode, String),
    /// Any other failure, by its kind; only client mistakes' text is sent.
    #[error("{0}")]
    Failed(Error),
}

impl ApiError {
    /// The kind of failure, which decides the status.
    fn kind(&self) -> ErrorKind {
        match self {
            ApiError::InvalidParameter { .. }
            | ApiError::InvalidParameters(_)
            | ApiError::InvalidEvent(_) => ErrorKind::BadInput,
            ApiError::Conflict(_) => ErrorKind::Conflict,
            ApiError::TooLarge(_) => ErrorKind::BadInput,
            ApiError::NotFound(_) => ErrorKind::NotFound,
            ApiError::MethodNotAllowed(_) | ApiError::HeadTooLarge(..) => ErrorKind::BadInput,
            ApiError::Rejected(status, _) if status.is_server_error() => ErrorKind::Internal,
            ApiError::Rejected(..) => ErrorKind::BadInput,
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) | ApiError::RateLimited { .. } => {
                ErrorKind::Denied
            }
            ApiError::Busy(_) => ErrorKind::Unavailable,
            ApiError::Failed(e) => e.kind(),
        }
    }
}

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::Failed(e.into())
    }
}

/// A query's failure: a client's mistake names its field as data.
pub(super) fn query_error(e: QueryError) -> ApiError {
    use crate::error::Classify;
    match e.field() {
        Some(field) if e.kind() == ErrorKind::BadInput => ApiError::InvalidParameter {
            name: field.to_owned(),
            reason: e.reason(),
        },
        _ => ApiError::Failed(e.into()),
    }
}

/// The one mapping of error kinds to HTTP: status, problem type and title.
pub(super) fn http_status(kind: ErrorKind) -> (StatusCode, &'static str, &'static str) {
    match kind {
        ErrorKind::BadInput => (
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "Invalid request parameter",
        ),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        ErrorKind::Denied => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict", "Conflict"),
        ErrorKind::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database-unavailable",
            "Database unavailable",
        ),
        ErrorKind::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "query-timeout",
            "Query timeout",
        ),
        ErrorKind::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        ),
    }
}

/// RFC 9457 problem details.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:clue:problem:invalid-parameter",
    "title": "Invalid request parameter",
    "status": 400,
    "detail": "start_date: \"2025-13-01\" is not a date in the form YYYY-MM-DD",
    "invalid_params": [{"name": "start_date", "reason": "\"2025-13-01\" is not a date in the form YYYY-MM-DD"}]
}))]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The parameters at fault, each with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub invalid_params: Vec<InvalidParam>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = match &self {
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            ApiError::InvalidEvent(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-event",
                "Invalid event",
            ),
            ApiError::Unauthorized(_) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "API key needed")
            }
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy", "Server busy"),
            ApiError::Rejected(status, _) => (
                *status,
                rejected_kind(*status),
                status.canonical_reason().unwrap_or("Error"),
            ),
            ApiError::HeadTooLarge(status, _) => (
                *status,
                if *status == StatusCode::URI_TOO_LONG {
                    "uri-too-long"
                } else {
                    "headers-too-large"
                },
                "Request head too large",
            ),
            other => http_status(other.kind()),
        };
        // Only a client's own mistakes are described; server-side text
        // (SQL, driver messages) goes to the log.
        let detail = match &self {
            ApiError::Failed(e) => {
                let text = e.chain();
                let kind = format!("{:?}", e.kind()).to_lowercase();
                metrics::counter!("clue_errors_total", "kind" => kind).increment(1);
                match e.kind() {
                    ErrorKind::Unavailable => {
                        tracing::warn!(error = %text, "database unavailable");
                        "The database cannot be used right now; retry shortly.".to_owned()
                    }
                    ErrorKind::Timeout => {
                        tracing::warn!(error = %text, "query timeout");
                        format!("{e}; narrow it (a shorter range, fewer dimensions, filters)")
                    }
                    // The caller's own limits (clue's text, never a driver's).
                    ErrorKind::Denied => e.to_string(),
                    _ => {
                        tracing::error!(error = %text, "request failed");
                        "The request failed on the server; the error was logged.".to_owned()
                    }
                }
            }
            other => other.to_string(),
        };
        let retry_after = match &self {
            ApiError::RateLimited { retry_after, .. } => Some(retry_after.max(&1).to_string()),
            ApiError::Busy(_) => Some("1".to_owned()),
            _ => None,
        };
        let invalid_params = match self {
            ApiError::InvalidParameter { name, reason } => vec![InvalidParam { name, reason }],
            ApiError::InvalidParameters(params) | ApiError::InvalidEvent(params) => params,
            _ => Vec::new(),
        };
        let problem = Problem {
            problem_type: format!("urn:clue:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            invalid_params,
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match retry_after {
            Some(secs) => {
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            None if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            None => {}
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"clue\""),
            );
        }
        response
    }
}

/// The problem type of a status the framework answered.
fn rejected_kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::LENGTH_REQUIRED => "length-required",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid-body",
        s if s.is_server_error() => "internal",
        _ => "invalid-request",
    }
}
