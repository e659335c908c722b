//! The generic query over declared datasets: `POST /api/v1/query`.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::caching::{cached, describe_sources};
use crate::api::params::{Format, ParamValues};
use crate::api::problem::{ApiError, Problem, query_error};
use crate::error::{Error, ErrorKind};
use crate::serve::execute::{self, QueryResponse};
use crate::serve::query::{QueryRequest, parse_request};

/// Any aggregate of a declared dataset, answered from the smallest rollups that cover it.
#[utoipa::path(
    post,
    path = "/api/v1/query",
    tag = "query",
    request_body(content = QueryRequest, content_type = "application/json"),
    params(("format" = Option<Format>, Query, description = "`json` (default) or `csv` (a header of `period`, the dimensions and the measures, then a line a row); `Accept: text/csv` also selects CSV.")),
    responses(
        (status = 200, description = "The rows, and which rollups or fact table served which days (JSON); or the rows as CSV with `?format=csv`.", content(
            (QueryResponse = "application/json", example = json!({
                "dataset": "sales_report",
                "served_from": [{"source": "rollup", "name": "sales_report_month", "from": "2024-04-01", "to": "2024-08-31"}],
                "rows": [{"period": "2024-04-01", "revenue": 20625184.33, "quantity": 135215}]
            })),
            (String = "text/csv", example = "period,revenue,quantity\n2024-04-01,20625184.33,135215\n")
        )),
        (status = 304, description = "Not modified: If-None-Match matched the ETag."),
        (status = 400, description = "The body is not a valid query; the field at fault is named.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after the Retry-After seconds.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The query ran longer than the server allows (`clue serve --query-timeout`) and was cancelled.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected server error (details are logged, not returned).", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn query_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format = ParamValues::parse(q.as_deref(), &["format"])?.format(&headers)?;
    let req = parse_request(&body).map_err(query_error)?;
    let key = format!(
        "query|{format:?}|{}",
        serde_json::to_string(&req).unwrap_or_default()
    );
    let range = (req.start_date, req.end_date);
    let dataset = req.dataset.clone();
    let s = state.clone();
    let view = caller.view.clone();
    cached(
        &state,
        &caller,
        &headers,
        key,
        &dataset,
        range,
        || async move {
            let answer = execute::execute(&s.db, &s.catalog, &req, &view, false, Some(&s.cache))
                .await
                .map_err(query_error)?;
            let served = describe_sources(&answer.served_from);
            let internal = |e: String| ApiError::Failed(Error::new(ErrorKind::Internal, e));
            if format == Format::Csv {
                let body =
                    execute::to_csv(&req, &answer.rows).map_err(|e| internal(e.to_string()))?;
                return Ok((Bytes::from(body), "text/csv; charset=utf-8", served));
            }
            let body = serde_json::to_vec(&answer).map_err(|e| internal(e.to_string()))?;
            Ok((Bytes::from(body), "application/json", served))
        },
    )
    .await
}
