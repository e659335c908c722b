//! Liveness and readiness: `/healthz` and `/readyz`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::problem::{ApiError, Problem};
use crate::store::migrations;

#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up.", body = Health)))]
pub(in crate::api) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database is reachable and clue's migrations are applied.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready to serve reports.", body = Health, example = json!({"status": "ready"})),
        (status = 503, description = "The database is unreachable or not migrated.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<Health>, ApiError> {
    // A stalled database (processes stopped, a network black hole) is not
    // ready: say so in bounded time instead of holding the probe.
    let limit = state
        .db
        .query_timeout()
        .map_or(READY_WAIT, |q| q.min(READY_WAIT));
    match tokio::time::timeout(limit, migrations::check_version(&state.db)).await {
        Ok(checked) => checked?,
        Err(_) => {
            return Err(ApiError::Failed(crate::error::Error::new(
                crate::error::ErrorKind::Unavailable,
                format!("the database did not answer within {limit:?}"),
            )));
        }
    }
    Ok(Json(Health { status: "ready" }))
}

/// The longest `/readyz` waits for the database.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
