//! `parkcast backtest`: the baselines, per horizon, on a source's lot occupancy.

use std::collections::HashMap;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::Args;
use comfy_table::{Cell, CellAlignment};
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
    /// Rolling origins: evaluate this many consecutive windows as long as the test window, ending with
    /// it; each is forecast from data before its own start.
    #[arg(long, default_value_t = 1)]
    pub windows: u32,
    /// Also print each lot's MAE for persistence and persistence + profile change, worst lots first.
    #[arg(long)]
    pub per_lot: bool,
}

pub fn run(args: BacktestArgs) -> Result<()> {
    let warehouse = args.location.open()?;
    let config = BacktestConfig {
        source: args.source,
        step_minutes: args.step,
        horizons: args.horizons,
        test_start: args.test_start,
        test_end: args.test_end,
        same_day: !args.across_days,
        calibration_days: args.calibration_days,
        windows: args.windows,
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
    let first_start = outcome
        .windows
        .first()
        .map_or(config.test_start, |window| window.0);
    let origins = if config.same_day {
        ", same-day origins"
    } else {
        ""
    };
    println!(
        "source {}: {} lots, {} window(s) from {first_start} to {}, {}-minute grid{origins}",
        config.source,
        outcome.lots.len(),
        outcome.windows.len(),
        config.test_end,
        config.step_minutes,
    );
    if !outcome.excluded_lots.is_empty() {
        println!(
            "left out for too little training data: {}",
            outcome.excluded_lots.join(", ")
        );
    }
    println!("{table}");
    if args.per_lot {
        println!("{}", per_lot_table(&outcome, &config));
    }
    Ok(())
}

/// MAE per lot and horizon for persistence and persistence + profile change, worst lots first.
fn per_lot_table(
    outcome: &backtest::BacktestReport,
    config: &BacktestConfig,
) -> comfy_table::Table {
    const MAIN: &str = "persistence + profile change";
    let mut header = vec!["lot".to_owned()];
    for horizon in &config.horizons {
        let minutes = horizon * config.step_minutes;
        header.push(format!("{MAIN} {minutes} min"));
        header.push(format!("persistence {minutes} min"));
    }
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = report::new_table(&header_refs);
    // Index once: the table looks every (lot, model, horizon) up, and the sort does so repeatedly.
    let by_key: HashMap<(&str, &str, u32), f64> = outcome
        .per_lot
        .iter()
        .map(|entry| {
            (
                (
                    entry.lot_id.as_str(),
                    entry.metrics.model,
                    entry.metrics.horizon_steps,
                ),
                entry.metrics.mae_rate,
            )
        })
        .collect();
    let mae = |lot: &str, model: &str, horizon: u32| by_key.get(&(lot, model, horizon)).copied();
    let last_horizon = *config
        .horizons
        .last()
        .expect("validated horizons are non-empty");
    let mut lots = outcome.lots.clone();
    lots.sort_by(|left, right| {
        mae(right, MAIN, last_horizon)
            .unwrap_or(0.0)
            .total_cmp(&mae(left, MAIN, last_horizon).unwrap_or(0.0))
    });
    for lot in &lots {
        let mut row = vec![Cell::new(lot)];
        for &horizon in &config.horizons {
            for model in [MAIN, "persistence"] {
                let text = mae(lot, model, horizon)
                    .map_or_else(|| "n/a".to_owned(), |value| format!("{value:.4}"));
                row.push(Cell::new(text).set_alignment(CellAlignment::Right));
            }
        }
        table.add_row(row);
    }
    table
}
