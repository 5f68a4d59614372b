//! The ETL against the real Postgres server the test command starts: a first run loads everything,
//! a later run exactly what changed (new rows, updates, a refund amending its payment), a
//! transaction that commits late is loaded by the run after, never skipped, and a warehouse refuses
//! another database or a second ETL at once.

use chrono::{DateTime, TimeZone, Utc};
use parkcast_etl::{EtlError, EtlOptions, run};
use parkcast_opstore::records::{self, Customer, Lot, Operator, Payment, TimeBand, Zone};
use parkcast_opstore::testing::{FreshDatabase, settle};
use parkcast_opstore::{migrate, require_postgres};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::progress::NoProgress;
use parkcast_warehouse::rows::{CustomerRow, PaymentRow, TariffRow};
use parkcast_warehouse::schema::Table;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 9, 1, hour, 0, 0)
        .single()
        .expect("a valid instant")
}

fn options() -> EtlOptions {
    EtlOptions {
        source: "test".to_owned(),
    }
}

/// An operator with one lot, one tariff and two customers; returns the tariff id.
fn seed(client: &mut postgres::Client) -> i64 {
    migrate(client).expect("migrates");
    let mut transaction = client.transaction().expect("a transaction");
    records::copy_in(
        &mut transaction,
        &[Operator {
            operator_id: "op".to_owned(),
            name: "Op".to_owned(),
            timezone: "Europe/London".to_owned(),
            currency: "GBP".to_owned(),
        }],
    )
    .expect("operator");
    records::copy_in(
        &mut transaction,
        &[Zone {
            zone_id: "z".to_owned(),
            operator_id: "op".to_owned(),
            name: "Zone".to_owned(),
        }],
    )
    .expect("zone");
    records::copy_in(
        &mut transaction,
        &[Lot {
            lot_id: "lot1".to_owned(),
            zone_id: "z".to_owned(),
            name: "Lot\tone".to_owned(),
            capacity: 10,
        }],
    )
    .expect("lot");
    records::copy_in(
        &mut transaction,
        &[TimeBand {
            band_id: "day".to_owned(),
            name: "day".to_owned(),
            starts_minute: 480,
            ends_minute: 1_440,
            weekdays: vec![1, 2, 3, 4, 5],
        }],
    )
    .expect("band");
    let tariff = records::insert_tariff(
        &mut transaction,
        &records::Tariff {
            zone_id: "z".to_owned(),
            lot_id: Some("lot1".to_owned()),
            band_id: "day".to_owned(),
            code: "hourly".to_owned(),
            cents_per_hour: 250,
            cap_cents: Some(1_200),
            flat_cents: None,
            max_stay_minutes: Some(120),
            penalty_cents: Some(5_000),
            valid_from: at(0),
            valid_until: None,
        },
    )
    .expect("tariff");
    records::copy_in(&mut transaction, &[customer("c1"), customer("c2")]).expect("customers");
    transaction.commit().expect("committed");
    tariff
}

fn customer(id: &str) -> Customer {
    Customer {
        customer_id: id.to_owned(),
        email: Some(format!("{id}@example.org")),
        phone: None,
        email_hash: Some(format!("hash-of-{id}")),
        phone_hash: None,
        customer_type: "visitor".to_owned(),
        registered_on: at(0).date_naive(),
    }
}

fn payment(id: &str, tariff: i64, hour: u32, cents: i64) -> Payment {
    Payment {
        payment_id: id.to_owned(),
        session_id: Some(format!("s-{id}")),
        lot_id: "lot1".to_owned(),
        customer_id: Some("c1".to_owned()),
        vehicle_id: None,
        tariff_id: Some(tariff),
        paid_at: at(hour),
        paid_from: at(hour),
        paid_until: at(hour + 1),
        amount_cents: cents,
        method: "card".to_owned(),
        status: "settled".to_owned(),
    }
}

fn insert_payments(client: &mut postgres::Client, payments: &[Payment]) {
    let mut transaction = client.transaction().expect("a transaction");
    records::copy_in(&mut transaction, payments).expect("payments");
    transaction.commit().expect("committed");
}

fn slips(warehouse: &Warehouse) -> Vec<PaymentRow> {
    let mut rows: Vec<PaymentRow> = warehouse.read_rows().expect("fact_payment");
    rows.sort_by(|a, b| a.slip_id.cmp(&b.slip_id));
    rows
}

fn extracted(report: &parkcast_etl::EtlReport, table: Table) -> u64 {
    report
        .tables
        .iter()
        .find(|load| load.table == table)
        .map_or(0, |load| load.rows)
}

#[test]
fn a_later_run_loads_exactly_what_changed_and_a_refund_amends_its_payment() {
    require_postgres!();
    let database = FreshDatabase::create("etl_incremental");
    let mut client = database.connect();
    let tariff = seed(&mut client);
    insert_payments(
        &mut client,
        &[
            payment("p1", tariff, 9, 250),
            payment("p2", tariff, 10, 500),
        ],
    );
    let folder = tempfile::tempdir().expect("a temporary folder");
    let warehouse = Warehouse::create(folder.path()).expect("a warehouse");

    settle(&mut client);
    let first = run(&mut client, &warehouse, &options(), &NoProgress).expect("first run");
    assert_eq!(first.from_xmin, 0);
    assert_eq!(extracted(&first, Table::DimCustomer), 2);
    assert_eq!(extracted(&first, Table::DimTariff), 1);
    assert_eq!(extracted(&first, Table::FactPayment), 2);
    let customers: Vec<CustomerRow> = warehouse.read_rows().expect("dim_customer");
    assert_eq!(customers.len(), 2);
    assert_eq!(customers[0].email_hash.as_deref(), Some("hash-of-c1"));
    let tariffs: Vec<TariffRow> = warehouse.read_rows().expect("dim_tariff");
    assert_eq!(
        (
            tariffs[0].cents_per_hour,
            tariffs[0].cap_cents,
            tariffs[0].band_starts_minute,
            tariffs[0].band_ends_minute,
            tariffs[0].band_weekdays.as_str(),
            tariffs[0].penalty_cents,
        ),
        (250, Some(1_200), 480, 1_440, "1,2,3,4,5", Some(5_000))
    );

    // Nothing changed: nothing extracted, nothing rewritten.
    let idle = run(&mut client, &warehouse, &options(), &NoProgress).expect("idle run");
    assert_eq!(idle.rows(), 0, "{idle:?}");
    assert!(idle.tables.iter().all(|load| load.files == 0));

    // New rows, an update, and a refund that does not touch its payment's row.
    insert_payments(&mut client, &[payment("p3", tariff, 11, 750)]);
    client
        .execute(
            "UPDATE payment SET status = 'failed' WHERE payment_id = 'p2'",
            &[],
        )
        .expect("an update");
    client
        .execute(
            "INSERT INTO refund (refund_id, payment_id, refunded_at, amount, reason)
             VALUES ('r1', 'p1', now(), 1.50, 'complaint')",
            &[],
        )
        .expect("a refund");
    client
        .execute(
            "UPDATE customer SET phone = '+44 1', phone_hash = 'hash-of-phone' WHERE customer_id = 'c2'",
            &[],
        )
        .expect("a customer update");
    settle(&mut client);
    let second = run(&mut client, &warehouse, &options(), &NoProgress).expect("second run");
    assert_eq!(second.from_xmin, idle.to_xmin);
    assert_eq!(extracted(&second, Table::FactPayment), 3, "{second:?}");
    assert_eq!(extracted(&second, Table::DimCustomer), 1, "{second:?}");
    assert_eq!(extracted(&second, Table::DimTariff), 0, "{second:?}");
    let rows = slips(&warehouse);
    let summary: Vec<(&str, &str, Option<i64>, i64)> = rows
        .iter()
        .map(|row| {
            (
                row.slip_id.as_str(),
                row.status.as_deref().unwrap_or("-"),
                row.refunded_cents,
                row.amount_cents,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("p1", "settled", Some(150), 250),
            ("p2", "failed", None, 500),
            ("p3", "settled", None, 750),
        ]
    );
    assert_eq!(rows[0].tariff_id, tariff.to_string());
    assert_eq!(rows[0].paid_until, Some(at(10)));
    let customers: Vec<CustomerRow> = warehouse.read_rows().expect("dim_customer");
    assert_eq!(customers.len(), 2, "an update replaces, never duplicates");
    assert_eq!(customers[1].phone_hash.as_deref(), Some("hash-of-phone"));
}

#[test]
fn a_transaction_that_commits_late_is_loaded_by_the_next_run_never_skipped() {
    require_postgres!();
    let database = FreshDatabase::create("etl_late_commit");
    let mut client = database.connect();
    let tariff = seed(&mut client);
    let folder = tempfile::tempdir().expect("a temporary folder");
    let warehouse = Warehouse::create(folder.path()).expect("a warehouse");
    run(&mut client, &warehouse, &options(), &NoProgress).expect("first run");

    // A slow writer opens first (its xid is older) and commits last.
    let mut slow = database.connect();
    let mut slow_transaction = slow.transaction().expect("a transaction");
    records::copy_in(&mut slow_transaction, &[payment("slow", tariff, 9, 100)])
        .expect("a slow payment");
    insert_payments(&mut client, &[payment("fast", tariff, 10, 200)]);

    // The slow transaction is still open: the window ends before it, and the fast one (committed,
    // but with a newer xid) waits too, rather than moving the bound past the slow one.
    let during = run(&mut client, &warehouse, &options(), &NoProgress).expect("run during");
    assert_eq!(extracted(&during, Table::FactPayment), 0, "{during:?}");
    assert!(during.held_back_by.is_some());
    slow_transaction.commit().expect("the slow writer commits");

    settle(&mut client);
    let after = run(&mut client, &warehouse, &options(), &NoProgress).expect("run after");
    assert_eq!(extracted(&after, Table::FactPayment), 2, "{after:?}");
    let ids: Vec<String> = slips(&warehouse)
        .into_iter()
        .map(|row| row.slip_id)
        .collect();
    assert_eq!(ids, ["fast", "slow"]);
}

#[test]
fn a_warehouse_refuses_another_database_and_a_second_etl_at_once() {
    require_postgres!();
    let first_database = FreshDatabase::create("etl_source_a");
    let second_database = FreshDatabase::create("etl_source_b");
    let mut first = first_database.connect();
    let mut second = second_database.connect();
    seed(&mut first);
    seed(&mut second);
    let folder = tempfile::tempdir().expect("a temporary folder");
    let warehouse = Warehouse::create(folder.path()).expect("a warehouse");
    run(&mut first, &warehouse, &options(), &NoProgress).expect("first database");
    let error =
        run(&mut second, &warehouse, &options(), &NoProgress).expect_err("another database");
    assert!(matches!(error, EtlError::OtherSource { .. }), "{error}");
    assert!(
        error.to_string().contains("another operational store"),
        "{error}"
    );

    let lock = std::fs::File::create(folder.path().join("etl").join("lock")).expect("the lock");
    lock.lock().expect("held by this test");
    let error = run(&mut first, &warehouse, &options(), &NoProgress).expect_err("busy");
    assert!(matches!(error, EtlError::Busy(_)), "{error}");
    drop(lock);
    run(&mut first, &warehouse, &options(), &NoProgress).expect("free again");
}

#[test]
fn an_unmigrated_database_is_refused_with_what_to_do() {
    require_postgres!();
    let database = FreshDatabase::create("etl_unmigrated");
    let mut client = database.connect();
    client
        .batch_execute(
            "CREATE TABLE parkcast_schema_migrations (version bigint PRIMARY KEY, name text NOT NULL,
                 checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO parkcast_schema_migrations VALUES (1, 'operational schema', 'x', now())",
        )
        .expect("a half-migrated database");
    let folder = tempfile::tempdir().expect("a temporary folder");
    let warehouse = Warehouse::create(folder.path()).expect("a warehouse");
    let error = run(&mut client, &warehouse, &options(), &NoProgress).expect_err("refused");
    assert!(
        matches!(error, EtlError::SchemaVersion { found: 1, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("parkcast opstore migrate"),
        "{error}"
    );
}
