//! The query planner: a checked query over a dataset in, a logical plan out
//! (the plan as data), rendered to one SQL statement by `render`.
//!
//! A date range that does not align with a rollup's grain is split: whole
//! months from a month rollup, the edge days from a day rollup (or the fact
//! table, with partition pruning). Each piece is read as stored (a rollup
//! keyed exactly like the answer), as partial aggregates per period and
//! dimension, or (count distinct) as final aggregates in one pass over the
//! facts; pieces of disjoint periods are stacked, others regrouped, so the
//! answer is the same whichever sources served it.
//!
//! Architecture Invariant: the planner is pure (no I/O): dataset, rollup
//! catalogue and query in; pieces, SQL text, bound parameters and the list of
//! sources out. Identifiers come only from the dataset definition; values
//! are always parameters.

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::dataset::{Agg, Dataset, Measure};
use crate::domain::rollup::{PartialKind, RollupInfo};
use crate::domain::time::{Grain, TimeKind};
pub use crate::sql::table::KeyKind;

mod render;
pub mod rows;
mod view;

pub use view::View;

/// The most rows one answer may have; larger answers are refused, not cut.
pub const MAX_ROWS: u64 = 2_000_000;

/// A checked query (see `query` for the JSON form and its checks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub measures: Vec<String>,
    pub dimensions: Vec<String>,
    pub granularity: Option<Grain>,
    /// First day included.
    pub start: Option<NaiveDate>,
    /// Last day included.
    pub end: Option<NaiveDate>,
    pub filters: Vec<Filter>,
    pub order: Vec<Order>,
    pub limit: Option<u32>,
    pub gap_fill: bool,
    /// The IANA zone instants are bucketed in (dates of the range are
    /// midnights there); `None` is UTC. Calendar dates have no zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// First instant included (instead of `start`, for instants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Last instant included (instead of `end`, for instants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
}

impl Query {
    /// The zone instants are bucketed in, when it is not UTC.
    pub fn zone(&self) -> Option<&str> {
        self.time_zone.as_deref().filter(|z| {
            !matches!(
                *z,
                "UTC" | "Etc/UTC" | "Etc/Universal" | "Universal" | "Zulu"
            )
        })
    }
}

/// A condition on a dimension; values are text, cast to the column's type.
/// Written `{dimension, equals}`, `{dimension, in: [...]}` or `{dimension, min?, max?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawFilter", into = "RawFilter")]
pub struct Filter {
    pub dimension: String,
    pub op: FilterOp,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    /// The dimension to filter on.
    #[schema(example = "region")]
    pub dimension: String,
    /// Exactly this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "North")]
    pub equals: Option<serde_json::Value>,
    /// Any of these values.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub in_: Option<Vec<serde_json::Value>>,
    /// At least this value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub min: Option<serde_json::Value>,
    /// At most this value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub max: Option<serde_json::Value>,
}

impl RawFilter {
    /// Every value it names.
    pub fn values(&self) -> impl Iterator<Item = &serde_json::Value> {
        self.equals
            .iter()
            .chain(self.in_.iter().flatten())
            .chain(&self.min)
            .chain(&self.max)
    }
}

/// A filter value as text: strings as they are, numbers and booleans printed.
fn value_text(v: &serde_json::Value, dimension: &str) -> Result<String, String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!(
            "values of {dimension:?} must be strings, numbers or booleans"
        )),
    }
}

impl TryFrom<RawFilter> for Filter {
    type Error = String;

    fn try_from(r: RawFilter) -> Result<Filter, String> {
        Filter::parse(r).map_err(|reason| format!("filters: {reason}"))
    }
}

impl Filter {
    /// The filter a raw one describes; the error is the reason alone.
    pub fn parse(r: RawFilter) -> Result<Filter, String> {
        let d = r.dimension.clone();
        let op = match (r.equals, r.in_, r.min, r.max) {
            (Some(v), None, None, None) => FilterOp::Equals(value_text(&v, &d)?),
            (None, Some(vs), None, None) => {
                if vs.is_empty() || vs.len() > 10_000 {
                    return Err(format!("`in` of {d:?} needs 1 to 10000 values"));
                }
                FilterOp::In(
                    vs.iter()
                        .map(|v| value_text(v, &d))
                        .collect::<Result<_, _>>()?,
                )
            }
            (None, None, min, max) if min.is_some() || max.is_some() => FilterOp::Range {
                min: min.map(|v| value_text(&v, &d)).transpose()?,
                max: max.map(|v| value_text(&v, &d)).transpose()?,
            },
            _ => {
                return Err(format!(
                    "{d:?} needs exactly one of `equals`, `in`, or `min`/`max`"
                ));
            }
        };
        Ok(Filter {
            dimension: r.dimension,
            op,
        })
    }
}

impl From<Filter> for RawFilter {
    fn from(f: Filter) -> RawFilter {
        let s = serde_json::Value::String;
        let mut r = RawFilter {
            dimension: f.dimension,
            equals: None,
            in_: None,
            min: None,
            max: None,
        };
        match f.op {
            FilterOp::Equals(v) => r.equals = Some(s(v)),
            FilterOp::In(vs) => r.in_ = Some(vs.into_iter().map(s).collect()),
            FilterOp::Range { min, max } => {
                r.min = min.map(s);
                r.max = max.map(s);
            }
        }
        r
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterOp {
    Equals(String),
    In(Vec<String>),
    Range {
        min: Option<String>,
        max: Option<String>,
    },
}

/// A sort key: a measure, a dimension or `period`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub field: String,
    pub desc: bool,
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanParam {
    Date(NaiveDate),
    Instant(DateTime<Utc>),
    Text(String),
    TextArray(Vec<String>),
}

/// Which source answered which days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Served {
    /// `rollup` or `fact`.
    pub source: &'static str,
    /// The rollup's name or the fact table's.
    pub name: String,
    /// First day served (absent: from the beginning).
    pub from: Option<NaiveDate>,
    /// Last day served (absent: to the end).
    pub to: Option<NaiveDate>,
}

/// How a result column is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    Int,
    Numeric,
    Text,
    Date,
    /// An instant (`timestamptz`).
    Timestamp,
    Bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputColumn {
    pub name: String,
    pub kind: OutKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub sql: String,
    pub params: Vec<PlanParam>,
    pub served_from: Vec<Served>,
    /// Result columns in order: `period` (when a granularity is asked), dimensions, measures.
    pub columns: Vec<OutputColumn>,
    /// The pieces the SQL was rendered from, and how they combine.
    pub logical: LogicalPlan,
}

/// What `clue query --explain` prints: sources (and how each is read), SQL,
/// parameters.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "served from:")?;
        for (s, piece) in self.served_from.iter().zip(&self.logical.pieces) {
            let day = |d: Option<NaiveDate>| d.map_or("..".to_owned(), |d| d.to_string());
            let read = match piece.read {
                Read::AsStored => "read as stored",
                Read::Partials => "partial aggregates",
                Read::Final => "final aggregates",
            };
            writeln!(
                f,
                "  {} {} {} to {}, {read}",
                s.source,
                s.name,
                day(s.from),
                day(s.to)
            )?;
        }
        if self.logical.pieces.len() > 1 {
            let how = match self.logical.combine {
                Combine::Stack => "stacked (disjoint periods)",
                Combine::Regroup => "regrouped by period and dimensions",
            };
            writeln!(f, "combined: {how}")?;
        }
        writeln!(f, "sql:\n  {}", self.sql)?;
        if !self.params.is_empty() {
            writeln!(f, "parameters:")?;
        }
        for (i, p) in self.params.iter().enumerate() {
            match p {
                PlanParam::Date(d) => writeln!(f, "  ${} = {d}", i + 1)?,
                PlanParam::Instant(t) => writeln!(f, "  ${} = {}", i + 1, t.to_rfc3339())?,
                PlanParam::Text(t) => writeln!(f, "  ${} = {t:?}", i + 1)?,
                PlanParam::TextArray(v) => writeln!(f, "  ${} = {v:?}", i + 1)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("measures: {0:?} is not a measure of dataset {1}")]
    UnknownMeasure(String, String),
    #[error("dimensions: {0:?} is not a dimension of dataset {1}")]
    UnknownDimension(String, String),
    #[error("filters: {0:?} is not a dimension of dataset {1}")]
    UnknownFilter(String, String),
    #[error("order: {0:?} is not a measure, dimension or period of this query")]
    UnknownOrder(String),
    #[error("measures: at least one measure is needed")]
    NoMeasures,
    #[error("gap_fill: needs a granularity, a start and an end")]
    GapFillNeedsRange,
    #[error(
        "granularity: every {grain} of this range is a row when gaps are filled, about {periods} of them, more than the {MAX_ROWS} an answer may have; ask for a coarser granularity or a shorter range"
    )]
    TooManyPeriods { grain: Grain, periods: i64 },
    #[error("from: {0}")]
    Instants(&'static str),
    #[error("{0}: is given more than once")]
    Repeated(String),
    #[error(
        "granularity: {grain} is finer than the time column {column} (a {kind}) holds; ask for {finest} or coarser"
    )]
    GrainTooFine {
        grain: Grain,
        column: String,
        kind: &'static str,
        finest: Grain,
    },
    #[error("{field}: dataset {dataset} has no time column (a reference table)")]
    NoTimeColumn {
        field: &'static str,
        dataset: String,
    },
    #[error("dataset: {0} is not a dataset this key may read")]
    Hidden(String),
}

impl PlanError {
    /// The query field at fault.
    pub fn field(&self) -> &str {
        match self {
            PlanError::UnknownMeasure(..) | PlanError::NoMeasures => "measures",
            PlanError::UnknownDimension(..) => "dimensions",
            PlanError::UnknownFilter(..) => "filters",
            PlanError::UnknownOrder(_) => "order",
            PlanError::GapFillNeedsRange => "gap_fill",
            PlanError::TooManyPeriods { .. } => "granularity",
            PlanError::Instants(_) => "from",
            PlanError::Repeated(f) => f.split('.').next().unwrap_or(f),
            PlanError::GrainTooFine { .. } => "granularity",
            PlanError::NoTimeColumn { field, .. } => field,
            PlanError::Hidden(_) => "dataset",
        }
    }

    /// The message without its leading field name.
    pub fn reason(&self) -> String {
        let text = self.to_string();
        match self {
            // `measures.revenue: is given more than once` names the item too.
            PlanError::Repeated(_) => text,
            _ => text
                .strip_prefix(self.field())
                .and_then(|t| t.strip_prefix(": "))
                .map_or(text.clone(), str::to_owned),
        }
    }
}

/// A piece of the range and where it is answered from.
#[derive(Debug, Clone)]
struct Segment<'a> {
    source: Source<'a>,
    /// Half-open [from, to); `None` is unbounded.
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Fact,
    Rollup(&'a RollupInfo),
}

/// Checks the query's names against the dataset.
pub fn check(dataset: &Dataset, q: &Query) -> Result<(), PlanError> {
    if q.measures.is_empty() {
        return Err(PlanError::NoMeasures);
    }
    for (i, m) in q.measures.iter().enumerate() {
        if dataset.measure(m).is_none() {
            return Err(PlanError::UnknownMeasure(m.clone(), dataset.name.clone()));
        }
        if q.measures[..i].contains(m) {
            return Err(PlanError::Repeated(format!("measures.{m}")));
        }
    }
    for (i, d) in q.dimensions.iter().enumerate() {
        if !dataset.dimensions.contains(d) {
            return Err(PlanError::UnknownDimension(d.clone(), dataset.name.clone()));
        }
        if q.dimensions[..i].contains(d) {
            return Err(PlanError::Repeated(format!("dimensions.{d}")));
        }
    }
    for f in &q.filters {
        if !dataset.dimensions.contains(&f.dimension) {
            return Err(PlanError::UnknownFilter(
                f.dimension.clone(),
                dataset.name.clone(),
            ));
        }
    }
    for o in &q.order {
        let known = q.measures.contains(&o.field)
            || q.dimensions.contains(&o.field)
            || (o.field == "period" && q.granularity.is_some());
        if !known {
            return Err(PlanError::UnknownOrder(o.field.clone()));
        }
    }
    let Some(time_kind) = dataset.time_kind else {
        let asked = [
            ("granularity", q.granularity.is_some()),
            ("start_date", q.start.is_some()),
            ("end_date", q.end.is_some()),
            ("from", q.from.is_some() || q.to.is_some()),
            ("tz", q.zone().is_some()),
        ];
        return match asked.iter().find(|(_, given)| *given) {
            Some((field, _)) => Err(PlanError::NoTimeColumn {
                field,
                dataset: dataset.name.clone(),
            }),
            None => Ok(()),
        };
    };
    let instants = q.from.is_some() || q.to.is_some();
    if instants && time_kind != TimeKind::Instant {
        return Err(PlanError::Instants(
            "instants bound timestamp datasets only; give start_date and end_date",
        ));
    }
    if instants && (q.start.is_some() || q.end.is_some()) {
        return Err(PlanError::Instants(
            "give either dates (start_date, end_date) or instants (from, to), not both",
        ));
    }
    let bounded = (q.start.is_some() && q.end.is_some()) || (q.from.is_some() && q.to.is_some());
    if q.gap_fill && (q.granularity.is_none() || !bounded) {
        return Err(PlanError::GapFillNeedsRange);
    }
    // Every period of a gap-filled range is a row: refuse before running a
    // series that could not be answered (hours over millennia).
    if let (true, Some(grain)) = (q.gap_fill, q.granularity) {
        let hours = match (q.start, q.end, q.from, q.to) {
            (Some(a), Some(b), _, _) => (b - a).num_days().saturating_add(1).saturating_mul(24),
            (_, _, Some(a), Some(b)) => (b - a).num_hours().saturating_add(1),
            _ => 0,
        };
        let per_period: i64 = match grain {
            Grain::Hour => 1,
            Grain::Day => 24,
            Grain::Week => 24 * 7,
            Grain::Month => 24 * 28,
            Grain::Quarter => 24 * 89,
            Grain::Year => 24 * 365,
        };
        let periods = hours.max(0) / per_period;
        if periods as u64 > MAX_ROWS {
            return Err(PlanError::TooManyPeriods { grain, periods });
        }
    }
    if let Some(g) = q.granularity
        && !g.fits(time_kind)
    {
        return Err(PlanError::GrainTooFine {
            grain: g,
            column: dataset.time_column.clone().unwrap_or_default(),
            kind: time_kind.name(),
            finest: time_kind.finest_grain(),
        });
    }
    Ok(())
}

/// The partial columns a measure needs: (kind, source column).
fn needs(m: &Measure) -> Vec<(PartialKind, Option<&str>)> {
    let col = m.column.as_deref();
    match m.agg {
        Agg::Sum => vec![(PartialKind::Sum, col)],
        Agg::Count => vec![(PartialKind::Count, col)],
        Agg::Min => vec![(PartialKind::Min, col)],
        Agg::Max => vec![(PartialKind::Max, col)],
        Agg::Avg => vec![(PartialKind::Sum, col), (PartialKind::Count, col)],
        Agg::CountDistinct => vec![],
    }
}

/// Whether zone `name`'s offset from UTC is a whole number of hours on
/// every day of `[from, to)` (both bounded, at most a century).
fn whole_hours(name: &str, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
    use chrono::{Offset, TimeZone};
    let (Some(from), Some(to), Ok(zone)) = (from, to, name.parse::<chrono_tz::Tz>()) else {
        return false;
    };
    if (to - from).num_days() > 36_600 {
        return false;
    }
    // Offsets change on DST days, by whole hours in such zones; a sample
    // at midnight and noon of each day (and the day after) sees every offset.
    let mut day = from;
    while day <= to {
        for hour in [0, 12] {
            let t = day.and_hms_opt(hour, 0, 0).expect("a time");
            let offset = zone.offset_from_utc_datetime(&t).fix().local_minus_utc();
            if offset % 3600 != 0 {
                return false;
            }
        }
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    true
}

/// Whether rollup `r` can answer the query's aggregation (any range aligned to its grain).
fn covers(r: &RollupInfo, dataset: &Dataset, q: &Query) -> bool {
    let dims_ok = q
        .dimensions
        .iter()
        .chain(q.filters.iter().map(|f| &f.dimension))
        .all(|d| r.dimensions.contains(d));
    let grain_ok = q.granularity.is_none_or(|g| g.is_coarsening_of(r.grain));
    let measures_ok = q.measures.iter().all(|name| {
        let Some(m) = dataset.measure(name) else {
            return false;
        };
        m.agg != Agg::CountDistinct
            && needs(m).iter().all(|(kind, col)| match col {
                // count(*) is the rollup's row_count.
                None => true,
                Some(c) => r.has(*kind, c),
            })
    });
    dims_ok && grain_ok && measures_ok
}

/// Splits the query range over the best sources.
fn segments<'a>(
    dataset: &Dataset,
    rollups: &'a [RollupInfo],
    q: &Query,
    force_fact: bool,
) -> Vec<Segment<'a>> {
    let from = q.start;
    // Half-open: the day after the end (none after the calendar's last day).
    let to = q.end.and_then(|e| e.checked_add_days(Days::new(1)));
    let usable: Vec<&RollupInfo> = if force_fact {
        Vec::new()
    } else {
        rollups
            .iter()
            .filter(|r| r.dataset == dataset.name && covers(r, dataset, q))
            .collect()
    };
    // Rollups keep UTC buckets. In another zone, a local bucket is a union
    // of UTC hours while the zone's offset is a whole number of hours: the
    // smallest hour rollup answers then; other offsets (Kolkata, Kathmandu)
    // and bounds inside hours read the facts, exact whatever the zone.
    let instant_bounds = q.from.is_some() || q.to.is_some();
    if dataset.time_kind == Some(TimeKind::Instant) && (q.zone().is_some() || instant_bounds) {
        let hourly = q
            .zone()
            .filter(|z| !instant_bounds && whole_hours(z, from, to))
            .and_then(|_| {
                usable
                    .iter()
                    .filter(|r| r.grain == Grain::Hour)
                    .min_by_key(|r| (r.rows, r.dimensions.len()))
            });
        return vec![Segment {
            source: hourly.map_or(Source::Fact, |r| Source::Rollup(r)),
            from,
            to,
        }];
    }
    let smallest = |grain: Grain| {
        usable
            .iter()
            .filter(|r| r.grain == grain)
            .min_by_key(|r| (r.rows, r.dimensions.len()))
            .copied()
    };
    // Edge days come from the smallest rollup whose buckets divide days.
    let day = [smallest(Grain::Day), smallest(Grain::Hour)]
        .into_iter()
        .flatten()
        .min_by_key(|r| (r.rows, r.dimensions.len()))
        .map_or(Source::Fact, Source::Rollup);
    if let Some(month) = smallest(Grain::Month) {
        // Whole months inside the range; a start past the calendar's last
        // month has none.
        let inner_from = match from {
            Some(f) => match Grain::Month.ceil(f) {
                Some(c) => Some(c),
                None => {
                    return vec![Segment {
                        source: day,
                        from,
                        to,
                    }];
                }
            },
            None => None,
        };
        let inner_to = to.map(|t| Grain::Month.floor(t));
        let has_inner = match (inner_from, inner_to) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        };
        if has_inner {
            let mut out = Vec::new();
            if let (Some(f), Some(i)) = (from, inner_from)
                && f < i
            {
                out.push(Segment {
                    source: day,
                    from: Some(f),
                    to: Some(i),
                });
            }
            out.push(Segment {
                source: Source::Rollup(month),
                from: inner_from,
                to: inner_to,
            });
            if let (Some(i), Some(t)) = (inner_to, to)
                && i < t
            {
                out.push(Segment {
                    source: day,
                    from: Some(i),
                    to: Some(t),
                });
            }
            return out;
        }
    }
    vec![Segment {
        source: day,
        from,
        to,
    }]
}

/// The fact table as the renderer needs it.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Its name, quoted.
    pub table_sql: &'a str,
    /// The type of its time column (a `timestamp` is read as UTC); `None`
    /// for a reference table.
    pub time_key: Option<KeyKind>,
    /// Whether the time column may be NULL: such rows are in no period and
    /// no rollup, so fact reads leave them out too.
    pub time_nullable: bool,
}

/// Where a piece of the answer is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum PieceSource {
    /// The fact table, with partition pruning on the time column.
    Fact,
    Rollup(RollupInfo),
}

/// How a piece is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The source holds one row per output key already (a rollup at the
    /// asked grain over exactly the asked dimensions): read, not aggregated.
    AsStored,
    /// Partial aggregates per period and dimensions, combined afterwards.
    Partials,
    /// Final aggregates in one pass over the facts (count distinct cannot
    /// be combined from pieces): the only piece.
    Final,
}

/// A piece of the answer: a source over a half-open range of days.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub source: PieceSource,
    /// First day (inclusive); `None` is unbounded.
    pub from: Option<NaiveDate>,
    /// Day after the last (exclusive); `None` is unbounded.
    pub to: Option<NaiveDate>,
    pub read: Read,
}

/// How the pieces' rows become the answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// One piece, or pieces holding disjoint periods: stacked as they are.
    Stack,
    /// Pieces share periods (a boundary inside a bucket): their partials
    /// are regrouped by period and dimensions.
    Regroup,
}

/// The plan as data: which pieces answer which days, how each is read and
/// how they combine. [`render`] writes its SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct LogicalPlan {
    pub pieces: Vec<Piece>,
    pub combine: Combine,
}

/// Chooses the pieces of a checked query. `force_fact` ignores every rollup.
pub fn logical(
    dataset: &Dataset,
    rollups: &[RollupInfo],
    q: &Query,
    force_fact: bool,
) -> LogicalPlan {
    let distinct = q
        .measures
        .iter()
        .filter_map(|m| dataset.measure(m))
        .any(|m| m.agg == Agg::CountDistinct);
    let segs = segments(dataset, rollups, q, force_fact || distinct);
    let piece = |seg: &Segment<'_>, read| Piece {
        source: match seg.source {
            Source::Fact => PieceSource::Fact,
            Source::Rollup(r) => PieceSource::Rollup(r.clone()),
        },
        from: seg.from,
        to: seg.to,
        read,
    };
    if distinct {
        return LogicalPlan {
            pieces: vec![piece(&segs[0], Read::Final)],
            combine: Combine::Stack,
        };
    }
    // Pieces cover disjoint periods when every boundary between them
    // starts a bucket: the combining query then only has to stack them.
    let disjoint = match q.granularity {
        Some(g) => segs
            .iter()
            .skip(1)
            .all(|s| s.from.is_some_and(|f| g.starts_bucket(f))),
        None => false,
    };
    let pieces = segs
        .iter()
        .map(|seg| {
            // In a zone, a rollup's UTC buckets are regrouped into local
            // ones (a DST change merges two UTC hours into one local hour).
            let as_stored = match seg.source {
                Source::Rollup(r)
                    if q.zone().is_none() || dataset.time_kind == Some(TimeKind::Date) =>
                {
                    q.granularity == Some(r.grain)
                        && r.dimensions.len() == q.dimensions.len()
                        && q.dimensions.iter().all(|d| r.dimensions.contains(d))
                }
                Source::Rollup(_) | Source::Fact => false,
            };
            piece(
                seg,
                if as_stored {
                    Read::AsStored
                } else {
                    Read::Partials
                },
            )
        })
        .collect::<Vec<_>>();
    LogicalPlan {
        combine: if pieces.len() > 1 && !disjoint {
            Combine::Regroup
        } else {
            Combine::Stack
        },
        pieces,
    }
}

/// Plans `q` over `dataset`: checks it, chooses its pieces and renders
/// them. `force_fact` ignores every rollup (the reference answer the
/// property tests compare with).
pub fn plan(
    dataset: &Dataset,
    facts: &Facts<'_>,
    rollups: &[RollupInfo],
    q: &Query,
    force_fact: bool,
) -> Result<Plan, PlanError> {
    check(dataset, q)?;
    let logical = logical(dataset, rollups, q, force_fact);
    Ok(render::render(dataset, facts, q, &logical))
}

#[cfg(test)]
mod tests;
