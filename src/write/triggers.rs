//! Rollups kept by the database for writers that are not clue: plain SQL,
//! an application writing to a fact table. Statement-level triggers on the
//! fact table read the statement's transition tables and apply the same
//! deltas clue's loads apply (sums and counts added or taken away, minima
//! and maxima recomputed for the groups a removal touches), under the
//! dataset's lock, then notify the write. clue's own writes set
//! `clue.own_write` for their transaction, and the triggers leave them
//! alone: they apply their deltas themselves.
//!
//! Architecture Invariant: a statement through the fact table (its root,
//! for a partitioned one) leaves every rollup equal to the aggregation of
//! the facts when it commits, whoever ran it.

use crate::domain::dataset::Dataset;
use crate::domain::rollup::{PartialKind, RollupInfo};
use crate::sql::table::Table;
use crate::sql::{ROLLUP_SCHEMA, quote_ident, rollup_table};
use crate::write::rollups::{aggregate_of, columns_of, groups_of};

/// Marks the transaction as clue's own write: the triggers skip it.
pub async fn own_write(
    tx: &impl tokio_postgres::GenericClient,
) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT set_config('clue.own_write', 'on', true)", &[])
        .await?;
    Ok(())
}

fn function_name(dataset: &Dataset) -> String {
    format!(
        "{}.{}",
        quote_ident(ROLLUP_SCHEMA),
        quote_ident(&format!("keep_{}", dataset.name))
    )
}

const TRIGGERS: [(&str, &str); 4] = [
    (
        "clue_keep_insert",
        "INSERT ON {on} REFERENCING NEW TABLE AS clue_new",
    ),
    (
        "clue_keep_update",
        "UPDATE ON {on} REFERENCING OLD TABLE AS clue_old NEW TABLE AS clue_new",
    ),
    (
        "clue_keep_delete",
        "DELETE ON {on} REFERENCING OLD TABLE AS clue_old",
    ),
    ("clue_keep_truncate", "TRUNCATE ON {on}"),
];

/// Installs (or updates, or with no rollups removes) the keeper of
/// `dataset`'s rollups on its fact table, in a short transaction of its
/// own. Only what differs is changed: the function when its body does, a
/// trigger when it is missing; in the steady state nothing is written and
/// the fact table is not locked.
pub async fn install(
    client: &mut tokio_postgres::Client,
    dataset: &Dataset,
    table: &Table,
    infos: &[RollupInfo],
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    crate::store::locks::lock_keepers(&tx, &dataset.name).await?;
    let present: Vec<String> = tx
        .query(
            "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1::oid AND tgname LIKE 'clue\\_keep\\_%'",
            &[&table.table.oid],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let on = table.table.quoted();
    if infos.is_empty() {
        for name in &present {
            tx.batch_execute(&format!("DROP TRIGGER IF EXISTS {name} ON {on}"))
                .await?;
        }
        tx.batch_execute(&format!(
            "DROP FUNCTION IF EXISTS {}()",
            function_name(dataset)
        ))
        .await?;
        return tx.commit().await;
    }
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(ROLLUP_SCHEMA)
    ))
    .await?;
    let (body, create) = function_sql(dataset, table, infos);
    let current: Option<String> = tx
        .query_opt(
            "SELECT prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = $1 AND p.proname = $2",
            &[&ROLLUP_SCHEMA, &format!("keep_{}", dataset.name)],
        )
        .await?
        .map(|r| r.get(0));
    if current.as_deref() != Some(body.as_str()) {
        tx.batch_execute(&create).await?;
    }
    let f = function_name(dataset);
    for (name, event) in TRIGGERS {
        if !present.iter().any(|p| p == name) {
            tx.batch_execute(&format!(
                "CREATE TRIGGER {name} AFTER {} FOR EACH STATEMENT EXECUTE FUNCTION {f}()",
                event.replace("{on}", &on)
            ))
            .await?;
        }
    }
    tx.commit().await
}

/// One rollup's share of the trigger function.
struct Keeper<'a> {
    info: &'a RollupInfo,
    dataset: &'a Dataset,
    table: &'a Table,
    rollup: String,
    keys: Vec<String>,
    data: Vec<String>,
    pk: Vec<String>,
}

impl<'a> Keeper<'a> {
    fn new(info: &'a RollupInfo, dataset: &'a Dataset, table: &'a Table) -> Keeper<'a> {
        let (keys, data, pk) = columns_of(info);
        Keeper {
            info,
            dataset,
            table,
            rollup: rollup_table(&info.name),
            keys,
            data,
            pk,
        }
    }

    fn same(&self, a: &str, b: &str) -> String {
        self.keys
            .iter()
            .map(|k| format!("{a}.{k} = {b}.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn extremes(&self) -> bool {
        self.info
            .partials
            .iter()
            .any(|p| matches!(p.kind, PartialKind::Min | PartialKind::Max))
    }

    /// The new rows' partials added (an upsert by the rollup's key).
    fn add(&self) -> String {
        let updates: Vec<String> =
            std::iter::once("row_count = r.row_count + excluded.row_count".to_owned())
                .chain(self.info.partials.iter().map(|p| {
                    let c = quote_ident(&p.column());
                    match p.kind {
                        PartialKind::Sum => {
                            format!("{c} = coalesce(r.{c}, 0) + coalesce(excluded.{c}, 0)")
                        }
                        PartialKind::Count => format!("{c} = r.{c} + excluded.{c}"),
                        PartialKind::Min => format!("{c} = least(r.{c}, excluded.{c})"),
                        PartialKind::Max => format!("{c} = greatest(r.{c}, excluded.{c})"),
                    }
                }))
                .collect();
        format!(
            "INSERT INTO {} AS r ({}) {} ON CONFLICT ({}) DO UPDATE SET {};",
            self.rollup,
            self.data.join(", "),
            aggregate_of(self.info, self.dataset, self.table, "clue_new", None),
            self.pk.join(", "),
            updates.join(", ")
        )
    }

    /// The old rows' sums and counts taken away; a group left with no
    /// rows deleted.
    fn take_away(&self) -> String {
        let updates: Vec<String> =
            std::iter::once("row_count = r.row_count - d.row_count".to_owned())
                .chain(self.info.partials.iter().map(|p| {
                    let c = quote_ident(&p.column());
                    match p.kind {
                        PartialKind::Sum => {
                            format!("{c} = coalesce(r.{c}, 0) - coalesce(d.{c}, 0)")
                        }
                        _ => format!("{c} = r.{c} - d.{c}"),
                    }
                }))
                .collect();
        format!(
            "UPDATE {r} AS r SET {updates} FROM ({agg}) AS d({data}) WHERE {same_rd};
             DELETE FROM {r} AS r USING ({groups}) AS t({keys}) WHERE {same_rt} AND r.row_count = 0;",
            r = self.rollup,
            updates = updates.join(", "),
            agg = aggregate_of(self.info, self.dataset, self.table, "clue_old", None),
            data = self.data.join(", "),
            same_rd = self.same("r", "d"),
            groups = groups_of(self.info, self.dataset, self.table, "clue_old"),
            keys = self.keys.join(", "),
            same_rt = self.same("r", "t"),
        )
    }

    /// The groups `touched` (a relation of keys) recomputed from the facts:
    /// a minimum or maximum cannot be un-counted.
    fn recompute(&self, touched: &str) -> String {
        format!(
            "DELETE FROM {r} AS r USING {touched} AS t({keys}) WHERE {same_rt};
             INSERT INTO {r} ({data}) {agg};",
            r = self.rollup,
            keys = self.keys.join(", "),
            same_rt = self.same("r", "t"),
            data = self.data.join(", "),
            agg = aggregate_of(
                self.info,
                self.dataset,
                self.table,
                &self.table.table.quoted(),
                Some(touched)
            ),
        )
    }

    /// For a removal (a delete, the old side of an update): the groups the
    /// old rows (and, for an update, the new ones) fall in, recomputed.
    fn recompute_removed(&self) -> String {
        let old = groups_of(self.info, self.dataset, self.table, "clue_old");
        let new = groups_of(self.info, self.dataset, self.table, "clue_new");
        format!(
            "IF TG_OP = 'DELETE' THEN {} ELSE {} END IF;",
            self.recompute(&format!("({old})")),
            self.recompute(&format!("({old} UNION {new})")),
        )
    }
}

/// The trigger function (its body, and the statement creating it): per
/// rollup, the removed rows' partials taken away and the added rows'
/// partials added (or, for a rollup with minima or maxima, every group a
/// removal touches recomputed from the facts).
fn function_sql(dataset: &Dataset, table: &Table, infos: &[RollupInfo]) -> (String, String) {
    let mut removals = Vec::new();
    let mut additions = Vec::new();
    let mut truncates = Vec::new();
    for info in infos {
        let keeper = Keeper::new(info, dataset, table);
        truncates.push(format!("DELETE FROM {};", keeper.rollup));
        if keeper.extremes() {
            removals.push(keeper.recompute_removed());
            additions.push(format!("IF TG_OP = 'INSERT' THEN {} END IF;", keeper.add()));
        } else {
            removals.push(keeper.take_away());
            additions.push(keeper.add());
        }
    }
    let body = format!(
        "
BEGIN
    IF coalesce(current_setting('clue.own_write', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock({lock}, hashtext({name}));
    IF TG_OP = 'TRUNCATE' THEN
        {truncates}
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        {removals}
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        {additions}
    END IF;
    PERFORM pg_notify('clue_writes', {notice});
    RETURN NULL;
END
",
        lock = crate::store::locks::ROLLUPS,
        name = crate::sql::quote_literal(&dataset.name),
        notice = crate::sql::quote_literal(&format!("{} *", dataset.name)),
        truncates = truncates.join("\n        "),
        removals = removals.join("\n        "),
        additions = additions.join("\n        "),
    );
    let create = format!(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $clue${body}$clue$",
        function_name(dataset)
    );
    (body, create)
}
