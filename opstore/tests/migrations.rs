//! The operational schema's migrations on the real Postgres server the test command starts: a
//! fresh database gets every table, a second run changes nothing, a database edited or migrated by
//! a newer parkcast is refused, two migrators at once apply each migration once, and every write
//! gets the row version and transaction id the ETL extracts by.

use parkcast_opstore::testing::FreshDatabase;
use parkcast_opstore::{MIGRATIONS, OpStoreError, TABLES, migrate, require_postgres};

#[test]
fn a_fresh_database_gets_every_table_and_a_second_run_applies_nothing() {
    require_postgres!();
    let database = FreshDatabase::create("opstore_fresh");
    let mut client = database.connect();
    let first = migrate(&mut client).expect("migrates");
    let newest = MIGRATIONS.last().expect("a migration").version;
    assert_eq!(first.applied, (1..=newest).collect::<Vec<_>>());
    assert_eq!(first.version, newest);
    for table in TABLES {
        let triggers: i64 = client
            .query_one(
                "SELECT count(*) FROM information_schema.triggers WHERE event_object_table = $1",
                &[table],
            )
            .expect("a count")
            .get(0);
        // INSERT and UPDATE (the ETL's row version), DELETE (refused): one row each.
        assert_eq!(triggers, 3, "{table}'s triggers");
    }
    let again = migrate(&mut client).expect("migrates again");
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.version, newest);
}

#[test]
fn an_edited_or_newer_schema_is_refused_and_left_alone() {
    require_postgres!();
    let database = FreshDatabase::create("opstore_refused");
    let mut client = database.connect();
    migrate(&mut client).expect("migrates");
    client
        .batch_execute(
            "UPDATE parkcast_schema_migrations SET checksum = 'edited' WHERE version = 1",
        )
        .expect("edited");
    let error = migrate(&mut client).expect_err("an edited migration");
    assert!(
        matches!(error, OpStoreError::Edited { version: 1, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("must not change"), "{error}");
    client
        .execute(
            "UPDATE parkcast_schema_migrations SET checksum = $1 WHERE version = 1",
            &[&MIGRATIONS[0].checksum()],
        )
        .expect("restored");
    client
        .batch_execute(
            "INSERT INTO parkcast_schema_migrations (version, name, checksum) VALUES (99, 'future', 'x')",
        )
        .expect("a newer migration");
    let error = migrate(&mut client).expect_err("a newer schema");
    assert!(
        matches!(error, OpStoreError::NewerSchema { found: 99, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("upgrade parkcast"), "{error}");
}

#[test]
fn two_migrators_at_once_apply_each_migration_once() {
    require_postgres!();
    let database = FreshDatabase::create("opstore_race");
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let mut client = database.connect();
            std::thread::spawn(move || migrate(&mut client).expect("migrates"))
        })
        .collect();
    let mut applied: Vec<i64> = runs
        .into_iter()
        .flat_map(|run| run.join().expect("no panic").applied)
        .collect();
    applied.sort_unstable();
    let newest = MIGRATIONS.last().expect("a migration").version;
    assert_eq!(applied, (1..=newest).collect::<Vec<_>>());
}

#[test]
fn every_write_gets_a_newer_row_version_and_its_transaction_id() {
    require_postgres!();
    let database = FreshDatabase::create("opstore_versions");
    let mut client = database.connect();
    migrate(&mut client).expect("migrates");
    client
        .batch_execute(
            "INSERT INTO operator VALUES ('op', 'City parking', 'Europe/London', 'GBP');
             INSERT INTO zone (zone_id, operator_id, name) VALUES ('z1', 'op', 'Centre');
             INSERT INTO lot (lot_id, zone_id, name, capacity) VALUES ('lot-1', 'z1', 'Market', 120);",
        )
        .expect("rows");
    let version = |client: &mut postgres::Client, table: &str| -> (i64, String) {
        let row = client
            .query_one(
                &format!("SELECT row_version, row_xid::text FROM {table}"),
                &[],
            )
            .expect("a row");
        (row.get(0), row.get(1))
    };
    let (operator, _) = version(&mut client, "operator");
    let (zone, _) = version(&mut client, "zone");
    let (lot, _) = version(&mut client, "lot");
    assert!(
        0 < operator && operator < zone && zone < lot,
        "{operator} {zone} {lot}"
    );
    let mut transaction = client.transaction().expect("a transaction");
    let xid: String = transaction
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .expect("an id")
        .get(0);
    transaction
        .batch_execute("UPDATE lot SET capacity = 130")
        .expect("updated");
    transaction.commit().expect("committed");
    let (updated, written_by) = version(&mut client, "lot");
    assert!(
        updated > lot,
        "an update is a new version: {updated} after {lot}"
    );
    assert_eq!(
        written_by, xid,
        "the row names the transaction that wrote it"
    );
    // A client cannot set the versions itself: the trigger overwrites them.
    client
        .batch_execute("UPDATE lot SET row_version = 1")
        .expect("updated");
    let (forced, _) = version(&mut client, "lot");
    assert!(forced > updated, "{forced}");
}
