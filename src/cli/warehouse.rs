//! `parkcast warehouse`: what a warehouse holds.

use anyhow::{Context, Result};
use clap::Args;
use parkcast_features::warehouse::Warehouse;

use super::WarehouseLocation;
use crate::report;

/// Arguments of `parkcast warehouse`.
#[derive(Debug, Args)]
pub struct WarehouseArgs {
    #[command(flatten)]
    pub location: WarehouseLocation,
}

pub fn run(args: WarehouseArgs) -> Result<()> {
    let warehouse = Warehouse::open(&args.location.warehouse).with_context(|| {
        format!(
            "failed to open the warehouse at {}",
            args.location.warehouse.display()
        )
    })?;
    let summary = warehouse
        .summary()
        .context("failed to read the warehouse")?;
    println!("{}", report::warehouse_table(&summary));
    Ok(())
}
