//! clue: turns raw sales and activity data into fast, exact aggregates on PostgreSQL.
//!
//! The binary (`main.rs`) only calls [`cli::main`]; everything else lives here
//! so tests and other surfaces use the same services. The folders follow the
//! spine, each using only the ones listed before it (`tests/layers.rs`
//! enforces it); see ARCHITECTURE.md.

pub mod error;
pub mod settings;

pub mod api;
pub mod app;
pub mod cli;
pub mod demo;
pub mod domain;
pub mod ingest;
pub mod pg;
pub mod plan;
pub mod serve;
pub mod sql;
pub mod store;
pub mod write;
