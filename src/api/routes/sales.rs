//! Prototype 001's sales events: `POST /ingest` (one event per `ID_ORDER`;
//! a replay answers the stored event, a clash 409), `GET /sales/{id_order}`
//! and `GET /sales` (filtered pages with a keyset cursor), and `GET
//! /feedback` (the top categories, from memory).

use std::str::FromStr;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::params::{ParamValues, query_pairs};
use crate::api::problem::{ApiError, InvalidParam, Problem, query_error};
use crate::domain::value::parse_timestamptz;
use crate::error::{Error, ErrorKind};
use crate::ingest::records::{Record, RecordError};
use crate::plan::rows::{self, PageFilter};
use crate::serve::execute::{self, Cell, Row};
use crate::serve::feedback::{CategoryFeedback, FeedbackFilter};

/// The dataset and ledger scope of the sales events.
const DATASET: &str = "sales";
/// The key of an event.
const KEY: &str = "ID_ORDER";
/// An event is a few fields: a larger body is not one.
const MAX_BODY: usize = 64 * 1024;
/// The most rows one page of `GET /sales` may have, and the default.
const MAX_PAGE: u32 = 1_000;
const DEFAULT_PAGE: u32 = 100;
/// Text fields of an event, all required but `BRAND`.
const TEXT_FIELDS: [&str; 7] = [
    "ID_ORDER",
    "ID_PRODUCT",
    "ID_BUYER",
    "ID_SELLER",
    "ID_SELLER_COUNTRY",
    "ID_BUYER_COUNTRY",
    "BRAND",
];
/// The prototype's categories, as stored (lowercase).
const CATEGORIES: [&str; 12] = [
    "clothing",
    "shoes",
    "accessories",
    "jewellery",
    "bags",
    "design & decoration",
    "boys",
    "girls",
    "sport & leisure",
    "high-tech",
    "art & culture",
    "pet accessories",
];

/// REVENUE as a schema: a number, or the same as a numeric string.
fn revenue_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0))
                    .maximum(Some(999_999_999_999.99))
                    .multiple_of(Some(0.01)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^\s*[0-9]{1,12}(\.[0-9]{1,2})?\s*$")),
            )
            .build(),
    )
}

/// A sales event in the prototype's shape.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case, dead_code)]
pub(in crate::api) struct SalesEvent {
    /// The order: one event per order (a repeat with the same payload is a replay).
    #[schema(
        example = "ORD-1001",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    ID_ORDER: String,
    #[schema(
        example = "P-77",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    ID_PRODUCT: String,
    #[schema(
        example = "B-12",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    ID_BUYER: String,
    #[schema(
        example = "S-3",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    ID_SELLER: String,
    #[schema(
        example = "FR",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    ID_SELLER_COUNTRY: String,
    #[schema(
        example = "DE",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    ID_BUYER_COUNTRY: String,
    /// RFC 3339, or `YYYY-MM-DD HH:MM:SS` (UTC) as the prototype wrote it;
    /// answered in RFC 3339 UTC.
    #[schema(format = DateTime, example = "2021-01-04T10:15:00Z")]
    DATE_PAYMENT: String,
    #[schema(example = "Acme", max_length = 255, pattern = r"^[^\x00]*$")]
    BRAND: Option<String>,
    /// One of the prototype's categories (matched case-insensitively, stored lowercase).
    #[schema(schema_with = category_schema, example = "shoes")]
    CATEGORY: String,
    /// Exact, non-negative, at most 2 decimal places and 12 digits before the point.
    #[schema(schema_with = revenue_schema, example = 59.90)]
    REVENUE: Value,
}

/// Records one sales event.
#[utoipa::path(
    post,
    path = "/ingest",
    tag = "sales",
    request_body(content((SalesEvent = "application/json"))),
    responses(
        (status = 201, description = "Stored; the stored event.", body = SalesEvent),
        (status = 200, description = "This ID_ORDER was stored before with the same payload: the stored event, with `Idempotent-Replayed: true`; nothing is written.", body = SalesEvent),
        (status = 400, description = "The body is not a JSON object.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This ID_ORDER was stored before with a different payload.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Fields are missing or invalid; every one is named.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after the Retry-After seconds.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn ingest(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let map = event_object(request).await?;
    let record = check_event(&map)?;
    // Stored values are these normalised ones, and a replay has the same
    // fingerprint, so the answer needs no read back.
    let stored = stored_json(&state, &record.fields)?;
    let (status, replayed) = match state.sales.record(record).await {
        Ok(()) => (StatusCode::CREATED, false),
        Err(RecordError::Duplicate { replay: true, .. }) => (StatusCode::OK, true),
        Err(RecordError::Duplicate { key, .. }) => {
            return Err(ApiError::Conflict(format!(
                "ID_ORDER {key} was stored before with a different payload"
            )));
        }
        Err(RecordError::Invalid(problems)) => {
            return Err(ApiError::InvalidEvent(
                problems
                    .into_iter()
                    .map(|p| invalid(&p.field, &p.reason))
                    .collect(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let mut response = (status, axum::Json(stored)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(super::REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The event as `GET /sales/{id_order}` answers it: the dataset's column
/// order, `REVENUE` an exact number at its scale, an absent `BRAND` null.
fn stored_json(state: &AppState, fields: &[(String, String)]) -> Result<StoredEvent, ApiError> {
    let dataset = state.catalog.get(DATASET)?;
    let mut out = Vec::with_capacity(fields.len());
    for column in &dataset.columns.columns {
        let text = fields
            .iter()
            .find(|(n, _)| *n == column.name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let cell =
            match column.name.as_str() {
                "REVENUE" => Cell::Decimal(Decimal::from_str(text).map_err(|e| {
                    ApiError::Failed(Error::new(ErrorKind::Internal, e.to_string()))
                })?),
                _ if text.is_empty() => Cell::Null,
                _ => Cell::Text(text.to_owned()),
            };
        out.push((column.name.clone(), cell));
    }
    Ok(StoredEvent(out))
}

/// An event's columns and values, serialized as a JSON object in order.
struct StoredEvent(Vec<(String, Cell)>);

impl Serialize for StoredEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, cell) in &self.0 {
            map.serialize_entry(name, cell)?;
        }
        map.end()
    }
}

/// The body as a JSON object, refused past [`MAX_BODY`] bytes.
async fn event_object(request: Request) -> Result<serde_json::Map<String, Value>, ApiError> {
    let content_type = super::content_type(&request);
    if !content_type.is_empty() && !content_type.starts_with("application/json") {
        return Err(ApiError::InvalidParameter {
            name: "content-type".into(),
            reason: "must be application/json".into(),
        });
    }
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_BODY))?;
    let body_error = |reason: String| ApiError::InvalidParameter {
        name: "body".into(),
        reason,
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(body_error("must be a JSON object".into())),
        Err(e) => Err(body_error(format!("is not valid JSON: {e}"))),
    }
}

/// The record of an event: every field checked, every one at fault named
/// at once; values normalised (category lowercase, the instant in UTC,
/// the revenue at two places) so a replay in another spelling is a replay.
pub(in crate::api) fn check_event(
    map: &serde_json::Map<String, Value>,
) -> Result<Record, ApiError> {
    let mut problems = Vec::new();
    for name in map.keys() {
        let known = TEXT_FIELDS.contains(&name.as_str())
            || ["DATE_PAYMENT", "CATEGORY", "REVENUE"].contains(&name.as_str());
        if !known {
            let shown: String = name.chars().take(64).collect();
            problems.push(invalid(&shown, "is not a field of a sales event"));
        }
    }
    let mut text = |name: &str, required: bool| -> String {
        match map.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                let s = s.trim();
                let chars = s.chars().count();
                if chars > 255 || (name != "BRAND" && chars > 64) {
                    problems.push(invalid(name, "is too long"));
                }
                s.to_owned()
            }
            None | Some(Value::Null) => {
                if required {
                    problems.push(invalid(name, "is required"));
                }
                String::new()
            }
            Some(Value::String(_)) if required => {
                problems.push(invalid(name, "is required"));
                String::new()
            }
            Some(Value::String(_)) => String::new(),
            Some(_) => {
                problems.push(invalid(name, "must be a string"));
                String::new()
            }
        }
    };
    let mut fields: Vec<(String, String)> = TEXT_FIELDS
        .iter()
        .map(|name| (name.to_string(), text(name, *name != "BRAND")))
        .collect();
    let category = text("CATEGORY", true).to_lowercase();
    let date = text("DATE_PAYMENT", true);
    let at = parse_timestamptz(&date);
    if !date.is_empty() && at.is_none() {
        problems.push(invalid(
            "DATE_PAYMENT",
            "is not a date-time such as 2021-01-04 10:15:00 or 2021-01-04T10:15:00+01:00",
        ));
    }
    if !category.is_empty() && !CATEGORIES.contains(&category.as_str()) {
        problems.push(invalid(
            "CATEGORY",
            &format!("must be one of: {}", CATEGORIES.join(", ")),
        ));
    }
    let revenue = revenue(map.get("REVENUE")).unwrap_or_else(|reason| {
        problems.push(invalid("REVENUE", reason));
        Decimal::ZERO
    });
    if !problems.is_empty() {
        return Err(ApiError::InvalidEvent(problems));
    }
    let at = at.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    fields.push(("DATE_PAYMENT".into(), at.unwrap_or_default()));
    fields.push(("CATEGORY".into(), category));
    fields.push(("REVENUE".into(), revenue.to_string()));
    Ok(Record::new(fields))
}

/// REVENUE, exactly: a JSON number or a numeric string, non-negative, at
/// most two decimal places (the column's scale: more would be rounded).
fn revenue(value: Option<&Value>) -> Result<Decimal, &'static str> {
    let text = match value {
        None | Some(Value::Null) => return Err("is required"),
        // serde_json prints a float back in its shortest exact form: a
        // number of at most 15 significant digits comes back as written.
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(_) => return Err("must be a number"),
    };
    let mut d = Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| match text.parse::<f64>() {
            // A number past what a decimal holds (1e300): too large, said so.
            Ok(f) if f.is_finite() && f >= 1e12 => "is larger than 999999999999.99",
            Ok(f) if f.is_finite() && f < 0.0 => "must not be negative",
            _ => "must be a number",
        })?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err("must not be negative");
    }
    d = d.normalize();
    if d.scale() > 2 {
        return Err("has more than 2 decimal places");
    }
    if d >= Decimal::from(1_000_000_000_000i64) {
        return Err("is larger than 999999999999.99");
    }
    d.rescale(2);
    Ok(d)
}

fn invalid(name: &str, reason: &str) -> InvalidParam {
    InvalidParam {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The stored event of an order, if any.
async fn stored_event(state: &AppState, id_order: &str) -> Result<Option<Row>, ApiError> {
    let rows = execute::rows(&state.db, &state.catalog, DATASET, |ds, table| {
        rows::by_key(ds, table, KEY, id_order)
    })
    .await
    .map_err(query_error)?;
    Ok(rows.into_iter().next())
}

/// One sales event by its order.
#[utoipa::path(
    get,
    path = "/sales/{id_order}",
    tag = "sales",
    params(("id_order" = String, Path, description = "The event's ID_ORDER.")),
    responses(
        (status = 200, description = "The stored event.", body = SalesEvent),
        (status = 404, description = "No event has this ID_ORDER.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after the Retry-After seconds.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn sale(
    State(state): State<AppState>,
    Path(id_order): Path<String>,
) -> Result<Response, ApiError> {
    if id_order.len() > 64 {
        return Err(ApiError::NotFound(format!("sale {}", shown(&id_order))));
    }
    match stored_event(&state, &id_order).await? {
        Some(row) => Ok(axum::Json(row).into_response()),
        None => Err(ApiError::NotFound(format!("sale {}", shown(&id_order)))),
    }
}

fn shown(text: &str) -> String {
    format!("{:?}", text.chars().take(64).collect::<String>())
}

/// The category list as a schema (one source: [`CATEGORIES`]).
fn category_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(CATEGORIES))
        .build()
}

/// The filter of `/feedback` (documentation; parsed by the handler).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(in crate::api) struct FeedbackParams {
    /// Only this category (case-insensitive).
    #[param(schema_with = category_schema)]
    category: Option<String>,
    /// First day (UTC) of DATE_PAYMENT.
    start_date: Option<NaiveDate>,
    /// Last day (UTC, included).
    end_date: Option<NaiveDate>,
}

/// The filter and page of `/sales` (documentation; parsed by the handler).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(in crate::api) struct SalesParams {
    /// Only this category (case-insensitive).
    #[param(schema_with = category_schema)]
    category: Option<String>,
    /// First day (UTC) of DATE_PAYMENT.
    start_date: Option<NaiveDate>,
    /// Last day (UTC, included).
    end_date: Option<NaiveDate>,
    /// Events per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The three most common categories, from memory.
#[utoipa::path(
    get,
    path = "/feedback",
    tag = "sales",
    params(FeedbackParams),
    responses(
        (status = 200, description = "At most three categories: the most sales first, then the most revenue, then by name. Every server counts an event within a second of its commit, whichever process wrote it.", body = Vec<CategoryFeedback>),
        (status = 400, description = "A parameter is unknown or invalid; it is named.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The aggregates are being read from the database (start-up, or after the notification channel dropped); retry after the Retry-After seconds.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn feedback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let values = ParamValues::parse(query.as_deref(), &["category", "start_date", "end_date"])?;
    let (start_date, end_date) = values.range()?;
    let category = values.text("category")?;
    if let Some(c) = &category
        && !CATEGORIES.contains(&c.trim().to_lowercase().as_str())
    {
        return Err(ApiError::InvalidParameter {
            name: "category".into(),
            reason: format!("must be one of: {}", CATEGORIES.join(", ")),
        });
    }
    let filter = FeedbackFilter {
        category: category.map(|c| c.trim().to_owned()),
        start_date,
        end_date,
    };
    match state.feedback.top(&filter) {
        Some(rows) => Ok(axum::Json(rows).into_response()),
        None => Err(ApiError::Failed(Error::new(
            ErrorKind::Unavailable,
            "the feedback aggregates are being read",
        ))),
    }
}

/// A page of sales events (documentation; the handler writes rows).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub(in crate::api) struct SalesPage {
    /// Events in (DATE_PAYMENT, ID_ORDER) order.
    items: Vec<SalesEvent>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Sales events, filtered, a page at a time.
#[utoipa::path(
    get,
    path = "/sales",
    tag = "sales",
    params(SalesParams),
    responses(
        (status = 200, description = "A page of events and the cursor of the next.", body = SalesPage),
        (status = 400, description = "A parameter is unknown or invalid; it is named.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after the Retry-After seconds.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn sales(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (filter, limit) = page_params(query.as_deref())?;
    let mut rows = execute::rows(&state.db, &state.catalog, DATASET, |ds, table| {
        rows::page(ds, table, ("DATE_PAYMENT", KEY), &filter, limit + 1)
    })
    .await
    .map_err(query_error)?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().and_then(cursor_of)
    } else {
        None
    };
    Ok(axum::Json(serde_json::json!({"items": rows, "next_cursor": next_cursor})).into_response())
}

/// The filter and page size of `GET /sales`, checked.
fn page_params(raw: Option<&str>) -> Result<(PageFilter, u32), ApiError> {
    let bad = |name: &str, reason: String| ApiError::InvalidParameter {
        name: name.to_owned(),
        reason,
    };
    let mut filter = PageFilter::default();
    let mut limit = DEFAULT_PAGE;
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in query_pairs(raw.unwrap_or(""))? {
        if !seen.insert(name.clone()) {
            return Err(bad(&name, "is given more than once".into()));
        }
        let date = |v: &str| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map_err(|_| bad(&name, format!("{} is not a date YYYY-MM-DD", shown(v))))
        };
        match name.as_str() {
            "category" => {
                if !CATEGORIES.contains(&value.trim().to_lowercase().as_str()) {
                    return Err(bad(
                        "category",
                        format!("must be one of: {}", CATEGORIES.join(", ")),
                    ));
                }
                filter.equals_ci = Some(("CATEGORY".into(), value.trim().to_owned()));
            }
            "start_date" => filter.start = Some(date(&value)?),
            "end_date" => filter.end = Some(date(&value)?),
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| {
                        bad(
                            "limit",
                            format!("must be a whole number from 1 to {MAX_PAGE}"),
                        )
                    })?;
            }
            "cursor" => {
                filter.after = Some(
                    parse_cursor(&value)
                        .ok_or_else(|| bad("cursor", "is not a cursor this server gave".into()))?,
                );
            }
            _ => {
                return Err(bad(
                    &name.chars().take(64).collect::<String>(),
                    "is not a parameter of /sales (expected category, start_date, end_date, limit, cursor)".into(),
                ));
            }
        }
    }
    if let (Some(s), Some(e)) = (filter.start, filter.end)
        && s > e
    {
        return Err(bad("start_date", "is after end_date".into()));
    }
    Ok((filter, limit))
}

/// The cursor after a row: its instant and key, hex-encoded (opaque to
/// clients, safe in a URL).
fn cursor_of(row: &Row) -> Option<String> {
    let (Some(Cell::Timestamp(t)), Some(Cell::Text(k))) = (row.get("DATE_PAYMENT"), row.get(KEY))
    else {
        return None;
    };
    let text = format!(
        "{}\u{1f}{k}",
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    );
    Some(text.bytes().map(|b| format!("{b:02x}")).collect())
}

fn parse_cursor(hex: &str) -> Option<(DateTime<Utc>, String)> {
    if !hex.len().is_multiple_of(2) || hex.len() > 512 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (t, k) = text.split_once('\u{1f}')?;
    let t = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
    Some((t, k.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_revenue(input: Value, expect: Result<&str, &str>) {
        assert_eq!(
            revenue(Some(&input)).map(|d| d.to_string()),
            expect.map(str::to_owned),
            "{input}"
        );
    }

    #[test]
    fn revenue_is_exact_or_refused() {
        check_revenue(serde_json::json!(59.9), Ok("59.90"));
        check_revenue(serde_json::json!("0.10"), Ok("0.10"));
        check_revenue(serde_json::json!(0), Ok("0.00"));
        check_revenue(serde_json::json!(123456789012.34), Ok("123456789012.34"));
        check_revenue(serde_json::json!("1e2"), Ok("100.00"));
        check_revenue(serde_json::json!(-1), Err("must not be negative"));
        check_revenue(
            serde_json::json!(1.005),
            Err("has more than 2 decimal places"),
        );
        check_revenue(
            serde_json::json!("1000000000000"),
            Err("is larger than 999999999999.99"),
        );
        check_revenue(serde_json::json!("ten"), Err("must be a number"));
        check_revenue(serde_json::json!(true), Err("must be a number"));
    }

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let t = DateTime::parse_from_rfc3339("2021-01-04T10:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = "2021-01-04T10:15:00Z\u{1f}ORD-1";
        let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_cursor(&hex), Some((t, "ORD-1".to_owned())));
        for bad in ["", "zz", "abc", "41", &"00".repeat(300)] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
