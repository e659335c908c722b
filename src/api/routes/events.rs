//! `POST /api/v1/datasets/{name}/events`: many events for any declared
//! dataset in one request (a JSON array, NDJSON or CSV), all or nothing, or
//! with `?on_error=skip` the valid ones and the refused ones named; an
//! `Idempotency-Key` makes a repeat replay the first answer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::params::query_pairs;
use crate::api::problem::{ApiError, InvalidParam, Problem};
use crate::domain::dataset::Dataset;
use crate::error::{Error, ErrorKind};
use crate::ingest::records::{FieldProblem, Prepared, Record, RecordError, Rejected};
use crate::store::ledger;
use crate::write::load::ClaimSpec;

/// The largest body, in bytes, and the most events, of one request.
const MAX_BODY: usize = 16 * 1024 * 1024;
const MAX_EVENTS: usize = 100_000;
/// How long an `Idempotency-Key` is remembered.
const KEY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How many refused events an answer names.
const MAX_NAMED: usize = 1_000;

/// Keys of requests being written by this server (a repeat is a 409).
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<String>>);

/// Holds a key in [`InFlight`] until dropped.
struct InFlightGuard(Arc<InFlight>, String);

impl InFlight {
    fn enter(self: &Arc<Self>, key: String) -> Option<InFlightGuard> {
        let mut keys = self.0.lock().ok()?;
        keys.insert(key.clone())
            .then(|| InFlightGuard(self.clone(), key))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.0.0.lock() {
            keys.remove(&self.1);
        }
    }
}

/// What a batch did.
#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct EventsAnswer {
    dataset: String,
    /// Events in the request.
    received: usize,
    /// Events written.
    written: u64,
    /// Events refused (`on_error=skip`), by their place in the request from 0
    /// (at most 1,000 named).
    rejected: Vec<RejectedEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
struct RejectedEvent {
    row: usize,
    problems: Vec<InvalidParam>,
}

/// Writes many events into a dataset.
#[utoipa::path(
    post,
    path = "/api/v1/datasets/{name}/events",
    tag = "query",
    params(
        ("name" = String, Path, description = "A declared dataset."),
        ("on_error" = Option<String>, Query, description = "`fail` (default: any bad event writes nothing) or `skip` (write the valid ones, name the others)."),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key and body replays the first answer (kept 24 hours); with another body it is a 422; while the first is being written, a 409."),
    ),
    request_body(content(
        (Vec<Object> = "application/json"),
        (String = "application/x-ndjson"),
        (String = "text/csv"),
    )),
    responses(
        (status = 201, description = "Written (a replay carries `Idempotent-Replayed: true`).", body = EventsAnswer),
        (status = 400, description = "The body or a parameter is malformed, or the body has more than 100,000 events.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is being written.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 16 MiB.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Events are invalid (each named, nothing written), or the Idempotency-Key was used with another body.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after the Retry-After seconds.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let dataset = state
        .catalog
        .get(&name)
        .map_err(|_| ApiError::NotFound(format!("dataset {:?}", shown(&name))))?
        .clone();
    let skip = on_error(query.as_deref())?;
    let key = idempotency_key(&request)?;
    let content_type = match super::content_type(&request) {
        t if t.is_empty() => "application/json".to_owned(),
        t => t,
    };
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_BODY))?;
    let scope = format!("events:{}", dataset.name);
    let fingerprint = ledger::fingerprint(
        &[
            format!("{skip}\u{1f}{content_type}\u{1f}").as_bytes(),
            &body[..],
        ]
        .concat(),
    );
    let _guard = match &key {
        Some(k) => {
            let guard = state
                .in_flight
                .enter(format!("{scope}\u{1f}{k}"))
                .ok_or_else(|| {
                    ApiError::Conflict(
                        "a request with this Idempotency-Key is being written".into(),
                    )
                })?;
            if let Some(replay) = replay(&state, &scope, k, &fingerprint).await? {
                return Ok(replay);
            }
            Some(guard)
        }
        None => None,
    };
    let (rows, mut rejected) = parse(&dataset, &content_type, &body)?;
    let received = rows.len() + rejected.len();
    let (indexes, records): (Vec<usize>, Vec<Record>) = rows.into_iter().unzip();
    let records = keyed(&dataset, records);
    let prepared = Prepared::new(&state.db, &state.catalog, &dataset.name, &records, true)
        .await
        .map_err(record_error)?;
    if let Some(p) = &prepared {
        rejected.extend(p.rejected.iter().map(|r| Rejected {
            index: indexes[r.index],
            problems: r.problems.clone(),
        }));
    }
    rejected.sort_by_key(|r| r.index);
    if !skip && !rejected.is_empty() {
        return Err(ApiError::InvalidEvent(named(&rejected)));
    }
    let answer = EventsAnswer {
        dataset: dataset.name.clone(),
        received,
        written: prepared.as_ref().map_or(0, |p| p.accepted),
        rejected: rejected
            .iter()
            .take(MAX_NAMED)
            .map(|r| RejectedEvent {
                row: r.index,
                problems: r.problems.iter().map(invalid).collect(),
            })
            .collect(),
    };
    let body = serde_json::to_string(&answer)
        .map_err(|e| ApiError::Failed(Error::new(ErrorKind::Internal, e.to_string())))?;
    // The request's key, then each written record's own (as /ingest claims it).
    let refused: HashSet<usize> = prepared
        .iter()
        .flat_map(|p| p.rejected.iter().map(|r| r.index))
        .collect();
    let mut claims: Vec<ClaimSpec<'_>> = key
        .iter()
        .map(|k| ClaimSpec {
            scope: &scope,
            key: k,
            fingerprint: &fingerprint,
            ttl: Some(KEY_TTL),
            response: Some(&body),
        })
        .collect();
    claims.extend(records.iter().enumerate().filter_map(|(i, r)| {
        let k = r.key.as_ref().filter(|_| !refused.contains(&i))?;
        Some(ClaimSpec {
            scope: &dataset.name,
            key: &k.key,
            fingerprint: &k.fingerprint,
            ttl: dataset.idempotency_ttl,
            response: None,
        })
    }));
    let outcome = match prepared {
        Some(p) => p.commit(&claims).await,
        None => Ok(0),
    };
    match outcome {
        Ok(_) => Ok(answer_response(StatusCode::CREATED, body, false)),
        // Another server wrote the same request key first.
        Err(RecordError::Duplicate { key: taken, .. }) if key.as_deref() == Some(&taken) => {
            replay(&state, &scope, &taken, &fingerprint)
                .await?
                .ok_or_else(|| ApiError::Conflict("the Idempotency-Key was taken meanwhile".into()))
        }
        Err(RecordError::Duplicate { key: taken, .. }) => Err(ApiError::Conflict(format!(
            "{} {taken} was written before (or twice in this request); nothing was written",
            dataset.key.as_deref().unwrap_or("key")
        ))),
        Err(e) => Err(record_error(e)),
    }
}

/// Records keyed by the dataset's key column, if it has one.
fn keyed(dataset: &Dataset, records: Vec<Record>) -> Vec<Record> {
    let Some(column) = &dataset.key else {
        return records;
    };
    records
        .into_iter()
        .map(|r| {
            let value = r
                .fields
                .iter()
                .find(|(c, _)| c == column)
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default();
            if value.is_empty() {
                r
            } else {
                Record::keyed(value, r.fields)
            }
        })
        .collect()
}

fn answer_response(status: StatusCode, body: String, replayed: bool) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(super::REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// The kept answer of a committed key with this fingerprint; a 422 when
/// the key was used with another body; `None` when the key is new.
async fn replay(
    state: &AppState,
    scope: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Option<Response>, ApiError> {
    let client = state.db.client().await?;
    match ledger::committed(&**client, scope, key)
        .await
        .map_err(crate::error::PgError)?
    {
        None => Ok(None),
        Some((fp, _)) if fp != fingerprint => Err(ApiError::InvalidEvent(vec![InvalidParam {
            name: "Idempotency-Key".into(),
            reason: "was used with a different request body".into(),
        }])),
        Some((_, response)) => Ok(Some(answer_response(
            StatusCode::CREATED,
            response.unwrap_or_else(|| "{}".into()),
            true,
        ))),
    }
}

fn on_error(raw: Option<&str>) -> Result<bool, ApiError> {
    let mut skip = None;
    for (name, value) in query_pairs(raw.unwrap_or(""))? {
        let bad = |reason: &str| ApiError::InvalidParameter {
            name: name.chars().take(64).collect(),
            reason: reason.into(),
        };
        match (name.as_str(), value.as_str()) {
            ("on_error", _) if skip.is_some() => return Err(bad("is given more than once")),
            ("on_error", "fail") => skip = Some(false),
            ("on_error", "skip") => skip = Some(true),
            ("on_error", _) => return Err(bad("must be fail or skip")),
            _ => {
                return Err(bad(
                    "is not a parameter of this endpoint (expected on_error)",
                ));
            }
        }
    }
    Ok(skip.unwrap_or(false))
}

fn idempotency_key(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(v) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let bad = |reason: String| ApiError::InvalidParameter {
        name: "Idempotency-Key".into(),
        reason,
    };
    let key = v
        .to_str()
        .map_err(|_| bad("is not visible ASCII".into()))?
        .trim()
        .to_owned();
    ledger::check_key(&key).map_err(|e| bad(e.to_string()))?;
    Ok(Some(key))
}

fn shown(text: &str) -> String {
    text.chars().take(64).collect()
}

fn invalid(p: &FieldProblem) -> InvalidParam {
    InvalidParam {
        name: p.field.clone(),
        reason: p.reason.clone(),
    }
}

/// Every refused event's problems, named `[row].field`.
fn named(rejected: &[Rejected]) -> Vec<InvalidParam> {
    rejected
        .iter()
        .flat_map(|r| {
            r.problems.iter().map(move |p| InvalidParam {
                name: format!("[{}].{}", r.index, p.field),
                reason: p.reason.clone(),
            })
        })
        .take(MAX_NAMED)
        .collect()
}

fn record_error(e: RecordError) -> ApiError {
    match e {
        RecordError::Invalid(problems) => {
            ApiError::InvalidEvent(problems.iter().map(invalid).collect())
        }
        other => other.into(),
    }
}

/// Events of the body as records over the dataset's columns (in their
/// order, an absent field empty), each with its place; events refused
/// before their values are checked.
type Parsed = (Vec<(usize, Record)>, Vec<Rejected>);

fn parse(dataset: &Dataset, content_type: &str, body: &[u8]) -> Result<Parsed, ApiError> {
    let body_error = |reason: String| ApiError::InvalidParameter {
        name: "body".into(),
        reason,
    };
    let objects: Vec<Result<serde_json::Map<String, Value>, String>> =
        if content_type.starts_with("application/json") {
            let values: Vec<Value> = serde_json::from_slice(body)
                .map_err(|e| body_error(format!("is not a JSON array of events: {e}")))?;
            values.into_iter().map(object).collect()
        } else if content_type.starts_with("application/x-ndjson")
            || content_type.starts_with("application/jsonl")
        {
            let text = std::str::from_utf8(body).map_err(|_| body_error("is not UTF-8".into()))?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str::<Value>(l)
                        .map_err(|e| format!("is not valid JSON: {e}"))
                        .and_then(object)
                })
                .collect()
        } else if content_type.starts_with("text/csv") {
            return csv_rows(dataset, body);
        } else {
            return Err(ApiError::InvalidParameter {
                name: "content-type".into(),
                reason: "must be application/json, application/x-ndjson or text/csv".into(),
            });
        };
    if objects.len() > MAX_EVENTS {
        return Err(too_many());
    }
    Ok(split(objects.into_iter().map(|o| {
        o.and_then(|map| fields(dataset, map.into_iter()))
    })))
}

/// Events as records with their places, and the ones refused already.
fn split(events: impl Iterator<Item = Result<Vec<(String, String)>, String>>) -> Parsed {
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    for (index, event) in events.enumerate() {
        match event {
            Ok(fields) => rows.push((index, Record { fields, key: None })),
            Err(reason) => rejected.push(Rejected {
                index,
                problems: vec![FieldProblem {
                    field: "event".into(),
                    reason,
                }],
            }),
        }
    }
    (rows, rejected)
}

fn too_many() -> ApiError {
    ApiError::InvalidParameter {
        name: "body".into(),
        reason: format!("has more than {MAX_EVENTS} events; send them in several requests"),
    }
}

fn object(v: Value) -> Result<serde_json::Map<String, Value>, String> {
    match v {
        Value::Object(map) => Ok(map),
        _ => Err("is not a JSON object".into()),
    }
}

/// An event's fields over the dataset's columns, values as text.
fn fields(
    dataset: &Dataset,
    pairs: impl Iterator<Item = (String, Value)>,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = dataset
        .columns
        .columns
        .iter()
        .map(|c| (c.name.clone(), String::new()))
        .collect();
    for (name, value) in pairs {
        let Some(slot) = out.iter_mut().find(|(c, _)| *c == name) else {
            return Err(format!(
                "{:?} is not a column of {}",
                shown(&name),
                dataset.name
            ));
        };
        slot.1 = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            _ => return Err(format!("{name} must be a string, a number or a boolean")),
        };
    }
    Ok(out)
}

fn csv_rows(dataset: &Dataset, body: &[u8]) -> Result<Parsed, ApiError> {
    let bad = |reason: String| ApiError::InvalidParameter {
        name: "body".into(),
        reason,
    };
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| bad(format!("has no readable CSV header: {e}")))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut events = Vec::new();
    for (index, record) in reader.records().enumerate() {
        if index >= MAX_EVENTS {
            return Err(too_many());
        }
        events.push(match record {
            Err(e) => Err(format!("is not a readable CSV row: {e}")),
            Ok(r) if r.len() != header.len() => Err(format!(
                "has {} fields, the header {}",
                r.len(),
                header.len()
            )),
            Ok(r) => fields(
                dataset,
                header
                    .iter()
                    .zip(r.iter())
                    .map(|(h, v)| (h.clone(), Value::String(v.to_owned()))),
            ),
        });
    }
    Ok(split(events.into_iter()))
}
