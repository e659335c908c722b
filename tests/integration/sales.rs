//! Prototype 001's sales events over HTTP: `POST /ingest` (201 with the
//! stored event, 200 replay, 409 clash, 422 naming every field),
//! `GET /sales/{id_order}` and the cursor pages of `GET /sales`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, invalid_params, serve_with_timeout};

async fn app() -> TestApp {
    serve_with_timeout(TestDb::new().await, None).await
}

async fn ingest(app: &TestApp, body: &Value) -> (StatusCode, Option<String>, Value) {
    let r = app
        .http
        .post(format!("{}/ingest", app.address))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    (
        status,
        replayed,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// An event of `order` on `day`, in the prototype's shape.
fn event(order: &str, day: &str, category: &str, revenue: Value) -> Value {
    json!({
        "ID_ORDER": order, "ID_PRODUCT": "P-1", "ID_BUYER": "B-1", "ID_SELLER": "S-1",
        "ID_SELLER_COUNTRY": "FR", "ID_BUYER_COUNTRY": "DE",
        "DATE_PAYMENT": format!("{day} 10:15:00"), "BRAND": "Acme",
        "CATEGORY": category, "REVENUE": revenue,
    })
}

async fn count(app: &TestApp) -> i64 {
    app.db.value::<i64>("SELECT count(*) FROM sales").await
}

#[tokio::test]
async fn an_event_is_stored_once_and_replayed_as_stored() {
    let app = app().await;
    let body = event("ORD-1", "2021-01-04", "Shoes", json!(59.9));
    let (status, replayed, stored) = ingest(&app, &body).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, None), "{stored}");
    let expected = json!({
        "ID_ORDER": "ORD-1", "ID_PRODUCT": "P-1", "ID_BUYER": "B-1", "ID_SELLER": "S-1",
        "ID_SELLER_COUNTRY": "FR", "ID_BUYER_COUNTRY": "DE",
        "DATE_PAYMENT": "2021-01-04T10:15:00Z", "BRAND": "Acme",
        "CATEGORY": "shoes", "REVENUE": 59.90,
    });
    assert_eq!(stored, expected);
    // Money keeps its scale on the wire: 59.90, not 59.9, whether the
    // event is read or its write replayed.
    let text = app.get("/sales/ORD-1").await.text().await.unwrap();
    assert!(text.contains("\"REVENUE\":59.90"), "{text}");
    let replayed = app
        .http
        .post(format!("{}/ingest", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.text().await.unwrap(), text);

    // The same payload in other spellings is a replay: nothing is written.
    let mut again = body.clone();
    again["CATEGORY"] = json!("SHOES");
    again["REVENUE"] = json!("59.90");
    again["DATE_PAYMENT"] = json!("2021-01-04T11:15:00+01:00");
    let (status, replayed, replay) = ingest(&app, &again).await;
    assert_eq!(
        (status, replayed.as_deref(), &replay),
        (StatusCode::OK, Some("true"), &expected)
    );
    // A different payload under the same order is a clash, not a 500.
    let (status, _, problem) =
        ingest(&app, &event("ORD-1", "2021-01-04", "shoes", json!(60))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:clue:problem:conflict");
    assert_eq!(count(&app).await, 1);
    let revenue: String = app.db.value("SELECT \"REVENUE\"::text FROM sales").await;
    assert_eq!(revenue, "59.90");
}

#[tokio::test]
async fn invalid_events_are_422s_naming_every_field_and_write_nothing() {
    let app = app().await;
    let check = |body: Value, expect: Vec<(&'static str, &'static str)>| {
        let app = &app;
        async move {
            let (status, _, p) = ingest(app, &body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {p}");
            assert_eq!(p["type"], "urn:clue:problem:invalid-event");
            let named: Vec<(String, String)> = invalid_params(&p);
            for (name, reason) in &expect {
                assert!(
                    named.iter().any(|(n, r)| n == name && r.contains(reason)),
                    "{name}: {reason} not in {named:?}"
                );
            }
            assert_eq!(named.len(), expect.len(), "{named:?}");
        }
    };
    check(
        json!({}),
        vec![
            ("ID_ORDER", "is required"),
            ("ID_PRODUCT", "is required"),
            ("ID_BUYER", "is required"),
            ("ID_SELLER", "is required"),
            ("ID_SELLER_COUNTRY", "is required"),
            ("ID_BUYER_COUNTRY", "is required"),
            ("DATE_PAYMENT", "is required"),
            ("CATEGORY", "is required"),
            ("REVENUE", "is required"),
        ],
    )
    .await;
    let mut bad = event("ORD-2", "2021-01-04", "toys", json!(-3));
    bad["DATE_PAYMENT"] = json!("04/01/2021");
    bad["ID_BUYER"] = json!(12);
    bad["extra"] = json!("x");
    check(
        bad,
        vec![
            ("CATEGORY", "must be one of"),
            ("REVENUE", "must not be negative"),
            ("DATE_PAYMENT", "is not a date-time"),
            ("ID_BUYER", "must be a string"),
            ("extra", "is not a field"),
        ],
    )
    .await;
    check(
        event("ORD-3", "2021-01-04", "shoes", json!(1.005)),
        vec![("REVENUE", "more than 2 decimal places")],
    )
    .await;
    check(
        event(&"X".repeat(65), "2021-02-30", "shoes", json!("NaN")),
        vec![
            ("ID_ORDER", "too long"),
            ("DATE_PAYMENT", "is not a date-time"),
            ("REVENUE", "must be a number"),
        ],
    )
    .await;
    // Not an object, not JSON, too large: 400 and 413 naming the body.
    for (body, status) in [
        ("[1]".to_owned(), StatusCode::BAD_REQUEST),
        ("{".to_owned(), StatusCode::BAD_REQUEST),
        (
            format!("{{\"BRAND\":\"{}\"}}", "x".repeat(70_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let r = app
            .http
            .post(format!("{}/ingest", app.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }
    assert_eq!(count(&app).await, 0);
}

#[tokio::test]
async fn concurrent_duplicates_of_an_order_write_once() {
    let app = app().await;
    let body = event("ORD-9", "2021-01-05", "bags", json!(10));
    let posts = (0..16).map(|_| ingest(&app, &body));
    let answers = futures_util::future::join_all(posts).await;
    let created = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::CREATED)
        .count();
    let replays = answers
        .iter()
        .filter(|(s, r, _)| *s == StatusCode::OK && r.as_deref() == Some("true"))
        .count();
    assert_eq!((created, replays), (1, 15));
    assert!(answers.iter().all(|(_, _, e)| e["REVENUE"] == json!(10.00)));
    assert_eq!(count(&app).await, 1);
}

#[tokio::test]
async fn one_sale_by_its_order_or_a_404() {
    let app = app().await;
    ingest(&app, &event("A/B 1", "2021-01-04", "bags", json!(1))).await;
    let r = app.get("/sales/A%2FB%201").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["ID_ORDER"], "A/B 1");
    let r = app.get("/sales/nope").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["detail"],
        "no such resource: sale \"nope\""
    );
}

#[tokio::test]
async fn pages_follow_the_cursor_through_every_matching_event_once() {
    let app = app().await;
    // Two events share each instant: the key breaks the tie.
    for i in 0..7 {
        let day = format!("2021-01-{:02}", 1 + i / 2);
        let category = if i % 3 == 0 { "Shoes" } else { "bags" };
        ingest(&app, &event(&format!("O{i}"), &day, category, json!(i))).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = "/sales?limit=2".to_owned();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.get(&q).await.json().await.unwrap();
        pages += 1;
        for e in page["items"].as_array().unwrap() {
            seen.push(e["ID_ORDER"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["O0", "O1", "O2", "O3", "O4", "O5", "O6"]);
    assert_eq!(pages, 4);

    // Events through /ingest keep the rollups exact: revenue per category
    // from the day rollup equals the facts.
    let r = app
        .http
        .post(format!("{}/api/v1/query", app.address))
        .json(&json!({"dataset": "sales", "measures": ["revenue"], "dimensions": ["CATEGORY"], "order": [{"field": "CATEGORY"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let served = r.headers()["clue-served-from"].to_str().unwrap().to_owned();
    assert!(served.contains("sales_day_category"), "{served}");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer["rows"],
        json!([{"CATEGORY": "bags", "revenue": 12.00}, {"CATEGORY": "shoes", "revenue": 9.00}])
    );

    let ids = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["ID_ORDER"].as_str().unwrap().to_owned())
            .collect()
    };
    let shoes: Value = app.get("/sales?category=SHOES").await.json().await.unwrap();
    assert_eq!(ids(shoes), ["O0", "O3", "O6"]);
    let days: Value = app
        .get("/sales?start_date=2021-01-02&end_date=2021-01-03")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(days), ["O2", "O3", "O4", "O5"]);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=zz", "cursor"),
        ("start_date=2021-13-01", "start_date"),
        ("start_date=2021-01-05&end_date=2021-01-01", "start_date"),
        ("colour=red", "colour"),
        ("limit=1&limit=2", "limit"),
    ] {
        let r = app.get(&format!("/sales?{query}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["invalid_params"][0]["name"], field, "{query}");
    }
}

/// `/feedback` of a server once it equals `expect`, polling for up to 5 s
/// (a notice reaches every server within moments of a commit).
async fn feedback_becomes(http: &reqwest::Client, address: &str, query: &str, expect: &Value) {
    let mut last = Value::Null;
    for _ in 0..100 {
        let r = http
            .get(format!("{address}/feedback{query}"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            last = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            if last == *expect {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{address}/feedback{query}: {last} never became {expect}");
}

/// The top three categories by the facts, as `/feedback` orders them.
async fn top_three_from_facts(db: &TestDb, condition: &str) -> Value {
    let rows = db
        .strings(&format!(
            r#"SELECT json_build_object('category', "CATEGORY", 'sales_count', count(*), 'total_revenue', sum("REVENUE"))::text
               FROM sales WHERE {condition} GROUP BY "CATEGORY"
               ORDER BY count(*) DESC, sum("REVENUE") DESC, "CATEGORY" LIMIT 3"#
        ))
        .await;
    Value::Array(
        rows.iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect(),
    )
}

#[tokio::test]
async fn feedback_counts_writes_through_either_server_and_imports_and_survives_a_restart() {
    let app = app().await;
    let (other, _stop_other) = crate::helpers::another_server(&app.db).await;
    feedback_becomes(&app.http, &other, "", &json!([])).await;
    // Through the first server: boys 4, shoes 3, bags 2, clothing 1.
    let mut n = 0;
    for (category, times, revenue) in [
        ("boys", 4, "1.10"),
        ("Shoes", 3, "20.05"),
        ("bags", 2, "7"),
        ("clothing", 1, "99.99"),
    ] {
        for _ in 0..times {
            n += 1;
            let day = format!("2021-01-{:02}", 1 + n % 9);
            let (status, _, _) = ingest(
                &app,
                &event(&format!("F{n}"), &day, category, json!(revenue)),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
        }
    }
    let expect = top_three_from_facts(&app.db, "true").await;
    assert_eq!(
        expect,
        json!([
            {"category": "boys", "sales_count": 4, "total_revenue": 4.40},
            {"category": "shoes", "sales_count": 3, "total_revenue": 60.15},
            {"category": "bags", "sales_count": 2, "total_revenue": 14.00},
        ])
    );
    feedback_becomes(&app.http, &other, "", &expect).await;
    feedback_becomes(&app.http, &app.address, "", &expect).await;

    // Through the second server, and by `clue import-data`: clothing overtakes.
    for i in 0..2 {
        let r = app
            .http
            .post(format!("{other}/ingest"))
            .json(&event(
                &format!("G{i}"),
                "2021-01-20",
                "clothing",
                json!("5.00"),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let dir = crate::helpers::scratch_dir();
    let csv = crate::helpers::write_file(
        dir.path(),
        "sales.csv",
        "ID_ORDER,ID_PRODUCT,ID_BUYER,ID_SELLER,ID_SELLER_COUNTRY,ID_BUYER_COUNTRY,DATE_PAYMENT,BRAND,CATEGORY,REVENUE\n\
         H1,P,B,S,FR,DE,2021-02-01 08:00:00,,clothing,1.50\n\
         H2,P,B,S,FR,DE,2021-02-02 08:00:00,,clothing,2.50\n",
    );
    app.db
        .clue(&["import-data", "-c", csv.to_str().unwrap(), "-t", "sales"])
        .ok();
    let expect = top_three_from_facts(&app.db, "true").await;
    assert_eq!(expect[0]["category"], "clothing");
    assert_eq!(expect[0]["sales_count"], 5);
    feedback_becomes(&app.http, &app.address, "", &expect).await;
    feedback_becomes(&app.http, &other, "", &expect).await;

    // Filters: a category (any case) and a range of UTC days.
    let only = top_three_from_facts(&app.db, r#""CATEGORY" = 'shoes'"#).await;
    feedback_becomes(&app.http, &app.address, "?category=SHOES", &only).await;
    let days = top_three_from_facts(
        &app.db,
        r#""DATE_PAYMENT" >= '2021-01-03Z' AND "DATE_PAYMENT" < '2021-01-06Z'"#,
    )
    .await;
    feedback_becomes(
        &app.http,
        &app.address,
        "?start_date=2021-01-03&end_date=2021-01-05",
        &days,
    )
    .await;

    // A server started now reads it all from the database.
    let (fresh, _stop_fresh) = crate::helpers::another_server(&app.db).await;
    feedback_becomes(&app.http, &fresh, "", &expect).await;

    for (query, field) in [
        ("?category=toys", "category"),
        ("?start_date=2021-02-30", "start_date"),
        ("?limit=3", "limit"),
    ] {
        let r = app.get(&format!("/feedback{query}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["invalid_params"][0]["name"], field, "{query}");
    }
}

#[tokio::test]
async fn countries_load_with_import_data_and_bad_rows_are_named() {
    let db = TestDb::new().await;
    let dir = crate::helpers::scratch_dir();
    let good = crate::helpers::write_file(
        dir.path(),
        "country.csv",
        "ID_COUNTRY,COUNTRY_NAME,CONTINENT\nFR,France,Europe\nJP,Japan,\n",
    );
    db.clue(&["import-data", "-c", good.to_str().unwrap(), "-t", "country"])
        .ok();
    let rows = db
        .strings(r#"SELECT concat_ws('|', "ID_COUNTRY", "COUNTRY_NAME", coalesce("CONTINENT", 'null')) FROM country ORDER BY 1"#)
        .await;
    assert_eq!(rows, ["FR|France|Europe", "JP|Japan|null"]);
    let bad = crate::helpers::write_file(
        dir.path(),
        "bad.csv",
        "ID_COUNTRY,COUNTRY_NAME,CONTINENT\nDE,Germany,Europe\nIT,,Europe\n",
    );
    db.clue(&["import-data", "-c", bad.to_str().unwrap(), "-t", "country"])
        .fails_with(
            4,
            "line 3, column 2 (COUNTRY_NAME): is empty but a value is required",
        );
    assert_eq!(db.value::<i64>("SELECT count(*) FROM country").await, 2);
}

#[tokio::test]
async fn import_data_claims_each_order_once_like_ingest() {
    let app = app().await;
    let dir = crate::helpers::scratch_dir();
    let header = "ID_ORDER,ID_PRODUCT,ID_BUYER,ID_SELLER,ID_SELLER_COUNTRY,ID_BUYER_COUNTRY,DATE_PAYMENT,BRAND,CATEGORY,REVENUE\n";
    let first = crate::helpers::write_file(
        dir.path(),
        "first.csv",
        format!(
            "{header}K1,P,B,S,FR,DE,2021-02-01 08:00:00,,shoes,1.5\nK2,P,B,S,FR,DE,2021-02-02 08:00:00,Acme,bags,2.50\n"
        ),
    );
    app.db
        .clue(&["import-data", "-c", first.to_str().unwrap(), "-t", "sales"])
        .ok();
    // /ingest knows the imported orders: the same values are a replay.
    let mut event = json!({
        "ID_ORDER": "K1", "ID_PRODUCT": "P", "ID_BUYER": "B", "ID_SELLER": "S",
        "ID_SELLER_COUNTRY": "FR", "ID_BUYER_COUNTRY": "DE",
        "DATE_PAYMENT": "2021-02-01T08:00:00Z", "CATEGORY": "shoes", "REVENUE": 1.50,
    });
    let post = |event: &Value| {
        app.http
            .post(format!("{}/ingest", app.address))
            .json(event)
            .send()
    };
    let r = post(&event).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    event["CATEGORY"] = json!("bags");
    assert_eq!(post(&event).await.unwrap().status(), StatusCode::CONFLICT);

    // A file with an order written before, or with one twice, loads nothing.
    for (name, rows, key) in [
        (
            "again.csv",
            "K3,P,B,S,FR,DE,2021-02-03 08:00:00,,shoes,1\nK2,P,B,S,FR,DE,2021-02-02 08:00:00,Acme,bags,2.50\n",
            "K2",
        ),
        (
            "twice.csv",
            "K4,P,B,S,FR,DE,2021-02-03 08:00:00,,shoes,1\nK4,P,B,S,FR,DE,2021-02-03 08:00:00,,shoes,1\n",
            "K4",
        ),
    ] {
        let file = crate::helpers::write_file(dir.path(), name, format!("{header}{rows}"));
        app.db
            .clue(&["import-data", "-c", file.to_str().unwrap(), "-t", "sales"])
            .fails_with(
                4,
                &format!(
                    "ID_ORDER {key} was written before, or is in the file twice; nothing was loaded"
                ),
            );
    }
    assert_eq!(
        app.db
            .strings(r#"SELECT "ID_ORDER" FROM sales ORDER BY 1"#)
            .await,
        ["K1", "K2"]
    );
    assert_eq!(
        app.db
            .value::<i64>("SELECT count(*) FROM clue.idempotency WHERE scope = 'sales'")
            .await,
        2
    );
}
