//! The query planner: a checked query over a dataset in, one SQL statement
//! out, answering from the smallest rollups that cover it and from the fact
//! table only for what no rollup covers.
//!
//! A date range that does not align with a rollup's grain is split: whole
//! months from a month rollup, the edge days from a day rollup (or the fact
//! table, with partition pruning). Every piece yields partial aggregates per
//! period and dimension; one outer GROUP BY combines them, so the answer is
//! the same whichever sources served it.
//!
//! Architecture Invariant: the planner is pure (no I/O): dataset, rollup
//! catalogue and query in; SQL text, bound parameters and the list of
//! sources out. Identifiers come only from the dataset definition; values
//! are always parameters.

use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::domain::dataset::{Agg, Dataset, Measure};
use crate::domain::rollup::{Partial, PartialKind, RollupInfo};
use crate::domain::time::Grain;
use crate::domain::value::ValueType;
use crate::sql::{bucket_sql, quote_ident, rollup_table};

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
}

/// What `clue query --explain` prints: sources, SQL, parameters.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "served from:")?;
        for s in &self.served_from {
            let day = |d: Option<NaiveDate>| d.map_or("..".to_owned(), |d| d.to_string());
            writeln!(
                f,
                "  {} {} {} to {}",
                s.source,
                s.name,
                day(s.from),
                day(s.to)
            )?;
        }
        writeln!(f, "sql:\n  {}", self.sql)?;
        if !self.params.is_empty() {
            writeln!(f, "parameters:")?;
        }
        for (i, p) in self.params.iter().enumerate() {
            match p {
                PlanParam::Date(d) => writeln!(f, "  ${} = {d}", i + 1)?,
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
            PlanError::Repeated(f) => f.split('.').next().unwrap_or(f),
            PlanError::GrainTooFine { .. } => "granularity",
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
    if q.gap_fill && (q.granularity.is_none() || q.start.is_none() || q.end.is_none()) {
        return Err(PlanError::GapFillNeedsRange);
    }
    if let Some(g) = q.granularity
        && !g.fits(dataset.time_kind)
    {
        return Err(PlanError::GrainTooFine {
            grain: g,
            column: dataset.time_column.clone(),
            kind: dataset.time_kind.name(),
            finest: dataset.time_kind.finest_grain(),
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
    let smallest = |grain: Grain| {
        usable
            .iter()
            .filter(|r| r.grain == grain)
            .min_by_key(|r| (r.rows, r.dimensions.len()))
            .copied()
    };
    let day = smallest(Grain::Day).map_or(Source::Fact, Source::Rollup);
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

fn cast_of(ty: ValueType) -> &'static str {
    match ty {
        ValueType::Int => "int8",
        ValueType::Float => "numeric",
        ValueType::Str => "text",
        ValueType::Date => "date",
        ValueType::Bool => "bool",
    }
}

fn out_kind(ty: ValueType) -> OutKind {
    match ty {
        ValueType::Int => OutKind::Int,
        ValueType::Float => OutKind::Numeric,
        ValueType::Str => OutKind::Text,
        ValueType::Date => OutKind::Date,
        ValueType::Bool => OutKind::Bool,
    }
}

/// `SELECT cols FROM from [WHERE ...] [GROUP BY 1..=keys]`: pieces and the
/// combining query group by period and the dimensions, the first columns;
/// with `keys == 0` nothing is grouped.
fn grouped(cols: &[String], from: &str, conditions: &[String], keys: usize) -> String {
    let mut sql = format!("SELECT {} FROM {from}", cols.join(", "));
    if !conditions.is_empty() {
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    if keys > 0 {
        let group: Vec<String> = (1..=keys).map(|i| i.to_string()).collect();
        sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
    }
    sql
}

struct Params(Vec<PlanParam>);

impl Params {
    fn push(&mut self, p: PlanParam) -> String {
        self.0.push(p);
        format!("${}", self.0.len())
    }

    /// The conditions keeping `time_expr` within the segment's [from, to).
    fn range(&mut self, time_expr: &str, seg: &Segment<'_>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = seg.from {
            out.push(format!(
                "{time_expr} >= {}::date",
                self.push(PlanParam::Date(f))
            ));
        }
        if let Some(t) = seg.to {
            out.push(format!(
                "{time_expr} < {}::date",
                self.push(PlanParam::Date(t))
            ));
        }
        out
    }
}

/// Plans `q` over `dataset`. `force_fact` ignores every rollup (the
/// reference answer the property tests compare with).
pub fn plan(
    dataset: &Dataset,
    table_sql: &str,
    rollups: &[RollupInfo],
    q: &Query,
    force_fact: bool,
) -> Result<Plan, PlanError> {
    check(dataset, q)?;
    let mut params = Params(Vec::new());
    let measures: Vec<&Measure> = q
        .measures
        .iter()
        .filter_map(|m| dataset.measure(m))
        .collect();
    let distinct = measures.iter().any(|m| m.agg == Agg::CountDistinct);
    let segs = segments(dataset, rollups, q, force_fact || distinct);
    let time = quote_ident(&dataset.time_column);
    let dims: Vec<String> = q.dimensions.iter().map(|d| quote_ident(d)).collect();

    // Filters, shared by every piece (rollups keep the same column names).
    let mut filter_sql = Vec::new();
    for f in &q.filters {
        let col = quote_ident(&f.dimension);
        let cast = cast_of(dataset.column_type(&f.dimension).unwrap_or(ValueType::Str));
        match &f.op {
            FilterOp::Equals(v) => filter_sql.push(format!(
                "{col} = {}::text::{cast}",
                params.push(PlanParam::Text(v.clone()))
            )),
            FilterOp::In(vs) => filter_sql.push(format!(
                "{col} = ANY({}::text[]::{cast}[])",
                params.push(PlanParam::TextArray(vs.clone()))
            )),
            FilterOp::Range { min, max } => {
                if let Some(v) = min {
                    filter_sql.push(format!(
                        "{col} >= {}::text::{cast}",
                        params.push(PlanParam::Text(v.clone()))
                    ));
                }
                if let Some(v) = max {
                    filter_sql.push(format!(
                        "{col} <= {}::text::{cast}",
                        params.push(PlanParam::Text(v.clone()))
                    ));
                }
            }
        }
    }

    let period_of = |expr: &str| match q.granularity {
        Some(g) => bucket_sql(expr, g),
        None => "NULL::date".to_owned(),
    };

    let mut served_from = Vec::new();
    let body = if distinct {
        // count distinct cannot be combined from pieces: one pass over the facts.
        let seg = &segs[0];
        let mut wh = filter_sql.clone();
        wh.extend(params.range(&time, seg));
        served_from.push(Served {
            source: "fact",
            name: dataset.table.clone(),
            from: seg.from,
            to: seg.to.map(|t| t - Days::new(1)),
        });
        let mut cols = vec![format!("{} AS period", period_of(&time))];
        cols.extend(dims.iter().cloned());
        for (i, m) in measures.iter().enumerate() {
            let col = m
                .column
                .as_deref()
                .map(quote_ident)
                .unwrap_or_else(|| "*".into());
            cols.push(match m.agg {
                Agg::Sum => format!("sum({col}) AS m{i}"),
                Agg::Count => format!("count({col}) AS m{i}"),
                Agg::Min => format!("min({col}) AS m{i}"),
                Agg::Max => format!("max({col}) AS m{i}"),
                Agg::Avg => format!("avg({col}) AS m{i}"),
                Agg::CountDistinct => format!("count(DISTINCT {col}) AS m{i}"),
            });
        }
        grouped(&cols, table_sql, &wh, dims.len() + 1)
    } else {
        // Pieces cover disjoint periods when every boundary between them
        // starts a bucket: the combining query then only has to stack them.
        let disjoint = match q.granularity {
            Some(g) => segs
                .iter()
                .skip(1)
                .all(|s| s.from.is_some_and(|f| g.starts_bucket(f))),
            None => false,
        };
        let combine = segs.len() > 1 && !disjoint;
        let mut pieces = Vec::new();
        for seg in &segs {
            // A rollup at the asked grain over exactly the asked dimensions
            // already holds one row per output key: read, do not aggregate.
            let direct = match seg.source {
                Source::Rollup(r) => {
                    q.granularity == Some(r.grain)
                        && r.dimensions.len() == q.dimensions.len()
                        && q.dimensions.iter().all(|d| r.dimensions.contains(d))
                }
                Source::Fact => false,
            };
            let (from_sql, time_expr, name, kind) = match seg.source {
                Source::Fact => (
                    table_sql.to_owned(),
                    time.clone(),
                    dataset.table.clone(),
                    "fact",
                ),
                Source::Rollup(r) => (
                    rollup_table(&r.name),
                    "bucket".to_owned(),
                    r.name.clone(),
                    "rollup",
                ),
            };
            served_from.push(Served {
                source: kind,
                name,
                from: seg.from,
                to: seg.to.map(|t| t - Days::new(1)),
            });
            let mut wh = filter_sql.clone();
            wh.extend(params.range(&time_expr, seg));
            // Bare `bucket` keeps the rollup's key order usable for ORDER BY.
            let period = if direct {
                "bucket AS period".to_owned()
            } else {
                format!("{} AS period", period_of(&time_expr))
            };
            let mut cols = vec![period];
            cols.extend(dims.iter().cloned());
            for (i, m) in measures.iter().enumerate() {
                for (j, (kind, col)) in needs(m).iter().enumerate() {
                    let alias = format!("p{i}_{j}");
                    cols.push(match (seg.source, col) {
                        (Source::Fact, None) => format!("count(*)::int8 AS {alias}"),
                        (Source::Fact, Some(c)) => {
                            let c = quote_ident(c);
                            match kind {
                                PartialKind::Sum => format!("sum({c})::numeric AS {alias}"),
                                PartialKind::Count => format!("count({c})::int8 AS {alias}"),
                                PartialKind::Min => format!("min({c}) AS {alias}"),
                                PartialKind::Max => format!("max({c}) AS {alias}"),
                            }
                        }
                        (Source::Rollup(_), _) => {
                            let (pc, kind) = match col {
                                None => ("row_count".to_owned(), PartialKind::Count),
                                Some(c) => (
                                    quote_ident(
                                        &Partial {
                                            kind: *kind,
                                            source: (*c).to_owned(),
                                        }
                                        .column(),
                                    ),
                                    *kind,
                                ),
                            };
                            // Read as stored when `direct`, else combined
                            // (counts add up, extremes are extremes).
                            let combined = match kind {
                                _ if direct => pc,
                                PartialKind::Sum | PartialKind::Count => format!("sum({pc})"),
                                PartialKind::Min => format!("min({pc})"),
                                PartialKind::Max => format!("max({pc})"),
                            };
                            match kind {
                                PartialKind::Sum => format!("{combined}::numeric AS {alias}"),
                                PartialKind::Count => format!("{combined}::int8 AS {alias}"),
                                PartialKind::Min | PartialKind::Max => {
                                    format!("{combined} AS {alias}")
                                }
                            }
                        }
                    });
                }
            }
            pieces.push(if direct {
                grouped(&cols, &from_sql, &wh, 0)
            } else {
                grouped(&cols, &from_sql, &wh, dims.len() + 1)
            });
        }
        let mut cols = vec!["period".to_owned()];
        cols.extend(dims.iter().cloned());
        for (i, m) in measures.iter().enumerate() {
            cols.push(match (m.agg, combine) {
                (Agg::Sum, true) => format!("sum(p{i}_0) AS m{i}"),
                (Agg::Count, true) => format!("sum(p{i}_0)::int8 AS m{i}"),
                (Agg::Min, true) => format!("min(p{i}_0) AS m{i}"),
                (Agg::Max, true) => format!("max(p{i}_0) AS m{i}"),
                (Agg::Avg, true) => format!("sum(p{i}_0) / nullif(sum(p{i}_1), 0) AS m{i}"),
                (Agg::Avg, false) => format!("p{i}_0 / nullif(p{i}_1, 0) AS m{i}"),
                (_, false) => format!("p{i}_0 AS m{i}"),
                (Agg::CountDistinct, true) => unreachable!("planned on the facts"),
            });
        }
        let union = format!("({}) pieces", pieces.join(" UNION ALL "));
        grouped(&cols, &union, &[], if combine { dims.len() + 1 } else { 0 })
    };

    // Final shape: typed columns, gap fill, order, limit.
    let mut columns = Vec::new();
    let mut select = Vec::new();
    if q.granularity.is_some() {
        columns.push(OutputColumn {
            name: "period".into(),
            kind: OutKind::Date,
        });
        select.push(if q.gap_fill {
            "g.period".to_owned()
        } else {
            "a.period".to_owned()
        });
    }
    for d in &q.dimensions {
        let ty = dataset.column_type(d).unwrap_or(ValueType::Str);
        columns.push(OutputColumn {
            name: d.clone(),
            kind: out_kind(ty),
        });
        select.push(format!("a.{}::{}", quote_ident(d), cast_of(ty)));
    }
    for (i, m) in measures.iter().enumerate() {
        let col_ty = m.column.as_deref().and_then(|c| dataset.column_type(c));
        let (kind, cast) = match m.agg {
            Agg::Count | Agg::CountDistinct => (OutKind::Int, "int8"),
            Agg::Avg => (OutKind::Numeric, "numeric"),
            Agg::Sum if col_ty == Some(ValueType::Int) => (OutKind::Int, "int8"),
            Agg::Sum => (OutKind::Numeric, "numeric"),
            Agg::Min | Agg::Max => {
                let ty = col_ty.unwrap_or(ValueType::Str);
                (out_kind(ty), cast_of(ty))
            }
        };
        let zero = q.gap_fill && matches!(m.agg, Agg::Sum | Agg::Count | Agg::CountDistinct);
        select.push(if zero {
            format!("coalesce(a.m{i}, 0)::{cast}")
        } else {
            format!("a.m{i}::{cast}")
        });
        columns.push(OutputColumn {
            name: m.name.clone(),
            kind,
        });
    }
    let from_sql = if q.gap_fill {
        let g = q.granularity.expect("checked");
        let (s, e) = (q.start.expect("checked"), q.end.expect("checked"));
        let s = params.push(PlanParam::Date(s));
        let e = params.push(PlanParam::Date(e));
        format!(
            "(SELECT gs::date AS period FROM generate_series(date_trunc('{u}', {s}::date), date_trunc('{u}', {e}::date), interval '{i}') gs) g LEFT JOIN ({body}) a ON a.period = g.period",
            u = g.unit(),
            i = g.interval()
        )
    } else {
        format!("({body}) a")
    };
    let mut order: Vec<String> = q
        .order
        .iter()
        .map(|o| {
            let pos = columns
                .iter()
                .position(|c| c.name == o.field)
                .map_or(1, |p| p + 1);
            format!("{pos} {}", if o.desc { "DESC" } else { "ASC" })
        })
        .collect();
    // Then every output key, so the order is total and answers are repeatable.
    for (i, c) in columns.iter().enumerate() {
        if c.name == "period" || q.dimensions.contains(&c.name) {
            let key = format!("{} ASC", i + 1);
            if !q.order.iter().any(|o| o.field == c.name) {
                order.push(key);
            }
        }
    }
    let mut sql = format!("SELECT {} FROM {from_sql}", select.join(", "));
    if !order.is_empty() {
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    // One row past the cap tells the caller the answer was cut.
    let cap = q
        .limit
        .map_or(MAX_ROWS + 1, |l| u64::from(l).min(MAX_ROWS + 1));
    sql.push_str(&format!(" LIMIT {cap}"));
    Ok(Plan {
        sql,
        params: params.0,
        served_from,
        columns,
    })
}

#[cfg(test)]
mod tests;
