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
use tokio_postgres::types::ToSql;

use crate::db::{Database, DbError};

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
        // A raw JSON number keeps every digit; a float would not.
        let raw = serde_json::value::RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
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

/// SQL text and the parameters to bind, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    pub text: String,
    pub params: Vec<Param>,
}

/// A bound parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Date(NaiveDate),
    Text(String),
}

impl Param {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Date(d) => d,
            Param::Text(t) => t,
        }
    }
}

/// The WHERE clause for `filter`, numbering parameters from 1.
fn where_clause(filter: &ReportFilter, report: Report) -> (String, Vec<Param>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    let mut add = |cond: &str, p: Param| {
        params.push(p);
        conditions.push(format!("{cond} ${}", params.len()));
    };
    if let Some(d) = filter.start_date {
        add("sales_date >=", Param::Date(d));
    }
    if let Some(d) = filter.end_date {
        add("sales_date <=", Param::Date(d));
    }
    if report == Report::MonthlyBreakdown {
        if let Some(p) = &filter.product {
            add("product_name =", Param::Text(p.clone()));
        }
        if let Some(r) = &filter.region {
            add("region =", Param::Text(r.clone()));
        }
    }
    if conditions.is_empty() {
        (String::new(), params)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), params)
    }
}

/// The SQL of a report (prototype 000's queries, with exact sums).
pub fn sql(report: Report, filter: &ReportFilter) -> Sql {
    let (filter_sql, params) = where_clause(filter, report);
    let text = match report {
        Report::MonthlySummary => format!(
            "SELECT to_char(date_trunc('month', sales_date), 'YYYY-MM') AS month,
                    sum(quantity_sold)::int8 AS quantity, sum(sales_amount) AS revenue
               FROM sales_report{filter_sql}
              GROUP BY 1 ORDER BY 1"
        ),
        Report::MonthlyBreakdown => format!(
            "SELECT to_char(date_trunc('month', sales_date), 'YYYY-MM') AS month, product_name, region,
                    sum(sales_amount) AS revenue, sum(quantity_sold)::int8 AS quantity
               FROM sales_report{filter_sql}
              GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ),
        Report::Top5ByRevenue => format!(
            "SELECT rank() OVER (ORDER BY sum(sales_amount) DESC) AS rank, product_id, product_name,
                    sum(sales_amount) AS revenue
               FROM sales_report{filter_sql}
              GROUP BY product_id, product_name
              ORDER BY revenue DESC, product_id LIMIT 5"
        ),
    };
    Sql { text, params }
}

/// Runs a report's SQL and maps its rows with `f`.
async fn run<T>(
    db: &Database,
    report: Report,
    filter: &ReportFilter,
    f: impl Fn(&tokio_postgres::Row) -> T,
) -> Result<Vec<T>, DbError> {
    let sql = sql(report, filter);
    let client = db.client().await?;
    let statement = client.prepare_cached(&sql.text).await?;
    let params: Vec<&(dyn ToSql + Sync)> = sql.params.iter().map(Param::as_sql).collect();
    let rows = client.query(&statement, &params).await?;
    Ok(rows.iter().map(f).collect())
}

pub async fn monthly_summary(
    db: &Database,
    filter: &ReportFilter,
) -> Result<Vec<MonthlySalesSummary>, DbError> {
    run(db, Report::MonthlySummary, filter, |r| {
        MonthlySalesSummary {
            month: r.get(0),
            quantity: r.get(1),
            revenue: Money::new(r.get(2)),
        }
    })
    .await
}

pub async fn monthly_breakdown(
    db: &Database,
    filter: &ReportFilter,
) -> Result<Vec<MonthlySalesBreakdown>, DbError> {
    run(db, Report::MonthlyBreakdown, filter, |r| {
        MonthlySalesBreakdown {
            month: r.get(0),
            product_name: r.get(1),
            region: r.get(2),
            revenue: Money::new(r.get(3)),
            quantity: r.get(4),
        }
    })
    .await
}

pub async fn top_5_by_revenue(
    db: &Database,
    filter: &ReportFilter,
) -> Result<Vec<TopProductByRevenue>, DbError> {
    run(db, Report::Top5ByRevenue, filter, |r| TopProductByRevenue {
        rank: r.get(0),
        product_id: r.get(1),
        product_name: r.get(2),
        revenue: Money::new(r.get(3)),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn check(report: Report, filter: ReportFilter, expect_where: &str, expect_params: &[Param]) {
        let sql = sql(report, &filter);
        let squashed = sql.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let got_where = squashed
            .split(" FROM sales_report")
            .nth(1)
            .and_then(|rest| rest.split(" GROUP BY").next())
            .unwrap_or("")
            .trim();
        assert_eq!(got_where, expect_where, "{squashed}");
        assert_eq!(sql.params, expect_params);
    }

    #[test]
    fn filters_become_predicates_only_when_given() {
        check(Report::MonthlySummary, ReportFilter::default(), "", &[]);
        check(
            Report::MonthlySummary,
            ReportFilter {
                start_date: Some(d("2025-04-01")),
                ..Default::default()
            },
            "WHERE sales_date >= $1",
            &[Param::Date(d("2025-04-01"))],
        );
        check(
            Report::MonthlyBreakdown,
            ReportFilter {
                start_date: Some(d("2025-01-01")),
                end_date: Some(d("2025-01-31")),
                product: Some("WidgetA".into()),
                region: Some("North".into()),
            },
            "WHERE sales_date >= $1 AND sales_date <= $2 AND product_name = $3 AND region = $4",
            &[
                Param::Date(d("2025-01-01")),
                Param::Date(d("2025-01-31")),
                Param::Text("WidgetA".into()),
                Param::Text("North".into()),
            ],
        );
        // product and region filter only the breakdown.
        check(
            Report::Top5ByRevenue,
            ReportFilter {
                end_date: Some(d("2025-12-31")),
                region: Some("North".into()),
                ..Default::default()
            },
            "WHERE sales_date <= $1",
            &[Param::Date(d("2025-12-31"))],
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
