//! The route handlers, one file per group: reports, the generic query, health.

pub(super) mod health;
pub(super) mod learning;
pub(super) mod query;
pub(super) mod reports;
