//! The HTTP API: routes, query parameters, JSON/CSV responses, RFC 9457
//! problem details, health checks, OpenAPI document and docs page.
//!
//! Architecture Invariant: every error a client sees goes through
//! [`ApiError`]'s one `IntoResponse`, as `application/problem+json`; no SQL or
//! driver text ever reaches a client (it is logged instead).
//! Architecture Invariant: handlers only parse parameters, call a service and
//! shape its answer; [`router`] works without a socket.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::NaiveDate;
use serde::Serialize;
use tokio::net::TcpListener;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::domain::dataset::Catalog;
use crate::error::{Error, ErrorKind};
use crate::pg::database::Database;
use crate::plan::Served;
use crate::serve::cache::{Cache, Cached, etag};
use crate::serve::execute::{self, QueryResponse};
use crate::serve::query::{QueryError, QueryRequest, parse_request};
use crate::serve::reports::{
    self as report, MonthlySalesBreakdown, MonthlySalesSummary, Report, ReportFilter, ReportRows,
    TopProductByRevenue,
};
use crate::store::{migrations, notify};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: Arc<Database>,
    pub catalog: Arc<Catalog>,
    pub cache: Arc<Cache>,
}

// ---------------------------------------------------------------------------
// Errors

/// A problem a client caused or can wait out; rendered as RFC 9457 JSON.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{name}: {reason}")]
    InvalidParameter { name: String, reason: String },
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// Any other failure, by its kind; only client mistakes' text is sent.
    #[error("{0}")]
    Failed(Error),
}

impl ApiError {
    /// The kind of failure, which decides the status.
    fn kind(&self) -> ErrorKind {
        match self {
            ApiError::InvalidParameter { .. } => ErrorKind::BadInput,
            ApiError::NotFound(_) => ErrorKind::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorKind::BadInput,
            ApiError::Failed(e) => e.kind(),
        }
    }
}

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::Failed(e.into())
    }
}

/// A query's failure: a client's mistake names its field as data.
fn query_error(e: QueryError) -> ApiError {
    use crate::error::Classify;
    match e.field() {
        Some(field) if e.kind() == ErrorKind::BadInput => ApiError::InvalidParameter {
            name: field.to_owned(),
            reason: e.reason(),
        },
        _ => ApiError::Failed(e.into()),
    }
}

/// The one mapping of error kinds to HTTP: status, problem type and title.
fn http_status(kind: ErrorKind) -> (StatusCode, &'static str, &'static str) {
    match kind {
        ErrorKind::BadInput => (
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "Invalid request parameter",
        ),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict", "Conflict"),
        ErrorKind::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database-unavailable",
            "Database unavailable",
        ),
        ErrorKind::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "query-timeout",
            "Query timeout",
        ),
        ErrorKind::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        ),
    }
}

/// RFC 9457 problem details.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:clue:problem:invalid-parameter",
    "title": "Invalid request parameter",
    "status": 400,
    "detail": "start_date: \"2025-13-01\" is not a date in the form YYYY-MM-DD",
    "invalid_params": [{"name": "start_date", "reason": "\"2025-13-01\" is not a date in the form YYYY-MM-DD"}]
}))]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The parameters at fault, each with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub invalid_params: Vec<InvalidParam>,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = match &self {
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            other => http_status(other.kind()),
        };
        // Only a client's own mistakes are described; server-side text
        // (SQL, driver messages) goes to the log.
        let detail = match &self {
            ApiError::Failed(e) => {
                let text = e.chain();
                match e.kind() {
                    ErrorKind::Unavailable => {
                        tracing::warn!(error = %text, "database unavailable");
                        "The database cannot be used right now; retry shortly.".to_owned()
                    }
                    ErrorKind::Timeout => {
                        tracing::warn!(error = %text, "query timeout");
                        format!("{e}; narrow it (a shorter range, fewer dimensions, filters)")
                    }
                    _ => {
                        tracing::error!(error = %text, "request failed");
                        "The request failed on the server; the error was logged.".to_owned()
                    }
                }
            }
            other => other.to_string(),
        };
        let invalid_params = match self {
            ApiError::InvalidParameter { name, reason } => vec![InvalidParam { name, reason }],
            _ => Vec::new(),
        };
        let problem = Problem {
            problem_type: format!("urn:clue:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            invalid_params,
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

// ---------------------------------------------------------------------------
// Parameters

/// Response format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Csv,
}

/// Parameters of every report (documentation; parsing is [`parse_params`]).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ReportParams {
    /// First day included, `YYYY-MM-DD`.
    #[param(example = "2024-01-01")]
    start_date: Option<NaiveDate>,
    /// Last day included, `YYYY-MM-DD`.
    #[param(example = "2025-12-31")]
    end_date: Option<NaiveDate>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    format: Option<Format>,
}

/// Parameters of the breakdown report (documentation).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct BreakdownParams {
    /// First day included, `YYYY-MM-DD`.
    #[param(example = "2024-01-01")]
    start_date: Option<NaiveDate>,
    /// Last day included, `YYYY-MM-DD`.
    #[param(example = "2025-12-31")]
    end_date: Option<NaiveDate>,
    /// Only this product name (exact match).
    #[param(example = "WidgetA")]
    product: Option<String>,
    /// Only this region (exact match).
    #[param(example = "North")]
    region: Option<String>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    format: Option<Format>,
}

const MAX_TEXT_PARAM: usize = 255;

/// Splits a query string into decoded name/value pairs, refusing (rather
/// than replacing) bytes that do not decode to UTF-8 text.
fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |part: &str, name: Option<&str>| -> Result<String, ApiError> {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ApiError::InvalidParameter {
                name: name.map_or_else(|| "query".to_owned(), |n| n.chars().take(64).collect()),
                reason: "is not valid UTF-8 text once percent-decoded".into(),
            })
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name, None)?;
            let value = decode(value, Some(&name))?;
            Ok((name, value))
        })
        .collect()
}

/// Parses a report's query string: known names only, each at most once.
fn parse_params(
    raw: Option<&str>,
    headers: &HeaderMap,
    report: Report,
) -> Result<(ReportFilter, Format), ApiError> {
    let allowed: &[&str] = match report {
        Report::MonthlyBreakdown => &["start_date", "end_date", "product", "region", "format"],
        _ => &["start_date", "end_date", "format"],
    };
    let invalid = |name: &str, reason: String| ApiError::InvalidParameter {
        name: name.to_owned(),
        reason,
    };
    let pairs = query_pairs(raw.unwrap_or(""))?;
    let mut values = BTreeMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            let shown: String = name.chars().take(64).collect();
            return Err(invalid(
                &shown,
                format!(
                    "is not a parameter of this report (expected {})",
                    allowed.join(", ")
                ),
            ));
        }
        if values.insert(name.clone(), value).is_some() {
            return Err(invalid(&name, "is given more than once".into()));
        }
    }
    let date = |name: &str| -> Result<Option<NaiveDate>, ApiError> {
        match values.get(name).map(|v| v.trim()) {
            None => Ok(None),
            Some("") => Err(invalid(
                name,
                "is empty; give a date in the form YYYY-MM-DD or leave the parameter out".into(),
            )),
            Some(v) => crate::domain::value::parse_date(v, None)
                .map(Some)
                .ok_or_else(|| {
                    invalid(
                        name,
                        format!(
                            "{:?} is not a date in the form YYYY-MM-DD",
                            v.chars().take(64).collect::<String>()
                        ),
                    )
                }),
        }
    };
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match values.get(name) {
            None => Ok(None),
            Some(v) if v.chars().count() > MAX_TEXT_PARAM => Err(invalid(
                name,
                format!("is longer than {MAX_TEXT_PARAM} characters"),
            )),
            Some(v) if v.contains('\0') => Err(invalid(name, "contains a NUL character".into())),
            Some(v) => Ok(Some(v.clone())),
        }
    };
    let filter = ReportFilter {
        start_date: date("start_date")?,
        end_date: date("end_date")?,
        product: text("product")?,
        region: text("region")?,
    };
    if let (Some(s), Some(e)) = (filter.start_date, filter.end_date)
        && s > e
    {
        return Err(invalid("start_date", format!("{s} is after end_date {e}")));
    }
    let format = match values.get("format").map(|f| f.to_ascii_lowercase()) {
        Some(f) if f == "csv" => Format::Csv,
        Some(f) if f == "json" => Format::Json,
        Some(f) => {
            return Err(invalid(
                "format",
                format!(
                    "{:?} is not json or csv",
                    f.chars().take(32).collect::<String>()
                ),
            ));
        }
        None => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if accept.split(',').any(|m| m.trim().starts_with("text/csv")) {
                Format::Csv
            } else {
                Format::Json
            }
        }
    };
    Ok((filter, format))
}

// ---------------------------------------------------------------------------
// Report responses

/// A report row as CSV.
trait CsvRow {
    const HEADER: &'static [&'static str];
    fn record(&self) -> Vec<String>;
}

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
fn render<T: Serialize + CsvRow>(
    rows: Vec<T>,
    format: Format,
) -> Result<(Bytes, &'static str), ApiError> {
    let internal = |e: String| ApiError::Failed(Error::new(ErrorKind::Internal, e));
    match format {
        Format::Json => Ok((
            Bytes::from(serde_json::to_vec(&rows).map_err(|e| internal(e.to_string()))?),
            "application/json",
        )),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(T::HEADER)
                .map_err(|e| internal(e.to_string()))?;
            for row in &rows {
                w.write_record(row.record())
                    .map_err(|e| internal(e.to_string()))?;
            }
            let body = w.into_inner().map_err(|e| internal(e.to_string()))?;
            Ok((Bytes::from(body), "text/csv; charset=utf-8"))
        }
    }
}

/// The CSV download name of a report over a range.
fn csv_filename(report: Report, filter: &ReportFilter) -> String {
    let range = match (filter.start_date, filter.end_date) {
        (Some(s), Some(e)) => format!("_{s}_{e}"),
        (Some(s), None) => format!("_from_{s}"),
        (None, Some(e)) => format!("_to_{e}"),
        (None, None) => String::new(),
    };
    format!("{}{range}.csv", report.slug())
}

/// `rollup sales_report_month 2024-04-01..2025-08-31, fact sales_report ..` for a header.
fn describe_sources(served: &[Served]) -> String {
    let day = |d: Option<NaiveDate>| d.map_or(String::new(), |d| d.to_string());
    served
        .iter()
        .map(|s| format!("{} {} {}..{}", s.source, s.name, day(s.from), day(s.to)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Answers from the cache when it may, else computes and caches; sets ETag
/// (304 on a match), `Clue-Cache` and `Clue-Served-From`.
/// `Cache-Control: no-cache` computes afresh.
async fn cached<F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    key: String,
    dataset: &str,
    range: (Option<NaiveDate>, Option<NaiveDate>),
    compute: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(Bytes, &'static str, String), ApiError>>,
{
    let bypass = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-cache") || v.contains("no-store"));
    let (hit, value) = match state.cache.get(&key).filter(|_| !bypass) {
        Some(v) => (true, v),
        None => {
            let generation = state.cache.generation();
            let (body, content_type, served_from) = compute().await?;
            let value = Cached {
                etag: etag(&body),
                body,
                content_type,
                served_from,
                gzip: None,
            };
            if state.cache.enabled() {
                let stored = state.cache.store(
                    key.clone(),
                    dataset,
                    range.0,
                    range.1,
                    generation,
                    value.clone(),
                );
                // Large answers are compressed once, after this response
                // has gone out, not per request; later hits send it.
                if stored && value.body.len() >= GZIP_FROM {
                    let (cache, body, tag) =
                        (state.cache.clone(), value.body.clone(), value.etag.clone());
                    tokio::task::spawn_blocking(move || {
                        if let Some(gz) = gzip(&body) {
                            cache.attach_gzip(&key, &tag, gz);
                        }
                    });
                }
            }
            (false, value)
        }
    };
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    // Each representation has its own ETag.
    let (body, tag, encoded) = match (&value.gzip, accepts_gzip) {
        (Some(gz), true) => (
            gz.clone(),
            format!("{}-gzip\"", value.etag.trim_end_matches('"')),
            true,
        ),
        _ => (value.body.clone(), value.etag.clone(), false),
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| none_match(v, &tag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, value.content_type)], body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if value.gzip.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    h.insert(
        "clue-cache",
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    if let Ok(v) = HeaderValue::from_str(&value.served_from) {
        h.insert("clue-served-from", v);
    }
    Ok(response)
}

/// Whether an `If-None-Match` value matches `tag`: `*` matches any, and
/// the comparison is weak (RFC 9110 §13.1.2: `W/"x"` matches `"x"`).
fn none_match(header: &str, tag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    header.trim() == "*" || header.split(',').any(|t| opaque(t) == opaque(tag))
}

/// Cached bodies at least this large are kept gzip-compressed too.
const GZIP_FROM: usize = 64 * 1024;

fn gzip(body: &[u8]) -> Option<Bytes> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::default(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok().map(Bytes::from)
}

/// A prototype-000 report, through the planner and the cache.
async fn report_response(
    state: AppState,
    report: Report,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (filter, format) = parse_params(query.as_deref(), &headers, report)?;
    let key = format!("{}|{filter:?}|{format:?}", report.slug());
    let range = (filter.start_date, filter.end_date);
    let f = filter.clone();
    let s = state.clone();
    let mut response = cached(
        &state,
        &headers,
        key,
        report::DATASET,
        range,
        || async move {
            let (rows, served) = report::run(&s.db, &s.catalog, Some(&s.cache), report, &f)
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
    if format == Format::Csv
        && let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}\"",
            csv_filename(report, &filter)
        ))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The error responses every report shares.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum ReportErrors {
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
async fn monthly_sales_summary(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    report_response(state, Report::MonthlySummary, q, headers).await
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
async fn monthly_sales_breakdown(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    report_response(state, Report::MonthlyBreakdown, q, headers).await
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
async fn top_5_by_revenue(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    report_response(state, Report::Top5ByRevenue, q, headers).await
}

/// Any aggregate of a declared dataset, answered from the smallest rollups that cover it.
#[utoipa::path(
    post,
    path = "/api/v1/query",
    tag = "query",
    request_body(content = QueryRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The rows, and which rollups or fact table served which days.", body = QueryResponse, example = json!({
            "dataset": "sales_report",
            "served_from": [{"source": "rollup", "name": "sales_report_month", "from": "2024-04-01", "to": "2024-08-31"}],
            "rows": [{"period": "2024-04-01", "revenue": 20625184.33, "quantity": 135215}]
        })),
        (status = 304, description = "Not modified: If-None-Match matched the ETag."),
        (status = 400, description = "The body is not a valid query; the field at fault is named.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after the Retry-After seconds.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The query ran longer than the server allows (`clue serve --query-timeout`) and was cancelled.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected server error (details are logged, not returned).", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn query_endpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req = parse_request(&body).map_err(query_error)?;
    let key = format!("query|{}", serde_json::to_string(&req).unwrap_or_default());
    let range = (req.start_date, req.end_date);
    let dataset = req.dataset.clone();
    let s = state.clone();
    cached(&state, &headers, key, &dataset, range, || async move {
        let answer = execute::execute(&s.db, &s.catalog, &req, false, Some(&s.cache))
            .await
            .map_err(query_error)?;
        let served = describe_sources(&answer.served_from);
        let body = serde_json::to_vec(&answer)
            .map_err(|e| ApiError::Failed(Error::new(ErrorKind::Internal, e.to_string())))?;
        Ok((Bytes::from(body), "application/json", served))
    })
    .await
}

// ---------------------------------------------------------------------------
// Health

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up.", body = Health)))]
async fn healthz() -> Json<Health> {
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
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    migrations::check_version(&state.db).await?;
    Ok(Json(Health { status: "ready" }))
}

// ---------------------------------------------------------------------------
// Router

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
        .routes(routes!(monthly_sales_summary))
        .routes(routes!(monthly_sales_breakdown))
        .routes(routes!(top_5_by_revenue))
        .routes(routes!(query_endpoint))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
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
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// One log line per request: method, path, status, latency.
async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    tracing::info!(
        target: "clue::access",
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

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
        host: &str,
        port: u16,
    ) -> std::io::Result<Application> {
        let cache = Arc::new(Cache::default());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, report: Report, expect: Result<(&str, Format), (&str, &str)>) {
        let got = parse_params(Some(query), &HeaderMap::new(), report);
        match (got, expect) {
            (Ok((filter, format)), Ok((debug, f))) => {
                assert_eq!(format, f, "{query}");
                let shown = format!(
                    "{:?} {:?} {:?} {:?}",
                    filter.start_date.map(|d| d.to_string()),
                    filter.end_date.map(|d| d.to_string()),
                    filter.product,
                    filter.region
                );
                assert_eq!(shown, debug, "{query}");
            }
            (Err(ApiError::InvalidParameter { name, reason }), Err((n, r))) => {
                assert_eq!((name.as_str(), reason.as_str()), (n, r), "{query}");
            }
            (got, expect) => panic!("{query}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn report_parameters() {
        use Report::*;
        check(
            "",
            MonthlySummary,
            Ok(("None None None None", Format::Json)),
        );
        check(
            "start_date=2024-01-01&end_date=2025-12-12",
            MonthlySummary,
            Ok((
                "Some(\"2024-01-01\") Some(\"2025-12-12\") None None",
                Format::Json,
            )),
        );
        check(
            "format=CSV",
            Top5ByRevenue,
            Ok(("None None None None", Format::Csv)),
        );
        // The document says a date: an empty one is not "absent".
        check(
            "start_date=&format=CSV",
            Top5ByRevenue,
            Err((
                "start_date",
                "is empty; give a date in the form YYYY-MM-DD or leave the parameter out",
            )),
        );
        // Bytes that are not UTF-8 are refused, not replaced.
        check(
            "region=%FF%FE",
            MonthlyBreakdown,
            Err(("region", "is not valid UTF-8 text once percent-decoded")),
        );
        check(
            "%FF=1",
            MonthlyBreakdown,
            Err(("query", "is not valid UTF-8 text once percent-decoded")),
        );
        check(
            "region=North+East&product=Widget%2BA",
            MonthlyBreakdown,
            Ok((
                "None None Some(\"Widget+A\") Some(\"North East\")",
                Format::Json,
            )),
        );
        check(
            "product=Widget%20A&region=North",
            MonthlyBreakdown,
            Ok(("None None Some(\"Widget A\") Some(\"North\")", Format::Json)),
        );
        check(
            "start_date=2025-13-01",
            MonthlySummary,
            Err((
                "start_date",
                "\"2025-13-01\" is not a date in the form YYYY-MM-DD",
            )),
        );
        check(
            "end_date=yesterday",
            MonthlySummary,
            Err((
                "end_date",
                "\"yesterday\" is not a date in the form YYYY-MM-DD",
            )),
        );
        check(
            "start_date=2025-02-01&end_date=2025-01-31",
            MonthlySummary,
            Err(("start_date", "2025-02-01 is after end_date 2025-01-31")),
        );
        // Compared as dates, not strings (prototype 000 compared strings).
        check(
            "start_date=2025-9-01",
            MonthlySummary,
            Err((
                "start_date",
                "\"2025-9-01\" is not a date in the form YYYY-MM-DD",
            )),
        );
        check(
            "product=x",
            MonthlySummary,
            Err((
                "product",
                "is not a parameter of this report (expected start_date, end_date, format)",
            )),
        );
        check(
            "start_date=2025-01-01&start_date=2025-02-01",
            MonthlySummary,
            Err(("start_date", "is given more than once")),
        );
        check(
            "format=xml",
            MonthlySummary,
            Err(("format", "\"xml\" is not json or csv")),
        );
        check(
            &format!("region={}", "r".repeat(300)),
            MonthlyBreakdown,
            Err(("region", "is longer than 255 characters")),
        );
    }

    #[test]
    fn accept_header_selects_csv() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/csv;q=0.9, */*;q=0.1"),
        );
        let (_, format) = parse_params(None, &headers, Report::MonthlySummary).unwrap();
        assert_eq!(format, Format::Csv);
    }
}
