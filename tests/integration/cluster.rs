//! The embedded default: with nothing configured, commands run on clue's own
//! cluster in CLUE_HOME, start it, use it and stop it.

use crate::helpers::{Run, clue_with, peer_file, scratch_dir};

fn clue_in(home: &std::path::Path, args: &[&str]) -> Run {
    clue_with(args, &[("CLUE_HOME", home.to_str().unwrap())])
}

fn status(home: &std::path::Path) -> String {
    clue_in(home, &["db", "status"]).ok().stdout
}

fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-XAtc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn commands_start_and_stop_a_private_cluster_that_keeps_its_data() {
    let dir = scratch_dir();
    let home = dir.path().join("home");
    assert!(status(&home).starts_with("not initialized"));
    clue_in(&home, &["create-schema"]).ok();
    assert!(
        status(&home).starts_with("stopped"),
        "a plain command stops what it started"
    );
    clue_in(
        &home,
        &[
            "import-data",
            "-c",
            peer_file("sales_data.csv").to_str().unwrap(),
            "-t",
            "sales_report",
        ],
    )
    .ok();
    assert!(status(&home).starts_with("stopped"));

    // `db start` keeps it running across commands; the url works for psql.
    let started = clue_in(&home, &["db", "start"]).ok();
    assert!(
        started.stdout.contains("Started embedded PostgreSQL"),
        "{}",
        started.stdout
    );
    let url = clue_in(&home, &["db", "url"]).ok().stdout.trim().to_owned();
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) || ' ' || sum(sales_amount) FROM sales_report"
        ),
        "20 70575.00"
    );
    clue_in(
        &home,
        &[
            "create-monthly-partitions",
            "-t",
            "sales_report",
            "-s",
            "2026",
            "-e",
            "2026",
        ],
    )
    .ok();
    assert!(
        status(&home).starts_with("running: pid"),
        "kept running after a command"
    );
    // The server listens on a socket only, not on TCP.
    assert_eq!(psql(&url, "SHOW listen_addresses"), "");
    assert_eq!(psql(&url, "SHOW jit"), "off");
    assert!(
        clue_in(&home, &["db", "stop"])
            .ok()
            .stdout
            .contains("Stopped the embedded cluster.")
    );
    assert!(status(&home).starts_with("stopped"));
    assert!(
        clue_in(&home, &["db", "stop"])
            .ok()
            .stdout
            .contains("was not running")
    );

    // Restarted, the data is still there.
    clue_in(&home, &["db", "start"]).ok();
    assert_eq!(psql(&url, "SELECT count(*) FROM sales_report"), "20");
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'sales_report'::regclass"
        ),
        "14"
    );
    // User tables live in public, not in clue's own schema (the role is named clue too).
    assert_eq!(
        psql(
            &url,
            "SELECT 'sales_report'::regclass::text || ' ' || to_regclass('public.sales_report')::text"
        ),
        "sales_report sales_report"
    );
    // Later loads keep the rollups exact on the embedded cluster as anywhere.
    clue_in(
        &home,
        &[
            "import-data",
            "-c",
            peer_file("sales_data_2.csv").to_str().unwrap(),
            "-t",
            "sales_report",
            "-p",
            peer_file("sales_data.yaml").to_str().unwrap(),
        ],
    )
    .ok();
    let verify = clue_in(&home, &["rollups", "verify"]).ok();
    assert_eq!(
        verify.stdout.matches(": ok").count(),
        5,
        "{}",
        verify.stdout
    );
    assert_eq!(
        psql(
            &url,
            "SELECT sum(row_count) FROM clue_rollup.sales_report_month"
        ),
        "38"
    );
    clue_in(&home, &["db", "stop"]).ok();
}

#[test]
fn concurrent_first_commands_share_one_cluster() {
    let dir = scratch_dir();
    let home = dir.path().join("home");
    let sql: Vec<_> = (0..3)
        .map(|i| {
            crate::helpers::write_file(
                dir.path(),
                &format!("s{i}.sql"),
                format!("CREATE TABLE t{i} (id int);"),
            )
        })
        .collect();
    let runs: Vec<_> = sql
        .iter()
        .map(|f| {
            let (home, f) = (home.clone(), f.clone());
            std::thread::spawn(move || {
                clue_in(&home, &["create-schema", "--source", f.to_str().unwrap()])
            })
        })
        .collect();
    for r in runs {
        r.join().unwrap().ok();
    }
    assert!(
        status(&home).starts_with("stopped"),
        "the last user stops it"
    );
    clue_in(&home, &["db", "start"]).ok();
    let url = clue_in(&home, &["db", "url"]).ok().stdout.trim().to_owned();
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relname ~ '^t[0-9]$'"
        ),
        "t0,t1,t2"
    );
    assert_eq!(psql(&url, "SELECT count(*) FROM clue.schema_history"), "11");
    clue_in(&home, &["db", "stop"]).ok();
}

#[test]
fn missing_server_binaries_name_the_package_and_the_alternative() {
    let dir = scratch_dir();
    let run = clue_with(
        &["create-schema"],
        &[
            ("CLUE_HOME", dir.path().join("h").to_str().unwrap()),
            ("CLUE_PG_BIN", dir.path().to_str().unwrap()),
        ],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("apt-get install postgresql"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("CLUE_DATABASE_URL"), "{}", run.stderr);
}

#[tokio::test]
async fn a_wrong_password_is_reported_as_such() {
    // A private cluster whose socket asks for a password.
    let dir = scratch_dir();
    let cluster = clue::pg::cluster::Cluster::new(dir.path().join("home"));
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start_kept())
        .await
        .unwrap()
        .unwrap();
    let url = cluster.url();
    psql(&url, "ALTER ROLE clue PASSWORD 'right-password'");
    let hba = dir.path().join("home/pgdata/pg_hba.conf");
    std::fs::write(&hba, "local all all scram-sha-256\n").unwrap();
    psql(&url, "SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.password("wrong-password");
    let target = clue::settings::DatabaseTarget::Configured(Box::new(config));
    let err = clue::pg::database::Database::open(&target)
        .await
        .err()
        .expect("must fail")
        .to_string();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(err.starts_with("authentication failed for clue@"), "{err}");
    assert!(
        err.contains("password authentication failed for user \"clue\""),
        "{err}"
    );
}
