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

use sha2::{Digest, Sha256};

use crate::domain::dataset::{Catalog, Dataset};
use crate::domain::delta::Accumulator;
use crate::domain::rollup::RollupInfo;
use crate::domain::time::Month;
use crate::domain::value::Value;
use crate::error::{Classify, ErrorKind};
use crate::pg::catalog::{self as schema, SchemaError};
use crate::pg::copy::{FieldCodec, PgKind};
use crate::pg::database::{Database, DbError};
use crate::sql::table::Table;
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
    /// A value the table holds once (its primary key or a unique column)
    /// is there already, or twice in the records.
    #[error(
        "a value table {0} holds once (its primary key or a unique column) is there already, or twice in these records; nothing was written"
    )]
    Taken(String),
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
            RecordError::Duplicate { .. } | RecordError::Taken(_) => ErrorKind::Conflict,
            RecordError::Load { kind, .. } => *kind,
            RecordError::Schema(e) => e.kind(),
            RecordError::Partition(e) => e.kind(),
            RecordError::Rollup(e) => e.kind(),
            RecordError::Db(e) => e.kind(),
        }
    }
}

/// One record: its fields (column, raw text); the records written together
/// give the same columns in the same order.
#[derive(Debug, Clone)]
pub struct Record {
    pub fields: Vec<(String, String)>,
}

impl Record {
    pub fn new(fields: Vec<(String, String)>) -> Record {
        Record { fields }
    }

    fn columns(&self) -> Vec<String> {
        self.fields.iter().map(|(c, _)| c.clone()).collect()
    }

    fn values(&self) -> Vec<&str> {
        self.fields.iter().map(|(_, v)| v.as_str()).collect()
    }
}

use crate::write::load::RecordKey;

/// Where a record's key and fingerprint come from, for records giving
/// `columns`: the key column's value, and the encoded fields in the
/// dataset's column order. The same values give the same fingerprint
/// whichever path, spelling or field order they came in.
pub(crate) struct KeyPlan {
    /// For each of the dataset's columns in its order, the field giving it.
    canonical: Vec<Option<usize>>,
    key: usize,
}

impl KeyPlan {
    /// `None` when the dataset has no key column or the fields lack it.
    pub(crate) fn new(ds: &Dataset, columns: &[String]) -> Option<KeyPlan> {
        let position = |c: &str| columns.iter().position(|x| x == c);
        Some(KeyPlan {
            key: position(ds.key.as_deref()?)?,
            canonical: ds
                .columns
                .columns
                .iter()
                .map(|c| position(&c.name))
                .collect(),
        })
    }

    /// The key of a row encoded in `row` (each field at `bounds` in it, its
    /// typed value in `values`); `None` when its key is NULL.
    pub(crate) fn key(
        &self,
        values: &[Value<'_>],
        row: &[u8],
        bounds: &[std::ops::Range<usize>],
    ) -> Option<RecordKey> {
        let key = key_text(&values[self.key])?;
        // Each field with its length (a NULL is its -1 alone), in the
        // dataset's order; an absent column as NULL.
        let mut hash = Sha256::new();
        for field in &self.canonical {
            match field {
                Some(i) => hash.update(&row[bounds[*i].clone()]),
                None => hash.update((-1i32).to_be_bytes()),
            }
        }
        Some(RecordKey {
            key,
            fingerprint: hex::encode(hash.finalize()),
        })
    }
}

/// Writes `records` (all with the same fields) into `dataset`'s table in
/// one transaction, claiming their keys. Returns how many rows were written.
pub async fn record(
    db: &Database,
    catalog: &Catalog,
    dataset: &str,
    records: &[Record],
) -> Result<u64, RecordError> {
    let Some(first) = records.first() else {
        return Ok(0);
    };
    let mut prepared = Prepared::new(db, catalog, dataset, first.columns(), false).await?;
    for (index, r) in records.iter().enumerate() {
        prepared.push(index, r.values());
    }
    prepared.commit(&[]).await
}

/// A record refused, by its place in the request (from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub index: usize,
    pub problems: Vec<FieldProblem>,
}

/// Checks, types and encodes rows of one shape for the load, keeping what
/// the load needs of them: the COPY data, the rollup deltas, the months,
/// and each row's key. One encoder for every producer of single records,
/// so they all store, key and fingerprint a value alike.
struct Encoder {
    codecs: Vec<FieldCodec>,
    key: Option<KeyPlan>,
    time: Option<usize>,
    deltas: Option<Accumulator>,
    months: BTreeSet<Month>,
    out: BytesMut,
    /// Each row's month and where it is in `out`.
    rows: Vec<(Option<Month>, std::ops::Range<usize>)>,
    keys: Vec<RecordKey>,
    accepted: u64,
}

/// What a row is, encoded: its key, if any, and its month.
struct Identified {
    key: Option<RecordKey>,
    month: Option<Month>,
}

impl Encoder {
    fn new(
        table: &Table,
        ds: &Dataset,
        columns: &[String],
        rollups: Option<&(Vec<RollupInfo>, String)>,
    ) -> Result<Encoder, RecordError> {
        let codecs = codecs(table, ds, columns)?;
        let position = |c: &str| columns.iter().position(|x| x == c);
        let deltas = match rollups {
            Some((infos, time_column)) => {
                let deltas = Accumulator::new(infos, time_column, position);
                if deltas.is_none() {
                    // A rollup kept by a column these records lack could not
                    // be kept exact: refuse rather than let it drift.
                    return Err(RecordError::Invalid(
                        infos
                            .iter()
                            .flat_map(|i| i.dimensions.iter().chain(Some(time_column)))
                            .filter(|c| position(c).is_none())
                            .map(|c| FieldProblem {
                                field: c.clone(),
                                reason: "is required (a rollup is kept by it)".into(),
                            })
                            .collect(),
                    ));
                }
                deltas
            }
            None => None,
        };
        Ok(Encoder {
            key: KeyPlan::new(ds, columns),
            time: ds.time_column.as_deref().and_then(position),
            codecs,
            deltas,
            months: BTreeSet::new(),
            out: BytesMut::new(),
            rows: Vec::new(),
            keys: Vec::new(),
            accepted: 0,
        })
    }

    /// Encodes one row into the COPY data; every field at fault is named
    /// and nothing of the row is kept.
    fn push(&mut self, fields: &[&str]) -> Result<(), Vec<FieldProblem>> {
        let mark = self.out.len();
        let mut out = std::mem::take(&mut self.out);
        let encoded = self.encode(fields, &mut out, mark);
        let result = match encoded {
            Ok((values, identified)) => {
                self.rows.push((identified.month, mark..out.len()));
                self.months.extend(identified.month);
                self.keys.extend(identified.key);
                if let Some(d) = self.deltas.as_mut() {
                    d.add(&values);
                }
                self.accepted += 1;
                Ok(())
            }
            Err(problems) => {
                out.truncate(mark);
                Err(problems)
            }
        };
        self.out = out;
        result
    }

    /// The load of the rows encoded (as one batch), what it produced, and
    /// the rows' keys.
    fn finish(mut self) -> (mpsc::Receiver<Batch>, Produced, Vec<RecordKey>) {
        let (sender, receiver) = mpsc::channel(1);
        sender
            .try_send(Batch::Rows(self.by_month()))
            .expect("an empty channel takes one batch");
        let produced = Produced {
            rows_loaded: self.accepted,
            rows_rejected: 0,
            deltas: self.deltas,
            months: self.months,
            keys: None,
        };
        (receiver, produced, self.keys)
    }

    /// The rows, a month after another: COPY routes a run of rows to one
    /// partition's buffer instead of switching partition row by row.
    fn by_month(&mut self) -> bytes::Bytes {
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_by_key(|(month, _)| *month);
        let mut out = BytesMut::with_capacity(self.out.len());
        for (_, range) in rows {
            out.extend_from_slice(&self.out[range]);
        }
        out.freeze()
    }

    /// What a row would be, without keeping it.
    fn identify(&self, fields: &[&str]) -> Result<Identified, Vec<FieldProblem>> {
        let mut scratch = BytesMut::new();
        self.encode(fields, &mut scratch, 0).map(|(_, i)| i)
    }

    /// Encodes a row after `out[..start]`, returning its typed values, key
    /// and month.
    fn encode<'r>(
        &self,
        fields: &[&'r str],
        out: &mut BytesMut,
        start: usize,
    ) -> Result<(Vec<Value<'r>>, Identified), Vec<FieldProblem>> {
        out.put_i16(self.codecs.len() as i16);
        let mut values = Vec::with_capacity(self.codecs.len());
        let mut bounds = Vec::with_capacity(self.codecs.len());
        let mut problems = Vec::new();
        for (codec, raw) in self.codecs.iter().zip(fields) {
            let from = out.len();
            match codec.encode(raw, out) {
                Ok(v) => values.push(v),
                Err(v) => problems.push(FieldProblem {
                    field: codec.name.clone(),
                    reason: v.reason,
                }),
            }
            bounds.push(from..out.len());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let key = self.key.as_ref().and_then(|k| {
            let bounds: Vec<_> = bounds
                .iter()
                .map(|b| b.start - start..b.end - start)
                .collect();
            k.key(&values, &out[start..], &bounds)
        });
        let month = self.time.and_then(|t| values[t].day()).map(Month::of);
        Ok((values, Identified { key, month }))
    }
}

/// A key column's value as the ledger's key.
fn key_text(value: &Value<'_>) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Text(t) => t.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uuid(u) => u.to_string(),
        Value::Num(d) => d.normalize().to_string(),
        Value::Date(d) => d.to_string(),
        Value::Timestamp(t) => t.to_string(),
        Value::TimestampTz(t) => t.to_rfc3339(),
        Value::Bool(b) => b.to_string(),
        Value::Float(f) => f.to_string(),
    })
}

/// Records checked and encoded, ready to commit: what was refused is left
/// out (or, without `skip_invalid`, nothing is written).
pub struct Prepared {
    client: deadpool_postgres::Object,
    skip_invalid: bool,
    table: Table,
    columns: Vec<String>,
    /// The dataset written, whose key column's values are claimed.
    dataset: Dataset,
    /// The dataset stored in the table, told of the write.
    stored_as: Option<String>,
    encoder: Encoder,
    pub rejected: Vec<Rejected>,
}

impl Prepared {
    /// Ready to take records of `dataset` giving `columns` in this order. A
    /// column that is no field of the table, or a required column not
    /// given, is a problem of them all.
    pub async fn new(
        db: &Database,
        catalog: &Catalog,
        dataset: &str,
        columns: Vec<String>,
        skip_invalid: bool,
    ) -> Result<Prepared, RecordError> {
        let ds = catalog
            .get(dataset)
            .map_err(|_| RecordError::UnknownDataset(dataset.to_owned()))?;
        let mut client = db.client().await?;
        let table = schema::load_table(&**client, &ds.table).await?;
        let (stored_as, rollups) = super::dataset_of(&mut client, catalog, &table).await?;
        let encoder = Encoder::new(&table, ds, &columns, rollups.as_ref())?;
        Ok(Prepared {
            client,
            skip_invalid,
            table,
            columns,
            dataset: ds.clone(),
            stored_as,
            encoder,
            rejected: Vec::new(),
        })
    }

    /// Checks and encodes the record at `index` (its fields' raw text, in
    /// the order of the columns); a refused one is kept in `rejected`.
    pub fn push(&mut self, index: usize, fields: Vec<&str>) {
        if let Err(problems) = self.encoder.push(&fields) {
            self.rejected.push(Rejected { index, problems });
        }
    }

    /// Refuses the record at `index` before its values are checked.
    pub fn reject(&mut self, index: usize, problems: Vec<FieldProblem>) {
        self.rejected.push(Rejected { index, problems });
    }

    /// Records accepted so far.
    pub fn accepted(&self) -> u64 {
        self.encoder.accepted
    }

    /// Writes the accepted rows in one transaction, with their keys and
    /// `claims` (a request's own); returns how many were written. Refuses
    /// to write when rows were refused and the caller did not ask to skip
    /// them.
    pub async fn commit(mut self, claims: &[ClaimSpec<'_>]) -> Result<u64, RecordError> {
        if !self.skip_invalid && !self.rejected.is_empty() {
            return Err(RecordError::Invalid(self.rejected.swap_remove(0).problems));
        }
        // No rows and no key to claim: nothing to write. (A request's own
        // key is claimed even when every record was refused.)
        if self.encoder.accepted == 0 && claims.is_empty() {
            return Ok(0);
        }
        self.ensure_months().await?;
        let Prepared {
            mut client,
            table,
            columns,
            dataset,
            stored_as,
            encoder,
            ..
        } = self;
        let (receiver, produced, keys) = encoder.finish();
        let mut all: Vec<ClaimSpec<'_>> = claims.to_vec();
        all.extend(keys.iter().map(|k| ClaimSpec {
            scope: &dataset.name,
            key: &k.key,
            fingerprint: &k.fingerprint,
            ttl: dataset.idempotency_ttl,
            response: None,
        }));
        let target = Target::rows(&table, &columns, stored_as.as_deref(), &all);
        load::load(&mut client, target, receiver, || {
            Ok::<_, std::convert::Infallible>(produced)
        })
        .await
        .map(|(_, produced)| produced.rows_loaded)
        .map_err(|e| load_error(e, &table.table.display()))
    }

    /// Group commit's write: each record's key claimed on its own in the
    /// transaction (a key taken before fails that record only), then the
    /// records whose keys were free written; one outcome per record.
    async fn commit_each(
        mut self,
        records: &[Record],
    ) -> Result<Vec<Result<(), RecordError>>, RecordError> {
        let identified: Vec<Result<Identified, Vec<FieldProblem>>> = records
            .iter()
            .map(|r| self.encoder.identify(&r.values()))
            .collect();
        self.encoder
            .months
            .extend(identified.iter().flatten().filter_map(|i| i.month));
        self.ensure_months().await?;
        let Prepared {
            mut client,
            table,
            columns,
            dataset,
            stored_as,
            mut encoder,
            ..
        } = self;
        let pg: &mut tokio_postgres::Client = &mut client;
        let tx = pg.transaction().await?;
        let mut outcomes = Vec::with_capacity(records.len());
        for (r, identified) in records.iter().zip(identified) {
            let outcome = match identified {
                Err(problems) => Err(RecordError::Invalid(problems)),
                Ok(Identified { key: Some(k), .. }) => {
                    let ttl = dataset.idempotency_ttl;
                    match ledger::claim(&tx, &dataset.name, &k.key, &k.fingerprint, ttl).await? {
                        ledger::Claim::New => Ok(()),
                        ledger::Claim::Replay { .. } => Err(RecordError::Duplicate {
                            key: k.key,
                            replay: true,
                        }),
                        ledger::Claim::Conflict { .. } => Err(RecordError::Duplicate {
                            key: k.key,
                            replay: false,
                        }),
                    }
                }
                Ok(_) => Ok(()),
            };
            if outcome.is_ok() {
                encoder.push(&r.values()).map_err(RecordError::Invalid)?;
            }
            outcomes.push(outcome);
        }
        if encoder.accepted > 0 {
            let (receiver, produced, _) = encoder.finish();
            let target = Target::rows(&table, &columns, stored_as.as_deref(), &[]);
            load::load_in(&tx, target, receiver, || {
                Ok::<_, std::convert::Infallible>(produced)
            })
            .await
            .map_err(|e| load_error(e, &table.table.display()))?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn ensure_months(&mut self) -> Result<(), RecordError> {
        if self.table.time_partitioning.is_some() && !self.encoder.months.is_empty() {
            partitions::ensure_months(&mut self.client, &self.table, &self.encoder.months).await?;
        }
        Ok(())
    }
}

/// The codec of every field, with the dataset's rules; a field that is no
/// column, or a required column no field gives, is a problem.
fn codecs(
    table: &Table,
    dataset: &Dataset,
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
    /// Starts the writer of `dataset`'s records, writing at most `max_batch` records a transaction (1: a
    /// transaction per record).
    pub fn spawn(
        db: std::sync::Arc<Database>,
        catalog: std::sync::Arc<Catalog>,
        dataset: String,
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
                // A fault of clue's in one batch fails that batch, not the
                // writer (a probe's panic once stopped every later record).
                let written =
                    std::panic::AssertUnwindSafe(write_batch(&db, &catalog, &dataset, &records));
                let outcomes = match futures_util::FutureExt::catch_unwind(written).await {
                    Ok(outcomes) => outcomes,
                    Err(_) => {
                        tracing::error!(dataset = %dataset, "the record writer failed on a batch; it goes on");
                        records
                            .iter()
                            .map(|_| {
                                Err(RecordError::Load {
                                    message:
                                        "the record could not be written (the error was logged)"
                                            .into(),
                                    kind: ErrorKind::Internal,
                                })
                            })
                            .collect()
                    }
                };
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

/// Writes a batch in one transaction (see [`Prepared::commit_each`]); a
/// failure of the whole batch is every record's.
async fn write_batch(
    db: &Database,
    catalog: &Catalog,
    dataset: &str,
    records: &[Record],
) -> Vec<Result<(), RecordError>> {
    let written = async {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        Prepared::new(db, catalog, dataset, first.columns(), false)
            .await?
            .commit_each(records)
            .await
    };
    match written.await {
        Ok(outcomes) => outcomes,
        Err(e) => {
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
        }
    }
}

/// A load's failure (into `table`) as a record's.
fn load_error(e: LoadError<std::convert::Infallible>, table: &str) -> RecordError {
    match e {
        LoadError::Duplicate { key, replay } => RecordError::Duplicate { key, replay },
        LoadError::Database { message, kind } => RecordError::Load { message, kind },
        LoadError::Concurrent => RecordError::Taken(table.to_owned()),
        LoadError::Producer(never) => match never {},
    }
}
