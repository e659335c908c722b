//! Prototype 002's warehouse over HTTP: the KPIs (as JSON or CSV) and the
//! quality report of each loaded batch.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::IntoParams;

use super::reports::{ReportErrors, attach_filename, render};
use crate::api::AppState;
use crate::api::params::{Format, ParamValues};
use crate::api::problem::ApiError;
use crate::ingest::warehouse::{self, Report, WarehouseError};
use crate::serve::warehouse::{self as kpis, BatchSummary, DaysSinceLastPurchase, YtdSpending};

/// Parameters of the year-to-date spending KPI (documentation).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(in crate::api) struct YtdParams {
    /// Only this customer.
    customer_id: Option<i64>,
    /// Only this year.
    year: Option<i32>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    format: Option<Format>,
}

/// Parameters of the days-since-last-purchase KPI (documentation).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(in crate::api) struct DaysParams {
    /// The reference date, `YYYY-MM-DD`; default today (UTC).
    #[param(example = "2025-03-31")]
    as_of: Option<chrono::NaiveDate>,
    /// Only this customer.
    customer_id: Option<i64>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    format: Option<Format>,
}

/// Per customer, year and month: the month's amount, the running total
/// within the year, and that total as a percentage of the year's.
#[utoipa::path(
    get,
    path = "/kpis/customer-ytd-spending",
    tag = "warehouse",
    params(YtdParams),
    responses(
        (status = 200, description = "By customer, year and month; current as of the last batch's commit.", content(
            (Vec<YtdSpending> = "application/json", example = json!([{"customer_id": 1, "customer_name": "Jean Dupont", "year": 2025, "month": 3, "monthly_amount": 120.50, "ytd_amount": 980.10, "ytd_percentage": 100.00}])),
            (String = "text/csv", example = "customer_id,customer_name,year,month,monthly_amount,ytd_amount,ytd_percentage\n1,Jean Dupont,2025,3,120.50,980.10,100.00\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn customer_ytd_spending(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = ParamValues::parse(q.as_deref(), &["customer_id", "year", "format"])?;
    let format = params.format(&headers)?;
    let rows = kpis::ytd_spending(
        &state.db,
        params.integer("customer_id")?,
        params.integer("year")?,
    )
    .await
    .map_err(|e| ApiError::Failed(e.into()))?;
    respond(render(rows, format)?, format, "customer_ytd_spending.csv")
}

/// Each current customer's days since the last purchase on or before a
/// reference date.
#[utoipa::path(
    get,
    path = "/kpis/days-since-last-purchase",
    tag = "warehouse",
    params(DaysParams),
    responses(
        (status = 200, description = "One row per current customer, by id; days_since_last_purchase is null without a purchase on or before the date.", content(
            (Vec<DaysSinceLastPurchase> = "application/json", example = json!([{"customer_id": 1, "customer_name": "Jean Dupont", "reference_date": "2025-03-31", "days_since_last_purchase": 4}])),
            (String = "text/csv", example = "customer_id,customer_name,reference_date,days_since_last_purchase\n1,Jean Dupont,2025-03-31,4\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn days_since_last_purchase(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = ParamValues::parse(q.as_deref(), &["as_of", "customer_id", "format"])?;
    let format = params.format(&headers)?;
    let as_of = params
        .date("as_of")?
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    let rows = kpis::days_since_last_purchase(&state.db, as_of, params.integer("customer_id")?)
        .await
        .map_err(|e| ApiError::Failed(e.into()))?;
    respond(
        render(rows, format)?,
        format,
        "days_since_last_purchase.csv",
    )
}

fn respond(
    (body, content_type): (bytes::Bytes, &'static str),
    format: Format,
    file_name: &str,
) -> Result<Response, ApiError> {
    let mut response = ([(CONTENT_TYPE, content_type)], body).into_response();
    if format == Format::Csv {
        attach_filename(&mut response, file_name);
    }
    Ok(response)
}

/// Every loaded batch, the latest first, with its counts.
#[utoipa::path(
    get,
    path = "/warehouse/batches",
    tag = "warehouse",
    responses(
        (status = 200, description = "The loaded batches, the latest first.", body = Vec<BatchSummary>),
        ReportErrors,
    )
)]
pub(in crate::api) async fn batches(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<BatchSummary>>, ApiError> {
    ParamValues::parse(q.as_deref(), &[])?;
    Ok(Json(
        kpis::batches(&state.db)
            .await
            .map_err(|e| ApiError::Failed(e.into()))?,
    ))
}

/// A batch's quality report: rows received, quarantined by each rule (with
/// the first examples, as received), loaded; the time of each stage.
#[utoipa::path(
    get,
    path = "/warehouse/batches/{date}",
    tag = "warehouse",
    params(("date" = chrono::NaiveDate, Path, description = "The batch's date, YYYY-MM-DD.", example = "2025-03-01")),
    responses(
        (status = 200, description = "The batch's report as it was loaded.", body = Report),
        (status = 404, description = "No batch of that date is loaded.", content_type = "application/problem+json", body = crate::api::problem::Problem),
        ReportErrors,
    )
)]
pub(in crate::api) async fn batch(
    State(state): State<AppState>,
    Path(date): Path<String>,
) -> Result<Json<Report>, ApiError> {
    let date = crate::domain::value::parse_date(date.trim(), None).ok_or_else(|| {
        ApiError::InvalidParameter {
            name: "date".into(),
            reason: format!(
                "{:?} is not a date in the form YYYY-MM-DD",
                date.chars().take(64).collect::<String>()
            ),
        }
    })?;
    match warehouse::report(&state.db, Some(date)).await {
        Ok(report) => Ok(Json(report)),
        Err(WarehouseError::NoBatch(d)) => Err(ApiError::NotFound(format!("batch {d}"))),
        Err(e) => Err(ApiError::Failed(e.into())),
    }
}
