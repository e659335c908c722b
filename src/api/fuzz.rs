//! Property tests that throw random and mutated input at every parser a
//! client reaches (query JSON, query strings, sales events, definition
//! YAML) and find no panic and no hang: every input is parsed or refused.

use proptest::prelude::*;

use crate::domain::dataset::{Catalog, Dataset};
use crate::domain::rules::ValidationSchema;
use crate::domain::warehouse::WarehouseRules;
use crate::plan::View;
use crate::serve::{execute, query};

/// `seed` with up to 8 random edits: a byte deleted, inserted or replaced.
fn mutated(seed: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 0..8).prop_map(
        move |edits| {
            let mut bytes = seed.as_bytes().to_vec();
            for (at, op, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => {}
                }
            }
            bytes
        },
    )
}

/// Text a query string might hold: the names parsers know, separators,
/// escapes, dates and garbage.
fn query_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("start_date=".to_owned()),
        Just("end_date=".to_owned()),
        Just("format=csv".to_owned()),
        Just("region=North".to_owned()),
        Just("from=2025-01-01".to_owned()),
        Just("to=2025-12-31T23:59:59".to_owned()),
        Just("granularity=hour".to_owned()),
        Just("tz=Europe/Paris".to_owned()),
        Just("&".to_owned()),
        Just("=".to_owned()),
        Just("%".to_owned()),
        Just("%FF%FE".to_owned()),
        Just("%00".to_owned()),
        "[0-9]{1,5}-[0-9]{1,3}-[0-9]{1,3}",
        ".{0,12}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

const QUERY: &str = r#"{"dataset": "sales_report", "measures": ["revenue", "products"], "dimensions": ["region"], "granularity": "month", "start_date": "2024-01-01", "end_date": "2024-12-31", "filters": [{"dimension": "region", "in": ["North", "South"]}, {"dimension": "product_id", "min": 3}], "order": [{"field": "revenue", "desc": true}], "limit": 10, "gap_fill": true, "time_zone": "Europe/Paris"}"#;

const EVENT: &str = r#"{"ID_ORDER": "o-1", "ID_PRODUCT": "P-1", "ID_BUYER": "B-1", "ID_SELLER": "S-1", "ID_SELLER_COUNTRY": "FR", "ID_BUYER_COUNTRY": "DE", "DATE_PAYMENT": "2021-01-04 10:15:00", "BRAND": "Acme", "CATEGORY": "shoes", "REVENUE": 59.90}"#;

const DATASET: &str = include_str!("../../models/sales_report.yaml");
const LEARNING: &str = include_str!("../../models/learning_log.yaml");
const WAREHOUSE: &str = include_str!("../../models/warehouse.yaml");

fn catalog() -> &'static Catalog {
    static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    CATALOG.get_or_init(|| Catalog::load(None).unwrap())
}

/// A query body is parsed and checked (as a limited key too), or refused.
fn query_body(bytes: &[u8]) {
    if let Ok(req) = query::parse_request(bytes) {
        let view = View {
            datasets: vec![],
            conditions: vec!["region=North".parse().unwrap()],
        };
        let _ = execute::check(catalog(), &req, &View::everything());
        let _ = execute::check(catalog(), &req, &view);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn query_bodies_are_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        query_body(&bytes);
    }

    #[test]
    fn mutated_query_bodies_are_parsed_or_refused(bytes in mutated(QUERY)) {
        query_body(&bytes);
    }

    #[test]
    fn query_strings_are_parsed_or_refused(raw in query_string()) {
        use crate::serve::reports::Report;
        let headers = axum::http::HeaderMap::new();
        let _ = super::params::ParamValues::parse(Some(&raw), &["start_date", "end_date", "format", "region"])
            .and_then(|v| v.range().map(|_| ()));
        for report in [Report::MonthlySummary, Report::MonthlyBreakdown, Report::Top5ByRevenue] {
            let _ = super::params::parse_params(Some(&raw), &headers, report);
        }
        let _ = super::routes::learning::SummaryParams::parse(Some(&raw), "ada", 10_000);
    }

    #[test]
    fn sales_events_are_checked_or_refused(bytes in mutated(EVENT)) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            let _ = super::routes::sales::check_event(&map);
        }
    }

    #[test]
    fn definitions_are_parsed_or_refused(
        dataset in mutated(DATASET),
        schema in mutated(LEARNING),
        rules in mutated(WAREHOUSE),
        noise in ".{0,300}",
    ) {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let _ = Dataset::parse(&text(&dataset), "fuzz.yaml");
        let _ = Dataset::parse(&noise, "fuzz.yaml");
        let _ = ValidationSchema::parse(&text(&schema), "fuzz.yaml");
        let _ = ValidationSchema::parse(&noise, "fuzz.yaml");
        let _ = WarehouseRules::parse(&text(&rules), "fuzz.yaml");
        let _ = WarehouseRules::parse(&noise, "fuzz.yaml");
    }
}

/// Deep nesting of every kind is refused quickly, before the YAML parser
/// (a probe's 100,000 levels took 18 s of CPU).
#[test]
fn deep_definitions_are_refused_before_parsing() {
    let flow = format!(
        "dataset: x\ncolumns: {}{}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let block: String = (0..2_000)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i * 2)))
        .collect();
    for text in [flow, block] {
        let started = std::time::Instant::now();
        assert!(Dataset::parse(&text, "deep.yaml").is_err());
        assert!(ValidationSchema::parse(&text, "deep.yaml").is_err());
        assert!(WarehouseRules::parse(&text, "deep.yaml").is_err());
        // Generous: refused by a scan, not by seconds of parsing.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
