//! Prototype 004's delivery reports over the synced `analytical_orders` and
//! `analytical_order_items`, through the planner (their rollups by day and
//! status, by customer and status, by product and status answer them):
//! open orders by delivery date and status, the three delivery dates with
//! the most open orders, pending items by product, and the three customers
//! with the most pending orders.
//!
//! "Open" is neither COMPLETED nor CANCELLED; "pending" is PENDING. An order
//! without a delivery date is in no report (the datasets' time).
//!
//! Architecture Invariant: the database answers planner queries; what is
//! open, the top three and their ties are decided here, in exact decimals.

use chrono::NaiveDate;
use serde::Serialize;

use crate::domain::dataset::Catalog;
use crate::domain::time::Grain;
use crate::pg::database::Database;
use crate::plan::View;
use crate::plan::{RawFilter, Served};
use crate::serve::cache::Cache;
use crate::serve::execute::{self, Cell, Row};
use crate::serve::query::{OrderRequest, QueryError, QueryRequest};
use crate::serve::reports::{CsvRow, Money};

pub const ORDERS: &str = "analytical_orders";
pub const ITEMS: &str = "analytical_order_items";
/// Statuses that close an order.
pub const CLOSED: [&str; 2] = ["COMPLETED", "CANCELLED"];
pub const PENDING: &str = "PENDING";

/// Open orders of one delivery date and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OpenOrders {
    #[schema(value_type = String, format = Date)]
    pub delivery_date: NaiveDate,
    pub status: String,
    pub order_count: i64,
}

/// A delivery date with many open orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TopDeliveryDate {
    #[schema(value_type = String, format = Date)]
    pub delivery_date: NaiveDate,
    pub order_count: i64,
    /// Distinct customers of those orders.
    pub unique_customers: i64,
}

/// A product's items in pending orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PendingItems {
    pub product_id: i64,
    pub product_name: String,
    /// Σ quantity of its items in PENDING orders.
    pub pending_quantity: i64,
    /// Σ quantity × price of those items.
    pub total_pending_value: Money,
}

/// A customer with many pending orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TopCustomer {
    pub customer_id: i64,
    pub customer_name: String,
    pub pending_order_count: i64,
    pub total_pending_amount: Money,
}

impl CsvRow for OpenOrders {
    const HEADER: &'static [&'static str] = &["delivery_date", "status", "order_count"];
    fn record(&self) -> Vec<String> {
        vec![
            self.delivery_date.to_string(),
            self.status.clone(),
            self.order_count.to_string(),
        ]
    }
}

impl CsvRow for TopDeliveryDate {
    const HEADER: &'static [&'static str] = &["delivery_date", "order_count", "unique_customers"];
    fn record(&self) -> Vec<String> {
        vec![
            self.delivery_date.to_string(),
            self.order_count.to_string(),
            self.unique_customers.to_string(),
        ]
    }
}

impl CsvRow for PendingItems {
    const HEADER: &'static [&'static str] = &[
        "product_id",
        "product_name",
        "pending_quantity",
        "total_pending_value",
    ];
    fn record(&self) -> Vec<String> {
        vec![
            self.product_id.to_string(),
            self.product_name.clone(),
            self.pending_quantity.to_string(),
            self.total_pending_value.to_string(),
        ]
    }
}

impl CsvRow for TopCustomer {
    const HEADER: &'static [&'static str] = &[
        "customer_id",
        "customer_name",
        "pending_order_count",
        "total_pending_amount",
    ];
    fn record(&self) -> Vec<String> {
        vec![
            self.customer_id.to_string(),
            self.customer_name.clone(),
            self.pending_order_count.to_string(),
            self.total_pending_amount.to_string(),
        ]
    }
}

/// The four reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryReport {
    OpenOrders,
    TopDeliveryDates,
    PendingItems,
    TopCustomers,
}

impl DeliveryReport {
    pub const ALL: [DeliveryReport; 4] = [
        DeliveryReport::OpenOrders,
        DeliveryReport::TopDeliveryDates,
        DeliveryReport::PendingItems,
        DeliveryReport::TopCustomers,
    ];

    /// The path segment of `GET /reports/...`.
    pub fn slug(self) -> &'static str {
        match self {
            DeliveryReport::OpenOrders => "open-orders",
            DeliveryReport::TopDeliveryDates => "top-delivery-dates",
            DeliveryReport::PendingItems => "pending-items",
            DeliveryReport::TopCustomers => "top-customers",
        }
    }

    /// The file `clue export-reports` writes (prototype 004's names).
    pub fn file_name(self) -> &'static str {
        match self {
            DeliveryReport::OpenOrders => "open_orders_by_date_status.csv",
            DeliveryReport::TopDeliveryDates => "top_delivery_dates.csv",
            DeliveryReport::PendingItems => "pending_items_by_product.csv",
            DeliveryReport::TopCustomers => "top_customers_with_pending_orders.csv",
        }
    }

    /// The dataset whose writes make the answer stale.
    pub fn dataset(self) -> &'static str {
        match self {
            DeliveryReport::PendingItems => ITEMS,
            _ => ORDERS,
        }
    }
}

/// A report's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryRows {
    OpenOrders(Vec<OpenOrders>),
    TopDeliveryDates(Vec<TopDeliveryDate>),
    PendingItems(Vec<PendingItems>),
    TopCustomers(Vec<TopCustomer>),
}

impl DeliveryRows {
    /// As CSV with the report's header.
    pub fn to_csv(&self) -> Result<Vec<u8>, csv::Error> {
        use crate::serve::reports::to_csv;
        match self {
            DeliveryRows::OpenOrders(r) => to_csv(r),
            DeliveryRows::TopDeliveryDates(r) => to_csv(r),
            DeliveryRows::PendingItems(r) => to_csv(r),
            DeliveryRows::TopCustomers(r) => to_csv(r),
        }
    }
}

fn query(
    dataset: &str,
    measures: &[&str],
    dimensions: &[&str],
    granularity: Option<Grain>,
    filters: Vec<RawFilter>,
) -> QueryRequest {
    QueryRequest {
        dataset: dataset.to_owned(),
        measures: measures.iter().map(|s| s.to_string()).collect(),
        dimensions: dimensions.iter().map(|s| s.to_string()).collect(),
        granularity,
        start_date: None,
        end_date: None,
        from: None,
        to: None,
        filters,
        order: granularity
            .map(|_| "period")
            .into_iter()
            .chain(dimensions.iter().copied())
            .map(|d| OrderRequest {
                field: d.to_owned(),
                desc: false,
            })
            .collect(),
        limit: None,
        gap_fill: false,
        time_zone: None,
    }
}

fn status_filter(dimension: &str, statuses: &[&str]) -> RawFilter {
    RawFilter {
        dimension: dimension.to_owned(),
        equals: None,
        in_: Some(
            statuses
                .iter()
                .map(|s| serde_json::Value::String((*s).to_owned()))
                .collect(),
        ),
        min: None,
        max: None,
    }
}

fn int(row: &Row, name: &str) -> i64 {
    i64::try_from(row.decimal(name)).unwrap_or(i64::MAX)
}

fn date(row: &Row) -> Option<NaiveDate> {
    match row.get("period") {
        Some(Cell::Date(d)) => Some(*d),
        _ => None,
    }
}

/// Runs a report; returns its rows and where they came from.
pub async fn run(
    db: &Database,
    catalog: &Catalog,
    cache: Option<&Cache>,
    report: DeliveryReport,
    view: &View,
) -> Result<(DeliveryRows, Vec<Served>), QueryError> {
    let ask = |q: QueryRequest| async move {
        execute::execute(db, catalog, &q, view, false, cache).await
    };
    match report {
        DeliveryReport::OpenOrders => {
            let answer = ask(query(
                ORDERS,
                &["orders"],
                &["status"],
                Some(Grain::Day),
                vec![],
            ))
            .await?;
            Ok((
                DeliveryRows::OpenOrders(open_orders(&answer.rows)),
                answer.served_from,
            ))
        }
        DeliveryReport::TopDeliveryDates => {
            let by_day = ask(query(
                ORDERS,
                &["orders"],
                &["status"],
                Some(Grain::Day),
                vec![],
            ))
            .await?;
            let open = open_orders(&by_day.rows);
            let top = top_dates(&open);
            let mut served = by_day.served_from;
            let mut rows = Vec::new();
            if let (Some(first), Some(last)) =
                (top.iter().map(|t| t.0).min(), top.iter().map(|t| t.0).max())
            {
                let statuses: Vec<&str> = {
                    let mut s: Vec<&str> = open.iter().map(|o| o.status.as_str()).collect();
                    s.sort_unstable();
                    s.dedup();
                    s
                };
                let mut q = query(
                    ORDERS,
                    &["customers"],
                    &[],
                    Some(Grain::Day),
                    vec![status_filter("status", &statuses)],
                );
                q.start_date = Some(first);
                q.end_date = Some(last);
                let customers = ask(q).await?;
                served.extend(customers.served_from);
                for (day, count) in top {
                    let unique = customers
                        .rows
                        .iter()
                        .find(|r| date(r) == Some(day))
                        .map_or(0, |r| int(r, "customers"));
                    rows.push(TopDeliveryDate {
                        delivery_date: day,
                        order_count: count,
                        unique_customers: unique,
                    });
                }
            }
            Ok((DeliveryRows::TopDeliveryDates(rows), served))
        }
        DeliveryReport::PendingItems => {
            let answer = ask(query(
                ITEMS,
                &["quantity", "amount"],
                &["product_id", "product_name"],
                None,
                vec![status_filter("order_status", &[PENDING])],
            ))
            .await?;
            Ok((
                DeliveryRows::PendingItems(pending_items(&answer.rows)),
                answer.served_from,
            ))
        }
        DeliveryReport::TopCustomers => {
            let answer = ask(query(
                ORDERS,
                &["orders", "amount"],
                &["customer_id", "customer_name"],
                None,
                vec![status_filter("status", &[PENDING])],
            ))
            .await?;
            Ok((
                DeliveryRows::TopCustomers(top_customers(&answer.rows)),
                answer.served_from,
            ))
        }
    }
}

/// Items of pending orders by product, the most pending first, then by product.
fn pending_items(rows: &[Row]) -> Vec<PendingItems> {
    let mut out: Vec<PendingItems> = rows
        .iter()
        .map(|r| PendingItems {
            product_id: int(r, "product_id"),
            product_name: r.text("product_name").to_owned(),
            pending_quantity: int(r, "quantity"),
            total_pending_value: Money::new(r.decimal("amount")),
        })
        .collect();
    out.sort_by(|a, b| {
        b.pending_quantity
            .cmp(&a.pending_quantity)
            .then(a.product_id.cmp(&b.product_id))
            .then_with(|| a.product_name.cmp(&b.product_name))
    });
    out
}

/// The three customers with the most pending orders, then the larger
/// amount, then the smaller customer id.
fn top_customers(rows: &[Row]) -> Vec<TopCustomer> {
    let mut out: Vec<TopCustomer> = rows
        .iter()
        .map(|r| TopCustomer {
            customer_id: int(r, "customer_id"),
            customer_name: r.text("customer_name").to_owned(),
            pending_order_count: int(r, "orders"),
            total_pending_amount: Money::new(r.decimal("amount")),
        })
        .collect();
    out.sort_by(|a, b| {
        b.pending_order_count
            .cmp(&a.pending_order_count)
            .then(b.total_pending_amount.cmp(&a.total_pending_amount))
            .then(a.customer_id.cmp(&b.customer_id))
            .then_with(|| a.customer_name.cmp(&b.customer_name))
    });
    out.truncate(3);
    out
}

/// Open orders by delivery date and status, by date then status.
fn open_orders(rows: &[Row]) -> Vec<OpenOrders> {
    let mut out: Vec<OpenOrders> = rows
        .iter()
        .filter(|r| !CLOSED.contains(&r.text("status")))
        .filter_map(|r| {
            Some(OpenOrders {
                delivery_date: date(r)?,
                status: r.text("status").to_owned(),
                order_count: int(r, "orders"),
            })
        })
        .filter(|o| o.order_count > 0)
        .collect();
    out.sort_by(|a, b| (a.delivery_date, &a.status).cmp(&(b.delivery_date, &b.status)));
    out
}

/// The three dates with the most open orders; a tie goes to the earlier.
fn top_dates(open: &[OpenOrders]) -> Vec<(NaiveDate, i64)> {
    let mut per_day: std::collections::BTreeMap<NaiveDate, i64> = std::collections::BTreeMap::new();
    for o in open {
        *per_day.entry(o.delivery_date).or_default() += o.order_count;
    }
    let mut days: Vec<(NaiveDate, i64)> = per_day.into_iter().collect();
    days.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    days.truncate(3);
    days
}
