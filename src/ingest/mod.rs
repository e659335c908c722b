//! Producers that feed the write path: CSV files today; HTTP events,
//! database sync and warehouse batches next.
//!
//! Architecture Invariant: producers never use `serve` or the surfaces.

pub mod csv;
