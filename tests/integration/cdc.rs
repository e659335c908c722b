//! `clue etl run --cdc`: prototype 004's source on a private server with
//! `wal_level = logical` (see `helpers::logical_server`), streamed into
//! clue's analytical tables on the shared one: the first copy in the slot's
//! snapshot with writes racing it, every kind of change, a transaction
//! committing late, a truncate, a stop and a kill with restarts, the slot's
//! confirmed position, `drop-slot`, and the setup errors a user meets.

use std::time::Duration;

use crate::helpers::{TestDb, clue_with, logical_server};
use crate::sync::{Source, analytical, check_in_sync, etl, holds, interrupt, spawn_clue};

const CDC: [&str; 4] = ["etl", "run", "--cdc", "--no-progress"];

/// A source with prototype 004's schema on the logical server.
async fn logical_source() -> Source {
    Source::with(TestDb::on(logical_server()).await).await
}

/// Waits (up to 20 s) until the analytical tables equal the source, then
/// checks them and the rollups.
async fn converges(clue: &TestDb, source: &Source) {
    let expected = (
        source.expected_orders().await,
        source.expected_items().await,
    );
    for _ in 0..400 {
        if analytical(clue).await == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_in_sync(clue, source).await;
}

/// A new order with one item, in a transaction of its own.
fn new_order(i: u32) -> String {
    format!(
        "INSERT INTO operations.orders (order_date, delivery_date, customer_id, status)
              VALUES ('2025-03-05', '2025-03-15', {}, 'PENDING');
         INSERT INTO operations.order_items (order_id, product_id, quanity)
              VALUES (currval('operations.orders_order_id_seq'), {}, 2);",
        1 + i % 40,
        1 + i % 15
    )
}

/// clue's recorded position and the source's confirmed one, as text.
async fn positions(clue: &TestDb, source: &Source) -> (String, String) {
    let ours: String = clue
        .value("SELECT coalesce(min(lsn)::text, 'none') FROM clue.sync_positions")
        .await;
    let theirs: String = source
        .db
        .value("SELECT coalesce(min(confirmed_flush_lsn)::text, 'none') FROM pg_replication_slots WHERE database = current_database()")
        .await;
    (ours, theirs)
}

#[tokio::test]
async fn cdc_copies_in_the_slots_snapshot_then_streams_every_change_and_resumes() {
    let (clue, source) = (TestDb::new().await, logical_source().await);
    source.seed(300).await;
    let child = spawn_clue(&clue, &source.db.url, &CDC);
    // Orders written while the slot is made and the copy runs land once
    // each: in the copy or in the stream, never both, never neither.
    for i in 0..40 {
        source.exec(&new_order(i)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    converges(&clue, &source).await;
    assert_eq!(
        clue.value::<i64>("SELECT count(*) FROM analytics.analytical_orders")
            .await,
        340
    );

    // Each kind of change, each table.
    source
        .exec("UPDATE operations.orders SET status = 'COMPLETED' WHERE order_id % 7 = 0")
        .await;
    source
        .exec("UPDATE operations.customers SET customer_name = 'Renamed ' || customer_id WHERE customer_id <= 5")
        .await;
    source
        .exec(
            "UPDATE operations.products SET unity_price = unity_price + 1 WHERE product_id = 3;
               UPDATE operations.products SET product_name = 'Gadget' WHERE product_id = 4",
        )
        .await;
    source
        .exec(
            "UPDATE operations.order_items SET order_id = 2 WHERE order_item_id = 10;
               DELETE FROM operations.order_items WHERE order_item_id = 11;
               DELETE FROM operations.order_items WHERE order_id = 5;
               DELETE FROM operations.orders WHERE order_id = 5",
        )
        .await;
    converges(&clue, &source).await;
    // Without REPLICA IDENTITY FULL a deleted or moved item carries only
    // its id; its old order is still rewritten.
    source
        .exec(
            "ALTER TABLE operations.order_items REPLICA IDENTITY DEFAULT;
               DELETE FROM operations.order_items WHERE order_item_id = 12;
               UPDATE operations.order_items SET order_id = 3 WHERE order_item_id = 13",
        )
        .await;
    converges(&clue, &source).await;

    // A transaction that began long before it commits.
    let late = source.db.client().await;
    late.batch_execute(&format!("BEGIN; {}", new_order(7)))
        .await
        .unwrap();
    source
        .exec("UPDATE operations.orders SET status = 'PROCESSING' WHERE order_id = 1")
        .await;
    converges(&clue, &source).await;
    late.batch_execute("COMMIT").await.unwrap();
    converges(&clue, &source).await;
    assert!(
        holds(
            &clue,
            "SELECT count(*) FROM analytics.analytical_orders",
            340
        )
        .await
    );

    source.exec("TRUNCATE operations.order_items").await;
    converges(&clue, &source).await;

    let (code, stderr) = interrupt(child);
    assert_eq!(code, Some(0), "{stderr}");
    // The last position is confirmed to the source as it stops.
    let mut confirmed = positions(&clue, &source).await;
    for _ in 0..50 {
        if confirmed.0 == confirmed.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        confirmed = positions(&clue, &source).await;
    }
    assert_eq!(confirmed.0, confirmed.1, "clue's position, the slot's");
    let env = [
        ("CLUE_DATABASE_URL", clue.url.as_str()),
        ("CLUE_SOURCE_DATABASE_URL", source.db.url.as_str()),
    ];
    let status = clue_with(&["etl", "status"], &env).ok().stdout;
    assert!(
        status.contains("change data capture through slot clue_")
            && status.contains(&format!("changes up to {} are in", confirmed.0))
            && status.contains("is idle; confirmed up to"),
        "{status}"
    );

    // Changes while stopped, then a kill in the middle of a stream of
    // transactions: each restart goes on from its recorded position.
    source
        .exec(&format!(
            "UPDATE operations.orders SET status = 'CANCELLED' WHERE order_id % 3 = 0; {}",
            new_order(1)
        ))
        .await;
    let mut child = spawn_clue(&clue, &source.db.url, &CDC);
    converges(&clue, &source).await;
    for i in 0..150 {
        source
            .exec(&format!(
                "UPDATE operations.orders SET status = 'REPROCESSING' WHERE order_id = {}",
                1 + i
            ))
            .await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let verify = clue.clue(&["rollups", "verify"]).ok();
    assert!(!verify.stdout.contains("differ"), "{}", verify.stdout);
    let child = spawn_clue(&clue, &source.db.url, &CDC);
    converges(&clue, &source).await;
    let (code, stderr) = interrupt(child);
    assert_eq!(code, Some(0), "{stderr}");

    let dropped = clue_with(&["etl", "drop-slot"], &env).ok().stdout;
    assert!(
        dropped.contains("Dropped the replication slot clue_"),
        "{dropped}"
    );
    assert_eq!(
        source
            .db
            .value::<i64>(
                "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
            )
            .await,
        0
    );
    assert_eq!(
        clue.value::<i64>("SELECT count(*) FROM clue.sync_positions")
            .await,
        0
    );
}

#[tokio::test]
async fn cdc_setup_errors_say_what_to_do() {
    let clue = TestDb::new().await;
    // The shared server is not reconfigured: when it is not logical, say so.
    let plain = Source::with(TestDb::new().await).await;
    if plain.db.value::<String>("SHOW wal_level").await != "logical" {
        etl(&clue, &plain, &["--cdc"]).fails_with(
            4,
            "change data capture needs logical: run ALTER SYSTEM SET wal_level = logical on the source",
        );
    }
    let source = logical_source().await;
    source.seed(20).await;
    let as_role = |role: &str, extra: &[&str]| {
        let mut args = CDC.to_vec();
        args.extend(extra);
        clue_with(
            &args,
            &[
                ("CLUE_DATABASE_URL", &clue.url),
                ("CLUE_SOURCE_DATABASE_URL", &source.db.url_as(role)),
            ],
        )
    };
    for (role, attributes) in [
        ("clue_test_reader", "LOGIN"),
        ("clue_test_streamer", "LOGIN REPLICATION"),
    ] {
        source
            .exec(&format!(
                "DO $$ BEGIN CREATE ROLE {role} {attributes}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                 GRANT USAGE ON SCHEMA operations TO {role};
                 GRANT SELECT ON ALL TABLES IN SCHEMA operations TO {role};"
            ))
            .await;
    }
    as_role("clue_test_reader", &[]).fails_with(
        4,
        "the source role clue_test_reader may not stream changes; grant it: ALTER ROLE clue_test_reader REPLICATION",
    );
    as_role("clue_test_streamer", &[]).fails_with(
        4,
        "make it as the tables' owner: CREATE PUBLICATION \"clue_sync\" FOR TABLE operations.orders",
    );
    // A publication that lacks a table.
    source
        .exec("CREATE PUBLICATION partial FOR TABLE operations.orders")
        .await;
    as_role("clue", &["--publication", "partial"]).fails_with(
        4,
        "does not publish operations.order_items; add it: ALTER PUBLICATION \"partial\" ADD TABLE operations.order_items",
    );
    // A slot clue did not make.
    let foreign = format!(
        "clue_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    source
        .exec(&format!(
            "SELECT pg_create_logical_replication_slot('{foreign}', 'pgoutput')"
        ))
        .await;
    as_role("clue", &["--slot", &foreign]).fails_with(
        4,
        &format!("the source's replication slot {foreign} is not this sync's (this clue database has no position for it)"),
    );
    as_role("clue", &["--slot", "Bad-Name"]).fails_with(4, "a slot name is 1 to 63 lower-case");
    // Replication connects over TCP only.
    clue_with(
        &CDC,
        &[
            ("CLUE_DATABASE_URL", &clue.url),
            (
                "CLUE_SOURCE_DATABASE_URL",
                &format!(
                    "host={} port=54329 user=clue dbname={}",
                    std::env::temp_dir().join("clue-test-logical/run").display(),
                    source.db.name
                ),
            ),
        ],
    )
    .fails_with(4, "change data capture connects over TCP");

    // A slot streaming to another process: retried (it may be a process
    // just stopping), said once.
    let shared = format!(
        "clue_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let first = spawn_clue(
        &clue,
        &source.db.url,
        &[&CDC[..], &["--slot", shared.as_str()]].concat(),
    );
    assert!(
        holds(
            &clue,
            "SELECT count(*) FROM analytics.analytical_orders",
            20
        )
        .await
    );
    let other = TestDb::new().await;
    let second = spawn_clue(
        &other,
        &source.db.url,
        &[&CDC[..], &["--slot", shared.as_str()]].concat(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, stderr) = interrupt(second);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr
            .matches(&format!(
                "the replication slot {shared} is in use by another process (pid"
            ))
            .count(),
        1,
        "{stderr}"
    );
    let (code, stderr) = interrupt(first);
    assert_eq!(code, Some(0), "{stderr}");

    let env = [
        ("CLUE_DATABASE_URL", clue.url.as_str()),
        ("CLUE_SOURCE_DATABASE_URL", source.db.url.as_str()),
    ];
    for slot in [foreign.as_str(), shared.as_str()] {
        let dropped = clue_with(&["etl", "drop-slot", "--slot", slot], &env)
            .ok()
            .stdout;
        assert!(
            dropped.contains(&format!("Dropped the replication slot {slot}")),
            "{dropped}"
        );
    }
    let again = clue_with(&["etl", "drop-slot", "--slot", &shared], &env)
        .ok()
        .stdout;
    assert!(
        again.contains(&format!("has no replication slot {shared}")),
        "{again}"
    );
}
