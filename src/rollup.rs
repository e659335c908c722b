//! Rollup tables: their layout, creation and rebuild from the fact table,
//! verification, and the deltas every import applies in its own transaction.
//!
//! A rollup `r` of dataset `d` is the table `clue_rollup.r` with one row per
//! (`bucket`, dimensions…): `row_count` and partial aggregates (`sum_c`,
//! `count_c`, `min_c`, `max_c`) of the columns the dataset's additive
//! measures use. `clue.rollups` records each rollup's definition; a rollup
//! whose definition changed is rebuilt before use.
//!
//! Architecture Invariant: a rollup equals the aggregation of its fact table
//! at every commit. Imports add their deltas in the load transaction, and
//! every writer of a dataset's rollups (an import applying its deltas, a
//! build) first takes that dataset's advisory lock, held to commit: one
//! writer at a time, so no lost update, no deadlock and no delta lands
//! mid-rebuild.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use tokio_postgres::types::{ToSql, Type};

use crate::dataset::{Agg, Dataset, Grain};
use crate::schema::{self, Column, Table, quote_ident};

/// Schema of the rollup tables.
pub const SCHEMA: &str = "clue_rollup";

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error(
        "dataset {dataset}: rollup {rollup}: dimension {column:?} is nullable in table {table}; rollup dimensions must be NOT NULL"
    )]
    NullableDimension {
        dataset: String,
        rollup: String,
        column: String,
        table: String,
    },
    #[error("dataset {dataset}: column {column:?} is not in table {table}")]
    MissingColumn {
        dataset: String,
        column: String,
        table: String,
    },
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// What a partial aggregate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartialKind {
    Sum,
    Count,
    Min,
    Max,
}

/// A partial aggregate column of a rollup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Partial {
    pub kind: PartialKind,
    /// The fact column it aggregates.
    pub source: String,
}

impl Partial {
    /// Its column name in the rollup table.
    pub fn column(&self) -> String {
        let prefix = match self.kind {
            PartialKind::Sum => "sum",
            PartialKind::Count => "count",
            PartialKind::Min => "min",
            PartialKind::Max => "max",
        };
        format!("{prefix}_{}", self.source)
    }
}

/// The partials a rollup keeps for `measures` (all of the dataset's when
/// `None`), given the fact table's types: sums only of integer and numeric
/// columns (float sums are not exact).
pub fn partials(dataset: &Dataset, table: &Table, measures: Option<&[String]>) -> Vec<Partial> {
    let mut out: Vec<Partial> = Vec::new();
    let mut add = |kind, source: &str| {
        let p = Partial {
            kind,
            source: source.to_owned(),
        };
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for m in &dataset.measures {
        if measures.is_some_and(|names| !names.contains(&m.name)) {
            continue;
        }
        let Some(col) = m.column.as_deref() else {
            continue;
        };
        let exact_sum = table
            .column(col)
            .is_some_and(|c| matches!(c.ty, Type::INT2 | Type::INT4 | Type::INT8 | Type::NUMERIC));
        match m.agg {
            Agg::Sum if exact_sum => add(PartialKind::Sum, col),
            Agg::Avg if exact_sum => {
                add(PartialKind::Sum, col);
                add(PartialKind::Count, col);
            }
            Agg::Count => add(PartialKind::Count, col),
            Agg::Min => add(PartialKind::Min, col),
            Agg::Max => add(PartialKind::Max, col),
            _ => {}
        }
    }
    out
}

/// A rollup as recorded in `clue.rollups`: what the planner may use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RollupInfo {
    pub name: String,
    pub dataset: String,
    pub grain: Grain,
    pub dimensions: Vec<String>,
    pub partials: Vec<Partial>,
    /// Row estimate, for choosing the smallest rollup.
    #[serde(default)]
    pub rows: i64,
}

impl RollupInfo {
    /// The rollup's table, quoted.
    pub fn table(&self) -> String {
        format!("{}.{}", quote_ident(SCHEMA), quote_ident(&self.name))
    }

    pub fn has(&self, kind: PartialKind, source: &str) -> bool {
        self.partials
            .iter()
            .any(|p| p.kind == kind && p.source == source)
    }
}

/// SQL of one bucket at `grain` of a date expression.
pub fn bucket_sql(expr: &str, grain: Grain) -> String {
    match grain {
        Grain::Day | Grain::Hour => format!("({expr})::date"),
        g => format!("date_trunc('{}', {expr})::date", g.unit()),
    }
}

fn pg_type_sql(c: &Column) -> String {
    // format_type would need a query; the importer's types cover rollup columns.
    match c.ty {
        Type::INT2 => "smallint".into(),
        Type::INT4 => "integer".into(),
        Type::INT8 => "bigint".into(),
        Type::NUMERIC => "numeric".into(),
        Type::FLOAT4 => "real".into(),
        Type::FLOAT8 => "double precision".into(),
        Type::DATE => "date".into(),
        Type::BOOL => "boolean".into(),
        Type::TIMESTAMP => "timestamp".into(),
        Type::TIMESTAMPTZ => "timestamptz".into(),
        _ => "text".into(),
    }
}

/// The rollups of `dataset` with their partials, checked against the table.
fn infos(dataset: &Dataset, table: &Table) -> Result<Vec<RollupInfo>, RollupError> {
    let parts = partials(dataset, table, None);
    for c in std::iter::once(&dataset.time_column)
        .chain(&dataset.dimensions)
        .chain(parts.iter().map(|p| &p.source))
    {
        if table.column(c).is_none() {
            return Err(RollupError::MissingColumn {
                dataset: dataset.name.clone(),
                column: c.clone(),
                table: table.table.display(),
            });
        }
    }
    dataset
        .rollups
        .iter()
        .map(|r| {
            for d in &r.dimensions {
                if table.column(d).is_some_and(|c| !c.not_null) {
                    return Err(RollupError::NullableDimension {
                        dataset: dataset.name.clone(),
                        rollup: r.name.clone(),
                        column: d.clone(),
                        table: table.table.display(),
                    });
                }
            }
            Ok(RollupInfo {
                name: r.name.clone(),
                dataset: dataset.name.clone(),
                grain: r.grain,
                dimensions: r.dimensions.clone(),
                partials: partials(dataset, table, r.measures.as_deref()),
                rows: 0,
            })
        })
        .collect()
}

/// The aggregation of the fact table that a rollup holds, as a SELECT.
fn aggregate_sql(info: &RollupInfo, dataset: &Dataset, table: &Table) -> String {
    let mut cols = vec![format!(
        "{} AS bucket",
        bucket_sql(&quote_ident(&dataset.time_column), info.grain)
    )];
    cols.extend(info.dimensions.iter().map(|d| quote_ident(d)));
    cols.push("count(*)::int8 AS row_count".into());
    for p in &info.partials {
        let src = quote_ident(&p.source);
        cols.push(match p.kind {
            PartialKind::Sum => format!("sum({src})::numeric"),
            PartialKind::Count => format!("count({src})::int8"),
            PartialKind::Min => format!("min({src})"),
            PartialKind::Max => format!("max({src})"),
        });
    }
    let group: Vec<String> = (1..=info.dimensions.len() + 1)
        .map(|i| i.to_string())
        .collect();
    format!(
        "SELECT {} FROM {} GROUP BY {}",
        cols.join(", "),
        table.table.quoted(),
        group.join(", ")
    )
}

fn key_columns(info: &RollupInfo) -> Vec<String> {
    std::iter::once("bucket".to_owned())
        .chain(info.dimensions.iter().map(|d| quote_ident(d)))
        .collect()
}

fn data_columns(info: &RollupInfo) -> Vec<String> {
    key_columns(info)
        .into_iter()
        .chain(std::iter::once("row_count".to_owned()))
        .chain(info.partials.iter().map(|p| quote_ident(&p.column())))
        .collect()
}

fn create_sql(info: &RollupInfo, table: &Table) -> String {
    let mut cols = vec!["bucket date NOT NULL".to_owned()];
    for d in &info.dimensions {
        let c = table.column(d).expect("checked by infos");
        cols.push(format!("{} {} NOT NULL", quote_ident(d), pg_type_sql(c)));
    }
    cols.push("row_count bigint NOT NULL".into());
    for p in &info.partials {
        let ty = match p.kind {
            PartialKind::Sum => "numeric".to_owned(),
            PartialKind::Count => "bigint".to_owned(),
            PartialKind::Min | PartialKind::Max => {
                pg_type_sql(table.column(&p.source).expect("checked by infos"))
            }
        };
        cols.push(format!("{} {ty}", quote_ident(&p.column())));
    }
    // Room on each page lets imports update rows in place (HOT), keeping
    // the heap in key order, as built, for fast ordered reads.
    format!(
        "CREATE TABLE {} ({}, PRIMARY KEY ({})) WITH (fillfactor = 90)",
        info.table(),
        cols.join(", "),
        key_columns(info).join(", ")
    )
}

/// Serializes the writers of one dataset's rollups across sessions (builds,
/// and imports applying their deltas) until the transaction ends.
async fn lock_dataset(
    tx: &tokio_postgres::Transaction<'_>,
    dataset: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(1668052326, hashtext($1))",
        &[&dataset],
    )
    .await?;
    Ok(())
}

/// What `ensure`/`rebuild` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// Rollups built (or rebuilt) from the fact table, with their rows.
    pub built: Vec<(String, i64)>,
    /// Rollups dropped because the definition no longer has them.
    pub dropped: Vec<String>,
}

/// Makes the dataset's rollup tables exist and match their definitions,
/// building any that are new or changed from the fact table. `force`
/// rebuilds every rollup. Does nothing while the fact table does not exist.
pub async fn ensure(
    client: &mut tokio_postgres::Client,
    dataset: &Dataset,
    force: bool,
) -> Result<BuildReport, RollupError> {
    let Some(_) = schema::find_table(&*client, &dataset.table).await? else {
        return Ok(BuildReport::default());
    };
    let table = schema::load_table(&*client, &dataset.table).await?;
    let wanted = infos(dataset, &table)?;
    let tx = client.transaction().await?;
    lock_dataset(&tx, &dataset.name).await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(SCHEMA)
    ))
    .await?;
    let recorded: HashMap<String, String> = tx
        .query(
            "SELECT name, definition FROM clue.rollups WHERE dataset = $1",
            &[&dataset.name],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut report = BuildReport::default();
    for info in &wanted {
        let definition = serde_json::to_string(info).expect("serializable");
        let exists: bool = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{SCHEMA}.{}", info.name)],
            )
            .await?
            .get(0);
        if !force && exists && recorded.get(&info.name) == Some(&definition) {
            continue;
        }
        if exists {
            // Waits for in-flight imports that hold deltas for it.
            tx.batch_execute(&format!(
                "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE; DROP TABLE {}",
                info.table(),
                info.table()
            ))
            .await?;
        }
        tx.batch_execute(&create_sql(info, &table)).await?;
        // Inserted in key order: the heap then follows the primary key, and
        // answers read in key order touch each page once.
        let rows = tx
            .execute(
                &format!(
                    "INSERT INTO {} ({}) {} ORDER BY {}",
                    info.table(),
                    data_columns(info).join(", "),
                    aggregate_sql(info, dataset, &table),
                    (1..=info.dimensions.len() + 1)
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[],
            )
            .await? as i64;
        // Row estimates for the query planner (clue's and PostgreSQL's).
        tx.batch_execute(&format!("ANALYZE {}", info.table()))
            .await?;
        tx.execute(
            "INSERT INTO clue.rollups (name, dataset, definition, built_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (name) DO UPDATE SET dataset = excluded.dataset, definition = excluded.definition, built_at = now()",
            &[&info.name, &dataset.name, &definition],
        )
        .await?;
        report.built.push((info.name.clone(), rows));
    }
    for name in recorded.keys() {
        if !wanted.iter().any(|w| &w.name == name) {
            tx.batch_execute(&format!(
                "DROP TABLE IF EXISTS {}.{}",
                quote_ident(SCHEMA),
                quote_ident(name)
            ))
            .await?;
            tx.execute("DELETE FROM clue.rollups WHERE name = $1", &[name])
                .await?;
            report.dropped.push(name.clone());
        }
    }
    if !report.built.is_empty() {
        crate::query::notify_write(&tx, &dataset.name, None).await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// The current rollups of a dataset with row estimates (for the planner).
pub async fn current(
    client: &impl tokio_postgres::GenericClient,
    dataset: &Dataset,
) -> Result<Vec<RollupInfo>, RollupError> {
    let rows = client
        .query(
            "SELECT r.definition, greatest(c.reltuples, 0)::int8
               FROM clue.rollups r JOIN pg_class c ON c.oid = to_regclass($2 || '.' || r.name)
              WHERE r.dataset = $1",
            &[&dataset.name, &SCHEMA],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let definition: String = r.get(0);
        if let Ok(mut info) = serde_json::from_str::<RollupInfo>(&definition) {
            // Only rollups the current definition still declares are used.
            if dataset.rollups.iter().any(|d| {
                d.name == info.name && d.grain == info.grain && d.dimensions == info.dimensions
            }) {
                info.rows = r.get(1);
                out.push(info);
            }
        }
    }
    Ok(out)
}

/// The result of comparing one rollup with its fact table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub rollup: String,
    pub rows: i64,
    /// Rows that differ (present on one side only, or with other values).
    pub differences: i64,
}

/// Compares every rollup of the dataset with a fresh aggregation of the facts.
pub async fn verify(
    client: &mut tokio_postgres::Client,
    dataset: &Dataset,
) -> Result<Vec<Verification>, RollupError> {
    let table = schema::load_table(&*client, &dataset.table).await?;
    let infos = current(&*client, dataset).await?;
    // One snapshot for facts and rollups alike.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut out = Vec::new();
    for info in infos {
        let cols = data_columns(&info).join(", ");
        let fresh = aggregate_sql(&info, dataset, &table);
        let row = tx
            .query_one(
                &format!(
                    "WITH fresh AS ({fresh}), stored AS (SELECT {cols} FROM {t})
                     SELECT (SELECT count(*) FROM stored),
                            (SELECT count(*) FROM ((SELECT * FROM fresh EXCEPT ALL SELECT * FROM stored)
                                        UNION ALL (SELECT * FROM stored EXCEPT ALL SELECT * FROM fresh)) d)",
                    t = info.table()
                ),
                &[],
            )
            .await?;
        out.push(Verification {
            rollup: info.name.clone(),
            rows: row.get(0),
            differences: row.get(1),
        });
    }
    tx.commit().await?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Deltas of the write path

/// A typed value of a dimension or a min/max partial.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Scalar {
    Int(i64),
    Num(Decimal),
    Float(f64),
    Text(String),
    Date(NaiveDate),
    Bool(bool),
}

/// How to read a raw CSV field into a [`Scalar`], matching what the importer stores.
#[derive(Debug, Clone)]
pub struct FieldReader {
    pub index: usize,
    pub kind: ReadKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    Int,
    /// numeric rounded to this scale (as stored).
    Num(Option<u32>),
    Float,
    Text,
    Date,
    Bool,
}

/// Reads a raw value the way the importer's codecs do. `None` for an empty
/// (NULL) value; rows reach here only after the codecs accepted them.
pub type ParseFn = fn(ReadKind, &str, Option<&str>) -> Option<Scalar>;

/// Per-rollup running deltas of an import.
struct RollupDelta {
    info: RollupInfo,
    dims: Vec<FieldReader>,
    /// For each of the rollup's partials, its source's slot in `values`.
    slots: Vec<usize>,
    map: HashMap<Vec<u8>, Entry>,
}

struct Entry {
    bucket: NaiveDate,
    dims: Vec<Scalar>,
    row_count: i64,
    partials: Vec<PartialValue>,
}

#[derive(Debug, Clone)]
enum PartialValue {
    Sum(Decimal),
    Count(i64),
    Min(Option<Scalar>),
    Max(Option<Scalar>),
}

/// Accumulates the rollup deltas of the rows an import loads.
pub struct Accumulator {
    time: FieldReader,
    date_format: Option<String>,
    /// The columns any rollup's partials read; `values` holds a row's.
    sources: Vec<FieldReader>,
    rollups: Vec<RollupDelta>,
    parse: ParseFn,
    key: Vec<u8>,
    values: Vec<Option<Scalar>>,
    min_date: Option<NaiveDate>,
    max_date: Option<NaiveDate>,
}

impl Accumulator {
    /// `reader(column)` says where a column is in the CSV and how to read it;
    /// `None` when the file lacks a column a rollup needs (then the import
    /// cannot keep rollups exact and must refuse).
    pub fn new(
        infos: &[RollupInfo],
        time_column: &str,
        date_format: Option<String>,
        reader: impl Fn(&str) -> Option<FieldReader>,
        parse: ParseFn,
    ) -> Option<Accumulator> {
        let time = reader(time_column)?;
        // Each source column is read once per row, whichever rollups use it.
        let mut sources: Vec<(String, FieldReader)> = Vec::new();
        let mut rollups = Vec::new();
        for info in infos {
            let dims = info
                .dimensions
                .iter()
                .map(|d| reader(d))
                .collect::<Option<Vec<_>>>()?;
            let mut slots = Vec::new();
            for p in &info.partials {
                match sources.iter().position(|r| r.0 == p.source) {
                    Some(i) => slots.push(i),
                    None => {
                        slots.push(sources.len());
                        sources.push((p.source.clone(), reader(&p.source)?));
                    }
                }
            }
            rollups.push(RollupDelta {
                info: info.clone(),
                dims,
                slots,
                map: HashMap::new(),
            });
        }
        let n = sources.len();
        Some(Accumulator {
            time,
            date_format,
            sources: sources.into_iter().map(|(_, r)| r).collect(),
            rollups,
            parse,
            key: Vec::with_capacity(64),
            values: vec![None; n],
            min_date: None,
            max_date: None,
        })
    }

    /// Adds one loaded row (its raw CSV fields).
    pub fn add(&mut self, fields: &[&str]) {
        let Some(Scalar::Date(date)) = (self.parse)(
            ReadKind::Date,
            fields[self.time.index].trim(),
            self.date_format.as_deref(),
        ) else {
            return;
        };
        self.min_date = Some(self.min_date.map_or(date, |d| d.min(date)));
        self.max_date = Some(self.max_date.map_or(date, |d| d.max(date)));
        for (slot, r) in self.values.iter_mut().zip(&self.sources) {
            let raw = fields[r.index];
            let raw = if r.kind == ReadKind::Text {
                raw
            } else {
                raw.trim()
            };
            *slot = if raw.is_empty() {
                None
            } else {
                (self.parse)(r.kind, raw, None)
            };
        }
        for ri in 0..self.rollups.len() {
            let bucket = match self.rollups[ri].info.grain {
                Grain::Month => date.with_day(1).unwrap_or(date),
                _ => date,
            };
            self.key.clear();
            self.key
                .extend_from_slice(&bucket.num_days_from_ce().to_le_bytes());
            for d in &self.rollups[ri].dims {
                let raw = fields[d.index];
                if d.kind == ReadKind::Text {
                    self.key
                        .extend_from_slice(&(raw.len() as u32).to_le_bytes());
                    self.key.extend_from_slice(raw.as_bytes());
                } else {
                    // Keyed by value, not spelling: `01001` and `1001` are one product.
                    match (self.parse)(d.kind, raw.trim(), None) {
                        Some(Scalar::Int(i)) => self.key.extend_from_slice(&i.to_le_bytes()),
                        Some(Scalar::Num(n)) => {
                            let text = n.normalize().to_string();
                            self.key
                                .extend_from_slice(&(text.len() as u32).to_le_bytes());
                            self.key.extend_from_slice(text.as_bytes());
                        }
                        other => {
                            let text = format!("{other:?}");
                            self.key
                                .extend_from_slice(&(text.len() as u32).to_le_bytes());
                            self.key.extend_from_slice(text.as_bytes());
                        }
                    }
                }
            }
            let delta = &mut self.rollups[ri];
            let entry = match delta.map.get_mut(self.key.as_slice()) {
                Some(e) => e,
                None => {
                    let dims = delta
                        .dims
                        .iter()
                        .map(|d| {
                            let raw = fields[d.index];
                            let raw = if d.kind == ReadKind::Text {
                                raw
                            } else {
                                raw.trim()
                            };
                            (self.parse)(d.kind, raw, None).unwrap_or(Scalar::Text(raw.to_owned()))
                        })
                        .collect();
                    let partials = delta
                        .info
                        .partials
                        .iter()
                        .map(|p| match p.kind {
                            PartialKind::Sum => PartialValue::Sum(Decimal::ZERO),
                            PartialKind::Count => PartialValue::Count(0),
                            PartialKind::Min => PartialValue::Min(None),
                            PartialKind::Max => PartialValue::Max(None),
                        })
                        .collect();
                    delta.map.entry(self.key.clone()).or_insert(Entry {
                        bucket,
                        dims,
                        row_count: 0,
                        partials,
                    })
                }
            };
            entry.row_count += 1;
            for (pi, v) in entry.partials.iter_mut().enumerate() {
                let Some(value) = &self.values[delta.slots[pi]] else {
                    continue;
                };
                match v {
                    PartialValue::Sum(s) => {
                        *s += match value {
                            Scalar::Int(i) => Decimal::from(*i),
                            Scalar::Num(d) => *d,
                            _ => Decimal::ZERO,
                        }
                    }
                    PartialValue::Count(c) => *c += 1,
                    PartialValue::Min(m) => {
                        if m.as_ref().is_none_or(|m| value < m) {
                            *m = Some(value.clone());
                        }
                    }
                    PartialValue::Max(m) => {
                        if m.as_ref().is_none_or(|m| value > m) {
                            *m = Some(value.clone());
                        }
                    }
                }
            }
        }
    }

    /// The first and last day of the rows added.
    pub fn date_range(&self) -> Option<(NaiveDate, NaiveDate)> {
        self.min_date.zip(self.max_date)
    }

    /// After the load commits: re-estimates the rollups it grew by more
    /// than a tenth (or that were never estimated), so the next query is
    /// planned for their size rather than waiting for autovacuum. Best
    /// effort: the load has committed whatever this does.
    pub async fn refresh_estimates(&self, client: &tokio_postgres::Client) {
        for delta in &self.rollups {
            if delta.map.is_empty() {
                continue;
            }
            let table = delta.info.table();
            let estimate = client
                .query_one(
                    "SELECT reltuples::float8 FROM pg_class WHERE oid = $1::text::regclass",
                    &[&table],
                )
                .await
                .map(|r| r.get::<_, f64>(0));
            let stale = match estimate {
                Ok(rows) => rows < 0.0 || delta.map.len() as f64 > rows / 10.0,
                Err(_) => false,
            };
            if stale && let Err(e) = client.batch_execute(&format!("ANALYZE {table}")).await {
                tracing::warn!(rollup = %delta.info.name, error = %e, "could not analyze rollup");
            }
        }
    }

    /// Upserts the deltas into the rollup tables inside the load transaction.
    pub async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        table: &Table,
    ) -> Result<(), tokio_postgres::Error> {
        if let Some(first) = self.rollups.first() {
            lock_dataset(tx, &first.info.dataset).await?;
        }
        for delta in &self.rollups {
            if delta.map.is_empty() {
                continue;
            }
            let info = &delta.info;
            // In key order, new rows extend the heap in the order ordered
            // reads want.
            let mut entries: Vec<&Entry> = delta.map.values().collect();
            entries.sort_by(|a, b| {
                a.bucket.cmp(&b.bucket).then_with(|| {
                    a.dims
                        .partial_cmp(&b.dims)
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
            });
            let mut arrays: Vec<Box<dyn ToSql + Sync>> = Vec::new();
            let mut casts: Vec<String> = Vec::new();
            arrays.push(Box::new(
                entries.iter().map(|e| e.bucket).collect::<Vec<_>>(),
            ));
            casts.push("date[]".into());
            for (i, d) in info.dimensions.iter().enumerate() {
                let col = table.column(d).expect("checked when built");
                let (array, cast) = scalar_array(entries.iter().map(|e| Some(&e.dims[i])), col);
                arrays.push(array);
                casts.push(cast);
            }
            arrays.push(Box::new(
                entries.iter().map(|e| e.row_count).collect::<Vec<_>>(),
            ));
            casts.push("int8[]".into());
            for (pi, p) in info.partials.iter().enumerate() {
                match p.kind {
                    PartialKind::Sum => {
                        arrays.push(Box::new(
                            entries
                                .iter()
                                .map(|e| match &e.partials[pi] {
                                    PartialValue::Sum(s) => *s,
                                    _ => Decimal::ZERO,
                                })
                                .collect::<Vec<_>>(),
                        ));
                        casts.push("numeric[]".into());
                    }
                    PartialKind::Count => {
                        arrays.push(Box::new(
                            entries
                                .iter()
                                .map(|e| match &e.partials[pi] {
                                    PartialValue::Count(c) => *c,
                                    _ => 0,
                                })
                                .collect::<Vec<_>>(),
                        ));
                        casts.push("int8[]".into());
                    }
                    PartialKind::Min | PartialKind::Max => {
                        let col = table.column(&p.source).expect("checked when built");
                        let (array, cast) = scalar_array(
                            entries.iter().map(|e| match &e.partials[pi] {
                                PartialValue::Min(v) | PartialValue::Max(v) => v.as_ref(),
                                _ => None,
                            }),
                            col,
                        );
                        arrays.push(array);
                        casts.push(cast);
                    }
                }
            }
            let cols = data_columns(info);
            let unnest: Vec<String> = casts
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::{c}", i + 1))
                .collect();
            let updates: Vec<String> =
                std::iter::once("row_count = r.row_count + d.row_count".to_owned())
                    .chain(info.partials.iter().map(|p| {
                        let c = quote_ident(&p.column());
                        match p.kind {
                            PartialKind::Sum => {
                                format!("{c} = coalesce(r.{c}, 0) + coalesce(d.{c}, 0)")
                            }
                            PartialKind::Count => format!("{c} = r.{c} + d.{c}"),
                            PartialKind::Min => format!("{c} = least(r.{c}, d.{c})"),
                            PartialKind::Max => format!("{c} = greatest(r.{c}, d.{c})"),
                        }
                    }))
                    .collect();
            let keys = key_columns(info);
            let same_key = |a: &str, b: &str| {
                keys.iter()
                    .map(|k| format!("{a}.{k} = {b}.{k}"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            };
            // Under the dataset's lock no other session adds keys, so an
            // UPDATE of the keys present and a plain INSERT of the others
            // do what ON CONFLICT would, at less than half its cost per row.
            let sql = format!(
                "WITH d AS (SELECT * FROM unnest({unnest}) AS d({cols})),
                      u AS (UPDATE {table} AS r SET {updates} FROM d WHERE {on_r} RETURNING {keys_r})
                 INSERT INTO {table} ({cols}) SELECT * FROM d WHERE NOT EXISTS (SELECT 1 FROM u WHERE {on_u})",
                unnest = unnest.join(", "),
                cols = cols.join(", "),
                table = info.table(),
                updates = updates.join(", "),
                on_r = same_key("r", "d"),
                keys_r = keys.iter().map(|k| format!("r.{k}")).collect::<Vec<_>>().join(", "),
                on_u = same_key("u", "d"),
            );
            let params: Vec<&(dyn ToSql + Sync)> = arrays
                .iter()
                .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                .collect();
            tx.execute(&sql, &params).await?;
        }
        Ok(())
    }
}

/// An array parameter of the column's type, with its SQL cast.
fn scalar_array<'a>(
    values: impl Iterator<Item = Option<&'a Scalar>>,
    col: &Column,
) -> (Box<dyn ToSql + Sync>, String) {
    let values: Vec<Option<&Scalar>> = values.collect();
    fn array<T: ToSql + Sync + 'static>(
        values: &[Option<&Scalar>],
        pick: impl Fn(&Scalar) -> Option<T>,
        cast: &str,
    ) -> (Box<dyn ToSql + Sync>, String) {
        (
            Box::new(
                values
                    .iter()
                    .map(|v| v.and_then(&pick))
                    .collect::<Vec<Option<T>>>(),
            ),
            cast.to_owned(),
        )
    }
    match col.ty {
        Type::INT2 | Type::INT4 => array(
            &values,
            |s| {
                if let Scalar::Int(i) = s {
                    i32::try_from(*i).ok()
                } else {
                    None
                }
            },
            "int4[]",
        ),
        Type::INT8 => array(
            &values,
            |s| {
                if let Scalar::Int(i) = s {
                    Some(*i)
                } else {
                    None
                }
            },
            "int8[]",
        ),
        Type::NUMERIC => array(
            &values,
            |s| {
                if let Scalar::Num(d) = s {
                    Some(*d)
                } else {
                    None
                }
            },
            "numeric[]",
        ),
        Type::FLOAT4 | Type::FLOAT8 => array(
            &values,
            |s| {
                if let Scalar::Float(f) = s {
                    Some(*f)
                } else {
                    None
                }
            },
            "float8[]",
        ),
        Type::DATE => array(
            &values,
            |s| {
                if let Scalar::Date(d) = s {
                    Some(*d)
                } else {
                    None
                }
            },
            "date[]",
        ),
        Type::BOOL => array(
            &values,
            |s| {
                if let Scalar::Bool(b) = s {
                    Some(*b)
                } else {
                    None
                }
            },
            "bool[]",
        ),
        _ => array(
            &values,
            |s| {
                Some(match s {
                    Scalar::Text(t) => t.clone(),
                    Scalar::Int(i) => i.to_string(),
                    Scalar::Num(d) => d.to_string(),
                    Scalar::Float(f) => f.to_string(),
                    Scalar::Date(d) => d.to_string(),
                    Scalar::Bool(b) => b.to_string(),
                })
            },
            "text[]",
        ),
    }
}

impl std::fmt::Debug for Accumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accumulator")
            .field(
                "rollups",
                &self
                    .rollups
                    .iter()
                    .map(|r| (&r.info.name, r.map.len()))
                    .collect::<Vec<_>>(),
            )
            .field("min_date", &self.min_date)
            .field("max_date", &self.max_date)
            .finish()
    }
}
