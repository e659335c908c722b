//! Prototype 002's daily warehouse batches: a customers file and a sales
//! file read as received (`files`), cleaned by the declared rules
//! (`domain::warehouse`), then loaded in one transaction (`sink`): the raw
//! rows, the quarantined ones with their codes, the type 2 customer
//! versions, the product and shop dimensions, the facts, the KPI marts and
//! the batch's quality report.
//!
//! Architecture Invariant: a batch is loaded whole or not at all, exactly
//! once (a repeat is a no-op, `--replace` reloads the latest), and batches
//! go in date order, so a customer's versions follow the calendar.

pub mod files;
mod sink;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::domain::warehouse::{
    CUSTOMER_COLUMNS, Customer, DUPLICATE, DUPLICATE_ID, Fault, SALES_COLUMNS, Sale, SaleKey,
    WarehouseRules,
};
use crate::error::{Classify, ErrorKind};
use crate::pg::database::{Database, DbError};
use files::BatchFile;
pub use sink::Replayed;

/// Examples of each rule kept in a report.
const EXAMPLES: usize = 3;

/// What `clue warehouse load` was asked to do.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub customers: PathBuf,
    pub sales: PathBuf,
    pub batch_date: NaiveDate,
    /// Reload the batch (the latest) if it is loaded already.
    pub replace: bool,
    pub rules: WarehouseRules,
}

/// What a load did.
#[derive(Debug)]
pub enum Outcome {
    Loaded(Report),
    /// The same files were loaded as this batch before: nothing written.
    AlreadyLoaded(NaiveDate),
}

/// A batch's quality report (kept with the batch, shown by
/// `clue warehouse report`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Report {
    #[schema(value_type = String, format = Date)]
    pub batch_date: NaiveDate,
    pub customers: CustomerCounts,
    pub sales: SalesCounts,
    /// Each rule that refused rows: how many, and the first few.
    pub rules: Vec<RuleCount>,
    /// Seconds spent reading the files, cleaning them, and loading.
    pub seconds: Stages,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CustomerCounts {
    pub received: u64,
    pub quarantined: u64,
    /// Customers seen for the first time.
    pub new: u64,
    /// Customers whose name or city changed: a version closed, one opened.
    pub changed: u64,
    pub unchanged: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SalesCounts {
    pub received: u64,
    pub quarantined: u64,
    pub loaded: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RuleCount {
    /// `customers` or `sales`.
    pub source: String,
    pub rule: String,
    pub count: u64,
    pub examples: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Stages {
    pub read: f64,
    pub clean: f64,
    pub load: f64,
    pub total: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("{file}: {}{reason}", line.map_or(String::new(), |l| format!("line {l}: ")))]
    Input {
        file: String,
        line: Option<i64>,
        reason: String,
    },
    #[error(
        "batch {date} is older than the latest loaded batch {latest}: batches load in date order (late sales inside a newer batch are fine)"
    )]
    OutOfOrder { date: NaiveDate, latest: NaiveDate },
    #[error(
        "batch {date} was loaded from other files ({customers}, {sales}); --replace reloads it"
    )]
    OtherFiles {
        date: NaiveDate,
        customers: String,
        sales: String,
    },
    #[error(
        "only the latest batch ({latest}) can be replaced, not {date}: later batches built on it"
    )]
    ReplaceNotLatest { date: NaiveDate, latest: NaiveDate },
    #[error(
        "batch {date} cannot be replaced: {sales} sale(s) of earlier batches, released from the quarantine since, belong to customers it brought"
    )]
    ReplayedOnto { date: NaiveDate, sales: i64 },
    #[error("no batch {0} is loaded")]
    NoBatch(NaiveDate),
    #[error("no batch is loaded yet")]
    NoBatches,
    /// A fault of clue's (the load rolled back).
    #[error("the load broke an invariant: {0}")]
    Invariant(String),
    #[error("the stored report of batch {date} cannot be read: {reason}")]
    StoredReport { date: NaiveDate, reason: String },
    #[error(transparent)]
    Partitions(#[from] crate::write::partitions::PartitionError),
    #[error(transparent)]
    Schema(#[from] crate::pg::catalog::SchemaError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for WarehouseError {
    fn from(e: tokio_postgres::Error) -> Self {
        WarehouseError::Db(DbError::Query(e))
    }
}

impl Classify for WarehouseError {
    fn kind(&self) -> ErrorKind {
        match self {
            WarehouseError::Input { .. } => ErrorKind::BadInput,
            WarehouseError::OutOfOrder { .. }
            | WarehouseError::OtherFiles { .. }
            | WarehouseError::ReplaceNotLatest { .. }
            | WarehouseError::ReplayedOnto { .. } => ErrorKind::Conflict,
            WarehouseError::NoBatch(_) | WarehouseError::NoBatches => ErrorKind::NotFound,
            WarehouseError::StoredReport { .. } | WarehouseError::Invariant(_) => {
                ErrorKind::Internal
            }
            WarehouseError::Partitions(e) => e.kind(),
            WarehouseError::Schema(e) => e.kind(),
            WarehouseError::Db(e) => e.kind(),
        }
    }
}

/// A refused row: where from, why, and the row as received.
#[derive(Debug, Clone)]
struct Refused {
    source: &'static str,
    line: i64,
    fault: Fault,
    record: serde_json::Value,
}

/// A batch cleaned: the rows that passed, in file order, and the others.
#[derive(Debug, Default)]
struct Cleaned {
    customers: Vec<(i64, Customer)>,
    sales: Vec<(i64, Sale)>,
    refused: Vec<Refused>,
}

/// A row as received, as the quarantine keeps it: `{column: text}`.
fn record_of(columns: &[&str], fields: &[String]) -> serde_json::Value {
    serde_json::Value::Object(
        columns
            .iter()
            .zip(fields)
            .map(|(c, f)| ((*c).to_owned(), serde_json::Value::String(f.clone())))
            .collect(),
    )
}

/// The batch date a file name carries (`sales_2025-03-01.csv`), if any.
pub fn date_in_name(path: &std::path::Path) -> Option<NaiveDate> {
    let name = path.file_name()?.to_str()?;
    let bytes = name.as_bytes();
    (0..bytes.len().saturating_sub(9)).find_map(|i| {
        name.get(i..i + 10)
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
    })
}

/// Loads one batch.
pub async fn load(db: &Database, opts: &LoadOptions) -> Result<Outcome, WarehouseError> {
    let started = Instant::now();
    let (customers, sales) = {
        let (c, s) = (opts.customers.clone(), opts.sales.clone());
        tokio::task::spawn_blocking(move || {
            Ok::<_, WarehouseError>((
                files::read(&c, &CUSTOMER_COLUMNS)?,
                files::read(&s, &SALES_COLUMNS)?,
            ))
        })
        .await
        .expect("the file reader does not panic")?
    };
    let read = started.elapsed().as_secs_f64();
    let now = chrono::Utc::now().naive_utc();
    let cleaned = clean(&opts.rules, &customers, &sales, now);
    let clean_done = started.elapsed().as_secs_f64();
    let mut report = Report {
        batch_date: opts.batch_date,
        customers: CustomerCounts {
            received: customers.rows.len() as u64,
            ..CustomerCounts::default()
        },
        sales: SalesCounts {
            received: sales.rows.len() as u64,
            ..SalesCounts::default()
        },
        rules: Vec::new(),
        seconds: Stages {
            read,
            clean: clean_done - read,
            ..Stages::default()
        },
    };
    sink::load(db, opts, &customers, &sales, &cleaned, &mut report).await
}

/// Every row through the rules; a repeated customer id or sale refused.
fn clean(
    rules: &WarehouseRules,
    customers: &BatchFile,
    sales: &BatchFile,
    now: NaiveDateTime,
) -> Cleaned {
    let mut out = Cleaned::default();
    let record = record_of;
    let mut seen_ids: HashMap<i64, i64> = HashMap::new();
    for row in &customers.rows {
        let fields: [&str; 3] = std::array::from_fn(|i| row.fields[i].as_str());
        let result = match &row.unreadable {
            Some(why) => Err(Fault::new("unreadable_row", format!("the row {why}"))),
            None => rules.customer(fields),
        }
        .and_then(|c| match seen_ids.get(&c.id) {
            Some(first) => Err(Fault::new(
                DUPLICATE_ID,
                format!("ID {} is on line {first} too", c.id),
            )),
            None => {
                seen_ids.insert(c.id, row.line);
                Ok(c)
            }
        });
        match result {
            Ok(c) => out.customers.push((row.line, c)),
            Err(fault) => out.refused.push(Refused {
                source: "customers",
                line: row.line,
                fault,
                record: record(&CUSTOMER_COLUMNS, &row.fields),
            }),
        }
    }
    // Each sale's identity and the line it was first on.
    let mut seen_sales: HashMap<SaleKey, i64> = HashMap::new();
    for row in &sales.rows {
        let fields: [&str; 5] = std::array::from_fn(|i| row.fields[i].as_str());
        let result = match &row.unreadable {
            Some(why) => Err(Fault::new("unreadable_row", format!("the row {why}"))),
            None => rules.sale(fields, now),
        }
        .and_then(|s| match seen_sales.entry(s.key()) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(row.line);
                Ok(s)
            }
            std::collections::hash_map::Entry::Occupied(first) => Err(Fault::new(
                DUPLICATE,
                format!("the same sale is on line {}", first.get()),
            )),
        });
        match result {
            Ok(s) => out.sales.push((row.line, s)),
            Err(fault) => out.refused.push(Refused {
                source: "sales",
                line: row.line,
                fault,
                record: record(&SALES_COLUMNS, &row.fields),
            }),
        }
    }
    out
}

/// `clue warehouse refresh`: the KPI marts recomputed from the facts in
/// one transaction (readers see the old figures until it commits).
pub async fn refresh(db: &Database) -> Result<(), WarehouseError> {
    let mut client = db.client().await?;
    let client: &mut tokio_postgres::Client = &mut client;
    let tx = client.transaction().await?;
    crate::store::locks::lock_warehouse(&tx).await?;
    sink::refresh_marts(&tx, None).await?;
    tx.commit().await?;
    Ok(())
}

/// `clue warehouse replay-quarantine` (see [`sink::replay`]).
pub async fn replay_quarantine(
    db: &Database,
    rules: &WarehouseRules,
) -> Result<Replayed, WarehouseError> {
    sink::replay(db, rules).await
}

/// The report of batch `date` (the latest without one).
pub async fn report(db: &Database, date: Option<NaiveDate>) -> Result<Report, WarehouseError> {
    let client = db.client().await?;
    let batch = match date {
        Some(d) => crate::store::warehouse::batch(&**client, d)
            .await?
            .ok_or(WarehouseError::NoBatch(d))?,
        None => crate::store::warehouse::batches(&**client)
            .await?
            .into_iter()
            .next()
            .ok_or(WarehouseError::NoBatches)?,
    };
    serde_json::from_value(batch.report).map_err(|e| WarehouseError::StoredReport {
        date: batch.batch_date,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::date_in_name;
    use std::path::Path;

    #[test]
    fn a_file_name_can_carry_the_batch_date() {
        for (name, expect) in [
            ("sales_2025-03-01.csv", Some("2025-03-01")),
            ("/data/in/2025-12-31-customers.csv.gz", Some("2025-12-31")),
            ("sales.csv", None),
            ("sales_2025-02-30.csv", None),
        ] {
            assert_eq!(
                date_in_name(Path::new(name)).map(|d| d.to_string()),
                expect.map(str::to_owned),
                "{name}"
            );
        }
    }
}
