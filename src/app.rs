//! Start-up by role: a writer migrates the schema and reconciles every
//! dataset's rollups with its definition; a reader (a server on a replica)
//! only checks that the schema is at this build's version.

use crate::domain::dataset::Catalog;
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
