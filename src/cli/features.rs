//! `parkcast features`: training matrices built in shards, for a city too large for one machine.
//! `plan` reads the city once and fixes what every shard needs; `build --shard I/N` builds one
//! shard's lot groups (run it on each worker, e.g. with scripts/spark/features.py); `parkcast train
//! --matrix DIR` with the same protocol flags fits on the result.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use parkcast_training::shards::{self, Shard};

use super::GlobalArgs;
use super::args::{ProtocolArgs, WarehouseLocation};
use crate::progress::BarProgress;

/// Arguments of `parkcast features`.
#[derive(Debug, Args)]
pub struct FeaturesArgs {
    #[command(subcommand)]
    pub action: FeaturesAction,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum FeaturesAction {
    /// Read the city once and write the plan of a `train` run with these flags into DIR: the
    /// usable lots in code order, the group size, and each fit's cut-off and origin stride.
    Plan(Box<PlanArgs>),
    /// Build one shard's lot groups of every planned fit into DIR as Parquet parts, then record
    /// the shard as finished (`DIR/_shards/`).
    Build(BuildArgs),
}

/// Arguments of `parkcast features plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub protocol: ProtocolArgs,
    /// The matrix folder (replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Arguments of `parkcast features build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub location: WarehouseLocation,
    /// The matrix folder holding the plan.
    #[arg(long, value_name = "DIR")]
    pub matrix: PathBuf,
    /// This shard and how many there are, `I/N` with I from 0 (shard I builds the lot groups g
    /// with g % N == I).
    #[arg(long)]
    pub shard: Shard,
}

pub fn run(args: FeaturesArgs, global: &GlobalArgs) -> Result<()> {
    match args.action {
        FeaturesAction::Plan(args) => {
            let warehouse = args.protocol.location.open()?;
            let frozen = args.protocol.frozen()?;
            let (config, origin) = args.protocol.config(&warehouse, &frozen.config)?;
            println!("protocol: {origin}");
            let plan = BarProgress::run(global.quiet, |progress| {
                shards::plan(&warehouse, &config, &args.out, progress)
            })
            .context("planning failed")?;
            println!(
                "planned {} fits over {} lots in {} groups of up to {} into {}",
                plan.cuts.len(),
                plan.lots.len(),
                plan.group_count(),
                plan.group_lots,
                args.out.display()
            );
        }
        FeaturesAction::Build(args) => {
            let warehouse = args.location.open()?;
            let started = std::time::Instant::now();
            let record = BarProgress::run(global.quiet, |progress| {
                shards::build(&warehouse, &args.matrix, args.shard, progress)
            })
            .with_context(|| format!("shard {} failed", args.shard))?;
            let rows: usize = record.rows.values().flat_map(|rows| rows.values()).sum();
            println!(
                "shard {}: {} training rows over {} fits in {:.1} s",
                args.shard,
                parkcast_tables::thousands(rows as u64),
                record.rows.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
