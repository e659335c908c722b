//! SQL from a logical plan: the filters (bound once, shared by every
//! piece), each piece's SELECT, the query combining them, and the final
//! shape (typed columns, gap fill, a total order, the row cap).
//!
//! Architecture Invariant: pure; identifiers come only from the dataset
//! definition and values are parameters (filter values are text cast to the
//! column's type).

use chrono::Days;

use super::{
    Combine, Facts, FilterOp, LogicalPlan, MAX_ROWS, OutKind, OutputColumn, Piece, PieceSource,
    Plan, PlanParam, Query, Read, Served, needs,
};
use crate::domain::dataset::{Agg, Dataset, Measure};
use crate::domain::rollup::{Partial, PartialKind};
use crate::domain::time::{Grain, TimeKind};
use crate::domain::value::ValueType;
use crate::sql::table::KeyKind;
use crate::sql::{bucket_sql, quote_ident, rollup_table, zone_bucket_sql};

/// The SQL of a logical plan over `dataset`, whose fact table is `facts`.
pub(super) fn render(dataset: &Dataset, facts: &Facts<'_>, q: &Query, lp: &LogicalPlan) -> Plan {
    let measures: Vec<&Measure> = q
        .measures
        .iter()
        .filter_map(|m| dataset.measure(m))
        .collect();
    let mut r = Renderer {
        dataset,
        facts: *facts,
        instants: dataset.time_kind == Some(TimeKind::Instant),
        zone: None,
        q,
        measures: &measures,
        dims: q.dimensions.iter().map(|d| quote_ident(d)).collect(),
        params: Params(Vec::new()),
        filters: Vec::new(),
        served_from: Vec::new(),
    };
    r.filters = r.filter_conditions();
    let body = match lp.pieces.as_slice() {
        [only] if only.read == Read::Final => r.piece(only),
        pieces => {
            let sqls: Vec<String> = pieces.iter().map(|p| r.piece(p)).collect();
            r.combination(&sqls, lp.combine)
        }
    };
    let (columns, sql) = r.output(&body);
    Plan {
        sql,
        params: r.params.0,
        served_from: r.served_from,
        columns,
        logical: lp.clone(),
    }
}

struct Renderer<'a> {
    dataset: &'a Dataset,
    facts: Facts<'a>,
    /// Whether the time column holds instants (bucketed in a zone).
    instants: bool,
    /// The zone's name as SQL (`'UTC'`, or its parameter once bound).
    zone: Option<String>,
    q: &'a Query,
    measures: &'a [&'a Measure],
    /// The asked dimensions, quoted.
    dims: Vec<String>,
    params: Params,
    /// The filters' conditions (rollups keep the facts' column names).
    filters: Vec<String>,
    served_from: Vec<Served>,
}

impl Renderer<'_> {
    fn filter_conditions(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.q.filters {
            let col = quote_ident(&f.dimension);
            let cast = cast_of(
                self.dataset
                    .column_type(&f.dimension)
                    .unwrap_or(ValueType::Str),
            );
            let params = &mut self.params;
            match &f.op {
                FilterOp::Equals(v) => out.push(format!(
                    "{col} = {}::text::{cast}",
                    params.push(PlanParam::Text(v.clone()))
                )),
                FilterOp::In(vs) => out.push(format!(
                    "{col} = ANY({}::text[]::{cast}[])",
                    params.push(PlanParam::TextArray(vs.clone()))
                )),
                FilterOp::Range { min, max } => {
                    if let Some(v) = min {
                        out.push(format!(
                            "{col} >= {}::text::{cast}",
                            params.push(PlanParam::Text(v.clone()))
                        ));
                    }
                    if let Some(v) = max {
                        out.push(format!(
                            "{col} <= {}::text::{cast}",
                            params.push(PlanParam::Text(v.clone()))
                        ));
                    }
                }
            }
        }
        out
    }

    /// The zone instants are bucketed in, as SQL: `'UTC'`, or the zone's
    /// name bound once as a parameter.
    fn zone_sql(&mut self) -> String {
        if let Some(z) = &self.zone {
            return z.clone();
        }
        let z = match self.q.zone() {
            Some(name) => format!(
                "{}::text",
                self.params.push(PlanParam::Text(name.to_owned()))
            ),
            None => "'UTC'".to_owned(),
        };
        self.zone = Some(z.clone());
        z
    }

    /// The start of the day bound as `param`, as the time expression's type.
    fn day_start(&mut self, param: &str) -> String {
        if self.instants {
            format!(
                "({param}::date::timestamp AT TIME ZONE {})",
                self.zone_sql()
            )
        } else {
            format!("{param}::date")
        }
    }

    /// The bucket of a time expression at the asked grain (`NULL` for one
    /// bucket over the whole range); instants in the query's zone.
    fn period_of(&mut self, expr: &str) -> String {
        match (self.q.granularity, self.instants) {
            (Some(g), false) => bucket_sql(expr, g),
            (Some(g), true) => {
                let zone = self.zone_sql();
                zone_bucket_sql(expr, g, &zone)
            }
            (None, false) => "NULL::date".to_owned(),
            (None, true) => "NULL::timestamptz".to_owned(),
        }
    }

    /// The facts' time column as an instant (a `timestamp` read as UTC).
    fn fact_time(&self) -> String {
        // A reference table's queries have no period and no time bounds
        // (`plan::check`): nothing reads the expression.
        let Some((time, _)) = self.dataset.time() else {
            return "NULL::date".to_owned();
        };
        let col = quote_ident(time);
        match self.facts.time_key {
            Some(KeyKind::Timestamp) => format!("({col} AT TIME ZONE 'UTC')"),
            _ => col,
        }
    }

    /// The conditions of a query bounded by instants (`from`, `to`, both
    /// included).
    fn instant_range(&mut self, time_expr: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = self.q.from {
            let p = self.params.push(PlanParam::Instant(f));
            out.push(format!("{time_expr} >= {p}::timestamptz"));
        }
        if let Some(t) = self.q.to {
            let p = self.params.push(PlanParam::Instant(t));
            out.push(format!("{time_expr} <= {p}::timestamptz"));
        }
        out
    }

    /// The conditions keeping `time_expr` within the piece's [from, to).
    fn range(&mut self, time_expr: &str, piece: &Piece) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = piece.from {
            let p = self.params.push(PlanParam::Date(f));
            out.push(format!("{time_expr} >= {}", self.day_start(&p)));
        }
        if let Some(t) = piece.to {
            let p = self.params.push(PlanParam::Date(t));
            out.push(format!("{time_expr} < {}", self.day_start(&p)));
        }
        out
    }

    /// One piece's SELECT; records which source served which days.
    fn piece(&mut self, piece: &Piece) -> String {
        let (from_sql, time_expr, name, kind) = match &piece.source {
            PieceSource::Fact => (
                self.facts.table_sql.to_owned(),
                self.fact_time(),
                self.dataset.table.clone(),
                "fact",
            ),
            PieceSource::Rollup(r) => (
                rollup_table(&r.name),
                "bucket".to_owned(),
                r.name.clone(),
                "rollup",
            ),
        };
        self.served_from.push(Served {
            source: kind,
            name,
            from: piece.from,
            to: piece.to.map(|t| t - Days::new(1)),
        });
        let mut conditions = self.filters.clone();
        if matches!(piece.source, PieceSource::Fact) && self.facts.time_nullable {
            conditions.push(format!("{time_expr} IS NOT NULL"));
        }
        conditions.extend(self.range(&time_expr, piece));
        conditions.extend(self.instant_range(&time_expr));
        // Bare `bucket` keeps the rollup's key order usable for ORDER BY.
        let period = match piece.read {
            Read::AsStored => "bucket AS period".to_owned(),
            _ => format!("{} AS period", self.period_of(&time_expr)),
        };
        let mut cols = vec![period];
        cols.extend(self.dims.iter().cloned());
        for (i, m) in self.measures.iter().enumerate() {
            match piece.read {
                Read::Final => cols.push(final_aggregate(m, i)),
                read => {
                    for (j, (kind, col)) in needs(m).iter().enumerate() {
                        let alias = format!("p{i}_{j}");
                        cols.push(partial_column(&piece.source, read, *kind, *col, &alias));
                    }
                }
            }
        }
        let keys = match piece.read {
            Read::AsStored => 0,
            _ => self.dims.len() + 1,
        };
        grouped(&cols, &from_sql, &conditions, keys)
    }

    /// The query combining the pieces into one row per output key.
    fn combination(&self, pieces: &[String], combine: Combine) -> String {
        let regroup = combine == Combine::Regroup;
        let mut cols = vec!["period".to_owned()];
        cols.extend(self.dims.iter().cloned());
        for (i, m) in self.measures.iter().enumerate() {
            cols.push(match (m.agg, regroup) {
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
        let keys = if regroup { self.dims.len() + 1 } else { 0 };
        grouped(&cols, &union, &[], keys)
    }

    /// The final shape: typed columns, gap fill, a total order, the row cap.
    fn output(&mut self, body: &str) -> (Vec<OutputColumn>, String) {
        let q = self.q;
        let (columns, select) = self.output_columns();
        let from_sql = match (q.gap_fill, q.granularity, q.start, q.end, q.from, q.to) {
            (true, Some(g), Some(s), Some(e), _, _) => {
                let s = self.params.push(PlanParam::Date(s));
                let e = self.params.push(PlanParam::Date(e));
                format!(
                    "{} g LEFT JOIN ({body}) a ON a.period = g.period",
                    self.periods(g, &s, &e)
                )
            }
            (true, Some(g), _, _, Some(f), Some(t)) => {
                let f = self.params.push(PlanParam::Instant(f));
                let t = self.params.push(PlanParam::Instant(t));
                let zone = self.zone_sql();
                format!(
                    "(SELECT DISTINCT gs AT TIME ZONE {zone} AS period FROM generate_series(date_trunc('{u}', {f}::timestamptz AT TIME ZONE {zone}), date_trunc('{u}', {t}::timestamptz AT TIME ZONE {zone}), interval '{i}') gs) g LEFT JOIN ({body}) a ON a.period = g.period",
                    u = g.unit(),
                    i = g.interval()
                )
            }
            _ => format!("({body}) a"),
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
            if (c.name == "period" || q.dimensions.contains(&c.name))
                && !q.order.iter().any(|o| o.field == c.name)
            {
                order.push(format!("{} ASC", i + 1));
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
        (columns, sql)
    }

    /// Every period of the range `[s, e]` (parameters of days), for gap
    /// fill. For instants: the local buckets from the one holding the first
    /// instant to the one holding the last, each once as an instant (a
    /// wall-clock hour that a DST change skips is the next one's instant).
    fn periods(&mut self, g: Grain, s: &str, e: &str) -> String {
        let (u, i) = (g.unit(), g.interval());
        if !self.instants {
            return format!(
                "(SELECT gs::date AS period FROM generate_series(date_trunc('{u}', {s}::date), date_trunc('{u}', {e}::date), interval '{i}') gs)"
            );
        }
        let zone = self.zone_sql();
        format!(
            "(SELECT DISTINCT gs AT TIME ZONE {zone} AS period FROM generate_series(date_trunc('{u}', {s}::date::timestamp), date_trunc('{u}', ({e}::date + 1)::timestamp - interval '1 microsecond'), interval '{i}') gs)"
        )
    }

    /// The answer's columns and the expressions selecting them.
    fn output_columns(&self) -> (Vec<OutputColumn>, Vec<String>) {
        let q = self.q;
        let mut columns = Vec::new();
        let mut select = Vec::new();
        if q.granularity.is_some() {
            columns.push(OutputColumn {
                name: "period".into(),
                kind: if self.instants {
                    OutKind::Timestamp
                } else {
                    OutKind::Date
                },
            });
            select.push(if q.gap_fill { "g.period" } else { "a.period" }.to_owned());
        }
        for d in &q.dimensions {
            let ty = self.dataset.column_type(d).unwrap_or(ValueType::Str);
            columns.push(OutputColumn {
                name: d.clone(),
                kind: out_kind(ty),
            });
            select.push(format!("a.{}::{}", quote_ident(d), cast_of(ty)));
        }
        for (i, m) in self.measures.iter().enumerate() {
            let col_ty = m
                .column
                .as_deref()
                .and_then(|c| self.dataset.column_type(c));
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
        (columns, select)
    }
}

/// A measure's final aggregate over the facts (the one-pass plan).
fn final_aggregate(m: &Measure, i: usize) -> String {
    let col = m
        .column
        .as_deref()
        .map(quote_ident)
        .unwrap_or_else(|| "*".into());
    match m.agg {
        Agg::Sum => format!("sum({col}) AS m{i}"),
        Agg::Count => format!("count({col}) AS m{i}"),
        Agg::Min => format!("min({col}) AS m{i}"),
        Agg::Max => format!("max({col}) AS m{i}"),
        Agg::Avg => format!("avg({col}) AS m{i}"),
        Agg::CountDistinct => format!("count(DISTINCT {col}) AS m{i}"),
    }
}

/// One partial aggregate of a piece: computed from the facts, or read from
/// a rollup's partial column (as stored, or combined: counts add up,
/// extremes are extremes).
fn partial_column(
    source: &PieceSource,
    read: Read,
    kind: PartialKind,
    col: Option<&str>,
    alias: &str,
) -> String {
    match (source, col) {
        (PieceSource::Fact, None) => format!("count(*)::int8 AS {alias}"),
        (PieceSource::Fact, Some(c)) => {
            let c = quote_ident(c);
            match kind {
                PartialKind::Sum => format!("sum({c})::numeric AS {alias}"),
                PartialKind::Count => format!("count({c})::int8 AS {alias}"),
                PartialKind::Min => format!("min({c}) AS {alias}"),
                PartialKind::Max => format!("max({c}) AS {alias}"),
            }
        }
        (PieceSource::Rollup(_), _) => {
            let (pc, kind) = match col {
                None => ("row_count".to_owned(), PartialKind::Count),
                Some(c) => (
                    quote_ident(
                        &Partial {
                            kind,
                            source: c.to_owned(),
                        }
                        .column(),
                    ),
                    kind,
                ),
            };
            let combined = match kind {
                _ if read == Read::AsStored => pc,
                PartialKind::Sum | PartialKind::Count => format!("sum({pc})"),
                PartialKind::Min => format!("min({pc})"),
                PartialKind::Max => format!("max({pc})"),
            };
            match kind {
                PartialKind::Sum => format!("{combined}::numeric AS {alias}"),
                PartialKind::Count => format!("{combined}::int8 AS {alias}"),
                PartialKind::Min | PartialKind::Max => format!("{combined} AS {alias}"),
            }
        }
    }
}

fn cast_of(ty: ValueType) -> &'static str {
    match ty {
        ValueType::Int => "int8",
        ValueType::Float => "numeric",
        ValueType::Str => "text",
        ValueType::Date => "date",
        ValueType::Timestamp => "timestamptz",
        ValueType::Bool => "bool",
    }
}

/// How a column of this type is decoded.
pub(super) fn out_kind_of(ty: ValueType) -> OutKind {
    out_kind(ty)
}

fn out_kind(ty: ValueType) -> OutKind {
    match ty {
        ValueType::Int => OutKind::Int,
        ValueType::Float => OutKind::Numeric,
        ValueType::Str => OutKind::Text,
        ValueType::Date => OutKind::Date,
        ValueType::Timestamp => OutKind::Timestamp,
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
}
