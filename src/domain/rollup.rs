//! What a rollup is, as data: the partial aggregates it keeps and the
//! description the planner chooses rollups by.
//!
//! Architecture Invariant: pure; the SQL of rollups is written by
//! `write::rollups` (tables, builds, deltas) and `plan` (reads).

use serde::{Deserialize, Serialize};

use crate::domain::time::Grain;

/// What a partial aggregate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartialKind {
    Sum,
    Count,
    Min,
    Max,
}

/// A partial aggregate column of a rollup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub kind: PartialKind,
    /// The fact column it aggregates.
    pub source: String,
}

impl Partial {
    /// Its column name in the rollup table.
    pub fn column(&self) -> String {
        let prefix = match self.kind {
            PartialKind::Sum => "sum",
            PartialKind::Count => "count",
            PartialKind::Min => "min",
            PartialKind::Max => "max",
        };
        format!("{prefix}_{}", self.source)
    }
}

/// A rollup as built: what the planner may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupInfo {
    pub name: String,
    pub dataset: String,
    pub grain: Grain,
    pub dimensions: Vec<String>,
    pub partials: Vec<Partial>,
    /// Row estimate, for choosing the smallest rollup.
    pub rows: i64,
    /// The dimension its table is ordered by first (see `RollupDef::read_by`).
    pub read_by: Option<String>,
}

impl RollupInfo {
    pub fn has(&self, kind: PartialKind, source: &str) -> bool {
        self.partials
            .iter()
            .any(|p| p.kind == kind && p.source == source)
    }

    /// Whether `other` holds the same aggregation (name, dataset and row
    /// estimate aside): a rollup whose shape changed must be rebuilt.
    pub fn same_shape(&self, other: &RollupInfo) -> bool {
        self.grain == other.grain
            && self.dimensions == other.dimensions
            && self.partials == other.partials
            && self.read_by == other.read_by
    }
}
