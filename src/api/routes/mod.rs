//! The route handlers, one file per group: reports, the generic query, learning logs, sales events, health.

pub(super) mod country;
pub(super) mod events;
pub(super) mod health;
pub(super) mod learning;
pub(super) mod query;
pub(super) mod reports;
pub(super) mod sales;
