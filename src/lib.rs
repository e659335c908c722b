//! clue: turns raw sales and activity data into fast, exact aggregates on PostgreSQL.
//!
//! The binary (`main.rs`) only calls [`cli::main`]; everything else lives here
//! so tests and other surfaces use the same services. The modules are layers,
//! listed bottom up: each uses only those above it in this list
//! (`tests/integration/layers.rs` enforces it; see ARCHITECTURE.md). The
//! layers nothing outside the crate needs are crate-private.

pub mod error;
pub mod settings;

pub mod domain;

pub(crate) mod sql;

pub mod plan;

pub mod pg;

pub mod store;

pub(crate) mod write;

pub(crate) mod ingest;

pub mod serve;

pub mod app;
pub mod demo;

pub mod api;

pub mod cli;
