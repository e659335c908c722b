//! What a caller may see: the datasets and rows an API key is limited to.
//! The planner adds the rows' conditions to every query as filters before
//! planning it, like row-level security, so no query (whatever it asks,
//! from whichever rollup it is served) reaches a row outside them.

use crate::domain::access::Condition;
use crate::domain::dataset::Dataset;

use super::{Filter, FilterOp, PlanError, Query};

/// The datasets (none: all) and row conditions (all must hold) of a caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct View {
    pub datasets: Vec<String>,
    pub conditions: Vec<Condition>,
}

impl View {
    /// Everything: an unlimited key, or a server without keys.
    pub fn everything() -> View {
        View::default()
    }

    pub fn is_everything(&self) -> bool {
        self.datasets.is_empty() && self.conditions.is_empty()
    }

    /// Whether the caller may read `dataset` at all: it is one of its
    /// datasets, and every condition can be applied to it (a dataset
    /// without the conditioned dimension cannot be limited, so it is hidden).
    pub fn sees(&self, dataset: &Dataset) -> bool {
        self.sees_name(&dataset.name)
            && self
                .conditions
                .iter()
                .all(|c| dataset.dimensions.contains(&c.dimension))
    }

    /// Whether the dataset list allows `name` (conditions aside).
    pub fn sees_name(&self, name: &str) -> bool {
        self.datasets.is_empty() || self.datasets.iter().any(|d| d == name)
    }

    /// Adds the conditions to `q` as filters, or refuses a dataset the
    /// caller may not read.
    pub fn restrict(&self, dataset: &Dataset, q: &mut Query) -> Result<(), PlanError> {
        if !self.sees(dataset) {
            return Err(PlanError::Hidden(dataset.name.clone()));
        }
        q.filters.extend(self.conditions.iter().map(|c| Filter {
            dimension: c.dimension.clone(),
            op: FilterOp::Equals(c.value.clone()),
        }));
        Ok(())
    }

    /// What tells apart the answers of callers that see different rows (a
    /// cache key's prefix); empty for everything, so unlimited callers
    /// share answers.
    pub fn fingerprint(&self) -> String {
        if self.is_everything() {
            return String::new();
        }
        let mut datasets = self.datasets.clone();
        datasets.sort();
        let mut conditions = self.conditions.clone();
        conditions.sort();
        serde_json::json!({"d": datasets, "c": conditions}).to_string()
    }
}
