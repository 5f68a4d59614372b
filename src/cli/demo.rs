//! `parkcast demo`: the product end to end on built-in data.
//!
//! Today: a simulated city plus the three real data sets in one warehouse, then a model trained and
//! backtested on Birmingham (or on the simulated city without the real data) and published to the
//! demo's registry. The live stream and the server join this command as they land.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_training::backtest::{BacktestConfig, ModelChoice};
use parkcast_training::registry::Registry;
use parkcast_training::simulate;
use parkcast_training::train::{TrainConfig, train};

use super::GlobalArgs;
use super::import::{SourceArgs, import_one, print_report};
use super::simulate::SimulateArgs;
use crate::progress::BarProgress;
use crate::report;

/// Arguments of `parkcast demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's warehouse.
    #[arg(long, default_value = "out/demo/warehouse")]
    pub out: PathBuf,
    /// Lots of the simulated city.
    #[arg(long, default_value_t = 20)]
    pub lots: u32,
    /// Days of the simulated city.
    #[arg(long, default_value_t = 28)]
    pub days: u32,
    /// Skip the real data sets (for machines without ../shared/datasets).
    #[arg(long)]
    pub no_real_data: bool,
    /// Model registry of the demo.
    #[arg(long, default_value = "out/demo/models")]
    pub models: PathBuf,
}

pub fn run(args: DemoArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = super::create_warehouse(&args.out)?;

    println!(
        "1/3  simulating {} lots for {} days into {}",
        args.lots,
        args.days,
        args.out.display()
    );
    let simulate_args = SimulateArgs {
        out: args.out.clone(),
        lots: args.lots,
        days: args.days,
        seed: 42,
        start: chrono::NaiveDate::from_ymd_opt(2025, 11, 3)
            .expect("the demo start date should be valid"),
        interval: 5,
        heartbeat: 120,
        silence: 300,
        timezone: chrono_tz::Europe::London,
        region: "GB-ENG".to_owned(),
        pii_key: std::env::var("PARKCAST_PII_KEY")
            .unwrap_or_else(|_| "parkcast-simulator".to_owned()),
    };
    let checked = simulate_args
        .params()
        .check()
        .context("invalid simulation parameters")?;
    let progress = BarProgress::new(global.quiet);
    let result = simulate::simulate(&checked, &warehouse, &progress);
    progress.finish();
    let outcome = result.context("simulation failed")?;
    println!("{}", report::simulation_table(&outcome));

    if args.no_real_data {
        println!("2/3  skipping the real data sets (--no-real-data)");
    } else {
        println!("2/3  importing the real data sets (Birmingham, Málaga, Melbourne)");
        for source in SourceArgs::All.sources() {
            let report = import_one(&source, &warehouse, global)?;
            print_report(&report);
        }
    }

    println!("\nThe warehouse at {} now holds:", args.out.display());
    println!(
        "{}",
        report::warehouse_table(
            &warehouse
                .summary()
                .context("failed to read the warehouse")?
        )
    );

    // Train: Birmingham's reference protocol, or the simulated city's last week.
    let backtest = if args.no_real_data {
        let last = args.days.saturating_sub(1);
        let first = simulate_args.start + chrono::Days::new(u64::from(last.saturating_sub(6)));
        BacktestConfig {
            source: simulate::SOURCE.to_owned(),
            step_minutes: 15,
            horizons: vec![1, 4, 8],
            test_start: first,
            test_end: simulate_args.start + chrono::Days::new(u64::from(last)),
            same_day: false,
            calibration_days: 7,
            ..BacktestConfig::birmingham()
        }
    } else {
        BacktestConfig::birmingham()
    };
    println!(
        "3/3  training on {}: backtest of every baseline and model, then the promoted model to {}",
        backtest.source,
        args.models.display()
    );
    let config = TrainConfig {
        name: backtest.source.clone(),
        backtest,
        models: ModelChoice::all(),
    };
    let progress = BarProgress::new(global.quiet);
    let outcome = train(
        &warehouse,
        &Registry::open(&args.models),
        &config,
        &progress,
    );
    progress.finish();
    let outcome = outcome.context("training failed")?;
    super::backtest::print_summary(&outcome.backtest, &config.backtest);
    let manifest = &outcome.published.manifest;
    println!(
        "promoted {}: published {} v{} to {} (report.md with plots inside)",
        outcome.promoted,
        manifest.name,
        manifest.version,
        outcome.published.dir.display()
    );
    println!(
        "Next: `parkcast models list --registry {}`, `parkcast backtest -w {} --per-lot`, or read the warehouse with polars (see notebooks/).",
        args.models.display(),
        args.out.display()
    );
    Ok(())
}
