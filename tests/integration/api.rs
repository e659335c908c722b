//! The report API over a real server bound to port 0 and a real database:
//! known answers for prototype 000's data, CSV, errors, docs, health, and a
//! database restart during the server's life.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, peer_file, serve_with_timeout};

/// A server on port 0 over a fresh database holding `sales_data.csv`.
async fn spawn_app() -> TestApp {
    let db = TestDb::with_sales_data().await;
    serve(db).await
}

async fn serve(db: TestDb) -> TestApp {
    serve_with_timeout(db, None).await
}

async fn text(r: reqwest::Response) -> String {
    r.text().await.unwrap()
}

#[tokio::test]
async fn reports_answer_prototype_data_exactly() {
    let app = spawn_app().await;
    let r = app.get("/reports/monthly-sales-summary").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    // Exact money: two decimals in the JSON text itself.
    assert_eq!(
        text(r).await,
        r#"[{"month":"2025-04","quantity":845,"revenue":70575.00}]"#
    );

    let top = text(
        app.get("/reports/top-5-by-revenue?start_date=2024-01-01&end_date=2025-12-12")
            .await,
    )
    .await;
    assert_eq!(
        top,
        concat!(
            r#"[{"rank":1,"product_id":1001,"product_name":"WidgetA","revenue":30000.00},"#,
            r#"{"rank":2,"product_id":1003,"product_name":"WidgetC","revenue":14400.00},"#,
            r#"{"rank":3,"product_id":1002,"product_name":"WidgetB","revenue":12300.00},"#,
            r#"{"rank":4,"product_id":1004,"product_name":"WidgetD","revenue":7500.00},"#,
            r#"{"rank":5,"product_id":1005,"product_name":"WidgetE","revenue":6375.00}]"#
        )
    );

    let breakdown: Value = app
        .get("/reports/monthly-sales-breakdown?product=WidgetA&region=North")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        breakdown,
        json!([{"month": "2025-04", "product_name": "WidgetA", "region": "North", "revenue": 10500.00, "quantity": 105}])
    );
    let all: Value = app
        .get("/reports/monthly-sales-breakdown")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        all.as_array().unwrap().len(),
        17,
        "distinct product x region pairs in April"
    );
    let sum: f64 = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["quantity"].as_f64().unwrap())
        .sum();
    assert_eq!(sum, 845.0);

    // Date filters are inclusive and compare dates.
    let first_week: Value = app
        .get("/reports/monthly-sales-summary?start_date=2025-04-01&end_date=2025-04-07")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        first_week,
        json!([{"month": "2025-04", "quantity": 240, "revenue": 20625.00}])
    );
    let none: Value = app
        .get("/reports/monthly-sales-summary?start_date=2026-01-01")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn ties_are_ranked_like_sql_rank() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    db.client()
        .await
        .batch_execute(
            "INSERT INTO sales_report (product_id, product_name, region, sales_date, quantity_sold, sales_amount, unit_price) VALUES
             (1, 'A', 'North', '2025-01-05', 1, 100.00, 100.00), (2, 'B', 'North', '2025-01-05', 1, 100.00, 100.00),
             (3, 'C', 'North', '2025-01-05', 1, 50.00, 50.00), (4, 'D', 'North', '2025-01-05', 1, 50.00, 50.00),
             (5, 'E', 'North', '2025-01-05', 1, 10.00, 10.00), (6, 'F', 'North', '2025-01-05', 1, 1.00, 1.00)",
        )
        .await
        .unwrap();
    let app = serve(db).await;
    let top: Value = app
        .get("/reports/top-5-by-revenue")
        .await
        .json()
        .await
        .unwrap();
    let ranks: Vec<(i64, i64)> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rank"].as_i64().unwrap(),
                r["product_id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranks, [(1, 1), (1, 2), (3, 3), (3, 4), (5, 5)]);
}

#[tokio::test]
async fn csv_by_parameter_or_accept_header() {
    let app = spawn_app().await;
    let r = app
        .get("/reports/top-5-by-revenue?start_date=2025-04-01&end_date=2025-04-30&format=csv")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"top-5-by-revenue_2025-04-01_2025-04-30.csv\""
    );
    assert_eq!(
        text(r).await,
        "rank,product_id,product_name,revenue\n1,1001,WidgetA,30000.00\n2,1003,WidgetC,14400.00\n3,1002,WidgetB,12300.00\n4,1004,WidgetD,7500.00\n5,1005,WidgetE,6375.00\n"
    );
    let r = app
        .http
        .get(format!("{}/reports/monthly-sales-summary", app.address))
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"monthly-sales-summary.csv\""
    );
    assert_eq!(
        text(r).await,
        "month,quantity,revenue\n2025-04,845,70575.00\n"
    );
    let r = app
        .get("/reports/monthly-sales-breakdown?region=North&format=csv")
        .await;
    let body = text(r).await;
    assert!(
        body.starts_with(
            "month,product_name,region,revenue,quantity\n2025-04,WidgetA,North,10500.00,105\n"
        ),
        "{body}"
    );
}

async fn problem(app: &TestApp, method: reqwest::Method, path: &str, status: StatusCode) -> Value {
    let r = app
        .http
        .request(method, format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), status, "{path}");
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "{path}"
    );
    r.json().await.unwrap()
}

#[tokio::test]
async fn bad_requests_are_problem_details_naming_the_parameter() {
    let app = spawn_app().await;
    let cases = [
        (
            "/reports/monthly-sales-summary?start_date=2025-02-30",
            "start_date",
            "\"2025-02-30\" is not a date in the form YYYY-MM-DD",
        ),
        (
            "/reports/top-5-by-revenue?end_date=12/31/2025",
            "end_date",
            "\"12/31/2025\" is not a date in the form YYYY-MM-DD",
        ),
        (
            "/reports/monthly-sales-breakdown?start_date=2025-05-01&end_date=2025-04-01",
            "start_date",
            "2025-05-01 is after end_date 2025-04-01",
        ),
        (
            "/reports/monthly-sales-summary?product=WidgetA",
            "product",
            "is not a parameter of this report (expected start_date, end_date, format)",
        ),
        (
            "/reports/monthly-sales-summary?format=xlsx",
            "format",
            "\"xlsx\" is not json or csv",
        ),
        (
            "/reports/top-5-by-revenue?start_date=2025-01-01&start_date=2025-02-01",
            "start_date",
            "is given more than once",
        ),
        (
            "/reports/monthly-sales-summary?start_date=",
            "start_date",
            "is empty; give a date in the form YYYY-MM-DD or leave the parameter out",
        ),
        (
            "/reports/monthly-sales-breakdown?region=%FF%FE",
            "region",
            "is not valid UTF-8 text once percent-decoded",
        ),
        (
            "/reports/monthly-sales-breakdown?product='%3B%20DROP%20TABLE%20sales_report%3B--",
            "",
            "",
        ),
    ];
    for (path, name, reason) in cases {
        if name.is_empty() {
            // Hostile text is a value like any other: bound, matched, nothing found.
            let r = app.get(path).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(text(r).await, "[]");
            continue;
        }
        let p = problem(&app, reqwest::Method::GET, path, StatusCode::BAD_REQUEST).await;
        assert_eq!(p["type"], "urn:clue:problem:invalid-parameter", "{path}");
        assert_eq!(p["status"], 400);
        assert_eq!(
            p["invalid_params"],
            json!([{"name": name, "reason": reason}]),
            "{path}"
        );
        assert_eq!(p["detail"], format!("{name}: {reason}"));
    }
    let p = problem(
        &app,
        reqwest::Method::GET,
        "/reports/monthly-sales",
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(p["detail"], "no such resource: /reports/monthly-sales");
    let p = problem(
        &app,
        reqwest::Method::POST,
        "/reports/top-5-by-revenue",
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    assert_eq!(p["detail"], "method POST is not allowed here");
    assert_eq!(
        app.db
            .value::<i64>("SELECT count(*) FROM sales_report")
            .await,
        20
    );
}

#[tokio::test]
async fn a_one_month_report_reads_only_that_months_partition() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
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
    let filter = clue::serve::reports::ReportFilter {
        start_date: Some("2025-04-01".parse().unwrap()),
        end_date: Some("2025-04-30".parse().unwrap()),
        ..Default::default()
    };
    let catalog = clue::domain::dataset::Catalog::load(None).unwrap();
    let dataset = catalog.get("sales_report").unwrap();
    for report in [
        clue::serve::reports::Report::MonthlySummary,
        clue::serve::reports::Report::MonthlyBreakdown,
        clue::serve::reports::Report::Top5ByRevenue,
    ] {
        // The fact-table plan (what answers when no rollup covers a query).
        let query = report.query(&filter).to_query().unwrap();
        let plan = clue::plan::plan(
            dataset,
            &clue::plan::Facts {
                table_sql: "\"public\".\"sales_report\"",
                time_key: Some(clue::plan::KeyKind::Date),
                time_nullable: false,
            },
            &[],
            &query,
            true,
        )
        .unwrap();
        let mut sql = plan.sql.clone();
        for (i, p) in plan.params.iter().enumerate().rev() {
            let literal = match p {
                clue::plan::PlanParam::Date(d) => format!("'{d}'"),
                clue::plan::PlanParam::Instant(t) => format!("'{}'", t.to_rfc3339()),
                clue::plan::PlanParam::Text(t) => format!("'{t}'"),
                clue::plan::PlanParam::TextArray(_) => unreachable!(),
            };
            sql = sql.replace(&format!("${}", i + 1), &literal);
        }
        let plan_rows: Vec<String> = db
            .client()
            .await
            .query(&format!("EXPLAIN {sql}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let scanned: Vec<&str> = plan_rows
            .iter()
            .filter(|l| l.contains("Scan"))
            .filter_map(|l| l.split(" on ").nth(1))
            .map(|s| s.split_whitespace().next().unwrap())
            .filter(|t| t.starts_with("sales_report"))
            .collect();
        assert_eq!(
            scanned,
            ["sales_report_2025_04"],
            "{report:?}:\n{}",
            plan_rows.join("\n")
        );
    }
}

#[tokio::test]
async fn openapi_document_covers_every_route_and_matches_the_committed_file() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/reports/monthly-sales-summary",
        "/reports/monthly-sales-breakdown",
        "/reports/top-5-by-revenue",
        "/healthz",
        "/readyz",
    ] {
        let op = &paths[route]["get"];
        assert!(op.is_object(), "{route} missing");
        // Every response is described, and served routes answer.
        for (code, resp) in op["responses"].as_object().unwrap() {
            assert!(
                resp["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{route} {code} lacks a description"
            );
        }
        assert_ne!(
            app.get(route).await.status(),
            StatusCode::NOT_FOUND,
            "{route}"
        );
    }
    let summary = &paths["/reports/monthly-sales-summary"]["get"];
    let params: Vec<&str> = summary["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["start_date", "end_date", "format"]);
    assert!(summary["responses"]["200"]["content"]["text/csv"].is_object());
    assert!(summary["responses"]["400"]["content"]["application/problem+json"].is_object());
    let breakdown = &paths["/reports/monthly-sales-breakdown"]["get"];
    assert_eq!(breakdown["parameters"].as_array().unwrap().len(), 5);

    // docs/openapi.yaml is this same document (regenerate: cargo run -- openapi > docs/openapi.yaml).
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    assert_eq!(
        committed,
        clue::cli::openapi_yaml().unwrap(),
        "docs/openapi.yaml is stale: run `cargo run -- openapi > docs/openapi.yaml`"
    );
    let from_yaml: Value = yaml_serde::from_str(&committed).unwrap();
    assert_eq!(from_yaml, doc);

    let docs = app.get("/docs/").await;
    assert_eq!(docs.status(), StatusCode::OK);
    let html = text(docs).await;
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("https://"),
        "the docs page must work offline"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/healthz").await.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    assert_eq!(
        app.get("/readyz").await.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
}

#[tokio::test]
async fn the_server_survives_a_database_restart() {
    // A private cluster, so stopping it disturbs nothing else.
    let dir = crate::helpers::scratch_dir();
    let home = dir.path().join("home");
    let cluster = clue::pg::cluster::Cluster::new(home.clone());
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start_kept())
        .await
        .unwrap()
        .unwrap();
    let target = clue::settings::DatabaseTarget::Embedded(clue::settings::EmbeddedSettings::at(
        home.clone(),
    ));
    let database = Arc::new(crate::helpers::open_writer(&target).await);
    crate::helpers::clue_with(&["create-schema"], &[("CLUE_HOME", home.to_str().unwrap())]).ok();
    crate::helpers::clue_with(
        &[
            "import-data",
            "-c",
            peer_file("sales_data.csv").to_str().unwrap(),
            "-t",
            "sales_report",
        ],
        &[("CLUE_HOME", home.to_str().unwrap())],
    )
    .ok();
    let app = crate::helpers::application(database).await;
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let summary = || {
        http.get(format!("{base}/reports/monthly-sales-summary"))
            .send()
    };
    assert_eq!(summary().await.unwrap().status(), StatusCode::OK);

    // While the server shuts down, is away and starts again, requests are
    // answered 200 or 503, never 500.
    let probing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let prober = {
        let (http, base, probing) = (http.clone(), base.clone(), probing.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeMap::<u16, u32>::new();
            while probing.load(std::sync::atomic::Ordering::SeqCst) {
                for path in ["/readyz", "/reports/top-5-by-revenue"] {
                    if let Ok(r) = http
                        .get(format!("{base}{path}"))
                        .header("Cache-Control", "no-cache")
                        .send()
                        .await
                    {
                        *seen.entry(r.status().as_u16()).or_default() += 1;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            seen
        })
    };

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop())
        .await
        .unwrap()
        .unwrap();
    let down = summary().await.unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.headers()["retry-after"], "5");
    let body = text(down).await;
    assert!(
        body.contains("urn:clue:problem:database-unavailable"),
        "{body}"
    );
    assert!(
        !body.to_lowercase().contains("postgres") && !body.contains("connection"),
        "driver text leaked: {body}"
    );
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start_kept())
        .await
        .unwrap()
        .unwrap();
    let mut recovered = None;
    for _ in 0..50 {
        let r = summary().await.unwrap();
        if r.status() == StatusCode::OK {
            recovered = Some(text(r).await);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        recovered.as_deref(),
        Some(r#"[{"month":"2025-04","quantity":845,"revenue":70575.00}]"#)
    );
    probing.store(false, std::sync::atomic::Ordering::SeqCst);
    let seen = prober.await.unwrap();
    assert!(
        seen.keys().all(|s| *s == 200 || *s == 503),
        "statuses during the restart: {seen:?}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop())
        .await
        .unwrap()
        .unwrap();
}

/// Runs `clue demo` until it prints its address, returning the child and the base URL.
fn start_demo(
    home: &std::path::Path,
    rows: &str,
) -> (std::process::Child, String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clue"))
        .args(["demo", "--rows", rows, "--port", "0"])
        .env_remove("CLUE_DATABASE_URL")
        .env("CLUE_HOME", home)
        .env("CLUE_FAST_INIT", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("demo printed nothing").unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("address")
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    (child, base, errors)
}

fn interrupt(child: &mut std::process::Child) -> i32 {
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap().code().unwrap_or(-1)
}

#[tokio::test]
async fn the_demo_loads_once_serves_and_stops_cleanly() {
    let dir = crate::helpers::scratch_dir();
    let home = dir.path().join("home");
    let (mut child, base, errors) = start_demo(&home, "3000");
    // A client hanging up mid-answer makes the server's next write fail with
    // EPIPE; with SIGPIPE's default action that write would kill the server.
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let ignored = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .map(|mask| u64::from_str_radix(mask.trim(), 16).unwrap())
            .unwrap();
        assert_ne!(
            ignored & (1 << (13 - 1)),
            0,
            "SIGPIPE is not ignored: {status}"
        );
    }
    let summary: Value = reqwest::get(format!("{base}/reports/monthly-sales-summary"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = clue::demo::generate::generate_sales(
        &clue::demo::generate::GenerateOptions {
            rows: 3000,
            ..Default::default()
        },
        std::io::sink(),
    )
    .unwrap();
    let months = summary.as_array().unwrap();
    assert_eq!(months.len(), 24);
    let quantity: i64 = months.iter().map(|m| m["quantity"].as_i64().unwrap()).sum();
    assert_eq!(quantity, expected.total_quantity);
    let revenue: rust_decimal::Decimal = months
        .iter()
        .map(|m| {
            m["revenue"]
                .to_string()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(revenue, expected.total_revenue);
    // A learner's year, month by month, every month with words.
    let learned: Value = reqwest::get(format!(
        "{base}/users/user01/summary?from=2025-01-01&to=2025-12-31T23:59:59&granularity=month"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let learned = learned.as_array().unwrap();
    assert_eq!(learned.len(), 12, "{learned:?}");
    assert!(
        learned
            .iter()
            .all(|m| m["average_words_learned"].as_f64().unwrap() > 0.0),
        "{learned:?}"
    );
    // Sales events: repeat buyers in the prototype's weeks, and /feedback
    // once its first read is in, clothing (the most common) first.
    let repeat: Value = reqwest::get(format!("{base}/reports/repeat-buyer-revenue"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        repeat[0]["repeat_buyers"].as_i64().unwrap() > 10,
        "{repeat}"
    );
    assert!(repeat[0]["change_pct"].is_number(), "{repeat}");
    let mut feedback = Value::Null;
    for _ in 0..100 {
        let r = reqwest::get(format!("{base}/feedback")).await.unwrap();
        if r.status() == StatusCode::OK {
            feedback = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(feedback[0]["category"], "clothing", "{feedback}");
    assert_eq!(feedback.as_array().map(Vec::len), Some(3), "{feedback}");
    // Two weeks of warehouse batches, and their KPIs.
    let batches: Value = reqwest::get(format!("{base}/warehouse/batches"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(batches.as_array().map(Vec::len), Some(14), "{batches}");
    assert!(
        batches[0]["sales"]["loaded"].as_i64().unwrap() > 4_000,
        "{batches}"
    );
    let ytd: Value = reqwest::get(format!("{base}/kpis/customer-ytd-spending?customer_id=1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ytd[0]["monthly_amount"].is_number(), "{ytd}");
    // The delivery reports, synced every second from a busy source, move.
    let open_total = async || -> i64 {
        let rows: Value = reqwest::get(format!("{base}/reports/open-orders"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["order_count"].as_i64().unwrap())
            .sum()
    };
    let mut seen = Vec::new();
    for _ in 0..200 {
        let total = open_total().await;
        if total > 0 && seen.last() != Some(&total) {
            seen.push(total);
        }
        if seen.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen.len() >= 2, "the open orders did not move: {seen:?}");
    assert_eq!(interrupt(&mut child), 0);
    let log = errors.join().unwrap();
    assert!(log.contains("Recorded 20000 sales events"), "{log}");
    assert!(log.contains("Generating 3000 sales rows"), "{log}");
    assert!(log.contains("learning records of 12 users"), "{log}");
    let status =
        crate::helpers::clue_with(&["db", "status"], &[("CLUE_HOME", home.to_str().unwrap())]).ok();
    assert!(
        status.stdout.starts_with("stopped"),
        "Ctrl-C stops the private cluster: {}",
        status.stdout
    );

    // A second run reuses the data.
    let (mut child, base, errors) = start_demo(&home, "3000");
    let top = reqwest::get(format!("{base}/reports/top-5-by-revenue"))
        .await
        .unwrap();
    assert_eq!(top.status(), StatusCode::OK);
    assert_eq!(interrupt(&mut child), 0);
    let log = errors.join().unwrap();
    assert!(
        log.contains("Reusing the 3000 rows already loaded"),
        "{log}"
    );
    assert!(!log.contains("Generating"), "{log}");
}

#[tokio::test]
async fn a_query_past_the_time_limit_is_cancelled_with_a_504() {
    let app = serve_with_timeout(
        TestDb::with_sales_data().await,
        Some(std::time::Duration::from_secs(1)),
    )
    .await;
    // The monthly summary reads the month rollup; while another session
    // holds it locked, the query waits past the limit.
    let blocker = app.db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE clue_rollup.sales_report_month IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let body = problem(
        &app,
        reqwest::Method::GET,
        "/reports/monthly-sales-summary",
        StatusCode::GATEWAY_TIMEOUT,
    )
    .await;
    assert_eq!(
        (body["type"].as_str(), body["detail"].as_str()),
        (
            Some("urn:clue:problem:query-timeout"),
            Some(
                "the query ran longer than 1 s and was cancelled; narrow it (a shorter range, fewer dimensions, filters)"
            )
        )
    );
    // Cancelled in the database too: nothing is left waiting for the lock.
    let mut waiting = -1;
    for _ in 0..40 {
        waiting = blocker
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        waiting, 0,
        "the cancelled query still waits in the database"
    );
    blocker.batch_execute("ROLLBACK").await.unwrap();
    // The server and its pool carry on.
    let r = app.get("/reports/monthly-sales-summary").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        text(r).await,
        r#"[{"month":"2025-04","quantity":845,"revenue":70575.00}]"#
    );
}

#[tokio::test]
async fn a_query_answers_csv_and_the_datasets_are_described() {
    let app = crate::helpers::serve_with_timeout(TestDb::with_sales_data().await, None).await;
    let csv = app
        .http
        .post(format!("{}/api/v1/query?format=csv", app.address))
        .json(
            &serde_json::json!({"dataset": "sales_report", "measures": ["revenue", "sales"],
                                  "dimensions": ["region"], "granularity": "month",
                                  "order": [{"field": "region"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        csv.text().await.unwrap(),
        "period,region,revenue,sales\n\
         2025-04-01,East,17550.00,5\n\
         2025-04-01,North,18600.00,5\n\
         2025-04-01,South,11525.00,5\n\
         2025-04-01,West,22900.00,5\n"
    );
    let datasets: Value = app.get("/api/v1/datasets").await.json().await.unwrap();
    let sales = datasets
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "sales_report")
        .unwrap();
    assert_eq!(sales["first_day"], "2025-04-01");
    assert_eq!(sales["last_day"], "2025-04-20");
    assert_eq!(
        sales["grains"],
        serde_json::json!(["day", "week", "month", "quarter", "year"])
    );
    assert!(
        sales["measures"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "revenue", "agg": "sum"}))
    );
    let learning = datasets
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "learning_log")
        .unwrap();
    assert_eq!(
        learning["first_day"],
        Value::Null,
        "an empty dataset has no days"
    );
    assert_eq!(learning["grains"][0], "hour");
    let country = datasets
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "country")
        .unwrap();
    assert_eq!(country["time_column"], Value::Null);
    assert_eq!(country["grains"], serde_json::json!([]));
}

/// A database that accepts connections and never answers (a stalled
/// server, a black hole) is a 503 in bounded time on every path, `/readyz`
/// included, not a request held as long as it stalls.
#[tokio::test]
async fn a_stalled_database_is_a_503_in_bounded_time() {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming() {
            held.push(stream);
        }
    });
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("clue")
        .dbname("clue");
    let db = std::sync::Arc::new(
        clue::pg::database::Database::unconnected(config)
            .unwrap()
            .with_query_timeout(Some(std::time::Duration::from_secs(1))),
    );
    let app = crate::helpers::application(db).await;
    let base = format!("http://{}", app.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    for (method, path, body) in [
        ("GET", "/readyz", None),
        ("GET", "/reports/monthly-sales-summary", None),
        (
            "POST",
            "/api/v1/query",
            Some(serde_json::json!({"dataset": "sales_report", "measures": ["revenue"]})),
        ),
    ] {
        let request = match body {
            Some(b) => http.post(format!("{base}{path}")).json(&b),
            None => http.request(method.parse().unwrap(), format!("{base}{path}")),
        };
        // A guard against a hang, not a measure of speed.
        let response = tokio::time::timeout(std::time::Duration::from_secs(30), request.send())
            .await
            .unwrap_or_else(|_| panic!("{path} held on a stalled database"))
            .unwrap();
        assert_eq!(response.status(), 503, "{path}");
        assert!(response.headers().contains_key("retry-after"), "{path}");
    }
}

/// A connection that never finishes its request headers is closed (a probe
/// held 20,000 of them open until the server ran out of files).
#[tokio::test]
async fn half_open_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new().await;
    let database = std::sync::Arc::new(crate::helpers::open_writer(&db.target()).await);
    let catalog = std::sync::Arc::new(clue::domain::dataset::Catalog::load(None).unwrap());
    let app = clue::api::Application::build(
        database,
        catalog,
        clue::api::Limits {
            header_wait: std::time::Duration::from_secs(1),
            ..clue::api::Limits::default()
        },
        clue::api::Security::off(),
        "127.0.0.1",
        0,
    )
    .await
    .unwrap();
    let address = app.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    for sent in [&b""[..], b"GET /healthz HTTP/1.1\r\nHost: x\r\n"] {
        let mut conn = tokio::net::TcpStream::connect(address).await.unwrap();
        conn.write_all(sent).await.unwrap();
        let mut buf = Vec::new();
        // A guard against a connection held forever, not a measure of speed.
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            conn.read_to_end(&mut buf),
        )
        .await
        .expect("the server kept a half-open connection");
        assert!(read.is_ok(), "{read:?}");
        assert!(
            buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
    }
    // A request that arrives whole is answered as before.
    let ok = reqwest::get(format!("http://{address}/healthz"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// Every statement on a server's pool is bounded by the database's own
/// `statement_timeout` (a backstop a second past the query timeout), not
/// only the planned queries the server cancels itself.
#[tokio::test]
async fn every_statement_of_a_server_is_bounded() {
    let db = TestDb::new().await;
    let database = crate::helpers::open_writer(&db.target())
        .await
        .with_query_timeout(Some(std::time::Duration::from_millis(300)));
    let client = database.client().await.unwrap();
    let started = std::time::Instant::now();
    let err = client
        .simple_query("SELECT pg_sleep(10)")
        .await
        .unwrap_err();
    assert_eq!(
        clue::error::classify_pg(&err),
        clue::error::ErrorKind::Timeout
    );
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1200) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
}
