//! Planner tests from data: each case in `tests/planner/*.yaml` is a query
//! and the sources and SQL the planner must choose for it. Run with
//! `UPDATE_EXPECT=1` to rewrite the expectations after a deliberate change.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::dataset::Catalog;
use crate::domain::rollup::Partial;

#[derive(Debug, Deserialize, Serialize)]
struct Case {
    name: String,
    query: Query,
    #[serde(default)]
    force_fact: bool,
    expect: Expect,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Expect {
    served_from: Vec<String>,
    sql: String,
    params: Vec<String>,
}

/// The built-in rollups of sales_report with plausible sizes (10M rows).
fn rollups(dataset: &Dataset) -> Vec<RollupInfo> {
    let partials = [
        Partial {
            kind: PartialKind::Sum,
            source: "unit_price".into(),
        },
        Partial {
            kind: PartialKind::Count,
            source: "unit_price".into(),
        },
        Partial {
            kind: PartialKind::Max,
            source: "unit_price".into(),
        },
        Partial {
            kind: PartialKind::Min,
            source: "unit_price".into(),
        },
        Partial {
            kind: PartialKind::Sum,
            source: "quantity_sold".into(),
        },
        Partial {
            kind: PartialKind::Sum,
            source: "sales_amount".into(),
        },
    ];
    dataset
        .rollups
        .iter()
        .map(|r| RollupInfo {
            name: r.name.clone(),
            dataset: dataset.name.clone(),
            grain: r.grain,
            dimensions: r.dimensions.clone(),
            // Those of the measures the rollup keeps (all when it names none).
            partials: partials
                .iter()
                .filter(|p| {
                    dataset.measures.iter().any(|m| {
                        r.measures
                            .as_ref()
                            .is_none_or(|names| names.contains(&m.name))
                            && super::needs(m).iter().any(|(kind, col)| {
                                *kind == p.kind && *col == Some(p.source.as_str())
                            })
                    })
                })
                .cloned()
                .collect(),
            rows: match (r.grain, r.dimensions.len()) {
                (Grain::Month, 0) => 24,
                (Grain::Day, 0) => 731,
                (Grain::Day, _) => 3_655,
                (Grain::Month, 2) => 120_000,
                _ => 480_000,
            },
            read_by: r.read_by.clone(),
        })
        .collect()
}

fn describe(plan: &Plan) -> Expect {
    Expect {
        served_from: plan
            .served_from
            .iter()
            .map(|s| {
                let day = |d: Option<NaiveDate>| d.map_or("…".to_owned(), |d| d.to_string());
                format!("{} {} {}..{}", s.source, s.name, day(s.from), day(s.to))
            })
            .collect(),
        sql: plan.sql.clone(),
        params: plan
            .params
            .iter()
            .map(|p| match p {
                PlanParam::Date(d) => d.to_string(),
                PlanParam::Instant(t) => t.to_rfc3339(),
                PlanParam::Text(t) => t.clone(),
                PlanParam::TextArray(v) => format!("{v:?}"),
            })
            .collect(),
    }
}

#[test]
fn planner_cases_from_data_files() {
    let catalog = Catalog::load(None).unwrap();
    let dataset = catalog.get("sales_report").unwrap();
    let rollups = rollups(dataset);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/planner");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    for file in files {
        let mut cases: Vec<Case> = yaml_serde::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for case in &mut cases {
            let plan = plan(
                dataset,
                &Facts {
                    table_sql: "\"public\".\"sales_report\"",
                    time_key: Some(KeyKind::Date),
                    time_nullable: false,
                },
                &rollups,
                &case.query,
                case.force_fact,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let got = describe(&plan);
            if got != case.expect {
                if update {
                    case.expect = got;
                } else {
                    failures.push(format!(
                        "{} ({}):\n  expected {:#?}\n  got {:#?}",
                        case.name,
                        file.display(),
                        case.expect,
                        got
                    ));
                }
            }
        }
        if update {
            std::fs::write(&file, yaml_serde::to_string(&cases).unwrap()).unwrap();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn q(measures: &[&str]) -> Query {
    Query {
        measures: measures.iter().map(|s| s.to_string()).collect(),
        dimensions: vec![],
        granularity: None,
        start: None,
        end: None,
        filters: vec![],
        order: vec![],
        limit: None,
        gap_fill: false,
        time_zone: None,
        from: None,
        to: None,
    }
}

#[test]
fn bad_queries_are_refused_by_name() {
    let catalog = Catalog::load(None).unwrap();
    let d = catalog.get("sales_report").unwrap();
    let check_err = |query: Query, expect: &str| {
        let facts = Facts {
            table_sql: "t",
            time_key: Some(KeyKind::Date),
            time_nullable: false,
        };
        let err = plan(d, &facts, &[], &query, false).unwrap_err().to_string();
        assert_eq!(err, expect);
    };
    check_err(q(&[]), "measures: at least one measure is needed");
    check_err(
        q(&["profit"]),
        "measures: \"profit\" is not a measure of dataset sales_report",
    );
    check_err(
        Query {
            dimensions: vec!["colour".into()],
            ..q(&["revenue"])
        },
        "dimensions: \"colour\" is not a dimension of dataset sales_report",
    );
    check_err(
        Query {
            filters: vec![Filter {
                dimension: "sales_date".into(),
                op: FilterOp::Equals("x".into()),
            }],
            ..q(&["revenue"])
        },
        "filters: \"sales_date\" is not a dimension of dataset sales_report",
    );
    check_err(
        Query {
            order: vec![Order {
                field: "period".into(),
                desc: false,
            }],
            ..q(&["revenue"])
        },
        "order: \"period\" is not a measure, dimension or period of this query",
    );
    check_err(
        Query {
            gap_fill: true,
            granularity: Some(Grain::Day),
            ..q(&["revenue"])
        },
        "gap_fill: needs a granularity, a start and an end",
    );
    check_err(
        q(&["revenue", "revenue"]),
        "measures.revenue: is given more than once",
    );
}

/// The logical plan of a query, one piece a line: `source from..to read`,
/// then how the pieces combine.
fn check_logical(query: serde_json::Value, expect: &[&str]) {
    let dataset = Catalog::load(None)
        .unwrap()
        .get("sales_report")
        .unwrap()
        .clone();
    let q: Query = serde_json::from_value(query).unwrap();
    let lp = logical(&dataset, &rollups(&dataset), &q, false);
    let day = |d: Option<NaiveDate>| d.map_or("…".to_owned(), |d| d.to_string());
    let mut got: Vec<String> = lp
        .pieces
        .iter()
        .map(|p| {
            let source = match &p.source {
                PieceSource::Fact => "fact".to_owned(),
                PieceSource::Rollup(r) => r.name.clone(),
            };
            format!("{source} {}..{} {:?}", day(p.from), day(p.to), p.read)
        })
        .collect();
    got.push(format!("{:?}", lp.combine));
    assert_eq!(got, expect);
}

#[test]
fn logical_plans_are_data() {
    let q = |extra: serde_json::Value| {
        let mut base = serde_json::json!({
            "measures": ["revenue"], "dimensions": [], "granularity": null,
            "start": null, "end": null, "filters": [], "order": [], "limit": null, "gap_fill": false
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    };
    // Mid-month range by month: edges from the day rollup, whole months
    // read as stored; the edges share months with nothing else, so stack.
    check_logical(
        q(serde_json::json!({"granularity": "month", "start": "2024-03-15", "end": "2024-06-10"})),
        &[
            "sales_report_day 2024-03-15..2024-04-01 Partials",
            "sales_report_month 2024-04-01..2024-06-01 AsStored",
            "sales_report_day 2024-06-01..2024-06-11 Partials",
            "Stack",
        ],
    );
    // One total over the same range: the pieces are regrouped.
    check_logical(
        q(serde_json::json!({"start": "2024-03-15", "end": "2024-06-10"})),
        &[
            "sales_report_day 2024-03-15..2024-04-01 Partials",
            "sales_report_month 2024-04-01..2024-06-01 Partials",
            "sales_report_day 2024-06-01..2024-06-11 Partials",
            "Regroup",
        ],
    );
    // Count distinct reads the facts once, with final aggregates.
    check_logical(
        q(serde_json::json!({"measures": ["products"], "start": "2024-03-15"})),
        &["fact 2024-03-15..… Final", "Stack"],
    );
}

/// A reference table (no time column) is read from its facts with no
/// period; anything about time is refused by name.
#[test]
fn a_reference_table_answers_without_time() {
    let catalog = Catalog::load(None).unwrap();
    let d = catalog.get("country").unwrap();
    let facts = Facts {
        table_sql: "\"public\".\"country\"",
        time_key: None,
        time_nullable: false,
    };
    let query = Query {
        dimensions: vec!["CONTINENT".into()],
        ..q(&["countries"])
    };
    let p = plan(d, &facts, &[], &query, false).unwrap();
    assert_eq!(
        p.sql,
        "SELECT a.\"CONTINENT\"::text, a.m0::int8 FROM (SELECT period, \"CONTINENT\", p0_0 AS m0 FROM (SELECT NULL::date AS period, \"CONTINENT\", count(*)::int8 AS p0_0 FROM \"public\".\"country\" GROUP BY 1, 2) pieces) a ORDER BY 1 ASC LIMIT 2000001"
    );
    for (query, expect) in [
        (
            Query {
                granularity: Some(Grain::Month),
                ..q(&["countries"])
            },
            "granularity: dataset country has no time column (a reference table)",
        ),
        (
            Query {
                time_zone: Some("Europe/Paris".into()),
                ..q(&["countries"])
            },
            "tz: dataset country has no time column (a reference table)",
        ),
    ] {
        let err = plan(d, &facts, &[], &query, false).unwrap_err();
        assert_eq!(err.to_string(), expect);
    }
}
