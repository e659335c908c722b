//! The declared datasets as a client (the dashboard) needs them: measures,
//! dimensions, the grains the time column answers, and the days that hold
//! data, so a page opens on a range with something in it.
//!
//! Architecture Invariant: the days come from the planner (rollups first),
//! never from a scan of a fact table.

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::domain::dataset::{Catalog, Dataset};
use crate::domain::time::Grain;
use crate::pg::database::Database;
use crate::plan::View;
use crate::serve::cache::Cache;
use crate::serve::execute::{self, Cell};
use crate::serve::query::{QueryError, parse_request};

/// A measure: its name and aggregate.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeasureInfo {
    pub name: String,
    /// `sum`, `count`, `count_distinct`, `min`, `max` or `avg`.
    pub agg: String,
}

/// A dataset, described.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DatasetInfo {
    pub name: String,
    /// Null for a reference table (no time).
    pub time_column: Option<String>,
    /// `date` or `timestamp`; null for a reference table.
    pub time_kind: Option<String>,
    /// The granularities a query of it may ask, finest first.
    #[schema(value_type = Vec<String>)]
    pub grains: Vec<Grain>,
    pub dimensions: Vec<String>,
    pub measures: Vec<MeasureInfo>,
    /// The first and last days holding data (UTC days for instants); null
    /// when it holds none, or has no time.
    #[schema(value_type = Option<String>, format = Date)]
    pub first_day: Option<NaiveDate>,
    #[schema(value_type = Option<String>, format = Date)]
    pub last_day: Option<NaiveDate>,
}

fn describe(ds: &Dataset) -> DatasetInfo {
    let grains = ds
        .time_kind
        .map(|k| {
            Grain::ALL
                .into_iter()
                .filter(|g| *g >= k.finest_grain())
                .collect()
        })
        .unwrap_or_default();
    DatasetInfo {
        name: ds.name.clone(),
        time_column: ds.time_column.clone(),
        time_kind: ds.time_kind.map(|k| k.name().to_owned()),
        grains,
        dimensions: ds.dimensions.clone(),
        measures: ds
            .measures
            .iter()
            .map(|m| MeasureInfo {
                name: m.name.clone(),
                agg: m.agg.name().to_owned(),
            })
            .collect(),
        first_day: None,
        last_day: None,
    }
}

/// The day a period cell starts on.
fn day_of(cell: Option<&Cell>) -> Option<NaiveDate> {
    match cell? {
        Cell::Date(d) => Some(*d),
        Cell::Timestamp(t) => Some(t.date_naive()),
        _ => None,
    }
}

/// Where the edges of a dataset's data are looked for: as this caller.
struct Reader<'a> {
    db: &'a Database,
    catalog: &'a Catalog,
    cache: Option<&'a Cache>,
    view: &'a View,
}

impl Reader<'_> {
    /// The first period of `grain` holding data, or the last (`desc`),
    /// within `from..` when given.
    async fn edge(
        &self,
        ds: &Dataset,
        grain: Grain,
        from: Option<NaiveDate>,
        desc: bool,
    ) -> Result<Option<NaiveDate>, QueryError> {
        let Some(measure) = ds.measures.first() else {
            return Ok(None);
        };
        let query = serde_json::json!({
            "dataset": ds.name,
            "measures": [measure.name],
            "granularity": grain,
            "start_date": from,
            "order": [{"field": "period", "desc": desc}],
            "limit": 1,
        });
        let req = parse_request(query.to_string().as_bytes())?;
        let answer =
            execute::execute(self.db, self.catalog, &req, self.view, false, self.cache).await?;
        Ok(answer.rows.first().and_then(|r| day_of(r.get("period"))))
    }
}

/// Every dataset `view` sees, described (the days that hold data of its
/// rows included).
pub async fn datasets(
    db: &Database,
    catalog: &Catalog,
    cache: Option<&Cache>,
    view: &View,
) -> Result<Vec<DatasetInfo>, QueryError> {
    let reader = Reader {
        db,
        catalog,
        cache,
        view,
    };
    let mut out = Vec::with_capacity(catalog.datasets.len());
    for ds in catalog.datasets.iter().filter(|d| view.sees(d)) {
        let mut info = describe(ds);
        if ds.time_column.is_some() {
            info.first_day = reader.edge(ds, Grain::Day, None, false).await?;
            // The last month first: the last day is looked for in it alone.
            if let Some(month) = reader.edge(ds, Grain::Month, None, true).await? {
                let start = month.with_day(1).unwrap_or(month);
                info.last_day = reader.edge(ds, Grain::Day, Some(start), true).await?;
            }
        }
        out.push(info);
    }
    Ok(out)
}
