//! Prototype 003's learning logs over HTTP: records keyed by request_id
//! (201, 409 on a repeat, 400 naming fields, JSON, form and multipart), and
//! per-user summaries with every period of the range, in any zone.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, invalid_params, serve_with_timeout};

async fn app() -> TestApp {
    serve_with_timeout(TestDb::new().await, None).await
}

async fn post(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let r = app
        .http
        .post(format!("{}/recordsjson", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Records `words` for `user` at `at`, with a fresh request id.
async fn record(app: &TestApp, user: &str, words: i64, at: &str) {
    let (status, body) = post(
        app,
        json!({"request_id": uuid::Uuid::new_v4().to_string(), "user_id": user, "word_count": words, "timestamp": at}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn summary(app: &TestApp, user: &str, query: &str) -> (StatusCode, Value) {
    let r = app.get(&format!("/users/{user}/summary?{query}")).await;
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// The averages of a summary, period by period.
fn averages(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["period"].as_str().unwrap().to_owned(),
                p["average_words_learned"].to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn records_are_written_once_per_request_id() {
    let app = app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"request_id": id, "user_id": "ada", "word_count": 42, "timestamp": "2024-01-10T01:00:00+11:00"});
    let (status, empty) = post(&app, body.clone()).await;
    assert_eq!((status, empty), (StatusCode::CREATED, Value::Null));
    let (status, problem) = post(&app, body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:clue:problem:conflict");
    // The same id with another payload is a conflict too.
    let (status, _) = post(
        &app,
        json!({"request_id": id, "user_id": "ada", "word_count": 7}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let stored: String = app
        .db
        .value(
            "SELECT concat_ws(' ', request_id, user_id, word_count, \"timestamp\" AT TIME ZONE 'UTC') FROM learning_log",
        )
        .await;
    // The offset is honoured: 01:00 at +11:00 is January 9 in UTC.
    assert_eq!(stored, format!("{id} ada 42 2024-01-09 14:00:00"));
}

#[tokio::test]
async fn bad_bodies_name_every_field_at_fault_and_write_nothing() {
    let app = app().await;
    let check = |body: Value, expect: Vec<(&'static str, &'static str)>| {
        let app = &app;
        async move {
            let (status, p) = post(app, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {p}");
            let got: Vec<(String, String)> = invalid_params(&p);
            let expect: Vec<(String, String)> = expect
                .into_iter()
                .map(|(n, r)| (n.to_owned(), r.to_owned()))
                .collect();
            assert_eq!(got, expect, "{body}");
        }
    };
    check(
        json!({}),
        vec![
            ("request_id", "is required"),
            ("user_id", "is required"),
            ("word_count", "is required"),
        ],
    )
    .await;
    check(
        json!({"request_id": "nope", "user_id": "u", "word_count": 1, "timestamp": "yesterday", "colour": "red"}),
        vec![
            (
                "colour",
                "is not a field of a record (request_id, user_id, word_count, timestamp)",
            ),
            ("request_id", "is not a UUID"),
            (
                "timestamp",
                "is not an ISO 8601 date-time such as 2024-01-10T01:00:00+11:00",
            ),
        ],
    )
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    check(
        json!({"request_id": id, "user_id": "u", "word_count": -1}),
        vec![("word_count", "-1 is below the minimum 0")],
    )
    .await;
    check(
        json!({"request_id": id, "user_id": "u", "word_count": "12"}),
        vec![("word_count", "must be a whole number")],
    )
    .await;
    check(
        json!({"request_id": id, "user_id": "u", "word_count": 1.5}),
        vec![("word_count", "\"1.5\" is not a whole number")],
    )
    .await;
    // Not JSON at all, and too large.
    let r = app
        .http
        .post(format!("{}/recordsjson", app.address))
        .header("content-type", "application/json")
        .body("{\"request_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app
        .http
        .post(format!("{}/recordsjson", app.address))
        .header("content-type", "application/json")
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing was written, and the rejected id is still free.
    assert_eq!(
        app.db
            .value::<i64>("SELECT count(*) FROM learning_log")
            .await,
        0
    );
    let (status, _) = post(
        &app,
        json!({"request_id": id, "user_id": "u", "word_count": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn forms_and_multipart_bodies_are_records_too() {
    let app = app().await;
    let url = format!("{}/recordsjson", app.address);
    let form = format!(
        "request_id={}&user_id=grace&word_count=5&timestamp=2024-02-01T10%3A00%3A00Z",
        uuid::Uuid::new_v4()
    );
    let r = app
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let boundary = "XbOuNdArY";
    let multipart = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"request_id\"\r\n\r\n{id}\r\n--{b}\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\ngrace\r\n--{b}\r\nContent-Disposition: form-data; name=\"word_count\"\r\n\r\n7\r\n--{b}--\r\n",
        b = boundary,
        id = uuid::Uuid::new_v4()
    );
    let r = app
        .http
        .post(&url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(
        app.db
            .value::<i64>("SELECT sum(word_count) FROM learning_log WHERE user_id = 'grace'")
            .await,
        12
    );
}

#[tokio::test]
async fn concurrent_duplicates_write_once() {
    let app = app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"request_id": id, "user_id": "u", "word_count": 3});
    let posts = (0..16).map(|_| post(&app, body.clone()));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT)
    );
    assert_eq!(
        app.db
            .value::<i64>("SELECT count(*) FROM learning_log")
            .await,
        1
    );
}

#[tokio::test]
async fn summaries_fill_every_period_and_average_exactly() {
    let app = app().await;
    record(&app, "ada", 42, "2024-01-02T09:00:00Z").await;
    record(&app, "ada", 50, "2024-01-05T08:00:00Z").await;
    record(&app, "ada", 70, "2024-01-05T20:00:00Z").await;
    record(&app, "bob", 1000, "2024-01-02T09:00:00Z").await;
    // A day with 42 words between two empty days.
    let (status, days) =
        summary(&app, "ada", "from=2024-01-01&to=2024-01-03&granularity=day").await;
    assert_eq!(status, StatusCode::OK, "{days}");
    assert_eq!(
        averages(&days),
        [
            ("2024-01-01T00:00:00Z".to_owned(), "0".to_owned()),
            ("2024-01-02T00:00:00Z".to_owned(), "42".to_owned()),
            ("2024-01-03T00:00:00Z".to_owned(), "0".to_owned()),
        ]
    );
    // Two records of 50 and 70 on one day average 60; bob is not ada. (A
    // date is its midnight: the end of the day is a date-time.)
    let (_, day) = summary(
        &app,
        "ada",
        "from=2024-01-05&to=2024-01-05T23:59:59&granularity=day",
    )
    .await;
    assert_eq!(
        averages(&day),
        [("2024-01-05T00:00:00Z".to_owned(), "60".to_owned())]
    );
    let (_, month) = summary(
        &app,
        "ada",
        "from=2024-01-01&to=2024-02-15&granularity=month",
    )
    .await;
    assert_eq!(
        averages(&month),
        [
            ("2024-01-01T00:00:00Z".to_owned(), "54".to_owned()),
            ("2024-02-01T00:00:00Z".to_owned(), "0".to_owned()),
        ]
    );
    let (_, hours) = summary(
        &app,
        "ada",
        "from=2024-01-05T07:30:00Z&to=2024-01-05T09:00:00Z&granularity=hour",
    )
    .await;
    assert_eq!(
        averages(&hours),
        [
            ("2024-01-05T07:00:00Z".to_owned(), "0".to_owned()),
            ("2024-01-05T08:00:00Z".to_owned(), "50".to_owned()),
            ("2024-01-05T09:00:00Z".to_owned(), "0".to_owned()),
        ]
    );
    // In a zone: periods start at its midnights, written with its offset;
    // 20:00Z on January 5 is January 6 in Kolkata.
    let (_, kolkata) = summary(
        &app,
        "ada",
        "from=2024-01-05&to=2024-01-06T23:59:59&granularity=day&tz=Asia/Kolkata",
    )
    .await;
    assert_eq!(
        averages(&kolkata),
        [
            ("2024-01-05T00:00:00+05:30".to_owned(), "50".to_owned()),
            ("2024-01-06T00:00:00+05:30".to_owned(), "70".to_owned()),
        ]
    );
    let (_, bob) = summary(&app, "bob", "from=2024-01-02&to=2024-01-03&granularity=day").await;
    assert_eq!(
        averages(&bob),
        [
            ("2024-01-02T00:00:00Z".to_owned(), "1000".to_owned()),
            ("2024-01-03T00:00:00Z".to_owned(), "0".to_owned()),
        ]
    );
}

#[tokio::test]
async fn summary_parameters_are_checked() {
    let app = app().await;
    for (query, name, reason) in [
        (
            "from=2024-01-03&to=2024-01-01&granularity=day",
            "from",
            "is after to",
        ),
        (
            "from=2024-01-01&to=2024-01-03&granularity=fortnight",
            "granularity",
            "\"fortnight\" is not hour, day, week or month",
        ),
        (
            "from=2024-01-01&to=2024-01-03&granularity=day&tz=Mars/Olympus",
            "tz",
            "\"Mars/Olympus\" is not an IANA time zone name",
        ),
        ("to=2024-01-03&granularity=day", "from", "is required"),
        (
            "from=soon&to=2024-01-03&granularity=day",
            "from",
            "\"soon\" is not a date (YYYY-MM-DD) or a date-time (ISO 8601)",
        ),
        (
            "from=1900-01-01&to=2024-01-03&granularity=hour",
            "to",
            "the range has more than 10000 periods of a hour; narrow it or ask for a coarser granularity",
        ),
        (
            "from=2024-01-01&to=2024-01-03&granularity=day&colour=red",
            "colour",
            "is not a parameter of the summary (expected from, to, granularity, tz)",
        ),
    ] {
        let (status, p) = summary(&app, "ada", query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {p}");
        assert_eq!(
            p["invalid_params"],
            json!([{"name": name, "reason": reason}]),
            "{query}"
        );
    }
}

#[tokio::test]
async fn records_arriving_together_commit_together_each_with_its_own_answer() {
    let app = app().await;
    let shared = uuid::Uuid::new_v4().to_string();
    let bodies: Vec<Value> = (0..48)
        .map(|i| match i % 3 {
            // A third repeat one id, a third are new, a third break a rule.
            0 => json!({"request_id": shared, "user_id": "u", "word_count": 1}),
            1 => json!({"request_id": uuid::Uuid::new_v4().to_string(), "user_id": "u", "word_count": 2}),
            _ => json!({"request_id": uuid::Uuid::new_v4().to_string(), "user_id": "u", "word_count": -5}),
        })
        .collect();
    let answers =
        futures_util::future::join_all(bodies.iter().map(|b| post(&app, b.clone()))).await;
    let count = |s: StatusCode| answers.iter().filter(|(x, _)| *x == s).count();
    assert_eq!(
        (
            count(StatusCode::CREATED),
            count(StatusCode::CONFLICT),
            count(StatusCode::BAD_REQUEST)
        ),
        (17, 15, 16),
        "{answers:?}"
    );
    assert_eq!(
        app.db
            .value::<i64>("SELECT sum(word_count) FROM learning_log")
            .await,
        1 + 16 * 2
    );
    // The rollups stayed exact through the batches.
    let verify = app.db.clue(&["rollups", "verify", "learning_log"]).ok();
    assert!(verify.stdout.contains(": ok"), "{}", verify.stdout);
    assert!(!verify.stdout.contains("differ"), "{}", verify.stdout);
}
