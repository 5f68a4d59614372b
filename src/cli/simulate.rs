//! `parkcast simulate`: a seeded city into a warehouse.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::Args;
use parkcast_training::simulate::{self, SimulationParams};

use super::GlobalArgs;
use crate::progress::BarProgress;
use crate::report;

/// Arguments of `parkcast simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Warehouse folder to write (created if missing; earlier simulator files are replaced).
    #[arg(
        long,
        short,
        env = "PARKCAST_WAREHOUSE",
        default_value = "out/warehouse"
    )]
    pub out: PathBuf,
    /// Number of lots.
    #[arg(long, default_value_t = 50)]
    pub lots: u32,
    /// Number of days.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First local date (YYYY-MM-DD).
    #[arg(long, default_value = "2025-09-01")]
    pub start: NaiveDate,
    /// Interval of the derived lot occupancy, minutes (must divide a day).
    #[arg(long, default_value_t = 5)]
    pub interval: u32,
    /// Sensor heartbeat period, minutes.
    #[arg(long, default_value_t = 120)]
    pub heartbeat: u32,
    /// A slot silent for longer than this many minutes counts as unknown.
    #[arg(long, default_value_t = 300)]
    pub silence: u32,
    /// IANA time zone of the city.
    #[arg(long, default_value = "Europe/London")]
    pub timezone: chrono_tz::Tz,
    /// Holiday region (ISO 3166 CC or CC-SUB).
    #[arg(long, default_value = "GB-ENG")]
    pub region: String,
    /// Key for hashing customer contact data and plates; set your own secret outside tests.
    #[arg(
        long,
        env = "PARKCAST_PII_KEY",
        default_value = "parkcast-simulator",
        hide_env_values = true
    )]
    pub pii_key: String,
    /// A lasting change of one lot's demand, `LOT:DATE:FACTOR`: from that local date on, the lot's
    /// arrivals are multiplied by FACTOR (`3:2025-10-06:2` doubles sim:lot0003's demand from 6
    /// October). Repeatable. A planner's what-if (a new office block, roadworks), and the regime
    /// shift the live-quality loop is tested on.
    #[arg(long = "demand-shift", value_name = "LOT:DATE:FACTOR")]
    pub demand_shifts: Vec<parkcast_training::simulate::params::DemandShift>,
    /// A price change, `DATE:FACTOR[:KIND]`: from that local date on, the prices of every lot
    /// (or of one kind: commuter_garage, shopping_centre, street_zone, nightlife, stadium) are
    /// multiplied by FACTOR (`2025-10-15:1.2` raises them all by 20%), and their demand answers
    /// with the simulator's price elasticity (-0.4). Repeatable. With `--postgres` and no change
    /// given, prices rise by 20% at the middle of the simulated days, so the operational store
    /// holds a tariff changed mid-period.
    #[arg(long = "tariff-change", value_name = "DATE:FACTOR")]
    pub tariff_changes: Vec<parkcast_training::simulate::TariffChange>,
    /// Also simulate the operator's backend: write customers, vehicles, tariffs, payments,
    /// refunds and penalties to this Postgres database (the operational store, migrated if
    /// needed; it must not hold a simulated city yet), with a live system's late updates,
    /// refunds and injected faults. The warehouse then gets no customers, vehicles or payments:
    /// `parkcast etl` brings them from the database.
    /// (No environment variable on purpose: a simulation never writes to a database it was not
    /// pointed at on its command line.)
    #[arg(long, value_name = "DSN")]
    pub postgres: Option<String>,
}

impl SimulateArgs {
    /// The simulation parameters these arguments ask for.
    pub fn params(&self) -> SimulationParams {
        SimulationParams {
            timezone: self.timezone,
            holiday_region: self.region.clone(),
            pii_key: self.pii_key.clone(),
            demand_shifts: self.demand_shifts.clone(),
            tariff_changes: self.tariff_changes(),
            ..SimulationParams::default()
        }
        .seed(self.seed)
        .lots(self.lots)
        .days(self.days)
        .start_date(self.start)
        .occupancy_interval_minutes(self.interval)
        .heartbeat_minutes(self.heartbeat)
        .silence_minutes(self.silence)
    }
}

impl SimulateArgs {
    /// The price changes asked for; with a backend and none asked for, +20% at the middle day.
    fn tariff_changes(&self) -> Vec<parkcast_training::simulate::TariffChange> {
        if !self.tariff_changes.is_empty() || self.postgres.is_none() {
            return self.tariff_changes.clone();
        }
        vec![parkcast_training::simulate::TariffChange {
            from: self.start + chrono::Days::new(u64::from(self.days / 2)),
            factor: 1.2,
            kind: None,
        }]
    }
}

pub fn run(args: SimulateArgs, global: &GlobalArgs) -> Result<()> {
    let checked = args
        .params()
        .check()
        .context("invalid simulation parameters")?;
    let warehouse = super::args::create_warehouse(&args.out)?;
    let mut backend = match &args.postgres {
        Some(dsn) => {
            let client = postgres::Client::connect(dsn, postgres::NoTls)
                .context("could not connect to the operational store (--postgres)")?;
            Some(
                parkcast_opsim::SimulatedBackend::new(client, args.seed)
                    .context("the operational store cannot take a simulated backend")?,
            )
        }
        None => None,
    };
    tracing::info!(lots = args.lots, days = args.days, seed = args.seed, out = %args.out.display(), backend = backend.is_some(), "simulating a city");
    let outcome = BarProgress::run(global.quiet, |progress| {
        let sink = backend
            .as_mut()
            .map(|backend| backend as &mut dyn simulate::TransactionSink);
        simulate::simulate_with(&checked, &warehouse, progress, sink)
    })
    .context("simulation failed")?;
    println!("{}", report::simulation_table(&outcome));
    println!("{}", report::written_table(&outcome.written));
    if let Some(backend) = &backend {
        println!("{}", report::backend_table(&backend.counts()));
    }
    Ok(())
}
