//! `clue import-data`: the peers/000 files with their known totals, the fast
//! and validated paths, and every kind of bad input.

use std::io::Write;

use rust_decimal::Decimal;

use crate::helpers::{TestDb, peer_file, scratch_dir, write_file};

const HEADER: &str =
    "product_id,product_name,region,sales_date,quantity_sold,sales_amount,unit_price";

async fn db_with_sales_report() -> TestDb {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    db
}

async fn totals(db: &TestDb) -> (i64, i64, Decimal) {
    let row = db
        .client()
        .await
        .query_one("SELECT count(*), coalesce(sum(quantity_sold), 0)::int8, coalesce(sum(sales_amount), 0) FROM sales_report", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[tokio::test]
async fn fast_path_loads_prototype_file_with_known_totals_and_makes_its_partition() {
    let db = db_with_sales_report().await;
    let out = db
        .clue(&[
            "import-data",
            "--csv_path",
            peer_file("sales_data.csv").to_str().unwrap(),
            "-t",
            "sales_report",
        ])
        .ok();
    assert!(
        out.stdout
            .contains("Imported 20 row(s) into public.sales_report"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("Created partition(s): sales_report_2025_04."),
        "{}",
        out.stdout
    );
    assert_eq!(totals(&db).await, (20, 845, dec("70575.00")));
    // Every row sits in the April partition, which has the prototype's indexes.
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM sales_report_2025_04")
            .await,
        20
    );
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM sales_report_other")
            .await,
        0
    );
    let indexes = db
        .strings(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'sales_report_2025_04' ORDER BY 1",
        )
        .await;
    assert_eq!(
        indexes,
        [
            "sales_report_2025_04_pkey",
            "sales_report_2025_04_product_name_idx",
            "sales_report_2025_04_region_idx"
        ]
    );
    let by_product: Vec<(i32, Decimal)> = db
        .client()
        .await
        .query(
            "SELECT product_id, sum(sales_amount) FROM sales_report GROUP BY 1 ORDER BY 2 DESC",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        by_product,
        [
            (1001, dec("30000.00")),
            (1003, dec("14400.00")),
            (1002, dec("12300.00")),
            (1004, dec("7500.00")),
            (1005, dec("6375.00"))
        ]
    );
    let job: (String, i64, i64) = {
        let r = db
            .client()
            .await
            .query_one(
                "SELECT status, rows_loaded, rows_rejected FROM clue.imports",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(job, ("completed".to_owned(), 20, 0));
}

#[tokio::test]
async fn fast_path_aborts_on_the_first_bad_value_and_leaves_nothing() {
    let db = db_with_sales_report().await;
    db.import(peer_file("sales_data_2.csv"))
        .fails_with(4, "sales_data_2.csv, line 4, column 6 (sales_amount): \"xxxx\" is not a number; nothing was loaded");
    assert_eq!(totals(&db).await.0, 0);
    let failed: (String, String) = {
        let r = db
            .client()
            .await
            .query_one("SELECT status, error FROM clue.imports", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(failed.0, "failed");
    assert!(failed.1.contains("line 4"), "{}", failed.1);
}

#[tokio::test]
async fn validated_path_loads_good_rows_and_logs_bad_ones() {
    let db = db_with_sales_report().await;
    let out = db
        .clue(&[
            "import-data",
            "--csv_path",
            peer_file("sales_data_2.csv").to_str().unwrap(),
            "--schema_path",
            peer_file("sales_data.yaml").to_str().unwrap(),
            "--table",
            "sales_report",
        ])
        .ok();
    assert!(out.stdout.contains("Imported 18 row(s)"), "{}", out.stdout);
    assert!(out.stdout.contains("Rejected 2 row(s)"), "{}", out.stdout);
    let logged: Vec<(i64, i64, String, String, String, String)> = db
        .client()
        .await
        .query("SELECT line_number, record_number, column_name, raw_value, rule, raw_record FROM validation_logs ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(
        logged,
        [
            (
                4,
                3,
                "sales_amount".into(),
                "xxxx".into(),
                "type".into(),
                "1003,WidgetC,East,2025-04-03,40,xxxx,80.00".into()
            ),
            (
                5,
                4,
                "unit_price".into(),
                "yyy".into(),
                "type".into(),
                "1001,WidgetA,West,2025-04-04,60,6000.00,yyy".into()
            ),
        ]
    );
    // 5000.07 and 1800.50 are kept exactly.
    let (rows, qty, revenue) = totals(&db).await;
    assert_eq!((rows, qty), (18, 845 - 40 - 60));
    assert_eq!(
        revenue,
        dec("70575.00") - dec("3200.00") - dec("6000.00") + dec("0.07") + dec("0.50")
    );
    // The log links to the import job.
    let linked: i64 = db.value("SELECT count(*) FROM validation_logs v JOIN clue.imports i USING (import_id) WHERE i.rows_rejected = 2").await;
    assert_eq!(linked, 2);
}

#[tokio::test]
async fn rich_schema_rules_reject_with_their_rule_names() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    let schema = write_file(
        dir.path(),
        "rules.yaml",
        "product_id: {type: int, min: 1000}\nproduct_name: {type: str, max_length: 10, pattern: \"^Widget\"}\nregion: {type: str, allowed: [North, South, East, West]}\nsales_date: {type: date, format: \"%d/%m/%Y\", min: 2020-01-01}\nquantity_sold: {type: int, min: 1}\nsales_amount: {type: float, min: 0}\nunit_price: float\n",
    );
    let csv = write_file(
        dir.path(),
        "rules.csv",
        format!(
            "{HEADER}\n1001,WidgetA,North,01/04/2025,5,500.00,100.00\n999,WidgetB,North,02/04/2025,1,1,1\n1002,Gizmo,North,02/04/2025,1,1,1\n1003,WidgetC,Mars,02/04/2025,1,1,1\n1004,WidgetD,East,2025-04-02,1,1,1\n1005,WidgetE,East,02/04/2025,0,-1,1\n1006,WidgetFFFFF,East,02/04/2025,1,1,1\n1007,WidgetG,West,03/04/2025,2,,1\n"
        ),
    );
    db.clue(&[
        "import-data",
        "-c",
        csv.to_str().unwrap(),
        "-t",
        "sales_report",
        "-p",
        schema.to_str().unwrap(),
    ])
    .ok();
    let logged: Vec<(i64, String, String)> = db
        .client()
        .await
        .query(
            "SELECT record_number, column_name, rule FROM validation_logs ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expect: Vec<(i64, String, String)> = [
        (2, "product_id", "min"),
        (3, "product_name", "pattern"),
        (4, "region", "allowed"),
        (5, "sales_date", "type"),
        (6, "quantity_sold", "min"),
        (6, "sales_amount", "min"),
        (7, "product_name", "max_length"),
        (8, "sales_amount", "required"),
    ]
    .iter()
    .map(|(n, c, r)| (*n, c.to_string(), r.to_string()))
    .collect();
    assert_eq!(logged, expect);
    assert_eq!(totals(&db).await.0, 1);
    assert_eq!(
        db.value::<chrono::NaiveDate>("SELECT sales_date FROM sales_report")
            .await,
        chrono::NaiveDate::from_ymd_opt(2025, 4, 1).unwrap()
    );
}

#[tokio::test]
async fn same_file_twice_is_refused_unless_forced() {
    let db = db_with_sales_report().await;
    let file = peer_file("sales_data.csv");
    let args = [
        "import-data",
        "-c",
        file.to_str().unwrap(),
        "-t",
        "sales_report",
    ];
    db.clue(&args).ok();
    db.clue(&args).fails_with(
        4,
        "was already imported into public.sales_report (import #1",
    );
    assert_eq!(totals(&db).await.0, 20);
    let mut forced = args.to_vec();
    forced.push("--force");
    db.clue(&forced).ok();
    assert_eq!(totals(&db).await, (40, 1690, dec("141150.00")));
}

#[tokio::test]
async fn concurrent_loads_of_the_same_file_load_it_once() {
    let db = db_with_sales_report().await;
    let file = peer_file("sales_data.csv");
    let files = vec![file.clone(), file.clone(), file];
    let codes: Vec<i32> = crate::helpers::import_concurrently(&db, &files)
        .into_iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 0 || *c == 4), "{codes:?}");
    assert_eq!(totals(&db).await, (20, 845, dec("70575.00")));
}

#[tokio::test]
async fn concurrent_loads_into_new_months_all_land() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    // Four files, each spanning the same three new months.
    let files: Vec<_> = (0..4)
        .map(|i| {
            let mut body = format!("{HEADER}\n");
            for d in 0..90 {
                let date =
                    chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(d);
                body.push_str(&format!("{},P{i},North,{date},1,10.00,10.00\n", 2000 + i));
            }
            write_file(dir.path(), &format!("f{i}.csv"), body)
        })
        .collect();
    for run in crate::helpers::import_concurrently(&db, &files) {
        run.ok();
    }
    assert_eq!(totals(&db).await, (360, 360, dec("3600.00")));
    let parts: i64 = db
        .value("SELECT count(*) FROM pg_inherits WHERE inhparent = 'sales_report'::regclass")
        .await;
    assert_eq!(parts, 4, "three month partitions plus the default");
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM sales_report_2026_02")
            .await,
        4 * 28
    );
}

#[tokio::test]
async fn gzip_files_load_like_plain_ones() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    let path = dir.path().join("sales.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(&std::fs::read(peer_file("sales_data.csv")).unwrap())
        .unwrap();
    gz.finish().unwrap();
    db.import(path).ok();
    assert_eq!(totals(&db).await, (20, 845, dec("70575.00")));
}

#[tokio::test]
async fn generated_demo_data_loads_with_exact_totals() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    let path = dir.path().join("demo.csv");
    let generated = crate::helpers::clue_with(
        &[
            "generate-sales",
            "--rows",
            "20000",
            "--out",
            path.to_str().unwrap(),
            "--seed",
            "9",
        ],
        &[],
    )
    .ok();
    let again = dir.path().join("again.csv");
    crate::helpers::clue_with(
        &[
            "generate-sales",
            "--rows",
            "20000",
            "--out",
            again.to_str().unwrap(),
            "--seed",
            "9",
        ],
        &[],
    )
    .ok();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap(),
        "same seed, same file"
    );
    let summary = clue::demo::generate::generate_sales(
        &clue::demo::generate::GenerateOptions {
            rows: 20000,
            seed: 9,
            ..Default::default()
        },
        std::io::sink(),
    )
    .unwrap();
    assert!(
        generated
            .stderr
            .contains(&format!("total revenue {}", summary.total_revenue)),
        "{}",
        generated.stderr
    );
    let schema = peer_file("sales_data.yaml");
    db.clue(&[
        "import-data",
        "-c",
        path.to_str().unwrap(),
        "-t",
        "sales_report",
        "-p",
        schema.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        totals(&db).await,
        (20000, summary.total_quantity, summary.total_revenue)
    );
    // Two years of months, each in its own partition.
    assert_eq!(
        db.value::<i64>(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'sales_report'::regclass"
        )
        .await,
        25
    );
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM sales_report_other")
            .await,
        0
    );
}

/// Bad files: each gets its specific error, exit code 4, and nothing loads.
#[tokio::test]
async fn bad_files_are_refused_before_anything_loads() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    let schema = peer_file("sales_data.yaml");
    let good_row = "1001,WidgetA,North,2025-04-01,50,5000.00,100.00";
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        ("empty.csv", b"".to_vec(), false, "the file is empty"),
        ("blank.csv", b"\n\n  \n".to_vec(), false, "the file is empty"),
        ("binary.csv", vec![0x50, 0x4b, 0x03, 0x04, 0, 0, 0x14, 0, 0, 0], false, "not a CSV text file (it contains binary data)"),
        ("utf16.csv", vec![0xff, 0xfe, b'p', 0, b'r', 0], false, "it is UTF-16 encoded"),
        (
            "latin1.csv",
            [format!("{HEADER}\n{good_row}\n1002,Caf").into_bytes(), vec![0xe9], b",North,2025-04-02,1,1.00,1.00\n".to_vec()].concat(),
            false,
            "latin1.csv, line 3, column 2: not valid UTF-8 text",
        ),
        (
            "unknown_column.csv",
            format!("product_id,product_name,region,sales_date,quantity_sold,sales_amount,price\n{good_row}\n").into_bytes(),
            false,
            "header column 7 (\"price\") is not a column of table public.sales_report",
        ),
        (
            "missing_required.csv",
            b"product_id,product_name,region,sales_date\n1001,A,North,2025-04-01\n".to_vec(),
            false,
            "header lacks column(s) quantity_sold, sales_amount, unit_price that table public.sales_report requires",
        ),
        (
            "schema_mismatch.csv",
            b"product_id,product_name,region,sales_date,quantity_sold,sales_amount\n1001,A,North,2025-04-01,1,1.00\n".to_vec(),
            true,
            "header does not match the schema: it lacks schema column(s) unit_price",
        ),
        (
            "duplicate_header.csv",
            format!("{HEADER},region\n").into_bytes(),
            false,
            "header names column \"region\" twice",
        ),
        ("json.csv", b"{\"product_id\": 1001, \"region\": \"North\"}\n".to_vec(), false, "is not a column of table public.sales_report"),
        (
            "short_row.csv",
            format!("{HEADER}\n{good_row}\n1002,WidgetB,South\n").into_bytes(),
            false,
            "short_row.csv, line 3: expected 7 fields as in the header, found 3",
        ),
        (
            "huge_record.csv",
            format!("{HEADER}\n1001,{},North,2025-04-01,1,1.00,1.00\n", "x".repeat(2 << 20)).into_bytes(),
            true,
            "line 2: record is larger than 1 MiB",
        ),
        (
            "unterminated.csv",
            format!("{HEADER}\n{good_row}\n1002,\"WidgetB,South,2025-04-02,1,1.00,1.00\n").into_bytes(),
            false,
            "line 3: expected 7 fields as in the header, found 2",
        ),
        (
            "overflow.csv",
            format!("{HEADER}\n1001,A,North,2025-04-01,1,123456789012.00,1.00\n").into_bytes(),
            false,
            "column 6 (sales_amount): 123456789012.00 does not fit numeric(10,2)",
        ),
        (
            "too_long.csv",
            format!("{HEADER}\n1001,{},North,2025-04-01,1,1.00,1.00\n", "n".repeat(300)).into_bytes(),
            false,
            "column 2 (product_name): is 300 characters long; the column holds at most 255",
        ),
    ];
    for (name, content, with_schema, expect) in cases {
        let path = write_file(dir.path(), name, content);
        let mut args = vec![
            "import-data",
            "-c",
            path.to_str().unwrap(),
            "-t",
            "sales_report",
        ];
        if with_schema {
            args.extend(["-p", schema.to_str().unwrap()]);
        }
        let run = db.clue(&args);
        assert_eq!(run.code, 4, "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains(expect),
            "{name}: expected {expect:?} in\n{}",
            run.stderr
        );
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "{name}: one-line error expected:\n{}",
            run.stderr
        );
    }
    assert_eq!(totals(&db).await.0, 0);
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM validation_logs")
            .await,
        0
    );
}

#[tokio::test]
async fn wrong_field_count_is_a_reject_in_validated_mode() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    let csv = write_file(
        dir.path(),
        "short.csv",
        format!("{HEADER}\n1001,A,North,2025-04-01,1,1.00,1.00\n1002,B,South\n"),
    );
    db.clue(&[
        "import-data",
        "-c",
        csv.to_str().unwrap(),
        "-t",
        "sales_report",
        "-p",
        peer_file("sales_data.yaml").to_str().unwrap(),
    ])
    .ok();
    let r = db
        .client()
        .await
        .query_one(
            "SELECT line_number, column_name, rule, reason, raw_record FROM validation_logs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 3);
    assert_eq!(r.get::<_, Option<String>>(1), None);
    assert_eq!(r.get::<_, String>(2), "field_count");
    assert_eq!(
        r.get::<_, String>(3),
        "expected 7 fields as in the header, found 3"
    );
    assert_eq!(r.get::<_, String>(4), "1002,B,South");
    assert_eq!(totals(&db).await.0, 1);
}

#[tokio::test]
async fn custom_error_tables_are_created_and_foreign_ones_refused() {
    let db = db_with_sales_report().await;
    let file = peer_file("sales_data_2.csv");
    let schema = peer_file("sales_data.yaml");
    db.clue(&[
        "import-data",
        "-c",
        file.to_str().unwrap(),
        "-t",
        "sales_report",
        "-p",
        schema.to_str().unwrap(),
        "-e",
        "april_rejects",
    ])
    .ok();
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM april_rejects").await,
        2
    );
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM validation_logs")
            .await,
        0
    );
    // The prototype's own shape (all columns as text) is not clue's log.
    db.client()
        .await
        .batch_execute("CREATE TABLE old_logs (product_id text, sales_amount text)")
        .await
        .unwrap();
    db.clue(&[
        "import-data",
        "-c",
        file.to_str().unwrap(),
        "-t",
        "sales_report",
        "-p",
        schema.to_str().unwrap(),
        "-e",
        "old_logs",
        "--force",
    ])
    .fails_with(
        4,
        "error table old_logs: exists but is not a clue validation log",
    );
    db.clue(&[
        "import-data",
        "-c",
        file.to_str().unwrap(),
        "-t",
        "sales_report",
        "-p",
        schema.to_str().unwrap(),
        "-e",
        "x; drop table sales_report",
        "--force",
    ])
    .fails_with(4, "is not a table name clue accepts");
    assert_eq!(totals(&db).await.0, 18);
}

#[tokio::test]
async fn missing_inputs_and_bad_schemas_are_named() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    let csv = peer_file("sales_data.csv");
    db.clue(&[
        "import-data",
        "-c",
        "/nonexistent/sales.csv",
        "-t",
        "sales_report",
    ])
    .fails_with(4, "cannot read /nonexistent/sales.csv");
    db.clue(&[
        "import-data",
        "-c",
        csv.to_str().unwrap(),
        "-t",
        "no_such_table",
    ])
    .fails_with(4, "table \"no_such_table\" does not exist");
    db.clue(&[
        "import-data",
        "-c",
        csv.to_str().unwrap(),
        "-t",
        "sales_report",
        "-p",
        "/nonexistent/s.yaml",
    ])
    .fails_with(4, "cannot read schema /nonexistent/s.yaml");
    let bad = write_file(
        dir.path(),
        "bad.yaml",
        "product_id: integer\nregion: {type: str, allowed: North}\n",
    );
    db.clue(&[
        "import-data",
        "-c",
        csv.to_str().unwrap(),
        "-t",
        "sales_report",
        "-p",
        bad.to_str().unwrap(),
    ])
    .fails_with(
        4,
        "bad.yaml: column \"region\", field \"allowed\": must be a list such as [North, South]",
    );
    // clap itself rejects a missing required flag with exit code 2.
    db.clue(&["import-data", "-t", "sales_report"])
        .fails_with(2, "--csv_path");
    assert_eq!(totals(&db).await.0, 0);
}

#[tokio::test]
async fn a_load_into_a_partition_is_a_load_into_the_dataset() {
    let db = db_with_sales_report().await;
    db.clue(&[
        "create-monthly-partitions",
        "-t",
        "sales_report",
        "-s",
        "2025",
        "-e",
        "2025",
    ])
    .ok();
    db.clue(&[
        "import-data",
        "-c",
        peer_file("sales_data.csv").to_str().unwrap(),
        "-t",
        "sales_report_2025_04",
    ])
    .ok();
    // The rollups took the rows: verify agrees and the report counts them.
    let verify = db.clue(&["rollups", "verify"]).ok();
    assert!(!verify.stdout.contains("differ"), "{}", verify.stdout);
    let answer = db
        .clue(&[
            "query",
            r#"{"dataset": "sales_report", "measures": ["quantity", "revenue"]}"#,
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&answer.stdout).unwrap();
    assert_eq!(v["rows"][0]["quantity"], 845, "{}", answer.stdout);
    assert!(
        answer.stdout.contains("\"revenue\": 70575.00"),
        "{}",
        answer.stdout
    );
}

#[tokio::test]
async fn dates_at_the_ends_of_the_calendar_load_or_are_rejected_by_line() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    let csv = write_file(
        dir.path(),
        "ends.csv",
        format!(
            "{HEADER}\n1,A,North,0000-01-01,1,1.00,1.00\n2,B,North,9999-12-31,2,2.00,1.00\n3,C,North,2025-04-01,3,3.00,1.00\n"
        ),
    );
    // Without a schema, PostgreSQL can store all three: they load.
    db.import(&csv).ok();
    assert_eq!(totals(&db).await, (3, 6, dec("6.00")));
    for p in [
        "sales_report_0000_01",
        "sales_report_9999_12",
        "sales_report_2025_04",
    ] {
        assert_eq!(
            db.value::<i64>(&format!("SELECT count(*) FROM {p}")).await,
            1,
            "{p}"
        );
    }
    // With a schema whose min refuses year 0, just that row is rejected,
    // and no partition is made for it.
    let db = db_with_sales_report().await;
    let schema = write_file(
        dir.path(),
        "rules.yaml",
        "product_id: int\nproduct_name: str\nregion: str\nsales_date: {type: date, min: 2000-01-01}\nquantity_sold: int\nsales_amount: float\nunit_price: float\n",
    );
    let out = db
        .clue(&[
            "import-data",
            "-c",
            csv.to_str().unwrap(),
            "-t",
            "sales_report",
            "-p",
            schema.to_str().unwrap(),
        ])
        .ok();
    assert!(out.stdout.contains("Imported 2 row(s)"), "{}", out.stdout);
    let rejects = db
        .strings("SELECT concat_ws(' ', line_number, column_name, rule) FROM validation_logs")
        .await;
    assert_eq!(rejects, ["2 sales_date min"]);
    assert!(
        !db.value::<bool>("SELECT to_regclass('sales_report_0000_01') IS NOT NULL")
            .await,
        "no partition for a rejected row"
    );
}

#[tokio::test]
async fn months_whose_rows_were_all_rejected_keep_no_partition() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    // The March row has a bad amount: rejected by the schema.
    let csv = write_file(
        dir.path(),
        "mixed.csv",
        format!("{HEADER}\n1,A,North,2025-03-05,1,oops,1.00\n2,B,North,2025-04-01,2,2.00,1.00\n"),
    );
    let out = db
        .clue(&[
            "import-data",
            "-c",
            csv.to_str().unwrap(),
            "-t",
            "sales_report",
            "-p",
            peer_file("sales_data.yaml").to_str().unwrap(),
        ])
        .ok();
    assert!(
        out.stdout
            .contains("Created partition(s): sales_report_2025_04."),
        "{}",
        out.stdout
    );
    assert!(
        !db.value::<bool>("SELECT to_regclass('sales_report_2025_03') IS NOT NULL")
            .await
    );
}

#[tokio::test]
async fn failures_before_loading_are_recorded_and_fifos_refused() {
    let db = db_with_sales_report().await;
    let dir = scratch_dir();
    let empty = write_file(dir.path(), "empty.csv", "");
    db.import(&empty).fails_with(4, "the file is empty");
    let header = write_file(dir.path(), "header.csv", "colour\nred\n");
    db.import(&header).fails_with(4, "is not a column of table");
    let fifo = dir.path().join("pipe.csv");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    db.import(&fifo).fails_with(
        4,
        "pipe.csv is a FIFO (named pipe), not a regular file; clue reads a file twice",
    );
    let recorded = db
        .strings("SELECT file_name || ' ' || status FROM clue.imports ORDER BY import_id")
        .await;
    assert_eq!(
        recorded,
        ["empty.csv failed", "header.csv failed", "pipe.csv failed"]
    );
}

#[tokio::test]
async fn a_role_without_privileges_is_a_database_failure_not_bad_input() {
    let db = db_with_sales_report().await;
    let role = format!("clue_noprivs_{}", uuid::Uuid::new_v4().simple());
    db.client()
        .await
        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
        .await
        .unwrap();
    let run = crate::helpers::clue_with(
        &[
            "import-data",
            "-c",
            peer_file("sales_data.csv").to_str().unwrap(),
            "-t",
            "sales_report",
        ],
        &[("CLUE_DATABASE_URL", &db.url_as(&role))],
    );
    db.client()
        .await
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("permission denied"), "{}", run.stderr);
    assert!(!run.stderr.contains("db error"), "{}", run.stderr);
}

#[tokio::test]
async fn a_writer_that_may_not_add_triggers_loads_and_says_what_others_need() {
    let db = db_with_sales_report().await;
    // The owner made the months; the writer may write, not alter, the table.
    db.clue(&[
        "create-monthly-partitions",
        "-t",
        "sales_report",
        "-s",
        "2020",
        "-e",
        "2026",
    ])
    .ok();
    let role = format!("clue_notrigger_{}", uuid::Uuid::new_v4().simple());
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT CREATE ON DATABASE {db} TO {role};
             CREATE SCHEMA IF NOT EXISTS clue_rollup;
             GRANT USAGE, CREATE ON SCHEMA public, clue, clue_rollup, analytics TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, clue, analytics TO {role};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public, clue TO {role};",
            db = db.name
        ))
        .await
        .unwrap();
    let run = crate::helpers::clue_with(
        &[
            "import-data",
            "-c",
            peer_file("sales_data.csv").to_str().unwrap(),
            "-t",
            "sales_report",
        ],
        &[("CLUE_DATABASE_URL", &db.url_as(&role))],
    );
    let keepers: i64 = db
        .value("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'clue\\_keep\\_%'")
        .await;
    db.client()
        .await
        .batch_execute(&format!(
            "REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .await
        .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("no rollup keepers"), "{}", run.stderr);
    assert_eq!(keepers, 0);
}

/// A small gzip file that expands to one huge record is refused as soon as
/// the record passes the limit, holding little memory (a probe's 2 MB file
/// expanding to one 2 GB record took an import to 4.1 GB).
#[tokio::test]
async fn a_gzip_bomb_is_refused_before_it_is_held() {
    use std::io::Write;
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    let dir = crate::helpers::scratch_dir();
    let path = dir.path().join("bomb.csv.gz");
    let member = |bytes: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    };
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&member(
        b"product_id,product_name,region,sales_date,quantity_sold,sales_amount,unit_price\n1,",
    ))
    .unwrap();
    // 600 MB of one field: gzip members of 1 MiB of 'a' each, concatenated.
    let chunk = member(&vec![b'a'; 1 << 20]);
    for _ in 0..600 {
        file.write_all(&chunk).unwrap();
    }
    drop(file);
    assert!(std::fs::metadata(&path).unwrap().len() < 2_000_000);
    // The import's own peak memory, read while it runs.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clue"))
        .args([
            "import-data",
            "-c",
            path.to_str().unwrap(),
            "-t",
            "sales_report",
        ])
        .env("CLUE_DATABASE_URL", &db.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("bomb.csv.gz, line 2: record is larger than 1 MiB"),
        "{stderr}"
    );
    assert!(
        peak_kib < 300 * 1024,
        "the import held {} MiB",
        peak_kib / 1024
    );
}
