//! Prototype 000's three reports: handlers, their OpenAPI description, and
//! rendering as JSON or CSV.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use chrono::NaiveDate;
use serde::Serialize;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::caching::{cached, describe_sources};
use crate::api::params::{BreakdownParams, Format, ReportParams, parse_params};
use crate::api::problem::{ApiError, Problem, query_error};
use crate::error::{Error, ErrorKind};
pub(super) use crate::serve::reports::CsvRow;
use crate::serve::reports::{
    self as report, MonthlySalesBreakdown, MonthlySalesSummary, Report, ReportRows,
    TopProductByRevenue,
};

impl CsvRow for MonthlySalesSummary {
    const HEADER: &'static [&'static str] = &["month", "quantity", "revenue"];
    fn record(&self) -> Vec<String> {
        vec![
            self.month.clone(),
            self.quantity.to_string(),
            self.revenue.to_string(),
        ]
    }
}

impl CsvRow for MonthlySalesBreakdown {
    const HEADER: &'static [&'static str] =
        &["month", "product_name", "region", "revenue", "quantity"];
    fn record(&self) -> Vec<String> {
        vec![
            self.month.clone(),
            self.product_name.clone(),
            self.region.clone(),
            self.revenue.to_string(),
            self.quantity.to_string(),
        ]
    }
}

impl CsvRow for TopProductByRevenue {
    const HEADER: &'static [&'static str] = &["rank", "product_id", "product_name", "revenue"];
    fn record(&self) -> Vec<String> {
        vec![
            self.rank.to_string(),
            self.product_id.to_string(),
            self.product_name.clone(),
            self.revenue.to_string(),
        ]
    }
}

/// A report's body and content type.
pub(super) fn render<T: Serialize + CsvRow>(
    rows: Vec<T>,
    format: Format,
) -> Result<(Bytes, &'static str), ApiError> {
    let internal = |e: String| ApiError::Failed(Error::new(ErrorKind::Internal, e));
    match format {
        Format::Json => Ok((
            Bytes::from(serde_json::to_vec(&rows).map_err(|e| internal(e.to_string()))?),
            "application/json",
        )),
        Format::Csv => Ok((
            Bytes::from(report::to_csv(&rows).map_err(|e| internal(e.to_string()))?),
            "text/csv; charset=utf-8",
        )),
    }
}

/// The CSV download name of a report over a range.
pub(super) fn csv_filename(slug: &str, range: (Option<NaiveDate>, Option<NaiveDate>)) -> String {
    let range = match range {
        (Some(s), Some(e)) => format!("_{s}_{e}"),
        (Some(s), None) => format!("_from_{s}"),
        (None, Some(e)) => format!("_to_{e}"),
        (None, None) => String::new(),
    };
    format!("{slug}{range}.csv")
}

/// Names a CSV download.
pub(super) fn attach_filename(response: &mut Response, name: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
}

/// A prototype-000 report, through the planner and the cache.
async fn report_response(
    state: AppState,
    caller: Caller,
    report: Report,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (filter, format) = parse_params(query.as_deref(), &headers, report)?;
    let key = format!("{}|{filter:?}|{format:?}", report.slug());
    let range = (filter.start_date, filter.end_date);
    let f = filter.clone();
    let s = state.clone();
    let view = caller.view.clone();
    let mut response = cached(
        &state,
        &caller,
        &headers,
        key,
        report::DATASET,
        range,
        || async move {
            let (rows, served) = report::run(&s.db, &s.catalog, Some(&s.cache), report, &f, &view)
                .await
                .map_err(query_error)?;
            let (body, content_type) = match rows {
                ReportRows::Summary(r) => render(r, format)?,
                ReportRows::Breakdown(r) => render(r, format)?,
                ReportRows::Top5(r) => render(r, format)?,
            };
            Ok((body, content_type, describe_sources(&served)))
        },
    )
    .await?;
    if format == Format::Csv {
        attach_filename(
            &mut response,
            &csv_filename(report.slug(), (filter.start_date, filter.end_date)),
        );
    }
    Ok(response)
}

/// The error responses every report shares.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum ReportErrors {
    /// A parameter is malformed or unknown, or start_date is after end_date.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// The database is unavailable; retry after the Retry-After seconds.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
    /// The query ran longer than the server allows (`clue serve --query-timeout`) and was cancelled.
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(Problem),
    /// Unexpected server error (details are logged, not returned).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
}

/// Monthly totals of quantity and revenue.
#[utoipa::path(
    get,
    path = "/reports/monthly-sales-summary",
    tag = "reports",
    params(ReportParams),
    responses(
        (status = 200, description = "One row per month with sales, ordered by month.", content(
            (Vec<MonthlySalesSummary> = "application/json", example = json!([{"month": "2025-04", "quantity": 845, "revenue": 70575.00}])),
            (String = "text/csv", example = "month,quantity,revenue\n2025-04,845,70575.00\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn monthly_sales_summary(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    report_response(state, caller, Report::MonthlySummary, q, headers).await
}

/// Monthly totals per product and region.
#[utoipa::path(
    get,
    path = "/reports/monthly-sales-breakdown",
    tag = "reports",
    params(BreakdownParams),
    responses(
        (status = 200, description = "One row per month, product and region, ordered by them.", content(
            (Vec<MonthlySalesBreakdown> = "application/json", example = json!([{"month": "2025-04", "product_name": "WidgetA", "region": "North", "revenue": 10500.00, "quantity": 105}])),
            (String = "text/csv", example = "month,product_name,region,revenue,quantity\n2025-04,WidgetA,North,10500.00,105\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn monthly_sales_breakdown(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    report_response(state, caller, Report::MonthlyBreakdown, q, headers).await
}

/// The five products with the highest revenue.
#[utoipa::path(
    get,
    path = "/reports/top-5-by-revenue",
    tag = "reports",
    params(ReportParams),
    responses(
        (status = 200, description = "At most five products by revenue, highest first; ties share a rank as SQL RANK() gives it.", content(
            (Vec<TopProductByRevenue> = "application/json", example = json!([{"rank": 1, "product_id": 1001, "product_name": "WidgetA", "revenue": 30000.00}])),
            (String = "text/csv", example = "rank,product_id,product_name,revenue\n1,1001,WidgetA,30000.00\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn top_5_by_revenue(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    report_response(state, caller, Report::Top5ByRevenue, q, headers).await
}
