//! The read runtime: queries as clients write them, their execution
//! through the planner (time limits, exact decoding), the answer cache, and
//! the saved reports of the prototypes.
//!
//! Architecture Invariant: no SQL text is written here; plans come from
//! `plan`, catalog lookups from `pg::catalog`, registry reads from `store`.

pub mod access;
pub mod cache;
pub mod changes;
pub mod country;
pub mod datasets;
pub mod delivery;
pub mod execute;
pub mod feedback;
pub mod query;
pub mod reports;
pub mod warehouse;
