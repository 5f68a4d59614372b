//! `parkcast backtest`: the baselines, per horizon, on a source's lot occupancy.

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::Args;
use comfy_table::{Cell, CellAlignment};
use parkcast_features::warehouse::Warehouse;
use parkcast_training::backtest::{self, BacktestConfig};

use super::WarehouseLocation;
use crate::report;

/// Arguments of `parkcast backtest`. Defaults are the Birmingham protocol of the reference figures.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub location: WarehouseLocation,
    /// `fact_lot_occupancy.source` to evaluate (birmingham, malaga, melbourne, simulated, csv-<name>).
    #[arg(long, default_value = "birmingham")]
    pub source: String,
    /// Grid step, minutes.
    #[arg(long, default_value_t = 30)]
    pub step: u32,
    /// Horizons in grid steps, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub horizons: Vec<u32>,
    /// First local date of the test window.
    #[arg(long, default_value = "2016-12-13")]
    pub test_start: NaiveDate,
    /// Last local date of the test window (inclusive).
    #[arg(long, default_value = "2016-12-19")]
    pub test_end: NaiveDate,
    /// Also pair origins and targets across midnight (default: same local day only).
    #[arg(long)]
    pub across_days: bool,
    /// Days before the test window that calibrate the conformal intervals.
    #[arg(long, default_value_t = 14)]
    pub calibration_days: u32,
}

pub fn run(args: BacktestArgs) -> Result<()> {
    let warehouse = Warehouse::open(&args.location.warehouse).with_context(|| {
        format!(
            "failed to open the warehouse at {}",
            args.location.warehouse.display()
        )
    })?;
    let config = BacktestConfig {
        source: args.source,
        step_minutes: args.step,
        horizons: args.horizons,
        test_start: args.test_start,
        test_end: args.test_end,
        same_day: !args.across_days,
        calibration_days: args.calibration_days,
        ..BacktestConfig::birmingham()
    };
    let outcome = backtest::backtest_baselines(&warehouse, &config).context("backtest failed")?;
    let mut table = report::new_table(&[
        "model",
        "horizon",
        "MAE rate",
        "RMSE rate",
        "MAE slots",
        "RMSE slots",
        "80% covers",
        "95% covers",
        "80% width",
        "pairs",
        "fallbacks",
    ]);
    let percent = |share: Option<f64>| {
        share.map_or_else(
            || "n/a".to_owned(),
            |share| format!("{:.1}%", 100.0 * share),
        )
    };
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    for metrics in &outcome.metrics {
        table.add_row(vec![
            Cell::new(metrics.model),
            right(format!("{} min", metrics.horizon_minutes)),
            right(format!("{:.4}", metrics.mae_rate)),
            right(format!("{:.4}", metrics.rmse_rate)),
            right(format!("{:.2}", metrics.mae_slots)),
            right(format!("{:.2}", metrics.rmse_slots)),
            right(percent(metrics.coverage_80)),
            right(percent(metrics.coverage_95)),
            right(
                metrics
                    .width_80
                    .map_or_else(|| "n/a".to_owned(), |width| format!("{width:.3}")),
            ),
            right(report::thousands(metrics.pairs)),
            right(report::thousands(metrics.fallbacks)),
        ]);
    }
    println!(
        "source {}: {} lots, test {} .. {}, {}-minute grid{}",
        config.source,
        outcome.lots.len(),
        config.test_start,
        config.test_end,
        config.step_minutes,
        if config.same_day {
            ", same-day origins"
        } else {
            ""
        }
    );
    if !outcome.excluded_lots.is_empty() {
        println!(
            "left out for too little training data: {}",
            outcome.excluded_lots.join(", ")
        );
    }
    println!("{table}");
    Ok(())
}
