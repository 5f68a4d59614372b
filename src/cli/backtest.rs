//! `parkcast backtest`: every baseline and learned model, per horizon, on a source's lot occupancy.

use anyhow::{Context, Result};
use clap::Args;
use parkcast_training::backtest;
use parkcast_training::summary;

use super::GlobalArgs;
use super::args::ProtocolArgs;
use crate::progress::BarProgress;

/// Arguments of `parkcast backtest`. Defaults are the Birmingham protocol of the reference figures.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub protocol: ProtocolArgs,
    /// Also print each lot's MAE for the best learned model and persistence + profile change, with
    /// the share of its actuals inside its 80% / 95% intervals, worst lots first.
    #[arg(long)]
    pub per_lot: bool,
}

pub fn run(args: BacktestArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = args.protocol.location.open()?;
    let frozen = args.protocol.frozen()?;
    let (config, origin) = args.protocol.config(&warehouse, &frozen.config)?;
    println!("protocol: {origin}");
    println!(
        "{}",
        summary::configuration(&frozen, &args.protocol.overrides(&frozen.config))
    );
    let models = args.protocol.models(&frozen.config)?;
    let started = std::time::Instant::now();
    let outcome = BarProgress::run(global.quiet, |progress| {
        backtest::backtest(&warehouse, &config, &models, progress)
    })
    .context("backtest failed")?;
    println!("{}", summary::backtest(&outcome, &config));
    println!(
        "{}",
        summary::run(
            &outcome.run,
            outcome.lots.len(),
            parkcast_bench::measure::peak_rss_kib().map(|kib| kib * 1024)
        )
    );
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    if args.per_lot {
        println!("{}", summary::per_lot_table(&outcome, &config));
    }
    Ok(())
}
