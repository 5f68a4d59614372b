//! `parkcast opstore` as an operator runs it against the real Postgres server the test command
//! starts: a fresh database is at version 0, `migrate` brings it to the newest and a second run
//! changes nothing, and an unreachable server is a clear error.

use crate::common;

use parkcast_opstore::testing::FreshDatabase;
use parkcast_opstore::{MIGRATIONS, require_postgres};

#[test]
fn migrate_brings_a_fresh_database_to_the_newest_schema_once() {
    require_postgres!();
    let database = FreshDatabase::create("cli_opstore");
    let dsn = database.dsn();
    let newest = MIGRATIONS.last().expect("a migration").version;
    let status = common::succeeded(&common::parkcast(&[
        "opstore",
        "--postgres",
        &dsn,
        "status",
    ]));
    assert!(
        status.contains(&format!(
            "schema at version 0; this parkcast ships up to {newest}"
        )),
        "{status}"
    );
    let first = common::succeeded(&common::parkcast(&[
        "opstore",
        "--postgres",
        &dsn,
        "migrate",
    ]));
    assert!(
        first.contains(&format!("schema at version {newest}: applied 1")),
        "{first}"
    );
    let second = common::succeeded(&common::parkcast(&[
        "opstore",
        "--postgres",
        &dsn,
        "migrate",
    ]));
    assert!(second.contains("up to date"), "{second}");
    let tables: i64 = database
        .connect()
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ANY($1)",
            &[&parkcast_opstore::TABLES],
        )
        .expect("a count")
        .get(0);
    assert_eq!(
        tables,
        i64::try_from(parkcast_opstore::TABLES.len()).expect("few")
    );
}

#[test]
fn an_unreachable_server_is_named_and_fails() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("an address")
        .port();
    let dsn = format!("host=127.0.0.1 port={port} user=parkcast dbname=postgres connect_timeout=5");
    let output = common::parkcast(&["opstore", "--postgres", &dsn, "migrate"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("could not connect to the operational store"),
        "{stderr}"
    );
}
