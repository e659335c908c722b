//! The load transaction, fed by any producer: the job row, the rows as
//! binary COPY, the rejects, the rollup deltas, the write notification and
//! the job's counts, committed together.
//!
//! A producer (a CSV file's parser thread today; events, replicated tuples
//! and warehouse batches next) sends [`Batch`]es over a channel while the
//! transaction streams them to PostgreSQL, then reports what it produced.
//!
//! Architecture Invariant: a load is all or nothing; a producer's failure,
//! a database failure and a concurrent load of the same content all roll
//! the whole transaction back.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use postgres_types::Type;
use tokio::sync::mpsc;

use crate::domain::delta::Accumulator;
use crate::domain::time::{DayRange, Month};
use crate::error::{Classify, ErrorKind, classify_pg, pg_message};
use crate::pg::catalog::{self as schema, SchemaError};
use crate::pg::copy::{COPY_HEADER, COPY_TRAILER, put_row};
use crate::sql::quote_ident;
use crate::sql::table::{KeyKind, Table};
use crate::store;
use crate::store::imports::JobFacts;
use crate::store::ledger::{self, Claim};
use crate::store::notify::notify_write;
use crate::write::rollups;

/// The columns of an error table (prototype 000's `validation_logs`).
pub const ERROR_TABLE_COLUMNS: [&str; 9] = [
    "import_id",
    "file_name",
    "line_number",
    "record_number",
    "column_name",
    "raw_value",
    "rule",
    "reason",
    "raw_record",
];

/// What a producer sends while it produces.
pub enum Batch {
    /// Rows in binary COPY format (no header or trailer), for [`Target::columns`].
    Rows(Bytes),
    Rejects(Vec<Reject>),
}

/// What a producer produced, reported once it has sent everything.
#[derive(Debug, Default)]
pub struct Produced {
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// The rollup deltas of the loaded rows, when the table's dataset has rollups.
    pub deltas: Option<Accumulator>,
    /// The months (of the partition key) of the loaded rows.
    pub months: BTreeSet<Month>,
    /// The keys of the loaded rows, when their dataset has a key column:
    /// claimed after the rows, in the same transaction.
    pub keys: Option<ProducedKeys>,
}

/// A record's idempotency key (its value of the dataset's key column) and
/// the fingerprint of its stored values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    pub key: String,
    pub fingerprint: String,
}

/// The keys a producer's rows claim, under their dataset's name.
#[derive(Debug)]
pub struct ProducedKeys {
    pub scope: String,
    pub ttl: Option<std::time::Duration>,
    pub keys: Vec<RecordKey>,
}

impl ProducedKeys {
    fn claims(&self) -> Vec<ClaimSpec<'_>> {
        self.keys
            .iter()
            .map(|k| ClaimSpec {
                scope: &self.scope,
                key: &k.key,
                fingerprint: &k.fingerprint,
                ttl: self.ttl,
                response: None,
            })
            .collect()
    }
}

/// Where a load goes.
pub struct Target<'a> {
    pub table: &'a Table,
    /// The columns of the rows, in order.
    pub columns: &'a [String],
    /// Where rejects go (quoted), when the load keeps them.
    pub error_table: Option<&'a str>,
    /// The dataset stored in the table, whose caches this load makes stale.
    pub dataset: Option<&'a str>,
    /// The import job it is recorded as, for loads of files.
    pub job: Option<&'a JobFacts>,
    /// Idempotency keys to claim in the load's transaction: a key already
    /// taken stops the load before anything is written.
    pub claims: &'a [ClaimSpec<'a>],
}

impl<'a> Target<'a> {
    /// A load of rows that are no file: no job row, no error table.
    pub fn rows(
        table: &'a Table,
        columns: &'a [String],
        dataset: Option<&'a str>,
        claims: &'a [ClaimSpec<'a>],
    ) -> Target<'a> {
        Target {
            table,
            columns,
            error_table: None,
            dataset,
            job: None,
            claims,
        }
    }
}

/// An idempotency key a load claims (see `store::ledger`).
#[derive(Debug, Clone, Copy)]
pub struct ClaimSpec<'a> {
    pub scope: &'a str,
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub ttl: Option<std::time::Duration>,
    /// The answer to replay for this key (JSON), kept with the claim.
    pub response: Option<&'a str>,
}

/// Why a load left nothing behind.
#[derive(Debug)]
pub enum LoadError<E> {
    /// The producer failed (its error says why).
    Producer(E),
    /// The same content was loaded by a concurrent load first.
    Concurrent,
    /// The database refused the load.
    Database { message: String, kind: ErrorKind },
    /// An idempotency key was taken before: `replay` when with the same payload.
    Duplicate { key: String, replay: bool },
}

impl<E> From<tokio_postgres::Error> for LoadError<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return LoadError::Concurrent;
        }
        LoadError::Database {
            message: pg_message(&e),
            kind: classify_pg(&e),
        }
    }
}

/// Why an error table cannot take rejects.
#[derive(Debug, thiserror::Error)]
pub enum ErrorTableError {
    #[error("error table {table}: {reason}")]
    Unusable { table: String, reason: String },
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl Classify for ErrorTableError {
    fn kind(&self) -> ErrorKind {
        match self {
            ErrorTableError::Unusable { .. } => ErrorKind::BadInput,
            ErrorTableError::Schema(e) => e.kind(),
        }
    }
}

/// Runs the load transaction: streams the producer's batches, then (once
/// `finish` reports what it produced) applies the rollup deltas, notifies
/// the write and commits. Returns the import's id and what was produced.
pub async fn load<E>(
    client: &mut tokio_postgres::Client,
    target: Target<'_>,
    batches: mpsc::Receiver<Batch>,
    finish: impl FnOnce() -> Result<Produced, E>,
) -> Result<(Option<i64>, Produced), LoadError<E>> {
    let started = std::time::Instant::now();
    let tx = client.transaction().await?;
    let loaded = load_in(&tx, target, batches, finish).await?;
    tx.commit().await?;
    let produced = &loaded.1;
    metrics::counter!("clue_import_rows_total").increment(produced.rows_loaded);
    metrics::counter!("clue_import_rejects_total").increment(produced.rows_rejected);
    metrics::histogram!("clue_import_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(loaded)
}

/// Claims every key in `tx`; a key taken before fails the load. Keys of
/// one scope and expiry are inserted together (one statement for a batch
/// of events); the ones already there are settled one by one.
async fn claim_all<E>(
    tx: &tokio_postgres::Transaction<'_>,
    claims: &[ClaimSpec<'_>],
) -> Result<(), LoadError<E>> {
    let mut settled = std::collections::HashSet::new();
    let mut all_new = false;
    let bulk: Vec<&ClaimSpec<'_>> = claims.iter().filter(|c| c.response.is_none()).collect();
    if let Some(first) = bulk.first()
        && bulk.len() > 1
        && bulk
            .iter()
            .all(|c| c.scope == first.scope && c.ttl == first.ttl)
    {
        let keys: Vec<&str> = bulk.iter().map(|c| c.key).collect();
        let fingerprints: Vec<&str> = bulk.iter().map(|c| c.fingerprint).collect();
        // New keys, the usual case, go in as one COPY; any key there
        // before sends the batch the slower way that says which.
        all_new = ledger::claim_copy(tx, first.scope, &keys, &fingerprints, first.ttl).await?;
        if !all_new {
            settled = ledger::claim_new(tx, first.scope, &keys, &fingerprints, first.ttl).await?;
        }
    }
    // A key inserted twice in one batch is settled only once.
    let mut seen = std::collections::HashSet::new();
    for c in claims {
        if c.response.is_none() && (all_new || seen.insert(c.key) && settled.contains(c.key)) {
            continue;
        }
        let replay = match ledger::claim(tx, c.scope, c.key, c.fingerprint, c.ttl).await? {
            Claim::New => {
                if let Some(response) = c.response {
                    ledger::keep_response(tx, c.scope, c.key, response).await?;
                }
                continue;
            }
            Claim::Replay { .. } => true,
            Claim::Conflict { .. } => false,
        };
        return Err(LoadError::Duplicate {
            key: c.key.to_owned(),
            replay,
        });
    }
    Ok(())
}

/// [`load`] inside a transaction the caller commits (a writer that claims
/// keys or writes more in the same transaction).
pub async fn load_in<E>(
    tx: &tokio_postgres::Transaction<'_>,
    target: Target<'_>,
    mut batches: mpsc::Receiver<Batch>,
    finish: impl FnOnce() -> Result<Produced, E>,
) -> Result<(Option<i64>, Produced), LoadError<E>> {
    // This load applies its own deltas: the rollup keepers leave it alone.
    crate::write::triggers::own_write(tx).await?;
    claim_all(tx, target.claims).await?;
    let import_id = match target.job {
        Some(job) => Some(store::imports::begin(tx, job).await?),
        None => None,
    };
    let copy_sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        target.table.table.quoted(),
        target
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let reject_sql = target.error_table.map(|t| {
        format!(
            "COPY {t} ({}) FROM STDIN (FORMAT binary)",
            ERROR_TABLE_COLUMNS.join(", ")
        )
    });
    let written: Result<u64, tokio_postgres::Error> = async {
        let mut sink = None;
        let mut copied = 0u64;
        while let Some(batch) = batches.recv().await {
            match batch {
                Batch::Rows(bytes) => {
                    if sink.is_none() {
                        let s = tx.copy_in::<_, Bytes>(&copy_sql).await?;
                        let mut s = Box::pin(s);
                        s.send(Bytes::from_static(COPY_HEADER)).await?;
                        sink = Some(s);
                    }
                    if let Some(s) = sink.as_mut() {
                        s.send(bytes).await?;
                    }
                }
                Batch::Rejects(rejects) => {
                    if let Some(mut s) = sink.take() {
                        s.send(Bytes::from_static(COPY_TRAILER)).await?;
                        copied += s.as_mut().finish().await?;
                    }
                    if let (Some(sql), Some(id), Some(job)) = (&reject_sql, import_id, target.job) {
                        write_rejects(tx, sql, id, &job.file_name, &rejects).await?;
                    }
                }
            }
        }
        // The producer has finished (or failed); only then is the data complete.
        if let Some(mut s) = sink.take() {
            s.send(Bytes::from_static(COPY_TRAILER)).await?;
            copied += s.as_mut().finish().await?;
        }
        Ok(copied)
    }
    .await;
    // Dropping the receiver first unblocks a producer still sending.
    drop(batches);
    let produced = finish().map_err(LoadError::Producer)?;
    let copied = written?;
    debug_assert_eq!(copied, produced.rows_loaded);
    if let Some(keys) = &produced.keys {
        claim_all(tx, &keys.claims()).await?;
    }
    if let Some(deltas) = &produced.deltas {
        let started = std::time::Instant::now();
        rollups::apply_deltas(deltas, tx, target.table).await?;
        tracing::debug!(
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "rollup deltas upserted"
        );
    }
    if let Some(dataset) = target.dataset {
        // The days loaded, else the months loaded (widened by a day each
        // side for an instant key: months are UTC, answers in any zone),
        // else anywhere.
        let instant_key = target
            .table
            .time_partitioning
            .as_ref()
            .is_some_and(|p| p.kind != KeyKind::Date);
        let days = produced
            .deltas
            .as_ref()
            .and_then(Accumulator::days)
            .or_else(|| {
                let (first, last) = (produced.months.first()?, produced.months.last()?);
                let days = first.days().union(last.days());
                Some(if instant_key {
                    DayRange {
                        first: days.first.pred_opt()?,
                        last: days.last.succ_opt()?,
                    }
                } else {
                    days
                })
            });
        notify_write(tx, dataset, days).await?;
    }
    if let Some(id) = import_id {
        store::imports::finish(tx, id, produced.rows_loaded, produced.rows_rejected).await?;
    }
    Ok((import_id, produced))
}

/// A rejected value (or a whole rejected record when `column` is `None`).
#[derive(Debug, Clone)]
pub struct Reject {
    /// Where the record starts in its source (a file's line, an event's index).
    pub line: u64,
    /// Its position among the source's records.
    pub record: u64,
    pub column: Option<String>,
    pub raw_value: Option<String>,
    /// The rule it broke (`type`, `required`, `min`, `field_count`...).
    pub rule: &'static str,
    pub reason: String,
    /// The whole record as received.
    pub raw_record: String,
}

/// Writes a batch of rejects to the error table with their own COPY.
async fn write_rejects(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    import_id: i64,
    file_name: &str,
    rejects: &[Reject],
) -> Result<(), tokio_postgres::Error> {
    let mut buf = BytesMut::with_capacity(COPY_HEADER.len() + rejects.len() * 256);
    buf.put_slice(COPY_HEADER);
    for r in rejects {
        put_row(
            &mut buf,
            &[
                (&import_id, Type::INT8),
                (&file_name, Type::TEXT),
                (&(r.line as i64), Type::INT8),
                (&(r.record as i64), Type::INT8),
                (&r.column, Type::TEXT),
                (&r.raw_value, Type::TEXT),
                (&r.rule, Type::TEXT),
                (&r.reason, Type::TEXT),
                (&r.raw_record, Type::TEXT),
            ],
        );
    }
    buf.put_slice(COPY_TRAILER);
    let sink = tx.copy_in::<_, Bytes>(sql).await?;
    let mut sink = Box::pin(sink);
    sink.send(buf.freeze()).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// Finds or creates the error table, returning its quoted name.
pub async fn resolve_error_table(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<String, ErrorTableError> {
    let err = |reason: String| ErrorTableError::Unusable {
        table: name.to_owned(),
        reason,
    };
    let table = match schema::find_table(client, name).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            schema::parse_table_name(name)?;
            // Same shape as clue's validation_logs, with an identity of its own.
            let quoted = name
                .split('.')
                .map(quote_ident)
                .collect::<Vec<_>>()
                .join(".");
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {quoted} (LIKE public.validation_logs INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS)"
                ))
                .await
                .map_err(|e| err(format!("cannot be created: {}", pg_message(&e))))?;
            schema::find_table(client, name)
                .await?
                .ok_or_else(|| err("vanished after creation".into()))?
        }
        Err(e) => return Err(e.into()),
    };
    let loaded = schema::load_table(client, &table.display()).await?;
    let missing: Vec<&str> = ERROR_TABLE_COLUMNS
        .iter()
        .copied()
        .filter(|c| loaded.column(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(err(format!(
            "exists but is not a clue validation log (it lacks {}); name another table with --error_table",
            missing.join(", ")
        )));
    }
    Ok(table.quoted())
}
