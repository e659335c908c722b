//! The dashboard: a page and its files (`web/`), embedded in the binary and
//! served by clue itself (no CDN, no build step): `/` and `/assets/{name}`,
//! each with an ETag, and gzip for clients that accept it.
//!
//! Architecture Invariant: the page reads only the public API (datasets,
//! query, reports, changes), so what it shows is what any client gets.

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::AppState;
use crate::api::problem::ApiError;

/// A file of the dashboard.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// An embedded file of `web/`.
macro_rules! asset {
    ($name:literal, $content_type:literal, $path:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!($path),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!(
        "index.html",
        "text/html; charset=utf-8",
        "../../../web/index.html"
    ),
    asset!(
        "app.js",
        "text/javascript; charset=utf-8",
        "../../../web/app.js"
    ),
    asset!("app.css", "text/css; charset=utf-8", "../../../web/app.css"),
    asset!(
        "echarts.common.min.js",
        "text/javascript; charset=utf-8",
        "../../../web/vendor/echarts.common.min.js"
    ),
    asset!(
        "echarts.LICENSE.txt",
        "text/plain; charset=utf-8",
        "../../../web/vendor/echarts.LICENSE.txt"
    ),
    asset!(
        "echarts.NOTICE.txt",
        "text/plain; charset=utf-8",
        "../../../web/vendor/echarts.NOTICE.txt"
    ),
];

/// Each file's ETag and gzip copy, made on first need.
fn prepared() -> &'static HashMap<&'static str, (String, Vec<u8>)> {
    static PREPARED: OnceLock<HashMap<&'static str, (String, Vec<u8>)>> = OnceLock::new();
    PREPARED.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(a.body).expect("writing to memory");
                let gz = gz.finish().expect("writing to memory");
                (a.name, (crate::serve::cache::etag(a.body), gz))
            })
            .collect()
    })
}

/// The dashboard's routes (outside the OpenAPI document: they are pages).
pub(in crate::api) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/assets/{name}",
            get(|Path(name): Path<String>, headers: HeaderMap| async move {
                serve(&name, &headers)
            }),
        )
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::NotFound(format!(
            "/assets/{}",
            name.chars().take(100).collect::<String>()
        ))
        .into_response();
    };
    let (etag, gz) = &prepared()[asset.name];
    // The page itself is checked every time (a new build's files load at
    // once); the files it names are kept an hour between checks.
    let cache = if asset.name == "index.html" {
        "no-cache"
    } else {
        "public, max-age=3600"
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) {
        let mut r = gz.clone().into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        asset.body.into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|e| {
                let mut parts = e.split(';');
                parts.next().is_some_and(|n| n.trim() == "gzip")
                    && !parts.any(|q| q.trim().replace(' ', "") == "q=0")
            })
        })
}
