//! The ETL at volume (`parkcast bench etl`): a simulated city's backend grown to millions of
//! payments in a Postgres database of its own, loaded whole, then again after 1% new rows.
//!
//! The city is simulated (10 lots x 14 days gives ~45k slips with the backend's late updates,
//! refunds and penalties); its payments are then repeated server-side, each copy shifted by the
//! city's length, up to `--payments`: the volume of a large operator without simulating its
//! sensors. Each row of the table is one stage: wall time, rows, rows/s, peak RSS (the ETL
//! streams a partition date at a time, so memory stays flat as the volume grows).

use std::time::Instant;

use anyhow::{Context, Result};
use comfy_table::Table;
use parkcast_training::progress::NoProgress;
use parkcast_training::simulate::{self, SimulationParams, TariffChange};
use parkcast_warehouse::Warehouse;

use crate::batch::add_row;
use crate::table::{new_table, thousands};
use crate::{Error, Report};

/// Options of `parkcast bench etl`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct EtlOptions {
    /// A Postgres server the benchmark may create (and drop) a database on; its connection
    /// string (`host=... port=... user=...`).
    #[arg(long, env = "PARKCAST_POSTGRES_DSN", hide_env_values = true)]
    pub postgres: String,
    /// Payments in the operational store before the first load.
    #[arg(long, default_value_t = 10_000_000)]
    pub payments: u64,
    /// Lots of the simulated city whose payments are repeated.
    #[arg(long, default_value_t = 10)]
    pub lots: u32,
    /// Days of the simulated city.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
}

/// Runs the ETL benchmark (in a scratch database dropped when it ends, however it ends).
pub fn etl(options: &EtlOptions) -> Result<Report, Error> {
    let admin: postgres::Config = options
        .postgres
        .parse()
        .context("--postgres is not a valid connection string")?;
    let name = format!("parkcast_bench_etl_{}", std::process::id());
    let scratch_database = parkcast_opstore::ScratchDatabase::create(&admin, &name)
        .context("could not create the benchmark's database on the Postgres server (--postgres)")?;
    let config = scratch_database.config().clone();
    let connect = || {
        config
            .connect(postgres::NoTls)
            .context("could not connect to the benchmark's database")
    };
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let warehouse = Warehouse::create(scratch.path().join("warehouse"))
        .context("failed to create the warehouse")?;
    let mut table = new_table(&["stage", "wall time", "rows", "rows/s", "peak RSS"]);

    let start = SimulationParams::default().start_date;
    let params = SimulationParams {
        tariff_changes: vec![TariffChange {
            from: start + chrono::Days::new(u64::from(options.days / 2)),
            factor: 1.2,
            kind: None,
        }],
        ..SimulationParams::default()
    }
    .lots(options.lots)
    .days(options.days)
    .check()
    .context("invalid city")?;
    let started = Instant::now();
    let mut backend = parkcast_opsim::SimulatedBackend::new(connect()?, params.params().seed)
        .context("the benchmark's database refused the simulated backend")?;
    simulate::simulate_with(&params, &warehouse, &NoProgress, Some(&mut backend))
        .context("simulation failed")?;
    let counts = backend.counts();
    drop(backend);
    add_row(
        &mut table,
        &format!(
            "simulate {} lots x {} days with its backend",
            options.lots, options.days
        ),
        started,
        counts.payments + counts.penalties + counts.customers + counts.vehicles,
    );

    let mut client = connect()?;
    let started = Instant::now();
    let (grown, copies) = grow(&mut client, options.payments, options.days, "c")?;
    add_row(
        &mut table,
        &format!(
            "repeat its payments to {} (server-side)",
            thousands(options.payments)
        ),
        started,
        grown,
    );
    wait(&mut client)?;

    let etl_options = parkcast_etl::EtlOptions {
        source: "simulated".to_owned(),
    };
    let mut load = |label: &str, table: &mut Table| -> Result<u64> {
        let started = Instant::now();
        let report = parkcast_etl::run(&mut client, &warehouse, &etl_options, &NoProgress)
            .context("the ETL failed")?;
        add_row(table, label, started, report.rows());
        Ok(report.rows())
    };
    let first = load("etl: first load (extract + load)", &mut table)?;

    let mut writer = connect()?;
    let new_rows = (first / 100).max(1);
    let started = Instant::now();
    // The new payments follow the last copy: the next days of the operator's life.
    let inserted = copy_payments(
        &mut writer,
        1,
        new_rows as i64,
        options.days * (copies as u32 + 1),
        "n",
    )?;
    add_row(&mut table, "insert 1% new payments", started, inserted);
    wait(&mut writer)?;
    load("etl: incremental run after 1% new", &mut table)?;
    load("etl: run with nothing new", &mut table)?;
    drop(writer);
    drop(scratch_database);

    let mut report = Report::new();
    report.push(table);
    report.push(format_args!(
        "rows are every table's rows extracted and loaded (payments and penalties, customers, vehicles, tariffs); peak RSS is the process high-water mark so far"
    ));
    Ok(report)
}

/// Repeats the store's payments, each copy shifted by `days` more, until it holds `target`;
/// returns the rows added and the copies made.
fn grow(client: &mut postgres::Client, target: u64, days: u32, tag: &str) -> Result<(u64, i64)> {
    let base: i64 = client
        .query_one("SELECT count(*) FROM payment", &[])?
        .get(0);
    let missing = (target as i64 - base).max(0);
    if missing == 0 || base == 0 {
        return Ok((0, 0));
    }
    let copies = (missing + base - 1) / base;
    Ok((copy_payments(client, copies, missing, days, tag)?, copies))
}

/// Inserts up to `rows` copies of the store's payments (as it was when the statement began),
/// copy `g` (1..=copies) shifted by `g * days`.
fn copy_payments(
    client: &mut postgres::Client,
    copies: i64,
    rows: i64,
    days: u32,
    tag: &str,
) -> Result<u64> {
    let shift = format!("{days} days");
    Ok(client.execute(
        "INSERT INTO payment (payment_id, session_id, lot_id, customer_id, vehicle_id, tariff_id,
                              paid_at, paid_from, paid_until, amount, method, status)
         SELECT p.payment_id || ':' || $4 || g, p.session_id || ':' || $4 || g, p.lot_id,
                p.customer_id, p.vehicle_id, p.tariff_id,
                p.paid_at + g * $3::text::interval, p.paid_from + g * $3::text::interval,
                p.paid_until + g * $3::text::interval, p.amount, p.method, p.status
           FROM generate_series(1, $1::int8) g
          CROSS JOIN payment p
          LIMIT $2",
        &[&copies, &rows, &shift, &tag],
    )?)
}

/// Waits until the rows just written are inside the next ETL window (other databases' open
/// transactions on the server hold it back), so each stage loads what it wrote.
fn wait(client: &mut postgres::Client) -> Result<()> {
    let settled = parkcast_opstore::wait_for_window(client, std::time::Duration::from_secs(60))?;
    anyhow::ensure!(
        settled,
        "a transaction on the server held the ETL window back for 60 s"
    );
    Ok(())
}
