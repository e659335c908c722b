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

/// The trigger function: per rollup, the removed rows' partials taken away
/// and the added rows' partials added (or, for a rollup with minima or
/// maxima, every touched group recomputed from the facts).
fn function_sql(dataset: &Dataset, table: &Table, infos: &[RollupInfo]) -> (String, String) {
    let mut removals = Vec::new();
    let mut additions = Vec::new();
    let mut truncates = Vec::new();
    for info in infos {
        let r = rollup_table(&info.name);
        let (keys, data, pk) = columns_of(info);
        let same = |a: &str, b: &str| {
            keys.iter()
                .map(|k| format!("{a}.{k} = {b}.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        truncates.push(format!("DELETE FROM {r};"));
        let extremes = info
            .partials
            .iter()
            .any(|p| matches!(p.kind, PartialKind::Min | PartialKind::Max));
        let add = {
            let updates: Vec<String> =
                std::iter::once("row_count = r.row_count + excluded.row_count".to_owned())
                    .chain(info.partials.iter().map(|p| {
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
                "INSERT INTO {r} AS r ({}) {} ON CONFLICT ({}) DO UPDATE SET {};",
                data.join(", "),
                aggregate_of(info, dataset, table, "clue_new", None),
                pk.join(", "),
                updates.join(", ")
            )
        };
        if extremes {
            // A minimum or maximum cannot be un-counted: the groups the old
            // rows (and, for an update, the new ones) fall in are recomputed.
            let old_groups = groups_of(info, dataset, table, "clue_old");
            let new_groups = groups_of(info, dataset, table, "clue_new");
            let recompute = |touched: &str| {
                format!(
                    "DELETE FROM {r} AS r USING {touched} AS t({keys}) WHERE {same_rt};
                     INSERT INTO {r} ({data}) {agg};",
                    keys = keys.join(", "),
                    same_rt = same("r", "t"),
                    data = data.join(", "),
                    agg = aggregate_of(info, dataset, table, &table.table.quoted(), Some(touched)),
                )
            };
            removals.push(format!(
                "IF TG_OP = 'DELETE' THEN {} ELSE {} END IF;",
                recompute(&format!("({old_groups})")),
                recompute(&format!("({old_groups} UNION {new_groups})")),
            ));
            additions.push(format!("IF TG_OP = 'INSERT' THEN {add} END IF;"));
        } else {
            let updates: Vec<String> =
                std::iter::once("row_count = r.row_count - d.row_count".to_owned())
                    .chain(info.partials.iter().map(|p| {
                        let c = quote_ident(&p.column());
                        match p.kind {
                            PartialKind::Sum => {
                                format!("{c} = coalesce(r.{c}, 0) - coalesce(d.{c}, 0)")
                            }
                            _ => format!("{c} = r.{c} - d.{c}"),
                        }
                    }))
                    .collect();
            removals.push(format!(
                "UPDATE {r} AS r SET {updates} FROM ({agg}) AS d({data}) WHERE {same_rd};
                 DELETE FROM {r} AS r USING ({groups}) AS t({keys}) WHERE {same_rt} AND r.row_count = 0;",
                updates = updates.join(", "),
                agg = aggregate_of(info, dataset, table, "clue_old", None),
                data = data.join(", "),
                same_rd = same("r", "d"),
                groups = groups_of(info, dataset, table, "clue_old"),
                keys = keys.join(", "),
                same_rt = same("r", "t"),
            ));
            additions.push(add);
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
