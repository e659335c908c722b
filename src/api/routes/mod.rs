//! The route handlers, one file per group: reports, the generic query,
//! learning logs, sales events, country analytics, events for any dataset,
//! health; and what the write handlers share.

pub(super) mod access;
pub(super) mod changes;
pub(super) mod country;
pub(super) mod dashboard;
pub(super) mod datasets;
pub(super) mod delivery;
pub(super) mod events;
pub(super) mod health;
pub(super) mod learning;
pub(super) mod query;
pub(super) mod reports;
pub(super) mod rollups;
pub(super) mod sales;
pub(super) mod warehouse;

/// The header marking an answer as the replay of an earlier write.
const REPLAYED: &str = "idempotent-replayed";

/// A request's media type, lower-case; empty when absent or unreadable.
fn content_type(request: &axum::extract::Request) -> String {
    request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}
