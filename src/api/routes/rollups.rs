//! Rollup operations for admin keys: rebuild from the facts (audited with
//! the key that did it) and verify against them.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::params::ParamValues;
use crate::api::problem::{ApiError, Problem};
use crate::app::{self, RollupOutcome};

/// What a rebuild or a verification did.
#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct RollupsAnswer {
    rollups: Vec<RollupOutcome>,
    /// Rows that differ from the facts, over every rollup.
    differences: i64,
}

/// The `dataset` parameter, checked against the catalog.
fn dataset(state: &AppState, q: Option<&str>) -> Result<Option<String>, ApiError> {
    let values = ParamValues::parse(q, &["dataset"])?;
    let name = values.text("dataset")?;
    if let Some(n) = &name
        && state.catalog.get(n).is_err()
    {
        return Err(ApiError::InvalidParameter {
            name: "dataset".into(),
            reason: format!(
                "{:?} is not a dataset",
                n.chars().take(64).collect::<String>()
            ),
        });
    }
    Ok(name)
}

/// Runs a rollup operation in a turn of expensive work, on the dataset the
/// query names (or all), and answers what it did.
async fn operate(
    state: &AppState,
    caller: &Caller,
    q: Option<&str>,
    rebuild: bool,
) -> Result<Json<RollupsAnswer>, ApiError> {
    let only = dataset(state, q)?;
    let _turn = state.guard.turn(caller).await?;
    let (db, catalog, only) = (&state.db, &state.catalog, only.as_deref());
    let rollups = if rebuild {
        app::rebuild_rollups(db, catalog, only, &caller.actor()).await?
    } else {
        app::verify_rollups(db, catalog, only).await?
    };
    let differences = rollups.iter().map(|r| r.differences).sum();
    Ok(Json(RollupsAnswer {
        rollups,
        differences,
    }))
}

/// Rebuilds rollups from the fact table (after facts were changed with
/// plain SQL); answers are recomputed after it.
#[utoipa::path(
    post,
    path = "/api/v1/rollups/rebuild",
    tag = "access",
    params(("dataset" = Option<String>, Query, description = "Only this dataset (default: all).", pattern = "^[a-z_][a-z0-9_]{0,47}$")),
    responses(
        (status = 200, description = "Each rollup rebuilt, with its rows.", body = RollupsAnswer),
        (status = 400, description = "An unknown dataset.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No admin key was sent.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key is not an admin key.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(in crate::api) async fn rebuild(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<RollupsAnswer>, ApiError> {
    operate(&state, &caller, q.as_deref(), true).await
}

/// Compares every rollup with a fresh aggregation of its facts.
#[utoipa::path(
    post,
    path = "/api/v1/rollups/verify",
    tag = "access",
    params(("dataset" = Option<String>, Query, description = "Only this dataset (default: all).", pattern = "^[a-z_][a-z0-9_]{0,47}$")),
    responses(
        (status = 200, description = "Each rollup, its rows and how many differ from the facts.", body = RollupsAnswer),
        (status = 400, description = "An unknown dataset.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No admin key was sent.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key is not an admin key.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(in crate::api) async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<RollupsAnswer>, ApiError> {
    operate(&state, &caller, q.as_deref(), false).await
}
