//! `parkcast warehouse`: what a warehouse holds.

use anyhow::{Context, Result};
use clap::Args;

use super::args::WarehouseLocation;
use crate::report;

/// Arguments of `parkcast warehouse`.
#[derive(Debug, Args)]
pub struct WarehouseArgs {
    #[command(flatten)]
    pub location: WarehouseLocation,
}

pub fn run(args: WarehouseArgs) -> Result<()> {
    let warehouse = args.location.open()?;
    let summary = warehouse
        .summary()
        .context("failed to read the warehouse")?;
    println!("{}", report::warehouse_table(&summary));
    Ok(())
}
