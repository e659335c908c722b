//! A server that requires API keys: keys from the CLI and the API, scopes,
//! dataset and row limits applied by the planner (and a property test of
//! them over random queries), sessions, rates, metrics, security headers,
//! head limits, and the audit log.

use rand::{RngExt, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, scratch_dir, serve_with};

const SECRET: &str = "a test secret key that is long enough";

fn security() -> clue::api::Security {
    clue::api::Security {
        mode: clue::api::auth::AuthMode::Required,
        secret_key: SECRET.into(),
        tls: None,
        cors_origins: Vec::new(),
    }
}

/// `clue keys create ARGS…`: the printed secret.
fn create_key(db: &TestDb, args: &[&str]) -> String {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let run = db.clue(&all).ok();
    let secret = run.stdout.trim().to_owned();
    assert!(
        secret.starts_with("clue_") && secret.len() == 53,
        "{}",
        run.stdout
    );
    secret
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.http.request(method, format!("{}{path}", app.address));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn get(app: &TestApp, path: &str, key: Option<&str>) -> reqwest::Response {
    call(app, reqwest::Method::GET, path, key, None).await
}

async fn get_json(app: &TestApp, path: &str, key: Option<&str>) -> Value {
    get(app, path, key).await.json().await.unwrap()
}

/// The text values of `name` in an array of objects.
fn texts<'v>(rows: &'v Value, name: &str) -> Vec<&'v str> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[name].as_str().unwrap())
        .collect()
}

/// The status and the problem's type and detail.
async fn refused(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    (
        status,
        p["type"].as_str().unwrap_or("").to_owned(),
        p["detail"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn keys_scopes_sessions_rates_and_the_audit_log() {
    let db = TestDb::with_sales_data().await;
    // The CLI refuses what cannot work before touching the database.
    db.clue(&["keys", "create", "--name", "x", "--scope", "root"])
        .fails_with(2, "root");
    db.clue(&[
        "keys",
        "create",
        "--name",
        "x",
        "--scope",
        "read",
        "--dataset",
        "nope",
    ])
    .fails_with(4, "nope");
    db.clue(&[
        "keys",
        "create",
        "--name",
        "x",
        "--scope",
        "read",
        "--where",
        "colour=red",
    ])
    .fails_with(
        4,
        "colour is not a dimension of any dataset this key may read",
    );
    db.clue(&[
        "keys",
        "create",
        "--name",
        "x",
        "--scope",
        "ingest",
        "--where",
        "region=North",
    ])
    .fails_with(4, "an ingest key reads nothing");
    db.clue(&[
        "keys",
        "create",
        "--name",
        "x",
        "--scope",
        "read",
        "--expires",
        "3y",
    ])
    .fails_with(2, "not a duration");

    let admin = create_key(&db, &["--name", "ops", "--scope", "admin"]);
    let reader = create_key(&db, &["--name", "analyst", "--scope", "read"]);
    let north = create_key(
        &db,
        &[
            "--name",
            "north",
            "--scope",
            "read",
            "--dataset",
            "sales_report",
            "--where",
            "region=North",
        ],
    );
    let producer = create_key(
        &db,
        &["--name", "shop", "--scope", "ingest", "--dataset", "sales"],
    );
    let slow = create_key(&db, &["--name", "slow", "--scope", "read", "--rate", "2/s"]);
    db.clue(&["keys", "create", "--name", "ops", "--scope", "read"])
        .fails_with(4, "a live key is already named \"ops\"");
    let listed = db.clue(&["keys", "list"]).ok().stdout;
    for name in ["ops", "analyst", "north", "shop", "slow"] {
        assert!(listed.contains(name), "{listed}");
    }
    assert!(
        listed.contains("[datasets sales_report; where region=North]"),
        "{listed}"
    );
    assert!(!listed.contains("clue_"), "a secret was listed: {listed}");
    // A hash is stored, never the secret.
    let stored: i64 = db
        .value(&format!(
            "SELECT count(*) FROM clue.api_keys WHERE secret_hash LIKE '%{}%' OR secret_hash = '{admin}'",
            &admin[5..20]
        ))
        .await;
    assert_eq!(stored, 0);

    let app = serve_with(db, clue::api::Limits::default(), security()).await;

    // Health needs no key; everything else does.
    assert_eq!(get(&app, "/healthz", None).await.status(), StatusCode::OK);
    let summary = "/reports/monthly-sales-summary";
    let r = get(&app, summary, None).await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"clue\"");
    let (status, kind, _) = refused(r).await;
    assert_eq!(
        (status, kind.as_str()),
        (401, "urn:clue:problem:unauthorized")
    );
    let forged = format!("clue_{}", "0".repeat(48));
    for bad in ["nonsense", forged.as_str()] {
        let (status, _, detail) = refused(get(&app, summary, Some(bad)).await).await;
        assert_eq!(status, 401);
        assert!(detail.contains("not valid"), "{detail}");
    }

    // A read key reads everything.
    let all = get(&app, summary, Some(&reader)).await;
    assert_eq!(all.status(), StatusCode::OK);
    assert_eq!(
        all.text().await.unwrap(),
        r#"[{"month":"2025-04","quantity":845,"revenue":70575.00}]"#
    );

    // A key limited to North sees North's rows in every answer: the same
    // as asking with the filter, and never the cached answer of the others.
    let mine: Value = get_json(&app, summary, Some(&north)).await;
    let asked: Value = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/query",
        Some(&reader),
        Some(
            json!({"dataset": "sales_report", "measures": ["quantity", "revenue"],
                    "granularity": "month",
                    "filters": [{"dimension": "region", "equals": "North"}]}),
        ),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(mine[0]["quantity"], asked["rows"][0]["quantity"]);
    assert_eq!(mine[0]["revenue"], asked["rows"][0]["revenue"]);
    assert_ne!(mine[0]["quantity"], json!(845));
    let again = get(&app, summary, Some(&reader)).await;
    assert_eq!(again.headers()["clue-cache"], "hit");
    assert!(again.text().await.unwrap().contains("\"quantity\":845"));
    let breakdown: Value = get_json(&app, "/reports/monthly-sales-breakdown", Some(&north)).await;
    let regions = texts(&breakdown, "region");
    assert!(
        !regions.is_empty() && regions.iter().all(|r| *r == "North"),
        "{regions:?}"
    );
    // Asking for another region finds nothing rather than something.
    let south: Value = get_json(
        &app,
        "/reports/monthly-sales-breakdown?region=South",
        Some(&north),
    )
    .await;
    assert_eq!(south, json!([]));
    let datasets: Value = get_json(&app, "/api/v1/datasets", Some(&north)).await;
    let names = texts(&datasets, "name");
    assert_eq!(names, ["sales_report"]);
    let (status, kind, detail) = refused(
        call(
            &app,
            reqwest::Method::POST,
            "/api/v1/query",
            Some(&north),
            Some(json!({"dataset": "learning_log", "measures": ["records"]})),
        )
        .await,
    )
    .await;
    assert_eq!((status, kind.as_str()), (403, "urn:clue:problem:forbidden"));
    assert_eq!(
        detail,
        "dataset: learning_log is not a dataset this key may read"
    );
    let (status, _, detail) = refused(get(&app, "/sales", Some(&north)).await).await;
    assert_eq!(status, 403);
    assert!(detail.contains("may not use dataset sales"), "{detail}");

    // Scopes: a producer writes and reads nothing; a reader writes nothing.
    let (status, _, detail) = refused(get(&app, summary, Some(&producer)).await).await;
    assert_eq!(status, 403);
    assert!(
        detail.ends_with("has scope ingest; this needs read"),
        "{detail}"
    );
    let sale = json!({"ID_ORDER": "o-1", "ID_PRODUCT": "P-1", "ID_BUYER": "B-1", "ID_SELLER": "S-1",
                      "ID_SELLER_COUNTRY": "FR", "ID_BUYER_COUNTRY": "DE",
                      "DATE_PAYMENT": "2025-04-01 10:15:00", "BRAND": "Acme",
                      "CATEGORY": "shoes", "REVENUE": 10.5});
    let (status, _, _) = refused(
        call(
            &app,
            reqwest::Method::POST,
            "/ingest",
            Some(&reader),
            Some(sale.clone()),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    let written = call(
        &app,
        reqwest::Method::POST,
        "/ingest",
        Some(&producer),
        Some(sale),
    )
    .await;
    assert!(
        written.status().is_success(),
        "{}",
        written.text().await.unwrap()
    );

    // Metrics are for admins, labelled by route template.
    assert_eq!(
        get(&app, "/metrics", Some(&reader)).await.status(),
        StatusCode::FORBIDDEN
    );
    let metrics = get(&app, "/metrics", Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    for needle in [
        "clue_http_requests_total{route=\"/reports/monthly-sales-summary\",method=\"GET\",status=\"401\"}",
        "clue_http_request_duration_seconds_bucket{route=\"/reports/monthly-sales-summary\"",
        "clue_cache_hits_total",
        "clue_cache_misses_total",
        "clue_pool_connections_max",
        "clue_http_requests_in_flight",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }

    // Keys over the API: created, used, revoked, refused at once.
    let created = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/keys",
        Some(&admin),
        Some(json!({"name": "temp", "scope": "read", "expires": "1h"})),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let temp = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&app, summary, Some(&temp)).await.status(),
        StatusCode::OK
    );
    let (status, _, _) = refused(
        call(
            &app,
            reqwest::Method::POST,
            "/api/v1/keys",
            Some(&reader),
            Some(json!({"name": "y", "scope": "read"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    let r = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/keys",
        Some(&admin),
        Some(json!({"name": "y", "scope": "read", "rate": "fast"})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["invalid_params"][0]["name"], "rate");
    let revoked = call(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/keys/temp",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        get(&app, summary, Some(&temp)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let missing = call(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/keys/temp",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // A dashboard session: a signed HttpOnly cookie stands for the key.
    let signed = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/session",
        None,
        Some(json!({"key": reader})),
    )
    .await;
    assert_eq!(signed.status(), StatusCode::OK);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |c: String| {
        app.http
            .get(format!("{}{summary}", app.address))
            .header("cookie", c)
            .send()
    };
    assert_eq!(
        with_cookie(session.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    let tampered = session.replace("clue_session=", "clue_session=0");
    assert_eq!(
        with_cookie(tampered).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, _, _) = refused(
        call(
            &app,
            reqwest::Method::POST,
            "/api/v1/session",
            None,
            Some(json!({"key": producer})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    let out = call(&app, reqwest::Method::DELETE, "/api/v1/session", None, None).await;
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );

    // A key's own rate: its burst, then 429 with when to come back.
    let first = get(&app, summary, Some(&slow)).await;
    assert_eq!(first.headers()["ratelimit-policy"], "\"default\";q=2;w=1");
    let mut statuses = vec![first.status().as_u16()];
    let mut limited = None;
    for _ in 0..4 {
        let r = get(&app, summary, Some(&slow)).await;
        statuses.push(r.status().as_u16());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(limited.headers()["ratelimit"], "\"default\";r=0;t=1");
    let (_, kind, _) = refused(limited).await;
    assert_eq!(kind, "urn:clue:problem:rate-limited");

    // The dashboard page carries its content policy; every answer nosniff.
    let page = get(&app, "/", None).await;
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");

    // Heads past the limits are problems, not empty bodies.
    let long = format!("{summary}?start_date={}", "9".repeat(9000));
    let (status, kind, _) = refused(get(&app, &long, Some(&reader)).await).await;
    assert_eq!(
        (status, kind.as_str()),
        (414, "urn:clue:problem:uri-too-long")
    );
    let r = app
        .http
        .get(format!("{}{summary}", app.address))
        .header("x-padding", "p".repeat(40_000))
        .send()
        .await
        .unwrap();
    let (status, kind, _) = refused(r).await;
    assert_eq!(
        (status, kind.as_str()),
        (431, "urn:clue:problem:headers-too-large")
    );

    // Rollup operations over the API, for admin keys.
    let post = |path: &'static str, key: String| {
        let app = &app;
        async move { call(app, reqwest::Method::POST, path, Some(&key), None).await }
    };
    let verify = post(
        "/api/v1/rollups/verify?dataset=sales_report",
        reader.clone(),
    )
    .await;
    assert_eq!(verify.status(), StatusCode::FORBIDDEN);
    let verify: Value = post("/api/v1/rollups/verify?dataset=sales_report", admin.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verify["differences"], 0, "{verify}");
    assert!(verify["rollups"].as_array().unwrap().len() >= 5, "{verify}");
    let rebuilt: Value = post(
        "/api/v1/rollups/rebuild?dataset=sales_report",
        admin.clone(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        rebuilt["rollups"][0]["dataset"], "sales_report",
        "{rebuilt}"
    );
    let unknown = post("/api/v1/rollups/rebuild?dataset=nope", admin.clone()).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);

    // Every administrative action is logged with who did it.
    let audit = app.db.clue(&["keys", "audit"]).ok().stdout;
    let temp_id = created["key"]["id"].as_str().unwrap();
    assert!(
        audit.contains("key.create") && audit.contains("key.revoke"),
        "{audit}"
    );
    // The API's actions name the admin key; the CLI's, its user.
    assert!(audit.contains(temp_id) && audit.contains(" ops"), "{audit}");
    assert!(audit.contains("by cli:"), "{audit}");
    assert!(
        audit.lines().any(|l| l.contains("rollups.rebuild")
            && l.contains("sales_report")
            && l.ends_with(" ops")),
        "{audit}"
    );
    app.db.clue(&["keys", "revoke", "north"]).ok();
    app.db
        .clue(&["keys", "revoke", "north"])
        .fails_with(4, "no live key");
}

/// A server bound off loopback refuses to start without keys, and starts
/// (with a warning) when told `--auth off`.
#[tokio::test]
async fn off_loopback_keys_are_required_unless_turned_off() {
    let db = TestDb::new().await;
    let run = db.clue(&["serve", "--host", "0.0.0.0", "--port", "0"]);
    let run = run.fails_with(4, "needs API keys and there are none");
    assert!(run.stderr.contains("--auth off"), "{}", run.stderr);
    // Told `--auth off`, it serves, and says what that means.
    use std::io::BufRead;
    let home = scratch_dir();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_clue"))
        .args(["serve", "--host", "0.0.0.0", "--port", "0", "--auth", "off"])
        .env("CLUE_DATABASE_URL", &db.url)
        .env("CLUE_HOME", home.path())
        .env_remove("CLUE_AUTH")
        .env_remove("CLUE_RATE_LIMIT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(server.stdout.take().unwrap());
    let first = stdout.lines().next().unwrap().unwrap();
    assert!(
        first.starts_with("clue is serving on http://0.0.0.0:"),
        "{first}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("serving without API keys on a non-loopback address"),
        "{stderr}"
    );
}

/// Row conditions hold whatever the query asks: random queries as a key
/// limited to one region answer exactly what the same query with that
/// filter answers for an unlimited key, and no row of another region.
#[tokio::test]
async fn row_conditions_hold_for_random_queries() {
    let db = TestDb::new().await;
    db.clue(&["create-schema"]).ok();
    let dir = scratch_dir();
    let file = dir.path().join("sales.csv");
    let file = file.to_str().unwrap();
    clue_generate(file);
    db.import(file).ok();
    let limited = create_key(
        &db,
        &[
            "--name",
            "west",
            "--scope",
            "read",
            "--where",
            "region=West",
        ],
    );
    let everything = create_key(&db, &["--name", "all", "--scope", "read"]);
    let app = serve_with(db, clue::api::Limits::default(), security()).await;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
    let measures = [
        "quantity",
        "revenue",
        "sales",
        "avg_unit_price",
        "min_unit_price",
        "products",
    ];
    let dimensions = ["product_id", "product_name", "region"];
    let grains = [None, Some("day"), Some("month"), Some("year")];
    let mut answered = 0;
    for case in 0..60 {
        let pick =
            |rng: &mut rand_chacha::ChaCha8Rng, from: &[&'static str]| -> Vec<&'static str> {
                from.iter()
                    .copied()
                    .filter(|_| rng.random_bool(0.4))
                    .collect()
            };
        let mut ms = pick(&mut rng, &measures);
        if ms.is_empty() {
            ms.push("revenue");
        }
        let ds = pick(&mut rng, &dimensions);
        let mut q = json!({"dataset": "sales_report", "measures": ms, "dimensions": ds});
        if let Some(g) = grains[rng.random_range(0..grains.len())] {
            q["granularity"] = json!(g);
        }
        if rng.random_bool(0.6) {
            let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()
                + chrono::Days::new(rng.random_range(0..600));
            q["start_date"] = json!(start);
            q["end_date"] = json!(start + chrono::Days::new(rng.random_range(0..200)));
        }
        let mut filters = Vec::new();
        match rng.random_range(0..4) {
            0 => {
                let region = ["West", "East", "North"][rng.random_range(0..3)];
                filters.push(json!({"dimension": "region", "equals": region}));
            }
            1 => filters.push(json!({"dimension": "region", "in": ["East", "West"]})),
            2 => filters
                .push(json!({"dimension": "product_id", "min": rng.random_range(1000..1030)})),
            _ => {}
        }
        q["filters"] = json!(filters.clone());
        let mine = rows(&app, &limited, &q).await;
        filters.push(json!({"dimension": "region", "equals": "West"}));
        let mut with_filter = q.clone();
        with_filter["filters"] = json!(filters);
        let expected = rows(&app, &everything, &with_filter).await;
        assert_eq!(mine, expected, "case {case}: {q}");
        answered += usize::from(!mine.is_empty());
        if ds.contains(&"region") {
            assert!(
                mine.iter().all(|r| r["region"] == "West"),
                "case {case}: {q} gave {mine:?}"
            );
        }
    }
    // Most cases found rows (an empty answer both ways proves little).
    assert!(answered >= 30, "only {answered} of 60 queries found rows");
}

fn clue_generate(file: &str) {
    crate::helpers::clue_with(
        &[
            "generate-sales",
            "--rows",
            "4000",
            "--out",
            file,
            "--products",
            "40",
            "--seed",
            "7",
        ],
        &[],
    )
    .ok();
}

/// The rows of a query's answer, sorted (order is not asked for).
async fn rows(app: &TestApp, key: &str, q: &Value) -> Vec<Value> {
    let r = call(
        app,
        reqwest::Method::POST,
        "/api/v1/query",
        Some(key),
        Some(q.clone()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{q}");
    let answer: Value = r.json().await.unwrap();
    let mut rows = answer["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// With a certificate the server speaks HTTPS: HTTP/2 for a client that
/// offers it, HTTP/1.1 otherwise, `Secure` session cookies, and nothing
/// for a plain-text client. (Driven with curl, which offers both.)
#[tokio::test]
async fn https_serves_http2_and_http1_with_secure_cookies() {
    let dir = scratch_dir();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let db = TestDb::with_sales_data().await;
    let reader = create_key(&db, &["--name", "analyst", "--scope", "read"]);
    let security = clue::api::Security {
        tls: Some(clue::api::tls::TlsFiles {
            cert: cert.clone(),
            key,
        }),
        ..security()
    };
    let app = serve_with(db, clue::api::Limits::default(), security).await;
    let https = app.address.replace("http://", "https://");
    let cert = cert.to_str().unwrap().to_owned();
    let cert = cert.as_str();
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "--cacert", cert])
            .args(&args)
            .output()
            .await
            .expect("curl runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let version = |extra: &str| {
        let mut args = vec![
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_version} %{http_code}".into(),
        ];
        if !extra.is_empty() {
            args.push(extra.to_owned());
        }
        args.push(format!("{https}/reports/top-5-by-revenue"));
        args.extend(["-H".to_owned(), format!("Authorization: Bearer {reader}")]);
        args
    };
    assert_eq!(curl(version("--http2")).await.1, "2 200");
    assert_eq!(curl(version("--http1.1")).await.1, "1.1 200");
    let (_, signed) = curl(vec![
        "-i".into(),
        "-H".into(),
        "content-type: application/json".into(),
        "-d".into(),
        json!({"key": reader}).to_string(),
        format!("{https}/api/v1/session"),
    ])
    .await;
    let cookie = signed
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{signed}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain text on the TLS port gets no answer.
    let (code, body) = curl(vec![format!("{}/healthz", app.address)]).await;
    assert_ne!(code, Some(0), "{body}");
}
