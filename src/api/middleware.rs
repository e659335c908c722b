//! Middleware around every request: the access log and the security
//! headers. (Callers, rates and metrics are in `auth`, `limits`, `metrics`.)

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;

/// One log line per request: method, path, status, latency.
pub(super) async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    tracing::info!(
        target: "clue::access",
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// The dashboard's content policy: scripts and styles from this server
/// only (no inline script), no framing. ECharts sets element styles from
/// script, which `style-src` would otherwise refuse.
pub const CONTENT_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Headers on every answer: no content sniffing, no framing, no referrer;
/// the content policy on the dashboard's page (the docs page has its own
/// needs and is left as its crate serves it).
pub(super) async fn security_headers(req: Request, next: Next) -> Response {
    let dashboard = req.uri().path() == "/" || req.uri().path().starts_with("/assets/");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if dashboard {
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(CONTENT_POLICY),
        );
    }
    response
}

/// Every error a client sees is a problem: an error the framework answered
/// in plain text (a body over its limit, a rejected extractor) is turned
/// into one, with the framework's own text (never a driver's) as detail.
pub(super) async fn problems_only(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut problem = ApiError::Rejected(status, detail).into_response();
    // Headers the rejection set (Allow, Retry-After) are kept.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}
