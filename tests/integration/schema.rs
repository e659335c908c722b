//! `create-schema` and `create-monthly-partitions`, including moving rows
//! out of the default partition and clue's own migrations.

use crate::helpers::{TestDb, scratch_dir, write_file};

async fn partitions(db: &TestDb, table: &str) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn builtin_schema_is_partitioned_and_rerun_is_a_clear_error() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    let strategy: String = db.value("SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'sales_report'::regclass").await;
    assert_eq!(strategy, "r");
    assert_eq!(
        partitions(&db, "sales_report").await,
        ["sales_report_other"]
    );
    let pk: String = db.value("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'sales_report'::regclass AND contype = 'p'").await;
    assert_eq!(pk, "PRIMARY KEY (sales_date, sale_id)");
    db.clue(&["create-schema"]).fails_with(
        4,
        "built-in sales_report schema:4:1: ERROR: relation \"sales_report\" already exists",
    );
}

#[tokio::test]
async fn scripts_run_in_one_transaction_and_failures_name_line_and_column() {
    let db = TestDb::new().await;
    let dir = scratch_dir();
    let good = write_file(
        dir.path(),
        "good.sql",
        "BEGIN;\n-- two tables; and a function\nCREATE TABLE a (id int);\nCREATE TABLE b (note text DEFAULT 'x;y');\nCREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql;\nCOMMIT;\n",
    );
    let out = db
        .clue(&["create-schema", "--source", good.to_str().unwrap()])
        .ok();
    assert!(out.stdout.contains("Ran 3 statement(s)"), "{}", out.stdout);
    assert_eq!(db.value::<i32>("SELECT f()").await, 1);

    let bad = write_file(
        dir.path(),
        "bad.sql",
        "CREATE TABLE c (id int);\n\nINSERT INTO c VALUES (1);\nSELECT * FROM\n   missing_table;\n",
    );
    db.clue(&["create-schema", "-s", bad.to_str().unwrap()])
        .fails_with(
            4,
            "bad.sql:5:4: ERROR: relation \"missing_table\" does not exist; nothing was applied",
        );
    let c_exists: Option<String> = db.value("SELECT to_regclass('c')::text").await;
    assert_eq!(c_exists, None, "the first statement must be rolled back");

    let syntax = write_file(
        dir.path(),
        "syntax.sql",
        "CREATE TABLE d (id int);\nCREAT TABLE e (id int);\n",
    );
    db.clue(&["create-schema", "-s", syntax.to_str().unwrap()])
        .fails_with(
            4,
            "syntax.sql:2:1: ERROR: syntax error at or near \"CREAT\"",
        );
    let meta = write_file(
        dir.path(),
        "meta.sql",
        "\\connect other\nCREATE TABLE f (id int);\n",
    );
    db.clue(&["create-schema", "-s", meta.to_str().unwrap()])
        .fails_with(
            4,
            "meta.sql:1:1: psql meta-command \"\\\\connect\" is not SQL",
        );
    let open = write_file(
        dir.path(),
        "open.sql",
        "CREATE FUNCTION g() RETURNS int AS $body$ SELECT 1;\n",
    );
    db.clue(&["create-schema", "-s", open.to_str().unwrap()])
        .fails_with(
            4,
            "unterminated dollar-quoted string $body$ starting at line 1",
        );
    db.clue(&["create-schema", "-s", "/nonexistent.sql"])
        .fails_with(4, "cannot read /nonexistent.sql");
    let binary = write_file(dir.path(), "binary.sql", [0xff, 0xfe, 0x00]);
    db.clue(&["create-schema", "-s", binary.to_str().unwrap()])
        .fails_with(4, "not UTF-8 text");
}

#[tokio::test]
async fn monthly_partitions_with_indexes_idempotent() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    let out = db
        .clue(&[
            "create-monthly-partitions",
            "-t",
            "sales_report",
            "-s",
            "2025",
            "-e",
            "2025",
        ])
        .ok();
    assert!(
        out.stdout
            .contains("created 12 monthly partition(s), 0 already present"),
        "{}",
        out.stdout
    );
    let mut expect: Vec<String> = (1..=12)
        .map(|m| format!("sales_report_2025_{m:02}"))
        .collect();
    expect.push("sales_report_other".into());
    assert_eq!(partitions(&db, "sales_report").await, expect);
    let bounds: String = db.value("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'sales_report_2025_12'").await;
    assert_eq!(bounds, "FOR VALUES FROM ('2025-12-01') TO ('2026-01-01')");
    let idx: i64 = db.value("SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'sales_report_2025_%' AND indexname ~ '_(product_name|region)_idx$'").await;
    assert_eq!(idx, 24);
    let again = db
        .clue(&[
            "create-monthly-partitions",
            "-t",
            "sales_report",
            "-s",
            "2024",
            "-e",
            "2025",
        ])
        .ok();
    assert!(
        again
            .stdout
            .contains("created 12 monthly partition(s), 12 already present"),
        "{}",
        again.stdout
    );
    assert_eq!(partitions(&db, "sales_report").await.len(), 25);
}

#[tokio::test]
async fn creating_a_month_moves_its_rows_out_of_the_default_partition() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    // Rows written while only the default partition existed.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO sales_report (product_id, product_name, region, sales_date, quantity_sold, sales_amount, unit_price)
             SELECT 1000 + g % 7, 'P' || g % 7, 'North', date '2024-12-20' + g, 1, 2.50, 2.50 FROM generate_series(0, 39) g",
        )
        .await
        .unwrap();
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM sales_report_other")
            .await,
        40
    );
    // Rollups (and their keepers) exist before the move: moving rows
    // between partitions must leave them as they are.
    db.clue(&["rollups", "rebuild", "sales_report"]).ok();
    let out = db
        .clue(&[
            "create-monthly-partitions",
            "-t",
            "sales_report",
            "-s",
            "2025",
            "-e",
            "2025",
        ])
        .ok();
    // 2024-12-20..2024-12-31 stay (12 rows); 28 January rows move.
    assert!(
        out.stdout
            .contains("moved 28 row(s) out of the default partition"),
        "{}",
        out.stdout
    );
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM sales_report_other")
            .await,
        12
    );
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM sales_report_2025_01")
            .await,
        28
    );
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM sales_report").await,
        40
    );
    let ids_unique: bool = db
        .value("SELECT count(DISTINCT sale_id) = 40 FROM sales_report")
        .await;
    assert!(ids_unique);
    let verify = db.clue(&["rollups", "verify", "sales_report"]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
}

#[tokio::test]
async fn partition_command_refuses_bad_requests() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE plain (id int, d date);
             CREATE TABLE by_region (region text, d date) PARTITION BY LIST (region);
             CREATE TABLE by_number (n int) PARTITION BY RANGE (n);",
        )
        .await
        .unwrap();
    let check = |args: &[&str], needle: &str| {
        let mut full = vec!["create-monthly-partitions"];
        full.extend_from_slice(args);
        db.clue(&full).fails_with(4, needle);
    };
    check(
        &["-t", "sales_report", "-s", "2025", "-e", "2024"],
        "end year 2024 is before start year 2025",
    );
    check(
        &["-t", "sales_report", "-s", "0", "-e", "2024"],
        "years must be between 1 and 9999, got 0",
    );
    check(
        &["-t", "sales_report", "-s", "1000", "-e", "2024"],
        "spans more than 200 years",
    );
    check(
        &["-t", "nope", "-s", "2025", "-e", "2025"],
        "table \"nope\" does not exist",
    );
    check(
        &["-t", "plain", "-s", "2025", "-e", "2025"],
        "table public.plain is not partitioned",
    );
    check(
        &["-t", "by_region", "-s", "2025", "-e", "2025"],
        "partitioned by list, not by range of one date or timestamp column",
    );
    check(
        &["-t", "by_number", "-s", "2025", "-e", "2025"],
        "partitioned by range, not by range of one date or timestamp column",
    );
    check(
        &[
            "-t",
            "sales_report; drop table plain",
            "-s",
            "2025",
            "-e",
            "2025",
        ],
        "is not a table name clue accepts",
    );
    assert_eq!(
        partitions(&db, "sales_report").await,
        ["sales_report_other"]
    );
}

#[tokio::test]
async fn migrations_apply_once_when_processes_start_together() {
    let db = TestDb::new().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let target = db.target();
            tokio::spawn(async move {
                clue::app::open(&target, clue::app::Role::Writer)
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for o in opens {
        o.await.unwrap().expect("open");
    }
    let applied: i64 = db.value("SELECT count(*) FROM clue.schema_history").await;
    assert_eq!(applied, 11, "each of the eleven migrations exactly once");
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM clue.imports").await,
        0
    );
}

#[tokio::test]
async fn tables_partitioned_by_timestamps_get_utc_months_and_load_by_instant() {
    let db = TestDb::new().await;
    let dir = scratch_dir();
    let ddl = write_file(
        dir.path(),
        "events.sql",
        "CREATE TABLE events (id int NOT NULL, at timestamptz NOT NULL, n int NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE stamps (id int NOT NULL, at timestamp NOT NULL) PARTITION BY RANGE (at);",
    );
    db.clue(&["create-schema", "--source", ddl.to_str().unwrap()])
        .ok();
    // A server whose default zone is not UTC (and not on whole hours).
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} SET TimeZone = 'Asia/Kolkata'",
            db.name
        ))
        .await
        .unwrap();
    let out = db
        .clue(&[
            "create-monthly-partitions",
            "-t",
            "events",
            "-s",
            "2024",
            "-e",
            "2024",
        ])
        .ok();
    assert!(
        out.stdout.contains(
            "created 12 monthly partition(s), 0 already present, default partition events_other"
        ),
        "{}",
        out.stdout
    );
    // Months in UTC, whatever the server's time zone.
    let client = db.client().await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let bound: String = client
        .query_one(
            "SELECT pg_get_expr(c.relpartbound, c.oid, true) FROM pg_class c
              WHERE c.relname = 'events_2024_02'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        bound,
        "FOR VALUES FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00')"
    );
    // Running it again finds every month present.
    let again = db
        .clue(&[
            "create-monthly-partitions",
            "-t",
            "events",
            "-s",
            "2024",
            "-e",
            "2024",
        ])
        .ok();
    assert!(
        again
            .stdout
            .contains("created 0 monthly partition(s), 12 already present"),
        "{}",
        again.stdout
    );
    // A row of a month not yet partitioned waits in the default partition,
    // and moves when its month is created.
    db.client()
        .await
        .batch_execute("INSERT INTO events VALUES (0, '2025-03-05 12:00:00+00', 1)")
        .await
        .unwrap();
    let moved = db
        .clue(&[
            "create-monthly-partitions",
            "-t",
            "events",
            "-s",
            "2025",
            "-e",
            "2025",
        ])
        .ok();
    assert!(
        moved
            .stdout
            .contains("moved 1 row(s) out of the default partition"),
        "{}",
        moved.stdout
    );
    // Offsets decide the month: 23:30 at -01:00 on Jan 31 is Feb 1 in UTC.
    let csv = write_file(
        dir.path(),
        "events.csv",
        "id,at,n\n1,2024-01-31T23:30:00-01:00,5\n2,2024-01-31T23:30:00+01:00,7\n3,2026-06-01 00:00:00,1\n",
    );
    let out = db
        .clue(&["import-data", "-c", csv.to_str().unwrap(), "-t", "events"])
        .ok();
    assert!(
        out.stdout.contains("Created partition(s): events_2026_06."),
        "{}",
        out.stdout
    );
    let placed = db
        .strings(
            "SELECT concat_ws(' ', tableoid::regclass, id) FROM events WHERE id > 0 ORDER BY id",
        )
        .await;
    assert_eq!(
        placed,
        ["events_2024_02 1", "events_2024_01 2", "events_2026_06 3"]
    );
    // A timestamp without zone is partitioned by its own calendar.
    db.clue(&[
        "create-monthly-partitions",
        "-t",
        "stamps",
        "-s",
        "2024",
        "-e",
        "2024",
    ])
    .ok();
    let bound: String = db
        .value(
            "SELECT pg_get_expr(c.relpartbound, c.oid, true) FROM pg_class c WHERE c.relname = 'stamps_2024_12'",
        )
        .await;
    assert_eq!(
        bound,
        "FOR VALUES FROM ('2024-12-01 00:00:00') TO ('2025-01-01 00:00:00')"
    );
}
