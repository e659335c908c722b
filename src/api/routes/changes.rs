//! `GET /api/v1/changes`: notified writes as Server-Sent Events, so a page
//! refetches what it shows when a write lands in it (pushed, not polled).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use utoipa::IntoParams;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::params::ParamValues;
use crate::api::problem::ApiError;
use crate::error::{Error, ErrorKind};
use crate::serve::changes::Change;

/// Parameters of the stream (documentation).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(in crate::api) struct ChangesParams {
    /// Only writes to these datasets, comma-separated; default all.
    #[param(
        example = "sales_report,sales",
        pattern = "^[a-z_][a-z0-9_]{0,47}(,[a-z_][a-z0-9_]{0,47})*$"
    )]
    datasets: Option<String>,
}

/// One event of the stream, as a client's parser sees it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct StreamEvent {
    /// `ready`, `write` or `resync`.
    #[schema(schema_with = event_kinds)]
    event: String,
    /// JSON text: `{}`, or a write's `{"dataset", "first", "last"}`.
    data: String,
}

fn event_kinds() -> utoipa::openapi::Object {
    crate::api::params::one_of(&["ready", "write", "resync"])
}

/// A write, as a stream event's data.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Written<'a> {
    dataset: &'a str,
    /// First and last day touched (`YYYY-MM-DD`); null: anywhere.
    #[schema(value_type = Option<String>, format = Date)]
    first: Option<chrono::NaiveDate>,
    #[schema(value_type = Option<String>, format = Date)]
    last: Option<chrono::NaiveDate>,
}

/// Notified writes as they commit: first an event `ready` (the stream is
/// listening), then `write` for each write (data: `{"dataset", "first",
/// "last"}`, the days it touched, null for anywhere) and `resync` when
/// notices may have been missed (refetch everything shown). A comment every
/// 15 seconds keeps idle connections open; the stream ends when the server
/// shuts down.
#[utoipa::path(
    get,
    path = "/api/v1/changes",
    tag = "live",
    params(ChangesParams),
    responses(
        (status = 200, description = "A Server-Sent Events stream.", content_type = "text/event-stream", body = StreamEvent,
         example = "event: ready\ndata: {}\n\nevent: write\ndata: {\"dataset\":\"sales_report\",\"first\":\"2025-03-01\",\"last\":\"2025-03-31\"}\n\n"),
        (status = 400, description = "An unknown dataset is named.", content_type = "application/problem+json", body = crate::api::problem::Problem),
        (status = 503, description = "As many streams are open as the server allows (`Retry-After`).", content_type = "application/problem+json", body = crate::api::problem::Problem),
    )
)]
pub(in crate::api) async fn changes(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = ParamValues::parse(q.as_deref(), &["datasets"])?;
    let wanted: Option<Vec<String>> = params
        .text("datasets")?
        .map(|list| list.split(',').map(|d| d.trim().to_owned()).collect());
    if let Some(unknown) = wanted
        .iter()
        .flatten()
        .find(|d| state.catalog.get(d).is_err())
    {
        return Err(ApiError::InvalidParameter {
            name: "datasets".into(),
            reason: format!(
                "{:?} is not a dataset",
                unknown.chars().take(64).collect::<String>()
            ),
        });
    }
    // A caller limited to datasets hears of writes to those alone.
    let wanted = if caller.view.is_everything() {
        wanted
    } else {
        let all = || {
            state
                .catalog
                .datasets
                .iter()
                .map(|d| d.name.clone())
                .collect()
        };
        Some(
            wanted
                .unwrap_or_else(all)
                .into_iter()
                .filter(|d| state.catalog.get(d).is_ok_and(|ds| caller.view.sees(ds)))
                .collect(),
        )
    };
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Failed(Error::new(
            ErrorKind::Unavailable,
            "as many live streams are open as this server allows; retry later",
        ))
    })?;
    let reader = state.changes.subscribe();
    let closing = state.closing.clone();
    let ready = Event::default().event("ready").data("{}");
    let stream = futures_util::stream::unfold(
        (Some(ready), reader, closing, wanted, permit),
        |(first, mut reader, mut closing, wanted, permit)| async move {
            if let Some(ready) = first {
                return Some((Ok(ready), (None, reader, closing, wanted, permit)));
            }
            loop {
                if *closing.borrow() {
                    return None;
                }
                let change = tokio::select! {
                    change = reader.next() => change?,
                    _ = closing.changed() => return None,
                };
                let event = match &change {
                    Change::Resync => Event::default().event("resync").data("{}"),
                    Change::Write(notice) => {
                        if wanted
                            .as_ref()
                            .is_some_and(|w| !w.contains(&notice.dataset))
                        {
                            continue;
                        }
                        let data = serde_json::to_string(&Written {
                            dataset: &notice.dataset,
                            first: notice.days.map(|d| d.first),
                            last: notice.days.map(|d| d.last),
                        })
                        .expect("a notice serializes");
                        Event::default().event("write").data(data)
                    }
                };
                return Some((Ok(event), (None, reader, closing, wanted, permit)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
