//! clue: turns raw sales and activity data into fast, exact aggregates on PostgreSQL.
//!
//! The binary (`main.rs`) only calls [`cli::main`]; everything else lives here
//! so tests and other surfaces use the same services.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dataset;
pub mod db;
pub mod demo;
pub mod generate;
pub mod import;
pub mod model;
pub mod partition;
pub mod planner;
pub mod query;
pub mod report;
pub mod rollup;
pub mod schema;
pub mod sqlscript;
