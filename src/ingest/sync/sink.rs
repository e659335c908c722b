//! Where synced orders land: `analytics.analytical_orders` and
//! `analytical_order_items` in clue's database. A batch replaces the rows of
//! its orders (the old ones deleted and taken out of the rollups, the new
//! ones copied in and added), advances the watermark it covers, and commits
//! it all at once.
//!
//! Architecture Invariant: a batch's rows, rollup deltas, watermark and
//! write notification commit together, so the rollups equal the facts at
//! every commit and a restart resumes exactly after the last batch.

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio_postgres::Transaction;

use super::SyncError;
use crate::domain::dataset::Catalog;
use crate::domain::delta::Accumulator;
use crate::domain::rollup::{PartialKind, RollupInfo};
use crate::domain::value::Value;
use crate::pg::catalog as schema;
use crate::pg::copy::{FieldCodec, PgKind};
use crate::sql::table::Table;
use crate::store;
use crate::store::sync::Progress;
use crate::write::load::{self, Batch, Produced, Target};
use crate::write::rollups;
use crate::write::triggers::own_write;

/// Source rows per COPY chunk of the first sync.
const STREAM_CHUNK: usize = 5_000;

/// A load's failure as the sync's.
fn load_error(e: load::LoadError<std::convert::Infallible>) -> SyncError {
    match e {
        load::LoadError::Database { message, kind } => SyncError::Write { message, kind },
        load::LoadError::Concurrent | load::LoadError::Duplicate { .. } => SyncError::Write {
            message: "a key of the analytical tables was written concurrently".into(),
            kind: crate::error::ErrorKind::Conflict,
        },
        load::LoadError::Producer(never) => match never {},
    }
}

/// One analytical table: its dataset, columns and rollups.
pub(super) struct SinkTable {
    table: Table,
    definition: crate::domain::dataset::Dataset,
    dataset: String,
    columns: Vec<String>,
    codecs: Vec<FieldCodec>,
    rollups: Option<(Vec<RollupInfo>, String)>,
}

impl SinkTable {
    async fn open(
        client: &mut tokio_postgres::Client,
        catalog: &Catalog,
        dataset: &str,
        columns: &[&str],
    ) -> Result<SinkTable, SyncError> {
        let ds = catalog
            .get(dataset)
            .map_err(|e| SyncError::Target(e.to_string()))?;
        let table = schema::load_table(&*client, &ds.table).await?;
        let codecs = columns
            .iter()
            .map(|name| {
                let column = table.column(name).ok_or_else(|| {
                    SyncError::Target(format!("{} has no column {name}", ds.table))
                })?;
                Ok(FieldCodec {
                    name: (*name).to_owned(),
                    kind: PgKind::of(column).ok_or_else(|| {
                        SyncError::Target(format!(
                            "{}.{name} has a type clue cannot copy",
                            ds.table
                        ))
                    })?,
                    nullable: !column.not_null,
                    rule: None,
                })
            })
            .collect::<Result<Vec<_>, SyncError>>()?;
        let (_, rollups) = crate::ingest::dataset_of(client, catalog, &table).await?;
        if let Some((infos, _)) = &rollups
            && infos
                .iter()
                .flat_map(|i| &i.partials)
                .any(|p| !matches!(p.kind, PartialKind::Sum | PartialKind::Count))
        {
            return Err(SyncError::Target(format!(
                "dataset {dataset} has a min or max rollup partial, which updates and deletes cannot keep exact"
            )));
        }
        Ok(SinkTable {
            table,
            definition: ds.clone(),
            dataset: dataset.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            codecs,
            rollups,
        })
    }

    fn accumulator(&self) -> Option<Accumulator> {
        let (infos, time) = self.rollups.as_ref()?;
        Accumulator::new(infos, time, |c| self.columns.iter().position(|x| x == c))
    }

    /// Replaces the rows whose `key` column is in `keys` by `rows` (typed
    /// as the columns), inside `tx`: the old ones leave the rollups, the
    /// new ones enter them (no `keys`: the table holds none of them). Returns
    /// the first column of each row deleted (its id).
    async fn replace(
        &self,
        tx: &Transaction<'_>,
        key: &str,
        keys: Option<&[i64]>,
        rows: &[Vec<Value<'static>>],
    ) -> Result<Vec<i64>, SyncError> {
        let mut deltas = self.accumulator();
        let deleted = match keys {
            None => Vec::new(),
            Some(keys) => {
                tx.query(
                    &format!(
                        "DELETE FROM {} WHERE {} = ANY($1) RETURNING {}",
                        self.table.table.quoted(),
                        crate::sql::quote_ident(key),
                        self.columns
                            .iter()
                            .map(|c| crate::sql::quote_ident(c))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    &[&keys],
                )
                .await?
            }
        };
        for row in &deleted {
            let old = self
                .codecs
                .iter()
                .enumerate()
                .map(|(i, c)| c.kind.read(row, i))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(d) = deltas.as_mut() {
                d.remove(&old);
            }
        }
        let mut out = BytesMut::new();
        self.encode(rows, &mut out)?;
        if let Some(d) = deltas.as_mut() {
            for row in rows {
                d.add(row);
            }
        }
        let (sender, receiver) = mpsc::channel(1);
        if !rows.is_empty() {
            sender
                .try_send(Batch::Rows(out.freeze()))
                .expect("an empty channel takes one batch");
        }
        drop(sender);
        let produced = Produced {
            rows_loaded: rows.len() as u64,
            deltas,
            ..Produced::default()
        };
        load::load_in(tx, self.target(), receiver, || {
            Ok::<_, std::convert::Infallible>(produced)
        })
        .await
        .map_err(load_error)?;
        Ok(deleted.iter().map(|r| r.get(0)).collect())
    }

    /// Rows as binary COPY data.
    fn encode(&self, rows: &[Vec<Value<'static>>], out: &mut BytesMut) -> Result<(), SyncError> {
        for row in rows {
            out.extend_from_slice(&(self.codecs.len() as i16).to_be_bytes());
            for (codec, value) in self.codecs.iter().zip(row) {
                codec
                    .write(value, out)
                    .map_err(|v| SyncError::Target(format!("{}: {}", codec.name, v.reason)))?;
            }
        }
        Ok(())
    }

    fn target(&self) -> Target<'_> {
        Target::rows(&self.table, &self.columns, Some(&self.dataset), &[])
    }

    /// Copies a stream of source rows into the table inside `tx` as one
    /// COPY, the next rows read while the last ones are written; no rollup
    /// deltas (the caller refills the rollups). Returns how many rows.
    async fn copy_stream(
        &self,
        tx: &Transaction<'_>,
        mut stream: std::pin::Pin<&mut tokio_postgres::RowStream>,
        progress: &indicatif::ProgressBar,
    ) -> Result<u64, SyncError> {
        use futures_util::StreamExt;
        let (sender, receiver) = mpsc::channel::<Batch>(4);
        let count = std::sync::atomic::AtomicU64::new(0);
        let produce = async {
            let sender = sender;
            let mut rows = Vec::with_capacity(STREAM_CHUNK);
            loop {
                let next = stream
                    .next()
                    .await
                    .transpose()
                    .map_err(SyncError::source_query)?;
                let done = next.is_none();
                rows.extend(next);
                if rows.len() >= STREAM_CHUNK || (done && !rows.is_empty()) {
                    let mut out = BytesMut::new();
                    self.encode(&typed(self, &rows)?, &mut out)?;
                    if sender.send(Batch::Rows(out.freeze())).await.is_err() {
                        // The COPY failed; the load says why.
                        return Ok(());
                    }
                    count.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    progress.inc(rows.len() as u64);
                    rows.clear();
                }
                if done {
                    return Ok::<(), SyncError>(());
                }
            }
        };
        let load = load::load_in(tx, self.target(), receiver, || {
            Ok::<_, std::convert::Infallible>(Produced {
                rows_loaded: count.load(std::sync::atomic::Ordering::Relaxed),
                ..Produced::default()
            })
        });
        let (produced, loaded) = tokio::join!(produce, load);
        produced?;
        loaded.map_err(load_error)?;
        Ok(count.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The ids in this table (by `key`, in `[from, to)`) that `present`
    /// lacks, reported by the `report` column.
    async fn missing(
        &self,
        client: &tokio_postgres::Client,
        key: &str,
        present: &[i64],
        report: &str,
        (from, to): (i64, i64),
    ) -> Result<Vec<i64>, SyncError> {
        let rows = client
            .query(
                &format!(
                    "SELECT DISTINCT t.{report} FROM {table} t
                       LEFT JOIN unnest($1::int8[]) AS s(id) ON s.id = t.{key}
                      WHERE s.id IS NULL AND t.{key} >= $2 AND t.{key} < $3",
                    table = self.table.table.quoted(),
                    key = crate::sql::quote_ident(key),
                    report = crate::sql::quote_ident(report),
                ),
                &[&present, &from, &to],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// Typed rows of a source query, as a sink table's columns.
pub(super) fn typed(
    table: &SinkTable,
    rows: &[tokio_postgres::Row],
) -> Result<Vec<Vec<Value<'static>>>, SyncError> {
    rows.iter()
        .map(|row| {
            table
                .codecs
                .iter()
                .enumerate()
                .map(|(i, c)| c.kind.read(row, i).map_err(SyncError::source_query))
                .collect()
        })
        .collect()
}

pub(super) const ORDER_COLUMNS: [&str; 12] = [
    "order_id",
    "customer_id",
    "customer_name",
    "order_date",
    "delivery_date",
    "status",
    "total_items",
    "total_amount",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
];
pub(super) const ITEM_COLUMNS: [&str; 13] = [
    "id",
    "order_id",
    "product_id",
    "product_name",
    "quantity",
    "price",
    "amount",
    "order_status",
    "delivery_date",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
];

/// The two analytical tables of one source.
pub(super) struct Sink {
    pub orders: SinkTable,
    pub items: SinkTable,
    /// The source's name in the watermark table.
    pub source: String,
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub orders: u64,
    pub items: u64,
    pub deleted_orders: u64,
}

impl Sink {
    pub(super) async fn open(
        client: &mut tokio_postgres::Client,
        catalog: &Catalog,
        source: String,
    ) -> Result<Sink, SyncError> {
        Ok(Sink {
            orders: SinkTable::open(client, catalog, "analytical_orders", &ORDER_COLUMNS).await?,
            items: SinkTable::open(client, catalog, "analytical_order_items", &ITEM_COLUMNS)
                .await?,
            source,
        })
    }

    /// Replaces orders `ids` (and all their items) by their current rows,
    /// recording `progress` with them.
    pub(super) async fn replace_orders(
        &self,
        client: &mut tokio_postgres::Client,
        ids: &[i64],
        orders: &[Vec<Value<'static>>],
        items: &[Vec<Value<'static>>],
        progress: Option<Progress<'_>>,
    ) -> Result<Written, SyncError> {
        let tx = client.transaction().await?;
        own_write(&tx).await?;
        self.items
            .replace(&tx, "order_id", Some(ids), items)
            .await?;
        let deleted = self
            .orders
            .replace(&tx, "order_id", Some(ids), orders)
            .await?;
        if let Some(progress) = progress {
            store::sync::record(&tx, &self.source, progress).await?;
        }
        tx.commit().await?;
        // Orders that were here and are not among the new rows: removed.
        let kept: std::collections::HashSet<i64> = orders
            .iter()
            .filter_map(|o| match o.first() {
                Some(Value::Int(id)) => Some(*id),
                _ => None,
            })
            .collect();
        Ok(Written {
            orders: orders.len() as u64,
            items: items.len() as u64,
            deleted_orders: deleted.iter().filter(|id| !kept.contains(id)).count() as u64,
        })
    }

    /// The first sync in one transaction: both tables emptied (a copy
    /// again after `clue etl reset`), every order then every item streamed
    /// in, the rollups refilled from them, and the source's progress set
    /// anew (the watermarks of a polling sync, or the position of change
    /// data capture, whose copy leaves no watermark behind).
    pub(super) async fn copy_all(
        &self,
        client: &mut tokio_postgres::Client,
        orders: std::pin::Pin<&mut tokio_postgres::RowStream>,
        items: impl std::future::Future<Output = Result<tokio_postgres::RowStream, SyncError>>,
        read: &[Progress<'_>],
        progress: &indicatif::ProgressBar,
    ) -> Result<Written, SyncError> {
        let tx = client.transaction().await?;
        own_write(&tx).await?;
        for table in [&self.items, &self.orders] {
            tx.batch_execute(&format!("DELETE FROM {}", table.table.table.quoted()))
                .await?;
        }
        let orders = self.orders.copy_stream(&tx, orders, progress).await?;
        let stream = items.await?;
        futures_util::pin_mut!(stream);
        let items = self.items.copy_stream(&tx, stream, progress).await?;
        for table in [&self.orders, &self.items] {
            if let Some((infos, _)) = &table.rollups {
                rollups::refill_in(&tx, &table.definition, &table.table, infos).await?;
            }
        }
        store::sync::reset(&tx, &self.source).await?;
        for p in read {
            store::sync::record(&tx, &self.source, *p).await?;
        }
        tx.commit().await?;
        Ok(Written {
            orders,
            items,
            deleted_orders: 0,
        })
    }

    /// Every order the analytical table holds (a truncated source table
    /// rewrites them all).
    pub(super) async fn order_ids(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<Vec<i64>, SyncError> {
        let rows = client
            .query(
                &format!("SELECT order_id FROM {}", self.orders.table.table.quoted()),
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The orders the analytical items `ids` belong to here (an item moved
    /// to another order, or deleted, leaves its old order to rewrite).
    pub(super) async fn orders_of_items(
        &self,
        client: &tokio_postgres::Client,
        ids: &[i64],
    ) -> Result<Vec<i64>, SyncError> {
        let rows = client
            .query(
                &format!(
                    "SELECT DISTINCT order_id FROM {} WHERE id = ANY($1)",
                    self.items.table.table.quoted()
                ),
                &[&ids],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The orders to replace because the source deleted them (`items`:
    /// some of their items): ids in `range` of the analytical table missing
    /// from the source's `present` ones.
    pub(super) async fn deleted(
        &self,
        client: &tokio_postgres::Client,
        items: bool,
        present: &[i64],
        range: (i64, i64),
    ) -> Result<Vec<i64>, SyncError> {
        if items {
            self.items
                .missing(client, "id", present, "order_id", range)
                .await
        } else {
            self.orders
                .missing(client, "order_id", present, "order_id", range)
                .await
        }
    }
}
