//! Prototype 003's learning logs: `POST /recordsjson` (one record per
//! client `request_id`, JSON, form or multipart) and
//! `GET /users/{user_id}/summary` (the average words learned per period,
//! every period of the range, in any time zone).

use std::str::FromStr;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::caching::{cached, describe_sources};
use crate::api::params::query_pairs;
use crate::api::problem::{ApiError, InvalidParam, Problem, query_error};
use crate::domain::time::Grain;
use crate::domain::value::parse_timestamptz;
use crate::error::{Error, ErrorKind};
use crate::ingest::records::{Record, RecordError};
use crate::plan::RawFilter;
use crate::serve::execute::{self, Cell};
use crate::serve::query::QueryRequest;

/// The dataset and ledger scope of the learning logs.
const DATASET: &str = "learning_log";
/// A record is a few fields: a larger body is not one.
const MAX_BODY: usize = 64 * 1024;
/// The fields of a record.
const FIELDS: [&str; 4] = ["request_id", "user_id", "word_count", "timestamp"];

/// A learning record (documentation; parsing is [`record_fields`]).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RecordsJson {
    /// The client's id of this record: a repeat is refused (409).
    #[schema(value_type = uuid::Uuid, example = "0f8fad5b-d9cb-469f-a165-70867728950e")]
    request_id: String,
    #[schema(
        example = "ada",
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    user_id: String,
    #[schema(minimum = 0, maximum = 2147483647, example = 42)]
    word_count: i32,
    /// When the words were learned (ISO 8601; with an offset, or UTC);
    /// absent: now.
    #[schema(format = DateTime, nullable = false, example = "2024-01-10T01:00:00+11:00")]
    timestamp: Option<String>,
}

/// Records learning activity.
#[utoipa::path(
    post,
    path = "/recordsjson",
    tag = "learning",
    request_body(content(
        (RecordsJson = "application/json"),
        (RecordsJson = "application/x-www-form-urlencoded"),
        (RecordsJson = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Recorded (no body)."),
        (status = 400, description = "A field is missing, unknown or invalid; each is named.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This request_id was recorded before.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after the Retry-After seconds.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn records_json(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let fields = record_fields(&state, request).await?;
    let record = check_record(fields)?;
    match state.records.record(record).await {
        Ok(()) => Ok(StatusCode::CREATED.into_response()),
        Err(RecordError::Duplicate { key, .. }) => Err(ApiError::Conflict(format!(
            "request_id {key} was recorded before"
        ))),
        Err(RecordError::Invalid(problems)) => Err(ApiError::InvalidParameters(
            problems
                .into_iter()
                .map(|p| InvalidParam {
                    name: p.field,
                    reason: p.reason,
                })
                .collect(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The body's fields as text, whatever its content type.
async fn record_fields(
    state: &AppState,
    request: Request,
) -> Result<Vec<(String, String)>, ApiError> {
    let content_type = super::content_type(&request);
    if content_type.starts_with("multipart/form-data") {
        return multipart_fields(state, request).await;
    }
    let body = limited_body(request.into_body()).await?;
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let text = std::str::from_utf8(&body).map_err(|_| body_error("is not UTF-8 text"))?;
        return query_pairs(text);
    }
    if !content_type.is_empty() && !content_type.starts_with("application/json") {
        return Err(ApiError::InvalidParameter {
            name: "content-type".into(),
            reason:
                "must be application/json, application/x-www-form-urlencoded or multipart/form-data"
                    .into(),
        });
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| body_error(&format!("is not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(body_error("must be a JSON object"));
    };
    map.into_iter()
        .map(|(name, v)| {
            let text = match &v {
                serde_json::Value::String(s) => s.clone(),
                // JSON has one number type: 42.0 is the whole number 42
                // (as JSON Schema's `integer` has it).
                serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => i.to_string(),
                    (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        (f as i64).to_string()
                    }
                    _ => n.to_string(),
                },
                serde_json::Value::Null => return Ok((name, String::new())),
                _ => {
                    return Err(ApiError::InvalidParameter {
                        reason: format!("must be a string or a number, found {v}"),
                        name,
                    });
                }
            };
            // Types are checked here as the JSON has them: a number as text
            // is not a word count, and a user id is a string.
            let wrong = match (name.as_str(), &v) {
                ("word_count", serde_json::Value::String(_)) => Some("must be a whole number"),
                ("user_id" | "request_id" | "timestamp", serde_json::Value::Number(_)) => {
                    Some("must be a string")
                }
                _ => None,
            };
            match wrong {
                Some(reason) => Err(ApiError::InvalidParameter {
                    name,
                    reason: reason.into(),
                }),
                None => Ok((name, text)),
            }
        })
        .collect()
}

async fn multipart_fields(
    state: &AppState,
    request: Request,
) -> Result<Vec<(String, String)>, ApiError> {
    let (parts, body) = request.into_parts();
    // The limit holds for multipart bodies too.
    let body = limited_body(body).await?;
    let request = Request::from_parts(parts, Body::from(body));
    let mut form = Multipart::from_request(request, state)
        .await
        .map_err(|e| body_error(&format!("is not a valid multipart form: {}", e.body_text())))?;
    let mut out = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| body_error(&format!("is not a valid multipart form: {}", e.body_text())))?
    {
        let name = field.name().unwrap_or("").to_owned();
        let text = field
            .text()
            .await
            .map_err(|_| body_error("has a part that is not UTF-8 text"))?;
        out.push((name, text));
    }
    Ok(out)
}

/// The body, refused past [`MAX_BODY`] bytes.
async fn limited_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_BODY))
}

fn body_error(reason: &str) -> ApiError {
    ApiError::InvalidParameter {
        name: "body".into(),
        reason: reason.to_owned(),
    }
}

/// The record of the fields: each known once, the required ones present,
/// the request id a UUID, the time an instant (now when absent); every
/// field at fault named at once.
fn check_record(fields: Vec<(String, String)>) -> Result<Record, ApiError> {
    let mut problems = Vec::new();
    let mut get = |name: &str| -> Option<String> {
        let mut values = fields.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        let first = values.next().cloned();
        if values.next().is_some() {
            problems.push(invalid(name, "is given more than once"));
        }
        first
    };
    let request_id = get("request_id");
    let user_id = get("user_id");
    let word_count = get("word_count");
    let timestamp = get("timestamp");
    for (name, _) in &fields {
        if !FIELDS.contains(&name.as_str()) {
            let shown: String = name.chars().take(64).collect();
            problems.push(invalid(
                &shown,
                "is not a field of a record (request_id, user_id, word_count, timestamp)",
            ));
        }
    }
    let mut required = |name: &str, v: &Option<String>| {
        if v.as_deref().is_none_or(|s| s.trim().is_empty()) {
            problems.push(invalid(name, "is required"));
        }
    };
    required("request_id", &request_id);
    required("user_id", &user_id);
    required("word_count", &word_count);
    let request_id = request_id.unwrap_or_default();
    let uuid = uuid::Uuid::parse_str(request_id.trim());
    if !request_id.trim().is_empty() && uuid.is_err() {
        problems.push(invalid("request_id", "is not a UUID"));
    }
    let at = match timestamp.as_deref().map(str::trim) {
        None | Some("") => Some(Utc::now()),
        Some(t) => {
            let parsed = parse_timestamptz(t);
            if parsed.is_none() {
                problems.push(invalid(
                    "timestamp",
                    "is not an ISO 8601 date-time such as 2024-01-10T01:00:00+11:00",
                ));
            }
            parsed
        }
    };
    if !problems.is_empty() {
        return Err(ApiError::InvalidParameters(problems));
    }
    let key = uuid.map(|u| u.to_string()).unwrap_or_default();
    let at = at
        .unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let fields = vec![
        ("request_id".to_owned(), key.clone()),
        ("user_id".to_owned(), user_id.unwrap_or_default()),
        ("word_count".to_owned(), word_count.unwrap_or_default()),
        ("timestamp".to_owned(), at),
    ];
    Ok(Record::new(fields))
}

fn invalid(name: &str, reason: &str) -> InvalidParam {
    InvalidParam {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// One period of a summary.
#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct UserSummary {
    /// The period's first instant (RFC 3339; with the zone's offset when `tz` is given).
    #[schema(format = DateTime, example = "2024-01-01T00:00:00Z")]
    period: String,
    /// The average word count of the period's records (0 when it has none), exact.
    #[schema(value_type = f64, example = 60)]
    average_words_learned: serde_json::Value,
}

/// The summary's query parameters (documentation; parsed by [`SummaryParams`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct SummaryParamsDoc {
    /// Start: a date (midnight in the zone) or a date-time.
    #[param(schema_with = crate::api::params::date_or_instant, required = true, example = "2025-01-01")]
    from: String,
    /// End (included): a date (midnight in the zone) or a date-time.
    #[param(schema_with = crate::api::params::date_or_instant, required = true, example = "2025-12-31")]
    to: String,
    /// `hour`, `day`, `week` (from Monday) or `month`.
    #[param(schema_with = granularities, required = true)]
    granularity: String,
    /// IANA time zone of the periods (default UTC).
    #[param(example = "Europe/Paris")]
    tz: Option<String>,
}

fn granularities() -> utoipa::openapi::Object {
    crate::api::params::one_of(&["hour", "day", "week", "month"])
}

/// Average words learned by a user per period, every period of the range.
#[utoipa::path(
    get,
    path = "/users/{user_id}/summary",
    tag = "learning",
    params(("user_id" = String, Path, description = "The user."), SummaryParamsDoc),
    responses(
        (status = 200, description = "One entry per period from the one holding `from` to the one holding `to`.", body = Vec<UserSummary>),
        (status = 400, description = "A parameter is missing or invalid, `from` is after `to`, or the range has too many periods.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after the Retry-After seconds.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn user_summary(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = SummaryParams::parse(query.as_deref(), &user_id, state.limits.max_periods)?;
    let req = params.query(&user_id);
    let key = format!(
        "summary|{}",
        serde_json::to_string(&req).unwrap_or_default()
    );
    let range = (
        Some(
            params
                .from
                .date_naive()
                .pred_opt()
                .unwrap_or(NaiveDate::MIN),
        ),
        Some(params.to.date_naive().succ_opt().unwrap_or(NaiveDate::MAX)),
    );
    let s = state.clone();
    let view = caller.view.clone();
    cached(
        &state,
        &caller,
        &headers,
        key,
        DATASET,
        range,
        || async move {
            let answer = execute::execute(&s.db, &s.catalog, &req, &view, false, Some(&s.cache))
                .await
                .map_err(query_error)?;
            let rows: Vec<UserSummary> = answer
                .rows
                .iter()
                .map(|r| UserSummary {
                    period: match r.get("period") {
                        Some(Cell::Timestamp(t)) => params.render(*t),
                        _ => String::new(),
                    },
                    average_words_learned: match r.get("average_words_learned") {
                        Some(Cell::Decimal(d)) => {
                            serde_json::Value::from_str(&d.normalize().to_string())
                                .unwrap_or(serde_json::Value::from(0))
                        }
                        _ => serde_json::Value::from(0),
                    },
                })
                .collect();
            let body = serde_json::to_vec(&rows)
                .map_err(|e| ApiError::Failed(Error::new(ErrorKind::Internal, e.to_string())))?;
            Ok((
                Bytes::from(body),
                "application/json",
                describe_sources(&answer.served_from),
            ))
        },
    )
    .await
}

/// A summary's parameters, checked.
pub(in crate::api) struct SummaryParams {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    grain: Grain,
    zone: Option<Tz>,
}

impl SummaryParams {
    pub(in crate::api) fn parse(
        raw: Option<&str>,
        user_id: &str,
        max_periods: usize,
    ) -> Result<SummaryParams, ApiError> {
        if user_id.is_empty() || user_id.len() > 255 {
            return Err(ApiError::InvalidParameter {
                name: "user_id".into(),
                reason: "must be 1 to 255 bytes".into(),
            });
        }
        let pairs = query_pairs(raw.unwrap_or(""))?;
        let mut values = std::collections::BTreeMap::new();
        for (name, value) in pairs {
            if !["from", "to", "granularity", "tz"].contains(&name.as_str()) {
                let shown: String = name.chars().take(64).collect();
                return Err(ApiError::InvalidParameter {
                    name: shown,
                    reason:
                        "is not a parameter of the summary (expected from, to, granularity, tz)"
                            .into(),
                });
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ApiError::InvalidParameter {
                    name,
                    reason: "is given more than once".into(),
                });
            }
        }
        let zone = match values.get("tz") {
            None => None,
            Some(z) => Some(Tz::from_str(z).map_err(|_| ApiError::InvalidParameter {
                name: "tz".into(),
                reason: format!(
                    "{:?} is not an IANA time zone name",
                    z.chars().take(64).collect::<String>()
                ),
            })?),
        };
        let required = |name: &str| {
            values.get(name).ok_or_else(|| ApiError::InvalidParameter {
                name: name.into(),
                reason: "is required".into(),
            })
        };
        let grain = match required("granularity")?.as_str() {
            g @ ("hour" | "day" | "week" | "month") => Grain::parse(g).expect("a grain"),
            other => {
                return Err(ApiError::InvalidParameter {
                    name: "granularity".into(),
                    reason: format!(
                        "{:?} is not hour, day, week or month",
                        other.chars().take(32).collect::<String>()
                    ),
                });
            }
        };
        let from = instant(required("from")?, zone, "from")?;
        let to = instant(required("to")?, zone, "to")?;
        if from > to {
            return Err(ApiError::InvalidParameter {
                name: "from".into(),
                reason: "is after to".into(),
            });
        }
        // An upper bound of the periods: a bucket is at least an hour, a
        // day, a week or 28 days long.
        let shortest = match grain {
            Grain::Hour => 3_600,
            Grain::Day => 86_400,
            Grain::Week => 7 * 86_400,
            _ => 28 * 86_400,
        };
        let periods = (to - from).num_seconds() / shortest + 2;
        if periods > max_periods as i64 {
            return Err(ApiError::InvalidParameter {
                name: "to".into(),
                reason: format!(
                    "the range has more than {max_periods} periods of a {grain}; narrow it or ask for a coarser granularity"
                ),
            });
        }
        Ok(SummaryParams {
            from,
            to,
            grain,
            zone,
        })
    }

    /// The query answering the summary.
    fn query(&self, user_id: &str) -> QueryRequest {
        QueryRequest {
            dataset: DATASET.into(),
            measures: vec!["average_words_learned".into()],
            dimensions: vec![],
            granularity: Some(self.grain),
            start_date: None,
            end_date: None,
            from: Some(self.from),
            to: Some(self.to),
            filters: vec![RawFilter {
                dimension: "user_id".into(),
                equals: Some(serde_json::Value::String(user_id.to_owned())),
                in_: None,
                min: None,
                max: None,
            }],
            order: vec![],
            limit: None,
            gap_fill: true,
            time_zone: self.zone.map(|z| z.name().to_owned()),
        }
    }

    /// A period's start as RFC 3339: `Z` in UTC, else the zone's offset then.
    fn render(&self, t: DateTime<Utc>) -> String {
        match self.zone {
            None => t.to_rfc3339_opts(SecondsFormat::Secs, true),
            Some(z) => t
                .with_timezone(&z)
                .to_rfc3339_opts(SecondsFormat::Secs, false),
        }
    }
}

/// A `from`/`to` value: a date-time (with an offset, or in the zone), or a
/// date (midnight in the zone).
fn instant(text: &str, zone: Option<Tz>, name: &str) -> Result<DateTime<Utc>, ApiError> {
    let text = text.trim();
    let bad = || ApiError::InvalidParameter {
        name: name.into(),
        reason: format!(
            "{:?} is not a date (YYYY-MM-DD) or a date-time (ISO 8601)",
            text.chars().take(64).collect::<String>()
        ),
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let local: NaiveDateTime = match NaiveDate::from_str(text) {
        Ok(d) => d.and_time(NaiveTime::MIN),
        Err(_) => crate::domain::value::parse_timestamp(text).ok_or_else(bad)?,
    };
    let zone = zone.unwrap_or(Tz::UTC);
    // A wall-clock time a DST change skips is read an hour later.
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + chrono::TimeDelta::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(bad)
}
