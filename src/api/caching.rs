//! The answer cache over HTTP: [`cached`] (lookup, ETag and 304,
//! `Clue-Cache`, `Clue-Served-From`, a gzip copy of large bodies).

use std::future::Future;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::NaiveDate;

use super::AppState;
use super::auth::Caller;
use super::problem::ApiError;
use crate::plan::Served;
use crate::serve::cache::{Cached, etag};

/// `rollup sales_report_month 2024-04-01..2025-08-31, fact sales_report ..` for a header.
pub(super) fn describe_sources(served: &[Served]) -> String {
    let day = |d: Option<NaiveDate>| d.map_or(String::new(), |d| d.to_string());
    served
        .iter()
        .map(|s| format!("{} {} {}..{}", s.source, s.name, day(s.from), day(s.to)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Answers from the cache when it may, else computes (in a turn of
/// expensive work, [`super::limits::Guard::turn`]) and caches; sets ETag
/// (304 on a match), `Clue-Cache` and `Clue-Served-From`.
/// `Cache-Control: no-cache` computes afresh. Callers that see different
/// rows never share an answer: the key starts with what the caller sees.
pub(super) async fn cached<F, Fut>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    key: String,
    dataset: &str,
    range: (Option<NaiveDate>, Option<NaiveDate>),
    compute: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(Bytes, &'static str, String), ApiError>>,
{
    let bypass = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-cache") || v.contains("no-store"));
    let key = match caller.view.fingerprint() {
        view if view.is_empty() => key,
        view => format!("{view}|{key}"),
    };
    let (hit, value) = match state.cache.get(&key).filter(|_| !bypass) {
        Some(v) => {
            metrics::counter!("clue_cache_hits_total").increment(1);
            (true, v)
        }
        None => {
            metrics::counter!("clue_cache_misses_total").increment(1);
            let turn = state.guard.turn(caller).await?;
            let generation = state.cache.generation();
            let (body, content_type, served_from) = compute().await?;
            drop(turn);
            let value = Cached {
                etag: etag(&body),
                body,
                content_type,
                served_from,
                gzip: None,
            };
            if state.cache.enabled() {
                let stored = state.cache.store(
                    key.clone(),
                    dataset,
                    range.0,
                    range.1,
                    generation,
                    value.clone(),
                );
                // Large answers are compressed once, after this response
                // has gone out, not per request; later hits send it.
                if stored && value.body.len() >= GZIP_FROM {
                    let (cache, body, tag) =
                        (state.cache.clone(), value.body.clone(), value.etag.clone());
                    tokio::task::spawn_blocking(move || {
                        if let Some(gz) = gzip(&body) {
                            cache.attach_gzip(&key, &tag, gz);
                        }
                    });
                }
            }
            (false, value)
        }
    };
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    // Each representation has its own ETag.
    let (body, tag, encoded) = match (&value.gzip, accepts_gzip) {
        (Some(gz), true) => (
            gz.clone(),
            format!("{}-gzip\"", value.etag.trim_end_matches('"')),
            true,
        ),
        _ => (value.body.clone(), value.etag.clone(), false),
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| none_match(v, &tag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, value.content_type)], body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if value.gzip.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    h.insert(
        "clue-cache",
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    if let Ok(v) = HeaderValue::from_str(&value.served_from) {
        h.insert("clue-served-from", v);
    }
    Ok(response)
}

/// Whether an `If-None-Match` value matches `tag`: `*` matches any, and
/// the comparison is weak (RFC 9110 §13.1.2: `W/"x"` matches `"x"`).
fn none_match(header: &str, tag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    header.trim() == "*" || header.split(',').any(|t| opaque(t) == opaque(tag))
}

/// Cached bodies at least this large are kept gzip-compressed too.
const GZIP_FROM: usize = 64 * 1024;

fn gzip(body: &[u8]) -> Option<Bytes> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::default(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_is_weak_and_takes_lists_and_any() {
        assert!(none_match("*", "\"x\""));
        assert!(none_match("W/\"x\"", "\"x\""));
        assert!(none_match("\"a\", W/\"x\" , \"b\"", "\"x\""));
        assert!(!none_match("\"y\"", "\"x\""));
    }
}
