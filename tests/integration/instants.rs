//! Datasets whose time column holds instants: UTC partitions and rollups
//! (hour, day, month), answers bucketed in any IANA zone (DST days and
//! half- and quarter-hour offsets included) equal to the facts' answers.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::helpers::{TestDb, clue_with, scratch_dir, write_file};

const MODEL: &str = "dataset: visits
time_column: at
columns: {at: timestamp, user_id: str, page: str, words: {type: int, min: 0}}
dimensions: [user_id, page]
measures:
  words: {sum: words}
  visits: {count: \"*\"}
  avg_words: {avg: words}
  max_words: {max: words}
rollups:
  - {grain: hour, dimensions: [user_id], read_by: user_id}
  - {grain: day}
  - {grain: month, dimensions: [page]}
";

const DDL: &str = "CREATE TABLE visits (at timestamptz NOT NULL, user_id text NOT NULL,
    page text NOT NULL, words int NOT NULL) PARTITION BY RANGE (at);";

const ZONES: [Option<&str>; 6] = [
    None,
    Some("UTC"),
    Some("Asia/Kolkata"),
    Some("Asia/Kathmandu"),
    Some("America/New_York"),
    Some("Europe/Berlin"),
];

/// A database with the `visits` table, and the models directory declaring it.
struct Visits {
    db: TestDb,
    models: tempfile::TempDir,
}

impl Visits {
    async fn new() -> Visits {
        let db = TestDb::new().await;
        let models = scratch_dir();
        write_file(models.path(), "visits.yaml", MODEL);
        let ddl = write_file(models.path(), "visits.sql", DDL);
        let v = Visits { db, models };
        v.clue(&["create-schema", "--source", ddl.to_str().unwrap()])
            .ok();
        v
    }

    fn clue(&self, args: &[&str]) -> crate::helpers::Run {
        clue_with(
            args,
            &[
                ("CLUE_DATABASE_URL", &self.db.url),
                ("CLUE_MODELS", self.models.path().to_str().unwrap()),
            ],
        )
    }

    fn import(&self, csv: &str) {
        let dir = scratch_dir();
        let file = write_file(dir.path(), "visits.csv", csv);
        self.clue(&["import-data", "-c", file.to_str().unwrap(), "-t", "visits"])
            .ok();
    }

    /// The answer to `query`, from the planner (rollups allowed) or the facts.
    async fn answer(&self, query: &Value, fact: bool) -> Value {
        let mut args = vec!["query".to_owned(), query.to_string()];
        if fact {
            args.push("--fact".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        serde_json::from_str(&self.clue(&args).ok().stdout).unwrap()
    }
}

fn random_csv(rng: &mut ChaCha8Rng, rows: usize) -> String {
    let mut out = "at,user_id,page,words\n".to_owned();
    // Two windows around the DST changes of 2024 (US: March 10 and
    // November 3; EU: March 31 and October 27).
    let windows = [
        ("2024-03-05T00:00:00Z", 30 * 86_400),
        ("2024-10-22T00:00:00Z", 16 * 86_400),
    ];
    for _ in 0..rows {
        let (start, span) = windows[rng.random_range(0..windows.len())];
        let start: chrono::DateTime<chrono::Utc> = start.parse().unwrap();
        let at = start + chrono::TimeDelta::seconds(rng.random_range(0..span));
        // Offsets in the file are honoured.
        let offset = [0, 3600 * 5 + 1800, -3600 * 4][rng.random_range(0..3)];
        let at = at.with_timezone(&chrono::FixedOffset::east_opt(offset).unwrap());
        out.push_str(&format!(
            "{},u{},p{},{}\n",
            at.to_rfc3339(),
            rng.random_range(1..=6),
            rng.random_range(1..=4),
            rng.random_range(0..=120)
        ));
    }
    out
}

fn random_query(rng: &mut ChaCha8Rng) -> Value {
    let mut measures: Vec<&str> = ["words", "visits", "avg_words", "max_words"]
        .into_iter()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    if measures.is_empty() {
        measures.push("words");
    }
    let dims: Vec<&str> = ["user_id", "page"]
        .into_iter()
        .filter(|_| rng.random_bool(0.3))
        .collect();
    let grains = [
        None,
        Some("hour"),
        Some("day"),
        Some("week"),
        Some("month"),
        Some("quarter"),
        Some("year"),
    ];
    let grain = grains[rng.random_range(0..grains.len())];
    let zone = ZONES[rng.random_range(0..ZONES.len())];
    let day = |rng: &mut ChaCha8Rng| {
        let first: chrono::NaiveDate = "2024-03-01".parse().unwrap();
        first + chrono::Days::new(rng.random_range(0..260))
    };
    let (a, b) = (day(rng), day(rng));
    let (start, end) = (a.min(b), a.max(b));
    let mut q = json!({"dataset": "visits", "measures": measures, "dimensions": dims});
    if let Some(g) = grain {
        q["granularity"] = json!(g);
    }
    if let Some(z) = zone {
        q["time_zone"] = json!(z);
    }
    if rng.random_bool(0.8) {
        q["start_date"] = json!(start.to_string());
    }
    if rng.random_bool(0.8) {
        q["end_date"] = json!(end.to_string());
    }
    // Gap fill where its rows stay few (hours only over short ranges).
    let short = (end - start).num_days() <= 20;
    if grain.is_some()
        && q.get("start_date").is_some()
        && q.get("end_date").is_some()
        && (grain != Some("hour") || short)
        && rng.random_bool(0.3)
    {
        q["gap_fill"] = json!(true);
    }
    q
}

#[tokio::test]
async fn answers_in_any_zone_equal_the_facts_on_random_instants_and_queries() {
    let v = Visits::new().await;
    let mut rng = ChaCha8Rng::seed_from_u64(20261123);
    v.import(&random_csv(&mut rng, 4000));
    let verify = v.clue(&["rollups", "verify"]).ok();
    assert_eq!(
        verify.stdout.matches(": ok").count(),
        3,
        "{}",
        verify.stdout
    );
    let mut from_rollups = 0;
    for i in 0..60 {
        let q = random_query(&mut rng);
        let planned = v.answer(&q, false).await;
        let reference = v.answer(&q, true).await;
        assert_eq!(
            planned["rows"], reference["rows"],
            "query #{i} {q}\nserved from {}",
            planned["served_from"]
        );
        if planned["served_from"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["source"] == "rollup")
        {
            from_rollups += 1;
        }
    }
    assert!(
        from_rollups >= 10,
        "only {from_rollups} of 60 queries used a rollup"
    );
}

/// `query` over the visits; the rows only.
async fn rows(v: &Visits, query: Value) -> Value {
    v.answer(&query, false).await["rows"].clone()
}

#[tokio::test]
async fn buckets_follow_the_zone_dst_and_fractional_offsets_included() {
    let v = Visits::new().await;
    v.import(
        "at,user_id,page,words\n\
         2024-03-10T06:30:00Z,u1,p1,10\n\
         2024-03-10T07:30:00Z,u1,p1,20\n\
         2024-03-01T18:45:00Z,u2,p1,30\n\
         2024-03-01T18:14:00Z,u3,p1,40\n\
         2024-01-10T01:00:00+11:00,u4,p1,50\n\
         2024-11-03T05:30:00Z,u5,p1,1\n\
         2024-11-03T06:30:00Z,u5,p1,2\n",
    );
    // New York repeats 01:00 on November 3: 01:30 EDT and 01:30 EST are
    // one local hour. A whole-hour zone is answered from the hour rollup.
    let fall = v
        .answer(
            &json!({"dataset": "visits", "measures": ["words"], "dimensions": ["user_id"], "granularity": "hour",
                    "start_date": "2024-11-03", "end_date": "2024-11-03", "time_zone": "America/New_York",
                    "gap_fill": true, "filters": [{"dimension": "user_id", "equals": "u5"}]}),
            false,
        )
        .await;
    assert_eq!(fall["served_from"][0]["name"], "visits_hour_user_id");
    let hours = fall["rows"].as_array().unwrap();
    assert_eq!(hours.len(), 24, "{fall}");
    let words: Vec<i64> = hours
        .iter()
        .map(|h| h["words"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(words.iter().sum::<i64>(), 3);
    assert_eq!(words.iter().filter(|w| **w > 0).count(), 1, "{fall}");
    // New York skips 02:00 on March 10: 23 hours, each once; 01:30 EST and
    // 03:30 EDT fall in consecutive buckets.
    let hours = rows(
        &v,
        json!({"dataset": "visits", "measures": ["words"], "dimensions": [], "granularity": "hour",
               "start_date": "2024-03-10", "end_date": "2024-03-10", "time_zone": "America/New_York",
               "gap_fill": true, "filters": [{"dimension": "user_id", "equals": "u1"}]}),
    )
    .await;
    let hours = hours.as_array().unwrap();
    assert_eq!(hours.len(), 23);
    assert_eq!(
        hours[0],
        json!({"period": "2024-03-10T05:00:00Z", "words": 0})
    );
    assert_eq!(
        hours[1],
        json!({"period": "2024-03-10T06:00:00Z", "words": 10})
    );
    assert_eq!(
        hours[2],
        json!({"period": "2024-03-10T07:00:00Z", "words": 20})
    );
    assert_eq!(hours[22]["period"], "2024-03-11T03:00:00Z");
    // 18:45Z is past midnight in Kolkata (+05:30): March 2 there; half-hour
    // zones read the facts.
    let kolkata = rows(
        &v,
        json!({"dataset": "visits", "measures": ["words"], "granularity": "day",
               "start_date": "2024-03-01", "end_date": "2024-03-02", "time_zone": "Asia/Kolkata",
               "filters": [{"dimension": "user_id", "equals": "u2"}]}),
    )
    .await;
    assert_eq!(
        kolkata,
        json!([{"period": "2024-03-01T18:30:00Z", "words": 30}])
    );
    // 18:14Z is 23:59 in Kathmandu (+05:45): still March 1 there.
    let kathmandu = rows(
        &v,
        json!({"dataset": "visits", "measures": ["words"], "granularity": "day",
               "start_date": "2024-03-01", "end_date": "2024-03-02", "time_zone": "Asia/Kathmandu",
               "filters": [{"dimension": "user_id", "equals": "u3"}]}),
    )
    .await;
    assert_eq!(
        kathmandu,
        json!([{"period": "2024-02-29T18:15:00Z", "words": 40}])
    );
    // The offset in the file is honoured: January 10 01:00 at +11 is
    // January 9 in UTC.
    let utc = v
        .answer(
            &json!({"dataset": "visits", "measures": ["words"], "granularity": "day",
                    "filters": [{"dimension": "user_id", "equals": "u4"}]}),
            false,
        )
        .await;
    assert_eq!(
        utc["rows"],
        json!([{"period": "2024-01-09T00:00:00Z", "words": 50}])
    );
    // In UTC the hour rollup answers an hourly question.
    let hourly = v
        .answer(
            &json!({"dataset": "visits", "measures": ["words"], "dimensions": ["user_id"],
                    "granularity": "hour", "start_date": "2024-03-10", "end_date": "2024-03-10"}),
            false,
        )
        .await;
    assert_eq!(hourly["served_from"][0]["name"], "visits_hour_user_id");
    // Bounded by instants (both included): the facts, cut inside the day.
    let cut = rows(
        &v,
        json!({"dataset": "visits", "measures": ["words"], "granularity": "hour", "gap_fill": true,
               "from": "2024-03-10T07:00:00Z", "to": "2024-03-10T09:59:59Z",
               "filters": [{"dimension": "user_id", "equals": "u1"}]}),
    )
    .await;
    assert_eq!(
        cut,
        json!([{"period": "2024-03-10T07:00:00Z", "words": 20},
               {"period": "2024-03-10T08:00:00Z", "words": 0},
               {"period": "2024-03-10T09:00:00Z", "words": 0}])
    );
    for (query, reason) in [
        (
            json!({"dataset": "visits", "measures": ["words"], "from": "2024-03-10T09:00:00Z", "to": "2024-03-10T07:00:00Z"}),
            "from: 2024-03-10T09:00:00+00:00 is after to 2024-03-10T07:00:00+00:00",
        ),
        (
            json!({"dataset": "visits", "measures": ["words"], "from": "2024-03-10T09:00:00Z", "start_date": "2024-03-10"}),
            "from: give either dates (start_date, end_date) or instants (from, to), not both",
        ),
    ] {
        v.clue(&["query", &query.to_string()]).fails_with(4, reason);
    }
    // Read by user: one user's rows are together in the rollup's key order.
    let key: String =
        v.db.value(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = 'clue_rollup.visits_hour_user_id'::regclass AND contype = 'p'",
        )
        .await;
    assert_eq!(key, "PRIMARY KEY (user_id, bucket)");
    assert_eq!(
        hourly["rows"],
        json!([{"period": "2024-03-10T06:00:00Z", "user_id": "u1", "words": 10},
               {"period": "2024-03-10T07:00:00Z", "user_id": "u1", "words": 20}])
    );
}
