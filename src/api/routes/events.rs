//! `POST /api/v1/datasets/{name}/events`: many events for any declared
//! dataset in one request (a JSON array, NDJSON or CSV), all or nothing, or
//! with `?on_error=skip` the valid ones and the refused ones named; an
//! `Idempotency-Key` makes a repeat replay the first answer.

use std::borrow::Cow;
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
use crate::ingest::records::{FieldProblem, Prepared, RecordError, Rejected};
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

/// The events endpoint's query (documentation; parsed by the handler).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct EventsQuery {
    /// `fail` (default: any bad event writes nothing) or `skip` (write the
    /// valid ones, name the others).
    #[param(schema_with = on_error_values)]
    on_error: Option<String>,
}

fn on_error_values() -> utoipa::openapi::Object {
    crate::api::params::one_of(&["fail", "skip"])
}

/// Writes many events into a dataset.
#[utoipa::path(
    post,
    path = "/api/v1/datasets/{name}/events",
    tag = "query",
    params(
        ("name" = String, Path, description = "A declared dataset.", pattern = "^[a-z_][a-z0-9_]{0,47}$"),
        EventsQuery,
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]([ -~]{0,198}[!-~])?$", description = "A repeat with the same key and body replays the first answer (kept 24 hours); with another body it is a 422; while the first is being written, a 409."),
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
    caller: crate::api::auth::Caller,
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
    let columns: Vec<String> = dataset
        .columns
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let prepared = Prepared::new(&state.db, &state.catalog, &dataset.name, columns, true)
        .await
        .map_err(record_error)?;
    // Parsing and checking 100,000 events is CPU work: off the runtime's threads.
    let (mut prepared, received) = {
        let dataset = dataset.clone();
        tokio::task::spawn_blocking(move || {
            let mut prepared = prepared;
            parse(&dataset, &content_type, &body, &mut prepared).map(|n| (prepared, n))
        })
        .await
        .map_err(|e| ApiError::Failed(Error::new(ErrorKind::Internal, e.to_string())))??
    };
    prepared.rejected.sort_by_key(|r| r.index);
    if !skip && !prepared.rejected.is_empty() {
        return Err(ApiError::InvalidEvent(named(&prepared.rejected)));
    }
    let answer = EventsAnswer {
        dataset: dataset.name.clone(),
        received,
        written: prepared.accepted(),
        rejected: prepared
            .rejected
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
    // The request's key; each written record's own key is claimed with it.
    let claims: Vec<ClaimSpec<'_>> = key
        .iter()
        .map(|k| ClaimSpec {
            scope: &scope,
            key: k,
            fingerprint: &fingerprint,
            ttl: Some(KEY_TTL),
            response: Some(&body),
        })
        .collect();
    // A turn at expensive work, the caller's and the server's (503 when none
    // frees within a moment), then a turn to write (`Limits::bulk_writers`).
    let _work = state.guard.turn(&caller).await?;
    let _turn = state
        .bulk_writers
        .acquire()
        .await
        .map_err(|e| ApiError::Failed(Error::new(ErrorKind::Internal, e.to_string())))?;
    match prepared.commit(&claims).await {
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
        e @ RecordError::Taken(_) => ApiError::Conflict(e.to_string()),
        other => other.into(),
    }
}

/// Feeds the body's events to `prepared` as rows over the dataset's
/// columns (in its order, an absent field empty), each by its place; an
/// event refused before its values are checked is rejected there. Returns
/// how many events the body has.
fn parse(
    dataset: &Dataset,
    content_type: &str,
    body: &[u8],
    prepared: &mut Prepared,
) -> Result<usize, ApiError> {
    let body_error = |reason: String| ApiError::InvalidParameter {
        name: "body".into(),
        reason,
    };
    let mut feed = |index: usize, event: Result<serde_json::Map<String, Value>, String>| match event
        .and_then(|map| object_fields(dataset, map))
    {
        Ok(fields) => prepared.push(index, fields.iter().map(|f| f.as_ref()).collect()),
        Err(reason) => prepared.reject(index, event_problem(reason)),
    };
    if content_type.starts_with("application/json") {
        let values: Vec<Value> = serde_json::from_slice(body)
            .map_err(|e| body_error(format!("is not a JSON array of events: {e}")))?;
        if values.len() > MAX_EVENTS {
            return Err(too_many());
        }
        let received = values.len();
        for (index, v) in values.into_iter().enumerate() {
            feed(index, object(v));
        }
        Ok(received)
    } else if content_type.starts_with("application/x-ndjson")
        || content_type.starts_with("application/jsonl")
    {
        let text = std::str::from_utf8(body).map_err(|_| body_error("is not UTF-8".into()))?;
        let mut received = 0;
        for (index, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            if index >= MAX_EVENTS {
                return Err(too_many());
            }
            let event = serde_json::from_str::<Value>(line)
                .map_err(|e| format!("is not valid JSON: {e}"))
                .and_then(object);
            feed(index, event);
            received += 1;
        }
        Ok(received)
    } else if content_type.starts_with("text/csv") {
        csv_rows(dataset, body, prepared)
    } else {
        Err(ApiError::InvalidParameter {
            name: "content-type".into(),
            reason: "must be application/json, application/x-ndjson or text/csv".into(),
        })
    }
}

fn event_problem(reason: String) -> Vec<FieldProblem> {
    vec![FieldProblem {
        field: "event".into(),
        reason,
    }]
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

/// A JSON event's values over the dataset's columns, as text.
fn object_fields(
    dataset: &Dataset,
    map: serde_json::Map<String, Value>,
) -> Result<Vec<Cow<'static, str>>, String> {
    let mut out: Vec<Cow<'static, str>> = vec![Cow::Borrowed(""); dataset.columns.columns.len()];
    for (name, value) in map {
        let Some(slot) = dataset.columns.columns.iter().position(|c| c.name == name) else {
            return Err(format!(
                "{:?} is not a column of {}",
                shown(&name),
                dataset.name
            ));
        };
        out[slot] = match value {
            Value::String(s) => Cow::Owned(s),
            Value::Number(n) => Cow::Owned(n.to_string()),
            Value::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Value::Null => Cow::Borrowed(""),
            _ => return Err(format!("{name} must be a string, a number or a boolean")),
        };
    }
    Ok(out)
}

/// A CSV body's rows, its header naming the dataset's columns (in any
/// order, any of them absent).
fn csv_rows(dataset: &Dataset, body: &[u8], prepared: &mut Prepared) -> Result<usize, ApiError> {
    let bad = |reason: String| ApiError::InvalidParameter {
        name: "body".into(),
        reason,
    };
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(body);
    let columns = &dataset.columns.columns;
    let slots: Vec<usize> = reader
        .headers()
        .map_err(|e| bad(format!("has no readable CSV header: {e}")))?
        .iter()
        .enumerate()
        .map(|(i, h)| {
            columns.iter().position(|c| c.name == h).ok_or_else(|| {
                bad(format!(
                    "header column {} ({:?}) is not a column of {}",
                    i + 1,
                    shown(h),
                    dataset.name
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut record = csv::StringRecord::new();
    let mut index = 0;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            _ if index >= MAX_EVENTS => return Err(too_many()),
            Err(e) => prepared.reject(
                index,
                event_problem(format!("is not a readable CSV row: {e}")),
            ),
            Ok(true) if record.len() != slots.len() => prepared.reject(
                index,
                event_problem(format!(
                    "has {} fields, the header {}",
                    record.len(),
                    slots.len()
                )),
            ),
            Ok(true) => {
                let mut fields = vec![""; columns.len()];
                for (slot, value) in slots.iter().zip(record.iter()) {
                    fields[*slot] = value;
                }
                prepared.push(index, fields);
            }
        }
        index += 1;
    }
    Ok(index)
}
