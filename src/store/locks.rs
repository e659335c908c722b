//! The one registry of advisory-lock keys, so no two uses of a lock can
//! collide. Two-part keys `(class, id)` use `pg_advisory_xact_lock(int4, int4)`;
//! the single migration key uses the `int8` form.

use tokio_postgres::GenericClient;

/// Serializes schema migrations between clue processes that start together
/// (session lock, `int8` space).
pub const MIGRATIONS: i64 = 0x636c_7565_0001; // "clue" 1

/// Class of the per-table locks serializing partition changes (id: the table's oid).
const PARTITIONS: i32 = 1_668_052_325;

/// Class of the per-dataset locks serializing rollup writers (id: hash of the dataset's name).
/// (Public: the rollup keepers' trigger functions take it in SQL.)
pub const ROLLUPS: i32 = 1_668_052_326;

/// Class of the per-dataset locks serializing installs of its rollup keepers
/// (id: hash of the dataset's name).
const KEEPERS: i32 = 1_668_052_328;

/// Class of the session locks held by a running sync (id: hash of the source).
const SYNC: i32 = 1_668_052_327;

/// Class of the lock serializing warehouse batch loads (one id).
const WAREHOUSE: i32 = 1_668_052_329;

/// Serializes partition changes of one table until the transaction ends.
pub async fn lock_partitions(
    tx: &impl GenericClient,
    table_oid: u32,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2::oid::int)",
        &[&PARTITIONS, &table_oid],
    )
    .await?;
    Ok(())
}

/// Serializes the writers of one dataset's rollups (builds, and loads
/// applying their deltas) until the transaction ends.
pub async fn lock_rollups(
    tx: &impl GenericClient,
    dataset: &str,
) -> Result<(), tokio_postgres::Error> {
    lock_named(tx, ROLLUPS, dataset).await
}

/// A transaction lock of `class` on a name (hashed into the id).
async fn lock_named(
    tx: &impl GenericClient,
    class: i32,
    name: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&class, &name],
    )
    .await?;
    Ok(())
}

/// Takes the session lock of a source's sync without waiting: `false` when
/// another sync of that source holds it. Released when the session ends.
pub async fn try_lock_sync(
    client: &impl GenericClient,
    source: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&SYNC, &source],
        )
        .await?
        .get(0))
}

/// Serializes installs of one dataset's rollup keepers until the
/// transaction ends.
pub async fn lock_keepers(
    tx: &impl GenericClient,
    dataset: &str,
) -> Result<(), tokio_postgres::Error> {
    lock_named(tx, KEEPERS, dataset).await
}

/// Serializes warehouse loads (batches go in date order, one at a time)
/// until the transaction ends.
pub async fn lock_warehouse(tx: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    lock_named(tx, WAREHOUSE, "batches").await
}
