//! Configuration and connection failures: one line, saying which, with the
//! exit code scripts can rely on.

use crate::helpers::{TestDb, clue_with};

#[tokio::test]
async fn connection_failures_say_which() {
    let db = TestDb::new().await;
    // Unreachable: nothing listens on port 1.
    clue_with(
        &["create-schema"],
        &[
            ("CLUE_DB_HOST", "127.0.0.1"),
            ("CLUE_DB_PORT", "1"),
            ("CLUE_DB", "x"),
            ("CLUE_DB_USER", "postgres"),
        ],
    )
    .fails_with(
        3,
        "cannot reach PostgreSQL at postgres@127.0.0.1:1/x: Connection refused",
    );
    // A database that does not exist, on a server that does.
    let missing = db.url.replace(&db.name, "clue_no_such_db");
    clue_with(&["create-schema"], &[("CLUE_DATABASE_URL", &missing)])
        .fails_with(3, "database \"clue_no_such_db\" does not exist");
    // A role that does not exist.
    let nobody = db.url_as("clue_no_such_role");
    clue_with(&["create-schema"], &[("CLUE_DATABASE_URL", &nobody)])
        .fails_with(3, "authentication failed for clue_no_such_role@");
    // The flag wins over the environment.
    let run = clue_with(
        &["create-schema", "--database-url", &db.url],
        &[("CLUE_DATABASE_URL", &missing)],
    )
    .ok();
    assert!(run.stdout.contains("Created table sales_report"));
    // Malformed settings.
    clue_with(
        &["create-schema"],
        &[("CLUE_DB", "x"), ("CLUE_DB_PORT", "fivefourthreetwo")],
    )
    .fails_with(4, "CLUE_DB_PORT must be a port number");
    clue_with(&["serve", "--query-timeout=-1"], &[])
        .fails_with(2, "\"-1\" is not a number of seconds between 0 and 86400");
    clue_with(&["serve"], &[("CLUE_QUERY_TIMEOUT", "soon")])
        .fails_with(2, "\"soon\" is not a number of seconds between 0 and 86400");
    clue_with(
        &["create-schema"],
        &[("CLUE_DATABASE_URL", "postgresql://u:hunter2@h:99999/d")],
    )
    .fails_with(
        4,
        "CLUE_DATABASE_URL is not a valid PostgreSQL connection string",
    );
    let leaked = clue_with(
        &["create-schema"],
        &[("CLUE_DATABASE_URL", "postgresql://u:hunter2@h:99999/d")],
    );
    assert!(!leaked.stderr.contains("hunter2"), "{}", leaked.stderr);
    for run in [
        clue_with(
            &["create-schema"],
            &[("CLUE_DB_HOST", "127.0.0.1"), ("CLUE_DB_PORT", "1")],
        ),
        clue_with(&["create-schema"], &[("CLUE_DATABASE_URL", &missing)]),
    ] {
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "one line expected:\n{}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn db_commands_refuse_a_configured_database_but_status_checks_it() {
    let db = TestDb::new().await;
    db.clue(&["db", "start"])
        .fails_with(1, "clue db manages only the embedded cluster");
    let status = db.clue(&["db", "status"]).ok();
    assert!(
        status.stdout.contains("using the configured database")
            && status.stdout.contains("(reachable)"),
        "{}",
        status.stdout
    );
}

#[test]
fn help_lists_the_prototype_commands() {
    let help = clue_with(&["--help"], &[]).ok();
    for cmd in [
        "create-schema",
        "create-monthly-partitions",
        "import-data",
        "generate-sales",
        "db",
    ] {
        assert!(
            help.stdout.contains(cmd),
            "{cmd} missing from:\n{}",
            help.stdout
        );
    }
    let import_help = clue_with(&["import-data", "--help"], &[]).ok();
    for flag in [
        "--csv_path",
        "--table",
        "--schema_path",
        "--error_table",
        "-c",
        "-t",
        "-p",
        "-e",
    ] {
        assert!(
            import_help.stdout.contains(flag),
            "{flag} missing from:\n{}",
            import_help.stdout
        );
    }
    clue_with(&["no-such-command"], &[]).fails_with(2, "unrecognized subcommand");
}

#[tokio::test]
async fn a_read_only_server_changes_nothing_and_needs_a_current_schema() {
    let db = TestDb::new().await;
    // A database no writer has migrated: the reader refuses to serve.
    clue_with(
        &["serve", "--read-only", "--port", "0"],
        &[("CLUE_DATABASE_URL", &db.url)],
    )
    .fails_with(
        3,
        "the database is at migration None but this build needs Some(11)",
    );
    let schemas: i64 = db
        .value("SELECT count(*) FROM pg_namespace WHERE nspname IN ('clue', 'clue_rollup')")
        .await;
    assert_eq!(schemas, 0, "a reader creates nothing");
    clue_with(
        &["demo", "--read-only", "--port", "0"],
        &[("CLUE_DATABASE_URL", &db.url)],
    )
    .fails_with(4, "the demo loads data, so it cannot run --read-only");
}
