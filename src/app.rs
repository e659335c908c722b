//! Start-up by role: a writer migrates the schema and reconciles every
//! dataset's rollups with its definition; a reader (a server on a replica)
//! only checks that the schema is at this build's version.

use crate::domain::dataset::{Catalog, Dataset};
use crate::error::Error;
use crate::pg::database::Database;
use crate::settings::{DatabaseTarget, Settings};
use crate::store::migrations;
use crate::write::rollups;

/// What a process does to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Loads data, serves, migrates: may change the schema.
    Writer,
    /// Only reads; the schema must already be current.
    Reader,
}

/// The datasets of these settings (built-in and the models directory's).
pub fn catalog(settings: &Settings) -> Result<Catalog, Error> {
    Ok(Catalog::load(Some(&settings.models_dir))?)
}

/// Opens the database for `role`.
pub async fn open(target: &DatabaseTarget, role: Role) -> Result<Database, Error> {
    let db = Database::open(target).await?;
    let ready = match role {
        Role::Writer => migrations::migrate(&db).await,
        Role::Reader => migrations::check_version(&db).await,
    };
    if let Err(e) = ready {
        let _ = db.close().await;
        return Err(e.into());
    }
    Ok(db)
}

/// Deletes expired idempotency keys once an hour (a writer's chore; keys
/// without expiry are kept forever).
pub fn spawn_ledger_purge(db: &std::sync::Arc<Database>) -> tokio::task::JoinHandle<()> {
    // A weak handle: the purge never keeps the database (and an embedded
    // cluster) open after the server is done with it.
    let db = std::sync::Arc::downgrade(db);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            let Some(db) = db.upgrade() else { return };
            let purged = match db.client().await {
                Ok(client) => crate::store::ledger::purge_expired(&**client)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match purged {
                Ok(0) => {}
                Ok(n) => tracing::info!(keys = n, "expired idempotency keys purged"),
                Err(e) => tracing::warn!(error = %e, "could not purge expired idempotency keys"),
            }
        }
    })
}

/// Brings every dataset's rollups in line with its definition (new ones
/// built, changed ones rebuilt, dropped ones removed): once when a writer
/// starts, not inside every load.
pub async fn reconcile_rollups(db: &Database, catalog: &Catalog) -> Result<(), Error> {
    let mut client = db.client().await?;
    for d in &catalog.datasets {
        rollups::ensure(&mut client, d, false).await?;
    }
    Ok(())
}

/// A rollup rebuilt, or compared with its facts.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RollupOutcome {
    pub dataset: String,
    pub rollup: String,
    /// Its rows now.
    pub rows: i64,
    /// Rows that differ from the facts (always 0 after a rebuild).
    pub differences: i64,
}

/// The datasets named (`None`: every one).
fn chosen<'c>(catalog: &'c Catalog, only: Option<&str>) -> Result<Vec<&'c Dataset>, Error> {
    Ok(match only {
        Some(name) => vec![catalog.get(name)?],
        None => catalog.datasets.iter().collect(),
    })
}

/// Runs `f` on a pooled connection with no statement timeout (a rebuild
/// or a verification reads whole fact tables), restored afterwards.
async fn unbounded<T>(
    db: &Database,
    f: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut client = db.client().await?;
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .map_err(crate::error::PgError::from)?;
    let result = f(&mut client).await;
    let _ = client.batch_execute("RESET statement_timeout").await;
    result
}

/// Rebuilds the rollups of `only` (or every dataset) from the facts and
/// audits it with `actor`.
pub async fn rebuild_rollups(
    db: &Database,
    catalog: &Catalog,
    only: Option<&str>,
    actor: &str,
) -> Result<Vec<RollupOutcome>, Error> {
    let datasets = chosen(catalog, only)?;
    unbounded(db, async |client| {
        let mut out = Vec::new();
        for d in &datasets {
            let report = rollups::ensure(client, d, true).await?;
            out.extend(report.built.into_iter().map(|(rollup, rows)| RollupOutcome {
                dataset: d.name.clone(),
                rollup,
                rows,
                differences: 0,
            }));
        }
        let detail = serde_json::json!({
            "rollups": out.iter().map(|o| format!("{}.{}", o.dataset, o.rollup)).collect::<Vec<_>>(),
        });
        crate::store::keys::audit(&*client, actor, "rollups.rebuild", only.unwrap_or("*"), &detail)
            .await
            .map_err(crate::error::PgError::from)?;
        Ok(out)
    })
    .await
}

/// Compares the rollups of `only` (or every dataset) with their facts.
pub async fn verify_rollups(
    db: &Database,
    catalog: &Catalog,
    only: Option<&str>,
) -> Result<Vec<RollupOutcome>, Error> {
    let datasets = chosen(catalog, only)?;
    unbounded(db, async |client| {
        let mut out = Vec::new();
        for d in &datasets {
            for v in rollups::verify(client, d).await? {
                out.push(RollupOutcome {
                    dataset: d.name.clone(),
                    rollup: v.rollup,
                    rows: v.rows,
                    differences: v.differences,
                });
            }
        }
        Ok(out)
    })
    .await
}
