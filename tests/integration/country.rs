//! Prototype 001's batch analytics: each report, as CSV, equals the
//! prototype's SQL (corrected to run against its quoted schema) over the
//! same events; JSON carries the same values; parameters are checked.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, serve_with_timeout};

/// Deterministic events: four countries, twelve buyers, January and
/// February 2021, revenue in cents.
async fn app_with_events() -> TestApp {
    let app = serve_with_timeout(TestDb::new().await, None).await;
    let countries = ["DE", "ES", "FR", "IT"];
    let mut state: u64 = 7;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut events = Vec::new();
    for i in 0..120 {
        let day = if i % 5 == 4 {
            format!("2021-02-{:02}", 1 + next(20))
        } else {
            format!("2021-01-{:02}", 1 + next(16))
        };
        events.push(json!({
            "ID_ORDER": format!("O{i}"), "ID_PRODUCT": format!("P{}", next(9)),
            "ID_BUYER": format!("B{}", next(12)), "ID_SELLER": format!("S{}", next(5)),
            "ID_SELLER_COUNTRY": countries[next(4) as usize],
            "ID_BUYER_COUNTRY": countries[next(4) as usize],
            "DATE_PAYMENT": format!("{day} {:02}:{:02}:00", next(24), next(60)),
            "CATEGORY": "shoes", "REVENUE": format!("{}.{:02}", next(300), next(100)),
        }));
    }
    let posts = events.iter().map(|e| {
        app.http
            .post(format!("{}/ingest", app.address))
            .json(e)
            .send()
    });
    for r in futures_util::future::join_all(posts).await {
        assert_eq!(r.unwrap().status(), StatusCode::CREATED);
    }
    app
}

/// The report's CSV lines without the header, and where it was served from.
async fn csv(app: &TestApp, path_and_query: &str) -> (Vec<String>, String) {
    let r = app
        .http
        .get(format!("{}{path_and_query}", app.address))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path_and_query}");
    let served = r.headers()["clue-served-from"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    (text.lines().skip(1).map(str::to_owned).collect(), served)
}

const CONTRIBUTION: &str = r#"
SELECT concat_ws(',', "ID_SELLER_COUNTRY", sum("REVENUE"),
       round(100 * sum("REVENUE") / sum(sum("REVENUE")) OVER (), 2),
       count(*), round(100.0 * count(*) / sum(count(*)) OVER (), 2))
FROM sales {where}
GROUP BY "ID_SELLER_COUNTRY"
ORDER BY sum("REVENUE") DESC, "ID_SELLER_COUNTRY""#;

const RELATIONSHIP: &str = r#"
SELECT concat_ws(',', a, b, sum(r)) FROM (
  SELECT least("ID_SELLER_COUNTRY", "ID_BUYER_COUNTRY") a,
         greatest("ID_SELLER_COUNTRY", "ID_BUYER_COUNTRY") b, "REVENUE" r
  FROM sales WHERE "ID_SELLER_COUNTRY" <> "ID_BUYER_COUNTRY" {and}) t
GROUP BY a, b ORDER BY sum(r) DESC, a, b LIMIT 1"#;

const REPEAT_BUYERS: &str = r#"
WITH w1 AS (SELECT "ID_BUYER" b, sum("REVENUE") r FROM sales
            WHERE "DATE_PAYMENT" >= '{w1}T00:00:00Z' AND "DATE_PAYMENT" < '{w1}T00:00:00Z'::timestamptz + interval '7 days' GROUP BY 1),
     w2 AS (SELECT "ID_BUYER" b, sum("REVENUE") r FROM sales
            WHERE "DATE_PAYMENT" >= '{w2}T00:00:00Z' AND "DATE_PAYMENT" < '{w2}T00:00:00Z'::timestamptz + interval '7 days' GROUP BY 1)
SELECT concat_ws(',', '{w1}', '{w2}', count(*), coalesce(sum(w1.r), 0.00), coalesce(sum(w2.r), 0.00),
       coalesce(CASE WHEN coalesce(sum(w1.r), 0) = 0 THEN NULL
                     ELSE round(100 * (sum(w2.r) - sum(w1.r)) / sum(w1.r), 2) END::text, ''))
FROM w1 JOIN w2 USING (b)"#;

#[tokio::test]
async fn each_analysis_equals_the_prototypes_sql_over_the_same_events() {
    let app = app_with_events().await;
    let in_range =
        r#""DATE_PAYMENT" >= '2021-01-05T00:00:00Z' AND "DATE_PAYMENT" < '2021-02-03T00:00:00Z'"#;

    let (lines, served) = csv(&app, "/reports/country-contribution").await;
    assert_eq!(
        lines,
        app.db.strings(&CONTRIBUTION.replace("{where}", "")).await
    );
    assert_eq!(lines.len(), 4);
    assert!(served.contains("sales_month_countries"), "{served}");
    let (lines, _) = csv(
        &app,
        "/reports/country-contribution?start_date=2021-01-05&end_date=2021-02-02",
    )
    .await;
    let where_ = format!("WHERE {in_range}");
    assert_eq!(
        lines,
        app.db
            .strings(&CONTRIBUTION.replace("{where}", &where_))
            .await
    );

    let (lines, _) = csv(&app, "/reports/top-country-relationships").await;
    assert_eq!(
        lines,
        app.db.strings(&RELATIONSHIP.replace("{and}", "")).await
    );
    let (lines, _) = csv(
        &app,
        "/reports/top-country-relationships?start_date=2021-01-05&end_date=2021-02-02",
    )
    .await;
    let and = format!("AND {in_range}");
    assert_eq!(
        lines,
        app.db.strings(&RELATIONSHIP.replace("{and}", &and)).await
    );

    for (query, w1, w2) in [
        ("", "2021-01-01", "2021-01-08"),
        (
            "?week1_start=2021-01-03&week2_start=2021-01-10",
            "2021-01-03",
            "2021-01-10",
        ),
        // Week 1 without sales: the change is null (an empty CSV field).
        (
            "?week1_start=2020-06-01&week2_start=2021-01-08",
            "2020-06-01",
            "2021-01-08",
        ),
    ] {
        let (lines, _) = csv(&app, &format!("/reports/repeat-buyer-revenue{query}")).await;
        let sql = REPEAT_BUYERS.replace("{w1}", w1).replace("{w2}", w2);
        assert_eq!(lines, app.db.strings(&sql).await, "{query}");
    }
    let (lines, _) = csv(&app, "/reports/repeat-buyer-revenue?week1_start=2020-06-01").await;
    assert_eq!(lines, ["2020-06-01,2021-01-08,0,0.00,0.00,"]);
}

#[tokio::test]
async fn json_carries_the_same_exact_values() {
    let app = app_with_events().await;
    // JSON text, not parsed: amounts keep two decimals (5788.00, not 5788.0).
    for (path, fields, quoted) in [
        (
            "/reports/repeat-buyer-revenue",
            &[
                "week1_start",
                "week2_start",
                "repeat_buyers",
                "week1_revenue",
                "week2_revenue",
                "change_pct",
            ][..],
            &["week1_start", "week2_start"][..],
        ),
        (
            "/reports/country-contribution",
            &[
                "seller_country",
                "revenue",
                "revenue_share",
                "items",
                "items_share",
            ][..],
            &["seller_country"][..],
        ),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        let (lines, _) = csv(&app, path).await;
        let expected: Vec<String> = lines
            .iter()
            .map(|line| {
                let pairs: Vec<String> = fields
                    .iter()
                    .zip(line.split(','))
                    .map(|(f, v)| match v {
                        "" => format!("\"{f}\":null"),
                        v if quoted.contains(f) => format!("\"{f}\":\"{v}\""),
                        v => format!("\"{f}\":{v}"),
                    })
                    .collect();
                format!("{{{}}}", pairs.join(","))
            })
            .collect();
        assert_eq!(text, format!("[{}]", expected.join(",")));
    }
}

#[tokio::test]
async fn analysis_parameters_are_checked_by_name() {
    let app = serve_with_timeout(TestDb::new().await, None).await;
    for (path, field) in [
        (
            "/reports/country-contribution?start_date=2021-02-30",
            "start_date",
        ),
        (
            "/reports/country-contribution?start_date=2021-02-03&end_date=2021-02-01",
            "start_date",
        ),
        (
            "/reports/top-country-relationships?week1_start=2021-01-01",
            "week1_start",
        ),
        (
            "/reports/repeat-buyer-revenue?week1_start=01/01/2021",
            "week1_start",
        ),
        (
            "/reports/repeat-buyer-revenue?start_date=2021-01-01",
            "start_date",
        ),
        ("/reports/repeat-buyer-revenue?format=xml", "format"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["invalid_params"][0]["name"], field, "{path}");
    }
    // No sales: no countries, no pair, and a week 1 of 0 (null change).
    let empty: Value = app
        .get("/reports/country-contribution")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty, json!([]));
    let empty: Value = app
        .get("/reports/top-country-relationships")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty, json!([]));
    let r = app.get("/reports/repeat-buyer-revenue?format=csv").await;
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"repeat-buyer-revenue_2021-01-01_2021-01-14.csv\""
    );
    assert_eq!(
        r.text().await.unwrap(),
        "week1_start,week2_start,repeat_buyers,week1_revenue,week2_revenue,change_pct\n2021-01-01,2021-01-08,0,0.00,0.00,\n"
    );
}
