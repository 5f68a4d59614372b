//! `parkcast etl` as an operator runs it, on a simulated city whose backend writes the real
//! Postgres server the test command starts: killed (SIGKILL) at random points and rerun, the
//! warehouse equals an uninterrupted run's, no row twice and none missing; an incremental run after
//! new and updated rows picks up exactly those.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use parkcast_opstore::require_postgres;
use parkcast_opstore::testing::{FreshDatabase, settle};
use parkcast_warehouse::rows::{CustomerRow, PaymentRow, TariffRow, VehicleRow};
use parkcast_warehouse::{FrameRow, Warehouse};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a folder");
    for entry in std::fs::read_dir(from).expect("a folder to copy") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("a copy");
        }
    }
}

fn etl(dsn: &str, warehouse: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parkcast"));
    command
        .args(["etl", "--quiet", "--postgres", dsn, "--warehouse"])
        .arg(warehouse)
        .env_remove("PARKCAST_WAREHOUSE")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

fn rows<R: FrameRow>(warehouse: &Path, key: fn(&R) -> String) -> Vec<R> {
    let mut rows: Vec<R> = Warehouse::open(warehouse)
        .expect("a warehouse")
        .read_rows()
        .expect("the ETL's table");
    rows.sort_by_key(key);
    let mut keys: Vec<String> = rows.iter().map(key).collect();
    keys.dedup();
    assert_eq!(keys.len(), rows.len(), "a row loaded twice");
    rows
}

/// Every table the ETL writes, equal in both warehouses (and without duplicates).
fn assert_same_load(expected: &Path, found: &Path) -> usize {
    let payments = rows::<PaymentRow>(expected, |row| row.slip_id.clone());
    assert_eq!(
        payments,
        rows::<PaymentRow>(found, |row| row.slip_id.clone())
    );
    assert_eq!(
        rows::<CustomerRow>(expected, |row| row.customer_id.clone()),
        rows::<CustomerRow>(found, |row| row.customer_id.clone())
    );
    assert_eq!(
        rows::<VehicleRow>(expected, |row| row.vehicle_id.clone()),
        rows::<VehicleRow>(found, |row| row.vehicle_id.clone())
    );
    assert_eq!(
        rows::<TariffRow>(expected, |row| row.tariff_id.clone()),
        rows::<TariffRow>(found, |row| row.tariff_id.clone())
    );
    payments.len()
}

/// "fact_payment ┆ 123 ┆" -> 123, from the run's table.
fn extracted(stdout: &str, table: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|line| line.contains(table))
        .unwrap_or_else(|| panic!("no {table} line in {stdout}"));
    line.split(['┆', '│'])
        .nth(2)
        .expect("a rows column")
        .trim()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("rows of {line}"))
}

/// Simulates a city of `lots` x `days` (seed `seed`, and `extra` flags) into `city` with its
/// backend in `database`, and waits until its writes are all visible to an ETL window.
fn simulate_with_backend(
    city: &Path,
    database: &FreshDatabase,
    (lots, days, seed): (&str, &str, &str),
    extra: &[&str],
) -> postgres::Client {
    let dsn = database.dsn();
    let mut args = vec![
        "simulate",
        "--out",
        city.to_str().expect("utf-8"),
        "--lots",
        lots,
        "--days",
        days,
        "--seed",
        seed,
        "--postgres",
        &dsn,
    ];
    args.extend_from_slice(extra);
    common::succeeded(&common::parkcast(&args));
    let mut client = database.connect();
    settle(&mut client);
    client
}

#[test]
fn an_etl_killed_at_random_points_then_rerun_equals_an_uninterrupted_run() {
    require_postgres!();
    let database = FreshDatabase::create("cli_etl_crash");
    let dsn = database.dsn();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let city = dir.path().join("city");
    let mut client = simulate_with_backend(&city, &database, ("10", "14", "5"), &[]);
    let uninterrupted = dir.path().join("uninterrupted");
    let crashed = dir.path().join("crashed");
    copy_dir(&city, &uninterrupted);
    copy_dir(&city, &crashed);

    let started = Instant::now();
    let output = etl(&dsn, &uninterrupted).output().expect("etl runs");
    let full_run = started.elapsed();
    let stdout = common::succeeded(&output);
    let loaded = extracted(&stdout, "fact_payment");
    assert!(loaded > 30_000, "{stdout}");

    // Kill at pseudo-random points over the run's length (a fixed sequence: the same test each
    // time), each time from where the previous kill left the warehouse.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut interrupted = 0;
    for _ in 0..6 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let fraction = 0.05 + 0.9 * ((state >> 11) as f64 / (1u64 << 53) as f64);
        let mut child = etl(&dsn, &crashed).spawn().expect("etl starts");
        std::thread::sleep(full_run.mul_f64(fraction));
        if child.try_wait().expect("a status").is_none() {
            interrupted += 1;
        }
        child.kill().ok();
        child.wait().expect("reaped");
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} of 6 kills landed mid-run (a full run takes {full_run:?})"
    );
    common::succeeded(&etl(&dsn, &crashed).output().expect("the rerun"));
    let slips = assert_same_load(&uninterrupted, &crashed);
    assert_eq!(slips as u64, loaded);

    // 1% new payments, some updated ones (a refund days later, a late settlement), a new
    // customer: an incremental run picks up exactly those, in both warehouses alike.
    let new_payments = loaded / 100;
    let inserted = client
        .execute(
            "INSERT INTO payment (payment_id, session_id, lot_id, customer_id, vehicle_id,
                                  tariff_id, paid_at, paid_from, paid_until, amount, method, status)
             SELECT payment_id || ':again', session_id, lot_id, customer_id, vehicle_id, tariff_id,
                    paid_at + interval '14 days', paid_from + interval '14 days',
                    paid_until + interval '14 days', amount, method, 'settled'
               FROM payment ORDER BY payment_id LIMIT $1",
            &[&(new_payments as i64)],
        )
        .expect("new payments");
    let refunded = client
        .execute(
            "INSERT INTO refund (refund_id, payment_id, refunded_at, amount, reason)
             SELECT payment_id || ':late-refund', payment_id, paid_at + interval '3 days',
                    amount, 'complaint'
               FROM payment WHERE status = 'settled' AND amount > 0
                AND payment_id NOT IN (SELECT payment_id FROM refund)
                AND payment_id NOT LIKE '%:again'
              ORDER BY payment_id LIMIT 10",
            &[],
        )
        .expect("late refunds");
    let updated = client
        .execute(
            "UPDATE payment SET status = 'settled' WHERE status = 'pending'
               AND payment_id IN (SELECT payment_id FROM payment WHERE status = 'pending'
                                   ORDER BY payment_id LIMIT 20)",
            &[],
        )
        .expect("late settlements");
    client
        .execute(
            "INSERT INTO customer (customer_id, email, email_hash, customer_type, registered_on)
             VALUES ('new-customer', 'new@example.org', 'hash-new', 'visitor', '2025-09-20')",
            &[],
        )
        .expect("a new customer");
    assert_eq!(inserted, new_payments);
    assert!(updated > 0 && refunded == 10, "{updated} {refunded}");
    settle(&mut client);
    for warehouse in [&uninterrupted, &crashed] {
        let stdout = common::succeeded(&etl(&dsn, warehouse).output().expect("incremental"));
        assert_eq!(
            extracted(&stdout, "fact_payment"),
            inserted + updated + refunded,
            "{stdout}"
        );
        assert_eq!(extracted(&stdout, "dim_customer"), 1, "{stdout}");
        assert_eq!(extracted(&stdout, "dim_vehicle"), 0, "{stdout}");
    }
    let slips = assert_same_load(&uninterrupted, &crashed);
    assert_eq!(slips as u64, loaded + inserted);
    let refunds = rows::<PaymentRow>(&crashed, |row| row.slip_id.clone())
        .iter()
        .filter(|row| row.slip_id.ends_with(":p") && row.refunded_cents.is_some())
        .count();
    assert!(refunds >= 10, "{refunds} refunded slips");
    // Contact data never leaves the database.
    let customers = rows::<CustomerRow>(&crashed, |row| row.customer_id.clone());
    assert!(customers.iter().all(|row| {
        row.email_hash
            .as_deref()
            .is_none_or(|hash| !hash.contains('@'))
    }));
}

/// The lines of a CSV's first column, after its header.
fn first_column(path: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .lines()
        .skip(1)
        .map(|line| line.split(',').next().expect("a field").to_owned())
        .collect()
}

/// Precision and recall of `found` against `truth`.
fn scores(
    found: &std::collections::BTreeSet<String>,
    truth: &std::collections::BTreeSet<String>,
) -> (f64, f64) {
    let hits = found.intersection(truth).count() as f64;
    (
        hits / (found.len() as f64).max(1.0),
        hits / (truth.len() as f64).max(1.0),
    )
}

#[test]
fn the_reconciliation_finds_the_injected_unpaid_stays_and_orphan_payments() {
    require_postgres!();
    let database = FreshDatabase::create("cli_reconcile");
    let dsn = database.dsn();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let city = dir.path().join("city");
    let city_arg = city.to_str().expect("utf-8");
    let mut client = simulate_with_backend(&city, &database, ("10", "14", "11"), &[]);
    common::succeeded(&etl(&dsn, &city).output().expect("etl runs"));
    let out = dir.path().join("reconciliation");
    let stdout = common::succeeded(&common::parkcast(&[
        "reconcile",
        "--warehouse",
        city_arg,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(stdout.contains("stays without payment"), "{stdout}");
    // Every price rose at once (the default change): no price response can be learned from that.
    let error = parkcast_training::price::estimate_elasticity(
        &Warehouse::open(&city).expect("the city"),
        "simulated",
    )
    .expect_err("a city-wide change identifies nothing");
    assert!(error.to_string().contains("not identified"), "{error}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .expect("json");
    let from = summary["from"].as_str().expect("from").to_owned();
    let until = summary["until"].as_str().expect("until").to_owned();

    // The truth the simulated backend recorded, restricted to what the report could see: stays
    // that entered in its period and ended, payments whose paid period starts in it.
    let stays: Vec<parkcast_warehouse::rows::ParkingSessionRow> = Warehouse::open(&city)
        .expect("the city")
        .read_rows()
        .expect("sessions");
    let finished_in_period: std::collections::BTreeSet<String> = stays
        .iter()
        .filter(|stay| stay.exit_ts.is_some())
        .filter(|stay| {
            let date = stay.entry_ts.date_naive().to_string();
            date >= from && date <= until
        })
        .map(|stay| stay.session_id.clone())
        .collect();
    let unpaid_truth: std::collections::BTreeSet<String> = client
        .query(
            "SELECT id FROM sim_injected WHERE kind = 'unpaid_stay'",
            &[],
        )
        .expect("the unpaid stays' truth")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|session| finished_in_period.contains(session))
        .collect();
    let orphan_truth: std::collections::BTreeSet<String> = client
        .query(
            "SELECT i.id FROM sim_injected i JOIN payment p ON p.payment_id = i.id
              WHERE i.kind = 'orphan_payment'
                AND (p.paid_from AT TIME ZONE 'UTC')::date BETWEEN $1::text::date AND $2::text::date",
            &[&from, &until],
        )
        .expect("the orphans' truth")
        .iter()
        .map(|row| row.get(0))
        .collect();
    // The join itself: a row per stay entered in the period, with what was paid for it.
    let joined = std::fs::read_to_string(out.join("stays.csv")).expect("stays.csv");
    let rows: Vec<Vec<&str>> = joined
        .lines()
        .skip(1)
        .map(|line| line.split(',').collect())
        .collect();
    let entered = stays
        .iter()
        .filter(|stay| {
            let date = stay.entry_ts.date_naive().to_string();
            date >= from && date <= until
        })
        .count();
    assert_eq!(rows.len(), entered);
    let paid_cents: i64 = rows
        .iter()
        // Finished stays at lots that charge, as the summary counts them.
        .filter(|row| !row[3].is_empty() && row[4] == "true")
        .map(|row| row[6].parse::<i64>().expect("paid cents"))
        .sum();
    assert_eq!(Some(paid_cents), summary["paid_cents"].as_i64());
    assert!(
        rows.iter()
            .filter(|row| row[6].parse::<i64>().expect("paid cents") > 0)
            .all(|row| !row[8].is_empty()),
        "a paid stay names its tariff"
    );
    assert!(
        unpaid_truth.len() >= 100 && orphan_truth.len() >= 20,
        "{} {}",
        unpaid_truth.len(),
        orphan_truth.len()
    );

    let (unpaid_precision, unpaid_recall) =
        scores(&first_column(&out.join("unpaid_stays.csv")), &unpaid_truth);
    let (orphan_precision, orphan_recall) = scores(
        &first_column(&out.join("orphan_payments.csv")),
        &orphan_truth,
    );
    eprintln!(
        "unpaid stays: precision {unpaid_precision:.4} recall {unpaid_recall:.4} ({} injected); \
         orphan payments: precision {orphan_precision:.4} recall {orphan_recall:.4} ({} injected)",
        unpaid_truth.len(),
        orphan_truth.len()
    );
    for (name, score) in [
        ("unpaid precision", unpaid_precision),
        ("unpaid recall", unpaid_recall),
        ("orphan precision", orphan_precision),
        ("orphan recall", orphan_recall),
    ] {
        assert!(score >= 0.99, "{name} {score:.4}\n{stdout}");
    }
    // Overstays: the street stays that ended more than 5 minutes after what they prepaid (the
    // sensors' stay against the allowed minutes), but for those with no valid payment.
    let failed = first_column(&out.join("failed_payments.csv"));
    let overstayed: std::collections::BTreeSet<String> = stays
        .iter()
        .filter(|stay| finished_in_period.contains(&stay.session_id))
        .filter(|stay| {
            !unpaid_truth.contains(&stay.session_id) && !failed.contains(&stay.session_id)
        })
        .filter(|stay| match (stay.allowed_minutes, stay.exit_ts) {
            (Some(allowed), Some(exit)) => {
                (exit - stay.entry_ts - chrono::Duration::minutes(i64::from(allowed))).num_minutes()
                    > 5
            }
            _ => false,
        })
        .map(|stay| stay.session_id.clone())
        .collect();
    let (overstay_precision, overstay_recall) =
        scores(&first_column(&out.join("overstays.csv")), &overstayed);
    eprintln!(
        "overstays: precision {overstay_precision:.4} recall {overstay_recall:.4} ({} by the sensors)",
        overstayed.len()
    );
    assert!(overstayed.len() >= 100, "{}", overstayed.len());
    assert!(
        overstay_precision >= 0.99 && overstay_recall >= 0.99,
        "{overstay_precision} {overstay_recall}"
    );
}

#[test]
fn the_learned_price_response_recovers_the_simulators_elasticity() {
    require_postgres!();
    let database = FreshDatabase::create("cli_price_response");
    let dsn = database.dsn();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let city = dir.path().join("city");
    // Street prices up 30% in week 3, shopping centres down 20% in week 4, commuter garages up 25%
    // in week 5: changes that differ across lots, as the estimator needs.
    simulate_with_backend(
        &city,
        &database,
        ("20", "42", "13"),
        &[
            "--tariff-change",
            "2025-09-15:1.3:street_zone",
            "--tariff-change",
            "2025-09-22:0.8:shopping_centre",
            "--tariff-change",
            "2025-09-29:1.25:commuter_garage",
        ],
    );
    common::succeeded(&etl(&dsn, &city).output().expect("etl runs"));
    let warehouse = Warehouse::open(&city).expect("the city");
    let response = parkcast_training::price::estimate_elasticity(&warehouse, "simulated")
        .expect("a price response");
    let truth = parkcast_training::simulate::demand::PRICE_ELASTICITY;
    eprintln!(
        "elasticity {:.3} (standard error {:.3}) from {} lot-days, {} lots with changes; the simulator's is {truth}",
        response.elasticity, response.standard_error, response.lot_days, response.lots_with_changes
    );
    assert!(response.lots_with_changes >= 10, "{response:?}");
    assert!(
        (response.elasticity - truth).abs() <= 0.1,
        "learned {:.3}, simulated {truth}",
        response.elasticity
    );

    // A model trained on the city carries it, with each lot's price at the end of its data.
    let registry = dir.path().join("models");
    let mut args = vec![
        "train",
        "-w",
        city.to_str().expect("utf-8"),
        "--registry",
        registry.to_str().expect("utf-8"),
        "--force",
    ];
    args.extend_from_slice(&common::LOOP_TRAIN);
    common::succeeded(&common::parkcast(&args));
    let manifest = parkcast_inference::registry::Registry::open(&registry)
        .list()
        .expect("the registry lists")
        .into_iter()
        .find_map(|entry| entry.manifest.ok())
        .expect("a published version");
    let card = manifest
        .card
        .price_response
        .expect("the model records its price response");
    assert!(
        (card.elasticity - response.elasticity).abs() < 1e-9,
        "{card:?}"
    );
    // Street zones' 350 cents up 30%, shopping centres' 200 down 20%, commuters' 300 up 25%
    // (rounded to 10 cents), nightlife's 250 and the stadium's 200 unchanged.
    let prices: std::collections::BTreeSet<i64> =
        card.reference_cents_per_hour.values().copied().collect();
    assert!(
        [460, 160, 380, 250, 200]
            .iter()
            .all(|price| prices.contains(price)),
        "{prices:?}"
    );
    // The trees read the price in force at the target (a city without tariffs leaves it out:
    // `training::backtest::tests`).
    let excluded = manifest.card.hyperparameters["excluded_features"]
        .as_array()
        .expect("the fitted hyperparameters list the features left out")
        .clone();
    let price = serde_json::json!(parkcast_features::vector::index::TARGET_PRICE_CHANGE_WEEK);
    assert!(!excluded.contains(&price), "{excluded:?}");
}
