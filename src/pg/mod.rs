//! PostgreSQL mechanics: the embedded cluster, connections and their
//! failures, the catalog as clue reads it (and the script runner of
//! `create-schema`), the binary COPY codec, exact numeric decoding.

pub mod catalog;
pub mod cluster;
pub mod copy;
pub mod database;
pub mod numeric;
