//! `parkcast demo`: the product end to end on built-in data.
//!
//! Today: a simulated city plus the three real data sets in one warehouse, with their summaries.
//! Training, the live stream and the server join this command as they land.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_training::simulate;

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
}

pub fn run(args: DemoArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = super::create_warehouse(&args.out)?;

    println!(
        "1/2  simulating {} lots for {} days into {}",
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
        println!("2/2  skipping the real data sets (--no-real-data)");
    } else {
        println!("2/2  importing the real data sets (Birmingham, Málaga, Melbourne)");
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
    println!(
        "Next: read it with polars (see notebooks/), or `parkcast warehouse -w {}`.",
        args.out.display()
    );
    Ok(())
}
