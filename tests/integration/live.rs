//! `GET /api/v1/changes`: a committed write reaches an open stream, only
//! the datasets asked for, unknown names and too many streams refused, and
//! an open stream does not hold the server's shutdown.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestDb, application, invalid_params, open_writer};

/// Reads the stream until an event named `name` arrives; its data.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String, name: &str) -> Value {
    let found = async {
        loop {
            if let Some(at) = buffer.find(&format!("event: {name}\n")) {
                let rest = &buffer[at..];
                if let Some(end) = rest.find("\n\n") {
                    let block = rest[..end].to_owned();
                    buffer.replace_range(..at + end + 2, "");
                    let data = block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap_or("null");
                    return serde_json::from_str(data).unwrap();
                }
            }
            let chunk = response.chunk().await.unwrap().expect("the stream ended");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), found)
        .await
        .unwrap_or_else(|_| panic!("no {name} event; the stream said: {buffer}"))
}

#[tokio::test]
async fn a_committed_write_reaches_an_open_stream_and_shutdown_ends_it() {
    let db = TestDb::new().await;
    let database = std::sync::Arc::new(open_writer(&db.target()).await);
    let app = application(database).await;
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let mut stream = http
        .get(format!("{base}/api/v1/changes?datasets=sales"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut buffer = String::new();
    next_event(&mut stream, &mut buffer, "ready").await;
    // A write to another dataset is not this stream's; the sale is.
    let record = http
        .post(format!("{base}/recordsjson"))
        .json(&json!({"request_id": "6f1c0c9e-2d4b-4c59-9a53-0d3c4f1b7a11", "user_id": "u1", "timestamp": "2025-01-02T10:00:00Z", "word_count": 3}))
        .send()
        .await
        .unwrap();
    assert!(record.status().is_success(), "{:?}", record.text().await);
    let sale = http
        .post(format!("{base}/ingest"))
        .json(&json!({
            "ID_ORDER": "ORD-L1", "ID_PRODUCT": "P-1", "ID_BUYER": "B-1", "ID_SELLER": "S-1",
            "ID_SELLER_COUNTRY": "FR", "ID_BUYER_COUNTRY": "DE",
            "DATE_PAYMENT": "2021-01-04 10:15:00", "BRAND": "Acme",
            "CATEGORY": "shoes", "REVENUE": 60,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(sale.status(), 201);
    // The days of an instant in any time zone.
    let written = next_event(&mut stream, &mut buffer, "write").await;
    assert_eq!(
        written,
        json!({"dataset": "sales", "first": "2021-01-03", "last": "2021-01-05"})
    );
    assert!(!buffer.contains("learning_log"), "{buffer}");
    // Bad names are a problem naming the parameter.
    let bad = http
        .get(format!("{base}/api/v1/changes?datasets=sales,nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(invalid_params(&problem)[0].0, "datasets");
    // The server stops though the stream is open, and the stream ends.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stopped with a stream open")
        .unwrap()
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream did not end");
}

#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    let db = TestDb::new().await;
    let database = std::sync::Arc::new(open_writer(&db.target()).await);
    let catalog = std::sync::Arc::new(clue::domain::dataset::Catalog::load(None).unwrap());
    let app = clue::api::Application::build(
        database,
        catalog,
        clue::api::Limits {
            max_streams: 1,
            ..clue::api::Limits::default()
        },
        clue::api::Security::off(),
        "127.0.0.1",
        0,
    )
    .await
    .unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let first = reqwest::get(format!("{base}/api/v1/changes"))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = reqwest::get(format!("{base}/api/v1/changes"))
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    drop(first);
    // The first's turn is given back when it closes.
    let mut third = None;
    for _ in 0..100 {
        let r = reqwest::get(format!("{base}/api/v1/changes"))
            .await
            .unwrap();
        if r.status() == 200 {
            third = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(third.is_some(), "a closed stream's turn was not given back");
}
