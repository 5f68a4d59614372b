//! The offline paths into a scratch warehouse: the simulator, each whole real import, and
//! backtesting and training on a simulated city. One row per stage: wall time, rows, rows/s and
//! the process's peak memory so far.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use comfy_table::{Cell, Table};
use parkcast_training::backtest::BacktestConfig;
use parkcast_training::progress::NoProgress;
use parkcast_training::registry::Registry;
use parkcast_training::simulate::{self, SimulationParams};
use parkcast_training::train::{TrainConfig, train as train_and_publish};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::schema::Table as WarehouseTable;

use crate::measure::{logical_cores, peak_rss_text};
use crate::table::{new_table, right, thousands};
use crate::{Error, Report};

/// The size of the simulated city.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct SimulateOptions {
    /// Lots.
    #[arg(long, default_value_t = 50)]
    pub lots: u32,
    /// Days.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
}

/// Backtest and train on a simulated city.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TrainOptions {
    /// Lots of the city simulated first.
    #[arg(long, default_value_t = 200)]
    pub lots: u32,
    /// Days of the city simulated first.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// An existing warehouse holding a simulated city, instead of simulating one (simulate it in
    /// its own process for a clean peak memory figure).
    #[arg(long)]
    pub warehouse: Option<PathBuf>,
    /// Cap on training rows per horizon.
    #[arg(long, default_value_t = 400_000)]
    pub max_training_rows: usize,
    /// Lots read, featurised and dropped together (peak memory grows with it, not with the city).
    #[arg(long, default_value_t = parkcast_training::groups::DEFAULT_GROUP_LOTS)]
    pub group_lots: usize,
}

/// Simulates a city into a scratch warehouse.
pub fn simulate(options: &SimulateOptions) -> Result<Report, Error> {
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let warehouse = create_warehouse(&scratch.path().join("warehouse"))?;
    let mut table = stage_table("benchmark", "rows written");
    simulate_row(&warehouse, options, &mut table)?;
    Ok(with_footer(table))
}

/// Imports each whole real data set into a scratch warehouse.
pub fn import() -> Result<Report, Error> {
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let warehouse = create_warehouse(&scratch.path().join("warehouse"))?;
    let mut table = stage_table("benchmark", "rows written");
    for source in parkcast_training::datasets::all() {
        let name = source.writer_name();
        let started = Instant::now();
        let outcome = parkcast_training::import::import(&source, &warehouse, &NoProgress)
            .with_context(|| format!("failed to import {name}"))?;
        let rows = outcome.written.iter().map(|(_, stats)| stats.rows).sum();
        let label = format!("import {name} ({} rows read)", thousands(outcome.rows_read));
        add_row(&mut table, &label, started, rows);
    }
    Ok(with_footer(table))
}

/// Backtest + train at 5-minute resolution with every horizon from 15 min to 7 days, on a city
/// simulated first unless [`TrainOptions::warehouse`] holds one.
pub fn train(options: &TrainOptions) -> Result<Report, Error> {
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let mut table = stage_table("stage", "rows");
    let warehouse = match &options.warehouse {
        Some(path) => Warehouse::open(path)
            .with_context(|| format!("failed to open the warehouse at {}", path.display()))?,
        None => {
            let warehouse = create_warehouse(&scratch.path().join("warehouse"))?;
            let city = SimulateOptions {
                lots: options.lots,
                days: options.days,
            };
            simulate_row(&warehouse, &city, &mut table)?;
            warehouse
        }
    };
    let last_day = warehouse
        .summary()
        .context("failed to summarise the warehouse")?
        .into_iter()
        .find(|summary| summary.table == WarehouseTable::FactLotOccupancy)
        .and_then(|summary| summary.date_range)
        .map(|(_, last)| last)
        .context("the warehouse has no lot occupancy")?;
    let step = 5;
    let horizons_minutes = [15, 30, 60, 120, 180, 360, 1_440, 10_080];
    let config = BacktestConfig {
        source: simulate::SOURCE.to_owned(),
        step_minutes: step,
        horizons: horizons_minutes
            .iter()
            .map(|minutes| minutes / step)
            .collect(),
        test_start: last_day - chrono::Days::new(6),
        test_end: last_day,
        same_day: false,
        calibration_days: 14,
        max_training_rows: options.max_training_rows,
        group_lots: options.group_lots,
        ..BacktestConfig::birmingham()
    };
    let frozen = parkcast_training::frozen::LoadedConfig::embedded();
    let train_config = TrainConfig {
        backtest: BacktestConfig {
            calibration: frozen.config.calibration(),
            ..config
        },
        models: frozen.config.models(),
        name: "bench".to_owned(),
        publish_losing: true,
        frozen: Some(frozen.record(Vec::new())),
    };
    let registry = Registry::open(scratch.path().join("models"));
    let started = Instant::now();
    let outcome = train_and_publish(&warehouse, &registry, &train_config, &NoProgress)
        .context("training failed")?;
    let rows: usize = outcome.backtest.training_rows.values().sum();
    let label = format!(
        "backtest (2 fits x 2 models x 8 horizons) + refit + publish, {} lots",
        outcome.backtest.lots.len()
    );
    add_row(&mut table, &label, started, rows as u64);
    let mut report = Report::new();
    report.push(table);
    report.push(format_args!(
        "rows = training rows per fit over all horizons; model file {} bytes; machine: {} logical cores",
        outcome.published.manifest.model_bytes,
        logical_cores()
    ));
    report.push(parkcast_training::summary::run(
        &outcome.backtest.run,
        outcome.backtest.lots.len(),
        crate::measure::peak_rss_kib().map(|kib| kib * 1024),
    ));
    for metrics in outcome
        .backtest
        .metrics
        .iter()
        .filter(|m| m.model == "persistence + profile change" || m.model == outcome.promoted)
    {
        report.push(format_args!(
            "  {:<30} {:>6} min  MAE rate {:.4}  80% covers {}",
            metrics.model,
            metrics.horizon_minutes,
            metrics.mae_rate,
            metrics.coverage_80.map_or_else(
                || "n/a".to_owned(),
                |share| format!("{:.1}%", share * 100.0)
            )
        ));
    }
    Ok(report)
}

fn create_warehouse(path: &Path) -> Result<Warehouse> {
    Warehouse::create(path)
        .with_context(|| format!("failed to create the warehouse at {}", path.display()))
}

fn stage_table(stage: &str, rows: &str) -> Table {
    new_table(&[stage, "wall time", rows, "rows/s", "peak RSS"])
}

fn with_footer(table: Table) -> Report {
    let mut report = Report::new();
    report.push(table);
    report.push(format_args!(
        "peak RSS is the process high-water mark so far; machine: {} logical cores",
        logical_cores()
    ));
    report
}

/// Simulates a city into the warehouse and adds its row.
fn simulate_row(warehouse: &Warehouse, city: &SimulateOptions, table: &mut Table) -> Result<()> {
    let params = SimulationParams::default()
        .lots(city.lots)
        .days(city.days)
        .check()
        .context("invalid parameters")?;
    let started = Instant::now();
    let outcome =
        simulate::simulate(&params, warehouse, &NoProgress).context("simulation failed")?;
    let rows = outcome.written.iter().map(|(_, stats)| stats.rows).sum();
    let label = format!("simulate {} lots x {} days", city.lots, city.days);
    add_row(table, &label, started, rows);
    Ok(())
}

/// A stage's row: wall time since `started`, rows, rows/s, peak RSS so far.
pub(crate) fn add_row(table: &mut Table, name: &str, started: Instant, rows: u64) {
    let seconds = started.elapsed().as_secs_f64();
    table.add_row(vec![
        Cell::new(name),
        right(format!("{seconds:.2} s")),
        right(thousands(rows)),
        right(thousands((rows as f64 / seconds.max(1e-9)) as u64)),
        right(peak_rss_text()),
    ]);
}
