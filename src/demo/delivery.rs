//! The demo's delivery source: a database beside clue's own
//! (`clue_demo_source`, prototype 004's `operations` schema) with customers,
//! products and a month of orders, kept busy by an activity generator (new
//! orders, orders moving through their statuses, a customer renamed now and
//! then) while a continuous sync keeps the analytics tables up to date, so
//! the delivery reports move.

use std::time::Duration;

use rand::{RngExt, SeedableRng};

use crate::domain::dataset::Catalog;
use crate::ingest::sync::{self, SyncOptions};
use crate::pg::database::Database;

/// The demo source's database name.
pub const SOURCE_DB: &str = "clue_demo_source";

type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// The demo source on clue's server: created and seeded on first run.
pub async fn source(db: &Database) -> Result<tokio_postgres::Config, DemoError> {
    let client = db.client().await?;
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&SOURCE_DB],
        )
        .await?
        .get(0);
    let mut config = db.connection_config().clone();
    config.dbname(SOURCE_DB);
    if exists {
        return Ok(config);
    }
    eprintln!("Creating the demo delivery source (database {SOURCE_DB})...");
    client
        .batch_execute(&format!("CREATE DATABASE {SOURCE_DB}"))
        .await?;
    let source = connect(&config).await?;
    source
        .batch_execute(include_str!("../../sql/delivery_source.sql"))
        .await?;
    source
        .batch_execute(
            "SELECT setseed(0.4);
             INSERT INTO operations.customers (customer_name, customer_address)
                  SELECT (ARRAY['Ventures','Partners','Logistics','Foods','Retail','Studio','Labs','Trading'])[1 + i % 8]
                         || ' ' || (ARRAY['Company','LLC','Group','Co','Inc'])[1 + i % 5] || ' ' || i,
                         i || ' Market Street'
                    FROM generate_series(1, 200) i;
             INSERT INTO operations.products (product_name, barcode, unity_price, is_active)
                  SELECT (ARRAY['Box','Crate','Pallet','Envelope','Tube','Bag'])[1 + i % 6] || ' ' || i,
                         lpad(i::text, 13, '0'), round((1 + random() * 99)::numeric, 2), true
                    FROM generate_series(1, 50) i;
             INSERT INTO operations.orders (order_date, delivery_date, customer_id, status)
                  SELECT d, d + 10, 1 + floor(random() * 200)::int,
                         (ARRAY['PENDING','PENDING','PROCESSING','REPROCESSING','COMPLETED','COMPLETED','CANCELLED'])[1 + floor(random() * 7)::int]
                    FROM (SELECT current_date - 20 + floor(random() * 30)::int AS d
                            FROM generate_series(1, 5000)) x;
             INSERT INTO operations.order_items (order_id, product_id, quanity)
                  SELECT o.order_id, 1 + floor(random() * 50)::int, 1 + floor(random() * 9)::int
                    FROM operations.orders o, generate_series(1, 3) k
                   WHERE random() < 0.8 OR k = 1;",
        )
        .await?;
    Ok(config)
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, DemoError> {
    Ok(crate::pg::database::connect_direct(config).await?)
}

/// One second of activity: a few new orders with items, some orders moved
/// on to their next status, now and then a customer renamed.
async fn tick(
    source: &tokio_postgres::Client,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<(), DemoError> {
    let new_orders: i32 = rng.random_range(1..=3);
    let customer: i32 = rng.random_range(1..=200);
    source
        .execute(
            "WITH o AS (
                 INSERT INTO operations.orders (order_date, delivery_date, customer_id, status)
                      SELECT current_date, current_date + 10, $2::int + i % 7, 'PENDING'
                        FROM generate_series(1, $1::int) i
                   RETURNING order_id)
             INSERT INTO operations.order_items (order_id, product_id, quanity)
                  SELECT order_id, 1 + floor(random() * 50)::int, 1 + floor(random() * 9)::int FROM o",
            &[&new_orders, &(customer % 190)],
        )
        .await?;
    source
        .batch_execute(
            "UPDATE operations.orders SET status = CASE status
                    WHEN 'PENDING' THEN (ARRAY['PROCESSING','PROCESSING','CANCELLED'])[1 + floor(random() * 3)::int]
                    WHEN 'PROCESSING' THEN (ARRAY['COMPLETED','COMPLETED','REPROCESSING'])[1 + floor(random() * 3)::int]
                    ELSE 'COMPLETED' END
              WHERE order_id IN (SELECT order_id FROM operations.orders
                                  WHERE status IN ('PENDING','PROCESSING','REPROCESSING')
                                  ORDER BY random() LIMIT 4)",
        )
        .await?;
    if rng.random_bool(0.1) {
        source
            .execute(
                "UPDATE operations.customers SET customer_name = split_part(customer_name, ' (', 1) || ' (renamed)'
                  WHERE customer_id = $1::int",
                &[&customer],
            )
            .await?;
    }
    Ok(())
}

/// Runs the activity generator and a continuous sync (every second) until
/// `stop` resolves; a failure is logged, never fatal to the demo.
pub async fn run(
    db: std::sync::Arc<Database>,
    catalog: std::sync::Arc<Catalog>,
    config: tokio_postgres::Config,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let activity = {
        let config = config.clone();
        let mut stop = stop.clone();
        async move {
            let Ok(source) = connect(&config).await else {
                return;
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
            loop {
                if let Err(e) = tick(&source, &mut rng).await {
                    tracing::warn!(error = %e, "demo activity failed");
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let opts = SyncOptions {
        source: config,
        batch_size: 1_000,
        continuous: Some(Duration::from_secs(1)),
        cdc: None,
        progress: false,
    };
    let mut stopped = stop.clone();
    let syncing = async {
        let until = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = sync::run(&db, &catalog, &opts, until).await {
            tracing::warn!(error = %e, "demo sync stopped");
        }
    };
    tokio::join!(activity, syncing);
}
