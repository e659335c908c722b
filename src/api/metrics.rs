//! Prometheus metrics: the process's one recorder, the request middleware
//! (by route template, never the raw path), and `/metrics`.
//!
//! Other layers record through the `metrics` facade (`clue_cache_*`,
//! `clue_import_*`, `clue_rollup_*`, `clue_pool_*`, `clue_db_errors_total`);
//! gauges of the pool and the cache are read when `/metrics` is rendered.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use std::sync::Arc;

use super::AppState;
use crate::pg::database::Database;
use crate::serve::cache::Cache;

/// Latency buckets, in seconds: a cached answer is well under a
/// millisecond, a query over the facts can take the whole timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process's recorder (installed on first use; a process has one).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (an embedding program's): ours
        // still renders what reaches it.
        let _ = metrics::set_global_recorder(recorder);
        // Histograms drain into buckets here, not on every render.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("clue-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .ok();
        handle
    })
}

/// A label value kept for the life of the process: route templates and
/// methods are few, and a borrowed label costs no allocation per request.
fn interned(text: &str) -> &'static str {
    static KNOWN: OnceLock<std::sync::RwLock<std::collections::HashSet<&'static str>>> =
        OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    if let Some(s) = known.read().unwrap_or_else(|p| p.into_inner()).get(text) {
        return s;
    }
    let mut known = known.write().unwrap_or_else(|p| p.into_inner());
    // Bounded: past this many, new values share one label.
    if known.len() >= 512 {
        return "other";
    }
    match known.get(text) {
        Some(s) => s,
        None => {
            let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
            known.insert(leaked);
            leaked
        }
    }
}

/// Counts each request by route template, method and status, with its
/// latency, and the requests in flight.
pub(super) async fn record(req: Request, next: Next) -> Response {
    static IN_FLIGHT: OnceLock<metrics::Gauge> = OnceLock::new();
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| interned(p.as_str()));
    let method = interned(req.method().as_str());
    let in_flight = IN_FLIGHT.get_or_init(|| metrics::gauge!("clue_http_requests_in_flight"));
    in_flight.increment(1.0);
    let response = next.run(req).await;
    in_flight.decrement(1.0);
    let status = interned(response.status().as_str());
    metrics::counter!("clue_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("clue_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Sets the gauges read from the pool and the cache.
pub(super) fn observe(db: &Database, cache: &Cache) {
    let pool = db.pool().status();
    metrics::gauge!("clue_pool_connections").set(pool.size as f64);
    metrics::gauge!("clue_pool_connections_idle").set(pool.available as f64);
    metrics::gauge!("clue_pool_connections_max").set(pool.max_size as f64);
    metrics::gauge!("clue_pool_waiting").set(pool.waiting as f64);
    let (answers, bytes) = cache.usage();
    metrics::gauge!("clue_cache_answers").set(answers as f64);
    metrics::gauge!("clue_cache_bytes").set(bytes as f64);
}

/// Keeps the pool's and the cache's gauges current for a separate metrics
/// address, every few seconds, while the server lives.
pub(super) fn spawn_observer(db: &Arc<Database>, cache: &Arc<Cache>) {
    let (db, cache) = (Arc::downgrade(db), Arc::downgrade(cache));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            let (Some(db), Some(cache)) = (db.upgrade(), cache.upgrade()) else {
                return;
            };
            observe(&db, &cache);
        }
    });
}

fn text() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response()
}

/// `GET /metrics` (admin): every metric in Prometheus's text format.
pub(super) async fn render(State(state): State<AppState>) -> Response {
    observe(&state.db, &state.cache);
    text()
}

/// Serves `/metrics` alone, without keys, on `addr` (`--metrics-address`:
/// an address only the scraper reaches).
pub async fn serve_on(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { text() }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics address stopped serving");
        }
    });
    Ok(())
}
