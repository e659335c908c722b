//! A cleaned batch into the warehouse, in one transaction: the files as
//! received into `raw`, the refused rows into `dw.quarantine`, the clean
//! ones staged in temporary tables, then set-based SQL: customer versions
//! (type 2), product and shop dimensions, sales of unknown customers and
//! sales seen in earlier batches quarantined, facts pointing to the
//! customer version current at their instant, the KPI marts, the batch's
//! registry row and report.
//!
//! Architecture Invariant: everything a batch writes commits together; the
//! marts change by exactly the facts the batch inserted.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use futures_util::pin_mut;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::files::BatchFile;
use super::{Cleaned, LoadOptions, Outcome, Refused, Report, RuleCount, WarehouseError};
use crate::domain::time::Month;
use crate::domain::warehouse::{Fault, SALES_COLUMNS, UNKNOWN_CUSTOMER};
use crate::pg::database::Database;
use crate::store;

pub(super) async fn load(
    db: &Database,
    opts: &LoadOptions,
    customers: &BatchFile,
    sales: &BatchFile,
    cleaned: &Cleaned,
    report: &mut Report,
) -> Result<Outcome, WarehouseError> {
    let started = std::time::Instant::now();
    let mut client = db.client().await?;
    let client: &mut tokio_postgres::Client = &mut client;
    // Month partitions first, each in a short transaction of its own.
    let months: BTreeSet<Month> = cleaned
        .sales
        .iter()
        .map(|(_, s)| Month::of(s.at.date()))
        .collect();
    let facts = crate::pg::catalog::load_table(&*client, "dw.fact_sales").await?;
    crate::write::partitions::ensure_months(client, &facts, &months).await?;
    let tx = client.transaction().await?;
    store::locks::lock_warehouse(&tx).await?;
    if let Some(done) = settle_earlier(&tx, opts, customers, sales).await? {
        return Ok(done);
    }
    let now: chrono::DateTime<chrono::Utc> = tx.query_one("SELECT now()", &[]).await?.get(0);
    copy_raw(&tx, opts.batch_date, customers, sales, now).await?;
    copy_refused(&tx, opts.batch_date, &cleaned.refused).await?;
    stage(&tx, opts.batch_date, cleaned).await?;
    let (new, changed) = merge_customers(&tx, opts.batch_date).await?;
    report.customers.new = new;
    report.customers.changed = changed;
    report.customers.unchanged = cleaned.customers.len() as u64 - new - changed;
    report.sales.loaded =
        load_staged_sales(&tx, Staged::Batch(opts.batch_date, sales, cleaned)).await?;
    report.rules = rule_counts(&tx, opts.batch_date).await?;
    for r in &report.rules {
        if r.source == "customers" {
            report.customers.quarantined += r.count;
        } else {
            report.sales.quarantined += r.count;
        }
    }
    report.seconds.load = started.elapsed().as_secs_f64();
    report.seconds.total = report.seconds.read + report.seconds.clean + report.seconds.load;
    let batch = store::warehouse::Batch {
        batch_date: opts.batch_date,
        customers_file: customers.path.clone(),
        sales_file: sales.path.clone(),
        customers_sha256: customers.sha256.clone(),
        sales_sha256: sales.sha256.clone(),
        loaded_at: now,
        report: serde_json::to_value(&*report).expect("a report serializes"),
    };
    store::warehouse::record(&tx, &batch).await?;
    tx.commit().await?;
    Ok(Outcome::Loaded(report.clone()))
}

/// A batch loaded before: the same files are a no-op, other files a
/// conflict unless replacing the latest (then it is undone here); an older
/// date than the latest is refused.
async fn settle_earlier(
    tx: &Transaction<'_>,
    opts: &LoadOptions,
    customers: &BatchFile,
    sales: &BatchFile,
) -> Result<Option<Outcome>, WarehouseError> {
    let date = opts.batch_date;
    let latest = store::warehouse::latest(tx).await?;
    match store::warehouse::batch(tx, date).await? {
        Some(b) if !opts.replace => {
            if b.customers_sha256 == customers.sha256 && b.sales_sha256 == sales.sha256 {
                return Ok(Some(Outcome::AlreadyLoaded(date)));
            }
            Err(WarehouseError::OtherFiles {
                date,
                customers: b.customers_file,
                sales: b.sales_file,
            })
        }
        Some(_) => match latest {
            Some(latest) if latest > date => Err(WarehouseError::ReplaceNotLatest { date, latest }),
            _ => {
                undo(tx, date).await?;
                Ok(None)
            }
        },
        None => match latest {
            Some(latest) if latest > date => Err(WarehouseError::OutOfOrder { date, latest }),
            _ => Ok(None),
        },
    }
}

/// Takes the latest batch out: its facts (and what they added to the
/// marts), its customer versions (reopening those they closed), its raw
/// and quarantined rows, its registry row.
async fn undo(tx: &Transaction<'_>, date: NaiveDate) -> Result<(), WarehouseError> {
    // Sales of earlier batches replayed onto customers this batch brought
    // would lose their customer.
    let replayed: i64 = tx
        .query_one(
            "SELECT count(*) FROM dw.fact_sales f JOIN dw.dim_customer c USING (customer_key)
              WHERE c.batch_date = $1 AND f.batch_date <> $1",
            &[&date],
        )
        .await?
        .get(0);
    if replayed > 0 {
        return Err(WarehouseError::ReplayedOnto {
            date,
            sales: replayed,
        });
    }
    let customers: Vec<i64> = tx
        .query(
            "DELETE FROM dw.fact_sales WHERE batch_date = $1 RETURNING customer_id",
            &[&date],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    refresh_marts(tx, Some(&customers)).await?;
    let start = date.and_hms_opt(0, 0, 0).expect("midnight");
    tx.execute(
        "WITH gone AS (DELETE FROM dw.dim_customer WHERE batch_date = $1 RETURNING customer_id)
         UPDATE dw.dim_customer d SET valid_to = NULL, is_active = true, updated_at = now()
          WHERE d.valid_to = $2 AND d.customer_id IN (SELECT customer_id FROM gone)",
        &[&date, &start],
    )
    .await?;
    for table in ["raw.customer", "raw.customer_sales", "dw.quarantine"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE batch_date = $1"),
            &[&date],
        )
        .await?;
    }
    store::warehouse::forget(tx, date).await?;
    Ok(())
}

/// Recomputes the marts from the facts: of `customers`, or all of them.
pub(super) async fn refresh_marts(
    tx: &Transaction<'_>,
    customers: Option<&[i64]>,
) -> Result<(), WarehouseError> {
    let filter = if customers.is_some() {
        "WHERE customer_id = ANY($1)"
    } else {
        "WHERE $1::int8[] IS NULL"
    };
    let ids: Option<Vec<i64>> = customers.map(<[i64]>::to_vec);
    for table in [
        "mart.customer_monthly_spending",
        "mart.customer_last_purchase",
    ] {
        tx.execute(&format!("DELETE FROM {table} {filter}"), &[&ids])
            .await?;
    }
    tx.execute(
        &format!(
            "INSERT INTO mart.customer_monthly_spending (customer_id, year, month, monthly_amount)
             SELECT customer_id, extract(year FROM transaction_date)::int, extract(month FROM transaction_date)::int,
                    sum(sales_amount)
               FROM dw.fact_sales {filter} GROUP BY 1, 2, 3"
        ),
        &[&ids],
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO mart.customer_last_purchase (customer_id, last_purchase)
             SELECT customer_id, max(transaction_date) FROM dw.fact_sales {filter} GROUP BY 1"
        ),
        &[&ids],
    )
    .await?;
    Ok(())
}

/// Rows as one binary COPY.
async fn copy_in(
    tx: &Transaction<'_>,
    sql: &str,
    types: &[Type],
    rows: impl Iterator<Item = Vec<Box<dyn ToSql + Sync + Send + '_>>>,
) -> Result<(), WarehouseError> {
    let sink = tx.copy_in(sql).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    pin_mut!(writer);
    for row in rows {
        let refs: Vec<&(dyn ToSql + Sync)> =
            row.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn copy_raw(
    tx: &Transaction<'_>,
    date: NaiveDate,
    customers: &BatchFile,
    sales: &BatchFile,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), WarehouseError> {
    for (file, table, columns) in [
        (customers, "raw.customer", "customer_id, name, city"),
        (
            sales,
            "raw.customer_sales",
            "customer_id, product, sales_amount, shop_id, transaction_date",
        ),
    ] {
        let width = file.rows.first().map_or(0, |r| r.fields.len());
        let mut types = vec![Type::DATE, Type::INT8];
        types.extend(std::iter::repeat_n(Type::TEXT, width));
        types.extend([Type::TEXT, Type::TIMESTAMPTZ]);
        copy_in(
            tx,
            &format!(
                "COPY {table} (batch_date, line, {columns}, source_file, load_time) FROM STDIN BINARY"
            ),
            &types,
            file.rows.iter().map(|r| {
                let mut row: Vec<Box<dyn ToSql + Sync + Send>> =
                    vec![Box::new(date), Box::new(r.line)];
                row.extend(
                    r.fields
                        .iter()
                        .map(|f| Box::new(f.as_str()) as Box<dyn ToSql + Sync + Send>),
                );
                row.push(Box::new(file.path.as_str()));
                row.push(Box::new(now));
                row
            }),
        )
        .await?;
    }
    Ok(())
}

async fn copy_refused(
    tx: &Transaction<'_>,
    date: NaiveDate,
    refused: &[Refused],
) -> Result<(), WarehouseError> {
    copy_in(
        tx,
        "COPY dw.quarantine (batch_date, source, line, rule, reason, record) FROM STDIN BINARY",
        &[
            Type::DATE,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::JSONB,
        ],
        refused.iter().map(|r| {
            vec![
                Box::new(date) as Box<dyn ToSql + Sync + Send>,
                Box::new(r.source),
                Box::new(r.line),
                Box::new(r.fault.rule.as_str()),
                Box::new(r.fault.reason.as_str()),
                Box::new(&r.record),
            ]
        }),
    )
    .await
}

/// The clean rows into temporary tables dropped at commit, the sales of
/// batch `date` (a sale's `line` is its line in the file).
async fn stage(
    tx: &Transaction<'_>,
    date: NaiveDate,
    cleaned: &Cleaned,
) -> Result<(), WarehouseError> {
    create_stage(tx).await?;
    copy_in(
        tx,
        "COPY stage_customer FROM STDIN BINARY",
        &[Type::INT8, Type::INT8, Type::TEXT, Type::TEXT],
        cleaned.customers.iter().map(|(line, c)| {
            vec![
                Box::new(*line) as Box<dyn ToSql + Sync + Send>,
                Box::new(c.id),
                Box::new(c.name.as_str()),
                Box::new(c.city.as_str()),
            ]
        }),
    )
    .await?;
    stage_sales(tx, cleaned.sales.iter().map(|(line, s)| (*line, date, s))).await?;
    tx.batch_execute("ANALYZE stage_customer; ANALYZE stage_sales;")
        .await?;
    Ok(())
}

/// The temporary staging tables, dropped at commit.
async fn create_stage(tx: &Transaction<'_>) -> Result<(), WarehouseError> {
    tx.batch_execute(
        "CREATE TEMP TABLE stage_customer (line int8, customer_id int8, customer_name text, city text)
             ON COMMIT DROP;
         CREATE TEMP TABLE stage_sales (line int8, batch_date date, customer_id int8, product text,
                                        sales_amount numeric(12,2), shop_id int8, transaction_date timestamp)
             ON COMMIT DROP;",
    )
    .await?;
    Ok(())
}

/// Sales into `stage_sales`: (line, batch, sale).
async fn stage_sales<'a>(
    tx: &Transaction<'_>,
    sales: impl Iterator<Item = (i64, NaiveDate, &'a crate::domain::warehouse::Sale)>,
) -> Result<(), WarehouseError> {
    copy_in(
        tx,
        "COPY stage_sales FROM STDIN BINARY",
        &[
            Type::INT8,
            Type::DATE,
            Type::INT8,
            Type::TEXT,
            Type::NUMERIC,
            Type::INT8,
            Type::TIMESTAMP,
        ],
        sales.map(|(line, date, s)| {
            vec![
                Box::new(line) as Box<dyn ToSql + Sync + Send>,
                Box::new(date),
                Box::new(s.customer_id),
                Box::new(s.product.as_str()),
                Box::new(s.amount),
                Box::new(s.shop_id),
                Box::new(s.at),
            ]
        }),
    )
    .await
}

/// Type 2: a changed customer's current version closes at the batch's
/// start and a new one opens there; a customer seen for the first time
/// gets a version valid from the start of time (the facts that arrive late
/// find it). Returns (new customers, changed customers).
async fn merge_customers(
    tx: &Transaction<'_>,
    date: NaiveDate,
) -> Result<(u64, u64), WarehouseError> {
    let start = date.and_hms_opt(0, 0, 0).expect("midnight");
    let changed = tx
        .execute(
            "UPDATE dw.dim_customer d SET valid_to = $1, is_active = false, updated_at = now()
               FROM stage_customer s
              WHERE d.customer_id = s.customer_id AND d.valid_to IS NULL
                AND (d.customer_name <> s.customer_name OR d.city <> s.city)",
            &[&start],
        )
        .await?;
    let opened = tx
        .execute(
            "INSERT INTO dw.dim_customer (customer_id, customer_name, city, valid_from, batch_date)
             SELECT s.customer_id, s.customer_name, s.city,
                    CASE WHEN EXISTS (SELECT 1 FROM dw.dim_customer o WHERE o.customer_id = s.customer_id)
                         THEN $1::timestamp ELSE '-infinity'::timestamp END,
                    $2
               FROM stage_customer s
              WHERE NOT EXISTS (SELECT 1 FROM dw.dim_customer d
                                 WHERE d.customer_id = s.customer_id AND d.valid_to IS NULL)",
            &[&start, &date],
        )
        .await?;
    Ok((opened - changed, changed))
}

/// Where staged sales come from: a batch's files (a refused one is added
/// to the quarantine), or the quarantine itself (`replay`: a staged sale's
/// `line` is its `quarantine_id`, and a refused one stays, with its new
/// reason).
#[derive(Debug, Clone, Copy)]
pub(super) enum Staged<'a> {
    /// The batch of this date, whose sales file is this, cleaned thus.
    Batch(NaiveDate, &'a BatchFile, &'a Cleaned),
    Replay,
}

/// Refuses the staged sales for which `cond` (over `stage_sales s`) holds,
/// under `rule`; `reason` is SQL over `gone g`. Returns the lines refused
/// (of a batch; a replay's stay where they are).
async fn quarantine_where(
    tx: &Transaction<'_>,
    staged: Staged<'_>,
    rule: &str,
    using: &str,
    cond: &str,
    returning: &str,
    reason: &str,
) -> Result<Vec<i64>, WarehouseError> {
    let gone = format!(
        "WITH gone AS (DELETE FROM stage_sales s {using} WHERE {cond}
                       RETURNING s.line, s.batch_date, {returning})"
    );
    match staged {
        Staged::Batch(date, file, _) => {
            // The rows as received are in the file: no need to look them up in raw.
            let gone = tx
                .query(
                    &format!("{gone} SELECT g.line, {reason} FROM gone g ORDER BY g.line"),
                    &[],
                )
                .await?;
            let refused: Vec<Refused> = gone
                .iter()
                .map(|r| {
                    let line: i64 = r.get(0);
                    let fields = file
                        .rows
                        .binary_search_by_key(&line, |row| row.line)
                        .map(|i| file.rows[i].fields.clone())
                        .unwrap_or_default();
                    Refused {
                        source: "sales",
                        line,
                        fault: Fault::new(rule, r.get::<_, String>(1)),
                        record: super::record_of(&SALES_COLUMNS, &fields),
                    }
                })
                .collect();
            copy_refused(tx, date, &refused).await?;
            Ok(refused.iter().map(|r| r.line).collect())
        }
        Staged::Replay => {
            tx.execute(
                &format!(
                    "{gone}
                     UPDATE dw.quarantine q SET rule = $1, reason = {reason}
                       FROM gone g WHERE q.quarantine_id = g.line"
                ),
                &[&rule],
            )
            .await?;
            Ok(Vec::new())
        }
    }
}

async fn quarantine_unknown_customers(
    tx: &Transaction<'_>,
    staged: Staged<'_>,
) -> Result<Vec<i64>, WarehouseError> {
    quarantine_where(
        tx,
        staged,
        UNKNOWN_CUSTOMER,
        "",
        "NOT EXISTS (SELECT 1 FROM dw.dim_customer c WHERE c.customer_id = s.customer_id)",
        "s.customer_id",
        "'no customer ' || g.customer_id || ' in the warehouse yet'",
    )
    .await
}

async fn upsert_dimensions(tx: &Transaction<'_>) -> Result<(), WarehouseError> {
    tx.batch_execute(
        "INSERT INTO dw.dim_product (product)
         SELECT DISTINCT product FROM stage_sales ORDER BY 1 ON CONFLICT (product) DO NOTHING;
         INSERT INTO dw.dim_shop (shop_id)
         SELECT DISTINCT shop_id FROM stage_sales ORDER BY 1 ON CONFLICT (shop_id) DO NOTHING;",
    )
    .await?;
    Ok(())
}

/// Sales an earlier batch loaded already.
async fn quarantine_seen_sales(
    tx: &Transaction<'_>,
    staged: Staged<'_>,
) -> Result<Vec<i64>, WarehouseError> {
    quarantine_where(
        tx,
        staged,
        crate::domain::warehouse::DUPLICATE,
        "USING dw.dim_product p, dw.dim_shop h, dw.fact_sales f",
        "p.product = s.product AND h.shop_id = s.shop_id AND f.customer_id = s.customer_id
         AND f.product_key = p.product_key AND f.shop_key = h.shop_key
         AND f.transaction_date = s.transaction_date AND f.sales_amount = s.sales_amount",
        "f.batch_date AS seen",
        "'the same sale was loaded with batch ' || g.seen",
    )
    .await
}

/// The staged sales of known customers, not loaded before, as facts:
/// returns how many.
pub(super) async fn load_staged_sales(
    tx: &Transaction<'_>,
    staged: Staged<'_>,
) -> Result<u64, WarehouseError> {
    let mut refused = quarantine_unknown_customers(tx, staged).await?;
    upsert_dimensions(tx).await?;
    refused.extend(quarantine_seen_sales(tx, staged).await?);
    let inserted = match staged {
        Staged::Batch(date, _, cleaned) => copy_facts(tx, date, cleaned, &refused).await?,
        Staged::Replay => insert_facts(tx).await?,
    };
    update_marts(tx, inserted).await?;
    Ok(inserted)
}

/// A customer version: valid from (`None`: the start of time), valid to
/// (`None`: current), its key.
type Version = (
    Option<chrono::NaiveDateTime>,
    Option<chrono::NaiveDateTime>,
    i64,
);

/// A batch's clean sales but the `refused` lines as facts, by one binary
/// COPY (buffered into each month's partition, much cheaper than an
/// `INSERT … SELECT` of a million rows), their keys looked up here: the
/// product's, the shop's, and the customer version's current at the sale.
async fn copy_facts(
    tx: &Transaction<'_>,
    date: NaiveDate,
    cleaned: &Cleaned,
    refused: &[i64],
) -> Result<u64, WarehouseError> {
    use std::collections::{HashMap, HashSet};
    let refused: HashSet<i64> = refused.iter().copied().collect();
    let products: HashMap<String, i64> = tx
        .query("SELECT product, product_key FROM dw.dim_product", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let shops: HashMap<i64, i64> = tx
        .query("SELECT shop_id, shop_key FROM dw.dim_shop", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let ids: Vec<i64> = cleaned
        .sales
        .iter()
        .map(|(_, s)| s.customer_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // Each customer's versions: (from, to, key); the first from the start of time.
    let mut versions: HashMap<i64, Vec<Version>> = HashMap::new();
    for r in tx
        .query(
            "SELECT customer_id, CASE WHEN isfinite(valid_from) THEN valid_from END, valid_to, customer_key
               FROM dw.dim_customer WHERE customer_id = ANY($1)",
            &[&ids],
        )
        .await?
    {
        versions
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), r.get(3)));
    }
    let mut rows = Vec::with_capacity(cleaned.sales.len());
    for (line, sale) in &cleaned.sales {
        if refused.contains(line) {
            continue;
        }
        let missing = |what: &str| {
            WarehouseError::Invariant(format!("line {line}: no {what} key for a staged sale"))
        };
        let version = versions
            .get(&sale.customer_id)
            .and_then(|vs| {
                vs.iter().find(|(from, to, _)| {
                    from.is_none_or(|f| f <= sale.at) && to.is_none_or(|t| sale.at < t)
                })
            })
            .ok_or_else(|| missing("customer"))?;
        let product = *products
            .get(&sale.product)
            .ok_or_else(|| missing("product"))?;
        let shop = *shops.get(&sale.shop_id).ok_or_else(|| missing("shop"))?;
        rows.push((version.2, sale, product, shop));
    }
    // In the unique index's order, so its pages fill in turn.
    rows.sort_unstable_by_key(|(_, s, _, _)| (s.customer_id, s.at));
    copy_in(
        tx,
        "COPY dw.fact_sales (customer_key, customer_id, product_key, shop_key, sales_amount,
                             transaction_date, batch_date) FROM STDIN BINARY",
        &[
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::NUMERIC,
            Type::TIMESTAMP,
            Type::DATE,
        ],
        rows.iter().map(|(customer, s, product, shop)| {
            vec![
                Box::new(*customer) as Box<dyn ToSql + Sync + Send>,
                Box::new(s.customer_id),
                Box::new(*product),
                Box::new(*shop),
                Box::new(s.amount),
                Box::new(s.at),
                Box::new(date),
            ]
        }),
    )
    .await?;
    Ok(rows.len() as u64)
}

/// The staged sales (of a replay: a few) as facts, each pointing to the
/// customer version current at its instant.
async fn insert_facts(tx: &Transaction<'_>) -> Result<u64, WarehouseError> {
    Ok(tx
        .execute(
            "INSERT INTO dw.fact_sales (customer_key, customer_id, product_key, shop_key,
                                        sales_amount, transaction_date, batch_date)
             SELECT c.customer_key, s.customer_id, p.product_key, h.shop_key,
                    s.sales_amount, s.transaction_date, s.batch_date
               FROM stage_sales s
               JOIN dw.dim_product p ON p.product = s.product
               JOIN dw.dim_shop h ON h.shop_id = s.shop_id
               JOIN dw.dim_customer c ON c.customer_id = s.customer_id
                AND c.valid_from <= s.transaction_date
                AND (c.valid_to IS NULL OR s.transaction_date < c.valid_to)",
            &[],
        )
        .await?)
}

/// The marts moved by the facts just made from `stage_sales`.
async fn update_marts(tx: &Transaction<'_>, inserted: u64) -> Result<(), WarehouseError> {
    // Every staged sale is inserted (its customer is known, its product and
    // shop were added, and one version covers every instant), so the marts
    // move by the staged rows: aggregating the small temporary table is much
    // cheaper than the inserted rows handed back.
    let staged: i64 = tx
        .query_one("SELECT count(*) FROM stage_sales", &[])
        .await?
        .get(0);
    if staged != inserted as i64 {
        return Err(WarehouseError::Invariant(format!(
            "{staged} staged sales made {inserted} facts"
        )));
    }
    tx.batch_execute(
        "INSERT INTO mart.customer_monthly_spending AS m (customer_id, year, month, monthly_amount)
         SELECT customer_id, extract(year FROM transaction_date)::int,
                extract(month FROM transaction_date)::int, sum(sales_amount)
           FROM stage_sales GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
         ON CONFLICT (customer_id, year, month)
         DO UPDATE SET monthly_amount = m.monthly_amount + excluded.monthly_amount;
         INSERT INTO mart.customer_last_purchase AS l (customer_id, last_purchase)
         SELECT customer_id, max(transaction_date) FROM stage_sales GROUP BY 1 ORDER BY 1
         ON CONFLICT (customer_id)
         DO UPDATE SET last_purchase = greatest(l.last_purchase, excluded.last_purchase);",
    )
    .await?;
    Ok(())
}

/// Each rule's count in the batch's quarantine, with the first examples.
async fn rule_counts(
    tx: &Transaction<'_>,
    date: NaiveDate,
) -> Result<Vec<RuleCount>, WarehouseError> {
    let rows = tx
        .query(
            "SELECT source, rule, count(*),
                    (array_agg(jsonb_build_object('line', line, 'reason', reason, 'record', record)
                               ORDER BY line))[1:$2]
               FROM dw.quarantine WHERE batch_date = $1 AND released_at IS NULL
              GROUP BY source, rule ORDER BY source, count(*) DESC, rule",
            &[&date, &(super::EXAMPLES as i32)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| RuleCount {
            source: r.get(0),
            rule: r.get(1),
            count: r.get::<_, i64>(2) as u64,
            examples: r.get(3),
        })
        .collect())
}

/// What a replay of the quarantine did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Sales loaded as facts of their batch, and released.
    pub released: u64,
    /// Sales still quarantined, by rule.
    pub still: Vec<(String, u64)>,
}

/// `clue warehouse replay-quarantine`: every pending quarantined sale is
/// cleaned again from its record as it is now (fixed by hand or not); one
/// that passes, of a customer the warehouse knows and not loaded before,
/// becomes a fact of its batch and is released; the others stay, with
/// their reason as of now.
pub(super) async fn replay(
    db: &Database,
    rules: &crate::domain::warehouse::WarehouseRules,
) -> Result<Replayed, WarehouseError> {
    use crate::domain::warehouse::SALES_COLUMNS;
    let mut client = db.client().await?;
    let client: &mut tokio_postgres::Client = &mut client;
    let pending = "SELECT quarantine_id, batch_date, record FROM dw.quarantine
                    WHERE source = 'sales' AND released_at IS NULL ORDER BY quarantine_id";
    let clean = |rows: &[tokio_postgres::Row], now: chrono::NaiveDateTime| {
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for r in rows {
            let (id, date, record): (i64, NaiveDate, serde_json::Value) =
                (r.get(0), r.get(1), r.get(2));
            let fields: [&str; 5] = std::array::from_fn(|i| {
                record
                    .get(SALES_COLUMNS[i])
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
            });
            match rules.sale(fields, now) {
                Ok(sale) => match seen.entry(sale.key()) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(id);
                        ok.push((id, date, sale));
                    }
                    std::collections::hash_map::Entry::Occupied(first) => {
                        refused.push((
                            id,
                            crate::domain::warehouse::Fault::new(
                                crate::domain::warehouse::DUPLICATE,
                                format!("the same sale as quarantined row {}", first.get()),
                            ),
                        ));
                    }
                },
                Err(fault) => refused.push((id, fault)),
            }
        }
        (ok, refused)
    };
    // The months first (from a first look), each partition in a short transaction.
    let now = chrono::Utc::now().naive_utc();
    let first_look = client.query(pending, &[]).await?;
    let months: BTreeSet<Month> = clean(&first_look, now)
        .0
        .iter()
        .map(|(_, _, s)| Month::of(s.at.date()))
        .collect();
    let facts = crate::pg::catalog::load_table(&*client, "dw.fact_sales").await?;
    crate::write::partitions::ensure_months(client, &facts, &months).await?;
    let tx = client.transaction().await?;
    store::locks::lock_warehouse(&tx).await?;
    let rows = tx.query(&format!("{pending} FOR UPDATE"), &[]).await?;
    let (ok, refused) = clean(&rows, now);
    create_stage(&tx).await?;
    stage_sales(&tx, ok.iter().map(|(id, date, s)| (*id, *date, s))).await?;
    let (ids, rules_now, reasons): (Vec<i64>, Vec<&str>, Vec<&str>) = refused
        .iter()
        .map(|(id, f)| (*id, f.rule.as_str(), f.reason.as_str()))
        .fold(
            (vec![], vec![], vec![]),
            |(mut a, mut b, mut c), (x, y, z)| {
                a.push(x);
                b.push(y);
                c.push(z);
                (a, b, c)
            },
        );
    tx.execute(
        "UPDATE dw.quarantine q SET rule = u.rule, reason = u.reason
           FROM unnest($1::int8[], $2::text[], $3::text[]) AS u(id, rule, reason)
          WHERE q.quarantine_id = u.id",
        &[&ids, &rules_now, &reasons],
    )
    .await?;
    let released = load_staged_sales(&tx, Staged::Replay).await?;
    tx.execute(
        "UPDATE dw.quarantine SET released_at = now()
          WHERE quarantine_id IN (SELECT line FROM stage_sales)",
        &[],
    )
    .await?;
    let still = tx
        .query(
            "SELECT rule, count(*) FROM dw.quarantine
              WHERE source = 'sales' AND released_at IS NULL GROUP BY rule ORDER BY 2 DESC, 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect();
    tx.commit().await?;
    Ok(Replayed { released, still })
}
