//! Prototype 002's KPIs and batch reports as answers: customer year-to-date
//! spending and days since the last purchase (from the marts each load
//! keeps in its transaction, so an answer is current at the last commit),
//! and the quality report of each loaded batch.
//!
//! Architecture Invariant: reads only; money stays exact (`numeric` to
//! `Money`).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::ingest::warehouse::{CustomerCounts, Report, SalesCounts};
use crate::pg::database::{Database, DbError};
use crate::serve::reports::{CsvRow, Money};

/// One customer's month: its amount, the running total within the year,
/// and that total as a percentage of the year's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct YtdSpending {
    pub customer_id: i64,
    /// The customer's current name (null if the customer is gone).
    pub customer_name: Option<String>,
    pub year: i32,
    pub month: i32,
    pub monthly_amount: Money,
    pub ytd_amount: Money,
    /// Rounded to 2 places; null when the year's total is 0.
    pub ytd_percentage: Option<Money>,
}

/// A customer's days since the last purchase on or before a date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DaysSinceLastPurchase {
    pub customer_id: i64,
    pub customer_name: String,
    #[schema(value_type = String, format = Date)]
    pub reference_date: NaiveDate,
    /// Null when the customer bought nothing on or before the date.
    pub days_since_last_purchase: Option<i32>,
}

/// A loaded batch, in short.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BatchSummary {
    #[schema(value_type = String, format = Date)]
    pub batch_date: NaiveDate,
    pub customers_file: String,
    pub sales_file: String,
    #[schema(value_type = String, format = DateTime)]
    pub loaded_at: DateTime<Utc>,
    pub customers: CustomerCounts,
    pub sales: SalesCounts,
}

impl CsvRow for YtdSpending {
    const HEADER: &'static [&'static str] = &[
        "customer_id",
        "customer_name",
        "year",
        "month",
        "monthly_amount",
        "ytd_amount",
        "ytd_percentage",
    ];
    fn record(&self) -> Vec<String> {
        vec![
            self.customer_id.to_string(),
            self.customer_name.clone().unwrap_or_default(),
            self.year.to_string(),
            self.month.to_string(),
            self.monthly_amount.to_string(),
            self.ytd_amount.to_string(),
            self.ytd_percentage.map_or(String::new(), |p| p.to_string()),
        ]
    }
}

impl CsvRow for DaysSinceLastPurchase {
    const HEADER: &'static [&'static str] = &[
        "customer_id",
        "customer_name",
        "reference_date",
        "days_since_last_purchase",
    ];
    fn record(&self) -> Vec<String> {
        vec![
            self.customer_id.to_string(),
            self.customer_name.clone(),
            self.reference_date.to_string(),
            self.days_since_last_purchase
                .map_or(String::new(), |d| d.to_string()),
        ]
    }
}

/// `dw.customer_ytd_spending`, of one customer and/or year.
pub async fn ytd_spending(
    db: &Database,
    customer_id: Option<i64>,
    year: Option<i32>,
) -> Result<Vec<YtdSpending>, DbError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT customer_id, customer_name, year, month, monthly_amount, ytd_amount, ytd_percentage
               FROM dw.customer_ytd_spending
              WHERE ($1::int8 IS NULL OR customer_id = $1) AND ($2::int4 IS NULL OR year = $2)
              ORDER BY customer_id, year, month",
            &[&customer_id, &year],
        )
        .await
        .map_err(DbError::Query)?;
    Ok(rows
        .iter()
        .map(|r| YtdSpending {
            customer_id: r.get(0),
            customer_name: r.get(1),
            year: r.get(2),
            month: r.get(3),
            monthly_amount: Money::new(r.get(4)),
            ytd_amount: Money::new(r.get(5)),
            ytd_percentage: r.get::<_, Option<rust_decimal::Decimal>>(6).map(Money::new),
        })
        .collect())
}

/// Each current customer's days from its last purchase on or before
/// `as_of` to `as_of`: from the mart when that purchase is on or before
/// the date, else from the facts (an index lookup per customer).
pub async fn days_since_last_purchase(
    db: &Database,
    as_of: NaiveDate,
    customer_id: Option<i64>,
) -> Result<Vec<DaysSinceLastPurchase>, DbError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT c.customer_id, c.customer_name,
                    ($1::date - (CASE WHEN l.last_purchase < $1::date + 1 THEN l.last_purchase
                                      ELSE (SELECT max(f.transaction_date) FROM dw.fact_sales f
                                             WHERE f.customer_id = c.customer_id
                                               AND f.transaction_date < $1::date + 1) END)::date)
               FROM dw.dim_customer c
               LEFT JOIN mart.customer_last_purchase l ON l.customer_id = c.customer_id
              WHERE c.valid_to IS NULL AND ($2::int8 IS NULL OR c.customer_id = $2)
              ORDER BY c.customer_id",
            &[&as_of, &customer_id],
        )
        .await
        .map_err(DbError::Query)?;
    Ok(rows
        .iter()
        .map(|r| DaysSinceLastPurchase {
            customer_id: r.get(0),
            customer_name: r.get(1),
            reference_date: as_of,
            days_since_last_purchase: r.get(2),
        })
        .collect())
}

/// Every loaded batch, the latest first.
pub async fn batches(db: &Database) -> Result<Vec<BatchSummary>, DbError> {
    let client = db.client().await?;
    let batches = crate::store::warehouse::batches(&**client)
        .await
        .map_err(DbError::Query)?;
    Ok(batches
        .into_iter()
        .map(|b| {
            let report: Option<Report> = serde_json::from_value(b.report).ok();
            BatchSummary {
                batch_date: b.batch_date,
                customers_file: b.customers_file,
                sales_file: b.sales_file,
                loaded_at: b.loaded_at,
                customers: report
                    .as_ref()
                    .map(|r| r.customers.clone())
                    .unwrap_or_default(),
                sales: report.map(|r| r.sales).unwrap_or_default(),
            }
        })
        .collect())
}
