//! PostgreSQL mechanics: the embedded cluster, connections and their
//! failures, the catalog as clue reads it (and the script runner of
//! `create-schema`), the binary COPY codec, exact numeric decoding, and
//! logical replication from a source database.

pub mod catalog;
pub mod cluster;
pub mod copy;
pub mod database;
pub mod numeric;
pub mod replication;
