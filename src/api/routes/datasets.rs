//! `GET /api/v1/datasets`: the declared datasets with their measures,
//! dimensions, grains and the days holding data (what the dashboard is
//! built from, so a new dataset needs no front-end change).

use axum::Json;
use axum::extract::State;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::problem::{ApiError, query_error};
use crate::serve::datasets::{self, DatasetInfo};

/// Every declared dataset, described.
#[utoipa::path(
    get,
    path = "/api/v1/datasets",
    tag = "query",
    responses(
        (status = 200, description = "Each dataset: measures, dimensions, the granularities its time answers, and its first and last days with data.", body = Vec<DatasetInfo>),
        (status = 503, description = "The database is unavailable; retry after the Retry-After seconds.", content_type = "application/problem+json", body = crate::api::problem::Problem),
    )
)]
pub(in crate::api) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DatasetInfo>>, ApiError> {
    Ok(Json(
        datasets::datasets(&state.db, &state.catalog, Some(&state.cache), &caller.view)
            .await
            .map_err(query_error)?,
    ))
}
