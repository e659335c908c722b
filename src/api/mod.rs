//! The HTTP API: routes, query parameters, JSON/CSV responses, RFC 9457
//! problem details, health checks, OpenAPI document and docs page.
//!
//! Architecture Invariant: every error a client sees goes through
//! [`ApiError`]'s one `IntoResponse`, as `application/problem+json`; no SQL or
//! driver text ever reaches a client (it is logged instead).
//! Architecture Invariant: handlers only parse parameters, call a service and
//! shape its answer; [`router`] works without a socket.
//!
//! The files, by job: [`problem`] (errors as RFC 9457 problem details),
//! [`params`] (query parameters), [`caching`] (the answer cache over HTTP),
//! `routes` (the handlers), [`middleware`] (the access log); this file holds
//! the state, the OpenAPI document, the router and the server.

pub mod auth;
mod caching;
#[cfg(test)]
mod fuzz;
pub mod limits;
pub mod metrics;
mod middleware;
mod params;
mod problem;
mod routes;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::Uri;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub use params::Format;
pub use problem::{ApiError, InvalidParam, Problem};

use routes::{
    access, changes, country, dashboard, datasets, delivery, events, health, learning, query,
    reports, rollups, sales, warehouse,
};

use crate::domain::dataset::Catalog;
use crate::ingest::records::Batcher;
use crate::pg::database::Database;
use crate::serve::cache::Cache;
use crate::serve::changes::Changes;
use crate::serve::feedback::Feedback;
use crate::store::notify;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: Arc<Database>,
    pub catalog: Arc<Catalog>,
    pub cache: Arc<Cache>,
    pub limits: Limits,
    /// The writer of learning records (group commit).
    pub records: Arc<Batcher>,
    /// The writer of sales events (group commit).
    pub sales: Arc<Batcher>,
    /// `/feedback`'s in-memory aggregates.
    pub feedback: Arc<Feedback>,
    /// Idempotency keys of event batches being written by this server.
    pub in_flight: Arc<routes::events::InFlight>,
    /// Turns to write an event batch ([`Limits::bulk_writers`] at once).
    pub bulk_writers: Arc<tokio::sync::Semaphore>,
    /// Notified writes, for the live streams.
    pub changes: Arc<Changes>,
    /// Live streams open at once ([`Limits::max_streams`]).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Turns true when the server begins to shut down: live streams end, so
    /// the graceful shutdown does not wait for them forever.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Keys, sessions and whether they are needed.
    pub auth: Arc<auth::Auth>,
    /// Rates and bounds on expensive work, per caller.
    pub guard: Arc<limits::Guard>,
}

/// The server's bounds (`clue serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Memory for cached answers.
    pub cache_bytes: usize,
    /// The most periods one summary may have.
    pub max_periods: usize,
    /// Records arriving together share a transaction (a 2xx still means
    /// committed); off, each record has its own.
    pub group_commit: bool,
    /// The most event batches written at once; more wait their turn (once
    /// parsed and checked). Bulk writes past the database's cores only
    /// contend for its locks and pages: together they finish later.
    pub bulk_writers: usize,
    /// The most live streams (`/api/v1/changes`) open at once.
    pub max_streams: usize,
    /// How long a connection may take to send its request headers.
    pub header_wait: Duration,
    /// Rates and bounds on expensive work.
    pub rates: limits::RateSettings,
    /// The most connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Record and serve metrics (off: `/metrics` is a 404 and requests
    /// are not counted).
    pub metrics: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cache_bytes: 1 << 30,
            max_periods: 10_000,
            group_commit: true,
            bulk_writers: 2,
            max_streams: 512,
            header_wait: HEADER_WAIT,
            rates: limits::RateSettings {
                per_key: None,
                per_address: None,
                work_total: 8,
                work_per_caller: 4,
            },
            max_connections: 10_000,
            metrics: true,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clue API",
        description = "Sales reports over PostgreSQL: prototype 000's report API, exact and fast. \
                       Money is a JSON number with exactly two decimals, computed in the database. \
                       Errors are RFC 9457 problem details (application/problem+json).",
        license(name = "MIT")
    ),
    components(schemas(params::Format)),
    tags(
        (name = "reports", description = "Prototype 000's sales reports; JSON by default, CSV with ?format=csv or Accept: text/csv."),
        (name = "query", description = "The generic query over declared datasets."),
        (name = "learning", description = "Prototype 003's learning logs: records and per-user summaries."),
        (name = "sales", description = "Prototype 001's sales events: one per ID_ORDER (a replay answers the stored event), read back one by one or a page at a time."),
        (name = "delivery", description = "Prototype 004's delivery reports over the orders `clue etl run` syncs from a source database; JSON by default, CSV with ?format=csv or Accept: text/csv."),
        (name = "warehouse", description = "Prototype 002's warehouse: the KPIs, current at each batch's commit (JSON, or CSV with ?format=csv or Accept: text/csv), and each batch's quality report."),
        (name = "live", description = "Notified writes as Server-Sent Events, to refetch what a page shows when it changes."),
        (name = "health", description = "Liveness and readiness."),
        (name = "access", description = "Signing in (the dashboard's session) and, with an admin key, managing keys. Every other operation needs `Authorization: Bearer <key>` when the server requires keys (`clue serve --auth required`, the default off loopback)."),
    )
)]
struct ApiDoc;

/// The `bearer` security scheme (`Authorization: Bearer <key>`), and what
/// access adds to every operation: who may call it (a key, or anyone while
/// the server does not require keys) and the answers of the access layer
/// (401, 403, 429, 503), so the document says every status a client can get.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `clue keys create`."))
                    .build(),
            ),
        );
        let problem = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            // Health and signing in take no key.
            let public = ["/healthz", "/readyz", "/api/v1/session"].contains(&path.as_str());
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let responses = &mut op.responses.responses;
                let mut add = |status: &str, what: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(what).into());
                };
                if !public {
                    add(
                        "401",
                        "No API key was sent, or it does not work (unknown, revoked, expired), while the server requires keys (`WWW-Authenticate: Bearer`).",
                    );
                    add(
                        "403",
                        "The key's scope, datasets or rows do not allow this.",
                    );
                }
                add(
                    "429",
                    "Over the caller's rate (`Retry-After`, `RateLimit`, `RateLimit-Policy`).",
                );
                add(
                    "503",
                    "The database is unavailable, or too much uncached work runs at once; retry after the Retry-After seconds.",
                );
                if !public && op.security.is_none() {
                    // A key when the server requires keys; none otherwise.
                    op.security = Some(vec![
                        SecurityRequirement::new("bearer", Vec::<String>::new()),
                        SecurityRequirement::default(),
                    ]);
                }
            }
        }
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(reports::monthly_sales_summary))
        .routes(routes!(reports::monthly_sales_breakdown))
        .routes(routes!(reports::top_5_by_revenue))
        .routes(routes!(query::query_endpoint))
        .routes(routes!(datasets::list))
        .routes(routes!(learning::records_json))
        .routes(routes!(learning::user_summary))
        .routes(routes!(sales::ingest))
        .routes(routes!(sales::sale))
        .routes(routes!(sales::sales))
        .routes(routes!(sales::feedback))
        .routes(routes!(events::events))
        .routes(routes!(country::country_contribution))
        .routes(routes!(country::top_country_relationships))
        .routes(routes!(country::repeat_buyer_revenue))
        .routes(routes!(delivery::open_orders))
        .routes(routes!(delivery::top_delivery_dates))
        .routes(routes!(delivery::pending_items))
        .routes(routes!(delivery::top_customers))
        .routes(routes!(warehouse::customer_ytd_spending))
        .routes(routes!(warehouse::days_since_last_purchase))
        .routes(routes!(warehouse::batches))
        .routes(routes!(warehouse::batch))
        .routes(routes!(changes::changes))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(access::whoami, access::sign_in, access::sign_out))
        .routes(routes!(access::list_keys, access::create_key))
        .routes(routes!(access::revoke_key))
        .routes(routes!(rollups::rebuild))
        .routes(routes!(rollups::verify))
}

/// The OpenAPI document the server serves at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::Modify;
    let mut doc = api_router().into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // After the routes: it adds to every operation.
    BearerScheme.modify(&mut doc);
    doc
}

/// The whole application, testable without a socket. Every routed
/// request is counted, its caller named and checked, and its rate taken
/// (in that order); every request's head is bounded.
pub fn router(state: AppState) -> axum::Router {
    use axum::middleware::{from_fn, from_fn_with_state};
    let (router, _) = api_router().split_for_parts();
    let cors = state.auth.cors();
    let router = if state.limits.metrics {
        router.route("/metrics", axum::routing::get(metrics::render))
    } else {
        router
    };
    let router = router
        .merge(dashboard::routes())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
        .route_layer(from_fn_with_state(state.clone(), limits::rate_limit))
        .route_layer(from_fn_with_state(state.clone(), auth::authorize));
    let router = if state.limits.metrics {
        router.route_layer(from_fn(metrics::record))
    } else {
        router
    };
    let router = router
        .fallback(
            |uri: Uri| async move { ApiError::NotFound(uri.path().chars().take(200).collect()) },
        )
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::MethodNotAllowed(req.method().to_string())
        })
        .layer(from_fn(middleware::problems_only))
        .layer(from_fn(limits::head_size))
        .layer(from_fn(middleware::security_headers))
        .layer(from_fn(middleware::access_log))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// How long a connection may take to send its request headers by default.
pub const HEADER_WAIT: Duration = Duration::from_secs(10);

/// The most records one group commit writes.
const GROUP_COMMIT: usize = 256;

/// The most answers the cache keeps, whatever their size.
const CACHE_ANSWERS: usize = 2048;

/// Who may call the server (`clue serve --auth`, `CLUE_SECRET_KEY`).
#[derive(Debug, Clone)]
pub struct Security {
    pub mode: auth::AuthMode,
    /// Signs dashboard sessions.
    pub secret_key: String,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with these files.
    pub tls: Option<tls::TlsFiles>,
    /// Origins whose pages may call the API from a browser (CORS); none:
    /// only this server's own pages.
    pub cors_origins: Vec<String>,
}

impl Security {
    /// No keys needed, sessions signed with a secret of this process's
    /// own (tests and tools).
    pub fn off() -> Security {
        Security {
            mode: auth::AuthMode::Off,
            secret_key: crate::domain::access::Secret::generate().hash(),
            tls: None,
            cors_origins: Vec::new(),
        }
    }
}

/// A bound server, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    closing: tokio::sync::watch::Sender<bool>,
    header_wait: Duration,
    max_connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    secure: bool,
}

impl Application {
    /// Binds `host:port` (port 0 picks a free one) and starts the cache's
    /// write listener. The database is open for the process's role
    /// (`app::open`), rollups reconciled by a writer.
    pub async fn build(
        db: Arc<Database>,
        catalog: Arc<Catalog>,
        limits: Limits,
        security: Security,
        host: &str,
        port: u16,
    ) -> std::io::Result<Application> {
        if limits.metrics {
            metrics::handle();
        }
        let tls = match &security.tls {
            Some(files) => Some(
                tls::acceptor(files)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            ),
            None => None,
        };
        let cache = Arc::new(Cache::new(CACHE_ANSWERS, limits.cache_bytes));
        if limits.metrics {
            metrics::spawn_observer(&db, &cache);
        }
        notify::spawn_listener(db.connection_config().clone(), cache.clone());
        let listener = TcpListener::bind((host, port)).await?;
        // One writer per keyed dataset (keys claimed under its name).
        let batch = if limits.group_commit { GROUP_COMMIT } else { 1 };
        let writer = |dataset: &str| {
            let (db, catalog) = (db.clone(), catalog.clone());
            Arc::new(Batcher::spawn(db, catalog, dataset.into(), batch))
        };
        let records = writer("learning_log");
        let sales = writer("sales");
        let feedback = Feedback::spawn(db.clone(), catalog.clone());
        notify::spawn_listener(db.connection_config().clone(), feedback.clone());
        let changes = Changes::new();
        notify::spawn_listener(db.connection_config().clone(), changes.clone());
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        Ok(Application {
            listener,
            closing,
            header_wait: limits.header_wait,
            max_connections: limits.max_connections.max(1),
            secure: tls.is_some(),
            tls,
            state: AppState {
                db,
                catalog,
                cache,
                limits,
                records,
                sales,
                feedback,
                in_flight: Arc::default(),
                bulk_writers: Arc::new(tokio::sync::Semaphore::new(limits.bulk_writers.max(1))),
                changes,
                streams: Arc::new(tokio::sync::Semaphore::new(limits.max_streams)),
                closing: closing_rx,
                auth: Arc::new(
                    auth::Auth::new(security.mode, &security.secret_key, security.tls.is_some())
                        .with_cors(security.cors_origins),
                ),
                guard: Arc::new(limits::Guard::new(limits.rates)),
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// `https` when the server speaks TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.secure { "https" } else { "http" }
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    ///
    /// The accept loop is hyper's own rather than `axum::serve`, for the
    /// one thing that has no setting there: a connection that does not send
    /// its request headers within [`HEADER_WAIT`] is closed, so half-open
    /// connections cannot pile up until the process runs out of files.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        use hyper_util::server::conn::auto::Builder;
        let app = router(self.state);
        // HTTP/1 in plain text: telling HTTP/2 apart reads the first bytes
        // with no deadline, which is the wait this loop exists to bound.
        // Over TLS the client's ALPN says which, once the handshake is done.
        let mut http1 = Builder::new(TokioExecutor::new()).http1_only();
        http1
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_wait);
        let mut http2 = Builder::new(TokioExecutor::new()).http2_only();
        http2
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            // A peer that stops answering pings is dropped.
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(10));
        let tls = self.tls.clone();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        // A connection holds a place; with none free, new ones wait in the
        // kernel's backlog rather than take the process's last files.
        let places = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        loop {
            let place = tokio::select! {
                place = places.clone().acquire_owned() => match place {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    // Out of files or the like: wait a moment, keep serving.
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // The client's address, for rates and logs of callers without a key.
            let service = hyper_util::service::TowerToHyperService::new(
                tower::ServiceBuilder::new()
                    .map_request(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut()
                            .insert(axum::extract::ConnectInfo(peer));
                        req
                    })
                    .service(app.clone()),
            );
            let (http1, http2, tls) = (http1.clone(), http2.clone(), tls.clone());
            let (watcher, wait) = (graceful.watcher(), self.header_wait);
            tokio::spawn(async move {
                let _place = place;
                // hyper's deadline starts with a request's first byte: one
                // that never comes is this wait's (then the socket closes).
                let mut first = [0u8; 1];
                if !matches!(
                    tokio::time::timeout(wait, stream.peek(&mut first)).await,
                    Ok(Ok(1))
                ) {
                    return;
                }
                let Some(acceptor) = tls else {
                    let conn = http1
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                    return;
                };
                // The handshake has the same deadline as the headers.
                let Ok(Ok(stream)) = tokio::time::timeout(wait, acceptor.accept(stream)).await
                else {
                    return;
                };
                let builder = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => http2,
                    _ => http1,
                };
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let _ = watcher.watch(conn).await;
            });
        }
        // Live streams end, then in-flight requests finish.
        let _ = self.closing.send(true);
        graceful.shutdown().await;
        Ok(())
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// The router in-process (`oneshot`), with a database that is never there:
/// parameters, errors and fallbacks need none, and a request that reaches
/// the database is a 503.
#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use tower::ServiceExt;

    fn app() -> axum::Router {
        app_with(auth::Auth::new(
            auth::AuthMode::Off,
            "a test secret of at least 32 bytes",
            false,
        ))
    }

    fn app_with(auth: auth::Auth) -> axum::Router {
        app_limited(auth, Limits::default())
    }

    fn app_limited(auth: auth::Auth, limits: Limits) -> axum::Router {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(1)
            .user("nobody")
            .dbname("nowhere")
            .connect_timeout(std::time::Duration::from_millis(200));
        let db = Arc::new(Database::unconnected(config).unwrap());
        let catalog = Arc::new(Catalog::load(None).unwrap());
        router(AppState {
            records: Arc::new(Batcher::spawn(
                db.clone(),
                catalog.clone(),
                "learning_log".into(),
                1,
            )),
            sales: Arc::new(Batcher::spawn(
                db.clone(),
                catalog.clone(),
                "sales".into(),
                1,
            )),
            feedback: Feedback::spawn(db.clone(), catalog.clone()),
            in_flight: Arc::default(),
            bulk_writers: Arc::new(tokio::sync::Semaphore::new(1)),
            changes: Changes::new(),
            streams: Arc::new(tokio::sync::Semaphore::new(1)),
            closing: tokio::sync::watch::channel(false).1,
            db,
            catalog,
            cache: Arc::new(Cache::new(16, 1 << 20)),
            limits,
            auth: Arc::new(auth),
            guard: Arc::new(limits::Guard::new(Limits::default().rates)),
        })
    }

    /// Sends a request; returns status, content type and body as JSON.
    async fn send(method: &str, uri: &str, body: &str) -> (u16, String, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, content_type, json)
    }

    /// Every `$ref` of the served document names a schema it defines (a
    /// probe found `Format` referenced and missing).
    #[test]
    fn every_reference_of_the_openapi_document_resolves() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut refs = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|x| walk(x, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        walk(&doc, &mut refs);
        assert!(refs.len() > 20, "{refs:?}");
        for r in refs {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(&r);
            assert!(schemas.contains_key(name), "{r} is not defined");
        }
    }

    /// The dashboard's files: the page, its ETag answered by a 304, gzip
    /// for a client that takes it, and a 404 problem for another name.
    #[tokio::test]
    async fn the_dashboard_is_served_from_the_binary() {
        let get = |uri: &str, headers: &[(&str, &str)]| {
            let mut request = Request::builder().uri(uri);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            app().oneshot(request.body(Body::empty()).unwrap())
        };
        let page = get("/", &[]).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = page.headers()[header::ETAG].to_str().unwrap().to_owned();
        let body = axum::body::to_bytes(page.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("<script src=\"/assets/app.js\"></script>")
        );
        let again = get("/", &[("if-none-match", &etag)]).await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let zipped = get(
            "/assets/echarts.common.min.js",
            &[("accept-encoding", "gzip, br")],
        )
        .await
        .unwrap();
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        let size = axum::body::to_bytes(zipped.into_body(), 1 << 21)
            .await
            .unwrap()
            .len();
        assert!(size < 300_000, "{size} bytes of gzip");
        let plain = get(
            "/assets/echarts.common.min.js",
            &[("accept-encoding", "gzip;q=0")],
        )
        .await
        .unwrap();
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let (status, content_type, problem) = send("GET", "/assets/secrets.txt", "").await;
        assert_eq!(
            (status, content_type.as_str()),
            (404, "application/problem+json")
        );
        assert_eq!(problem["detail"], "no such resource: /assets/secrets.txt");
    }

    /// A problem document: status and the first invalid parameter's name and reason.
    async fn check(method: &str, uri: &str, body: &str, expect: (u16, &str, &str)) {
        let (status, content_type, p) = send(method, uri, body).await;
        assert_eq!(content_type, "application/problem+json", "{uri} {body}");
        let param = &p["invalid_params"][0];
        let got = (
            status,
            param["name"].as_str().unwrap_or(""),
            param["reason"].as_str().unwrap_or(""),
        );
        assert_eq!(got, expect, "{method} {uri} {body}: {p}");
        assert_eq!(p["status"], status);
    }

    #[tokio::test]
    async fn requests_are_refused_before_any_database_work() {
        let q = "/api/v1/query";
        check(
            "POST",
            "/ingest",
            r#"{"ID_ORDER": "o", "REVENUE": 1}"#,
            (422, "ID_PRODUCT", "is required"),
        )
        .await;
        check(
            "GET",
            "/sales?cursor=41",
            "",
            (400, "cursor", "is not a cursor this server gave"),
        )
        .await;
        check(
            "GET",
            "/reports/monthly-sales-summary?start_date=",
            "",
            (
                400,
                "start_date",
                "is empty; give a date in the form YYYY-MM-DD or leave the parameter out",
            ),
        )
        .await;
        check(
            "GET",
            "/reports/monthly-sales-breakdown?region=%FF%FE",
            "",
            (
                400,
                "region",
                "is not valid UTF-8 text once percent-decoded",
            ),
        )
        .await;
        check(
            "POST",
            q,
            r#"{"dataset": "sales_report", "measures": ["revenue"], "filters": [{"dimension": "region", "equals": "a\u0000b"}]}"#,
            (400, "filters", "a value of \"region\" contains a NUL character"),
        )
        .await;
        check(
            "POST",
            q,
            r#"{"dataset": "sales_report", "measures": ["revenue"], "granularity": "hour"}"#,
            (
                400,
                "granularity",
                "hour is finer than the time column sales_date (a date) holds; ask for day or coarser",
            ),
        )
        .await;
        check(
            "POST",
            q,
            r#"{"dataset": "sales_report", "measures": ["revenue"], "filters": [{"dimension": "region", "equals": false}]}"#,
            (400, "filters", "false is not a value of \"region\", a str dimension"),
        )
        .await;
        check(
            "POST",
            q,
            r#"{"dataset": "sales_report", "measures": ["revenue"], "limit": 0}"#,
            (400, "limit", "must be between 1 and 100000, got 0"),
        )
        .await;
        // Refused before it runs (a probe held the pool with these).
        check(
            "POST",
            q,
            r#"{"dataset": "learning_log", "measures": ["records"], "granularity": "hour", "gap_fill": true,
                "start_date": "0001-01-01", "end_date": "9999-12-31"}"#,
            (
                400,
                "granularity",
                "every hour of this range is a row when gaps are filled, about 87649416 of them, more than the 2000000 an answer may have; ask for a coarser granularity or a shorter range",
            ),
        )
        .await;
        check(
            "POST",
            q,
            "[]",
            (
                400,
                "body",
                "must be a JSON object (a query), found an array",
            ),
        )
        .await;
        check("GET", "/nowhere", "", (404, "", "")).await;
        check("DELETE", "/reports/top-5-by-revenue", "", (405, "", "")).await;
    }

    /// Browsers may call from another origin only when it is configured.
    #[tokio::test]
    async fn cors_is_off_unless_an_origin_is_allowed() {
        let preflight = |app: axum::Router, origin: &'static str| async move {
            let request = Request::builder()
                .method("OPTIONS")
                .uri("/api/v1/query")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .body(Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(preflight(app(), "https://bi.example.com").await, None);
        let allowing = || {
            app_with(
                auth::Auth::new(
                    auth::AuthMode::Off,
                    "a test secret of at least 32 bytes",
                    false,
                )
                .with_cors(vec!["https://bi.example.com".into()]),
            )
        };
        assert_eq!(
            preflight(allowing(), "https://bi.example.com")
                .await
                .as_deref(),
            Some("https://bi.example.com")
        );
        assert_eq!(
            preflight(allowing(), "https://evil.example.com").await,
            None
        );
    }

    /// `/metrics` needs an admin key; with metrics off it is not there.
    #[tokio::test]
    async fn metrics_need_an_admin_key_or_are_off() {
        let get = |app: axum::Router| async move {
            let request = Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap();
            app.oneshot(request).await.unwrap().status()
        };
        assert_eq!(get(app()).await, StatusCode::UNAUTHORIZED);
        let off = app_limited(
            auth::Auth::new(
                auth::AuthMode::Off,
                "a test secret of at least 32 bytes",
                false,
            ),
            Limits {
                metrics: false,
                ..Limits::default()
            },
        );
        assert_eq!(get(off).await, StatusCode::NOT_FOUND);
    }

    /// What the framework refuses (a body over its limit) is a problem too.
    #[tokio::test]
    async fn framework_rejections_are_problems() {
        let big = "x".repeat(3 << 20);
        let (status, content_type, p) = send("POST", "/api/v1/query", &big).await;
        assert_eq!(
            (status, content_type.as_str()),
            (413, "application/problem+json")
        );
        assert_eq!(p["type"], "urn:clue:problem:payload-too-large");
        assert_eq!(p["status"], 413);
    }

    #[tokio::test]
    async fn a_missing_database_is_a_503_with_retry_after_and_no_driver_text() {
        for uri in ["/readyz", "/reports/top-5-by-revenue"] {
            let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
            let response = app().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
            assert_eq!(response.headers()[header::RETRY_AFTER], "5");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.contains("urn:clue:problem:database-unavailable")
                    && !text.contains("127.0.0.1")
                    && !text.to_lowercase().contains("connect"),
                "{text}"
            );
        }
        let (status, _, health) = send("GET", "/healthz", "").await;
        assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    }
}
