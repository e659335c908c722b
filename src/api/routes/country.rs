//! Prototype 001's batch analytics as reports: country contribution, the
//! top country relationship and repeat-buyer revenue, as JSON or CSV.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::NaiveDate;
use utoipa::IntoParams;

use super::reports::{CsvRow, ReportErrors, attach_filename, csv_filename, render};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::caching::{cached, describe_sources};
use crate::api::params::{Format, ParamValues};
use crate::api::problem::{ApiError, query_error};
use crate::serve::country::{
    self, CountryContribution, CountryRelationship, CountryReport, CountryRows, RepeatBuyerRevenue,
};

fn or_empty<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_default()
}

impl CsvRow for CountryContribution {
    const HEADER: &'static [&'static str] = &[
        "seller_country",
        "revenue",
        "revenue_share",
        "items",
        "items_share",
    ];
    fn record(&self) -> Vec<String> {
        vec![
            self.seller_country.clone(),
            self.revenue.to_string(),
            or_empty(&self.revenue_share),
            self.items.to_string(),
            or_empty(&self.items_share),
        ]
    }
}

impl CsvRow for CountryRelationship {
    const HEADER: &'static [&'static str] = &["country_a", "country_b", "revenue"];
    fn record(&self) -> Vec<String> {
        vec![
            self.country_a.clone(),
            self.country_b.clone(),
            self.revenue.to_string(),
        ]
    }
}

impl CsvRow for RepeatBuyerRevenue {
    const HEADER: &'static [&'static str] = &[
        "week1_start",
        "week2_start",
        "repeat_buyers",
        "week1_revenue",
        "week2_revenue",
        "change_pct",
    ];
    fn record(&self) -> Vec<String> {
        vec![
            self.week1_start.to_string(),
            self.week2_start.to_string(),
            self.repeat_buyers.to_string(),
            self.week1_revenue.to_string(),
            self.week2_revenue.to_string(),
            or_empty(&self.change_pct),
        ]
    }
}

/// Parameters of the repeat-buyer report (documentation).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(in crate::api) struct RepeatBuyerParams {
    /// First day of week 1 (seven UTC days), `YYYY-MM-DD`; default 2021-01-01.
    #[param(example = "2021-01-01")]
    week1_start: Option<NaiveDate>,
    /// First day of week 2; default 2021-01-08.
    #[param(example = "2021-01-08")]
    week2_start: Option<NaiveDate>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    format: Option<Format>,
}

/// An analysis through the planner and the cache, as JSON or CSV.
async fn country_response(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    report: CountryReport,
    format: Format,
) -> Result<Response, ApiError> {
    let key = format!("{}|{report:?}|{format:?}", report.slug());
    let range = report.range();
    let s = state.clone();
    let r = report.clone();
    let view = caller.view.clone();
    let mut response = cached(
        &state,
        &caller,
        &headers,
        key,
        country::DATASET,
        range,
        || async move {
            let (rows, served) = country::run(&s.db, &s.catalog, Some(&s.cache), &r, &view)
                .await
                .map_err(query_error)?;
            let (body, content_type) = match rows {
                CountryRows::Contribution(r) => render(r, format)?,
                CountryRows::Relationships(r) => render(r, format)?,
                CountryRows::RepeatBuyers(r) => render(r, format)?,
            };
            Ok((body, content_type, describe_sources(&served)))
        },
    )
    .await?;
    if format == Format::Csv {
        attach_filename(&mut response, &csv_filename(report.slug(), range));
    }
    Ok(response)
}

/// `start_date`, `end_date` and the format of a range report.
fn range_params(
    raw: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Option<NaiveDate>, Option<NaiveDate>, Format), ApiError> {
    let values = ParamValues::parse(raw, &["start_date", "end_date", "format"])?;
    let (start, end) = values.range()?;
    Ok((start, end, values.format(headers)?))
}

/// Each seller country's share of revenue and of items sold.
#[utoipa::path(
    get,
    path = "/reports/country-contribution",
    tag = "sales",
    params(crate::api::params::ReportParams),
    responses(
        (status = 200, description = "One row per seller country, highest revenue first (then by country); shares in percent, rounded half away from zero to two places.", content(
            (Vec<CountryContribution> = "application/json", example = json!([{"seller_country": "FR", "revenue": 120.50, "revenue_share": 60.25, "items": 3, "items_share": 50.00}])),
            (String = "text/csv", example = "seller_country,revenue,revenue_share,items,items_share\nFR,120.50,60.25,3,50.00\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn country_contribution(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (start_date, end_date, format) = range_params(q.as_deref(), &headers)?;
    let report = CountryReport::Contribution {
        start_date,
        end_date,
    };
    country_response(state, caller, headers, report, format).await
}

/// The two distinct countries trading the most with each other.
#[utoipa::path(
    get,
    path = "/reports/top-country-relationships",
    tag = "sales",
    params(crate::api::params::ReportParams),
    responses(
        (status = 200, description = "The pair (alphabetical) with the highest revenue of sales between them in either direction; a tie goes to the alphabetically first pair; empty when no sale crosses a border.", content(
            (Vec<CountryRelationship> = "application/json", example = json!([{"country_a": "DE", "country_b": "FR", "revenue": 980.10}])),
            (String = "text/csv", example = "country_a,country_b,revenue\nDE,FR,980.10\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn top_country_relationships(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (start_date, end_date, format) = range_params(q.as_deref(), &headers)?;
    let report = CountryReport::Relationships {
        start_date,
        end_date,
    };
    country_response(state, caller, headers, report, format).await
}

/// Revenue of the buyers who bought in both of two weeks.
#[utoipa::path(
    get,
    path = "/reports/repeat-buyer-revenue",
    tag = "sales",
    params(RepeatBuyerParams),
    responses(
        (status = 200, description = "One row: how many buyers bought in both weeks, their revenue in each, and the change in percent (null when week 1's is 0).", content(
            (Vec<RepeatBuyerRevenue> = "application/json", example = json!([{"week1_start": "2021-01-01", "week2_start": "2021-01-08", "repeat_buyers": 2, "week1_revenue": 100.00, "week2_revenue": 150.00, "change_pct": 50.00}])),
            (String = "text/csv", example = "week1_start,week2_start,repeat_buyers,week1_revenue,week2_revenue,change_pct\n2021-01-01,2021-01-08,2,100.00,150.00,50.00\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn repeat_buyer_revenue(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let values = ParamValues::parse(q.as_deref(), &["week1_start", "week2_start", "format"])?;
    let report = CountryReport::RepeatBuyers {
        week1_start: values.date("week1_start")?.unwrap_or(country::WEEK1_START),
        week2_start: values.date("week2_start")?.unwrap_or(country::WEEK2_START),
    };
    let format = values.format(&headers)?;
    country_response(state, caller, headers, report, format).await
}
