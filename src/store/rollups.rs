//! The rollup registry `clue.rollups`: which rollups exist, with their
//! definitions in a versioned format, and the planner's view of them.
//!
//! Architecture Invariant: a stored definition is compared by meaning
//! (grain, dimensions, partials), never as text, so adding a field to the
//! format does not rebuild every rollup; definitions written before the
//! format had a version (a plain dump of the same fields) still read.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

use crate::domain::dataset::Dataset;
use crate::domain::rollup::{Partial, RollupInfo};
use crate::domain::time::Grain;
use crate::sql::ROLLUP_SCHEMA;

/// The stored form of a rollup's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredDefinition {
    /// Absent in definitions written before the format was versioned.
    #[serde(default)]
    version: u32,
    grain: Grain,
    dimensions: Vec<String>,
    partials: Vec<Partial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_by: Option<String>,
}

/// The format written now.
const VERSION: u32 = 1;

/// A definition as stored.
pub fn encode(info: &RollupInfo) -> String {
    serde_json::to_string(&StoredDefinition {
        version: VERSION,
        grain: info.grain,
        dimensions: info.dimensions.clone(),
        partials: info.partials.clone(),
        read_by: info.read_by.clone(),
    })
    .expect("a definition serializes")
}

/// Reads a stored definition of rollup `name` of `dataset`; `None` when it
/// is not one this build understands (then the rollup is rebuilt).
pub fn decode(name: &str, dataset: &str, text: &str) -> Option<RollupInfo> {
    let stored: StoredDefinition = serde_json::from_str(text).ok()?;
    (stored.version <= VERSION).then(|| RollupInfo {
        name: name.to_owned(),
        dataset: dataset.to_owned(),
        grain: stored.grain,
        dimensions: stored.dimensions,
        partials: stored.partials,
        rows: 0,
        read_by: stored.read_by,
    })
}

/// The recorded rollups of a dataset, by name (undecodable ones as `None`).
pub async fn recorded(
    client: &impl GenericClient,
    dataset: &str,
) -> Result<HashMap<String, Option<RollupInfo>>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT name, definition FROM clue.rollups WHERE dataset = $1",
            &[&dataset],
        )
        .await?
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let info = decode(&name, dataset, r.get(1));
            (name, info)
        })
        .collect())
}

/// Records that rollup `info` was (re)built now.
pub async fn record(
    client: &impl GenericClient,
    info: &RollupInfo,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO clue.rollups (name, dataset, definition, built_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (name) DO UPDATE SET dataset = excluded.dataset, definition = excluded.definition, built_at = now()",
            &[&info.name, &info.dataset, &encode(info)],
        )
        .await?;
    Ok(())
}

/// Forgets a dropped rollup.
pub async fn forget(client: &impl GenericClient, name: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute("DELETE FROM clue.rollups WHERE name = $1", &[&name])
        .await?;
    Ok(())
}

/// The current rollups of a dataset with row estimates (for the planner):
/// those whose table exists and that its definition still declares.
pub async fn current(
    client: &impl GenericClient,
    dataset: &Dataset,
) -> Result<Vec<RollupInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT r.name, r.definition, greatest(c.reltuples, 0)::int8
               FROM clue.rollups r JOIN pg_class c ON c.oid = to_regclass($2 || '.' || r.name)
              WHERE r.dataset = $1",
            &[&dataset.name, &ROLLUP_SCHEMA],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let Some(mut info) = decode(&name, &dataset.name, r.get(1)) else {
            continue;
        };
        if dataset.rollups.iter().any(|d| {
            d.name == info.name && d.grain == info.grain && d.dimensions == info.dimensions
        }) {
            info.rows = r.get(2);
            out.push(info);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollup::PartialKind;

    #[test]
    fn definitions_round_trip_and_old_ones_still_read() {
        let info = RollupInfo {
            name: "r".into(),
            dataset: "d".into(),
            grain: Grain::Month,
            dimensions: vec!["region".into()],
            partials: vec![Partial {
                kind: PartialKind::Sum,
                source: "sales_amount".into(),
            }],
            rows: 7,
            read_by: None,
        };
        let text = encode(&info);
        assert_eq!(
            text,
            r#"{"version":1,"grain":"month","dimensions":["region"],"partials":[{"kind":"sum","source":"sales_amount"}]}"#
        );
        assert!(decode("r", "d", &text).unwrap().same_shape(&info));
        // The unversioned dump of earlier builds.
        let old = r#"{"name":"r","dataset":"d","grain":"month","dimensions":["region"],"partials":[{"kind":"sum","source":"sales_amount"}],"rows":0}"#;
        assert!(decode("r", "d", old).unwrap().same_shape(&info));
        // From a newer build, or not a definition at all: rebuilt.
        assert_eq!(
            decode(
                "r",
                "d",
                r#"{"version":2,"grain":"month","dimensions":[],"partials":[]}"#
            ),
            None
        );
        assert_eq!(decode("r", "d", "nonsense"), None);
    }
}
