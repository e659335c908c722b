//! Answering a query: plan it over the dataset's current sources, run the
//! plan with a time limit (cancelled in the database past it), and decode
//! the rows exactly.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::types::ToSql;

use crate::domain::dataset::{Catalog, Dataset};
use crate::error::{ErrorKind, classify_pg};
use crate::pg::catalog;
use crate::pg::database::Database;
use crate::pg::numeric::ExactNumeric;
use crate::plan::{self, OutKind, Plan, PlanParam, Served, View};
use crate::serve::cache::{Cache, Sources};
use crate::serve::query::{QueryError, QueryRequest};
use crate::sql::table::KeyKind;
use crate::store;

/// An answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueryResponse {
    pub dataset: String,
    /// Which rollups or fact table answered which days.
    pub served_from: Vec<Served>,
    /// Rows as objects: `period` (with a granularity), dimensions, measures.
    /// Decimal measures are exact JSON numbers.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Row>,
}

/// One result row: typed values under the answer's column names (shared by
/// every row), serialized as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    names: Arc<[String]>,
    cells: Vec<Cell>,
}

impl Row {
    pub fn get(&self, name: &str) -> Option<&Cell> {
        let i = self.names.iter().position(|n| n == name)?;
        self.cells.get(i)
    }

    /// The text of `name`; empty when absent or not text.
    pub fn text(&self, name: &str) -> &str {
        match self.get(name) {
            Some(Cell::Text(t)) => t,
            _ => "",
        }
    }

    /// The number of `name`, exactly (an integer or a decimal); zero when
    /// absent or not a number.
    pub fn decimal(&self, name: &str) -> rust_decimal::Decimal {
        match self.get(name) {
            Some(Cell::Decimal(d)) => *d,
            Some(Cell::Int(i)) => rust_decimal::Decimal::from(*i),
            _ => rust_decimal::Decimal::ZERO,
        }
    }

    /// Moves the value of `name` out, leaving `Null`.
    pub fn take(&mut self, name: &str) -> Option<Cell> {
        let i = self.names.iter().position(|n| n == name)?;
        self.cells.get_mut(i).map(std::mem::take)
    }
}

/// A typed result value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Cell {
    #[default]
    Null,
    Int(i64),
    Decimal(rust_decimal::Decimal),
    Text(String),
    Date(NaiveDate),
    /// An instant, written in RFC 3339 in UTC (`2024-01-01T00:00:00Z`).
    Timestamp(DateTime<Utc>),
    Bool(bool),
}

impl Serialize for Cell {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Null => s.serialize_none(),
            Cell::Int(i) => s.serialize_i64(*i),
            // Every digit, as a JSON number: a float would round.
            Cell::Decimal(d) => serde_json::value::RawValue::from_string(d.to_string())
                .map_err(serde::ser::Error::custom)?
                .serialize(s),
            Cell::Text(t) => s.serialize_str(t),
            Cell::Date(d) => s.serialize_str(&d.to_string()),
            Cell::Timestamp(t) => {
                s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            Cell::Bool(b) => s.serialize_bool(*b),
        }
    }
}

impl Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.cells.len()))?;
        for (k, v) in self.names.iter().zip(&self.cells) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Cell {
    /// The value as a CSV field: numbers exact, instants in RFC 3339,
    /// NULL empty.
    pub fn csv(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Int(i) => i.to_string(),
            Cell::Decimal(d) => d.to_string(),
            Cell::Text(t) => t.clone(),
            Cell::Date(d) => d.to_string(),
            Cell::Timestamp(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            Cell::Bool(b) => b.to_string(),
        }
    }
}

/// An answer as CSV: `period` (with a granularity), the dimensions and the
/// measures, in the query's order, then a line a row.
pub fn to_csv(req: &QueryRequest, rows: &[Row]) -> Result<Vec<u8>, csv::Error> {
    let mut columns: Vec<&str> = Vec::new();
    if req.granularity.is_some() {
        columns.push("period");
    }
    columns.extend(req.dimensions.iter().map(String::as_str));
    columns.extend(req.measures.iter().map(String::as_str));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&columns)?;
    for row in rows {
        w.write_record(
            columns
                .iter()
                .map(|c| row.get(c).map_or(String::new(), Cell::csv))
                .map(|c| crate::serve::reports::spreadsheet_safe(&c).into_owned()),
        )?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// Runs the query as a caller who sees `view`; `force_fact` answers from
/// the fact table alone.
pub async fn execute(
    db: &Database,
    catalog: &Catalog,
    req: &QueryRequest,
    view: &View,
    force_fact: bool,
    cache: Option<&Cache>,
) -> Result<QueryResponse, QueryError> {
    // A request that is wrong is refused before it takes a connection.
    check(catalog, req, view)?;
    let client = db.client().await?;
    let plan = prepare(&client, catalog, req, view, force_fact, cache).await?;
    let started = std::time::Instant::now();
    let rows = run(&client, &plan, db.query_timeout()).await?;
    tracing::debug!(
        dataset = %req.dataset,
        rows = rows.len(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "query answered"
    );
    // Only possible without a limit: limits are at most MAX_LIMIT.
    if rows.len() as u64 > plan::MAX_ROWS {
        return Err(QueryError::invalid(
            "query",
            format!(
                "the answer has more than {} rows; narrow it with filters, a coarser granularity or a limit",
                plan::MAX_ROWS
            ),
        ));
    }
    Ok(QueryResponse {
        dataset: req.dataset.clone(),
        served_from: plan.served_from,
        rows,
    })
}

/// Runs a plan of rows (`plan::rows`) over a dataset's fact table, looked
/// up in the catalog; `None` when the dataset has no table yet.
pub async fn rows(
    db: &Database,
    catalog: &Catalog,
    dataset: &str,
    make: impl FnOnce(&Dataset, &str) -> Plan,
) -> Result<Vec<Row>, QueryError> {
    let dataset = catalog.get(dataset)?;
    let client = db.client().await?;
    let table = sources(&client, dataset).await?;
    let plan = make(dataset, &table.table);
    run(&client, &plan, db.query_timeout()).await
}

/// Checks a request against its dataset without the database: names,
/// shapes, filter values, the grain against the time column, and what the
/// caller may see.
pub fn check(catalog: &Catalog, req: &QueryRequest, view: &View) -> Result<(), QueryError> {
    checked(catalog, req, view).map(|_| ())
}

/// The dataset and the query as planned: checked, with the caller's row
/// conditions added.
fn checked<'c>(
    catalog: &'c Catalog,
    req: &QueryRequest,
    view: &View,
) -> Result<(&'c Dataset, plan::Query), QueryError> {
    let dataset = catalog.get(&req.dataset)?;
    let mut query = req.to_query()?;
    req.check_filter_types(dataset)?;
    view.restrict(dataset, &mut query)?;
    plan::check(dataset, &query)?;
    Ok((dataset, query))
}

/// Checks the query and plans it over the dataset's current sources (looked
/// up in the database unless `cache` knows them).
pub async fn prepare(
    client: &tokio_postgres::Client,
    catalog: &Catalog,
    req: &QueryRequest,
    view: &View,
    force_fact: bool,
    cache: Option<&Cache>,
) -> Result<Plan, QueryError> {
    let (dataset, query) = checked(catalog, req, view)?;
    if let Some(tz) = &req.time_zone {
        // The zone names the server knows, read once per process: the view
        // reads the zone files, tens of milliseconds a request otherwise.
        static ZONES: tokio::sync::OnceCell<std::collections::HashSet<String>> =
            tokio::sync::OnceCell::const_new();
        let zones = ZONES
            .get_or_try_init(|| async {
                let rows = client
                    .query("SELECT name FROM pg_timezone_names", &[])
                    .await?;
                Ok::<_, tokio_postgres::Error>(rows.iter().map(|r| r.get(0)).collect())
            })
            .await?;
        if !zones.contains(tz) {
            return Err(QueryError::invalid(
                "time_zone",
                format!("{tz:?} is not an IANA time zone name"),
            ));
        }
    }
    let sources = match cache.and_then(|c| c.sources(&dataset.name)) {
        Some(known) => known,
        None => {
            let generation = cache.map(Cache::generation);
            let known = sources(client, dataset).await?;
            if let (Some(c), Some(g)) = (cache, generation) {
                c.store_sources(&dataset.name, g, known.clone());
            }
            known
        }
    };
    let facts = plan::Facts {
        table_sql: &sources.table,
        time_key: sources.time_key,
        time_nullable: sources.time_nullable,
    };
    Ok(plan::plan(
        dataset,
        &facts,
        &sources.rollups,
        &query,
        force_fact,
    )?)
}

/// The fact table of a dataset (with its time column's type) and its
/// current rollups, from the catalog.
async fn sources(
    client: &tokio_postgres::Client,
    dataset: &Dataset,
) -> Result<Sources, QueryError> {
    let missing = || {
        QueryError::invalid(
            "dataset",
            format!(
                "{} has no table yet (create it and import data first)",
                dataset.name
            ),
        )
    };
    let found = catalog::find_table(client, &dataset.table)
        .await?
        .ok_or_else(missing)?;
    let table = catalog::load_table(client, &found.display()).await?;
    let time_key = match dataset.time_column.as_deref() {
        None => None,
        Some(time) => Some(
            table
                .column(time)
                .and_then(|c| KeyKind::of(&c.ty))
                .ok_or_else(|| {
                    QueryError::invalid(
                        "dataset",
                        format!(
                            "{}: table {} has no date or timestamp column {time:?}",
                            dataset.name,
                            found.display(),
                        ),
                    )
                })?,
        ),
    };
    let time_nullable = dataset
        .time_column
        .as_deref()
        .and_then(|t| table.column(t))
        .is_some_and(|c| !c.not_null);
    Ok(Sources {
        table: found.quoted(),
        time_key,
        time_nullable,
        rollups: store::rollups::current(client, dataset).await?,
    })
}

async fn run(
    client: &deadpool_postgres::Client,
    plan: &Plan,
    timeout: Option<std::time::Duration>,
) -> Result<Vec<Row>, QueryError> {
    let params: Vec<&(dyn ToSql + Sync)> = plan
        .params
        .iter()
        .map(|p| match p {
            PlanParam::Date(d) => d as &(dyn ToSql + Sync),
            PlanParam::Instant(t) => t,
            PlanParam::Text(t) => t,
            PlanParam::TextArray(v) => v,
        })
        .collect();
    // Preparing takes the tables' locks too: the limit covers both steps.
    let work = async {
        let statement = client.prepare_cached(&plan.sql).await?;
        client.query(&statement, &params).await
    };
    let rows = match timeout {
        None => work.await,
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(answer) => answer,
            Err(_) => {
                // Stop the server's work too, not only our wait for it.
                let _ = client
                    .cancel_token()
                    .cancel_query(tokio_postgres::NoTls)
                    .await;
                return Err(QueryError::Timeout(limit));
            }
        },
    };
    let rows = rows.map_err(|e| {
        // Values reach a plan only as filter values and range bounds: a
        // data exception is a value that does not fit its dimension's type.
        if classify_pg(&e) == ErrorKind::BadInput {
            QueryError::invalid(
                "filters",
                "a value does not match the type of its dimension",
            )
        } else {
            QueryError::from(e)
        }
    })?;
    let names: Arc<[String]> = plan.columns.iter().map(|c| c.name.clone()).collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut cells = Vec::with_capacity(plan.columns.len());
        for (i, c) in plan.columns.iter().enumerate() {
            // try_get: a value that does not decode is an error, not a panic.
            let v = match c.kind {
                OutKind::Int => row.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
                OutKind::Numeric => row
                    .try_get::<_, Option<ExactNumeric>>(i)
                    .map_err(|e| {
                        // Named by its column: a float dimension decodes here too.
                        QueryError::Inexact {
                            column: c.name.clone(),
                            reason: e.into_source().map_or_else(String::new, |s| s.to_string()),
                        }
                    })?
                    .map(|n| Cell::Decimal(n.0)),
                OutKind::Text => row.try_get::<_, Option<String>>(i)?.map(Cell::Text),
                OutKind::Date => row.try_get::<_, Option<NaiveDate>>(i)?.map(Cell::Date),
                OutKind::Timestamp => row
                    .try_get::<_, Option<DateTime<Utc>>>(i)?
                    .map(Cell::Timestamp),
                OutKind::Bool => row.try_get::<_, Option<bool>>(i)?.map(Cell::Bool),
            };
            cells.push(v.unwrap_or(Cell::Null));
        }
        out.push(Row {
            names: names.clone(),
            cells,
        });
    }
    Ok(out)
}
