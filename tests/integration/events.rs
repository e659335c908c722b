//! `POST /api/v1/datasets/{name}/events`: JSON arrays, NDJSON and CSV for
//! any dataset, all or nothing or `on_error=skip`, keys of keyed datasets
//! claimed once, and the Idempotency-Key (replay, 422 on another body, 409
//! in flight).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, invalid_params, serve_with_timeout};

async fn app() -> TestApp {
    serve_with_timeout(TestDb::new().await, None).await
}

async fn send(
    app: &TestApp,
    dataset: &str,
    query: &str,
    content_type: &str,
    body: String,
    key: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut req = app
        .http
        .post(format!(
            "{}/api/v1/datasets/{dataset}/events{query}",
            app.address
        ))
        .header("content-type", content_type)
        .body(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, replayed, r.text().await.unwrap())
}

fn sale(order: &str, category: &str, revenue: &str) -> Value {
    json!({
        "ID_ORDER": order, "ID_PRODUCT": "P", "ID_BUYER": "B", "ID_SELLER": "S",
        "ID_SELLER_COUNTRY": "FR", "ID_BUYER_COUNTRY": "DE",
        "DATE_PAYMENT": "2021-03-04T10:00:00Z", "CATEGORY": category, "REVENUE": revenue,
    })
}

async fn sales_count(app: &TestApp) -> i64 {
    app.db.value::<i64>("SELECT count(*) FROM sales").await
}

#[tokio::test]
async fn json_ndjson_and_csv_bodies_are_written_whole_with_rollups_exact() {
    let app = app().await;
    let body = json!([sale("A1", "shoes", "10.10"), sale("A2", "bags", "0.05")]).to_string();
    let (status, _, answer) = send(&app, "sales", "", "application/json", body, None).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({"dataset": "sales", "received": 2, "written": 2, "rejected": []})
    );
    let ndjson = format!(
        "{}\n\n{}\n",
        sale("A3", "shoes", "1"),
        sale("A4", "boys", "2.50")
    );
    let (status, _, _) = send(&app, "sales", "", "application/x-ndjson", ndjson, None).await;
    assert_eq!(status, StatusCode::CREATED);
    let csv = "ID_ORDER,ID_PRODUCT,ID_BUYER,ID_SELLER,ID_SELLER_COUNTRY,ID_BUYER_COUNTRY,DATE_PAYMENT,CATEGORY,REVENUE\n\
               A5,P,B,S,FR,DE,2021-03-05 09:00:00,shoes,3.33\n";
    let (status, _, _) = send(&app, "sales", "", "text/csv", csv.into(), None).await;
    assert_eq!(status, StatusCode::CREATED);
    // Learning logs are a dataset too.
    let logs = json!([{"request_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "user_id": "ada", "word_count": 3, "timestamp": "2024-01-01T10:00:00Z"}]);
    let (status, _, _) = send(
        &app,
        "learning_log",
        "",
        "application/json",
        logs.to_string(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        app.db
            .value::<i64>("SELECT count(*) FROM learning_log")
            .await,
        1
    );

    let facts = app
        .db
        .strings(r#"SELECT "CATEGORY" || ' ' || sum("REVENUE") FROM sales GROUP BY "CATEGORY" ORDER BY 1"#)
        .await;
    assert_eq!(facts, ["bags 0.05", "boys 2.50", "shoes 14.43"]);
    let r = app
        .http
        .post(format!("{}/api/v1/query", app.address))
        .json(&json!({"dataset": "sales", "measures": ["revenue"], "dimensions": ["CATEGORY"], "order": [{"field": "CATEGORY"}]}))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["clue-served-from"]
            .to_str()
            .unwrap()
            .contains("rollup")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#"[{"CATEGORY":"bags","revenue":0.05},{"CATEGORY":"boys","revenue":2.50},{"CATEGORY":"shoes","revenue":14.43}]"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_bad_event_writes_nothing_unless_skipped() {
    let app = app().await;
    let body = json!([
        sale("B1", "shoes", "1"),
        sale("B2", "toys", "-1"),
        {"ID_ORDER": "B3", "colour": "red"},
        "not an object",
        sale("B4", "bags", "2"),
    ])
    .to_string();
    let (status, _, problem) =
        send(&app, "sales", "", "application/json", body.clone(), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let named = invalid_params(&serde_json::from_str(&problem).unwrap());
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["[1].CATEGORY", "[1].REVENUE", "[2].event", "[3].event"]
    );
    assert!(
        named[2].1.contains("\"colour\" is not a column of sales"),
        "{named:?}"
    );
    assert_eq!(sales_count(&app).await, 0);

    let (status, _, answer) = send(
        &app,
        "sales",
        "?on_error=skip",
        "application/json",
        body,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        (answer["received"].clone(), answer["written"].clone()),
        (json!(5), json!(2))
    );
    let rows: Vec<i64> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row"].as_i64().unwrap())
        .collect();
    assert_eq!(rows, [1, 2, 3]);
    assert_eq!(sales_count(&app).await, 2);

    // A key written before (here by /ingest's path) is a 409, nothing written.
    let again = json!([sale("B9", "shoes", "1"), sale("B1", "shoes", "1")]).to_string();
    let (status, _, problem) = send(&app, "sales", "", "application/json", again, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem.contains("ID_ORDER B1 was written before"),
        "{problem}"
    );
    assert_eq!(sales_count(&app).await, 2);
    // The same key twice in one request, among new ones: nothing written.
    let twice = json!([
        sale("B7", "shoes", "1"),
        sale("B8", "bags", "1"),
        sale("B7", "shoes", "1")
    ]);
    let (status, _, problem) = send(
        &app,
        "sales",
        "",
        "application/json",
        twice.to_string(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(problem.contains("ID_ORDER B7"), "{problem}");
    assert_eq!(sales_count(&app).await, 2);
    assert_eq!(
        app.db
            .value::<i64>("SELECT count(*) FROM clue.idempotency WHERE key IN ('B7', 'B8')")
            .await,
        0,
        "no claim outlives the refused request"
    );

    for (dataset, query, content_type, body, status, field) in [
        (
            "nope",
            "",
            "application/json",
            "[]",
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            "sales",
            "?on_error=maybe",
            "application/json",
            "[]",
            StatusCode::BAD_REQUEST,
            "on_error",
        ),
        (
            "sales",
            "?x=1",
            "application/json",
            "[]",
            StatusCode::BAD_REQUEST,
            "x",
        ),
        (
            "sales",
            "",
            "application/json",
            "{",
            StatusCode::BAD_REQUEST,
            "body",
        ),
        (
            "sales",
            "",
            "application/xml",
            "<a/>",
            StatusCode::BAD_REQUEST,
            "content-type",
        ),
        ("sales", "", "text/csv", "", StatusCode::CREATED, ""),
    ] {
        let (got, _, p) = send(&app, dataset, query, content_type, body.into(), None).await;
        assert_eq!(got, status, "{dataset}{query} {body}: {p}");
        if !field.is_empty() {
            let p: Value = serde_json::from_str(&p).unwrap();
            assert_eq!(p["invalid_params"][0]["name"], field);
        }
    }
    let (got, _, p) = send(
        &app,
        "sales",
        "",
        "application/x-ndjson",
        "{}\n".repeat(100_001),
        None,
    )
    .await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert!(p.contains("more than 100000 events"), "{p}");
    let huge = format!("[{}]", vec!["{}"; 6_000_000].join(","));
    let (got, _, _) = send(&app, "sales", "", "application/json", huge, None).await;
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn an_idempotency_key_replays_refuses_another_body_and_writes_once() {
    let app = app().await;
    let body = json!([sale("C1", "shoes", "1"), sale("C2", "bags", "2")]).to_string();
    let (status, replayed, first) = send(
        &app,
        "sales",
        "",
        "application/json",
        body.clone(),
        Some("k-1"),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::CREATED, None));
    let (status, replayed, again) = send(
        &app,
        "sales",
        "",
        "application/json",
        body.clone(),
        Some("k-1"),
    )
    .await;
    assert_eq!(
        (status, replayed.as_deref()),
        (StatusCode::CREATED, Some("true"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap(),
        serde_json::from_str::<Value>(&first).unwrap()
    );
    let other = json!([sale("C3", "shoes", "1")]).to_string();
    let (status, _, problem) =
        send(&app, "sales", "", "application/json", other, Some("k-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem.contains("Idempotency-Key"), "{problem}");
    assert_eq!(sales_count(&app).await, 2);

    // Concurrent repeats: one writes; the others replay or find it in flight.
    let body = json!([sale("D1", "shoes", "1")]).to_string();
    let sends = (0..8).map(|_| {
        send(
            &app,
            "sales",
            "",
            "application/json",
            body.clone(),
            Some("k-2"),
        )
    });
    let answers = futures_util::future::join_all(sends).await;
    let fresh = answers
        .iter()
        .filter(|(s, r, _)| *s == StatusCode::CREATED && r.is_none())
        .count();
    assert_eq!(fresh, 1, "{answers:?}");
    assert!(answers.iter().all(|(s, r, _)| (*s == StatusCode::CREATED
        && (r.is_none() || r.as_deref() == Some("true")))
        || *s == StatusCode::CONFLICT));
    assert_eq!(sales_count(&app).await, 3);

    let (status, _, p) = send(
        &app,
        "sales",
        "",
        "application/json",
        "[]".into(),
        Some(&"k".repeat(201)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(p.contains("Idempotency-Key"), "{p}");

    // A request whose every event is refused still takes its key: the same
    // key with another body is a 422, the same body a replay.
    let refused = json!([sale("R1", "toys", "1")]).to_string();
    let (status, replayed, _) = send(
        &app,
        "sales",
        "?on_error=skip",
        "application/json",
        refused.clone(),
        Some("all-refused"),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::CREATED, None));
    let (status, replayed, _) = send(
        &app,
        "sales",
        "?on_error=skip",
        "application/json",
        refused,
        Some("all-refused"),
    )
    .await;
    assert_eq!(
        (status, replayed.as_deref()),
        (StatusCode::CREATED, Some("true"))
    );
    let other = json!([sale("R2", "toys", "1")]).to_string();
    let (status, _, _) = send(
        &app,
        "sales",
        "?on_error=skip",
        "application/json",
        other,
        Some("all-refused"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn an_event_is_the_same_payload_whichever_way_it_came() {
    let app = app().await;
    let csv = "CATEGORY,ID_ORDER,ID_PRODUCT,ID_BUYER,ID_SELLER,ID_SELLER_COUNTRY,ID_BUYER_COUNTRY,DATE_PAYMENT,REVENUE\n\
               shoes,C1,P,B,S,FR,DE,2021-03-05 09:00:00,3.3\n";
    let (status, _, answer) = send(&app, "sales", "", "text/csv", csv.into(), None).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    // The same stored values, spelled otherwise and in another field order:
    // /ingest sees the batch's event as its own, a replay.
    let ingest = |event: Value| {
        app.http
            .post(format!("{}/ingest", app.address))
            .json(&event)
            .send()
    };
    let mut event = sale("C1", "SHOES", "3.30");
    event["DATE_PAYMENT"] = json!("2021-03-05T10:00:00+01:00");
    event["ID_BUYER"] = json!(" B ");
    let r = ingest(event.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let stored: Value = r.json().await.unwrap();
    assert_eq!(
        (stored["REVENUE"].clone(), stored["DATE_PAYMENT"].clone()),
        (json!(3.30), json!("2021-03-05T09:00:00Z"))
    );
    event["REVENUE"] = json!("3.31");
    let r = ingest(event).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(sales_count(&app).await, 1);

    // A header naming no column refuses the body, not each row.
    let csv = "ID_ORDER,colour\nC2,red\n";
    let (status, _, problem) = send(&app, "sales", "", "text/csv", csv.into(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let named = invalid_params(&serde_json::from_str(&problem).unwrap());
    assert_eq!(named[0].0, "body");
    assert!(
        named[0]
            .1
            .contains("header column 2 (\"colour\") is not a column of sales"),
        "{named:?}"
    );
}

#[tokio::test]
async fn a_reference_table_loads_over_the_api_and_answers_queries_without_time() {
    let app = app().await;
    let countries = json!([
        {"ID_COUNTRY": "FR", "COUNTRY_NAME": "France", "CONTINENT": "Europe"},
        {"ID_COUNTRY": "DE", "COUNTRY_NAME": "Germany", "CONTINENT": "Europe"},
        {"ID_COUNTRY": "JP", "COUNTRY_NAME": "Japan", "CONTINENT": "Asia"},
    ]);
    let (status, _, answer) = send(
        &app,
        "country",
        "",
        "application/json",
        countries.to_string(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let csv = "ID_COUNTRY,COUNTRY_NAME\nBR,Brazil\n";
    let (status, _, _) = send(&app, "country", "", "text/csv", csv.into(), None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        app.db
            .strings(r#"SELECT concat_ws('|', "ID_COUNTRY", "COUNTRY_NAME", coalesce("CONTINENT", '-')) FROM country ORDER BY 1"#)
            .await,
        ["BR|Brazil|-", "DE|Germany|Europe", "FR|France|Europe", "JP|Japan|Asia"]
    );
    // A country present already: the table's primary key refuses the batch.
    let again = json!([{"ID_COUNTRY": "IT", "COUNTRY_NAME": "Italy"}, {"ID_COUNTRY": "FR", "COUNTRY_NAME": "France"}]);
    let (status, _, problem) = send(
        &app,
        "country",
        "",
        "application/json",
        again.to_string(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(problem.contains("is there already"), "{problem}");
    assert_eq!(app.db.value::<i64>("SELECT count(*) FROM country").await, 4);

    let query = |body: Value| {
        app.http
            .post(format!("{}/api/v1/query", app.address))
            .json(&body)
            .send()
    };
    let r = query(json!({"dataset": "country", "measures": ["countries"], "dimensions": ["CONTINENT"], "order": [{"field": "CONTINENT"}]}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer["rows"],
        json!([{"CONTINENT": "Asia", "countries": 1}, {"CONTINENT": "Europe", "countries": 2}, {"CONTINENT": null, "countries": 1}])
    );
    for (body, field) in [
        (
            json!({"dataset": "country", "measures": ["countries"], "granularity": "month"}),
            "granularity",
        ),
        (
            json!({"dataset": "country", "measures": ["countries"], "start_date": "2021-01-01"}),
            "start_date",
        ),
    ] {
        let r = query(body).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["invalid_params"][0]["name"], field);
        assert!(
            p["invalid_params"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("has no time column"),
            "{p}"
        );
    }
}
