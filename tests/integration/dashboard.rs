//! The dashboard in a real headless Chromium, driven through WebDriver
//! (Debian's `chromium` and `chromium-driver`; `.ci/run` installs them):
//! the page loads with no JavaScript error, a KPI card and the time chart
//! hold the API's answer for the same query, a preset and a filter change
//! the URL and the view, a reloaded URL restores it, and an import while
//! the page is open updates it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, serve_with, serve_with_timeout};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium under a chromedriver of its own, stopped on drop.
struct Browser {
    driver: Child,
    client: Option<fantoccini::Client>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("connected")
    }

    /// The browser, or `None` (said on stderr) where Chromium is not
    /// installed; in CI (`CI` set) a missing browser fails the test.
    async fn start() -> Option<Browser> {
        if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists()
        {
            let how = "the browser tests need Chromium: apt-get install chromium chromium-driver";
            assert!(std::env::var_os("CI").is_none(), "{how}");
            eprintln!("skipped: {how}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut browser = Browser {
            driver,
            client: None,
        };
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1280,1300"],
            }
        }))
        .unwrap();
        for _ in 0..100 {
            let mut builder =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            builder.capabilities(caps.clone());
            if let Ok(c) = builder.connect(&format!("http://127.0.0.1:{port}")).await {
                browser.client = Some(c);
                return Some(browser);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start");
    }

    /// Runs `script` in the page (its `return`s value).
    async fn eval(&self, script: &str) -> Value {
        self.client().execute(script, vec![]).await.unwrap()
    }

    /// Waits until the revenue card holds `value`.
    async fn revenue_is(&self, value: f64) {
        self.until(&format!(
            "const c = document.querySelector('.card[data-measure=revenue]'); return !!c && Number(c.dataset.value) === {value}"
        ))
        .await;
    }

    async fn click(&self, css: &str) {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    async fn select(&self, id: &str, value: &str) {
        self.client()
            .find(Locator::Id(id))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap();
    }

    async fn url(&self) -> String {
        self.client().current_url().await.unwrap().to_string()
    }

    /// Waits (up to 20 s) until `script` returns true.
    async fn until(&self, script: &str) {
        for _ in 0..200 {
            if self.eval(script).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let errors = self.eval("return window.__errors").await;
        panic!("never true: {script}; page errors: {errors}");
    }
}

async fn query(app: &TestApp, body: Value) -> Value {
    app.http
        .post(format!("{}/api/v1/query", app.address))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A card's value as the page holds it, as a number.
const REVENUE_CARD: &str = "const c = document.querySelector('.card[data-measure=revenue]'); return c ? Number(c.dataset.value) : null;";

#[tokio::test]
async fn the_dashboard_shows_the_apis_answers_follows_the_url_and_updates_live() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = serve_with_timeout(TestDb::with_sales_data().await, None).await;
    let run = std::panic::AssertUnwindSafe(scenario(&browser, &app));
    if let Err(failure) = futures_util::FutureExt::catch_unwind(run).await {
        // What the page looked like when it failed.
        if let Ok(png) = browser.client().screenshot().await {
            let path = std::env::temp_dir()
                .join(format!("clue-dashboard-failure-{}.png", std::process::id()));
            if std::fs::write(&path, png).is_ok() {
                eprintln!("a screenshot of the page is at {}", path.display());
            }
        }
        std::panic::resume_unwind(failure);
    }
    if let Some(client) = browser.client.as_ref() {
        let _ = client.clone().close().await;
    }
}

async fn scenario(browser: &Browser, app: &TestApp) {
    let datasets: Value = app.get("/api/v1/datasets").await.json().await.unwrap();
    let sales = datasets
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "sales_report")
        .unwrap()
        .clone();
    let (first, last) = (sales["first_day"].clone(), sales["last_day"].clone());
    assert_eq!(
        (first.as_str(), last.as_str()),
        (Some("2025-04-01"), Some("2025-04-20"))
    );

    browser
        .client()
        .goto(&format!("{}/?d=sales_report&m=revenue", app.address))
        .await
        .unwrap();
    browser
        .until("const c = document.querySelector('.card[data-measure=revenue]'); return !!c && c.dataset.value !== ''")
        .await;
    assert_eq!(browser.eval("return window.__errors").await, json!([]));
    // The card holds the API's total over the whole range, the chart its days.
    let total = query(
        app,
        json!({"dataset": "sales_report", "measures": ["revenue", "quantity"], "start_date": first, "end_date": last, "filters": []}),
    )
    .await;
    let revenue = total["rows"][0]["revenue"].as_f64().unwrap();
    assert_eq!(browser.eval(REVENUE_CARD).await.as_f64(), Some(revenue));
    let series = query(
        app,
        json!({"dataset": "sales_report", "measures": ["revenue", "quantity"], "granularity": "day",
               "gap_fill": true, "start_date": first, "end_date": last, "filters": []}),
    )
    .await;
    let expected: Vec<f64> = series["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revenue"].as_f64().unwrap())
        .collect();
    let drawn_days = |n: usize| {
        format!(
            "const e = document.getElementById('series'); const c = e && echarts.getInstanceByDom(e); \
             return !!c && c.getOption().series[0].data.length === {n}"
        )
    };
    browser.until(&drawn_days(20)).await;
    let drawn: Vec<f64> = serde_json::from_value(
        browser
            .eval("return echarts.getInstanceByDom(document.getElementById('series')).getOption().series[0].data")
            .await,
    )
    .unwrap();
    assert_eq!(drawn, expected);
    assert_eq!(drawn.len(), 20);

    // A chart's CSV is the query API's CSV of what it shows (the download's
    // blob read as it is handed to the browser).
    browser
        .eval(
            "window.__csv = null; const make = URL.createObjectURL; \
             URL.createObjectURL = (b) => { b.text().then(t => { window.__csv = t; }); return make(b); }; \
             return true",
        )
        .await;
    browser.click(".panel.wide h2 button").await;
    browser.until("return window.__csv !== null").await;
    let api_csv = app
        .http
        .post(format!("{}/api/v1/query?format=csv", app.address))
        .json(&json!({"dataset": "sales_report", "start_date": first, "end_date": last, "filters": [],
                      "measures": ["avg_unit_price", "max_unit_price", "min_unit_price", "products", "quantity", "revenue", "sales"],
                      "granularity": "day", "gap_fill": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(browser.eval("return window.__csv").await, json!(api_csv));

    // A preset changes the URL and the view; the URL reopens it.
    browser.click("button[data-preset='7d']").await;
    browser.until(&drawn_days(7)).await;
    let url = browser.client().current_url().await.unwrap();
    assert!(url.as_str().contains("r=7d"), "{url}");
    browser.client().goto(url.as_str()).await.unwrap();
    browser
        .until("const b = document.querySelector(\"button[data-preset='7d']\"); return !!b && b.getAttribute('aria-pressed') === 'true'")
        .await;
    browser.until(&drawn_days(7)).await;

    // A filter in the URL narrows every answer; removing its chip widens them again.
    browser
        .client()
        .goto(&format!(
            "{}/?d=sales_report&m=revenue&f=region:North",
            app.address
        ))
        .await
        .unwrap();
    let north = query(
        app,
        json!({"dataset": "sales_report", "measures": ["revenue"], "start_date": first, "end_date": last,
               "filters": [{"dimension": "region", "in": ["North"]}]}),
    )
    .await["rows"][0]["revenue"]
        .as_f64()
        .unwrap();
    browser.revenue_is(north).await;
    browser.click("button.chip").await;
    browser.revenue_is(revenue).await;
    assert!(!browser.url().await.contains("f="));
    // A filter picked from the values the data offers.
    browser.select("filter-dim", "region").await;
    browser
        .until("const v = document.getElementById('filter-value'); return !!v && !v.disabled && [...v.options].map(o => o.value).join() === ',East,North,South,West'")
        .await;
    browser.select("filter-value", "North").await;
    browser.revenue_is(north).await;
    assert!(browser.url().await.contains("f=region%3ANorth"));
    browser.click("button.chip").await;
    browser.revenue_is(revenue).await;

    // An import while the page is open reaches it, pushed by the server.
    let dir = crate::helpers::scratch_dir();
    let more = dir.path().join("more.csv");
    std::fs::write(
        &more,
        "product_id,product_name,region,sales_date,quantity_sold,sales_amount,unit_price\n\
         1001,WidgetA,North,2025-04-10,1,1000.00,1000.00\n",
    )
    .unwrap();
    app.db.import(&more).ok();
    browser.revenue_is(revenue + 1000.0).await;
    assert_eq!(browser.eval("return window.__errors").await, json!([]));

    // A saved report, found in the API's own document: ranked bars of the
    // API's answer, and a heat table cell for each row of the breakdown.
    browser
        .client()
        .goto(&format!("{}/?p=reports", app.address))
        .await
        .unwrap();
    browser
        .until("return [...document.querySelectorAll('a.report-link')].some(a => a.href.includes('top-5-by-revenue'))")
        .await;
    let top: Value = app
        .get("/reports/top-5-by-revenue")
        .await
        .json()
        .await
        .unwrap();
    let expected: Vec<f64> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revenue"].as_f64().unwrap())
        .collect();
    browser
        .client()
        .goto(&format!(
            "{}/?p=report&path=%2Freports%2Ftop-5-by-revenue",
            app.address
        ))
        .await
        .unwrap();
    browser
        .until("const e = document.getElementById('report-chart'); return !!e && !!echarts.getInstanceByDom(e)")
        .await;
    let bars: Vec<f64> = serde_json::from_value(
        browser
            .eval("return echarts.getInstanceByDom(document.getElementById('report-chart')).getOption().series[0].data")
            .await,
    )
    .unwrap();
    assert_eq!(bars, expected);
    let breakdown: Value = app
        .get("/reports/monthly-sales-breakdown")
        .await
        .json()
        .await
        .unwrap();
    browser
        .client()
        .goto(&format!(
            "{}/?p=report&path=%2Freports%2Fmonthly-sales-breakdown",
            app.address
        ))
        .await
        .unwrap();
    browser
        .until(&format!(
            "return document.querySelectorAll('table.heat td[style]').length === {}",
            breakdown.as_array().unwrap().len()
        ))
        .await;
    assert_eq!(browser.eval("return window.__errors").await, json!([]));

    // Explore: the query in the URL, answered as the API answers it, shown
    // with the JSON asked and where the answer came from.
    let asked = json!({"dataset": "sales_report", "measures": ["revenue"], "dimensions": ["region"],
                       "start_date": "2025-04-01", "end_date": "2025-04-20"});
    let answer = query(app, asked.clone()).await;
    let by_region: Vec<f64> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revenue"].as_f64().unwrap())
        .collect();
    let mut url = reqwest::Url::parse(&format!("{}/", app.address)).unwrap();
    url.query_pairs_mut()
        .append_pair("p", "explore")
        .append_pair("q", &asked.to_string());
    browser.client().goto(url.as_str()).await.unwrap();
    browser
        .until("const e = document.getElementById('explore-chart'); return !!e && !!echarts.getInstanceByDom(e)")
        .await;
    let drawn: Vec<f64> = serde_json::from_value(
        browser
            .eval("return echarts.getInstanceByDom(document.getElementById('explore-chart')).getOption().series[0].data")
            .await,
    )
    .unwrap();
    assert_eq!(drawn, by_region);
    let shown: Value = serde_json::from_str(
        browser
            .eval("return document.getElementById('query-json').textContent")
            .await
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(shown, asked);
    browser
        .until(
            "return document.getElementById('served').textContent.includes('served from rollup')",
        )
        .await;
    let curl = browser
        .eval("return document.getElementById('curl').textContent")
        .await;
    assert!(
        curl.as_str()
            .unwrap()
            .contains("/api/v1/query -H 'content-type: application/json'"),
        "{curl}"
    );
    assert_eq!(browser.eval("return window.__errors").await, json!([]));
}

/// On a server that needs keys the dashboard asks for one once: a wrong
/// key is refused in the form, a read key opens a session (an HttpOnly
/// cookie the page cannot read) that a reload keeps, and signing out asks
/// again.
#[tokio::test]
async fn the_dashboard_asks_for_a_key_once() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TestDb::with_sales_data().await;
    let secret = |args: &[&str]| {
        let mut all = vec!["keys", "create"];
        all.extend_from_slice(args);
        db.clue(&all).ok().stdout.trim().to_owned()
    };
    let viewer = secret(&["--name", "viewer", "--scope", "read"]);
    let producer = secret(&["--name", "shop", "--scope", "ingest"]);
    let security = clue::api::Security {
        mode: clue::api::auth::AuthMode::Required,
        secret_key: "a dashboard test secret of 32 bytes or more".into(),
        tls: None,
        cors_origins: Vec::new(),
    };
    let app = serve_with(db, clue::api::Limits::default(), security).await;
    let page = format!("{}/?d=sales_report&m=revenue", app.address);
    browser.client().goto(&page).await.unwrap();
    browser
        .until("return !!document.getElementById('sign-in')")
        .await;
    let browser = &browser;
    let type_key = |key: String| async move {
        let input = browser.client().find(Locator::Id("key")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(&key).await.unwrap();
        browser.click("#sign-in button[type=submit]").await;
    };
    type_key(producer).await;
    browser
        .until("const p = document.getElementById('sign-in-problem'); return !!p && p.textContent.includes('the dashboard needs read')")
        .await;
    type_key(viewer).await;
    browser
        .until("const c = document.querySelector('.card[data-measure=revenue]'); return !!c && c.dataset.value !== ''")
        .await;
    assert_eq!(browser.eval("return window.__errors").await, json!([]));
    assert_eq!(
        browser
            .eval("return document.cookie.includes('clue_session')")
            .await,
        json!(false),
        "the session cookie is HttpOnly"
    );
    // A reload keeps the session.
    browser.client().goto(&page).await.unwrap();
    browser
        .until("const c = document.querySelector('.card[data-measure=revenue]'); return !!c && c.dataset.value !== '' && !document.getElementById('sign-in')")
        .await;
    browser.click("#sign-out").await;
    browser
        .until("return !!document.getElementById('sign-in')")
        .await;
    browser.client().goto(&page).await.unwrap();
    browser
        .until("return !!document.getElementById('sign-in')")
        .await;
    if let Some(client) = browser.client.as_ref() {
        let _ = client.clone().close().await;
    }
}
