//! The pure domain: typed values, the time model, validation rules,
//! declared datasets, rollup definitions and rollup deltas, and the
//! warehouse's cleaning rules.
//!
//! Architecture Invariant: no I/O beyond reading a definition file it is
//! handed, and no `use` of any other layer of clue.

pub mod access;
pub mod dataset;
pub mod delta;
pub mod rollup;
pub mod rules;
pub mod time;
pub mod value;
pub mod warehouse;
