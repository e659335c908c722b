//! The one write path: month partitions made ahead of a load, rollups
//! built, verified and kept exact by the deltas every load applies in its
//! own transaction (and, for writers that are not clue, by the triggers of
//! `triggers`). Producers (`ingest`) feed it typed rows.
//!
//! Architecture Invariant: a load is all or nothing (rows, rejects, job row,
//! rollup deltas and the write notification commit together), and only
//! empty partitions it made may outlive a failed load, dropped again at once
//! when they can be.

pub mod load;
pub mod partitions;
pub mod rollups;
pub mod triggers;
