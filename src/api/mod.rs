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

mod caching;
mod middleware;
mod params;
mod problem;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::Uri;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub use params::Format;
pub use problem::{ApiError, InvalidParam, Problem};

use routes::{health, query, reports};

use crate::domain::dataset::Catalog;
use crate::pg::database::Database;
use crate::serve::cache::Cache;
use crate::store::notify;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: Arc<Database>,
    pub catalog: Arc<Catalog>,
    pub cache: Arc<Cache>,
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
    tags(
        (name = "reports", description = "Prototype 000's sales reports; JSON by default, CSV with ?format=csv or Accept: text/csv."),
        (name = "query", description = "The generic query over declared datasets."),
        (name = "health", description = "Liveness and readiness."),
    )
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(reports::monthly_sales_summary))
        .routes(routes!(reports::monthly_sales_breakdown))
        .routes(routes!(reports::top_5_by_revenue))
        .routes(routes!(query::query_endpoint))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The OpenAPI document the server serves at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The whole application, testable without a socket.
pub fn router(state: AppState) -> axum::Router {
    let (router, _) = api_router().split_for_parts();
    router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
        .fallback(
            |uri: Uri| async move { ApiError::NotFound(uri.path().chars().take(200).collect()) },
        )
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::MethodNotAllowed(req.method().to_string())
        })
        .layer(axum::middleware::from_fn(middleware::access_log))
        .with_state(state)
}

/// The most answers the cache keeps, whatever their size.
const CACHE_ANSWERS: usize = 2048;

/// A bound server, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Binds `host:port` (port 0 picks a free one) and starts the cache's
    /// write listener. The database is open for the process's role
    /// (`app::open`), rollups reconciled by a writer.
    pub async fn build(
        db: Arc<Database>,
        catalog: Arc<Catalog>,
        cache_bytes: usize,
        host: &str,
        port: u16,
    ) -> std::io::Result<Application> {
        let cache = Arc::new(Cache::new(CACHE_ANSWERS, cache_bytes));
        notify::spawn_listener(db.connection_config().clone(), cache.clone());
        let listener = TcpListener::bind((host, port)).await?;
        Ok(Application {
            listener,
            state: AppState { db, catalog, cache },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
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
