//! Monthly partitions of date-partitioned fact tables: naming, creation with
//! per-partition indexes, and moving rows out of the default partition.
//!
//! Architecture Invariant: a month partition of `T` is `T_YYYY_MM` covering
//! `[YYYY-MM-01, next month)`, with indexes on `product_name` and `region`
//! when the table has those columns; the default partition is `T_other`.
//! Creation is serialized per table by an advisory lock, so concurrent
//! imports and commands never create a partition twice.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use tokio_postgres::GenericClient;

use crate::domain::time::Month;
use crate::error::{Classify, ErrorKind, classify_pg, pg_message};
use crate::pg::catalog::{self as schema, SchemaError};
use crate::sql::table::Table;
use crate::sql::{day_start_literal, day_start_sql, quote_ident};
use crate::store::locks;

/// Columns that get a per-partition index (prototype 000's design).
const INDEXED_COLUMNS: [&str; 2] = ["product_name", "region"];

/// Years a single `create-monthly-partitions` may span (a typo guard).
const MAX_YEARS: i32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("end year {end} is before start year {start}")]
    EndBeforeStart { start: i32, end: i32 },
    #[error("years must be between 1 and 9999, got {0}")]
    YearOutOfRange(i32),
    #[error("{start}..{end} spans more than {MAX_YEARS} years; create them in smaller steps")]
    TooManyYears { start: i32, end: i32 },
    #[error(
        "table {table} is not partitioned, so it cannot have monthly partitions (create it with PARTITION BY RANGE on a date or timestamp column)"
    )]
    NotPartitioned { table: String },
    #[error("table {table} is {how}, so clue cannot add monthly partitions")]
    WrongPartitioning { table: String, how: String },
    #[error(
        "month {month} of {table} is partly covered by partition {partition} ({bounds}); clue will not create an overlapping {wanted}"
    )]
    Overlap {
        table: String,
        month: Month,
        partition: String,
        bounds: String,
        wanted: String,
    },
    #[error(
        "partition name {0:?} would exceed PostgreSQL's 63-byte limit; use a shorter table name"
    )]
    NameTooLong(String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("database error: {}", pg_message(.0))]
    Db(#[from] tokio_postgres::Error),
}

impl Classify for PartitionError {
    fn kind(&self) -> ErrorKind {
        match self {
            PartitionError::Schema(e) => e.kind(),
            PartitionError::Db(e) => classify_pg(e),
            _ => ErrorKind::BadInput,
        }
    }
}

/// The name of the month partition of `table`.
pub fn partition_name(table: &str, month: Month) -> String {
    format!("{table}_{:04}_{:02}", month.year, month.month)
}

/// The name of the default partition clue creates for `table`.
pub fn default_partition_name(table: &str) -> String {
    format!("{table}_other")
}

/// What a partitioning command did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    pub created: Vec<String>,
    pub already_present: usize,
    /// Rows moved out of the default partition into new month partitions.
    pub rows_moved: u64,
    pub default_created: Option<String>,
}

/// An existing partition and its bounds (`None` bounds = unbounded side).
#[derive(Debug, Clone)]
struct Existing {
    name: String,
    bounds_text: String,
    is_default: bool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

async fn existing_partitions(
    client: &impl GenericClient,
    table: &Table,
) -> Result<Vec<Existing>, PartitionError> {
    let rows = client
        .query(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = $1",
            &[&table.table.oid],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let bounds_text: String = r.get(1);
            let (from, to) = parse_bounds(&bounds_text);
            Existing {
                name: r.get(0),
                is_default: bounds_text == "DEFAULT",
                bounds_text,
                from,
                to,
            }
        })
        .collect())
}

/// Parses `FOR VALUES FROM ('2025-04-01') TO ('2025-05-01')`; MINVALUE and
/// MAXVALUE become open ends.
fn parse_bounds(text: &str) -> (Option<NaiveDate>, Option<NaiveDate>) {
    // `'2025-04-01'`, `'10000-01-01'` or `'0001-01-01 BC'` (year 0); of a
    // timestamp key `'2025-04-01 00:00:00'` or (sessions run in UTC)
    // `'2025-04-01 00:00:00+00'`. A bound inside a day counts as that day,
    // which errs towards overlap, never past it.
    let side = |s: &str| -> Option<NaiveDate> {
        let start = s.find('\'')? + 1;
        let len = s[start..].find('\'')?;
        let text = &s[start..start + len];
        let (text, bc) = match text.strip_suffix(" BC") {
            Some(t) => (t, true),
            None => (text, false),
        };
        let text = text.split(' ').next()?;
        let mut parts = text.splitn(3, '-');
        let year: i32 = parts.next()?.parse().ok()?;
        let month: u32 = parts.next()?.parse().ok()?;
        let day: u32 = parts.next()?.parse().ok()?;
        NaiveDate::from_ymd_opt(if bc { 1 - year } else { year }, month, day)
    };
    match (text.find(" FROM ("), text.find(" TO (")) {
        (Some(f), Some(t)) => (side(&text[f..t]), side(&text[t..])),
        _ => (None, None),
    }
}

fn check_partitioned(table: &Table) -> Result<(), PartitionError> {
    if let Some(how) = &table.other_partitioning {
        return Err(PartitionError::WrongPartitioning {
            table: table.table.display(),
            how: how.clone(),
        });
    }
    if table.time_partitioning.is_none() {
        return Err(PartitionError::NotPartitioned {
            table: table.table.display(),
        });
    }
    Ok(())
}

/// Serializes partition changes of one table across sessions until the
/// transaction ends.
async fn lock_table_partitions(
    client: &impl GenericClient,
    table: &Table,
) -> Result<(), PartitionError> {
    Ok(locks::lock_partitions(client, table.table.oid).await?)
}

/// Drops those of `names` (month partitions of `table`) that hold no rows,
/// returning the ones dropped: a load that rejected every row of a month,
/// or failed, leaves no empty partition of its own behind.
pub async fn drop_if_empty(
    client: &mut tokio_postgres::Client,
    table: &Table,
    names: &[String],
) -> Result<Vec<String>, PartitionError> {
    let tx = client.transaction().await?;
    lock_table_partitions(&tx, table).await?;
    let mut dropped = Vec::new();
    for name in names {
        let quoted = qualified(table, name);
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quoted])
            .await?
            .get(0);
        if !exists {
            continue;
        }
        let empty: bool = tx
            .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {quoted})"), &[])
            .await?
            .get(0);
        if empty {
            tx.batch_execute(&format!("DROP TABLE {quoted}")).await?;
            dropped.push(name.clone());
        }
    }
    tx.commit().await?;
    Ok(dropped)
}

/// `create-monthly-partitions`: every month of `start..=end` years, plus the
/// default partition, in one transaction.
pub async fn create_monthly_partitions(
    client: &mut tokio_postgres::Client,
    table_name: &str,
    start: i32,
    end: i32,
) -> Result<PartitionReport, PartitionError> {
    for y in [start, end] {
        if !(1..=9999).contains(&y) {
            return Err(PartitionError::YearOutOfRange(y));
        }
    }
    if end < start {
        return Err(PartitionError::EndBeforeStart { start, end });
    }
    if end - start >= MAX_YEARS {
        return Err(PartitionError::TooManyYears { start, end });
    }
    let tx = client.transaction().await?;
    let table = schema::load_table(&tx, table_name).await?;
    check_partitioned(&table)?;
    lock_table_partitions(&tx, &table).await?;
    let months: BTreeSet<Month> = (start..=end)
        .flat_map(|year| (1..=12).map(move |month| Month { year, month }))
        .collect();
    let mut report = ensure_in_tx(&tx, &table, &months).await?;
    let existing = existing_partitions(&tx, &table).await?;
    if !existing.iter().any(|p| p.is_default) {
        let name = default_partition_name(&table.table.name);
        check_name(&name)?;
        tx.batch_execute(&format!(
            "CREATE TABLE {} PARTITION OF {} DEFAULT",
            qualified(&table, &name),
            table.table.quoted()
        ))
        .await?;
        create_indexes(&tx, &table, &name).await?;
        report.default_created = Some(name);
    }
    tx.commit().await?;
    Ok(report)
}

/// Makes sure every month in `months` has a partition, each created in its
/// own short transaction (so a long import never holds the parent's
/// exclusive lock). Used by the importer before it loads.
pub async fn ensure_months(
    client: &mut tokio_postgres::Client,
    table: &Table,
    months: &BTreeSet<Month>,
) -> Result<PartitionReport, PartitionError> {
    check_partitioned(table)?;
    let existing = existing_partitions(&*client, table).await?;
    let missing: BTreeSet<Month> = months
        .iter()
        .copied()
        .filter(|m| covering(&existing, *m).is_none())
        .collect();
    let mut report = PartitionReport {
        already_present: months.len() - missing.len(),
        ..PartitionReport::default()
    };
    for month in missing {
        let tx = client.transaction().await?;
        lock_table_partitions(&tx, table).await?;
        let one = ensure_in_tx(&tx, table, &BTreeSet::from([month])).await?;
        tx.commit().await?;
        report.created.extend(one.created);
        report.rows_moved += one.rows_moved;
        report.already_present += one.already_present;
    }
    Ok(report)
}

/// The partition (not the default one) whose range overlaps `month`.
fn covering(existing: &[Existing], month: Month) -> Option<&Existing> {
    let (start, end) = (month.first_day(), month.next().first_day());
    existing
        .iter()
        .find(|p| !p.is_default && p.from.is_none_or(|f| f < end) && p.to.is_none_or(|t| t > start))
}

/// Creates the missing month partitions inside an open transaction that
/// already holds the table's partition lock.
async fn ensure_in_tx(
    tx: &tokio_postgres::Transaction<'_>,
    table: &Table,
    months: &BTreeSet<Month>,
) -> Result<PartitionReport, PartitionError> {
    let existing = existing_partitions(tx, table).await?;
    let default = existing
        .iter()
        .find(|p| p.is_default)
        .map(|p| p.name.clone());
    let partitioning = table.time_partitioning.as_ref().expect("checked by caller");
    let (key, kind) = (&partitioning.key, partitioning.kind);
    let mut report = PartitionReport::default();
    for &month in months {
        let name = partition_name(&table.table.name, month);
        let (start, end) = (month.first_day(), month.next().first_day());
        if let Some(p) = covering(&existing, month) {
            let whole = p.from.is_none_or(|f| f <= start) && p.to.is_none_or(|t| t >= end);
            if !whole {
                return Err(PartitionError::Overlap {
                    table: table.table.display(),
                    month,
                    partition: p.name.clone(),
                    bounds: p.bounds_text.clone(),
                    wanted: name,
                });
            }
            report.already_present += 1;
            continue;
        }
        check_name(&name)?;
        // PostgreSQL refuses to create a partition while the default one holds
        // rows of its range: take those rows out first and route them back in.
        let mut moved = 0;
        let columns = table
            .columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(default) = &default {
            // Moving rows changes no rollup: the keepers leave it alone.
            crate::write::triggers::own_write(tx).await?;
            moved = tx
                .execute(
                    &format!(
                        "CREATE TEMP TABLE clue_moved ON COMMIT DROP AS
                         WITH d AS (DELETE FROM {} WHERE {k} >= {from} AND {k} < {to} RETURNING {columns})
                         SELECT * FROM d",
                        qualified(table, default),
                        k = quote_ident(key),
                        from = day_start_sql("$1", kind),
                        to = day_start_sql("$2", kind),
                    ),
                    &[&start, &end],
                )
                .await?;
        }
        tx.batch_execute(&format!(
            "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})",
            qualified(table, &name),
            table.table.quoted(),
            day_start_literal(start, kind),
            day_start_literal(end, kind),
        ))
        .await?;
        create_indexes(tx, table, &name).await?;
        if default.is_some() {
            tx.batch_execute(&format!(
                "INSERT INTO {} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM clue_moved;
                 DROP TABLE clue_moved",
                table.table.quoted()
            ))
            .await?;
        }
        report.rows_moved += moved;
        report.created.push(name);
    }
    Ok(report)
}

async fn create_indexes(
    tx: &impl GenericClient,
    table: &Table,
    partition: &str,
) -> Result<(), PartitionError> {
    for column in INDEXED_COLUMNS {
        if table.column(column).is_some() {
            tx.batch_execute(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
                quote_ident(&format!("{partition}_{column}_idx")),
                qualified(table, partition),
                quote_ident(column)
            ))
            .await?;
        }
    }
    Ok(())
}

fn qualified(table: &Table, name: &str) -> String {
    table.table.sibling(name)
}

fn check_name(name: &str) -> Result<(), PartitionError> {
    if name.len() > 63 {
        return Err(PartitionError::NameTooLong(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_months() {
        let m = Month {
            year: 2025,
            month: 12,
        };
        assert_eq!(partition_name("sales_report", m), "sales_report_2025_12");
        assert_eq!(
            m.next(),
            Month {
                year: 2026,
                month: 1
            }
        );
        assert_eq!(m.to_string(), "2025-12");
        assert_eq!(default_partition_name("t"), "t_other");
    }

    #[test]
    fn bounds() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        let check = |text: &str, from: Option<NaiveDate>, to: Option<NaiveDate>| {
            assert_eq!(parse_bounds(text), (from, to), "{text}");
        };
        check(
            "FOR VALUES FROM ('2025-04-01') TO ('2025-05-01')",
            d("2025-04-01"),
            d("2025-05-01"),
        );
        check(
            "FOR VALUES FROM ('0001-01-01 BC') TO ('0001-02-01 BC')",
            NaiveDate::from_ymd_opt(0, 1, 1),
            NaiveDate::from_ymd_opt(0, 2, 1),
        );
        check(
            "FOR VALUES FROM ('9999-12-01') TO ('10000-01-01')",
            d("9999-12-01"),
            NaiveDate::from_ymd_opt(10000, 1, 1),
        );
        check(
            "FOR VALUES FROM (MINVALUE) TO ('2020-01-01')",
            None,
            d("2020-01-01"),
        );
        check(
            "FOR VALUES FROM ('2030-01-01') TO (MAXVALUE)",
            d("2030-01-01"),
            None,
        );
        check("DEFAULT", None, None);
    }

    #[test]
    fn coverage() {
        let part = |name: &str, from: &str, to: &str| Existing {
            name: name.into(),
            bounds_text: String::new(),
            is_default: false,
            from: NaiveDate::parse_from_str(from, "%Y-%m-%d").ok(),
            to: NaiveDate::parse_from_str(to, "%Y-%m-%d").ok(),
        };
        let existing = vec![
            part("q1", "2025-01-01", "2025-04-01"),
            part("half", "2025-06-15", "2025-07-01"),
        ];
        let name_of =
            |y, m| covering(&existing, Month { year: y, month: m }).map(|p| p.name.clone());
        assert_eq!(name_of(2025, 2), Some("q1".into()));
        assert_eq!(name_of(2025, 4), None);
        assert_eq!(name_of(2025, 6), Some("half".into()));
        assert_eq!(name_of(2024, 12), None);
    }
}
