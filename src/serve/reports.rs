//! Prototype 000's three reports over `sales_report`: their filters, the SQL
//! that answers them, and their rows.
//!
//! Architecture Invariant: building a report's SQL is pure (filters in, SQL
//! text and parameters out) and only adds a date predicate when a date is
//! given, so PostgreSQL prunes partitions at plan time; values are always
//! bound parameters.

use std::fmt;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::dataset::Catalog;
use crate::domain::time::Grain;
use crate::pg::database::Database;
use crate::plan::{RawFilter, Served, View};
use crate::serve::cache::Cache;
use crate::serve::execute::{self, Cell, Row};
use crate::serve::query::{OrderRequest, QueryError, QueryRequest};

/// A report row as CSV: the header every report of its kind has, and its
/// record (for `?format=csv` and `clue export-reports` alike).
pub trait CsvRow {
    const HEADER: &'static [&'static str];
    fn record(&self) -> Vec<String>;
}

/// Rows as a CSV document with its header.
pub fn to_csv<T: CsvRow>(rows: &[T]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(T::HEADER)?;
    for row in rows {
        w.write_record(
            row.record()
                .iter()
                .map(|c| spreadsheet_safe(c).into_owned()),
        )?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// A CSV cell a spreadsheet will not run: text starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return is prefixed with `'` (OWASP's
/// advice against formula injection); numbers, negative ones included,
/// are left as they are.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && cell.parse::<f64>().is_err();
    if risky {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// An exact amount of money: serialized as a JSON number with exactly two
/// decimals (`70575.00`), never passed through a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(Decimal);

impl Money {
    pub fn new(d: Decimal) -> Money {
        let mut d =
            d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        d.rescale(2);
        Money(d)
    }

    pub fn decimal(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As an exact cell: a raw JSON number keeps every digit.
        Cell::Decimal(self.0).serialize(s)
    }
}

impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some("Exact amount: a JSON number with exactly two decimals, computed in the database (numeric)."))
            .examples([serde_json::json!(70575.00)])
            .into()
    }
}

impl utoipa::ToSchema for Money {}

/// The filters every report takes; all optional, dates inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    /// Breakdown only: exact product name.
    pub product: Option<String>,
    /// Breakdown only: exact region.
    pub region: Option<String>,
}

/// A month's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MonthlySalesSummary {
    /// Year and month, `YYYY-MM`.
    #[schema(example = "2025-04")]
    pub month: String,
    /// Sum of quantity_sold.
    #[schema(example = 845)]
    pub quantity: i64,
    /// Sum of sales_amount.
    pub revenue: Money,
}

/// A month's totals for one product in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MonthlySalesBreakdown {
    #[schema(example = "2025-04")]
    pub month: String,
    #[schema(example = "WidgetA")]
    pub product_name: String,
    #[schema(example = "North")]
    pub region: String,
    pub revenue: Money,
    #[schema(example = 50)]
    pub quantity: i64,
}

/// A product among the five with the highest revenue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TopProductByRevenue {
    /// Rank by revenue as SQL `RANK()` gives it: ties share a rank.
    #[schema(example = 1)]
    pub rank: i64,
    #[schema(example = 1001)]
    pub product_id: i32,
    #[schema(example = "WidgetA")]
    pub product_name: String,
    pub revenue: Money,
}

/// The reports of prototype 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    MonthlySummary,
    MonthlyBreakdown,
    Top5ByRevenue,
}

impl Report {
    /// The path segment, also used to name CSV downloads.
    pub fn slug(self) -> &'static str {
        match self {
            Report::MonthlySummary => "monthly-sales-summary",
            Report::MonthlyBreakdown => "monthly-sales-breakdown",
            Report::Top5ByRevenue => "top-5-by-revenue",
        }
    }
}

impl Report {
    /// The report as a query over the `sales_report` dataset.
    pub fn query(self, filter: &ReportFilter) -> QueryRequest {
        let mut filters = Vec::new();
        let mut equals = |dimension: &str, value: &Option<String>| {
            if let Some(v) = value {
                filters.push(RawFilter {
                    dimension: dimension.to_owned(),
                    equals: Some(serde_json::Value::String(v.clone())),
                    in_: None,
                    min: None,
                    max: None,
                });
            }
        };
        let (measures, dimensions, granularity, order, limit): (
            &[&str],
            &[&str],
            _,
            Vec<OrderRequest>,
            _,
        ) = match self {
            Report::MonthlySummary => (
                &["quantity", "revenue"],
                &[],
                Some(Grain::Month),
                vec![],
                None,
            ),
            Report::MonthlyBreakdown => {
                equals("product_name", &filter.product);
                equals("region", &filter.region);
                (
                    &["revenue", "quantity"],
                    &["product_name", "region"],
                    Some(Grain::Month),
                    vec![],
                    None,
                )
            }
            Report::Top5ByRevenue => (
                &["revenue"],
                &["product_id", "product_name"],
                None,
                vec![
                    OrderRequest {
                        field: "revenue".into(),
                        desc: true,
                    },
                    OrderRequest {
                        field: "product_id".into(),
                        desc: false,
                    },
                ],
                Some(5),
            ),
        };
        QueryRequest {
            dataset: DATASET.to_owned(),
            measures: measures.iter().map(|s| s.to_string()).collect(),
            dimensions: dimensions.iter().map(|s| s.to_string()).collect(),
            granularity,
            start_date: filter.start_date,
            end_date: filter.end_date,
            from: None,
            to: None,
            filters,
            order,
            limit,
            gap_fill: false,
            time_zone: None,
        }
    }
}

/// The dataset prototype 000's reports read.
pub const DATASET: &str = "sales_report";

/// A report's rows, shaped as prototype 000 answered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRows {
    Summary(Vec<MonthlySalesSummary>),
    Breakdown(Vec<MonthlySalesBreakdown>),
    Top5(Vec<TopProductByRevenue>),
}

fn text(row: &mut Row, key: &str) -> String {
    match row.take(key) {
        Some(Cell::Text(t)) => t,
        _ => String::new(),
    }
}

fn int(row: &Row, key: &str) -> i64 {
    match row.get(key) {
        Some(Cell::Int(i)) => *i,
        _ => 0,
    }
}

fn money(row: &Row, key: &str) -> Money {
    Money::new(row.decimal(key))
}

/// `YYYY-MM` of a row's period.
fn month(row: &Row) -> String {
    use chrono::Datelike;
    match row.get("period") {
        // Not chrono's `format`: this runs once per row of large answers.
        Some(Cell::Date(d)) => format!("{:04}-{:02}", d.year(), d.month()),
        _ => String::new(),
    }
}

/// Runs a report through the planner, returning its rows and where they came from.
pub async fn run(
    db: &Database,
    catalog: &Catalog,
    cache: Option<&Cache>,
    report: Report,
    filter: &ReportFilter,
    view: &View,
) -> Result<(ReportRows, Vec<Served>), QueryError> {
    let answer = execute::execute(db, catalog, &report.query(filter), view, false, cache).await?;
    let rows = answer.rows;
    let shaped = match report {
        Report::MonthlySummary => ReportRows::Summary(
            rows.iter()
                .map(|r| MonthlySalesSummary {
                    month: month(r),
                    quantity: int(r, "quantity"),
                    revenue: money(r, "revenue"),
                })
                .collect(),
        ),
        Report::MonthlyBreakdown => ReportRows::Breakdown(
            rows.into_iter()
                .map(|mut r| MonthlySalesBreakdown {
                    month: month(&r),
                    product_name: text(&mut r, "product_name"),
                    region: text(&mut r, "region"),
                    revenue: money(&r, "revenue"),
                    quantity: int(&r, "quantity"),
                })
                .collect(),
        ),
        Report::Top5ByRevenue => {
            // RANK(): one more than the number of rows with a strictly higher
            // revenue; rows arrive sorted by revenue, highest first.
            let mut out: Vec<TopProductByRevenue> = Vec::with_capacity(rows.len());
            for (i, mut r) in rows.into_iter().enumerate() {
                let revenue = money(&r, "revenue");
                let rank = match out.last() {
                    Some(prev) if prev.revenue == revenue => prev.rank,
                    _ => i as i64 + 1,
                };
                out.push(TopProductByRevenue {
                    rank,
                    product_id: int(&r, "product_id") as i32,
                    product_name: text(&mut r, "product_name"),
                    revenue,
                });
            }
            ReportRows::Top5(out)
        }
    };
    Ok((shaped, answer.served_from))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formulas_are_defused_and_numbers_kept() {
        let check = |cell: &str, expect: &str| {
            assert_eq!(super::spreadsheet_safe(cell), expect, "{cell:?}");
        };
        check("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")");
        check("+1+2", "'+1+2");
        check("@SUM(A1)", "'@SUM(A1)");
        check("-2+3", "'-2+3");
        check("\t=1", "'\t=1");
        check("-12.50", "-12.50");
        check("1e3", "1e3");
        check("Widget-A", "Widget-A");
        check("", "");
    }

    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn reports_are_queries_over_the_dataset() {
        let filter = ReportFilter {
            start_date: Some(d("2025-01-01")),
            end_date: Some(d("2025-01-31")),
            product: Some("WidgetA".into()),
            region: Some("North".into()),
        };
        let q = Report::MonthlyBreakdown.query(&filter);
        assert_eq!(
            (q.measures.clone(), q.dimensions.clone(), q.granularity),
            (
                vec!["revenue".to_string(), "quantity".into()],
                vec!["product_name".to_string(), "region".into()],
                Some(Grain::Month)
            )
        );
        let filters: Vec<(String, Option<serde_json::Value>)> = q
            .filters
            .iter()
            .map(|f| (f.dimension.clone(), f.equals.clone()))
            .collect();
        assert_eq!(
            filters,
            [
                ("product_name".to_string(), Some("WidgetA".into())),
                ("region".to_string(), Some("North".into()))
            ]
        );
        // product and region filter only the breakdown.
        assert!(Report::Top5ByRevenue.query(&filter).filters.is_empty());
        let top = Report::Top5ByRevenue.query(&filter);
        assert_eq!(
            (top.limit, top.granularity, top.start_date),
            (Some(5), None, Some(d("2025-01-01")))
        );
    }

    #[test]
    fn money_is_an_exact_json_number_with_two_decimals() {
        let m = |s: &str| serde_json::to_string(&Money::new(s.parse().unwrap())).unwrap();
        assert_eq!(m("70575"), "70575.00");
        assert_eq!(m("0.1"), "0.10");
        assert_eq!(m("12345678901234567.89"), "12345678901234567.89");
        assert_eq!(m("-2.005"), "-2.01");
    }
}
