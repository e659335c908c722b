//! The source database (prototype 004's `operations` schema): checked once
//! per connection, read in one repeatable-read snapshot per cycle, never
//! written.
//!
//! Architecture Invariant: every statement here reads; a cycle's reads
//! share one snapshot, bounded by the source's oldest open transaction.

use chrono::NaiveDateTime;
use tokio_postgres::{Client, IsolationLevel, Transaction};

use super::SyncError;
use crate::store::sync::Watermark;

/// A source table and its id column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SourceTable {
    pub name: &'static str,
    pub id: &'static str,
    /// The columns clue reads of it.
    columns: &'static [&'static str],
}

const AUDIT: [&str; 4] = ["created_at", "updated_at", "created_by", "updated_by"];

pub(super) const ORDERS: SourceTable = SourceTable {
    name: "orders",
    id: "order_id",
    columns: &[
        "order_id",
        "order_date",
        "delivery_date",
        "customer_id",
        "status",
    ],
};
pub(super) const ORDER_ITEMS: SourceTable = SourceTable {
    name: "order_items",
    id: "order_item_id",
    columns: &["order_item_id", "order_id", "product_id", "quanity"],
};
pub(super) const CUSTOMERS: SourceTable = SourceTable {
    name: "customers",
    id: "customer_id",
    columns: &["customer_id", "customer_name"],
};
pub(super) const PRODUCTS: SourceTable = SourceTable {
    name: "products",
    id: "product_id",
    columns: &["product_id", "product_name", "unity_price"],
};
/// In the order a cycle reads their changes.
pub(super) const TABLES: [SourceTable; 4] = [ORDERS, ORDER_ITEMS, CUSTOMERS, PRODUCTS];

/// Connects to the source; its connection runs on its own task.
pub(super) async fn connect(config: &tokio_postgres::Config) -> Result<Client, SyncError> {
    crate::pg::database::connect_direct(config)
        .await
        .map_err(SyncError::Source)
}

/// Checks that every table and column clue reads is there and readable,
/// naming the first that is not.
pub(super) async fn check(client: &Client) -> Result<(), SyncError> {
    let rows = client
        .query(
            "SELECT c.table_name::text, c.column_name::text,
                    has_table_privilege(format('%I.%I', c.table_schema, c.table_name), 'SELECT')
               FROM information_schema.columns c
              WHERE c.table_schema = 'operations'",
            &[],
        )
        .await
        .map_err(SyncError::source_query)?;
    for table in TABLES {
        let of_table: Vec<_> = rows
            .iter()
            .filter(|r| r.get::<_, String>(0) == table.name)
            .collect();
        if of_table.is_empty() {
            return Err(SyncError::MissingTable {
                table: format!("operations.{}", table.name),
            });
        }
        if !of_table[0].get::<_, bool>(2) {
            return Err(SyncError::Permission {
                table: format!("operations.{}", table.name),
            });
        }
        for column in table.columns.iter().chain(&AUDIT) {
            if !of_table.iter().any(|r| r.get::<_, String>(1) == *column) {
                return Err(SyncError::MissingColumn {
                    table: format!("operations.{}", table.name),
                    column: (*column).to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Opens a cycle's snapshot and returns it with its bound: every row whose
/// `updated_at` is before the bound was committed before the snapshot.
///
/// The bound is the start of the source's oldest open transaction of a
/// client (not autovacuum's), or now, less a millisecond for `timestamp(3)`
/// rounding: a transaction still open stamps its rows with its start
/// (`now()`), which can be long before it commits, so the bound waits for
/// it. It is read before the snapshot is
/// taken: a transaction that commits in between is in the snapshot.
pub(super) async fn begin(
    client: &mut Client,
) -> Result<(Transaction<'_>, NaiveDateTime), SyncError> {
    let row = client
        .query_one(
            "SELECT (least(clock_timestamp(),
                           min(xact_start) FILTER (WHERE backend_type = 'client backend'))
                     - interval '1 millisecond')::timestamp,
                    count(*) FILTER (WHERE query = '<insufficient privilege>')
               FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .map_err(SyncError::source_query)?;
    let hidden: i64 = row.get(1);
    if hidden > 0 {
        return Err(SyncError::CannotSeeTransactions);
    }
    let bound: NaiveDateTime = row.get(0);
    Ok((snapshot(client).await?, bound))
}

/// A read-only repeatable-read transaction: one snapshot for every read.
pub(super) async fn snapshot(client: &mut Client) -> Result<Transaction<'_>, SyncError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(SyncError::source_query)
}

/// A changed row of a source table: its place `(updated_at, id)`.
pub(super) type Change = Watermark;

/// The rows of `table` changed after `after` and before `bound`, in
/// `(updated_at, id)` order. A row without `updated_at` counts as changed
/// at the start of time (read by the first sync only).
pub(super) async fn changed(
    tx: &Transaction<'_>,
    table: SourceTable,
    after: Option<Watermark>,
    bound: NaiveDateTime,
) -> Result<Vec<Change>, SyncError> {
    let floor = Watermark {
        updated_at: chrono::NaiveDate::MIN
            .and_hms_opt(0, 0, 0)
            .expect("midnight"),
        id: i64::MIN,
    };
    let after = after.unwrap_or(floor);
    let sql = format!(
        "SELECT coalesce(updated_at, '0001-01-01')::timestamp AS at, {id}::int8 AS id
           FROM operations.{name}
          WHERE coalesce(updated_at, '0001-01-01') < $1
            AND (coalesce(updated_at, '0001-01-01'), {id}) > ($2::timestamp, $3::int8)
          ORDER BY 1, 2",
        id = table.id,
        name = table.name,
    );
    let rows = tx
        .query(
            &sql,
            &[&bound, &after.updated_at.max(floor.updated_at), &after.id],
        )
        .await
        .map_err(SyncError::source_query)?;
    Ok(rows
        .iter()
        .map(|r| Watermark {
            updated_at: r.get(0),
            id: r.get(1),
        })
        .collect())
}

/// The orders a change of `table`'s rows `ids` touches: the orders
/// themselves, the items' orders, a customer's or a product's orders.
pub(super) async fn orders_touched(
    tx: &Transaction<'_>,
    table: SourceTable,
    ids: &[i64],
) -> Result<Vec<i64>, SyncError> {
    let sql = match table.name {
        "orders" => return Ok(ids.to_vec()),
        "order_items" => {
            "SELECT DISTINCT order_id::int8 FROM operations.order_items WHERE order_item_id = ANY($1)"
        }
        "customers" => "SELECT order_id::int8 FROM operations.orders WHERE customer_id = ANY($1)",
        _ => {
            "SELECT DISTINCT order_id::int8 FROM operations.order_items WHERE product_id = ANY($1)"
        }
    };
    let rows = tx
        .query(sql, &[&ids])
        .await
        .map_err(SyncError::source_query)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The analytical columns of an order, in the order of
/// `analytics.analytical_orders`: totals over its items (Σ quantity,
/// Σ quantity × the product's unit price), the customer's name.
const ORDER_SELECT: &str = "
    SELECT o.order_id::int8, coalesce(o.customer_id, 0)::int8, coalesce(c.customer_name, '')::text,
           o.order_date::date, o.delivery_date::date, coalesce(o.status, '')::text,
           coalesce(t.items, 0)::int8, coalesce(t.amount, 0)::numeric,
           o.created_at::timestamp, o.updated_at::timestamp, o.created_by::int8, o.updated_by::int8
      FROM operations.orders o
      LEFT JOIN operations.customers c ON c.customer_id = o.customer_id
      LEFT JOIN (SELECT i.order_id, sum(i.quanity) AS items,
                        sum(i.quanity * coalesce(p.unity_price, 0)) AS amount
                   FROM operations.order_items i
                   LEFT JOIN operations.products p ON p.product_id = i.product_id
                  WHERE {items} GROUP BY i.order_id) t ON t.order_id = o.order_id";

/// The analytical columns of an item, in the order of
/// `analytics.analytical_order_items`.
const ITEM_SELECT: &str = "
    SELECT i.order_item_id::int8, i.order_id::int8, coalesce(i.product_id, 0)::int8,
           coalesce(p.product_name, '')::text, coalesce(i.quanity, 0)::int8,
           coalesce(p.unity_price, 0)::numeric,
           (coalesce(i.quanity, 0) * coalesce(p.unity_price, 0))::numeric,
           coalesce(o.status, '')::text, o.delivery_date::date,
           i.created_at::timestamp, i.updated_at::timestamp, i.created_by::int8, i.updated_by::int8
      FROM operations.order_items i
      JOIN operations.orders o ON o.order_id = i.order_id
      LEFT JOIN operations.products p ON p.product_id = i.product_id";

/// The orders `ids` as they are now, and their items (an id no longer in
/// the source has neither).
pub(super) async fn read_orders(
    tx: &Transaction<'_>,
    ids: &[i64],
) -> Result<(Vec<tokio_postgres::Row>, Vec<tokio_postgres::Row>), SyncError> {
    let orders =
        ORDER_SELECT.replace("{items}", "i.order_id = ANY($1)") + " WHERE o.order_id = ANY($1)";
    let items = format!("{ITEM_SELECT} WHERE i.order_id = ANY($1)");
    let orders = tx
        .query(&orders, &[&ids])
        .await
        .map_err(SyncError::source_query)?;
    let items = tx
        .query(&items, &[&ids])
        .await
        .map_err(SyncError::source_query)?;
    Ok((orders, items))
}

/// Every order, then every item, as one stream each (the first sync's
/// copy: one pass over each table instead of a lookup per order).
pub(super) async fn all_orders(
    tx: &Transaction<'_>,
) -> Result<tokio_postgres::RowStream, SyncError> {
    let sql = ORDER_SELECT.replace("{items}", "true");
    tx.query_raw(&sql, std::iter::empty::<i64>())
        .await
        .map_err(SyncError::source_query)
}

pub(super) async fn all_items(
    tx: &Transaction<'_>,
) -> Result<tokio_postgres::RowStream, SyncError> {
    tx.query_raw(ITEM_SELECT, std::iter::empty::<i64>())
        .await
        .map_err(SyncError::source_query)
}

/// How many orders and items the source has (for the first sync's progress).
pub(super) async fn count(tx: &Transaction<'_>) -> Result<u64, SyncError> {
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM operations.orders) + (SELECT count(*) FROM operations.order_items)",
            &[],
        )
        .await
        .map_err(SyncError::source_query)?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// The ids of a source table (orders or items) from `from` up, in order,
/// at most `limit` of them (all without one), to find what was deleted.
pub(super) async fn ids(
    tx: &Transaction<'_>,
    table: SourceTable,
    from: i64,
    limit: Option<i64>,
) -> Result<Vec<i64>, SyncError> {
    let sql = format!(
        "SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM (
             SELECT {id}::int8 AS id FROM operations.{name} WHERE {id} >= $1 ORDER BY 1 LIMIT $2) s",
        id = table.id,
        name = table.name
    );
    let row = tx
        .query_one(&sql, &[&from, &limit])
        .await
        .map_err(SyncError::source_query)?;
    Ok(row.get(0))
}

/// How many rows of `table` changed after `after`, and the oldest such
/// change's `updated_at` (what a sync has yet to read).
pub(super) async fn pending(
    client: &Client,
    table: SourceTable,
    after: Watermark,
) -> Result<(i64, Option<NaiveDateTime>), SyncError> {
    let sql = format!(
        "SELECT count(*), min(coalesce(updated_at, '0001-01-01'))::timestamp
           FROM operations.{name}
          WHERE (coalesce(updated_at, '0001-01-01'), {id}) > ($1::timestamp, $2::int8)",
        id = table.id,
        name = table.name,
    );
    let row = client
        .query_one(&sql, &[&after.updated_at, &after.id])
        .await
        .map_err(SyncError::source_query)?;
    Ok((row.get(0), row.get(1)))
}

/// The source's oldest open client transaction (it bounds what a cycle
/// reads): its process id, when it began, and its state.
pub(super) async fn oldest_open(
    client: &Client,
) -> Result<Option<(i32, chrono::DateTime<chrono::Utc>, String)>, SyncError> {
    let row = client
        .query_opt(
            "SELECT pid, xact_start, coalesce(state, '') FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND backend_type = 'client backend' AND xact_start IS NOT NULL
              ORDER BY xact_start LIMIT 1",
            &[],
        )
        .await
        .map_err(SyncError::source_query)?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}
