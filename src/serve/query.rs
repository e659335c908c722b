//! The generic query as clients write it (`POST /api/v1/query`, `clue
//! query`), its checks, and the errors of answering it, each naming the
//! field at fault as data.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::dataset::{Dataset, DatasetError};
use crate::domain::time::Grain;
use crate::domain::value::{ValueType, parse_date, parse_number};
use crate::error::{Classify, ErrorKind};
use crate::pg::catalog::SchemaError;
use crate::pg::database::DbError;
use crate::plan::{self, PlanError, RawFilter};
use crate::write::rollups::RollupError;

/// A query as clients write it (`POST /api/v1/query`, `clue query`).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "dataset": "sales_report",
    "measures": ["revenue", "quantity"],
    "dimensions": ["region"],
    "granularity": "month",
    "start_date": "2024-03-15",
    "end_date": "2024-09-14",
    "filters": [{"dimension": "region", "in": ["North", "South"]}],
    "order": [{"field": "revenue", "desc": true}],
    "limit": 100
}))]
pub struct QueryRequest {
    /// A declared dataset (`clue datasets`).
    pub dataset: String,
    /// Measure names of the dataset.
    pub measures: Vec<String>,
    /// Dimension names to group by.
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// Time bucket of each row; absent: one bucket for the whole range.
    #[serde(default)]
    pub granularity: Option<Grain>,
    /// First day included (`YYYY-MM-DD`).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Date)]
    pub start_date: Option<NaiveDate>,
    /// Last day included (`YYYY-MM-DD`).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Date)]
    pub end_date: Option<NaiveDate>,
    /// First instant included (RFC 3339), instead of `start_date`, for
    /// datasets whose time column holds instants.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub from: Option<DateTime<Utc>>,
    /// Last instant included (RFC 3339), instead of `end_date`.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub to: Option<DateTime<Utc>>,
    #[serde(default)]
    pub filters: Vec<RawFilter>,
    /// Sort keys: measures, dimensions or `period`; then by period and dimensions.
    #[serde(default)]
    pub order: Vec<OrderRequest>,
    /// At most this many rows (1 to 100000).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub limit: Option<u32>,
    /// Return every period of the range, empty ones with zero sums and counts.
    #[serde(default)]
    pub gap_fill: bool,
    /// IANA time zone for bucketing. Datasets whose time column is a date
    /// hold calendar dates, which no zone shifts: the name is checked and the
    /// answer is the same in every zone.
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub field: String,
    #[serde(default)]
    pub desc: bool,
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A field of the request is wrong.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("dataset: {0}")]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Rollup(#[from] RollupError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the query ran longer than {} s and was cancelled", .0.as_secs_f64())]
    Timeout(std::time::Duration),
    /// A value in the database that cannot be returned exactly.
    #[error("{column}: has a value clue cannot return exactly ({reason})")]
    Inexact { column: String, reason: String },
}

impl QueryError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> QueryError {
        QueryError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// The request field at fault, for a client's mistakes.
    pub fn field(&self) -> Option<&str> {
        match self {
            QueryError::Invalid { field, .. } => Some(field),
            QueryError::Plan(p) => Some(p.field()),
            QueryError::Dataset(DatasetError::Unknown(_)) => Some("dataset"),
            QueryError::Inexact { column, .. } => Some(column),
            _ => None,
        }
    }

    /// The reason without the field's name.
    pub fn reason(&self) -> String {
        match self {
            QueryError::Invalid { reason, .. } => reason.clone(),
            QueryError::Plan(p) => p.reason(),
            QueryError::Dataset(e) => e.to_string(),
            QueryError::Inexact { reason, .. } => {
                format!("has a value clue cannot return exactly ({reason})")
            }
            other => other.to_string(),
        }
    }
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> Self {
        QueryError::Db(DbError::Query(e))
    }
}

impl Classify for QueryError {
    fn kind(&self) -> ErrorKind {
        match self {
            QueryError::Plan(PlanError::Hidden(_)) => ErrorKind::Denied,
            QueryError::Invalid { .. } | QueryError::Plan(_) | QueryError::Inexact { .. } => {
                ErrorKind::BadInput
            }
            QueryError::Dataset(DatasetError::Unknown(_)) => ErrorKind::BadInput,
            QueryError::Dataset(_) => ErrorKind::Internal,
            QueryError::Schema(e) => e.kind(),
            QueryError::Rollup(e) => e.kind(),
            QueryError::Db(e) => e.kind(),
            QueryError::Timeout(_) => ErrorKind::Timeout,
        }
    }
}

/// The most characters of a filter value.
const MAX_FILTER_TEXT: usize = 1_000;

pub const MAX_LIMIT: u32 = 100_000;

impl QueryRequest {
    /// Checks what needs no dataset: range order, limit, time zone shape,
    /// filter shapes and values.
    pub fn to_query(&self) -> Result<plan::Query, QueryError> {
        if let (Some(s), Some(e)) = (self.start_date, self.end_date)
            && s > e
        {
            return Err(QueryError::invalid(
                "start_date",
                format!("{s} is after end_date {e}"),
            ));
        }
        if let (Some(f), Some(t)) = (self.from, self.to)
            && f > t
        {
            return Err(QueryError::invalid(
                "from",
                format!("{} is after to {}", f.to_rfc3339(), t.to_rfc3339()),
            ));
        }
        if let Some(l) = self.limit
            && !(1..=MAX_LIMIT).contains(&l)
        {
            return Err(QueryError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}, got {l}"),
            ));
        }
        if let Some(tz) = &self.time_zone
            && (tz.is_empty()
                || tz.len() > 64
                || !tz
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c)))
        {
            return Err(QueryError::invalid(
                "time_zone",
                format!(
                    "{:?} is not an IANA time zone name",
                    tz.chars().take(64).collect::<String>()
                ),
            ));
        }
        let filters = self
            .filters
            .iter()
            .map(|f| {
                for v in f.values() {
                    if let serde_json::Value::String(s) = v {
                        if s.contains('\0') {
                            return Err(QueryError::invalid(
                                "filters",
                                format!("a value of {:?} contains a NUL character", f.dimension),
                            ));
                        }
                        if s.chars().count() > MAX_FILTER_TEXT {
                            return Err(QueryError::invalid(
                                "filters",
                                format!(
                                    "a value of {:?} is longer than {MAX_FILTER_TEXT} characters",
                                    f.dimension
                                ),
                            ));
                        }
                    }
                }
                plan::Filter::parse(f.clone()).map_err(|r| QueryError::invalid("filters", r))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(plan::Query {
            measures: self.measures.clone(),
            dimensions: self.dimensions.clone(),
            granularity: self.granularity,
            start: self.start_date,
            end: self.end_date,
            filters,
            order: self
                .order
                .iter()
                .map(|o| plan::Order {
                    field: o.field.clone(),
                    desc: o.desc,
                })
                .collect(),
            limit: self.limit,
            gap_fill: self.gap_fill,
            time_zone: self.time_zone.clone(),
            from: self.from,
            to: self.to,
        })
    }

    /// Checks the filter values against the types of their dimensions: a
    /// boolean is a value of a boolean dimension only, a number one of a
    /// numeric or text dimension; `min` must not be above `max`.
    pub fn check_filter_types(&self, dataset: &Dataset) -> Result<(), QueryError> {
        for f in &self.filters {
            let Some(ty) = dataset.column_type(&f.dimension) else {
                continue; // the planner names unknown dimensions
            };
            for v in f.values() {
                let fits = match v {
                    serde_json::Value::Bool(_) => ty == ValueType::Bool,
                    serde_json::Value::Number(_) => {
                        matches!(ty, ValueType::Int | ValueType::Float | ValueType::Str)
                    }
                    _ => true,
                };
                if !fits {
                    return Err(QueryError::invalid(
                        "filters",
                        format!(
                            "{v} is not a value of {:?}, a {} dimension",
                            f.dimension,
                            ty.name()
                        ),
                    ));
                }
            }
            let text = |v: &Option<serde_json::Value>| match v {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            if let (Some(lo), Some(hi)) = (text(&f.min), text(&f.max)) {
                let inverted = match ty {
                    ValueType::Int | ValueType::Float => {
                        matches!((parse_number(lo.trim()), parse_number(hi.trim())), (Some(a), Some(b)) if a > b)
                    }
                    ValueType::Date => {
                        matches!((parse_date(lo.trim(), None), parse_date(hi.trim(), None)), (Some(a), Some(b)) if a > b)
                    }
                    _ => false,
                };
                if inverted {
                    return Err(QueryError::invalid(
                        "filters",
                        format!("min {lo} of {:?} is above its max {hi}", f.dimension),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Parses a query's JSON, naming the field at fault and the JSON types
/// expected (never Rust's type names).
pub fn parse_request(json: &[u8]) -> Result<QueryRequest, QueryError> {
    // serde reads a struct from a JSON array too; a query is an object.
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{')
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(json)
    {
        let found = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Null => "null",
            serde_json::Value::Object(_) => "an object",
        };
        return Err(QueryError::invalid(
            "body",
            format!("must be a JSON object (a query), found {found}"),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let syntax = matches!(
            e.inner().classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let field = if syntax || path == "." || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        QueryError::invalid(&field, json_reason(e.inner()))
    })
}

/// serde_json's message with Rust's type names turned into JSON's.
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // Drop the position ("at line 1 column 7"): bodies are small.
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut text = text.to_owned();
    for (rust, json) in [
        ("struct QueryRequest", "a query object"),
        ("struct OrderRequest", "an object {field, desc}"),
        ("struct RawFilter", "a filter object"),
        ("enum Grain", "a granularity name"),
        ("u32", "a whole number"),
        ("a borrowed string", "a string"),
    ] {
        text = text.replace(rust, json);
    }
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("is not valid JSON: {text}")
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: serde_json::Value, expect: (&str, &str)) {
        let err = parse_request(json.to_string().as_bytes())
            .and_then(|r| r.to_query().map(|_| r))
            .unwrap_err();
        assert_eq!(
            (err.field().unwrap_or("-"), err.reason().as_str()),
            expect,
            "{json}"
        );
    }

    #[test]
    fn requests_are_checked_naming_the_field() {
        use serde_json::json;
        check(
            json!({"dataset": "s", "measures": ["revenue"], "start_date": "2025-02-01", "end_date": "2025-01-01"}),
            ("start_date", "2025-02-01 is after end_date 2025-01-01"),
        );
        check(
            json!({"dataset": "s", "measures": [], "colour": 1}),
            (
                "colour",
                "unknown field `colour`, expected one of `dataset`, `measures`, `dimensions`, `granularity`, `start_date`, `end_date`, `from`, `to`, `filters`, `order`, `limit`, `gap_fill`, `time_zone`",
            ),
        );
        check(
            json!({"dataset": "s", "measures": ["m"], "filters": [{"dimension": "region", "equals": "N", "in": ["S"]}]}),
            (
                "filters",
                "\"region\" needs exactly one of `equals`, `in`, or `min`/`max`",
            ),
        );
        check(
            json!({"dataset": "s", "measures": ["m"], "limit": 0}),
            ("limit", "must be between 1 and 100000, got 0"),
        );
        check(
            json!({"dataset": "s", "measures": ["m"], "time_zone": "Europe/Paris; drop"}),
            (
                "time_zone",
                "\"Europe/Paris; drop\" is not an IANA time zone name",
            ),
        );
        check(
            json!({"dataset": "s", "measures": ["m"], "filters": [{"dimension": "region", "equals": "a\u{0}b"}]}),
            ("filters", "a value of \"region\" contains a NUL character"),
        );
        // No Rust type names.
        check(
            json!("x"),
            ("body", "must be a JSON object (a query), found a string"),
        );
        check(
            json!([]),
            ("body", "must be a JSON object (a query), found an array"),
        );
        check(
            json!({"dataset": "s", "measures": ["m"], "limit": -1}),
            (
                "limit",
                "invalid value: integer `-1`, expected a whole number",
            ),
        );
        check(
            json!({"dataset": "s", "measures": ["m"], "granularity": "minute"}),
            (
                "granularity",
                "unknown variant `minute`, expected one of `hour`, `day`, `week`, `month`, `quarter`, `year`",
            ),
        );
        let err = parse_request(b"{\"dataset\": ").unwrap_err();
        assert_eq!(err.field(), Some("body"));
        assert!(
            err.reason().starts_with("is not valid JSON: EOF"),
            "{}",
            err.reason()
        );
    }

    #[test]
    fn filter_values_fit_their_dimensions() {
        let catalog = crate::domain::dataset::Catalog::load(None).unwrap();
        let dataset = catalog.get("sales_report").unwrap().clone();
        let check = |filters: serde_json::Value, expect: Option<&str>| {
            let req = parse_request(
                serde_json::json!({"dataset": "sales_report", "measures": ["revenue"], "filters": filters})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
            let got = req.check_filter_types(&dataset).err().map(|e| e.reason());
            assert_eq!(got.as_deref(), expect, "{filters}");
        };
        check(
            serde_json::json!([{"dimension": "region", "equals": "North"}]),
            None,
        );
        check(
            serde_json::json!([{"dimension": "product_id", "equals": 1001}]),
            None,
        );
        check(
            serde_json::json!([{"dimension": "region", "equals": false}]),
            Some("false is not a value of \"region\", a str dimension"),
        );
        check(
            serde_json::json!([{"dimension": "product_id", "min": 2000, "max": 1000}]),
            Some("min 2000 of \"product_id\" is above its max 1000"),
        );
        check(
            serde_json::json!([{"dimension": "product_id", "min": 1000, "max": 1000}]),
            None,
        );
    }
}
