//! The only SQL on clue's own tables: schema migrations, import jobs, the
//! rollup registry, the idempotency ledger (every idempotent write claims
//! its key there), the advisory-lock keys, the write notifications, the sync's
//! watermarks and positions, and the warehouse's batch registry.
//!
//! Architecture Invariant: every statement that reads or writes a table in
//! the `clue` schema, and every advisory lock clue takes, is in this module.

pub mod imports;
pub mod keys;
pub mod ledger;
pub mod locks;
pub mod migrations;
pub mod notify;
pub mod rollups;
pub mod sync;
pub mod warehouse;
