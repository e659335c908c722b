//! `clue warehouse`: prototype 002's daily batches into raw, quarantine,
//! a type 2 customer dimension, facts and KPI marts: a customer moving
//! city, a late fact, every quality rule, the replay, the same batch twice,
//! a failure in the middle, gzip, and the KPIs against the prototype's SQL.

use std::path::{Path, PathBuf};

use crate::helpers::{Run, TestDb};

/// A directory of batch files.
struct Batches {
    dir: tempfile::TempDir,
}

impl Batches {
    fn new() -> Batches {
        Batches {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes the day's two files (header lines included in `customers` and
    /// `sales` as given) and returns their paths.
    fn day(&self, date: &str, customers: &str, sales: &str) -> (PathBuf, PathBuf) {
        let c = self.dir.path().join(format!("customers_{date}.csv"));
        let s = self.dir.path().join(format!("sales_{date}.csv"));
        std::fs::write(&c, customers).unwrap();
        std::fs::write(&s, sales).unwrap();
        (c, s)
    }
}

fn load(db: &TestDb, files: &(PathBuf, PathBuf), extra: &[&str]) -> Run {
    let mut args = vec![
        "warehouse",
        "load",
        "--customers",
        files.0.to_str().unwrap(),
        "--sales",
        files.1.to_str().unwrap(),
    ];
    args.extend(extra);
    db.clue(&args)
}

const C1: &str = "ID,Name,City\n1,Jean Dupont,Paris\n2,Ana Lima,Lisbon\n";
const S1: &str = "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n\
1,Laptop,999.90,10,2025-02-28 10:00:00\n\
2,Mouse,19.90,11,2025-02-27 11:00:00\n";

#[tokio::test]
async fn a_customer_moving_city_gets_a_version_and_every_fact_finds_its_own() {
    let (db, b) = (TestDb::new().await, Batches::new());
    load(&db, &b.day("2025-03-01", C1, S1), &[]).ok();
    // Jean moves to Lyon on the 2nd; a sale of the 1st arrives late, with the 2nd's batch.
    let day2 = b.day(
        "2025-03-02",
        "ID , Name , City\n1,  jean   DUPONT ,lyon\n2,Ana Lima,Lisbon\n",
        "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n\
         1,laptop,10.00,10,2025-03-02 09:00:00\n\
         1,Laptop,5.00,10,2025-03-01 18:00:00\n",
    );
    let out = load(&db, &day2, &[]).ok().stdout;
    assert!(
        out.contains(
            "2 customer row(s): 0 new, 1 changed (a new version each), 1 unchanged, 0 quarantined"
        ),
        "{out}"
    );
    assert_eq!(
        db.strings(
            "SELECT concat_ws('|', customer_id, customer_name, city, is_active, valid_from, coalesce(valid_to::text, 'open'))
               FROM dw.dim_customer ORDER BY customer_id, valid_from"
        )
        .await,
        [
            "1|Jean Dupont|Paris|f|-infinity|2025-03-02 00:00:00",
            "1|Jean Dupont|Lyon|t|2025-03-02 00:00:00|open",
            "2|Ana Lima|Lisbon|t|-infinity|open",
        ]
    );
    assert_eq!(
        db.strings(
            "SELECT concat_ws('|', f.transaction_date, c.city, p.product, f.sales_amount, f.batch_date)
               FROM dw.fact_sales f JOIN dw.dim_customer c USING (customer_key)
               JOIN dw.dim_product p USING (product_key)
              WHERE f.customer_id = 1 ORDER BY f.transaction_date"
        )
        .await,
        [
            "2025-02-28 10:00:00|Paris|Laptop|999.90|2025-03-01",
            "2025-03-01 18:00:00|Paris|Laptop|5.00|2025-03-02",
            "2025-03-02 09:00:00|Lyon|Laptop|10.00|2025-03-02",
        ]
    );
    // The database itself refuses a second current version and overlapping ones.
    let client = db.client().await;
    let second_current = client
        .execute(
            "INSERT INTO dw.dim_customer (customer_id, customer_name, city, valid_from, batch_date)
             VALUES (2, 'Ana', 'Porto', '2025-03-05', '2025-03-05')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        second_current.code(),
        Some(&tokio_postgres::error::SqlState::EXCLUSION_VIOLATION),
        "{second_current}"
    );
    let overlap = client
        .execute(
            "INSERT INTO dw.dim_customer (customer_id, customer_name, city, is_active, valid_from, valid_to, batch_date)
             VALUES (1, 'Jean', 'Nice', false, '2025-02-01', '2025-03-01 12:00', '2025-03-05')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        overlap.code(),
        Some(&tokio_postgres::error::SqlState::EXCLUSION_VIOLATION)
    );
    // Facts are partitioned by month.
    assert_eq!(
        db.strings("SELECT tableoid::regclass::text FROM dw.fact_sales GROUP BY 1 ORDER BY 1")
            .await,
        ["dw.fact_sales_2025_02", "dw.fact_sales_2025_03"]
    );
}

#[tokio::test]
async fn every_quality_rule_quarantines_with_its_code_and_the_replay_loads_what_now_passes() {
    let (db, b) = (TestDb::new().await, Batches::new());
    let day1 = b.day(
        "2025-03-01",
        "ID,Name,City\n1,Jean,Paris\n2,Ana,Lisbon\n3,Bo,\n2,Ana,Lisbon\nx,Bad,Town\n,Nobody,Oslo\n4,Too,Many,Fields\n",
        "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n\
         1,Laptop,999.90,10,2025-02-28 10:00:00\n\
         2,Mouse,19.90,10,2025-02-27 11:00:00\n\
         2,Mouse,19.90,10,2025-02-27 11:00:00\n\
         9,Mouse,5,10,2025-02-27 11:00:00\n\
         1,Mouse,-3,10,2025-02-27 11:00:00\n\
         1,Mouse,250000,10,2025-02-27 11:00:00\n\
         1,Mouse,3,10,2099-02-27 11:00:00\n\
         ,Mouse,3,10,2025-02-27 11:00:00\n\
         1,Mouse,,10,2025-02-27 11:00:00\n\
         1,Mouse,3,10,\n\
         1,Mouse,3,10,yesterday\n\
         1,Mouse,1.234,10,2025-02-27 11:00:00\n\
         1,,3,10,2025-02-27 11:00:00\n\
         1,Mouse,3,,2025-02-27 11:00:00\n",
    );
    let out = load(&db, &day1, &["--json"]).ok().stdout;
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rules: Vec<String> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["source"].as_str().unwrap(),
                r["rule"].as_str().unwrap(),
                r["count"]
            )
        })
        .collect();
    let mut rules = rules;
    rules.sort();
    assert_eq!(
        rules,
        [
            "customers bad_id 1",
            "customers duplicate_id 1",
            "customers missing_city 1",
            "customers missing_id 1",
            "customers unreadable_row 1",
            "sales above_max_sales_amount 1",
            "sales bad_sales_amount 1",
            "sales bad_transaction_date 1",
            "sales below_min_sales_amount 1",
            "sales duplicate 1",
            "sales future_transaction_date 1",
            "sales missing_customer_id 1",
            "sales missing_product 1",
            "sales missing_sales_amount 1",
            "sales missing_shop_id 1",
            "sales missing_transaction_date 1",
            "sales unknown_customer 1",
        ]
    );
    assert_eq!(report["sales"]["loaded"], 2);
    assert_eq!(report["sales"]["quarantined"], 12);
    assert_eq!(report["customers"]["new"], 2);
    // An example keeps the row as received.
    let unknown = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "unknown_customer")
        .unwrap();
    assert_eq!(unknown["examples"][0]["line"], 5);
    assert_eq!(unknown["examples"][0]["record"]["CustomerID"], "9");
    // The raw layer keeps every row as received.
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM raw.customer_sales")
            .await,
        14
    );
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM raw.customer").await,
        7
    );

    // Customer 9 arrives; a quarantined amount is fixed by hand; the replay
    // loads both, and the rest stay with their codes.
    let day2 = b.day(
        "2025-03-02",
        "ID,Name,City\n9,New Guy,Oslo\n",
        "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n",
    );
    load(&db, &day2, &[]).ok();
    db.client()
        .await
        .batch_execute(
            "UPDATE dw.quarantine SET record = jsonb_set(record, '{SalesAmount}', '\"30\"')
              WHERE rule = 'below_min_sales_amount'",
        )
        .await
        .unwrap();
    let replay = db.clue(&["warehouse", "replay-quarantine"]).ok().stdout;
    assert!(
        replay.contains("Released 2 quarantined sale(s)"),
        "{replay}"
    );
    assert!(
        replay.contains("still quarantined, duplicate: 1"),
        "{replay}"
    );
    assert_eq!(
        db.strings(
            "SELECT concat_ws('|', customer_id, sales_amount, batch_date) FROM dw.fact_sales ORDER BY customer_id, sales_amount"
        )
        .await,
        [
            "1|30.00|2025-03-01",
            "1|999.90|2025-03-01",
            "2|19.90|2025-03-01",
            "9|5.00|2025-03-01",
        ]
    );
    // The marts moved with the replayed facts.
    assert_eq!(
        db.strings(
            "SELECT concat_ws('|', customer_id, year, month, monthly_amount, ytd_amount, ytd_percentage)
               FROM dw.customer_ytd_spending ORDER BY customer_id, year, month"
        )
        .await,
        ["1|2025|2|1029.90|1029.90|100.00", "2|2025|2|19.90|19.90|100.00", "9|2025|2|5.00|5.00|100.00"]
    );
    // A second replay has nothing more to load.
    let again = db.clue(&["warehouse", "replay-quarantine"]).ok().stdout;
    assert!(again.contains("Released 0 quarantined"), "{again}");
    assert_no_orphans(&db).await;
    // Replacing day 2 would take customer 9 from a replayed sale of day 1.
    load(&db, &day2, &["--replace"]).fails_with(
        4,
        "batch 2025-03-02 cannot be replaced: 1 sale(s) of earlier batches, released from the quarantine since, belong to customers it brought",
    );
}

/// Every fact's keys lead to a row of their dimension (the load's joins
/// are the only writer of facts; there is no FOREIGN KEY to check them).
async fn assert_no_orphans(db: &TestDb) {
    let orphans: i64 = db
        .value(
            "SELECT count(*) FROM dw.fact_sales f
              WHERE NOT EXISTS (SELECT 1 FROM dw.dim_customer c
                                 WHERE c.customer_key = f.customer_key AND c.customer_id = f.customer_id
                                   AND c.valid_from <= f.transaction_date
                                   AND (c.valid_to IS NULL OR f.transaction_date < c.valid_to))
                 OR NOT EXISTS (SELECT 1 FROM dw.dim_product p WHERE p.product_key = f.product_key)
                 OR NOT EXISTS (SELECT 1 FROM dw.dim_shop h WHERE h.shop_key = f.shop_key)",
        )
        .await;
    assert_eq!(
        orphans, 0,
        "facts whose keys lead nowhere, or to another version"
    );
}

#[tokio::test]
async fn a_batch_loads_once_in_date_order_and_replace_reloads_the_latest() {
    let (db, b) = (TestDb::new().await, Batches::new());
    let day1 = b.day("2025-03-01", C1, S1);
    load(&db, &day1, &[]).ok();
    let again = load(&db, &day1, &[]).ok().stdout;
    assert!(
        again.contains("Batch 2025-03-01 is loaded already from these files; nothing changed"),
        "{again}"
    );
    let count = async || {
        db.strings(
            "SELECT (SELECT count(*) FROM dw.dim_customer) || '|' || (SELECT count(*) FROM dw.fact_sales)
                    || '|' || (SELECT count(*) FROM raw.customer_sales)",
        )
        .await
    };
    assert_eq!(count().await, ["2|2|2"]);
    // Other files under the same date.
    let other = b.day(
        "2025-03-01",
        "ID,Name,City\n1,Jean Dupont,Nice\n",
        "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n1,Phone,5,10,2025-02-28 12:00:00\n",
    );
    load(&db, &other, &[]).fails_with(4, "batch 2025-03-01 was loaded from other files");
    let day2 = b.day(
        "2025-03-02",
        "ID,Name,City\n1,Jean Dupont,Lyon\n",
        "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n1,Phone,7,10,2025-03-01 12:00:00\n",
    );
    load(&db, &day2, &[]).ok();
    // An older date, and replacing a batch that is not the latest, are refused.
    let older = b.day("2025-02-27", C1, S1);
    load(&db, &older, &[]).fails_with(
        4,
        "batch 2025-02-27 is older than the latest loaded batch 2025-03-02",
    );
    load(&db, &other, &["--replace", "--batch-date", "2025-03-01"])
        .fails_with(4, "only the latest batch (2025-03-02) can be replaced");
    // Replacing the latest undoes it whole: Jean is back in Paris until the new file moves him.
    let day2_fixed = b.day(
        "2025-03-02",
        "ID,Name,City\n1,Jean Dupont,Marseille\n",
        "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n1,Phone,8,10,2025-03-01 12:00:00\n",
    );
    load(&db, &day2_fixed, &["--replace"]).ok();
    assert_eq!(
        db.strings(
            "SELECT concat_ws('|', city, coalesce(valid_to::text, 'open')) FROM dw.dim_customer
              WHERE customer_id = 1 ORDER BY valid_from"
        )
        .await,
        ["Paris|2025-03-02 00:00:00", "Marseille|open"]
    );
    assert_eq!(
        db.strings(
            "SELECT concat_ws('|', customer_id, year, month, monthly_amount) FROM mart.customer_monthly_spending ORDER BY customer_id, year, month"
        )
        .await,
        ["1|2025|2|999.90", "1|2025|3|8.00", "2|2025|2|19.90"]
    );
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM raw.customer_sales WHERE batch_date = '2025-03-02'")
            .await,
        1
    );
    assert_no_orphans(&db).await;
}

#[tokio::test]
async fn a_failure_in_the_middle_leaves_the_warehouse_as_it_was() {
    let (db, b) = (TestDb::new().await, Batches::new());
    // clue's schema, then a fault at the last step of every load.
    db.clue(&["warehouse", "refresh"]).ok();
    db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'the disk is full'; END $$;
             CREATE TRIGGER fail BEFORE INSERT ON mart.customer_last_purchase
                FOR EACH STATEMENT EXECUTE FUNCTION fail();",
        )
        .await
        .unwrap();
    let day1 = b.day("2025-03-01", C1, &format!("{S1}x,Mouse,1,1,2025-02-01\n"));
    let failed = load(&db, &day1, &[]);
    assert_ne!(failed.code, 0, "{failed:?}");
    for table in [
        "raw.customer",
        "raw.customer_sales",
        "dw.dim_customer",
        "dw.dim_product",
        "dw.fact_sales",
        "dw.quarantine",
        "mart.customer_monthly_spending",
        "clue.warehouse_batches",
    ] {
        assert_eq!(
            db.value::<i64>(&format!("SELECT count(*) FROM {table}"))
                .await,
            0,
            "{table}"
        );
    }
    db.client()
        .await
        .batch_execute("DROP TRIGGER fail ON mart.customer_last_purchase")
        .await
        .unwrap();
    load(&db, &day1, &[]).ok();
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM dw.fact_sales").await,
        2
    );
}

#[tokio::test]
async fn gzip_files_load_like_plain_ones_and_bad_files_are_named() {
    let (plain, zipped, b) = (TestDb::new().await, TestDb::new().await, Batches::new());
    let day1 = b.day("2025-03-01", C1, S1);
    load(&plain, &day1, &[]).ok();
    let gz = |path: &Path| {
        let out = path.with_extension("csv.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&out).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut enc, &std::fs::read(path).unwrap()).unwrap();
        enc.finish().unwrap();
        out
    };
    load(&zipped, &(gz(&day1.0), gz(&day1.1)), &[]).ok();
    let facts = "SELECT concat_ws('|', customer_id, sales_amount, transaction_date) FROM dw.fact_sales ORDER BY 1";
    assert_eq!(plain.strings(facts).await, zipped.strings(facts).await);
    assert_eq!(plain.strings(facts).await.len(), 2);

    let bad_header = b.day("2025-03-03", "ID,Name\n1,Jean\n", S1);
    load(&zipped, &bad_header, &[]).fails_with(
        4,
        "customers_2025-03-03.csv: line 1: the header has no column City (it has ID, Name; expected ID, Name, City)",
    );
    let undated = (b.dir.path().join("c.csv"), b.dir.path().join("s.csv"));
    std::fs::write(&undated.0, C1).unwrap();
    std::fs::write(&undated.1, S1).unwrap();
    load(&zipped, &undated, &[]).fails_with(4, "no batch date: pass --batch-date");
    load(&zipped, &undated, &["--batch-date", "2025-03-01"])
        .fails_with(4, "was loaded from other files");
}

#[tokio::test]
async fn the_kpis_equal_the_prototypes_sql_on_the_same_data() {
    let (db, b) = (TestDb::new().await, Batches::new());
    let mut sales = String::from("CustomerID,Product,SalesAmount,ShopId,TransactionDate\n");
    for i in 0..120 {
        sales.push_str(&format!(
            "{},P{},{}.{:02},{},2024-{:02}-{:02} 10:{:02}:00\n",
            1 + i % 4,
            i % 7,
            10 + i * 3,
            i % 100,
            1 + i % 3,
            1 + (i * 5) % 12,
            1 + i % 28,
            i % 60
        ));
    }
    load(
        &db,
        &b.day(
            "2025-01-01",
            "ID,Name,City\n1,A,X\n2,B,Y\n3,C,Z\n4,D,W\n",
            &sales,
        ),
        &[],
    )
    .ok();
    // A move, so the prototype's join through versions is exercised.
    load(
        &db,
        &b.day(
            "2025-01-02",
            "ID,Name,City\n2,B,Moved\n",
            "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n2,P1,4.00,1,2025-01-01 12:00:00\n",
        ),
        &[],
    )
    .ok();
    // Prototype 002's KPI view, made to run (schema, types, grouping by the
    // customer rather than each of its versions).
    let prototype = db
        .strings(
            "WITH m AS (
                 SELECT dc.customer_id, max(dc.customer_name) AS customer_name,
                        EXTRACT(YEAR FROM fs.transaction_date)::int AS year,
                        EXTRACT(MONTH FROM fs.transaction_date)::int AS month,
                        SUM(fs.sales_amount) AS monthly_amount
                   FROM dw.fact_sales fs JOIN dw.dim_customer dc ON fs.customer_key = dc.customer_key
                  GROUP BY dc.customer_id, 3, 4)
             SELECT concat_ws('|', customer_id, customer_name, year, month, monthly_amount,
                    SUM(monthly_amount) OVER (PARTITION BY customer_id, year ORDER BY month),
                    ROUND(SUM(monthly_amount) OVER (PARTITION BY customer_id, year ORDER BY month) * 100.0
                          / SUM(monthly_amount) OVER (PARTITION BY customer_id, year), 2))
               FROM m ORDER BY customer_id, year, month",
        )
        .await;
    let ours = db
        .strings(
            "SELECT concat_ws('|', customer_id, customer_name, year, month, monthly_amount, ytd_amount, ytd_percentage)
               FROM dw.customer_ytd_spending ORDER BY customer_id, year, month",
        )
        .await;
    assert_eq!(ours, prototype);
    assert_eq!(ours.len(), 13, "{ours:?}");
    let days_prototype = db
        .strings(
            "SELECT concat_ws('|', dc.customer_id, (CURRENT_DATE - MAX(fs.transaction_date)::date))
               FROM dw.dim_customer dc LEFT JOIN dw.fact_sales fs
                 ON fs.customer_key = dc.customer_key AND fs.transaction_date < CURRENT_DATE + 1
              GROUP BY dc.customer_id ORDER BY 1",
        )
        .await;
    let days_ours = db
        .strings(
            "SELECT concat_ws('|', customer_id, days_since_last_purchase)
               FROM mart.customer_days_since_last_purchase ORDER BY 1",
        )
        .await;
    assert_eq!(days_ours, days_prototype);
    // A refresh recomputes the same figures.
    db.clue(&["warehouse", "refresh"]).ok();
    let refreshed = db
        .strings(
            "SELECT concat_ws('|', customer_id, customer_name, year, month, monthly_amount, ytd_amount, ytd_percentage)
               FROM dw.customer_ytd_spending ORDER BY customer_id, year, month",
        )
        .await;
    assert_eq!(refreshed, ours);
}

#[tokio::test]
async fn generated_batches_load_the_same_from_parquet_as_from_csv() {
    let (csv_db, parquet_db, dir) = (
        TestDb::new().await,
        TestDb::new().await,
        tempfile::tempdir().unwrap(),
    );
    let generate = |format: &[&str], out: &Path| {
        let mut args = vec![
            "warehouse",
            "generate",
            "--days",
            "3",
            "--customers",
            "200",
            "--sales-per-day",
            "2000",
            "--change-rate",
            "0.1",
            "--fault-rate",
            "0",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(format);
        csv_db.clue(&args).ok();
    };
    let (csv_dir, parquet_dir) = (dir.path().join("csv"), dir.path().join("parquet"));
    generate(&[], &csv_dir);
    generate(&["--parquet"], &parquet_dir);
    for day in ["2025-03-01", "2025-03-02", "2025-03-03"] {
        for (db, dir, ext) in [
            (&csv_db, &csv_dir, "csv"),
            (&parquet_db, &parquet_dir, "parquet"),
        ] {
            let files = (
                dir.join(format!("customers_{day}.{ext}")),
                dir.join(format!("sales_{day}.{ext}")),
            );
            load(db, &files, &[]).ok();
        }
    }
    for sql in [
        "SELECT concat_ws('|', f.customer_id, p.product, h.shop_id, f.sales_amount, f.transaction_date, c.city, f.batch_date)
           FROM dw.fact_sales f JOIN dw.dim_customer c USING (customer_key)
           JOIN dw.dim_product p USING (product_key) JOIN dw.dim_shop h USING (shop_key)
          ORDER BY f.transaction_date, f.customer_id, p.product, f.sales_amount",
        "SELECT concat_ws('|', customer_id, customer_name, city, valid_from, valid_to)
           FROM dw.dim_customer ORDER BY customer_id, valid_from",
        // Lines differ (a Parquet file's rows count from 1, under no header),
        // and so do spellings (19.9 for 19.90): compare the values.
        "SELECT concat_ws('|', batch_date, rule, record->>'CustomerID', record->>'Product',
                (record->>'SalesAmount')::numeric(12,2), record->>'ShopId', (record->>'TransactionDate')::timestamp)
           FROM dw.quarantine ORDER BY 1",
        "SELECT concat_ws('|', customer_id, year, month, monthly_amount, ytd_amount)
           FROM dw.customer_ytd_spending ORDER BY customer_id, year, month",
    ] {
        let (a, b) = (csv_db.strings(sql).await, parquet_db.strings(sql).await);
        assert!(!a.is_empty(), "{sql}");
        assert_eq!(a, b, "{sql}");
    }
    // The generated days carry moves, late sales, repeats and customers who arrive late.
    assert!(
        csv_db
            .value::<i64>("SELECT count(*) FROM dw.dim_customer WHERE valid_to IS NOT NULL")
            .await
            > 10
    );
    assert!(
        csv_db
            .value::<i64>(
                "SELECT count(*) FROM dw.fact_sales WHERE transaction_date < batch_date - 1"
            )
            .await
            > 0
    );
    assert_no_orphans(&csv_db).await;
    let rules = csv_db
        .strings("SELECT DISTINCT rule FROM dw.quarantine ORDER BY 1")
        .await;
    assert_eq!(rules, ["duplicate", "unknown_customer"]);
    let replay = csv_db.clue(&["warehouse", "replay-quarantine"]).ok().stdout;
    assert!(
        replay.contains("Released 8 quarantined sale(s)"),
        "{replay}"
    );
}

#[tokio::test]
async fn the_watcher_loads_each_pair_once_in_date_order_and_waits_out_a_bad_one() {
    let (db, b) = (TestDb::new().await, Batches::new());
    b.day(
        "2025-03-02",
        "ID,Name,City\n1,Jean Dupont,Lyon\n",
        "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n1,Phone,7,10,2025-03-01 12:00:00\n",
    );
    b.day("2025-03-01", C1, S1);
    // A day whose sales file has not landed yet.
    std::fs::write(b.dir.path().join("customers_2025-03-03.csv"), C1).unwrap();
    let dir = b.dir.path().to_str().unwrap();
    let once = db.clue(&["warehouse", "watch", dir, "--once"]).ok().stdout;
    assert!(once.contains("Loaded 2 batch(es)"), "{once}");
    assert_eq!(
        db.strings(
            "SELECT batch_date::text FROM clue.warehouse_batches ORDER BY loaded_at, batch_date"
        )
        .await,
        ["2025-03-01", "2025-03-02"]
    );
    // Jean's move on the 2nd was applied after the 1st's batch.
    assert_eq!(
        db.value::<i64>("SELECT count(*) FROM dw.dim_customer WHERE customer_id = 1")
            .await,
        2
    );
    let again = db.clue(&["warehouse", "watch", dir, "--once"]).ok().stdout;
    assert!(again.contains("Loaded 0 batch(es)"), "{again}");

    // Running: a bad sales file lands for the 3rd, is reported once, then fixed.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_clue"))
        .args(["warehouse", "watch", dir, "--interval", "1"])
        .env("CLUE_DATABASE_URL", &db.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sales3 = b.dir.path().join("sales_2025-03-03.csv");
    std::fs::write(&sales3, "CustomerID,Product,Amount\n1,Phone,3\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    std::fs::write(
        &sales3,
        "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n2,Phone,3,10,2025-03-02 09:00:00\n",
    )
    .unwrap();
    let mut loaded = false;
    for _ in 0..100 {
        if db
            .value::<i64>(
                "SELECT count(*) FROM clue.warehouse_batches WHERE batch_date = '2025-03-03'",
            )
            .await
            == 1
        {
            loaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(loaded, "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr
            .matches("batch not loaded; waiting for its files to change")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("the header has no column SalesAmount"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("batch loaded").count(), 1, "{stderr}");
}

#[tokio::test]
async fn the_kpis_and_batch_reports_are_served_as_json_and_csv() {
    let (db, b) = (TestDb::new().await, Batches::new());
    load(&db, &b.day("2025-03-01", C1, S1), &[]).ok();
    load(
        &db,
        &b.day(
            "2025-03-02",
            "ID,Name,City\n1,Jean Dupont,Lyon\n",
            "CustomerID,Product,SalesAmount,ShopId,TransactionDate\n\
             1,Phone,7.50,10,2025-03-01 12:00:00\n\
             1,Phone,-1,10,2025-03-01 12:00:00\n",
        ),
        &[],
    )
    .ok();
    let app = crate::helpers::serve_with_timeout(db, None).await;
    let json = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()
    };
    let ytd = json(app.get("/kpis/customer-ytd-spending?customer_id=1").await).await;
    assert_eq!(
        ytd,
        serde_json::json!([
            {"customer_id": 1, "customer_name": "Jean Dupont", "year": 2025, "month": 2,
             "monthly_amount": 999.90, "ytd_amount": 999.90, "ytd_percentage": 99.26},
            {"customer_id": 1, "customer_name": "Jean Dupont", "year": 2025, "month": 3,
             "monthly_amount": 7.50, "ytd_amount": 1007.40, "ytd_percentage": 100.00}
        ])
    );
    let csv = app
        .get("/kpis/customer-ytd-spending?year=2025&format=csv")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv,
        "customer_id,customer_name,year,month,monthly_amount,ytd_amount,ytd_percentage\n\
         1,Jean Dupont,2025,2,999.90,999.90,99.26\n\
         1,Jean Dupont,2025,3,7.50,1007.40,100.00\n\
         2,Ana Lima,2025,2,19.90,19.90,100.00\n"
    );
    // Days since the last purchase: as of a date before the latest purchase,
    // the facts answer; a customer with none by then has null.
    let days = json(
        app.get("/kpis/days-since-last-purchase?as_of=2025-02-28")
            .await,
    )
    .await;
    assert_eq!(
        days,
        serde_json::json!([
            {"customer_id": 1, "customer_name": "Jean Dupont", "reference_date": "2025-02-28", "days_since_last_purchase": 0},
            {"customer_id": 2, "customer_name": "Ana Lima", "reference_date": "2025-02-28", "days_since_last_purchase": 1}
        ])
    );
    let early = json(
        app.get("/kpis/days-since-last-purchase?as_of=2025-02-27&customer_id=1")
            .await,
    )
    .await;
    assert_eq!(
        early[0]["days_since_last_purchase"],
        serde_json::Value::Null
    );
    let later = json(
        app.get("/kpis/days-since-last-purchase?as_of=2025-03-10&customer_id=1")
            .await,
    )
    .await;
    assert_eq!(later[0]["days_since_last_purchase"], 9);
    // Bad parameters are problems naming them.
    for (path, name) in [
        ("/kpis/customer-ytd-spending?year=last", "year"),
        ("/kpis/customer-ytd-spending?region=x", "region"),
        ("/kpis/days-since-last-purchase?as_of=2025-02-30", "as_of"),
        ("/warehouse/batches/yesterday", "date"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 400, "{path}");
        let problem: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            crate::helpers::invalid_params(&problem)[0].0,
            name,
            "{path}: {problem}"
        );
    }
    let list = json(app.get("/warehouse/batches").await).await;
    assert_eq!(list[0]["batch_date"], "2025-03-02");
    assert_eq!(list[0]["sales"]["loaded"], 1);
    assert_eq!(list[0]["customers"]["changed"], 1);
    assert_eq!(list[1]["batch_date"], "2025-03-01");
    let report = json(app.get("/warehouse/batches/2025-03-02").await).await;
    assert_eq!(report["rules"][0]["rule"], "below_min_sales_amount");
    assert_eq!(
        report["rules"][0]["examples"][0]["record"]["SalesAmount"],
        "-1"
    );
    assert_eq!(app.get("/warehouse/batches/2024-01-01").await.status(), 404);
}
