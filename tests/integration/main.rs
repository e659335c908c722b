//! Integration tests: every command against a real PostgreSQL, each test in
//! a fresh database of its own (see `helpers`).

mod access;
mod api;
mod cdc;
mod cli;
mod cluster;
mod country;
mod dashboard;
mod events;
mod helpers;
mod import;
mod instants;
mod layers;
mod learning;
mod ledger;
mod live;
mod rollups;
mod sales;
mod schema;
mod sync;
mod warehouse;
