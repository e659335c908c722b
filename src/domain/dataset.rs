//! Declared datasets: a table, its time column, its columns with validation
//! rules, the dimensions and measures reports may ask for, and the rollups
//! kept for it. Definitions are YAML files (built-in ones ship in the binary;
//! users drop more into the models directory), parsed into checked types.
//!
//! Architecture Invariant: parsing and checking a definition does no I/O
//! beyond reading its file; checks against the live table happen where the
//! table is used (`rollup`).

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::rules::{ModelError, ValidationSchema};
use crate::domain::time::{Grain, TimeKind};
use crate::domain::value::ValueType;

/// The built-in definitions.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "sales_report.yaml",
        include_str!("../../models/sales_report.yaml"),
    ),
    (
        "learning_log.yaml",
        include_str!("../../models/learning_log.yaml"),
    ),
    ("sales.yaml", include_str!("../../models/sales.yaml")),
    ("country.yaml", include_str!("../../models/country.yaml")),
    (
        "analytical_orders.yaml",
        include_str!("../../models/analytical_orders.yaml"),
    ),
    (
        "analytical_order_items.yaml",
        include_str!("../../models/analytical_order_items.yaml"),
    ),
];

/// Checks a table name (`table` or `schema.table`) before it goes near SQL:
/// letters, digits, `_` and `$`, at most 63 bytes a part.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
            && p.len() <= 63
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) {
        return Err(format!(
            "{name:?} is not a table name clue accepts (letters, digits, _ and $, optionally schema-qualified as schema.table)"
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: not a valid dataset definition: {reason}")]
    Yaml { file: String, reason: String },
    #[error("{file}: field {field:?}: {reason}")]
    Field {
        file: String,
        field: String,
        reason: String,
    },
    #[error(transparent)]
    Columns(#[from] ModelError),
    #[error("dataset {name:?} is defined twice: in {first} and in {second}")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    #[error("unknown dataset {0:?}")]
    Unknown(String),
}

impl crate::error::Classify for DatasetError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::BadInput
    }
}

/// How a measure aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Sum,
    Count,
    Min,
    Max,
    Avg,
    CountDistinct,
}

impl Agg {
    pub fn name(self) -> &'static str {
        match self {
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Avg => "avg",
            Agg::CountDistinct => "count_distinct",
        }
    }

    fn parse(name: &str) -> Option<Agg> {
        Some(match name {
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "avg" => Agg::Avg,
            "count_distinct" => Agg::CountDistinct,
            _ => return None,
        })
    }
}

/// A named aggregate over a column (`None` = every row, for `count`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub name: String,
    pub agg: Agg,
    pub column: Option<String>,
}

/// A rollup: the dataset pre-aggregated at a grain over some dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupDef {
    pub name: String,
    pub grain: Grain,
    pub dimensions: Vec<String>,
    /// The measures it keeps partials for; `None`: every additive one.
    pub measures: Option<Vec<String>>,
    /// The dimension it is read by: its table is ordered by it first, so a
    /// query filtered to one value reads only that value's rows.
    pub read_by: Option<String>,
}

/// A declared dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub table: String,
    /// The column placing each record in time; `None` for a reference
    /// table (countries, products), which has no rollups and answers no
    /// question about time.
    pub time_column: Option<String>,
    /// What the time column holds: the finest grain it can be asked at.
    pub time_kind: Option<TimeKind>,
    pub columns: ValidationSchema,
    pub dimensions: Vec<String>,
    pub measures: Vec<Measure>,
    pub rollups: Vec<RollupDef>,
    /// How long the idempotency keys of its records are remembered; `None`:
    /// forever (keys that are the records' identity).
    pub idempotency_ttl: Option<std::time::Duration>,
    /// The column whose value identifies a record: each value is written
    /// once, claimed in the ledger under the dataset's name by every write
    /// path that takes single events.
    pub key: Option<String>,
    /// The file it came from, for messages.
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    dataset: String,
    table: Option<String>,
    #[serde(default)]
    time_column: Option<String>,
    columns: yaml_serde::Value,
    #[serde(default)]
    dimensions: Vec<String>,
    #[serde(default)]
    measures: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    rollups: Vec<RawRollup>,
    /// `never` (the default), or `N hours` / `N days`.
    #[serde(default)]
    idempotency_ttl: Option<String>,
    /// The column identifying a record (written once).
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollup {
    name: Option<String>,
    grain: String,
    #[serde(default)]
    dimensions: Vec<String>,
    #[serde(default)]
    measures: Option<Vec<String>>,
    #[serde(default)]
    read_by: Option<String>,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 48
}

impl Dataset {
    pub fn parse(text: &str, file: &str) -> Result<Dataset, DatasetError> {
        crate::domain::rules::nesting(text).map_err(|reason| DatasetError::Yaml {
            file: file.to_owned(),
            reason,
        })?;
        let raw: RawDataset = yaml_serde::from_str(text).map_err(|e| DatasetError::Yaml {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
        let field = |field: &str, reason: String| DatasetError::Field {
            file: file.to_owned(),
            field: field.to_owned(),
            reason,
        };
        if !is_identifier(&raw.dataset) {
            return Err(field(
                "dataset",
                format!(
                    "{:?} must be lower-case letters, digits and _ (at most 48)",
                    raw.dataset
                ),
            ));
        }
        let table = raw.table.unwrap_or_else(|| raw.dataset.clone());
        check_table_name(&table).map_err(|reason| field("table", reason))?;
        let columns = ValidationSchema::from_yaml(raw.columns, file)?;
        let column_type = |name: &str| columns.column(name).map(|c| c.ty);
        let time_kind = match raw.time_column.as_deref().map(|t| (t, column_type(t))) {
            None => None,
            Some((_, Some(ValueType::Date))) => Some(TimeKind::Date),
            Some((_, Some(ValueType::Timestamp))) => Some(TimeKind::Instant),
            Some((t, Some(other))) => {
                return Err(field(
                    "time_column",
                    format!(
                        "{t:?} must be a date or timestamp column, not {}",
                        other.name()
                    ),
                ));
            }
            Some((t, None)) => {
                return Err(field(
                    "time_column",
                    format!("{t:?} is not one of the columns"),
                ));
            }
        };
        for d in &raw.dimensions {
            if column_type(d).is_none() {
                return Err(field(
                    "dimensions",
                    format!("{d:?} is not one of the columns"),
                ));
            }
            if Some(d) == raw.time_column.as_ref() {
                return Err(field(
                    "dimensions",
                    format!("{d:?} is the time column; ask for it with a granularity instead"),
                ));
            }
        }
        let measures = raw
            .measures
            .iter()
            .map(|(name, spec)| parse_measure(name, spec, &raw.dimensions, &columns, &field))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rollups: Vec<RollupDef> = Vec::new();
        for (i, r) in raw.rollups.into_iter().enumerate() {
            let rollup = parse_rollup(
                r,
                &raw.dataset,
                time_kind,
                &raw.dimensions,
                &measures,
                &rollups,
            )
            .map_err(|reason| field(&format!("rollups[{i}]"), reason))?;
            rollups.push(rollup);
        }
        if let Some(k) = &raw.key
            && columns.column(k).is_none()
        {
            return Err(field("key", format!("{k:?} is not one of the columns")));
        }
        Ok(Dataset {
            key: raw.key,
            name: raw.dataset,
            table,
            time_column: raw.time_column,
            time_kind,
            columns,
            dimensions: raw.dimensions,
            measures,
            rollups,
            idempotency_ttl: match raw.idempotency_ttl.as_deref() {
                None => None,
                Some(text) => parse_ttl(text).map_err(|reason| field("idempotency_ttl", reason))?,
            },
            source: file.to_owned(),
        })
    }

    /// The time column and what it holds; `None` for a reference table.
    pub fn time(&self) -> Option<(&str, TimeKind)> {
        Some((self.time_column.as_deref()?, self.time_kind?))
    }

    /// The time column of a dataset with rollups (a definition with rollups
    /// and no time column is refused when parsed).
    pub fn rollup_time(&self) -> (&str, TimeKind) {
        self.time()
            .expect("a dataset with rollups has a time column (checked when parsed)")
    }

    pub fn measure(&self, name: &str) -> Option<&Measure> {
        self.measures.iter().find(|m| m.name == name)
    }

    /// The value type of a column.
    pub fn column_type(&self, name: &str) -> Option<ValueType> {
        self.columns.column(name).map(|c| c.ty)
    }

    /// Whether a measure can be kept in rollups: its partial aggregates must
    /// combine exactly, so no count distinct. (Sums of float table columns
    /// are refused where the table is known: see `rollup`.)
    pub fn is_additive(&self, m: &Measure) -> bool {
        m.agg != Agg::CountDistinct
    }
}

/// `never`, `N hours` or `N days` (N a whole number from 1).
fn parse_ttl(text: &str) -> Result<Option<std::time::Duration>, String> {
    let text = text.trim();
    if text == "never" {
        return Ok(None);
    }
    let bad = || format!("{text:?} is not `never`, `N hours` or `N days`");
    let (n, unit) = text.split_once(' ').ok_or_else(bad)?;
    let n: u64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let hours = match unit.trim() {
        "hour" | "hours" => n,
        "day" | "days" => n.checked_mul(24).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(Some(std::time::Duration::from_secs(
        hours.checked_mul(3600).ok_or_else(bad)?,
    )))
}

/// One measure of a definition: `name: {aggregate: column}`.
fn parse_measure(
    name: &str,
    spec: &BTreeMap<String, String>,
    dimensions: &[String],
    columns: &ValidationSchema,
    field: &impl Fn(&str, String) -> DatasetError,
) -> Result<Measure, DatasetError> {
    let at = format!("measures.{name}");
    if !is_identifier(name) {
        return Err(field(
            "measures",
            format!("{name:?} must be lower-case letters, digits and _"),
        ));
    }
    if dimensions.iter().any(|d| d == name) || name == "period" {
        return Err(field(
            "measures",
            format!("{name:?} is also a dimension name"),
        ));
    }
    let [(agg_name, column)] = spec.iter().collect::<Vec<_>>()[..] else {
        return Err(field(
            &at,
            "must be one aggregate, such as {sum: sales_amount}".into(),
        ));
    };
    let agg = Agg::parse(agg_name).ok_or_else(|| {
        field(
            &at,
            format!(
                "unknown aggregate {agg_name:?}; expected sum, count, min, max, avg or count_distinct"
            ),
        )
    })?;
    let column = if column == "*" {
        if agg != Agg::Count {
            return Err(field(&at, "only count may count every row (\"*\")".into()));
        }
        None
    } else {
        let ty = columns
            .column(column)
            .map(|c| c.ty)
            .ok_or_else(|| field(&at, format!("{column:?} is not one of the columns")))?;
        if matches!(agg, Agg::Sum | Agg::Avg) && !matches!(ty, ValueType::Int | ValueType::Float) {
            return Err(field(
                &at,
                format!(
                    "{agg_name} needs a numeric column; {column:?} is {}",
                    ty.name()
                ),
            ));
        }
        Some(column.clone())
    };
    Ok(Measure {
        name: name.to_owned(),
        agg,
        column,
    })
}

/// One rollup of a definition; the error is the reason (the caller names
/// `rollups[i]`).
fn parse_rollup(
    r: RawRollup,
    dataset: &str,
    time_kind: Option<TimeKind>,
    dimensions: &[String],
    measures: &[Measure],
    earlier: &[RollupDef],
) -> Result<RollupDef, String> {
    let Some(time_kind) = time_kind else {
        return Err("a rollup aggregates by time: the dataset needs a time_column".into());
    };
    let allowed = time_kind.rollup_grains();
    let grain = match Grain::parse(&r.grain) {
        Some(g) if allowed.contains(&g) => g,
        _ => {
            let names: Vec<&str> = allowed.iter().map(|g| g.unit()).collect();
            return Err(format!(
                "grain {:?} is not supported; rollups of a {} column are {}",
                r.grain,
                time_kind.name(),
                names.join(", ")
            ));
        }
    };
    if let Some(d) = r.dimensions.iter().find(|d| !dimensions.contains(d)) {
        return Err(format!("{d:?} is not one of the dataset's dimensions"));
    }
    let name = r.name.unwrap_or_else(|| {
        let mut n = format!("{dataset}_{grain}");
        for d in &r.dimensions {
            n.push('_');
            n.push_str(d);
        }
        n
    });
    if !is_identifier(&name) || name.len() > 56 {
        return Err(format!(
            "name {name:?} must be lower-case letters, digits and _ (at most 56); give a shorter `name`"
        ));
    }
    if earlier.iter().any(|x| x.name == name) {
        return Err(format!("name {name:?} is used twice"));
    }
    for m in r.measures.iter().flatten() {
        match measures.iter().find(|x| &x.name == m) {
            None => return Err(format!("{m:?} is not one of the dataset's measures")),
            Some(x) if x.agg == Agg::CountDistinct => {
                return Err(format!(
                    "{m:?} is a count_distinct, which partial counts cannot give; queries of it read the facts"
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(d) = &r.read_by
        && !r.dimensions.contains(d)
    {
        return Err(format!(
            "read_by: {d:?} is not one of the rollup's dimensions"
        ));
    }
    Ok(RollupDef {
        name,
        grain,
        dimensions: r.dimensions,
        measures: r.measures,
        read_by: r.read_by,
    })
}

/// All known datasets.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub datasets: Vec<Dataset>,
}

impl Catalog {
    /// The built-in datasets plus every `*.yaml`/`*.yml` dataset file in
    /// `dir` (a file there with a built-in's name replaces it). A missing
    /// directory is fine; a malformed file is an error naming it.
    pub fn load(dir: Option<&Path>) -> Result<Catalog, DatasetError> {
        let mut files: BTreeMap<String, (String, String)> = BUILT_IN
            .iter()
            .map(|(name, text)| {
                (
                    (*name).to_owned(),
                    ((*text).to_owned(), format!("built-in {name}")),
                )
            })
            .collect();
        if let Some(dir) = dir
            && dir.is_dir()
        {
            let entries = std::fs::read_dir(dir).map_err(|e| DatasetError::Read {
                file: dir.display().to_string(),
                source: e,
            })?;
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths {
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if !matches!(ext, "yaml" | "yml") {
                    continue;
                }
                let file = path.display().to_string();
                let read_err = |e| DatasetError::Read {
                    file: file.clone(),
                    source: e,
                };
                // A definition is read whole: a file past the bound is
                // refused before it is (a probe sent 200 KB of nesting).
                let size = std::fs::metadata(&path).map_err(read_err)?.len();
                if size > crate::domain::rules::MAX_SCHEMA_BYTES {
                    return Err(DatasetError::Yaml {
                        file,
                        reason: format!("is {size} bytes; a definition file is at most 1 MiB"),
                    });
                }
                let text = std::fs::read_to_string(&path).map_err(read_err)?;
                // Plain validation schemas (no `dataset:` key) may live beside definitions.
                if !text.lines().any(|l| l.starts_with("dataset:")) {
                    continue;
                }
                let key = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                files.insert(key, (text, file));
            }
        }
        let mut catalog = Catalog::default();
        for (text, file) in files.values() {
            let d = Dataset::parse(text, file)?;
            if let Some(other) = catalog.datasets.iter().find(|o| o.name == d.name) {
                return Err(DatasetError::Duplicate {
                    name: d.name,
                    first: other.source.clone(),
                    second: d.source,
                });
            }
            catalog.datasets.push(d);
        }
        Ok(catalog)
    }

    pub fn get(&self, name: &str) -> Result<&Dataset, DatasetError> {
        self.datasets
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| DatasetError::Unknown(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_expire_as_declared() {
        let hours = |h: u64| Some(std::time::Duration::from_secs(h * 3600));
        assert_eq!(parse_ttl("never"), Ok(None));
        assert_eq!(parse_ttl("36 hours"), Ok(hours(36)));
        assert_eq!(parse_ttl("1 day"), Ok(hours(24)));
        assert!(parse_ttl("0 days").is_err());
        assert!(parse_ttl("3 weeks").is_err());
        let catalog = Catalog::load(None).unwrap();
        assert_eq!(catalog.get("learning_log").unwrap().idempotency_ttl, None);
    }

    #[test]
    fn built_in_sales_report() {
        let c = Catalog::load(None).unwrap();
        let d = c.get("sales_report").unwrap();
        assert_eq!(d.table, "sales_report");
        assert_eq!(d.time_column.as_deref(), Some("sales_date"));
        assert_eq!(d.dimensions, ["product_id", "product_name", "region"]);
        let revenue = d.measure("revenue").unwrap();
        assert_eq!(
            (revenue.agg, revenue.column.as_deref()),
            (Agg::Sum, Some("sales_amount"))
        );
        assert!(d.is_additive(revenue));
        assert!(!d.is_additive(d.measure("products").unwrap()));
        let names: Vec<&str> = d.rollups.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sales_report_day",
                "sales_report_month",
                "sales_report_day_region",
                "sales_report_month_product",
                "sales_report_month_product_region"
            ]
        );
    }

    #[test]
    fn a_reference_table_has_no_time_column() {
        let d = Dataset::parse(
            "dataset: t\ncolumns: {n: int, s: str}\ndimensions: [s]\nmeasures: {c: {count: \"*\"}}\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!((d.time(), d.rollups.len()), (None, 0));
        let country = Catalog::load(None).unwrap();
        assert_eq!(country.get("country").unwrap().time(), None);
    }

    fn check_error(yaml: &str, expect: &str) {
        let err = Dataset::parse(yaml, "d.yaml").unwrap_err().to_string();
        assert!(err.contains(expect), "expected {expect:?} in {err:?}");
    }

    const BASE: &str = "dataset: t\ntime_column: d\ncolumns: {d: date, n: int, s: str, f: float}\n";

    #[test]
    fn malformed_definitions_name_file_and_field() {
        check_error(
            "dataset: T\ntime_column: d\ncolumns: {d: date}\n",
            "d.yaml: field \"dataset\": \"T\" must be lower-case",
        );
        check_error(
            "dataset: t\ntime_column: x\ncolumns: {d: date}\n",
            "field \"time_column\": \"x\" is not one of the columns",
        );
        check_error(
            &format!(
                "{BASE}dimensions: [n, s]\nrollups: [{{grain: day, dimensions: [n], read_by: s}}]\n"
            ),
            "read_by: \"s\" is not one of the rollup's dimensions",
        );
        check_error(
            &format!("{BASE}key: order_id\n"),
            "field \"key\": \"order_id\" is not one of the columns",
        );
        check_error(
            &format!("{BASE}idempotency_ttl: soon\n"),
            "field \"idempotency_ttl\": \"soon\" is not `never`, `N hours` or `N days`",
        );
        check_error(
            "dataset: t\ntime_column: n\ncolumns: {n: int}\n",
            "\"n\" must be a date or timestamp column, not int",
        );
        check_error(
            "dataset: t\ncolumns: {n: int}\nrollups: [{grain: day}]\n",
            "field \"rollups[0]\": a rollup aggregates by time: the dataset needs a time_column",
        );
        check_error(
            &format!("{BASE}dimensions: [zz]\n"),
            "field \"dimensions\": \"zz\" is not one of the columns",
        );
        check_error(
            &format!("{BASE}measures: {{m: {{median: n}}}}\n"),
            "field \"measures.m\": unknown aggregate \"median\"",
        );
        check_error(
            &format!("{BASE}measures: {{m: {{sum: s}}}}\n"),
            "sum needs a numeric column; \"s\" is str",
        );
        check_error(
            &format!("{BASE}measures: {{m: {{sum: \"*\"}}}}\n"),
            "only count may count every row",
        );
        check_error(
            &format!("{BASE}dimensions: [s]\nrollups: [{{grain: week}}]\n"),
            "field \"rollups[0]\": grain \"week\" is not supported",
        );
        check_error(
            &format!("{BASE}rollups: [{{grain: day, dimensions: [s]}}]\n"),
            "\"s\" is not one of the dataset's dimensions",
        );
        check_error(
            &format!("{BASE}rollups: [{{grain: day}}, {{grain: day}}]\n"),
            "name \"t_day\" is used twice",
        );
        check_error(
            &format!(
                "{BASE}measures: {{total: {{sum: n}}}}\nrollups: [{{grain: day, measures: [totl]}}]\n"
            ),
            "field \"rollups[0]\": \"totl\" is not one of the dataset's measures",
        );
        check_error(
            &format!(
                "{BASE}measures: {{pages: {{count_distinct: s}}}}\nrollups: [{{grain: day, measures: [pages]}}]\n"
            ),
            "field \"rollups[0]\": \"pages\" is a count_distinct, which partial counts cannot give",
        );
        check_error(
            &format!("{BASE}colour: red\n"),
            "d.yaml: not a valid dataset definition: unknown field `colour`",
        );
        check_error(
            "dataset: t\ntime_column: d\ncolumns: {d: dat}\n",
            "unknown type \"dat\"",
        );
    }
}
