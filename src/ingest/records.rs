//! Records that arrive one by one (or a few at a time) over HTTP: fields as
//! text, checked by the dataset's rules and the table's column types,
//! encoded for COPY and fed to the one write path with their idempotency
//! keys claimed in the same transaction.
//!
//! Architecture Invariant: a batch of records is all or nothing: a bad
//! field anywhere, or a key taken before, writes none of it.

use std::collections::BTreeSet;

use bytes::{BufMut, BytesMut};
use tokio::sync::mpsc;

use crate::domain::dataset::Catalog;
use crate::domain::delta::Accumulator;
use crate::domain::time::Month;
use crate::error::{Classify, ErrorKind};
use crate::pg::catalog::{self as schema, SchemaError};
use crate::pg::copy::{FieldCodec, PgKind};
use crate::pg::database::{Database, DbError};
use crate::store::ledger;
use crate::write::load::{self, Batch, ClaimSpec, LoadError, Produced, Target};
use crate::write::partitions::{self, PartitionError};
use crate::write::rollups::RollupError;

/// A field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{}", describe(.0))]
    Invalid(Vec<FieldProblem>),
    /// The key guards a record written before (`replay`: with the same payload).
    #[error("{key} was recorded before")]
    Duplicate { key: String, replay: bool },
    #[error("unknown dataset {0:?}")]
    UnknownDataset(String),
    #[error("the database refused the record: {message}")]
    Load { message: String, kind: ErrorKind },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Rollup(#[from] RollupError),
    #[error(transparent)]
    Db(#[from] DbError),
}

fn describe(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<tokio_postgres::Error> for RecordError {
    fn from(e: tokio_postgres::Error) -> Self {
        RecordError::Db(DbError::Query(e))
    }
}

impl From<super::DatasetOfError> for RecordError {
    fn from(e: super::DatasetOfError) -> Self {
        match e {
            super::DatasetOfError::Schema(e) => RecordError::Schema(e),
            super::DatasetOfError::Rollup(e) => RecordError::Rollup(e),
            super::DatasetOfError::Db(e) => RecordError::from(e),
        }
    }
}

impl Classify for RecordError {
    fn kind(&self) -> ErrorKind {
        match self {
            RecordError::Invalid(_) | RecordError::UnknownDataset(_) => ErrorKind::BadInput,
            RecordError::Duplicate { .. } => ErrorKind::Conflict,
            RecordError::Load { kind, .. } => *kind,
            RecordError::Schema(e) => e.kind(),
            RecordError::Partition(e) => e.kind(),
            RecordError::Rollup(e) => e.kind(),
            RecordError::Db(e) => e.kind(),
        }
    }
}

/// One record: its fields (column, raw text) and the idempotency key that
/// guards it, if any.
#[derive(Debug, Clone)]
pub struct Record {
    pub fields: Vec<(String, String)>,
    pub key: Option<RecordKey>,
}

impl Record {
    /// A record guarded by `key`, fingerprinted by its values in order (so
    /// the same normalised values are the same payload, whoever writes them).
    pub fn keyed(key: String, fields: Vec<(String, String)>) -> Record {
        let payload: Vec<&str> = fields.iter().map(|(_, v)| v.as_str()).collect();
        Record {
            key: Some(RecordKey {
                fingerprint: crate::store::ledger::fingerprint(payload.join("\u{1f}").as_bytes()),
                key,
            }),
            fields,
        }
    }
}

/// An idempotency key and the fingerprint of the payload it guards.
#[derive(Debug, Clone)]
pub struct RecordKey {
    pub key: String,
    pub fingerprint: String,
}

/// Writes `records` (all with the same fields) into `dataset`'s table in
/// one transaction, claiming their keys in the ledger under `scope`.
/// Returns how many rows were written.
pub async fn record(
    db: &Database,
    catalog: &Catalog,
    dataset: &str,
    records: &[Record],
    scope: &str,
) -> Result<u64, RecordError> {
    let Some(prepared) = Prepared::new(db, catalog, dataset, records, false).await? else {
        return Ok(0);
    };
    if let Some(first) = prepared.rejected.first() {
        return Err(RecordError::Invalid(first.problems.clone()));
    }
    let ttl = catalog.get(dataset).ok().and_then(|d| d.idempotency_ttl);
    let claims: Vec<ClaimSpec<'_>> = records
        .iter()
        .filter_map(|r| r.key.as_ref())
        .map(|k| ClaimSpec {
            scope,
            key: &k.key,
            fingerprint: &k.fingerprint,
            ttl,
            response: None,
        })
        .collect();
    prepared.commit(&claims).await
}

/// A record refused, by its place in the request (from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub index: usize,
    pub problems: Vec<FieldProblem>,
}

/// Records checked and encoded, ready to commit: what was refused is left
/// out (or, without `skip_invalid`, nothing is encoded past the checks).
pub struct Prepared {
    client: deadpool_postgres::Object,
    skip_invalid: bool,
    table: crate::sql::table::Table,
    columns: Vec<String>,
    dataset_name: Option<String>,
    out: BytesMut,
    deltas: Option<Accumulator>,
    months: BTreeSet<Month>,
    /// Rows encoded.
    pub accepted: u64,
    pub rejected: Vec<Rejected>,
}

impl Prepared {
    /// Checks and encodes `records` (all with the same fields); `None` when
    /// there are none. A field that is no column, or a required column no
    /// field gives, fails them all.
    pub async fn new(
        db: &Database,
        catalog: &Catalog,
        dataset: &str,
        records: &[Record],
        skip_invalid: bool,
    ) -> Result<Option<Prepared>, RecordError> {
        let ds = catalog
            .get(dataset)
            .map_err(|_| RecordError::UnknownDataset(dataset.to_owned()))?;
        let Some(first) = records.first() else {
            return Ok(None);
        };
        let mut client = db.client().await?;
        let table = schema::load_table(&**client, &ds.table).await?;
        let columns: Vec<String> = first.fields.iter().map(|(c, _)| c.clone()).collect();
        let codecs = codecs(&table, ds, &columns)?;
        let (dataset_name, rollups) = super::dataset_of(&mut client, catalog, &table).await?;
        let time_index = columns.iter().position(|c| *c == ds.time_column);
        let mut deltas = match &rollups {
            Some((infos, time_column)) => {
                Accumulator::new(infos, time_column, |c| columns.iter().position(|x| x == c))
            }
            None => None,
        };
        let mut out = BytesMut::new();
        let mut months = BTreeSet::new();
        let mut rejected = Vec::new();
        for (index, r) in records.iter().enumerate() {
            let mark = out.len();
            match encode(&codecs, r, &mut out) {
                Ok(values) => {
                    if let Some(day) = time_index.and_then(|i| values[i].day()) {
                        months.insert(Month::of(day));
                    }
                    if let Some(d) = deltas.as_mut() {
                        d.add(&values);
                    }
                }
                Err(RecordError::Invalid(problems)) => {
                    out.truncate(mark);
                    rejected.push(Rejected { index, problems });
                }
                Err(e) => return Err(e),
            }
        }
        let accepted = (records.len() - rejected.len()) as u64;
        Ok(Some(Prepared {
            client,
            skip_invalid,
            table,
            columns,
            dataset_name,
            out,
            deltas,
            months,
            accepted,
            rejected,
        }))
    }

    /// Writes the accepted rows in one transaction with `claims`; returns
    /// how many were written. Refuses to write when rows were refused and
    /// the caller did not ask to skip them.
    pub async fn commit(mut self, claims: &[ClaimSpec<'_>]) -> Result<u64, RecordError> {
        if !self.skip_invalid && !self.rejected.is_empty() {
            return Err(RecordError::Invalid(self.rejected.swap_remove(0).problems));
        }
        if self.table.time_partitioning.is_some() && !self.months.is_empty() {
            partitions::ensure_months(&mut self.client, &self.table, &self.months).await?;
        }
        let (sender, receiver) = mpsc::channel(1);
        sender
            .try_send(Batch::Rows(self.out.freeze()))
            .expect("an empty channel takes one batch");
        drop(sender);
        let produced = Produced {
            rows_loaded: self.accepted,
            rows_rejected: 0,
            deltas: self.deltas,
            months: self.months,
        };
        let target = Target {
            table: &self.table,
            columns: &self.columns,
            error_table: None,
            dataset: self.dataset_name.as_deref(),
            job: None,
            claims,
        };
        load::load(&mut self.client, target, receiver, || {
            Ok::<_, std::convert::Infallible>(produced)
        })
        .await
        .map(|(_, produced)| produced.rows_loaded)
        .map_err(load_error)
    }
}

/// The codec of every field, with the dataset's rules; a field that is no
/// column, or a required column no field gives, is a problem.
fn codecs(
    table: &crate::sql::table::Table,
    dataset: &crate::domain::dataset::Dataset,
    columns: &[String],
) -> Result<Vec<FieldCodec>, RecordError> {
    let mut problems = Vec::new();
    let mut codecs = Vec::new();
    for name in columns {
        match table.column(name).and_then(|c| Some((c, PgKind::of(c)?))) {
            Some((column, kind)) => codecs.push(FieldCodec {
                name: name.clone(),
                kind,
                nullable: !column.not_null,
                rule: dataset.columns.column(name).cloned(),
            }),
            None => problems.push(FieldProblem {
                field: name.clone(),
                reason: "is not a field of these records".into(),
            }),
        }
    }
    for c in &table.columns {
        if c.not_null && !c.has_default && !columns.contains(&c.name) {
            problems.push(FieldProblem {
                field: c.name.clone(),
                reason: "is required".into(),
            });
        }
    }
    if problems.is_empty() {
        Ok(codecs)
    } else {
        Err(RecordError::Invalid(problems))
    }
}

/// Encodes one record as a COPY row, returning its typed values; every
/// field at fault is named.
fn encode<'r>(
    codecs: &[FieldCodec],
    record: &'r Record,
    out: &mut BytesMut,
) -> Result<Vec<crate::domain::value::Value<'r>>, RecordError> {
    out.put_i16(codecs.len() as i16);
    let mut values = Vec::with_capacity(codecs.len());
    let mut problems = Vec::new();
    for (codec, (name, raw)) in codecs.iter().zip(&record.fields) {
        match codec.encode(raw, out) {
            Ok(v) => values.push(v),
            Err(v) => problems.push(FieldProblem {
                field: name.clone(),
                reason: v.reason,
            }),
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(RecordError::Invalid(problems))
    }
}

/// Group commit: records handed to a `Batcher` are written together, one
/// transaction (one commit, one rollup upkeep) for every record that
/// arrived while the previous batch was being written. Each caller gets its
/// own record's outcome once the batch has committed (a 2xx still means
/// committed); a repeated key fails its record only.
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
}

struct Job {
    record: Record,
    reply: tokio::sync::oneshot::Sender<Result<(), RecordError>>,
}

impl Batcher {
    /// Starts the writer of `dataset`'s records (keys claimed under
    /// `scope`), writing at most `max_batch` records a transaction (1: a
    /// transaction per record).
    pub fn spawn(
        db: std::sync::Arc<Database>,
        catalog: std::sync::Arc<Catalog>,
        dataset: String,
        scope: String,
        max_batch: usize,
    ) -> Batcher {
        let (jobs, mut queue) = mpsc::channel::<Job>(max_batch.max(1) * 4);
        // A weak handle: the writer never keeps the database (and an
        // embedded cluster) open after the server is done with it.
        let db = std::sync::Arc::downgrade(&db);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let Some(db) = db.upgrade() else {
                    let _ = first.reply.send(Err(stopped()));
                    continue;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let records: Vec<Record> = batch.iter().map(|j| j.record.clone()).collect();
                let outcomes = write_batch(&db, &catalog, &dataset, &scope, &records).await;
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
        });
        Batcher { jobs }
    }

    /// Writes one record with the others of its batch; its own outcome.
    pub async fn record(&self, record: Record) -> Result<(), RecordError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job { record, reply })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn stopped() -> RecordError {
    RecordError::Load {
        message: "the record writer has stopped".into(),
        kind: ErrorKind::Unavailable,
    }
}

/// Writes a batch in one transaction: each record's key is claimed, the
/// records whose keys were free are written; one outcome per record.
async fn write_batch(
    db: &Database,
    catalog: &Catalog,
    dataset: &str,
    scope: &str,
    records: &[Record],
) -> Vec<Result<(), RecordError>> {
    let fail_all = |e: RecordError| -> Vec<Result<(), RecordError>> {
        let (message, kind) = (e.to_string(), e.kind());
        records
            .iter()
            .map(|_| {
                Err(RecordError::Load {
                    message: message.clone(),
                    kind,
                })
            })
            .collect()
    };
    match try_write_batch(db, catalog, dataset, scope, records).await {
        Ok(outcomes) => outcomes,
        Err(e) => fail_all(e),
    }
}

async fn try_write_batch(
    db: &Database,
    catalog: &Catalog,
    dataset: &str,
    scope: &str,
    records: &[Record],
) -> Result<Vec<Result<(), RecordError>>, RecordError> {
    let ds = catalog
        .get(dataset)
        .map_err(|_| RecordError::UnknownDataset(dataset.to_owned()))?;
    let Some(first) = records.first() else {
        return Ok(Vec::new());
    };
    let mut client = db.client().await?;
    let table = schema::load_table(&**client, &ds.table).await?;
    let columns: Vec<String> = first.fields.iter().map(|(c, _)| c.clone()).collect();
    let codecs = codecs(&table, ds, &columns)?;
    let (dataset_name, rollups) = super::dataset_of(&mut client, catalog, &table).await?;
    let time_index = columns.iter().position(|c| *c == ds.time_column);
    // Each record checked on its own: a bad one fails alone.
    let mut outcomes: Vec<Result<(), RecordError>> = records
        .iter()
        .map(|r| encode(&codecs, r, &mut BytesMut::new()).map(|_| ()))
        .collect();
    let mut months = BTreeSet::new();
    for (r, outcome) in records.iter().zip(&outcomes) {
        if outcome.is_ok()
            && let Some(i) = time_index
            && let Ok(v) = codecs[i].parse(&r.fields[i].1)
        {
            months.extend(v.day().map(Month::of));
        }
    }
    if table.time_partitioning.is_some() && !months.is_empty() {
        partitions::ensure_months(&mut client, &table, &months).await?;
    }
    let pg: &mut tokio_postgres::Client = &mut client;
    let tx = pg.transaction().await?;
    for (r, outcome) in records.iter().zip(outcomes.iter_mut()) {
        let Some(k) = r.key.as_ref().filter(|_| outcome.is_ok()) else {
            continue;
        };
        match ledger::claim(&tx, scope, &k.key, &k.fingerprint, ds.idempotency_ttl).await? {
            ledger::Claim::New => {}
            ledger::Claim::Replay { .. } => {
                *outcome = Err(RecordError::Duplicate {
                    key: k.key.clone(),
                    replay: true,
                });
            }
            ledger::Claim::Conflict { .. } => {
                *outcome = Err(RecordError::Duplicate {
                    key: k.key.clone(),
                    replay: false,
                });
            }
        }
    }
    let mut deltas = match &rollups {
        Some((infos, time_column)) => {
            Accumulator::new(infos, time_column, |c| columns.iter().position(|x| x == c))
        }
        None => None,
    };
    let mut out = BytesMut::new();
    let mut written = 0u64;
    for (r, outcome) in records.iter().zip(&outcomes) {
        if outcome.is_ok() {
            let values = encode(&codecs, r, &mut out)?;
            if let Some(d) = deltas.as_mut() {
                d.add(&values);
            }
            written += 1;
        }
    }
    if written > 0 {
        let (sender, receiver) = mpsc::channel(1);
        sender
            .try_send(Batch::Rows(out.freeze()))
            .expect("an empty channel takes one batch");
        drop(sender);
        let produced = Produced {
            rows_loaded: written,
            rows_rejected: 0,
            deltas,
            months,
        };
        let target = Target {
            table: &table,
            columns: &columns,
            error_table: None,
            dataset: dataset_name.as_deref(),
            job: None,
            claims: &[],
        };
        load::load_in(&tx, target, receiver, || {
            Ok::<_, std::convert::Infallible>(produced)
        })
        .await
        .map_err(load_error)?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// A load's failure as a record's.
fn load_error(e: LoadError<std::convert::Infallible>) -> RecordError {
    match e {
        LoadError::Duplicate { key, replay } => RecordError::Duplicate { key, replay },
        LoadError::Database { message, kind } => RecordError::Load { message, kind },
        LoadError::Concurrent => RecordError::Load {
            message: "a concurrent write took a unique value".into(),
            kind: ErrorKind::Conflict,
        },
        LoadError::Producer(never) => match never {},
    }
}
