//! The database sync (prototype 004): a source PostgreSQL's `operations`
//! schema (orders, their items, customers, products) kept in clue's
//! `analytics` tables, incrementally, by `updated_at` watermarks.
//!
//! A cycle opens one snapshot of the source, bounded by its oldest open
//! transaction (`source::begin`), reads what changed in each table since
//! its watermark, turns every change into the orders it touches (an item's
//! order, a customer's or a product's orders) and replaces those orders'
//! analytical rows as they are now, batch by batch, each batch advancing
//! its table's watermark in its own transaction (`sink`). Deleted source
//! rows are found by comparing ids. The first cycle copies everything.
//!
//! Architecture Invariant: the source is only read; a row committed late
//! or sharing its `updated_at` with others is never skipped (the bound and
//! the `(updated_at, id)` keyset), and a repeated batch writes the same rows.

pub mod cdc;
mod sink;
mod source;

use std::time::Duration;

use futures_util::pin_mut;
use indicatif::ProgressBar;

pub use sink::Written;

use crate::domain::dataset::Catalog;
use crate::error::{Classify, ErrorKind};
use crate::pg::database::{Database, DbError};
use crate::store;
use crate::store::sync::{Progress, Watermark};
use source::{ORDER_ITEMS, ORDERS, TABLES};

/// How many ids of each table a continuous sync's cycle compares with the
/// source to find deleted rows (a one-shot run compares them all): the
/// comparison walks the ids a span a cycle, so no cycle pays for a whole
/// table.
const SWEEP_SPAN: i64 = 50_000;

/// Where the comparison of ids starts next, per table (orders, items), and
/// how many source ids a cycle's reads.
#[derive(Debug, Clone, Copy)]
struct Sweep {
    next: [i64; 2],
    span: Option<i64>,
}

impl Sweep {
    /// Every id, in one cycle.
    fn all() -> Sweep {
        Sweep {
            next: [i64::MIN; 2],
            span: None,
        }
    }

    /// A span of ids a cycle, from the first.
    fn spans() -> Sweep {
        Sweep {
            next: [i64::MIN; 2],
            span: Some(SWEEP_SPAN),
        }
    }

    /// The ids the source gave from `next` decide the range compared: up to
    /// the last of a full span, or (the source's ids ran out) everything
    /// on; then the next cycle goes on from there, or back to the start.
    fn range(&mut self, table: usize, present: &[i64]) -> (i64, i64) {
        let from = self.next[table];
        let full = self.span.is_some_and(|s| present.len() as i64 >= s);
        match present.last() {
            Some(last) if full => {
                self.next[table] = last.saturating_add(1);
                (from, last.saturating_add(1))
            }
            _ => {
                self.next[table] = i64::MIN;
                (from, i64::MAX)
            }
        }
    }
}

/// What `clue etl run` was asked to do.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub source: tokio_postgres::Config,
    /// Orders replaced per transaction.
    pub batch_size: usize,
    /// Keep syncing, a cycle every this long, until stopped.
    pub continuous: Option<Duration>,
    /// Draw a progress bar for the first sync.
    pub progress: bool,
    /// Stream changes through logical replication instead of polling.
    pub cdc: Option<cdc::CdcOptions>,
}

/// What a sync did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncReport {
    /// Polling cycles, or batches of streamed transactions.
    pub cycles: u64,
    /// Source transactions streamed (change data capture).
    pub transactions: u64,
    /// Whether it began with a full copy.
    pub copied: bool,
    pub written: Written,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the source database: {0}")]
    Source(DbError),
    #[error(
        "the source has no table {table}; clue reads prototype 004's operations schema (customers, products, orders, order_items)"
    )]
    MissingTable { table: String },
    #[error("the source's table {table} has no column {column}")]
    MissingColumn { table: String, column: String },
    #[error(
        "the source role may not read {table}; grant it: GRANT USAGE ON SCHEMA operations TO <role>; GRANT SELECT ON ALL TABLES IN SCHEMA operations TO <role>"
    )]
    Permission { table: String },
    #[error(
        "the source role cannot see other sessions' transactions, so it cannot tell when a late commit is still to come; grant it: GRANT pg_read_all_stats TO <role>"
    )]
    CannotSeeTransactions,
    #[error(
        "the source's wal_level is {level}; change data capture needs logical: run ALTER SYSTEM SET wal_level = logical on the source and restart it (or sync by polling: clue etl run --continuous)"
    )]
    WalLevel { level: String },
    #[error(
        "the source role {role} may not stream changes; grant it: ALTER ROLE {role} REPLICATION"
    )]
    NoReplication { role: String },
    #[error("the source's publication {name}: {detail}")]
    Publication { name: String, detail: String },
    #[error(
        "the replication slot {slot} is in use by another process (pid {pid}); stop that process, or give this sync a slot of its own with --slot"
    )]
    SlotInUse { slot: String, pid: i32 },
    #[error(
        "the source's replication slot {slot} is not this sync's ({detail}); pass another --slot, or drop it: clue etl drop-slot --slot {slot}"
    )]
    ForeignSlot { slot: String, detail: String },
    #[error("the replication stream: {0}")]
    Stream(#[from] crate::pg::replication::ReplicationError),
    #[error("change data capture: {0}")]
    Replication(String),
    #[error("another clue etl is syncing {name} (one sync per source at a time)")]
    AlreadyRunning { name: String },
    #[error("the analytical tables: {0}")]
    Target(String),
    #[error("writing the analytical tables failed: {message}")]
    Write { message: String, kind: ErrorKind },
    #[error(transparent)]
    Schema(#[from] crate::pg::catalog::SchemaError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl SyncError {
    fn source_query(e: tokio_postgres::Error) -> SyncError {
        SyncError::Source(DbError::Query(e))
    }
}

impl From<tokio_postgres::Error> for SyncError {
    fn from(e: tokio_postgres::Error) -> Self {
        SyncError::Db(DbError::Query(e))
    }
}

impl From<super::DatasetOfError> for SyncError {
    fn from(e: super::DatasetOfError) -> Self {
        match e {
            super::DatasetOfError::Schema(e) => SyncError::Schema(e),
            super::DatasetOfError::Rollup(e) => SyncError::Target(e.to_string()),
            super::DatasetOfError::Db(e) => SyncError::from(e),
        }
    }
}

impl Classify for SyncError {
    fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Source(e) | SyncError::Db(e) => e.kind(),
            SyncError::MissingTable { .. }
            | SyncError::MissingColumn { .. }
            | SyncError::Permission { .. }
            | SyncError::CannotSeeTransactions
            | SyncError::WalLevel { .. }
            | SyncError::NoReplication { .. }
            | SyncError::Publication { .. }
            | SyncError::ForeignSlot { .. }
            | SyncError::Target(_) => ErrorKind::BadInput,
            SyncError::AlreadyRunning { .. } | SyncError::SlotInUse { .. } => ErrorKind::Conflict,
            SyncError::Stream(e) => match e {
                crate::pg::replication::ReplicationError::UnixSocket(_) => ErrorKind::BadInput,
                crate::pg::replication::ReplicationError::SlotExists(_) => ErrorKind::Conflict,
                crate::pg::replication::ReplicationError::Stream(_) => ErrorKind::Unavailable,
            },
            SyncError::Replication(_) => ErrorKind::Unavailable,
            SyncError::Write { kind, .. } => *kind,
            SyncError::Schema(e) => e.kind(),
        }
    }
}

/// The source's name in clue's watermark table: `host:port/dbname`.
pub fn source_name(config: &tokio_postgres::Config) -> String {
    let described = crate::settings::describe_config(config);
    // `user@host:port/db`: the user does not change what is synced.
    described
        .split_once('@')
        .map_or(described.clone(), |(_, rest)| rest.to_owned())
}

/// What a source table has that the sync has not read yet.
#[derive(Debug, Clone)]
pub struct Lag {
    pub table: &'static str,
    /// Rows changed after the table's watermark.
    pub rows: i64,
    /// The oldest of those changes.
    pub oldest: Option<chrono::NaiveDateTime>,
}

/// The source's oldest open client transaction: a cycle reads nothing it
/// may still write (`clue etl status` names it).
#[derive(Debug, Clone)]
pub struct OpenTransaction {
    pub pid: i32,
    pub since: chrono::DateTime<chrono::Utc>,
    pub state: String,
}

/// Each watermarked table's lag behind the source, and the transaction
/// holding the sync back, if any (`clue etl status`).
pub async fn lag(
    config: &tokio_postgres::Config,
    marks: &[store::sync::WatermarkRow],
) -> Result<(Vec<Lag>, Option<OpenTransaction>), SyncError> {
    let src = source::connect(config).await?;
    source::check(&src).await?;
    let open = source::oldest_open(&src)
        .await?
        .map(|(pid, since, state)| OpenTransaction { pid, since, state });
    let mut out = Vec::new();
    for table in TABLES {
        if let Some(m) = marks.iter().find(|m| m.source_table == table.name) {
            let (rows, oldest) = source::pending(&src, table, m.mark).await?;
            out.push(Lag {
                table: table.name,
                rows,
                oldest,
            });
        }
    }
    Ok((out, open))
}

/// Syncs once, or (continuous) until `stop` resolves; a stop lets the
/// current batch commit. In continuous mode a failed cycle is logged once
/// per change of state and retried with backoff.
pub async fn run(
    db: &Database,
    catalog: &Catalog,
    opts: &SyncOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<SyncReport, SyncError> {
    let name = source_name(&opts.source);
    let mut client = db.client().await?;
    if !store::locks::try_lock_sync(&**client, &name).await? {
        return Err(SyncError::AlreadyRunning { name });
    }
    let sink = sink::Sink::open(&mut client, catalog, name.clone()).await?;
    let mut report = SyncReport::default();
    if let Some(cdc) = &opts.cdc {
        cdc::run(&mut client, &sink, opts, cdc, stop, &mut report).await?;
        return Ok(report);
    }
    let Some(interval) = opts.continuous else {
        let mut src = source::connect(&opts.source).await?;
        source::check(&src).await?;
        cycle(
            &mut src,
            &mut client,
            &sink,
            opts,
            &mut Sweep::all(),
            &mut report,
        )
        .await?;
        return Ok(report);
    };
    pin_mut!(stop);
    let mut src: Option<tokio_postgres::Client> = None;
    let mut last_error: Option<String> = None;
    let mut backoff = Duration::from_secs(1);
    let mut sweep = Sweep::spans();
    loop {
        let attempt = async {
            if src.as_ref().is_none_or(|c| c.is_closed()) {
                let c = source::connect(&opts.source).await?;
                source::check(&c).await?;
                src = Some(c);
            }
            let c = src.as_mut().expect("connected above");
            cycle(c, &mut client, &sink, opts, &mut sweep, &mut report).await
        };
        let wait = match attempt.await {
            Ok(()) => {
                if last_error.take().is_some() {
                    tracing::info!("sync recovered");
                }
                backoff = Duration::from_secs(1);
                interval
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "sync cycle failed; retrying");
                    last_error = Some(text);
                }
                src = None;
                let wait = backoff;
                backoff = (backoff * 2).min(interval.max(Duration::from_secs(1)) * 4);
                wait
            }
        };
        tokio::select! {
            () = &mut stop => return Ok(report),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One cycle: the first sync's copy, or what changed since the watermarks;
/// then the deletes among the ids `sweep` reaches.
async fn cycle(
    src: &mut tokio_postgres::Client,
    client: &mut deadpool_postgres::Object,
    sink: &sink::Sink,
    opts: &SyncOptions,
    sweep: &mut Sweep,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let marks = store::sync::watermarks(&***client, &sink.source).await?;
    let (tx, bound) = source::begin(src).await?;
    let pg: &mut tokio_postgres::Client = client;
    if marks.is_empty() {
        // Rows with this bound's `updated_at` (or later) are read again by the next cycle.
        let read: Vec<Progress> = TABLES
            .iter()
            .map(|t| {
                Progress::Watermark(
                    t.name,
                    Watermark {
                        updated_at: bound,
                        id: i64::MIN,
                    },
                )
            })
            .collect();
        copy_all(&tx, pg, sink, &read, opts.progress, report).await?;
    } else {
        for table in TABLES {
            let after = marks
                .iter()
                .find(|m| m.source_table == table.name)
                .map(|m| m.mark);
            let changes = source::changed(&tx, table, after, bound).await?;
            for chunk in changes.chunks(opts.batch_size.max(1)) {
                let ids: Vec<i64> = chunk.iter().map(|c| c.id).collect();
                let mut orders = source::orders_touched(&tx, table, &ids).await?;
                orders.sort_unstable();
                orders.dedup();
                let last = *chunk.last().expect("a chunk is not empty");
                let parts: Vec<&[i64]> = orders.chunks(opts.batch_size.max(1)).collect();
                if parts.is_empty() {
                    // Nothing to rewrite (a customer without orders): the mark moves on.
                    let tx_mark = pg.transaction().await?;
                    store::sync::advance(&tx_mark, &sink.source, table.name, last).await?;
                    tx_mark.commit().await?;
                }
                for (i, part) in parts.iter().enumerate() {
                    let mark =
                        (i + 1 == parts.len()).then_some(Progress::Watermark(table.name, last));
                    replace(&tx, pg, sink, part, mark, report).await?;
                }
            }
        }
    }
    // Deletes leave no row to read: compare ids.
    let mut gone = Vec::new();
    for (i, table) in [ORDERS, ORDER_ITEMS].into_iter().enumerate() {
        let present = source::ids(&tx, table, sweep.next[i], sweep.span).await?;
        let range = sweep.range(i, &present);
        gone.extend(sink.deleted(pg, i == 1, &present, range).await?);
    }
    gone.sort_unstable();
    gone.dedup();
    for part in gone.chunks(opts.batch_size.max(1)) {
        replace(&tx, pg, sink, part, None, report).await?;
    }
    tx.commit().await.map_err(SyncError::source_query)?;
    report.cycles += 1;
    Ok(())
}

/// Replaces orders `ids` by their rows in the source's snapshot.
async fn replace(
    tx: &tokio_postgres::Transaction<'_>,
    client: &mut tokio_postgres::Client,
    sink: &sink::Sink,
    ids: &[i64],
    progress: Option<Progress<'_>>,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let (orders, items) = source::read_orders(tx, ids).await?;
    let orders = sink::typed(&sink.orders, &orders)?;
    let items = sink::typed(&sink.items, &items)?;
    let written = sink
        .replace_orders(client, ids, &orders, &items, progress)
        .await?;
    report.written.orders += written.orders;
    report.written.items += written.items;
    report.written.deleted_orders += written.deleted_orders;
    Ok(())
}

/// The first sync: every order, then every item, streamed in batches,
/// committed with `read` (how far this copy has read the source).
async fn copy_all(
    tx: &tokio_postgres::Transaction<'_>,
    client: &mut tokio_postgres::Client,
    sink: &sink::Sink,
    read: &[Progress<'_>],
    progress: bool,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    report.copied = true;
    let bar = if progress {
        let bar = ProgressBar::new(source::count(tx).await?);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {human_pos}/{human_len} rows ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("first sync");
        bar
    } else {
        ProgressBar::hidden()
    };
    let orders = source::all_orders(tx).await?;
    pin_mut!(orders);
    let written = sink
        .copy_all(client, orders, source::all_items(tx), read, &bar)
        .await?;
    report.written.orders += written.orders;
    report.written.items += written.items;
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Sweep;

    /// The comparison walks the ids a span at a time and starts over once
    /// the source's run out; a one-shot run's covers everything at once.
    #[test]
    fn the_sweep_walks_spans_then_starts_over() {
        let mut sweep = Sweep {
            next: [i64::MIN; 2],
            span: Some(2),
        };
        assert_eq!(sweep.range(0, &[1, 2]), (i64::MIN, 3));
        assert_eq!(sweep.next[0], 3);
        assert_eq!(
            sweep.range(0, &[5]),
            (3, i64::MAX),
            "the last span reaches the end"
        );
        assert_eq!(sweep.next[0], i64::MIN, "and the next starts over");
        assert_eq!(
            sweep.range(1, &[]),
            (i64::MIN, i64::MAX),
            "no source ids: all gone"
        );
        let mut all = Sweep::all();
        assert_eq!(all.range(0, &[1, 2, 3]), (i64::MIN, i64::MAX));
    }
}
