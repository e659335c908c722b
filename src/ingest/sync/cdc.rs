//! Change data capture (`clue etl run --cdc`): the source's committed
//! changes streamed through logical replication (a publication of the four
//! tables, a `pgoutput` slot), each batch of transactions turned into the
//! orders it touches and replaced like a polling cycle's, the slot's
//! position recorded with the rows it covers.
//!
//! From nothing, the slot is made with an exported snapshot and the first
//! copy reads in that snapshot: the stream then carries exactly the
//! transactions the copy did not see. A restart resumes from the position
//! recorded in clue's database; a transaction streamed again rewrites the
//! same rows.
//!
//! Architecture Invariant: the slot's position is confirmed to the source
//! only after the rows it covers committed in clue's database, and orders
//! are read from the source only once every transaction that touched them
//! is visible there (logical decoding can deliver a commit a moment before
//! other sessions see it).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_postgres::Client;

use super::sink::Sink;
use super::source::{self, CUSTOMERS, ORDER_ITEMS, ORDERS, PRODUCTS, TABLES};
use super::{SyncError, SyncOptions, SyncReport};
use crate::error::{Classify, ErrorKind};
use crate::pg::replication::{Change, Fields, Opening, Stream};
use crate::store;
use crate::store::sync::Progress;

/// The publication clue makes when none is named.
pub const DEFAULT_PUBLICATION: &str = "clue_sync";

/// How long a flush waits for a streamed transaction to become visible to
/// other sessions of the source before it gives up (and retries).
const VISIBILITY_WAIT: Duration = Duration::from_secs(10);

/// Where the changes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdcOptions {
    /// The replication slot; clue names one on the first run.
    pub slot: Option<String>,
    pub publication: String,
}

/// What a batch of streamed transactions touched.
#[derive(Debug, Default)]
struct Touched {
    orders: BTreeSet<i64>,
    items: BTreeSet<i64>,
    customers: BTreeSet<i64>,
    products: BTreeSet<i64>,
    /// A table was truncated: every order is rewritten.
    everything: bool,
    xids: Vec<u32>,
    /// The end of the last whole transaction.
    end_lsn: Option<u64>,
    transactions: u64,
}

impl Touched {
    fn row(&mut self, table: &str, fields: &Fields) {
        match table {
            "orders" => self.orders.extend(fields.int("order_id")),
            "order_items" => {
                // Without `REPLICA IDENTITY FULL` a deleted item carries only
                // its id: its order is then found by the id.
                self.orders.extend(fields.int("order_id"));
                self.items.extend(fields.int("order_item_id"));
            }
            "customers" => self.customers.extend(fields.int("customer_id")),
            "products" => self.products.extend(fields.int("product_id")),
            _ => {}
        }
    }

    fn size(&self) -> usize {
        self.orders.len() + self.items.len() + self.customers.len() + self.products.len()
    }
}

/// Streams until `stop` resolves: a failure is logged once per change of
/// state and retried with backoff, except a setup error of the first
/// attempt (a `wal_level`, a permission, a publication), which needs a
/// person.
pub(super) async fn run(
    client: &mut deadpool_postgres::Object,
    sink: &Sink,
    opts: &SyncOptions,
    cdc: &CdcOptions,
    stop: impl Future<Output = ()>,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let mut stop = std::pin::pin!(stop);
    let mut streamed = false;
    let mut last_error: Option<String> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        match session(
            client,
            sink,
            opts,
            cdc,
            stop.as_mut(),
            report,
            &mut streamed,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) if !streamed && e.kind() == ErrorKind::BadInput => return Err(e),
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "change data capture failed; retrying");
                    last_error = Some(text);
                }
            }
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// One connection's worth: start (copying first if there is no position),
/// then follow the stream until stopped or failed.
async fn session(
    client: &mut deadpool_postgres::Object,
    sink: &Sink,
    opts: &SyncOptions,
    cdc: &CdcOptions,
    stop: Pin<&mut impl Future<Output = ()>>,
    report: &mut SyncReport,
    streamed: &mut bool,
) -> Result<(), SyncError> {
    let mut src = source::connect(&opts.source).await?;
    source::check(&src).await?;
    let mut stream = start(&mut src, client, sink, opts, cdc, report).await?;
    if *streamed {
        tracing::info!("change data capture recovered");
    }
    *streamed = true;
    let followed = follow(&mut stream, &mut src, client, sink, opts, stop, report).await;
    stream.close().await;
    followed
}

/// Checks the source can stream, makes the publication and the slot as
/// needed (copying everything in the slot's snapshot when there is no
/// position to resume from), and starts streaming.
async fn start(
    src: &mut Client,
    client: &mut deadpool_postgres::Object,
    sink: &Sink,
    opts: &SyncOptions,
    cdc: &CdcOptions,
    report: &mut SyncReport,
) -> Result<Stream, SyncError> {
    check_replication(src).await?;
    ensure_publication(src, &cdc.publication).await?;
    let position = store::sync::position(&***client, &sink.source).await?;
    let slot = match (&cdc.slot, &position) {
        (Some(slot), _) => slot_name(slot)?,
        (None, Some(p)) => p.slot.clone(),
        (None, None) => format!("clue_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
    };
    // A position of another slot (a --slot given anew) is no position.
    let position = position.filter(|p| p.slot == slot);
    let existing = slot_state(src, &slot).await?;
    match (position.as_ref().and_then(|p| p.lsn), existing) {
        (_, Some(SlotState::Active(pid))) => return Err(SyncError::SlotInUse { slot, pid }),
        (_, Some(SlotState::Foreign(detail))) => {
            return Err(SyncError::ForeignSlot { slot, detail });
        }
        (Some(lsn), Some(SlotState::Idle)) => {
            let opening = Opening::connect(&opts.source, &slot, &cdc.publication).await?;
            return Ok(opening.start(lsn).await?);
        }
        (Some(_), None) => {
            tracing::warn!(%slot, "the replication slot is gone from the source; copying everything again");
        }
        (None, Some(SlotState::Idle)) if position.is_some() => {
            // Made by an attempt whose first copy did not commit.
            drop_slot(src, &slot).await?;
        }
        (None, Some(SlotState::Idle)) => {
            return Err(SyncError::ForeignSlot {
                slot,
                detail: "this clue database has no position for it".into(),
            });
        }
        (None, None) => {}
    }
    store::sync::claim_slot(&***client, &sink.source, &slot, &cdc.publication).await?;
    tracing::info!(%slot, publication = %cdc.publication, "making the replication slot (it waits for the source's open transactions)");
    let mut opening = Opening::connect(&opts.source, &slot, &cdc.publication).await?;
    let snapshot = opening.create_slot().await?;
    let tx = source::snapshot(src).await?;
    tx.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT {}",
        crate::sql::quote_literal(&snapshot)
    ))
    .await
    .map_err(SyncError::source_query)?;
    let lsn: postgres_types::PgLsn = tx
        .query_one(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(SyncError::source_query)?
        .get(0);
    let lsn = u64::from(lsn);
    let pg: &mut Client = client;
    super::copy_all(
        &tx,
        pg,
        sink,
        &[Progress::Position(lsn)],
        opts.progress,
        report,
    )
    .await?;
    tx.commit().await.map_err(SyncError::source_query)?;
    Ok(opening.start(lsn).await?)
}

/// Reads the stream, flushing whenever it has nothing more at hand (or a
/// batch is full) and a transaction has ended; a stop flushes what has
/// ended and leaves a transaction still arriving to the next run.
async fn follow(
    stream: &mut Stream,
    src: &mut Client,
    client: &mut deadpool_postgres::Object,
    sink: &Sink,
    opts: &SyncOptions,
    mut stop: Pin<&mut impl Future<Output = ()>>,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let mut touched = Touched::default();
    let mut in_transaction = false;
    loop {
        let ready = !in_transaction && touched.end_lsn.is_some();
        let change = match stream.try_next() {
            Some(change) if !(ready && touched.size() >= opts.batch_size) => change,
            next => {
                if ready {
                    flush(&mut touched, stream, src, client, sink, opts, report).await?;
                }
                match next {
                    Some(change) => change,
                    None => tokio::select! {
                        biased;
                        () = stop.as_mut() => {
                            return Ok(());
                        }
                        change = stream.next() => change.ok_or_else(|| {
                            SyncError::Replication("the replication stream ended".into())
                        })?,
                    },
                }
            }
        };
        match change? {
            Change::Begin { xid } => {
                in_transaction = true;
                touched.xids.push(xid);
            }
            Change::Row {
                schema,
                table,
                old,
                new,
            } if schema == "operations" => {
                for fields in old.iter().chain(new.iter()) {
                    touched.row(&table, fields);
                }
            }
            Change::Row { .. } => {}
            Change::Truncate { tables } => {
                touched.everything |= tables.iter().any(|t| TABLES.iter().any(|s| s.name == t));
            }
            Change::Commit { end_lsn } => {
                in_transaction = false;
                touched.end_lsn = Some(end_lsn);
                touched.transactions += 1;
            }
        }
    }
}

/// Rewrites the orders `touched` names as the source has them now, and
/// records (then confirms) the end of its last transaction.
async fn flush(
    touched: &mut Touched,
    stream: &Stream,
    src: &mut Client,
    client: &mut deadpool_postgres::Object,
    sink: &Sink,
    opts: &SyncOptions,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let done = std::mem::take(touched);
    let end = done.end_lsn.expect("a flush follows a commit");
    wait_visible(src, &done.xids).await?;
    let tx = source::snapshot(src).await?;
    let pg: &mut Client = client;
    let mut orders: Vec<i64> = done.orders.into_iter().collect();
    let items: Vec<i64> = done.items.into_iter().collect();
    if done.everything {
        orders.extend(sink.order_ids(pg).await?);
        orders.extend(source::ids(&tx, ORDERS, i64::MIN, None).await?);
    }
    if !items.is_empty() {
        orders.extend(source::orders_touched(&tx, ORDER_ITEMS, &items).await?);
        orders.extend(sink.orders_of_items(pg, &items).await?);
    }
    for (table, ids) in [(CUSTOMERS, done.customers), (PRODUCTS, done.products)] {
        if !ids.is_empty() {
            let ids: Vec<i64> = ids.into_iter().collect();
            orders.extend(source::orders_touched(&tx, table, &ids).await?);
        }
    }
    orders.sort_unstable();
    orders.dedup();
    if orders.is_empty() {
        let mark = pg.transaction().await?;
        store::sync::record(&mark, &sink.source, Progress::Position(end)).await?;
        mark.commit().await?;
    }
    let parts: Vec<&[i64]> = orders.chunks(opts.batch_size.max(1)).collect();
    for (i, part) in parts.iter().enumerate() {
        let progress = (i + 1 == parts.len()).then_some(Progress::Position(end));
        super::replace(&tx, pg, sink, part, progress, report).await?;
    }
    tx.commit().await.map_err(SyncError::source_query)?;
    stream.confirm(end);
    report.cycles += 1;
    report.transactions += done.transactions;
    Ok(())
}

/// Waits until every transaction `xids` is visible to a new snapshot of
/// the source (from then on, to every later one).
async fn wait_visible(src: &Client, xids: &[u32]) -> Result<(), SyncError> {
    let started = std::time::Instant::now();
    loop {
        let snapshot: String = src
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await
            .map_err(SyncError::source_query)?
            .get(0);
        if xids.iter().all(|x| visible(&snapshot, *x)) {
            return Ok(());
        }
        if started.elapsed() > VISIBILITY_WAIT {
            return Err(SyncError::Replication(format!(
                "a streamed transaction is still not visible on the source after {} s (snapshot {snapshot})",
                VISIBILITY_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether the committed transaction `xid` (32 bits, as logical decoding
/// gives it) is visible in `snapshot` (`pg_current_snapshot()` as text:
/// `xmin:xmax:xip,…`, 64-bit ids). A 32-bit id is within 2^31 of `xmax`
/// (PostgreSQL's wraparound limit), which places it in its epoch.
fn visible(snapshot: &str, xid: u32) -> bool {
    let mut parts = snapshot.split(':');
    let (Some(_), Some(xmax), Some(xip)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(xmax) = xmax.parse::<u64>() else {
        return false;
    };
    let ahead = xid.wrapping_sub(xmax as u32) as i32;
    let Some(full) = xmax.checked_add_signed(i64::from(ahead)) else {
        return false;
    };
    full < xmax && !xip.split(',').any(|x| x.parse::<u64>() == Ok(full))
}

/// A slot as the source has it.
enum SlotState {
    Idle,
    /// Streaming to the process with this id.
    Active(i32),
    /// Not a `pgoutput` slot of the source database.
    Foreign(String),
}

async fn slot_state(src: &Client, slot: &str) -> Result<Option<SlotState>, SyncError> {
    let row = src
        .query_opt(
            "SELECT active_pid, coalesce(plugin::text, ''), coalesce(database::text, ''),
                    database IS NOT DISTINCT FROM current_database()
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(SyncError::source_query)?;
    Ok(row.map(|r| {
        let (pid, plugin, database, here): (Option<i32>, String, String, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if !here || plugin != "pgoutput" {
            SlotState::Foreign(format!(
                "it is a {} slot of database {}, not a pgoutput slot of this one",
                if plugin.is_empty() {
                    "physical"
                } else {
                    &plugin
                },
                if database.is_empty() {
                    "none"
                } else {
                    &database
                }
            ))
        } else if let Some(pid) = pid {
            SlotState::Active(pid)
        } else {
            SlotState::Idle
        }
    }))
}

/// A slot name PostgreSQL accepts (lower-case letters, digits, `_`).
fn slot_name(name: &str) -> Result<String, SyncError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(SyncError::Target(format!(
            "--slot {name:?}: a slot name is 1 to 63 lower-case letters, digits and underscores"
        )))
    }
}

/// `wal_level = logical` and a role that may stream.
async fn check_replication(src: &Client) -> Result<(), SyncError> {
    let row = src
        .query_one(
            "SELECT current_setting('wal_level'), current_user::text,
                    coalesce((SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), false)",
            &[],
        )
        .await
        .map_err(SyncError::source_query)?;
    let (level, role, may): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
    if level != "logical" {
        return Err(SyncError::WalLevel { level });
    }
    if !may {
        return Err(SyncError::NoReplication { role });
    }
    Ok(())
}

/// Makes the publication of the four tables, or checks the one there
/// publishes them and every kind of change.
async fn ensure_publication(src: &Client, name: &str) -> Result<(), SyncError> {
    let tables: Vec<String> = TABLES
        .iter()
        .map(|t| format!("operations.{}", t.name))
        .collect();
    let error = |detail: String| SyncError::Publication {
        name: name.to_owned(),
        detail,
    };
    let found = src
        .query_opt(
            "SELECT p.pubinsert AND p.pubupdate AND p.pubdelete AND p.pubtruncate,
                    array(SELECT t.tablename::text FROM pg_publication_tables t
                           WHERE t.pubname = p.pubname AND t.schemaname = 'operations')
               FROM pg_publication p WHERE p.pubname = $1",
            &[&name],
        )
        .await
        .map_err(SyncError::source_query)?;
    if let Some(row) = found {
        let (every_kind, published): (bool, Vec<String>) = (row.get(0), row.get(1));
        if !every_kind {
            return Err(error(format!(
                "it does not publish every kind of change; ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate')",
                crate::sql::quote_ident(name)
            )));
        }
        if let Some(missing) = TABLES
            .iter()
            .find(|t| !published.iter().any(|p| p == t.name))
        {
            return Err(error(format!(
                "it does not publish operations.{0}; add it: ALTER PUBLICATION {1} ADD TABLE operations.{0}",
                missing.name,
                crate::sql::quote_ident(name)
            )));
        }
        return Ok(());
    }
    // A published table without a replica identity refuses UPDATE and
    // DELETE: making the publication would break the source's writers.
    let unkeyed: Vec<String> = src
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'operations' AND c.relname = ANY($1)
                AND (c.relreplident = 'n'
                     OR (c.relreplident = 'd'
                         AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))",
            &[&TABLES.iter().map(|t| t.name).collect::<Vec<_>>()],
        )
        .await
        .map_err(SyncError::source_query)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(table) = unkeyed.first() {
        return Err(error(format!(
            "clue did not make it: operations.{table} has no primary key or replica identity, so publishing it would make the source refuse its updates and deletes; give it one (ALTER TABLE operations.{table} REPLICA IDENTITY FULL)"
        )));
    }
    let create = format!(
        "CREATE PUBLICATION {} FOR TABLE {}",
        crate::sql::quote_ident(name),
        tables.join(", ")
    );
    src.batch_execute(&create).await.map_err(|e| {
        error(format!(
            "clue could not make it ({}); make it as the tables' owner: {create}",
            e.as_db_error().map_or("no answer", |d| d.message())
        ))
    })?;
    tracing::info!(publication = %name, "made the publication on the source");
    Ok(())
}

/// Drops a slot on the source; one in use is refused.
async fn drop_slot(src: &Client, slot: &str) -> Result<(), SyncError> {
    src.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(|e| match e.as_db_error() {
            Some(d) if d.code() == &tokio_postgres::error::SqlState::OBJECT_IN_USE => {
                SyncError::SlotInUse {
                    slot: slot.to_owned(),
                    pid: 0,
                }
            }
            _ => SyncError::source_query(e),
        })?;
    Ok(())
}

/// A slot's state for `clue etl status`.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    /// The process streaming from it, if one is.
    pub active_pid: Option<i32>,
    /// How far the source counts it confirmed.
    pub confirmed: Option<u64>,
    /// WAL written since the confirmed position, in bytes.
    pub lag_bytes: Option<i64>,
    /// WAL the source keeps for the slot, in bytes.
    pub retained_bytes: Option<i64>,
}

/// The source's view of `slot` (`None`: there is no such slot).
pub async fn slot_status(
    config: &tokio_postgres::Config,
    slot: &str,
) -> Result<Option<SlotStatus>, SyncError> {
    let src = source::connect(config).await?;
    let row = src
        .query_opt(
            "SELECT active_pid, confirmed_flush_lsn,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(SyncError::source_query)?;
    Ok(row.map(|r| SlotStatus {
        active_pid: r.get(0),
        confirmed: r.get::<_, Option<postgres_types::PgLsn>>(1).map(u64::from),
        lag_bytes: r.get(2),
        retained_bytes: r.get(3),
    }))
}

/// `clue etl drop-slot`: drops `slot` on the source (false: there was
/// none). The caller forgets the position.
pub async fn drop_slot_of(config: &tokio_postgres::Config, slot: &str) -> Result<bool, SyncError> {
    let src = source::connect(config).await?;
    let slot = slot_name(slot)?;
    match slot_state(&src, &slot).await? {
        None => Ok(false),
        Some(SlotState::Active(pid)) => Err(SyncError::SlotInUse { slot, pid }),
        Some(_) => drop_slot(&src, &slot).await.map(|()| true),
    }
}

/// An LSN as PostgreSQL writes it (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::visible;

    fn check(snapshot: &str, xid: u32, expect: bool) {
        assert_eq!(visible(snapshot, xid), expect, "{xid} in {snapshot}");
    }

    #[test]
    fn a_transaction_is_visible_once_it_left_the_snapshots_running_list() {
        check("100:105:100,103", 101, true);
        check("100:105:100,103", 103, false);
        check("100:105:", 104, true);
        check("100:105:", 105, false);
        check("100:105:", 7, true);
        // Ids of the epoch before the snapshot's xmax.
        let xmax = (3u64 << 32) | 10;
        check(&format!("{xmax}:{xmax}:"), u32::MAX, true);
        check(
            &format!("{}:{xmax}:{}", xmax - 20, (2u64 << 32) | 4_294_967_290),
            4_294_967_290,
            false,
        );
        check(&format!("{xmax}:{xmax}:"), 9, true);
        check(&format!("{xmax}:{xmax}:"), 10, false);
        check("garbage", 1, false);
    }
}
