//! Datasets, rollups and the planner against real data: the planner's answer
//! equals the fact table's for random queries (after concurrent imports), the
//! rollups verify, the cache never outlives a write, and the query API.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::helpers::{TestDb, clue_with, scratch_dir, write_file};

const HEADER: &str =
    "product_id,product_name,region,sales_date,quantity_sold,sales_amount,unit_price";
const REGIONS: [&str; 4] = ["North", "South", "East", "West"];

/// A CSV of `rows` random sales over 2024-01-01..2025-12-31 (amounts with odd cents).
fn random_csv(rng: &mut ChaCha8Rng, rows: usize) -> String {
    let mut out = format!("{HEADER}\n");
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    for _ in 0..rows {
        let product = rng.random_range(1..=40);
        let date = start + chrono::Days::new(rng.random_range(0..731));
        let qty = rng.random_range(1..=20);
        let cents: i64 = rng.random_range(1..=50_000);
        out.push_str(&format!(
            "{},P{product},{},{date},{qty},{}.{:02},{}.{:02}\n",
            1000 + product,
            REGIONS[rng.random_range(0..REGIONS.len())],
            cents * qty / 100,
            cents * qty % 100,
            cents / 100,
            cents % 100
        ));
    }
    out
}

fn random_query(rng: &mut ChaCha8Rng) -> Value {
    let all_measures = [
        "revenue",
        "quantity",
        "sales",
        "avg_unit_price",
        "min_unit_price",
        "max_unit_price",
        "products",
    ];
    // Count distinct (`products`) always reads the facts: picked less often,
    // so that most queries have a rollup to be checked against.
    let mut measures: Vec<&str> = all_measures
        .iter()
        .copied()
        .filter(|m| rng.random_bool(if *m == "products" { 0.15 } else { 0.4 }))
        .collect();
    if measures.is_empty() {
        measures.push("revenue");
    }
    let dims: Vec<&str> = ["product_id", "product_name", "region"]
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.3))
        .collect();
    let grains = [
        None,
        Some("day"),
        Some("week"),
        Some("month"),
        Some("quarter"),
        Some("year"),
    ];
    let granularity = grains[rng.random_range(0..grains.len())];
    let day = |rng: &mut ChaCha8Rng| {
        chrono::NaiveDate::from_ymd_opt(2023, 12, 20).unwrap()
            + chrono::Days::new(rng.random_range(0..760))
    };
    let (mut a, mut b) = (day(rng), day(rng));
    if a > b {
        std::mem::swap(&mut a, &mut b);
    }
    let mut q = json!({"dataset": "sales_report", "measures": measures, "dimensions": dims});
    if let Some(g) = granularity {
        q["granularity"] = json!(g);
    }
    match rng.random_range(0..4) {
        0 => {}
        1 => q["start_date"] = json!(a.to_string()),
        2 => q["end_date"] = json!(b.to_string()),
        _ => {
            q["start_date"] = json!(a.to_string());
            q["end_date"] = json!(b.to_string());
        }
    }
    let mut filters = Vec::new();
    if rng.random_bool(0.3) {
        filters.push(json!({"dimension": "region", "equals": REGIONS[rng.random_range(0..4)]}));
    }
    if rng.random_bool(0.2) {
        filters.push(json!({"dimension": "region", "in": ["North", "East"]}));
    }
    if rng.random_bool(0.2) {
        filters.push(json!({"dimension": "product_id", "min": 1005, "max": 1030}));
    }
    q["filters"] = json!(filters);
    let zones = [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Adelaide",
    ];
    q["time_zone"] = json!(zones[rng.random_range(0..zones.len())]);
    if rng.random_bool(0.2)
        && granularity.is_some()
        && q.get("start_date").is_some()
        && q.get("end_date").is_some()
    {
        q["gap_fill"] = json!(true);
    }
    q
}

async fn answer(
    db: &clue::pg::database::Database,
    catalog: &clue::domain::dataset::Catalog,
    q: &Value,
    fact: bool,
) -> clue::serve::execute::QueryResponse {
    let req: clue::serve::query::QueryRequest = serde_json::from_value(q.clone()).unwrap();
    clue::serve::execute::execute(
        db,
        catalog,
        &req,
        &clue::plan::View::everything(),
        fact,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{q}: {e}"))
}

#[tokio::test]
async fn planner_answers_equal_the_fact_table_on_random_data_and_queries() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    let dir = scratch_dir();
    let mut rng = ChaCha8Rng::seed_from_u64(20261122);
    // Concurrent imports into the same months.
    let files: Vec<_> = (0..3)
        .map(|i| write_file(dir.path(), &format!("r{i}.csv"), random_csv(&mut rng, 3000)))
        .collect();
    for run in crate::helpers::import_concurrently(&db, &files) {
        run.ok();
    }
    let verify = db.clue(&["rollups", "verify"]).ok();
    assert_eq!(
        verify.stdout.matches(": ok").count(),
        5,
        "{}",
        verify.stdout
    );

    let database = db.open().await;
    let catalog = clue::domain::dataset::Catalog::load(None).unwrap();
    let mut from_rollups = 0;
    for i in 0..160 {
        let q = random_query(&mut rng);
        let planned = answer(&database, &catalog, &q, false).await;
        let reference = answer(&database, &catalog, &q, true).await;
        assert_eq!(
            planned.rows, reference.rows,
            "query #{i} {q}\nserved from {:?}",
            planned.served_from
        );
        if planned.served_from.iter().any(|s| s.source == "rollup") {
            from_rollups += 1;
        }
    }
    assert!(
        from_rollups >= 45,
        "only {from_rollups} of 160 queries used a rollup"
    );
}

#[tokio::test]
async fn verify_finds_manual_changes_and_rebuild_repairs_them() {
    let db = TestDb::with_sales_data().await;
    // A writer that turns triggers off (as replication tools do) bypasses
    // the rollup keepers.
    db.client()
        .await
        .batch_execute(
            "BEGIN; SET LOCAL session_replication_role = replica;
             UPDATE sales_report SET sales_amount = sales_amount + 1 WHERE product_id = 1002;
             COMMIT;",
        )
        .await
        .unwrap();
    let bad = db.clue(&["rollups", "verify"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(
        bad.stdout
            .contains("sales_report_month (1 rows): 2 row(s) differ"),
        "{}",
        bad.stdout
    );
    assert!(
        bad.stderr.contains("run `clue rollups rebuild`"),
        "{}",
        bad.stderr
    );
    let rebuilt = db.clue(&["rollups", "rebuild"]).ok();
    assert!(
        rebuilt
            .stdout
            .contains("rebuilt sales_report_month (1 rows)"),
        "{}",
        rebuilt.stdout
    );
    // sales_report's five rollups, learning_log's one, sales' two and the
    // delivery datasets' three, built by the rebuild.
    assert_eq!(
        db.clue(&["rollups", "verify"])
            .ok()
            .stdout
            .matches(": ok")
            .count(),
        11
    );
    let month: rust_decimal::Decimal = db
        .value("SELECT sum_sales_amount FROM clue_rollup.sales_report_month")
        .await;
    assert_eq!(
        month,
        "70580.00".parse().unwrap(),
        "five WidgetB rows gained 1.00 each"
    );
}

#[tokio::test]
async fn rollups_are_built_for_data_loaded_before_they_existed() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    db.client()
        .await
        .batch_execute(
            "INSERT INTO sales_report (product_id, product_name, region, sales_date, quantity_sold, sales_amount, unit_price)
             VALUES (1, 'A', 'North', '2025-01-05', 2, 10.00, 5.00), (1, 'A', 'North', '2025-02-05', 1, 5.00, 5.00)",
        )
        .await
        .unwrap();
    let out = db
        .clue(&["query", r#"{"dataset": "sales_report", "measures": ["revenue", "sales"], "granularity": "month"}"#])
        .ok();
    let answer: Value = serde_json::from_str(&out.stdout).unwrap();
    // No rollup existed yet: the query answers from the facts.
    assert_eq!(answer["served_from"][0]["source"], "fact");
    assert_eq!(
        answer["rows"],
        json!([{"period": "2025-01-01", "revenue": 10.00, "sales": 1}, {"period": "2025-02-01", "revenue": 5.00, "sales": 1}])
    );
    // The next import builds them from what is there, then adds its own rows.
    db.import(crate::helpers::peer_file("sales_data.csv")).ok();
    let out = db
        .clue(&[
            "query",
            r#"{"dataset": "sales_report", "measures": ["revenue"], "granularity": "year"}"#,
        ])
        .ok();
    let answer: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(answer["served_from"][0]["name"], "sales_report_month");
    assert_eq!(
        answer["rows"],
        json!([{"period": "2025-01-01", "revenue": 70590.00}])
    );
    // The build, and then the import that grew it, re-estimated its size.
    let row = db
        .client()
        .await
        .query_one(
            "SELECT reltuples::int8, (SELECT count(*) FROM clue_rollup.sales_report_month_product_region)
               FROM pg_class WHERE oid = 'clue_rollup.sales_report_month_product_region'::regclass",
            &[],
        )
        .await
        .unwrap();
    let (estimate, rows): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((estimate, rows), (rows, 19));
    // --explain prints the plan without running it.
    let out = db
        .clue(&[
            "query",
            "--explain",
            r#"{"dataset": "sales_report", "measures": ["revenue"], "dimensions": ["product_name", "region"], "granularity": "month", "start_date": "2025-01-01", "end_date": "2025-04-30"}"#,
        ])
        .ok();
    assert!(
        out.stdout.starts_with(
            "served from:\n  rollup sales_report_month_product_region 2025-01-01 to 2025-04-30, read as stored\nsql:\n  SELECT a.period, "
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .ends_with("parameters:\n  $1 = 2025-01-01\n  $2 = 2025-05-01\n"),
        "{}",
        out.stdout
    );
    // A range with edge days: three pieces, regrouped into one total.
    let out = db
        .clue(&[
            "query",
            "--explain",
            r#"{"dataset": "sales_report", "measures": ["revenue"], "start_date": "2025-01-15", "end_date": "2025-04-10"}"#,
        ])
        .ok();
    assert!(
        out.stdout.starts_with(concat!(
            "served from:\n",
            "  rollup sales_report_day 2025-01-15 to 2025-01-31, partial aggregates\n",
            "  rollup sales_report_month 2025-02-01 to 2025-03-31, partial aggregates\n",
            "  rollup sales_report_day 2025-04-01 to 2025-04-10, partial aggregates\n",
            "combined: regrouped by period and dimensions\nsql:\n"
        )),
        "{}",
        out.stdout
    );
}

/// The body at `url` once it contains `needle` (the server hears of a write
/// a moment after it commits), or the last body after 2.5 s.
async fn body_once_it_holds(http: &reqwest::Client, url: &str, needle: &str) -> String {
    let mut body = String::new();
    for _ in 0..50 {
        body = http.get(url).send().await.unwrap().text().await.unwrap();
        if body.contains(needle) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    body
}

#[tokio::test]
async fn cached_answers_never_outlive_a_late_write() {
    let db = TestDb::with_sales_data().await;
    let app = crate::helpers::serve_with_timeout(db, None).await;
    let (base, db) = (app.address.clone(), &app.db);
    let http = reqwest::Client::new();
    let url =
        format!("{base}/reports/monthly-sales-summary?start_date=2025-04-01&end_date=2025-04-30");
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["clue-cache"], "miss");
    assert_eq!(
        first.headers()["clue-served-from"],
        "rollup sales_report_month 2025-04-01..2025-04-30"
    );
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        first.text().await.unwrap(),
        r#"[{"month":"2025-04","quantity":845,"revenue":70575.00}]"#
    );
    // The cache turns on once the write listener is connected.
    let mut cached = false;
    for _ in 0..100 {
        if http.get(&url).send().await.unwrap().headers()["clue-cache"] == "hit" {
            cached = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(cached, "a closed past range is served from the cache");
    let not_modified = http
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), reqwest::StatusCode::NOT_MODIFIED);
    // `*` matches any representation; If-None-Match compares weakly.
    for tag in [
        "*".to_owned(),
        format!("W/{etag}"),
        format!("\"other\", W/{etag}"),
    ] {
        let r = http
            .get(&url)
            .header("If-None-Match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::NOT_MODIFIED, "{tag}");
    }
    let r = http
        .get(&url)
        .header("If-None-Match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    // A late row for April arrives through another process.
    let dir = scratch_dir();
    let late = write_file(
        dir.path(),
        "late.csv",
        format!("{HEADER}\n1001,WidgetA,North,2025-04-30,5,500.00,100.00\n"),
    );
    db.import(late).ok();
    assert_eq!(
        body_once_it_holds(&http, &url, "850").await,
        r#"[{"month":"2025-04","quantity":850,"revenue":71075.00}]"#
    );
    // Open ranges are cached too, and a write on any of their days drops them.
    let open = format!("{base}/reports/monthly-sales-summary?start_date=2025-04-01");
    assert_eq!(
        http.get(&open).send().await.unwrap().headers()["clue-cache"],
        "miss"
    );
    assert_eq!(
        http.get(&open).send().await.unwrap().headers()["clue-cache"],
        "hit"
    );
    let future = write_file(
        dir.path(),
        "future.csv",
        format!("{HEADER}\n1001,WidgetA,North,2031-01-15,1,100.00,100.00\n"),
    );
    db.import(future).ok();
    assert_eq!(
        body_once_it_holds(&http, &open, "2031-01").await,
        r#"[{"month":"2025-04","quantity":850,"revenue":71075.00},{"month":"2031-01","quantity":1,"revenue":100.00}]"#
    );
    // no-cache computes afresh.
    let fresh = http
        .get(&url)
        .header("Cache-Control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.headers()["clue-cache"], "miss");
}

#[tokio::test]
async fn the_query_endpoint_answers_and_names_bad_fields() {
    let db = TestDb::with_sales_data().await;
    let app = crate::helpers::serve_with_timeout(db, None).await;
    let base = app.address.clone();
    let http = reqwest::Client::new();
    let post = |body: Value| http.post(format!("{base}/api/v1/query")).json(&body).send();
    let r = post(json!({"dataset": "sales_report", "measures": ["revenue", "sales"], "dimensions": ["region"], "start_date": "2025-04-01", "end_date": "2025-04-30", "order": [{"field": "revenue", "desc": true}], "limit": 2})).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["rows"],
        json!([{"region": "West", "revenue": 22900.00, "sales": 5}, {"region": "North", "revenue": 18600.00, "sales": 5}])
    );
    assert_eq!(
        body["served_from"],
        json!([{"source": "rollup", "name": "sales_report_month_product_region", "from": "2025-04-01", "to": "2025-04-30"}])
    );
    let gaps: Value = post(json!({"dataset": "sales_report", "measures": ["quantity"], "granularity": "month", "start_date": "2025-03-10", "end_date": "2025-05-20", "gap_fill": true})).await.unwrap().json().await.unwrap();
    assert_eq!(
        gaps["rows"],
        json!([{"period": "2025-03-01", "quantity": 0}, {"period": "2025-04-01", "quantity": 845}, {"period": "2025-05-01", "quantity": 0}])
    );

    let cases = [
        (
            json!({"dataset": "sales_report", "measures": ["profit"]}),
            "measures",
            "\"profit\" is not a measure of dataset sales_report",
        ),
        (
            json!({"dataset": "nope", "measures": ["revenue"]}),
            "dataset",
            "unknown dataset \"nope\"",
        ),
        (
            json!({"dataset": "sales_report", "measures": ["revenue"], "granularity": "fortnight"}),
            "granularity",
            "unknown variant `fortnight`, expected one of `hour`, `day`, `week`, `month`, `quarter`, `year`",
        ),
        (
            // No Rust type names, and the field is named.
            json!({"dataset": "sales_report", "measures": ["revenue"], "limit": "ten"}),
            "limit",
            "invalid type: string \"ten\", expected a whole number",
        ),
        (
            json!({"dataset": "sales_report", "measures": ["revenue"], "granularity": "hour", "gap_fill": true, "start_date": "2024-01-01", "end_date": "2024-01-02"}),
            "granularity",
            "hour is finer than the time column sales_date (a date) holds; ask for day or coarser",
        ),
        (
            json!({"dataset": "sales_report", "measures": ["revenue"], "granularity": "hour"}),
            "granularity",
            "hour is finer than the time column sales_date (a date) holds; ask for day or coarser",
        ),
        (
            json!({"dataset": "sales_report", "measures": ["revenue"], "filters": [{"dimension": "region", "equals": "a\u{0}b"}]}),
            "filters",
            "a value of \"region\" contains a NUL character",
        ),
        (
            json!({"dataset": "sales_report", "measures": ["revenue"], "filters": [{"dimension": "product_id", "min": 2000, "max": 1000}]}),
            "filters",
            "min 2000 of \"product_id\" is above its max 1000",
        ),
        (
            json!({"dataset": "sales_report", "measures": ["revenue"], "filters": [{"dimension": "region", "equals": false}]}),
            "filters",
            "false is not a value of \"region\", a str dimension",
        ),
        (
            json!("a query"),
            "body",
            "must be a JSON object (a query), found a string",
        ),
        (
            json!({"dataset": "sales_report", "measures": ["revenue"], "filters": [{"dimension": "product_id", "equals": "abc"}]}),
            "filters",
            "a value does not match the type of its dimension",
        ),
        (
            json!({"dataset": "sales_report", "measures": ["revenue"], "time_zone": "Mars/Olympus"}),
            "time_zone",
            "\"Mars/Olympus\" is not an IANA time zone name",
        ),
        (
            json!({"dataset": "sales_report", "measures": ["revenue"], "start_date": "2025-05-01", "end_date": "2025-04-01"}),
            "start_date",
            "2025-05-01 is after end_date 2025-04-01",
        ),
    ];
    for (body, name, reason) in cases {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["invalid_params"][0]["name"], name, "{body}: {p}");
        if !reason.is_empty() {
            assert_eq!(p["invalid_params"][0]["reason"], reason, "{body}: {p}");
        }
    }
    let r = http
        .post(format!("{base}/api/v1/query"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
}

#[test]
fn user_datasets_load_from_the_models_directory() {
    let dir = scratch_dir();
    write_file(
        dir.path(),
        "visits.yaml",
        "dataset: visits\ntable: web_visits\ntime_column: day\ncolumns: {day: date, page: str, views: int}\ndimensions: [page]\nmeasures: {views: {sum: views}}\nrollups: [{grain: month, dimensions: [page]}]\n",
    );
    write_file(dir.path(), "rules.yaml", "page: str\n");
    let out = clue_with(
        &["datasets"],
        &[("CLUE_MODELS", dir.path().to_str().unwrap())],
    )
    .ok();
    assert!(
        out.stdout
            .contains("visits (table web_visits, time column day"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("rollup visits_month_page: by month, page"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("sales_report (table sales_report"),
        "{}",
        out.stdout
    );
    write_file(
        dir.path(),
        "broken.yaml",
        "dataset: broken\ntime_column: d\ncolumns: {d: date}\nmeasures: {m: {median: d}}\n",
    );
    let run = clue_with(
        &["datasets"],
        &[("CLUE_MODELS", dir.path().to_str().unwrap())],
    );
    // A broken definition is bad input (exit 4), like a broken schema file.
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("broken.yaml: field \"measures.m\": unknown aggregate \"median\""),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn rollup_keys_follow_stored_values_not_their_spelling() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    let dir = scratch_dir();
    // One product written three ways, and amounts the column rounds.
    let csv = write_file(
        dir.path(),
        "spellings.csv",
        format!(
            "{HEADER}\n1001,A,North,2025-04-01,1,10.005,10.00\n01001,A,North,2025-04-02,2, 20.00,10.00\n 1001 ,A,North,2025-04-03,3,30.004,10.00\n"
        ),
    );
    db.import(csv).ok();
    assert_eq!(
        db.clue(&["rollups", "verify"])
            .ok()
            .stdout
            .matches(": ok")
            .count(),
        5
    );
    let (rows, total): (i64, rust_decimal::Decimal) = {
        let r = db
            .client()
            .await
            .query_one(
                "SELECT row_count, sum_sales_amount FROM clue_rollup.sales_report_month_product",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (rows, total),
        (3, "60.01".parse().unwrap()),
        "10.01 + 20.00 + 30.00 as stored"
    );
}

#[tokio::test]
async fn large_cached_answers_are_also_served_gzip_compressed() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    let dir = scratch_dir();
    let csv = dir.path().join("demo.csv");
    clue_with(
        &[
            "generate-sales",
            "--rows",
            "20000",
            "--out",
            csv.to_str().unwrap(),
        ],
        &[],
    )
    .ok();
    db.import(csv).ok();
    let app = crate::helpers::serve_with_timeout(db, None).await;
    let base = app.address.clone();
    let http = reqwest::Client::new();
    let url =
        format!("{base}/reports/monthly-sales-breakdown?start_date=2024-01-01&end_date=2025-12-31");
    let plain = http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert!(
        plain.len() > 64 * 1024,
        "a large answer: {} bytes",
        plain.len()
    );
    let mut compressed = None;
    for _ in 0..100 {
        let r = http
            .get(&url)
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        if r.headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip")
        {
            compressed = Some((
                r.headers()["etag"].to_str().unwrap().to_owned(),
                r.bytes().await.unwrap(),
            ));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (tag, gz) = compressed.expect("served compressed once cached");
    assert!(tag.ends_with("-gzip\""), "{tag}");
    assert!(
        gz.len() * 4 < plain.len(),
        "{} vs {}",
        gz.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped).unwrap();
    assert_eq!(unzipped, plain.to_vec());
    let not_modified = http
        .get(&url)
        .header("Accept-Encoding", "gzip")
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), reqwest::StatusCode::NOT_MODIFIED);
    // Clients that do not ask for gzip get the plain body.
    let again = http.get(&url).send().await.unwrap();
    assert!(again.headers().get("content-encoding").is_none());
    assert_eq!(again.headers()["vary"], "accept-encoding");
}

/// Any load into a dataset's table notifies caches, rollups or not.
#[tokio::test]
async fn loads_into_datasets_without_rollups_notify_the_caches() {
    use futures_util::StreamExt;
    let db = TestDb::new().await;
    let dir = scratch_dir();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    write_file(
        &models,
        "visits.yaml",
        "dataset: visits\ntable: web_visits\ntime_column: day\ncolumns: {day: date, views: int}\nmeasures: {views: {sum: views}}\n",
    );
    db.client()
        .await
        .batch_execute("CREATE TABLE web_visits (day date NOT NULL, views int NOT NULL) PARTITION BY RANGE (day)")
        .await
        .unwrap();
    let (client, mut connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client.batch_execute("LISTEN clue_writes").await.unwrap();
    let csv = write_file(
        dir.path(),
        "v.csv",
        "day,views\n2025-03-30,1\n2025-04-02,2\n",
    );
    clue_with(
        &[
            "import-data",
            "-c",
            csv.to_str().unwrap(),
            "-t",
            "web_visits",
        ],
        &[
            ("CLUE_DATABASE_URL", &db.url),
            ("CLUE_MODELS", models.to_str().unwrap()),
        ],
    )
    .ok();
    let payload = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        payload, "visits 2025-03-01 2025-04-30",
        "the months the load touched"
    );
}

#[tokio::test]
async fn writes_that_are_not_clues_keep_the_rollups_exact_and_the_cache_fresh() {
    let app = crate::helpers::serve_with_timeout(TestDb::with_sales_data().await, None).await;
    let verify_clean = |stage: &'static str| {
        let run = app.db.clue(&["rollups", "verify"]);
        assert_eq!(run.code, 0, "{stage}: {}\n{}", run.stdout, run.stderr);
        assert!(!run.stdout.contains("differ"), "{stage}: {}", run.stdout);
    };
    verify_clean("loaded");
    let summary = async || -> Value {
        app.http
            .get(format!(
                "{}/reports/monthly-sales-summary?start_date=2024-01-01&end_date=2024-12-31",
                app.address
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let before = summary().await;
    let sql = app.db.client().await;
    // An application's statements straight into the fact table: rows added
    // (a new region and month too), changed (amounts, prices that were a
    // group's minimum or maximum, regions) and deleted.
    sql.batch_execute(
        "INSERT INTO sales_report (product_id, product_name, region, sales_date, quantity_sold, sales_amount, unit_price)
              VALUES (9001, 'Gadget', 'Atlantis', '2024-02-03', 3, 30.30, 10.10),
                     (9001, 'Gadget', 'North', '2023-12-31', 1, 0.01, 0.01);
         UPDATE sales_report SET sales_amount = sales_amount + 1.11, unit_price = unit_price * 3
          WHERE sale_id % 7 = 0;
         UPDATE sales_report SET region = 'Atlantis' WHERE sale_id % 11 = 0;
         DELETE FROM sales_report WHERE sale_id % 13 = 0;",
    )
    .await
    .unwrap();
    verify_clean("after inserts, updates and deletes");
    // The cached answer went with the write.
    let mut after = before.clone();
    for _ in 0..100 {
        after = summary().await;
        if after != before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_ne!(
        after, before,
        "the summary still answers from before the write"
    );
    let facts = app
        .db
        .strings(
            "SELECT concat_ws(' ', m, q, r) FROM (
                 SELECT to_char(sales_date, 'YYYY-MM') AS m, sum(quantity_sold) AS q, sum(sales_amount) AS r
                   FROM sales_report WHERE sales_date BETWEEN '2024-01-01' AND '2024-12-31' GROUP BY 1) s
              ORDER BY m",
        )
        .await;
    let served: Vec<String> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {} {}",
                m["month"].as_str().unwrap(),
                m["quantity"],
                m["revenue"]
            )
        })
        .collect();
    assert_eq!(served, facts);
    // A transaction rolled back leaves them as they were; a truncate empties them.
    sql.batch_execute("BEGIN; DELETE FROM sales_report; ROLLBACK;")
        .await
        .unwrap();
    verify_clean("after a rollback");
    sql.batch_execute("TRUNCATE sales_report").await.unwrap();
    verify_clean("after a truncate");
    assert_eq!(
        app.db
            .value::<i64>("SELECT count(*) FROM clue_rollup.sales_report_month")
            .await,
        0
    );
}
